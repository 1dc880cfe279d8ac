"""ReLU, linear, softmax cross-entropy and batch norm against PyTorch float64 (values and autograd
gradients), batch-norm running statistics against torch.nn.BatchNorm2d, central differences.

Tolerance: rtol 1e-10, atol 1e-12 (float64).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from cnnlab.errors import UserError
from cnnlab.numpy_ref import (
    batchnorm2d_backward,
    batchnorm2d_forward,
    linear_backward,
    linear_forward,
    relu_backward,
    relu_forward,
    softmax_cross_entropy,
)


def test_relu_matches_torch_including_zero(torch_ref, assert_close):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 4))
    x[0, 0, 0, :2] = 0.0  # the gradient at exactly 0 is 0 in PyTorch
    out, cache = relu_forward(x)
    dout = rng.standard_normal(x.shape)
    ref, (dx,) = torch_ref(F.relu, x, dout=dout)
    assert_close(out, ref)
    assert_close(relu_backward(dout, cache), dx)


@given(
    st.integers(1, 5), st.integers(1, 6), st.integers(1, 6), st.booleans(), st.integers(0, 2**31)
)
def test_linear_matches_torch(torch_ref, assert_close, n, d, m, bias, seed):
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((n, d)), rng.standard_normal((m, d))
    b = rng.standard_normal(m) if bias else None
    out, cache = linear_forward(x, w, b)
    dout = rng.standard_normal(out.shape)
    ref, grads = torch_ref(F.linear, x, w, b, dout=dout)
    assert_close(out, ref)
    for ours, theirs in zip(linear_backward(dout, cache), grads, strict=True):
        assert_close(ours, theirs)


@given(st.integers(1, 6), st.integers(2, 7), st.floats(0.1, 1000.0), st.integers(0, 2**31))
def test_softmax_cross_entropy_matches_torch(assert_close, n, k, scale, seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, k)) * scale  # up to +-3000: exp would overflow naively
    y = rng.integers(0, k, n)
    loss, dlogits = softmax_cross_entropy(logits, y)
    zt = torch.tensor(logits, requires_grad=True)
    ref = F.cross_entropy(zt, torch.tensor(y))
    ref.backward()
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, ref.item(), rtol=1e-10, atol=1e-10)
    assert_close(dlogits, zt.grad.numpy())


def test_softmax_cross_entropy_by_hand():
    # two equal logits: p = 1/2 each, loss = log 2, gradient (1/2 - 1, 1/2) for label 0
    loss, d = softmax_cross_entropy([[3.0, 3.0]], [0])
    assert loss == pytest.approx(np.log(2), rel=1e-15)
    np.testing.assert_allclose(d, [[-0.5, 0.5]], rtol=1e-15)


@pytest.mark.parametrize("momentum,eps", [(0.1, 1e-5), (0.3, 1e-3)])
def test_batchnorm_train_and_eval_match_torch_batchnorm2d(momentum, eps, assert_close):
    def close(a, ref):
        assert_close(a, ref.detach().numpy())

    rng = np.random.default_rng(6)
    c = 3
    bn = torch.nn.BatchNorm2d(c, momentum=momentum, eps=eps).double()
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(gamma))
        bn.bias.copy_(torch.tensor(beta))
    running_mean, running_var = np.zeros(c), np.ones(c)
    for step in range(3):  # running statistics accumulate over several batches
        x = rng.standard_normal((4, c, 3, 5)) * (step + 1) + step
        out, cache, (running_mean, running_var) = batchnorm2d_forward(
            x, gamma, beta, running_mean, running_var, True, momentum, eps
        )
        bn.train()
        bn.zero_grad()
        xt = torch.tensor(x, requires_grad=True)
        ref = bn(xt)
        close(out, ref)
        close(running_mean, bn.running_mean)
        close(running_var, bn.running_var)  # unbiased variance, as PyTorch
        dout = rng.standard_normal(x.shape)
        ref.backward(torch.tensor(dout))
        for a, r in zip(
            batchnorm2d_backward(dout, cache), (xt.grad, bn.weight.grad, bn.bias.grad), strict=True
        ):
            close(a, r)
    bn.eval()
    bn.zero_grad()
    x = rng.standard_normal((2, c, 4, 4))
    out, cache, running = batchnorm2d_forward(
        x, gamma, beta, running_mean, running_var, False, momentum, eps
    )
    xt = torch.tensor(x, requires_grad=True)
    ref = bn(xt)
    close(out, ref)
    assert_close(running.mean, running_mean)  # eval mode leaves the statistics alone
    assert_close(running.var, running_var)
    dout = rng.standard_normal(x.shape)
    ref.backward(torch.tensor(dout))
    for a, r in zip(
        batchnorm2d_backward(dout, cache), (xt.grad, bn.weight.grad, bn.bias.grad), strict=True
    ):
        close(a, r)


def test_batchnorm_train_central_differences(central_differences):
    rng = np.random.default_rng(7)
    x, gamma, beta = (
        rng.standard_normal((2, 2, 2, 3)),
        rng.standard_normal(2),
        rng.standard_normal(2),
    )
    stats = (np.zeros(2), np.ones(2))
    dout = rng.standard_normal(x.shape)
    out, cache, _ = batchnorm2d_forward(x, gamma, beta, *stats)
    numeric = central_differences(
        lambda: np.sum(batchnorm2d_forward(x, gamma, beta, *stats)[0] * dout), (x, gamma, beta)
    )
    for grad, num in zip(batchnorm2d_backward(dout, cache), numeric, strict=True):
        # nonlinear in x: O(eps^2) truncation error on top of rounding
        np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "call,message",
    [
        (
            lambda: relu_backward(np.zeros(3), relu_forward(np.zeros(4))[1]),
            "dout must have the input's shape",
        ),
        (
            lambda: linear_forward(np.zeros((2, 3)), np.zeros((4, 5))),
            "x has 3 features but w expects 5",
        ),
        (
            lambda: linear_forward(np.zeros((2, 3)), np.zeros((4, 3)), np.zeros(3)),
            r"bias b must have shape \(4,\)",
        ),
        (lambda: linear_forward(np.zeros(3), np.zeros((4, 3))), "must be 2-D"),
        (lambda: softmax_cross_entropy(np.zeros((2, 3)), [0, 3]), r"label 3 is outside \[0, 3\)"),
        (lambda: softmax_cross_entropy(np.zeros((2, 3)), [0.0, 1.0]), "labels y must be integers"),
        (lambda: softmax_cross_entropy(np.zeros((2, 3)), [0]), r"labels y must have shape \(2,\)"),
        (
            lambda: batchnorm2d_forward(np.zeros((1, 2, 1, 1)), *[np.ones(2)] * 4),
            "more than one value per channel",
        ),
        (
            lambda: batchnorm2d_forward(np.zeros((2, 2, 2, 2)), np.ones(3), *[np.ones(2)] * 3),
            r"gamma must have shape \(2,\)",
        ),
        (
            lambda: batchnorm2d_forward(np.zeros((2, 2, 2, 2)), *[np.ones(2)] * 4, momentum=1.5),
            "momentum must be in",
        ),
    ],
)
def test_bad_layer_input(call, message):
    with pytest.raises(UserError, match=message):
        call()
