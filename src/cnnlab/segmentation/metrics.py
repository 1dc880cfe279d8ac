"""Binary segmentation metrics on thresholded masks, per image and over a data set.

A prediction is thresholded at probability 0.5 (``logit > 0``); with ``TP``, ``FP``, ``FN``, ``TN``
the pixel counts of one image (foreground = 1):

==================  ==============================  ==============================
metric              formula                         when the denominator is 0
==================  ==============================  ==============================
IoU (Jaccard)       TP / (TP + FP + FN)             1: truth and prediction empty
Dice (F1)           2 TP / (2 TP + FP + FN)         1: truth and prediction empty
pixel accuracy      (TP + TN) / (TP + FP + FN + TN)  (never: an image has pixels)
precision           TP / (TP + FP)                  1: nothing predicted, nothing wrong
recall              TP / (TP + FN)                  1: nothing to find, nothing missed
==================  ==============================  ==============================

The rule behind the last column: a ratio whose denominator counts no pixel at all had nothing
that could go wrong, so it is 1 (``segmentation_models_pytorch.metrics`` with its default
``zero_division=1.0``; scikit-learn's ``zero_division=1``). An empty prediction of a non-empty
truth still scores IoU = Dice = recall = 0, and a non-empty prediction of an empty truth
IoU = Dice = precision = 0.

Two aggregations over a data set, both reported (:func:`summarize`):

* **data set** (``iou``, ``dice``, ...): the counts are summed over every pixel of every image
  first, then the formula is applied once (smp's ``reduction="micro"``). Large objects weigh
  more. This is what ``test_iou`` / ``test_dice`` in results mean.
* **per image** (``iou_per_image``, ...): the formula per image, then the mean over images
  (smp's ``"micro-imagewise"``). Every image weighs the same; best and worst images are
  ranked by their own IoU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from cnnlab.segmentation.losses import check_pair

METRICS = ("iou", "dice", "pixel_accuracy", "precision", "recall")


@dataclass(frozen=True)
class Counts:
    """Per-image pixel counts, each ``(N,)`` int64."""

    tp: Tensor
    fp: Tensor
    fn: Tensor
    tn: Tensor

    def total(self) -> Counts:
        """The counts summed over images (each a 1-element tensor)."""
        return Counts(*(c.sum().reshape(1) for c in (self.tp, self.fp, self.fn, self.tn)))

    @staticmethod
    def cat(parts: list[Counts]) -> Counts:
        return Counts(*(torch.cat([getattr(p, k) for p in parts]) for k in ("tp", "fp", "fn",
                                                                           "tn")))


def confusion_counts(logits: Tensor, target: Tensor, *, threshold: float = 0.0) -> Counts:
    """TP, FP, FN, TN per image of ``logits > threshold`` against the binary ``target``.

    Args:
        logits: ``(N, 1, H, W)`` or ``(N, H, W)``.
        target: binary, same shape.
        threshold: on the logits (0.0 = probability 0.5).
    """
    g = check_pair(logits, target).bool().reshape(len(logits), -1)
    p = (logits > threshold).reshape(len(logits), -1)
    tp = (p & g).sum(1)
    fp = (p & ~g).sum(1)
    fn = (~p & g).sum(1)
    tn = (~p & ~g).sum(1)
    return Counts(tp, fp, fn, tn)


def _div(num: Tensor, den: Tensor) -> Tensor:
    num, den = num.double(), den.double()
    return torch.where(den > 0, num / den.clamp_min(1), torch.ones_like(num))


def scores(c: Counts) -> dict[str, Tensor]:
    """Every metric of :data:`METRICS` from counts, elementwise (``(N,)`` float64 each)."""
    return {"iou": _div(c.tp, c.tp + c.fp + c.fn),
            "dice": _div(2 * c.tp, 2 * c.tp + c.fp + c.fn),
            "pixel_accuracy": _div(c.tp + c.tn, c.tp + c.fp + c.fn + c.tn),
            "precision": _div(c.tp, c.tp + c.fp),
            "recall": _div(c.tp, c.tp + c.fn)}


def summarize(c: Counts) -> dict[str, float]:
    """Data-set metrics (counts pooled) and per-image means (``<metric>_per_image``)."""
    pooled = {k: float(v[0]) for k, v in scores(c.total()).items()}
    per_image = {f"{k}_per_image": float(v.mean()) if len(v) else float("nan")
                 for k, v in scores(c).items()}
    return {**pooled, **per_image, "images": int(len(c.tp))}

