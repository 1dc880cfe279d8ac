"""Predictions and the metrics computed from them: accuracy, confusion matrix, per-class P/R/F1.

``predict`` and ``evaluate`` take uint8 images straight from :class:`cnnlab.data.Splits` (or any
``(N, C, H, W)`` tensor) and are what the studies and the explanation tools reuse.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.data.augment import normalize
from cnnlab.errors import UserError


def confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts of (true class, predicted class) pairs, by one ``bincount``.

    Args:
        labels: ``(N,)`` int true classes in ``[0, K)``.
        preds: ``(N,)`` int predicted classes in ``[0, K)``.
        num_classes: K.

    Returns:
        ``(K, K)`` int64, rows = true class, columns = prediction (scikit-learn's convention).
    """
    if labels.shape != preds.shape or labels.dim() != 1:
        raise UserError(f"labels {tuple(labels.shape)} and predictions {tuple(preds.shape)} must "
                        "be matching 1-d tensors")
    flat = labels.long() * num_classes + preds.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes,
                                                                              num_classes)


def per_class_metrics(confusion: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix.

    A class never predicted has precision 0, one never present has recall 0, and F1 is 0 when
    precision + recall is 0 (scikit-learn's ``zero_division=0``).

    Args:
        confusion: ``(K, K)`` counts, rows = true class.

    Returns:
        ``{"precision", "recall", "f1", "support"}``, each ``(K,)``.
    """
    cm = np.asarray(confusion.cpu() if isinstance(confusion, torch.Tensor) else confusion,
                    dtype=np.float64)
    tp = np.diag(cm)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / denom, 0.0)
    return {"precision": precision, "recall": recall, "f1": f1,
            "support": actual.astype(np.int64)}


@dataclass
class EvalResult:
    """What :func:`evaluate` measured on one split.

    Attributes:
        loss: mean plain cross-entropy (no label smoothing).
        accuracy: fraction correct, in [0, 1].
        confusion: ``(K, K)`` int64 counts (rows = true class), on the CPU.
        logits: ``(N, K)`` float32 on the images' device.
        metrics: a task's further metrics by name (e.g. ``iou``, ``dice``); empty for
            classification. The trainer writes them as ``val_<name>`` / ``test_<name>``.
    """

    loss: float
    accuracy: float
    confusion: torch.Tensor
    logits: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def num(self) -> int:
        return int(self.confusion.sum())

    def per_class(self, classes: Sequence[str]) -> list[dict]:
        """One dict per class: name, precision, recall, f1, support."""
        m = per_class_metrics(self.confusion)
        return [{"class": c, "precision": float(m["precision"][i]), "recall": float(m["recall"][i]),
                 "f1": float(m["f1"][i]), "support": int(m["support"][i])}
                for i, c in enumerate(classes)]


def _autocast(device: torch.device, amp: bool):
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, *, mean: Sequence[float] | None = None,
            std: Sequence[float] | None = None, batch_size: int = 1024, amp: bool = False,
            channels_last: bool = False, tta: bool = False) -> torch.Tensor:
    """Logits of ``model`` for every image, in eval mode, batch by batch.

    Args:
        model: a classifier ``(N, C, H, W) -> (N, K)``, on the images' device.
        images: ``(N, C, H, W)``: uint8 (normalised here with ``mean``/``std``) or float (used
            as given, i.e. already normalised).
        mean, std: per-channel statistics in [0, 1] units; required for uint8 images.
        batch_size: images per forward pass.
        amp: bf16 autocast.
        channels_last: feed the model NHWC tensors.
        tta: average the logits of each image and its mirror image.

    Returns:
        ``(N, K)`` float32 logits on the images' device. The model's train/eval mode is restored.
    """
    if images.dim() != 4:
        raise UserError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8 and (mean is None or std is None):
        raise UserError("uint8 images need the dataset's mean and std to be normalised")
    was_training = model.training
    model.eval()
    outs = []
    try:
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size]
            x = normalize(x, mean, std) if x.dtype == torch.uint8 else x
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(images.device, amp):
                logits = model(x).float()
                if tta:
                    logits = (logits + model(x.flip(3)).float()) / 2
            outs.append(logits)
    finally:
        model.train(was_training)
    if not outs:
        return torch.zeros(0, 0, device=images.device)
    return torch.cat(outs)


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
             mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
             num_classes: int | None = None, **predict_kw) -> EvalResult:
    """Loss, accuracy and confusion matrix of ``model`` on ``(images, labels)``.

    Args:
        model, images, mean, std: as for :func:`predict` (``**predict_kw`` too).
        labels: ``(N,)`` int64 on the images' device.
        num_classes: K; default the model's output width.

    Returns:
        An :class:`EvalResult`; one host-device synchronisation in all.
    """
    if len(labels) != len(images):
        raise UserError(f"{len(labels)} labels for {len(images)} images")
    if len(labels) == 0:
        raise UserError("cannot evaluate on an empty set")
    logits = predict(model, images, mean=mean, std=std, **predict_kw)
    return evaluate_logits(logits, labels, num_classes)


def evaluate_logits(logits: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None
                    ) -> EvalResult:
    """Loss, accuracy and confusion matrix of ``(N, K)`` logits against ``(N,)`` labels (what
    :func:`evaluate` does once it has the logits; every classification task uses it).

    Returns:
        An :class:`EvalResult`; one host-device synchronisation in all.
    """
    if len(labels) == 0:
        raise UserError("cannot evaluate on an empty set")
    k = num_classes or logits.shape[1]
    loss = F.cross_entropy(logits, labels, reduction="sum")
    cm = confusion_matrix(labels, logits.argmax(1), k)
    stats = torch.stack([loss, cm.trace().to(loss.dtype)]).cpu()  # the one sync
    return EvalResult(loss=float(stats[0]) / len(labels), accuracy=float(stats[1]) / len(labels),
                      confusion=cm.cpu(), logits=logits)
