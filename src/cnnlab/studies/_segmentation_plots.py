"""Pictures of the segmentation study: predicted masks over images, and test IoU per config.

Built without pyplot's global state (``matplotlib.figure.Figure``), so they work headless.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

# error colours: false positives (predicted, not true) red; false negatives (missed) blue
_FP, _FN = (0.9, 0.1, 0.1), (0.1, 0.35, 0.95)


def error_image(image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` in [0, 1]: the grey image, false positives red, false negatives blue."""
    grey = np.repeat(image[..., None], 3, axis=2) * 0.6
    out = grey.copy()
    fp = pred & ~truth
    fn = truth & ~pred
    out[fp] = _FP
    out[fn] = _FN
    return out


def overlays(rows: Sequence[dict[str, Any]], title: str) -> Figure:
    """One row per image: image, true mask, predicted mask, errors.

    Args:
        rows: ``{"image": (H, W) float in [0, 1], "truth": (H, W) bool, "pred": (H, W) bool,
            "label": str}`` each.
    """
    fig = Figure(figsize=(8.4, 2.2 * len(rows) + 0.4))
    axes = fig.subplots(len(rows), 4, squeeze=False)
    for r, row in enumerate(rows):
        panels = [(row["image"], "image"), (row["truth"], "true mask"),
                  (row["pred"], "predicted mask"),
                  (error_image(row["image"], row["truth"], row["pred"]),
                   "errors (red FP, blue FN)")]
        for c, (a, name) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(a, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=9)
            if c == 0:
                ax.set_ylabel(row["label"], fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def iou_by_config(groups: Sequence[tuple[str, Sequence[float]]], what: str) -> Figure:
    """Each configuration's test IoU per seed (dots) and mean (bar)."""
    fig = Figure(figsize=(7.5, 0.45 * len(groups) + 1.2))
    ax = fig.subplots()
    for i, (label, values) in enumerate(groups):
        ax.barh(i, float(np.mean(values)), color="0.85")
        ax.plot(values, [i] * len(values), "o", color="tab:blue", ms=4)
    ax.set_yticks(range(len(groups)))
    ax.set_yticklabels([g[0] for g in groups], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(what)
    lo = min(min(v) for _, v in groups)
    ax.set_xlim(max(0.0, lo - 0.1), 1.0)
    fig.tight_layout()
    return fig
