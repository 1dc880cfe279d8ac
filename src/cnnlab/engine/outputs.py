"""The files a run leaves in its output folder: tables, JSON and plots.

``metrics.json``, ``history.csv``, ``per_class.json`` / ``per_class.csv``, ``config.json``,
``curves_loss.png``, ``curves_accuracy.png``, ``confusion_matrix.png``, ``test_predictions.npz``
(the test labels and softmax probabilities, for ``cnnlab walkthrough metrics --run``). Plots are drawn with
matplotlib's object API (no pyplot state, no display needed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cnnlab._io import atomic_write
from cnnlab._json import write_json  # noqa: F401  (part of this module's API)

HISTORY_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
                   "epoch_time_s", "train_time_s", "images_per_s")


def write_csv(path: Path, rows: Sequence[dict], columns: Sequence[str]) -> None:
    """A CSV table of ``rows`` (missing or non-finite values empty), written atomically by the
    report's one CSV writer."""
    from cnnlab.report import write_csv as _write_csv

    _write_csv(path, rows, columns)


def write_predictions(path: Path, labels, logits) -> None:
    """``labels`` ``(N,)`` int64 and ``probs`` ``(N, K)`` float32 (softmax of ``logits``), in one
    ``.npz``, written atomically."""
    import torch

    probs = torch.softmax(logits.float(), dim=1).cpu().numpy()
    atomic_write(path, lambda f: np.savez_compressed(
        f, labels=labels.cpu().numpy().astype(np.int64), probs=probs))


def plot_curves(history: Sequence[dict], out_dir: Path) -> list[Path]:
    """``curves_loss.png`` and ``curves_accuracy.png``: train vs validation per epoch."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]
    paths = []
    for metric, label, title in (
            ("loss", "loss", "train: objective with label smoothing; validation: cross-entropy"),
            ("accuracy", "accuracy",
             "train: mean over the epoch's augmented batches; validation: held out")):
        fig = Figure(figsize=(6, 4), layout="constrained")
        ax = fig.add_subplot()
        ax.set_title(title, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.plot(epochs, [r[f"train_{metric}"] for r in history], "o-", label="train")
        val = [r.get(f"val_{metric}") for r in history]
        if any(v is not None for v in val):
            ax.plot(epochs, [math.nan if v is None else v for v in val], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
        path = out_dir / f"curves_{metric}.png"
        fig.savefig(path, dpi=110)
        paths.append(path)
    return paths


def plot_confusion(confusion: np.ndarray, classes: Sequence[str], path: Path,
                   title: str = "test set") -> Path:
    """A confusion matrix heat map, rows normalised to recall, with the counts written in."""
    from matplotlib.figure import Figure

    cm = np.asarray(confusion)
    k = len(classes)
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(5.0, 0.55 * k + 2)
    fig = Figure(figsize=(size, size), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion matrix, {title} (accuracy {np.trace(cm) / max(cm.sum(), 1):.4f})")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    fig.savefig(path, dpi=110)
    return path
