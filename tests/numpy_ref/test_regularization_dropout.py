"""L1/L2 losses and penalties against torch (values and autograd gradients, float64); dropout
against torch.nn.Dropout in train and eval mode (torch's own mask replayed, and the mean over
masks within its standard error); batch norm against torch.nn.BatchNorm1d through (N, C, 1, 1)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab.errors import UserError
from cnnlab.numpy_ref import batchnorm2d_forward
from cnnlab.numpy_ref.dropout import dropout_backward, dropout_forward
from cnnlab.numpy_ref.regularization import (
    l1_loss,
    l1_penalty,
    l2_loss,
    l2_penalty,
    soft_threshold,
)


def test_losses_and_penalties_match_torch_autograd():
    rng = np.random.default_rng(0)
    pred, target = rng.standard_normal(17), rng.standard_normal(17)
    pred[3] = target[3]  # |r| at exactly 0: subgradient 0, as torch
    for ours, theirs in ((l1_loss, F.l1_loss), (l2_loss, F.mse_loss)):
        pt = torch.tensor(pred, requires_grad=True)
        ref = theirs(pt, torch.tensor(target))
        ref.backward()
        loss, grad = ours(pred, target)
        assert loss == pytest.approx(ref.item(), rel=1e-12)
        np.testing.assert_allclose(grad, pt.grad.numpy(), rtol=1e-12, atol=1e-15)
    w = rng.standard_normal(9)
    w[0] = 0.0
    for ours, theirs in ((l1_penalty, lambda t: 0.3 * t.abs().sum()),
                         (l2_penalty, lambda t: 0.15 * (t * t).sum())):
        wt = torch.tensor(w, requires_grad=True)
        ref = theirs(wt)
        ref.backward()
        value, grad = ours(w, 0.3)
        assert value == pytest.approx(ref.item(), rel=1e-12)
        np.testing.assert_allclose(grad, wt.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_soft_threshold_zeros_small_weights_exactly():
    out = soft_threshold([0.5, -0.05, 0.1, -2.0], 0.1)
    np.testing.assert_allclose(out, [0.4, 0.0, 0.0, -1.9], atol=1e-15)
    assert (out[1:3] == 0).all()


def test_dropout_train_replays_torch_mask_and_eval_is_identity():
    torch.manual_seed(0)
    x = torch.rand(4, 50, dtype=torch.float64) + 0.5  # no zeros, so the mask is readable
    drop = torch.nn.Dropout(p=0.3)
    xt = x.clone().requires_grad_(True)
    y = drop.train()(xt)
    y.backward(torch.ones_like(xt))
    mask = (y != 0).numpy()
    out, scale = dropout_forward(x.numpy(), 0.3, training=True, mask=mask)
    np.testing.assert_allclose(out, y.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(dropout_backward(np.ones((4, 50)), scale), xt.grad.numpy(), rtol=1e-12)
    out, _ = dropout_forward(x.numpy(), 0.3, training=False)
    np.testing.assert_array_equal(out, drop.eval()(x).numpy())
    assert (dropout_forward(x.numpy(), 1.0, mask=np.zeros((4, 50)))[0] == 0).all()
    assert (torch.nn.Dropout(1.0).train()(x) == 0).all()


def test_dropout_mean_over_masks_is_the_input_within_standard_error():
    x = np.array([1.0, -2.0, 3.0])
    outs = np.array([dropout_forward(x, 0.5, rng=np.random.default_rng(i))[0] for i in range(4000)])
    se = outs.std(axis=0, ddof=1) / np.sqrt(len(outs))
    assert np.all(np.abs(outs.mean(axis=0) - x) < 4 * se)


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_matches_torch_batchnorm1d_both_modes(training):
    rng = np.random.default_rng(3)
    bn = torch.nn.BatchNorm1d(3, momentum=0.2).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, 0.5, -1.0]))
        bn.bias.copy_(torch.tensor([0.1, 0.0, 2.0]))
    rm, rv = np.zeros(3), np.ones(3)
    for _ in range(3):  # some train steps first, so eval sees non-trivial running statistics
        x = rng.standard_normal((5, 3)) * [1, 3, 0.2] + [0, 5, -1]
        bn.train()(torch.tensor(x))
        _, _, (rm, rv) = batchnorm2d_forward(x[:, :, None, None], bn.weight.detach().numpy(),
                                             bn.bias.detach().numpy(), rm, rv, True, 0.2)
    x = rng.standard_normal((4, 3))
    ref = bn.train(training)(torch.tensor(x)).detach().numpy()
    out, _, (rm, rv) = batchnorm2d_forward(x[:, :, None, None], bn.weight.detach().numpy(),
                                           bn.bias.detach().numpy(), rm, rv, training, 0.2)
    np.testing.assert_allclose(out[:, :, 0, 0], ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rm, bn.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(rv, bn.running_var.numpy(), rtol=1e-12)


def test_bad_dropout_and_penalty_arguments():
    with pytest.raises(UserError, match=r"p must be in \[0, 1\], got 1.5"):
        dropout_forward([1.0], 1.5)
    with pytest.raises(UserError, match="lambda must be >= 0"):
        l1_penalty([1.0], -0.1)
