"""L1 and L2 as losses (``|r|`` vs ``r^2`` on residuals) and as penalties on weights, with their
(sub)gradients and the L1 proximal step (soft thresholding), which is what makes exact zeros.

Losses match ``torch.nn.functional.l1_loss`` / ``mse_loss`` (mean reduction). The L1 subgradient
at 0 is 0, as ``torch.sign`` gives.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnlab.errors import UserError
from cnnlab.numpy_ref._args import as_float_array


def _pair(pred: Any, target: Any, op: str) -> tuple[np.ndarray, np.ndarray]:
    p = as_float_array(pred, "pred", op)
    t = as_float_array(target, "target", op)
    if p.shape != t.shape:
        raise UserError(f"{op}: pred {p.shape} and target {t.shape} must have the same shape")
    return p, t


def l1_loss(pred: Any, target: Any) -> tuple[float, np.ndarray]:
    """Mean absolute error and its gradient w.r.t. ``pred`` (``sign(pred - target) / n``).

    Args:
        pred, target: the same shape, any.

    Returns:
        ``(loss, dpred)``.
    """
    p, t = _pair(pred, target, "l1_loss")
    r = p - t
    return float(np.abs(r).mean()), np.sign(r) / r.size


def l2_loss(pred: Any, target: Any) -> tuple[float, np.ndarray]:
    """Mean squared error and its gradient w.r.t. ``pred`` (``2 (pred - target) / n``)."""
    p, t = _pair(pred, target, "l2_loss")
    r = p - t
    return float((r * r).mean()), 2 * r / r.size


def _strength(lam: float, op: str) -> float:
    lam = float(lam)
    if not np.isfinite(lam) or lam < 0:
        raise UserError(f"{op}: the strength lambda must be >= 0, got {lam}")
    return lam


def l1_penalty(w: Any, lam: float) -> tuple[float, np.ndarray]:
    """``lam * sum |w|`` and its subgradient ``lam * sign(w)`` (0 at exactly 0)."""
    lam = _strength(lam, "l1_penalty")
    w = as_float_array(w, "w", "l1_penalty")
    return lam * float(np.abs(w).sum()), lam * np.sign(w)


def l2_penalty(w: Any, lam: float) -> tuple[float, np.ndarray]:
    """``lam / 2 * sum w^2`` and its gradient ``lam * w`` (what SGD's ``weight_decay=lam`` adds)."""
    lam = _strength(lam, "l2_penalty")
    w = as_float_array(w, "w", "l2_penalty")
    return 0.5 * lam * float((w * w).sum()), lam * w


def soft_threshold(w: Any, threshold: float) -> np.ndarray:
    """The proximal step of ``threshold * |w|``: ``sign(w) * max(|w| - threshold, 0)``.

    Every weight with ``|w| <= threshold`` becomes exactly 0: the L1 ball's corners lie on the
    axes, so the closest point often has coordinates that are exactly 0. The L2 proximal step,
    ``w / (1 + threshold)``, only shrinks and never reaches 0.
    """
    thr = _strength(threshold, "soft_threshold")
    w = as_float_array(w, "w", "soft_threshold")
    return np.sign(w) * np.maximum(np.abs(w) - thr, 0.0)
