"""Binary segmentation losses on per-pixel logits: BCE, the course's soft IoU, soft Dice, BCE+Dice.

Every loss ``fn(logits, target, *, check=True)`` takes ``logits`` (``(N, 1, H, W)`` or
``(N, H, W)``, any real values) and a binary ``target`` of the same shape (0 = background,
1 = foreground, any dtype) and returns a scalar. ``S = sigmoid(logits)`` is the soft prediction, ``G`` the target; sums run over **every pixel of
the batch** (the course writes the loss for the tensors of one batch, as a Keras loss sees them):

* ``bce``:  the mean over pixels of ``-[G log S + (1 - G) log(1 - S)]``, computed from the logits
  (``binary_cross_entropy_with_logits``: no overflow, no ``log 0``).
* ``iou``:  the course's ``L_IoU = 1 - sum(S * G) / sum(S + G - S * G)``, exactly (the soft
  Jaccard loss).
* ``dice``: ``L_Dice = 1 - 2 sum(S * G) / (sum(S) + sum(G))``.
* ``bce_dice``: ``bce + dice`` (equal weights).

Empty cases: when the denominator is exactly 0 (no foreground in the target *and* a prediction
of exactly 0 everywhere) the soft IoU and Dice losses are defined as 0 (a perfect empty
prediction), never NaN. When the target is empty but the prediction is not, the ratio is 0 and
the loss is 1, so that false positives on empty images are still penalised.

Compared with ``segmentation_models_pytorch`` (``JaccardLoss``/``DiceLoss`` in ``binary`` mode,
``smooth=0``): the same value and gradient for every batch with foreground (tested to 1e-6 in
float64); for a batch whose target is empty smp returns 0 (it multiplies the loss by "target has
foreground"), whereas this module returns 1 minus the (zero) ratio, i.e. 1 unless the
prediction is exactly empty too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cnnlab.errors import UserError

LOSSES = ("bce", "iou", "dice", "bce_dice")
"""The loss names :func:`segmentation_loss` accepts."""


def check_pair(logits: Tensor, target: Tensor, what: str = "target", *,
               values: bool = True) -> Tensor:
    """Check ``target`` against ``logits`` and return it as a float tensor of their dtype.

    Args:
        values: also check that every target value is 0 or 1 (reads the tensor: on a GPU this
            waits for it; the training loop checks its masks once, when they are loaded).

    Raises:
        UserError: different shapes, or target values other than 0 and 1 (one line each).
    """
    if tuple(logits.shape) != tuple(target.shape):
        raise UserError(f"the prediction has shape {tuple(logits.shape)} but the {what} mask "
                        f"has shape {tuple(target.shape)}; they must match pixel for pixel")
    t = target.to(logits.dtype)
    if values and t.numel() and not bool(((t == 0) | (t == 1)).all()):
        bad = t[(t != 0) & (t != 1)]
        raise UserError(f"the {what} mask must be binary (0 = background, 1 = foreground), got "
                        f"{bad.numel()} pixel(s) with other values, e.g. {float(bad[0]):g}; "
                        "threshold it first")
    return t


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` with 0 / 0 := 1 (both sums empty: a perfect empty prediction)."""
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny),
                       torch.ones_like(num))


def bce_loss(logits: Tensor, target: Tensor, *, check: bool = True) -> Tensor:
    """Binary cross-entropy with logits, averaged over every pixel of the batch."""
    return F.binary_cross_entropy_with_logits(logits, check_pair(logits, target, values=check))


def iou_loss(logits: Tensor, target: Tensor, *, check: bool = True) -> Tensor:
    """The course's soft IoU loss ``1 - sum(S G) / sum(S + G - S G)`` over the whole batch."""
    g = check_pair(logits, target, values=check)
    s = torch.sigmoid(logits)
    inter = (s * g).sum()
    return 1 - _ratio(inter, (s + g - s * g).sum())


def dice_loss(logits: Tensor, target: Tensor, *, check: bool = True) -> Tensor:
    """Soft Dice loss ``1 - 2 sum(S G) / (sum S + sum G)`` over the whole batch."""
    g = check_pair(logits, target, values=check)
    s = torch.sigmoid(logits)
    return 1 - _ratio(2 * (s * g).sum(), s.sum() + g.sum())


def bce_dice_loss(logits: Tensor, target: Tensor, *, check: bool = True) -> Tensor:
    """``bce_loss + dice_loss``."""
    return bce_loss(logits, target, check=check) + dice_loss(logits, target, check=False)


_FUNCTIONS = {"bce": bce_loss, "iou": iou_loss, "dice": dice_loss, "bce_dice": bce_dice_loss}


def segmentation_loss(name: str):
    """The loss function called ``name`` (one of :data:`LOSSES`).

    Raises:
        UserError: an unknown name.
    """
    if name not in _FUNCTIONS:
        raise UserError(f"unknown segmentation loss {name!r}; choose from {', '.join(LOSSES)}")
    return _FUNCTIONS[name]
