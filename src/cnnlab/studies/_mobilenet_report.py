"""Plots, generated interpretation and the report files of the MobileNet study."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from cnnlab.report import Report, fmt_num, save_results
from cnnlab.studies.mobilenet import ROLES

_ROLE_STYLE = {  # role -> (colour, marker)
    "conventional": ("#6e6e6e", "s"), "v1": ("#1f77b4", "o"), "v2": ("#d62728", "^"),
    "resnet": ("#2ca02c", "D"), "conv_v1": ("#9467bd", "P"),
}
_DEV_NAME = {"cpu": "CPU", "cuda": "GPU"}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _mmacs(x: float | None) -> str:
    return "-" if x is None else f"{x / 1e6:.1f}M"


def _name(row: Mapping[str, Any]) -> str:
    """E.g. "MobileNetV2 a=0.5" or "MobileNetV1 rho=0.75 (21 px)"."""
    label = row["label"]
    if row["width"] != 1.0:
        label += f" a={row['width']:g}"
    if row["resolution"] != 1.0:
        label += f" rho={row['resolution']:g} ({row['input'].split('x')[-1]} px)"
    return label


# --------------------------------------------------------------------------- interpretation
def _frontier(rows: Sequence[Mapping[str, Any]], cost: str) -> list[Mapping[str, Any]]:
    """Rows that no cheaper row beats in accuracy (the Pareto front), cheapest first."""
    front, best = [], -math.inf
    for r in sorted((r for r in rows if r.get(cost) is not None), key=lambda r: r[cost]):
        if r["test_accuracy"] > best:
            front.append(r)
            best = r["test_accuracy"]
    return front


def _budget_sentences(rows, cost: str, unit: str, fmt) -> list[str]:
    front = _frontier(rows, cost)
    if not front:
        return []
    parts = []
    for i, r in enumerate(front):
        upper = f"below {fmt(front[i + 1][cost])}" if i + 1 < len(front) else "and above"
        parts.append(f"{fmt(r[cost])} {upper}: {_name(r)} ({_pct(r['test_accuracy'])})")
    return [f"Best accuracy for a given {unit} (Pareto front, cheapest first): " + "; ".join(parts)
            + "."]


def _scaling_sentence(entry: Mapping[str, Any], axis: str, role_label: str, dev: str) -> str | None:
    lat = entry.get(f"{dev}_latency_ratio")
    thr = entry.get(f"{dev}_throughput_time_ratio")
    macs = entry["macs_ratio"]
    if macs is None:
        return None
    sym = "alpha" if axis == "width" else "rho"
    text = (f"{role_label} at {sym}={entry[axis]:g}: the analyzer counts {macs:.3f}x the MACs of "
            f"{sym}=1 ({sym}^2 = {entry['predicted_ratio']:.3f}")
    if axis == "width":
        pw = entry.get("pointwise_macs_ratio")
        if pw is not None:
            rounded = abs(pw - entry["predicted_ratio"]) > 0.01 * entry["predicted_ratio"]
            text += (f"; the 1x1 layers alone {pw:.3f}x, above alpha^2 because channel counts "
                     "are rounded to multiples of 8" if rounded else
                     f"; the 1x1 layers alone {pw:.3f}x, exactly alpha^2")
        if macs > entry["predicted_ratio"] * 1.02:
            text += ("; the network as a whole is above alpha^2 because depthwise layers, the "
                     "stem and the classifier scale only with alpha")
    else:
        eff = entry.get("effective_rho2")
        if eff is not None and abs(eff - entry["predicted_ratio"]) > 1e-9:
            text += f"; with the input side rounded to {entry['input_side']} px, {eff:.3f}"
    text += ")"
    if lat is not None:
        text += f". Measured on the {_DEV_NAME[dev]}: batch-1 latency {lat:.3f}x"
        if thr is not None:
            text += f", time per image at large batch {thr:.3f}x"
        if lat > 1.5 * macs:
            text += (". Latency falls much less than the MACs: each layer has a fixed cost "
                     "(operator dispatch, memory traffic of depthwise and activation tensors) "
                     "that does not shrink with the channel count or the map size")
        elif lat < 0.67 * macs:
            text += ". Latency falls faster than the MACs (smaller tensors fit in cache)"
        else:
            text += ". Latency follows the MACs closely"
    return text + "."


def interpret(result: Any, device: str) -> list[str]:
    """Sentences generated from the numbers: winners per budget, theory vs measurement."""
    rows = result.rows
    theory = result.theory
    trained = [r for r in rows if r["trained"] and r["test_accuracy"] is not None]
    out: list[str] = []
    if trained:
        best = max(trained, key=lambda r: r["test_accuracy"])
        std = f" +- {100 * best['test_accuracy_std']:.1f}" if best["seeds"] > 1 else ""
        out.append(f"Highest test accuracy: {_name(best)}, {_pct(best['test_accuracy'])}{std} "
                   f"(over {best['seeds']} seed(s)), with {_mmacs(best['macs'])} MACs and "
                   f"{fmt_num(best['params'])} parameters.")
        out += _budget_sentences(trained, "macs", "number of MACs", _mmacs)
        for dev in ("cpu", "cuda"):
            key = f"{dev}_latency_ms"
            if any(r[key] is not None for r in trained):
                out += _budget_sentences(trained, key, f"{_DEV_NAME[dev]} batch-1 latency",
                                         lambda v: f"{v:.2f} ms")
    dev_order = ["cuda", "cpu"] if device == "cuda" else ["cpu"]
    for axis, key in (("width", "alpha"), ("resolution", "rho")):
        for role, label in (("v1", "MobileNetV1"), ("v2", "MobileNetV2")):
            line = theory[key].get(role) or []
            if len(line) > 1:
                smallest = line[-1]
                for dev in dev_order:
                    s = _scaling_sentence(smallest, axis, label, dev)
                    if s:
                        out.append(s)
    sep = theory.get("separable")
    if sep and sep["layers"]:
        worst = max(abs(t["ratio"] - t["predicted_ratio"]) for t in sep["layers"])
        text = (f"Depthwise separable vs full 3x3 convolutions, layer by layer: the counted cost "
                f"ratio equals 1/N + 1/Dk^2 within {worst:.1e} in all {len(sep['layers'])} "
                f"layers; the whole MobileNetV1 needs {sep['network_macs_ratio']:.3f}x the MACs of "
                f"Conv MobileNet (paper, 224x224: {sep['paper_224_macs_ratio']:.3f})")
        lat = sep.get("cpu_latency_ratio")
        if lat is not None:
            text += f" and measures {lat:.3f}x its CPU batch-1 latency"
            if lat > 2 * sep["network_macs_ratio"]:
                text += (", a much smaller saving than the MACs promise: depthwise convolutions "
                         "do little arithmetic per byte moved, so they run far below the "
                         "processor's peak")
        cuda = sep.get("cuda_latency_ratio")
        if cuda is not None:
            text += f"; on the GPU {cuda:.3f}x"
        out.append(text + ".")
    for role, label in (("v1", "MobileNetV1"), ("v2", "MobileNetV2")):
        share = theory["share_1x1"].get(role)
        if share and share["macs"] is not None:
            text = (f"{label}: {share['macs']:.1%} of the conv/linear MACs and "
                    f"{share['params']:.1%} of their weights are in 1x1 convolutions")
            if role == "v1":
                text += (f" (paper, 224x224: {theory['paper_share_1x1']['macs']:.2%} of the "
                         f"Mult-Adds and {theory['paper_share_1x1']['params']:.2%} of the "
                         "parameters; its parameter share is lower because its 1000-class "
                         "fully connected layer holds a quarter of the weights, where ours has "
                         f"{theory['num_classes']} outputs)")
            out.append(text + ".")
    vr = theory.get("v2_vs_resnet")
    if vr and vr["macs_ratio"]:
        text = f"ResNet-18 has {vr['macs_ratio']:.1f}x the MACs of MobileNetV2"
        for dev in ("cpu", "cuda"):
            lat = vr.get(f"{dev}_latency_ratio")
            if lat is None:
                continue
            faster = "MobileNetV2 is faster" if lat > 1.05 else (
                "MobileNetV2 is not faster" if lat < 0.95 else "they take about the same time")
            text += (f"; on the {_DEV_NAME[dev]} its batch-1 latency is {lat:.2f}x MobileNetV2's "
                     f"({faster})")
            thr = vr.get(f"{dev}_throughput_ratio")
            if thr is not None:
                text += f", and MobileNetV2's large-batch throughput is {thr:.2f}x ResNet-18's"
        if vr.get("cuda_latency_ratio") is not None and vr["cuda_latency_ratio"] < vr["macs_ratio"] / 2:
            text += (". On the GPU the MACs barely matter: dense 3x3 convolutions run near the "
                     "tensor cores' peak while depthwise layers are memory-bound, and at batch "
                     "1 kernel launches dominate")
        out.append(text + ".")
    return out


# --------------------------------------------------------------------------------- plots
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
        ax.plot([], [], marker, color=colour, label=ROLES[role].label)
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


def _plot_sweep(theory: Mapping[str, Any], key: str, axis: str, symbol: str):
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
        ax.set_title(f"{ROLES[role].label}: cost vs {symbol} (relative to {symbol} = 1)")
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
def write(result: Any, study: Mapping[str, Any], records: Mapping[str, Any]) -> dict[str, Path]:
    out: Path = result.out
    rows, theory = result.rows, result.theory
    counts = study.get("_counts")  # not serialised
    rep = Report(out, f"MobileNet study on {study['config']['dataset']}")
    b = study["budget"]
    rep.section("Findings")
    rep.text("Generated from the measurements below; nothing here is written in advance.")
    rep.bullets(result.interpretation)

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
        f"earlier invocation; this invocation took {study['elapsed_s']:.0f} s.",
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
                table.append({**e, "label": ROLES[role].label})
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
        rep.figure(_plot_sweep(theory, key, axis, symbol), f"{key}_sweep",
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

    rep.section("Environment")
    rep.code("\n".join(f"{k}: {v}" for k, v in env.items()))
    rep.text("Each run's folder under `runs/` holds its config, metrics, history, learning "
             "curves, confusion matrix and checkpoints; `speed/` holds the raw timings.")

    payload = {
        "study": {k: v for k, v in study.items() if not k.startswith("_")},
        "environment": env, "interpretation": result.interpretation, "rows": rows,
        "theory": theory,
        "runs": [{"run_id": k, "test_accuracy": v.metrics["test_accuracy"],
                  "best_val_accuracy": v.metrics.get("best_val_accuracy"),
                  "train_time_s": v.metrics["train_time_s"],
                  "images_per_s": v.metrics["images_per_s"], "reused": v.reused,
                  "history": v.metrics["history"]} for k, v in records.items()],
    }
    jpath, cpath = save_results(out, payload, rows)
    md, html = rep.write()
    return {"html": html, "markdown": md, "json": jpath, "csv": cpath}
