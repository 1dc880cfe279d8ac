"""Segmentation losses and metrics against segmentation_models_pytorch, against the course's
formula written out here, and against hand-computed values, empty masks included.

Tolerances: the losses are compared in float64 to 1e-9 relative (both sides sum the same terms,
only the rounding differs); smp's metrics turn integer counts into float32 scores, so they are
compared to 1e-6 relative (float32 has 24 bits, about 6e-8 per operation)."""

from __future__ import annotations

import math

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from cnnlab.errors import UserError
from cnnlab.segmentation import (
    bce_dice_loss,
    bce_loss,
    confusion_counts,
    dice_loss,
    iou_loss,
    segmentation_loss,
    summarize,
)

RTOL = 1e-9  # float64; the two implementations sum the same terms in a different order
SMP_RTOL = 1e-6  # smp's metric scores are float32


def _batch(seed: int, n: int = 3, size: int = 12):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(n, 1, size, size, generator=g, dtype=torch.float64))
    target = (torch.rand(n, 1, size, size, generator=g) < 0.3).double()
    target[0, 0, 0, 0] = 1  # the batch has foreground (smp zeroes the loss otherwise)
    return logits.requires_grad_(), target


def _grad(fn, logits, target):
    x = logits.detach().clone().requires_grad_()
    fn(x, target).backward()
    return x.grad


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ours, theirs", [
    (iou_loss, smp.losses.JaccardLoss("binary", from_logits=True, smooth=0.0)),
    (dice_loss, smp.losses.DiceLoss("binary", from_logits=True, smooth=0.0)),
])
def test_soft_losses_match_smp_in_value_and_gradient(seed, ours, theirs):
    logits, target = _batch(seed)
    assert float(ours(logits, target).detach()) == pytest.approx(
        float(theirs(logits, target).detach()), rel=RTOL)
    torch.testing.assert_close(_grad(ours, logits, target), _grad(theirs, logits, target),
                               rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_iou_loss_is_the_course_formula_and_bce_is_torchs(seed):
    logits, target = _batch(seed, n=2, size=9)
    logits = logits.detach()
    s = torch.sigmoid(logits)
    course = 1 - torch.sum(s * target) / torch.sum(s + target - s * target)  # L_IoU as written
    assert float(iou_loss(logits, target)) == pytest.approx(float(course), rel=RTOL)
    ref = torch.nn.BCELoss()(s, target)  # from probabilities: an independent code path
    assert float(bce_loss(logits, target)) == pytest.approx(float(ref), rel=1e-9)
    assert float(bce_dice_loss(logits, target)) == pytest.approx(
        float(bce_loss(logits, target) + dice_loss(logits, target)), rel=RTOL)


def test_hand_computed_losses():
    # S = 0.5 everywhere (logit 0), G = [1, 1, 0, 0]: sum SG = 1, sum S = 2, sum G = 2
    logits = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]], dtype=torch.float64)
    assert float(iou_loss(logits, target)) == pytest.approx(1 - 1 / 3)  # 1 - 1 / (2 + 2 - 1)
    assert float(dice_loss(logits, target)) == pytest.approx(0.5)  # 1 - 2 * 1 / (2 + 2)
    assert float(bce_loss(logits, target)) == pytest.approx(math.log(2))
    assert float(bce_dice_loss(logits, target)) == pytest.approx(math.log(2) + 0.5)


def test_empty_masks():
    empty = torch.zeros(2, 1, 3, 3, dtype=torch.float64)
    half = torch.zeros(2, 1, 3, 3, dtype=torch.float64)  # S = 0.5 on an empty truth
    # false positives on an empty truth: ratio 0, loss 1 (smp returns 0 here: documented)
    assert float(iou_loss(half, empty)) == 1.0 and float(dice_loss(half, empty)) == 1.0
    assert float(smp.losses.JaccardLoss("binary")(half, empty)) == 0.0
    # an exactly empty prediction of an empty truth: 0 / 0 defined as a perfect score
    none = torch.full((2, 1, 3, 3), -math.inf, dtype=torch.float64, requires_grad=True)
    for fn in (iou_loss, dice_loss):
        loss = fn(none, empty)
        assert float(loss.detach()) == 0.0
        loss.backward()
        assert torch.isfinite(none.grad).all()
        none.grad = None
    # a non-empty truth predicted empty: nothing overlaps, loss 1
    truth = empty.clone()
    truth[0, 0, 1, 1] = 1
    assert float(iou_loss(none.detach(), truth)) == 1.0
    assert float(dice_loss(none.detach(), truth)) == 1.0


def test_bad_loss_inputs_are_one_line_errors():
    logits = torch.zeros(1, 1, 4, 4)
    with pytest.raises(UserError, match=r"shape \(1, 1, 4, 4\) but the target mask has shape"):
        iou_loss(logits, torch.zeros(1, 1, 4, 5))
    with pytest.raises(UserError, match="must be binary.*e.g. 0.5"):
        dice_loss(logits, torch.full((1, 1, 4, 4), 0.5))
    with pytest.raises(UserError, match="unknown segmentation loss 'focal'"):
        segmentation_loss("focal")
    assert segmentation_loss("iou") is iou_loss


def _smp(logits, target, fn, reduction):
    tp, fp, fn_, tn = smp.metrics.get_stats((logits > 0).long(), target.long(), mode="binary")
    return float(fn(tp, fp, fn_, tn, reduction=reduction, zero_division=1.0))


@pytest.mark.parametrize("seed", range(3))
def test_metrics_match_smp_per_image_and_over_the_data_set(seed):
    logits, target = _batch(seed, n=5, size=10)
    logits = logits.detach()
    target[1] = 0  # an empty truth (and, below, an empty prediction of it)
    logits[1] = -1.0
    logits[2] = -1.0  # an empty prediction of a non-empty truth
    target[3] = 0  # an empty truth with a non-empty prediction
    ours = summarize(confusion_counts(logits, target))
    names = {"iou": smp.metrics.iou_score, "dice": smp.metrics.f1_score,
             "pixel_accuracy": smp.metrics.accuracy, "precision": smp.metrics.precision,
             "recall": smp.metrics.recall}
    for key, fn in names.items():
        assert ours[key] == pytest.approx(_smp(logits, target, fn, "micro"), rel=SMP_RTOL), key
        assert ours[f"{key}_per_image"] == pytest.approx(
            _smp(logits, target, fn, "micro-imagewise"), rel=SMP_RTOL), key
    assert ours["images"] == 5


def test_hand_computed_metrics_and_empty_cases():
    # image 0: truth [1 1 0 0], prediction [1 0 1 0] -> TP 1, FP 1, FN 1, TN 1
    # image 1: empty truth, empty prediction; image 2: truth [1 0 0 0], empty prediction
    target = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]]).reshape(3, 1, 2, 2)
    logits = torch.tensor([[2.0, -2, 2, -2], [-1, -1, -1, -1], [-1, -1, -1, -1]])
    m = summarize(confusion_counts(logits.reshape(3, 1, 2, 2), target))
    # per image: IoU 1/3, 1 (0/0), 0; Dice 1/2, 1, 0; precision 1/2, 1 (0/0), 1 (0/0)
    assert m["iou_per_image"] == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert m["dice_per_image"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert m["precision_per_image"] == pytest.approx((1 / 2 + 1 + 1) / 3)
    assert m["recall_per_image"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert m["pixel_accuracy_per_image"] == pytest.approx((2 / 4 + 1 + 3 / 4) / 3)
    # pooled: TP 1, FP 1, FN 2, TN 8
    assert m["iou"] == pytest.approx(1 / 4)
    assert m["dice"] == pytest.approx(2 / 5)
    assert m["precision"] == pytest.approx(1 / 2) and m["recall"] == pytest.approx(1 / 3)
    assert m["pixel_accuracy"] == pytest.approx(9 / 12)


def test_metric_threshold_is_probability_one_half():
    target = torch.ones(1, 1, 1, 2)
    logits = torch.tensor([[[[1e-6, -1e-6]]]])  # p just above and just below 0.5
    c = confusion_counts(logits, target)
    assert (int(c.tp[0]), int(c.fn[0])) == (1, 1)
    assert float(torch.sigmoid(logits[0, 0, 0, 0])) > 0.5 > float(
        F.sigmoid(logits[0, 0, 0, 1]))
