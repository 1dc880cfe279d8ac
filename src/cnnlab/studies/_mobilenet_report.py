"""Plots, tables and the report sections of the MobileNet study (its findings are in
:mod:`cnnlab.studies._mobilenet_findings`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from cnnlab.report import Report, fmt_num
from cnnlab.studies._mobilenet_findings import DEV_NAME as _DEV_NAME
from cnnlab.studies._mobilenet_findings import mmacs as _mmacs
from cnnlab.studies._mobilenet_findings import pct as _pct

_ROLE_STYLE = {  # role -> (colour, marker)
    "conventional": ("#6e6e6e", "s"), "v1": ("#1f77b4", "o"), "v2": ("#d62728", "^"),
    "resnet": ("#2ca02c", "D"), "conv_v1": ("#9467bd", "P"),
}
# --------------------------------------------------------------------------------- plots
def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _scatter(ax, rows, xkey: str, xlabel: str) -> None:
    """One marker per architecture (open for the rho sweep); each sweep joined to its
    alpha = rho = 1 point (solid: alpha, dashed: rho); alpha/rho tags beside the markers."""
    for role, (colour, marker) in _ROLE_STYLE.items():
        pts = [r for r in rows if r["role"] == role and r.get(xkey) is not None
               and r["test_accuracy"] is not None]
        if not pts:
            continue
        base = [r for r in pts if r["width"] == r["resolution"] == 1.0]
        for sweep, ls in (("alpha", "-"), ("rho", "--")):
            line = sorted([r for r in pts if r["sweep"] == sweep] + base, key=lambda r: r[xkey])
            if len(line) > 1:
                ax.plot([r[xkey] for r in line], [100 * r["test_accuracy"] for r in line],
                        color=colour, ls=ls, lw=1, alpha=0.6)
        for r in pts:
            ax.errorbar(r[xkey], 100 * r["test_accuracy"],
                        yerr=100 * (r["test_accuracy_std"] or 0), fmt=marker, color=colour,
                        mfc="white" if r["sweep"] == "rho" else colour, ms=7, capsize=3)
            tag = ("" if r["width"] == r["resolution"] == 1 else
                   f"a{r['width']:g}" if r["width"] != 1 else f"r{r['resolution']:g}")
            if tag:
                ax.annotate(tag, (r[xkey], 100 * r["test_accuracy"]), fontsize=7,
                            xytext=(4, 3), textcoords="offset points", color=colour)
        ax.plot([], [], marker, color=colour, label=pts[0]["label"])
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, title="solid: alpha sweep, dashed/open: rho sweep", title_fontsize=7)


def _plot_accuracy(rows, key: str, xlabel: str, title: str):
    fig, ax = plt.subplots(figsize=(7.5, 5))
    _scatter(ax, [r for r in rows if r["trained"]], key, xlabel)
    ax.set_title(title)
    return fig


def _plot_sweep(theory: Mapping[str, Any], key: str, axis: str, symbol: str,
                labels: Mapping[str, str]):
    roles = [r for r in ("v1", "v2") if len(theory[key].get(r) or []) > 1]
    fig, axes = plt.subplots(1, max(len(roles), 1), figsize=(6.2 * max(len(roles), 1), 4.6),
                             squeeze=False)
    for ax, role in zip(axes[0], roles):
        line = sorted(theory[key][role], key=lambda e: e[axis])
        xs = [e[axis] for e in line]
        fine = [min(xs) + i * (max(xs) - min(xs)) / 100 for i in range(101)]
        ax.plot(fine, [x * x for x in fine], "k-", lw=1.2, label=f"theory: {symbol}^2")
        ax.plot(xs, [e["macs_ratio"] for e in line], "o-", color="#1f77b4",
                label="MACs (analyzer)")
        if axis == "width":
            ax.plot(xs, [e["pointwise_macs_ratio"] for e in line], "x:", color="#1f77b4",
                    label="MACs of 1x1 layers only")
        for dev, colour in (("cpu", "#d62728"), ("cuda", "#2ca02c")):
            lat = [e[f"{dev}_latency_ratio"] for e in line]
            if all(v is not None for v in lat):
                ax.plot(xs, lat, "s--", color=colour, label=f"{_DEV_NAME[dev]} batch-1 latency")
            thr = [e[f"{dev}_throughput_time_ratio"] for e in line]
            if all(v is not None for v in thr):
                ax.plot(xs, thr, "d:", color=colour, label=f"{_DEV_NAME[dev]} time/image, large batch")
        ax.set_title(f"{labels[role]}: cost vs {symbol} (relative to {symbol} = 1)")
        ax.set_xlabel(symbol)
        ax.set_ylabel("ratio to " + symbol + " = 1")
        ax.set_ylim(0, 1.15 * max([1.0] + [v for e in line for v in (
            e["macs_ratio"], e["cpu_latency_ratio"], e["cuda_latency_ratio"]) if v is not None]))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def _plot_learning_curves(records: Mapping[str, Any], rows):
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in rows:
        if not r["trained"] or r["sweep"] != "baseline":
            continue
        colour, _ = _ROLE_STYLE[r["role"]]
        rec = next((v for k, v in records.items() if k.startswith(r["arch_id"] + "-s")), None)
        if rec is None:
            continue
        hist = rec.metrics["history"]
        ep = [h["epoch"] for h in hist]
        ax1.plot(ep, [h["train_loss"] for h in hist], "-o", color=colour, label=f"{r['label']} train")
        if hist and hist[0].get("val_loss") is not None:
            ax1.plot(ep, [h["val_loss"] for h in hist], "--", color=colour, label="validation")
        ax2.plot(ep, [100 * h["train_accuracy"] for h in hist], "-o", color=colour,
                 label=f"{r['label']} train")
        if hist and hist[0].get("val_accuracy") is not None:
            ax2.plot(ep, [100 * h["val_accuracy"] for h in hist], "--", color=colour,
                     label="validation")
    ax1.set(xlabel="epoch", ylabel="loss", title="Loss (first seed)")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy (first seed)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def _plot_kinds(rows, counts_by_arch):
    base = [r for r in rows if r["width"] == r["resolution"] == 1.0]
    kinds = ("pointwise", "depthwise", "full", "grouped", "linear")
    colours = ("#1f77b4", "#ff7f0e", "#7f7f7f", "#bcbd22", "#9467bd")
    fig, ax = plt.subplots(figsize=(8, 4))
    left = [0.0] * len(base)
    for kind, colour in zip(kinds, colours):
        vals = [counts_by_arch[r["arch_id"]]["macs_by_kind"][kind] / 1e6 for r in base]
        ax.barh([r["label"] for r in base], vals, left=left, color=colour, label=kind)
        left = [a + b for a, b in zip(left, vals)]
    ax.set_xscale("log" if max(left, default=1) / max(min(left, default=1), 1e-9) > 30 else "linear")
    ax.set_xlabel("MACs (millions) at alpha = rho = 1, by layer kind")
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return fig


# --------------------------------------------------------------------------------- the report
def layout(rep: Report, result: Any, study: Mapping[str, Any], counts: Mapping[str, Any],
           records: Mapping[str, Any], labels: Mapping[str, str]) -> None:
    """The study's sections of the report (the framework adds title, budget, findings and
    environment)."""
    rows, theory = result.rows, result.theory
    b = study["budget"]
    rep.section("Set-up")
    env = result.environment
    rep.bullets([
        f"Data set: **{study['config']['dataset']}**, native input "
        f"{study['in_chans']}x{study['native_size'][0]}x{study['native_size'][1]}, "
        f"{study['num_classes']} classes.",
        f"Budget **{b['name']}**: {b['description']}; {b['epochs']} epoch(s), "
        f"{'all' if b['subset'] is None else fmt_num(b['subset'])} training images per run, "
        f"batch {b['batch_size']}, SGD Nesterov with one-cycle lr peak {b['lr']}, label smoothing "
        f"0.1, the data set's default augmentation; {study['seeds']} seed(s).",
        f"Device: {env['device']} ({study['device']}); speed measured with batch 1 (median of up "
        f"to {b['latency_repeats']} calls) and batch {b['throughput_batch_cpu']} (CPU) / "
        f"{b['throughput_batch_cuda']} (GPU, bf16, channels_last), eval mode; CPU memory "
        f"allocator: {env.get('allocator', 'not recorded')} (with glibc's defaults, freed "
        "activations go back to the operating system after every pass and MobileNets lose "
        "about half their CPU speed; see cnnlab._malloc).",
        f"{len(records)} training runs, {sum(r.metrics['train_time_s'] for r in records.values()):.0f} s "
        f"of training in all; {result.trained_now} trained now, {result.reused} reused from an "
        "earlier invocation.",
        "MACs are the analyzer's conv + linear multiply-accumulates for one image (the papers' "
        "Mult-Adds); FLOPs = 2 x MACs.",
    ])

    rep.section("Results")
    columns = [
        ("label", "model", lambda v: v), ("width", "alpha", lambda v: f"{v:g}"),
        ("resolution", "rho", lambda v: f"{v:g}"), ("input", "input", lambda v: v),
        ("params", "params", None), ("macs", "MACs", _mmacs),
        ("macs_1x1_share", "1x1 MACs", _pct),
        ("test_accuracy", "test acc", _pct),
        ("test_accuracy_std", "+- std", lambda v: "-" if v is None else f"{100 * v:.1f}"),
        ("train_time_s", "train s", lambda v: "-" if v is None else f"{v:.1f}"),
        ("cpu_latency_ms", "CPU ms (b=1)", lambda v: "-" if v is None else f"{v:.2f}"),
        ("cpu_throughput", "CPU img/s", lambda v: "-" if v is None else f"{v:,.0f}"),
    ]
    if any(r["cuda_latency_ms"] is not None for r in rows):
        columns += [
            ("cuda_latency_ms", "GPU ms (b=1)", lambda v: "-" if v is None else f"{v:.2f}"),
            ("cuda_throughput", "GPU img/s", lambda v: "-" if v is None else f"{v:,.0f}"),
        ]
    rep.table(rows, columns, caption="One row per architecture (accuracy: mean over seeds; "
                                     "models without accuracy were analysed and timed only).")
    rep.figure(_plot_accuracy(rows, "macs", "MACs per image (log)", "Accuracy vs MACs"),
               "accuracy_vs_macs", "Test accuracy against the analyzer's MACs.")
    for dev in ("cpu", "cuda"):
        if any(r[f"{dev}_latency_ms"] is not None for r in rows if r["trained"]):
            rep.figure(_plot_accuracy(rows, f"{dev}_latency_ms",
                                      f"{_DEV_NAME[dev]} batch-1 latency, ms (log)",
                                      f"Accuracy vs measured {_DEV_NAME[dev]} latency"),
                       f"accuracy_vs_{dev}_latency",
                       f"Test accuracy against measured {_DEV_NAME[dev]} batch-1 latency.")

    rep.section("Theory against measurement")
    for key, axis, symbol in (("alpha", "width", "alpha"), ("rho", "resolution", "rho")):
        if not any(len(v) > 1 for v in theory[key].values()):
            continue
        rep.section(f"{'Width' if key == 'alpha' else 'Resolution'} multiplier {symbol}", 3)
        table = []
        for role, line in theory[key].items():
            for e in line:
                table.append({**e, "label": labels[role]})
        cols = [("label", "model", lambda v: v), (axis, symbol, lambda v: f"{v:g}")]
        if axis == "resolution":
            cols.append(("input_side", "side px", lambda v: str(v)))
        cols += [("predicted_ratio", f"{symbol}^2", _ratio)]
        if axis == "resolution":
            cols.append(("effective_rho2", "(side/native)^2", _ratio))
        cols += [("macs_ratio", "MACs ratio", _ratio)]
        if axis == "width":
            cols.append(("pointwise_macs_ratio", "1x1 MACs ratio", _ratio))
        cols += [("params_ratio", "params ratio", _ratio),
                 ("cpu_latency_ratio", "CPU latency ratio", _ratio),
                 ("cpu_throughput_time_ratio", "CPU time/img ratio", _ratio)]
        if any(e.get("cuda_latency_ratio") is not None for e in table):
            cols += [("cuda_latency_ratio", "GPU latency ratio", _ratio),
                     ("cuda_throughput_time_ratio", "GPU time/img ratio", _ratio)]
        cols.append(("test_accuracy", "test acc", _pct))
        rep.table(table, cols, caption=f"Ratios to {symbol} = 1 of the same network.")
        rep.figure(_plot_sweep(theory, key, axis, symbol, labels), f"{key}_sweep",
                   f"MACs and measured time against {symbol}, with the {symbol}^2 prediction.")

    sep = theory.get("separable")
    if sep and sep["layers"]:
        rep.section("Depthwise separable vs full convolution", 3)
        rep.table(sep["layers"], [
            ("block", "layer", lambda v: v), ("in_channels", "M", lambda v: str(v)),
            ("out_channels", "N", lambda v: str(v)), ("separable_macs", "dw + pw MACs", None),
            ("full_macs", "full 3x3 MACs", None), ("ratio", "ratio", lambda v: f"{v:.5f}"),
            ("predicted_ratio", "1/N + 1/9", lambda v: f"{v:.5f}"),
        ], caption="MobileNetV1 against Conv MobileNet, layer by layer (Howard et al. 2017, Eq. 5).")
        rep.bullets([
            f"Whole network: MobileNetV1 / Conv MobileNet MACs = {_ratio(sep['network_macs_ratio'])}"
            f" (paper at 224x224: {sep['paper_224_macs_ratio']:.3f}); parameters "
            f"{_ratio(sep['network_params_ratio'])}.",
            f"Measured: CPU batch-1 latency ratio {_ratio(sep['cpu_latency_ratio'])}, CPU time per "
            f"image at large batch {_ratio(sep['cpu_throughput_time_ratio'])}; GPU latency ratio "
            f"{_ratio(sep['cuda_latency_ratio'])}.",
        ])
    if counts:
        rep.figure(_plot_kinds(rows, counts), "macs_by_kind",
                   "Where the MACs are: by layer kind, at alpha = rho = 1.")

    rep.section("Learning curves")
    rep.figure(_plot_learning_curves(records, rows), "learning_curves",
               "Training (solid) and validation (dashed) loss and accuracy of the alpha = rho = 1 "
               "runs, first seed.")

    rep.text("Each run's folder under `runs/` holds its config, metrics, history, learning "
             "curves, confusion matrix and checkpoints; `runs/speed/` holds the raw timings.")
