"""The dynamics study's figures (matplotlib ``Figure`` objects, no pyplot state)."""

from __future__ import annotations

import math

import numpy as np

from cnnlab.studies._dynamics_measure import INIT_SCHEMES
from cnnlab.studies._dynamics_summary import (
    _conv_columns,
    _flow_pairs,
    _init_cfg,
    _label,
    _rms,
    _runs,
    degradation_table,
)

_COLORS = {"zero": "#777777", "constant": "#9467bd", "normal": "#d62728", "xavier": "#ff7f0e",
           "he": "#1f77b4", "default": "#1f77b4"}


# ---------------------------------------------------------------------------------- plots
def _fig(w: float, h: float, ncols: int = 1, nrows: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def init_figure(payload: dict, norm: str):
    depth = payload["init"]["settings"]["depth"]
    fig, axes = _fig(11, 4.2, ncols=2)
    layers = np.arange(1, depth + 1)
    notes = []
    for ax, what in zip(axes[0], ("act", "grad"), strict=True):
        for s in ("zero", "normal", "xavier", "he"):
            c = _init_cfg(payload, norm, s)
            vals = np.asarray(c[f"{what}_std"])
            if not (vals > 0).any():
                if what == "act":
                    notes.append(f"{INIT_SCHEMES[s]}: exactly 0 at every layer")
                continue
            vals = np.where(vals > 0, vals, np.nan)
            for net in c[f"{what}_std_nets"]:
                net = np.asarray(net)
                ax.plot(layers, np.where(net > 0, net, np.nan), "-", lw=0.6, alpha=0.35,
                        color=_COLORS[s])
            ax.plot(layers, vals, "o-", ms=3, color=_COLORS[s],
                    label=f"{INIT_SCHEMES[s]} (geometric mean; thin: each network)")
            if f"theory_{what}_std" in c:
                ax.plot(layers, c[f"theory_{what}_std"], "--", color=_COLORS[s], lw=1,
                        label=f"{INIT_SCHEMES[s]}, theory")
        ax.set_yscale("log")
        lo, hi = ax.get_ylim()
        if hi / lo < 100:  # at least two decades: +-1% must not look like a cliff
            mid = math.sqrt(lo * hi)
            ax.set_ylim(mid / 10, mid * 10)
        ax.set_xlabel("layer")
        ax.set_ylabel("std of the pre-activation y_l" if what == "act"
                      else "std of dL/dy_l")
        ax.grid(True, which="major", alpha=0.3)
    title = "no batch norm" if norm == "none" else "with batch norm"
    axes[0][0].set_title(f"activations, {title}")
    axes[0][1].set_title(f"gradients, {title}")
    axes[0][0].legend(fontsize=7, title="; ".join(notes) or None, title_fontsize=7)
    return fig


def symmetry_figure(payload: dict):
    runs = _runs(payload, "symmetry")
    fig, axes = _fig(11, 4, ncols=2)
    ax = axes[0][0]
    for r in runs:
        rec = r["filters"]["records"]
        steps = [x["step"] for x in rec]
        rel = np.array([[d["relative"] for d in x["layers"]] for x in rec])  # (S, layers)
        init = r["spec"]["init"]
        # zero and constant init both sit at 0: a thick dashed line keeps zero visible
        style = {"ls": "--", "lw": 3} if init == "zero" else {"ls": "-", "lw": 1.5}
        ax.plot(steps, rel.mean(1), color=_COLORS[init], label=INIT_SCHEMES[init], **style)
        ax.fill_between(steps, rel.min(1), rel.max(1), color=_COLORS[init], alpha=0.2)
    ax.set_xlabel("training step")
    ax.set_ylabel("mean pairwise filter distance / mean filter norm")
    ax.set_title("how different the filters of a layer are (band: min-max over layers)")
    ax.legend(fontsize=8)
    ax = axes[0][1]
    names = [INIT_SCHEMES[r["spec"]["init"]] for r in runs]
    acc = [100 * r["metrics"]["test_accuracy"] for r in runs]
    ax.bar(names, acc, color=[_COLORS[r["spec"]["init"]] for r in runs])
    ax.axhline(10, color="k", ls=":", lw=1, label="chance (10 classes)")
    for i, a in enumerate(acc):
        ax.text(i, a + 1, f"{a:.1f}%", ha="center", fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("after the same training")
    ax.legend(fontsize=8)
    return fig


def flow_heatmaps(payload: dict):
    pairs = _flow_pairs(payload)
    fig, axes = _fig(11, 3.6 * max(1, len(pairs)), ncols=2, nrows=max(1, len(pairs)))
    for row, (a, b, _what) in zip(axes, pairs, strict=False):
        logs = [np.log10(np.where(_rms(r)[1] > 0, _rms(r)[1], np.nan)) for r in (a, b)]
        finite = np.concatenate([v[np.isfinite(v)] for v in logs])
        vmin, vmax = np.percentile(finite, 1), np.percentile(finite, 99)  # shared by the pair
        for ax, r, lg in zip(row, (a, b), logs, strict=True):
            steps = _rms(r)[0]
            im = ax.imshow(lg.T, aspect="auto", origin="lower", cmap="viridis", vmin=vmin,
                           vmax=vmax, extent=(steps[0], steps[-1] + 1, 0.5, lg.shape[1] + 0.5),
                           interpolation="nearest")
            s = r["spec"]
            ax.set_title(f"{_label(s)}, {s['act']}, {'BN' if s['norm'] == 'bn' else 'no BN'}",
                         fontsize=9)
            ax.set_xlabel("training step")
            ax.set_ylabel("layer (1 = input side)")
        fig.colorbar(im, ax=list(row), label="log10 RMS gradient per weight", shrink=0.9)
    return fig


def flow_lines(payload: dict):
    pairs = _flow_pairs(payload)
    fig, axes = _fig(11, 4, ncols=max(1, len(pairs)))
    for ax, (a, b, what) in zip(axes[0], pairs, strict=False):
        for r, ls in ((a, "-"), (b, "--")):
            steps, rms, _ = _rms(r)
            convs = _conv_columns(r)
            picks = {"first": convs[0], "middle": convs[len(convs) // 2], "last": convs[-1]}
            s = r["spec"]
            for (name, col), color in zip(picks.items(), ("#d62728", "#2ca02c", "#1f77b4"),
                                          strict=True):
                vals = np.where(rms[:, col] > 0, rms[:, col], np.nan)
                ax.plot(steps, vals, ls, color=color, lw=1.2,
                        label=f"{_label(s)} {s['act']}: {name} conv (layer {col + 1})")
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("RMS gradient per weight")
        ax.set_title(what, fontsize=10)
        ax.legend(fontsize=7)
    return fig


def degradation_figure(payload: dict):
    runs = [r for r in _runs(payload, "degradation") if r["spec"]["seed"] == 0]
    depths = sorted({r["spec"]["depth"] for r in runs})
    cmap = {d: c for d, c in zip(depths, ("#2ca02c", "#1f77b4", "#ff7f0e", "#d62728",
                                          "#9467bd", "#8c564b", "#e377c2"), strict=False)}
    fig, axes = _fig(11, 4.2, ncols=2)
    for ax, model, title in ((axes[0][0], "plain_cnn", "plain"),
                             (axes[0][1], "resnet_cifar", "ResNet")):
        for r in runs:
            if r["spec"]["model"] != model:
                continue
            d = r["spec"]["depth"]
            hist = r["metrics"]["history"]
            ax.plot([h["epoch"] for h in hist], [100 * (1 - h["train_accuracy"]) for h in hist],
                    "-", color=cmap[d], label=f"{title}-{d} train")
            tc = r["test_curve"]
            ax.plot([t["epoch"] for t in tc], [100 * t["test_error"] for t in tc], "--",
                    color=cmap[d], lw=1, label=f"{title}-{d} test")
        ax.set_xlabel("epoch")
        ax.set_ylabel("error (%)")
        ax.set_title(f"{title} nets (seed 0): training (solid) and test (dashed) error")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    # the same y range on both panels, as in He et al.'s Fig. 6
    lo = min(a.get_ylim()[0] for a in axes[0])
    hi = max(a.get_ylim()[1] for a in axes[0])
    for a in axes[0]:
        a.set_ylim(lo, hi)
    return fig


def depth_figure(payload: dict):
    rows = degradation_table(payload)
    fig, axes = _fig(5.5, 4)
    ax = axes[0][0]
    for fam, color in (("plain", "#d62728"), ("ResNet", "#1f77b4")):
        rr = [r for r in rows if r["family"] == fam]
        ax.errorbar([r["depth"] for r in rr], [100 * r["train_error"] for r in rr],
                    yerr=[50 * r["train_error_spread"] for r in rr], fmt="o-", color=color,
                    label=f"{fam}, training")
        ax.plot([r["depth"] for r in rr], [100 * r["test_error"] for r in rr], "s--",
                color=color, lw=1, label=f"{fam}, test")
    ax.set_xlabel("depth (weighted layers)")
    ax.set_ylabel("final error (%)")
    ax.set_title("final error vs depth")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig
