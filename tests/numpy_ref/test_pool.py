"""Pooling against PyTorch float64: max / average (kernel, stride, padding, ceil_mode,
count_include_pad) and global average, values and autograd gradients; PyTorch's argument rules.

Tolerance: rtol 1e-10, atol 1e-12 (float64; only summation order differs).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from cnnlab.errors import UserError
from cnnlab.numpy_ref import (
    avgpool2d_backward,
    avgpool2d_forward,
    global_avgpool_backward,
    global_avgpool_forward,
    maxpool2d_backward,
    maxpool2d_forward,
)


@st.composite
def pool_cases(draw):
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 4), st.integers(1, 4))))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    h = draw(st.integers(max(1, kernel[0] - 2 * padding[0]), 12))
    w = draw(st.integers(max(1, kernel[1] - 2 * padding[1]), 12))
    return dict(
        shape=(draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w),
        kernel=kernel,
        stride=stride,
        padding=padding,
        ceil_mode=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31)),
    )


def check(ours_fwd, ours_bwd, torch_fn, x, *args, torch_ref, assert_close, seed=0, **extra):
    """Values and gradients of our pooling against ``torch_fn`` with the same arguments."""
    out, cache = ours_fwd(x, *args, **extra)
    dout = np.random.default_rng(seed).standard_normal(out.shape)
    ref, (dx,) = torch_ref(lambda t: torch_fn(t, *args, **extra), x, dout=dout)
    assert_close(out, ref)
    assert_close(ours_bwd(dout, cache), dx)


def random_input(case):
    return np.random.default_rng(case["seed"]).standard_normal(case["shape"])


@given(pool_cases())
def test_maxpool_matches_torch(torch_ref, assert_close, case):
    check(
        maxpool2d_forward,
        maxpool2d_backward,
        F.max_pool2d,
        random_input(case),
        case["kernel"],
        case["stride"],
        case["padding"],
        ceil_mode=case["ceil_mode"],
        torch_ref=torch_ref,
        assert_close=assert_close,
    )


@given(pool_cases(), st.booleans())
def test_avgpool_matches_torch(torch_ref, assert_close, case, count_include_pad):
    check(
        avgpool2d_forward,
        avgpool2d_backward,
        F.avg_pool2d,
        random_input(case),
        case["kernel"],
        case["stride"],
        case["padding"],
        ceil_mode=case["ceil_mode"],
        count_include_pad=count_include_pad,
        torch_ref=torch_ref,
        assert_close=assert_close,
    )


def test_ceil_mode_last_window_must_start_inside_input_or_left_padding():
    # size 5, kernel 2, stride 2: floor -> 2 windows; ceil adds a partial one starting at 4
    assert maxpool2d_forward(np.ones((1, 1, 5, 5)), 2)[0].shape[2:] == (2, 2)
    assert maxpool2d_forward(np.ones((1, 1, 5, 5)), 2, ceil_mode=True)[0].shape[2:] == (3, 3)
    # size 5, kernel 3, stride 3, padding 1: the padded input is [pad, x0..x4, pad]; ceil would
    # give ceil(4 / 3) + 1 = 3 windows, but the third starts at padded index 6, the right
    # padding, so it is dropped: 2 windows (PyTorch agrees)
    ours = maxpool2d_forward(np.ones((1, 1, 5, 5)), 3, 3, 1, ceil_mode=True)[0]
    assert ours.shape[2:] == (2, 2)
    assert F.max_pool2d(torch.ones(1, 1, 5, 5), 3, 3, 1, ceil_mode=True).shape[2:] == (2, 2)


def test_maxpool_ties_send_the_gradient_where_torch_does(torch_ref, assert_close):
    x = np.random.default_rng(4).integers(0, 2, size=(2, 3, 7, 7)).astype(np.float64)  # many ties
    check(
        maxpool2d_forward,
        maxpool2d_backward,
        F.max_pool2d,
        x,
        3,
        2,
        1,
        torch_ref=torch_ref,
        assert_close=assert_close,
    )


def test_global_avgpool_matches_torch(torch_ref, assert_close):
    x = np.random.default_rng(5).standard_normal((3, 4, 5, 6))
    check(
        global_avgpool_forward,
        global_avgpool_backward,
        lambda t: F.adaptive_avg_pool2d(t, 1).flatten(1),
        x,
        torch_ref=torch_ref,
        assert_close=assert_close,
    )


@pytest.mark.parametrize(
    "call,message",
    [
        (
            lambda: maxpool2d_forward(np.zeros((1, 1, 5, 5)), 2, padding=2),
            "padding 2 must be at most half the kernel height 2",
        ),
        (lambda: maxpool2d_forward(np.zeros((1, 1, 5, 5)), 0), "kernel_size must be >= 1"),
        (lambda: avgpool2d_forward(np.zeros((1, 1, 5, 5)), 2, stride=0), "stride must be >= 1"),
        (
            lambda: avgpool2d_forward(np.zeros((1, 1, 5, 5)), 6),
            "kernel height 6 is larger than the padded input height 5",
        ),
        (lambda: maxpool2d_forward(np.zeros((5, 5)), 2), "must be 4-D"),
        (
            lambda: maxpool2d_backward(
                np.zeros((1, 1, 3, 3)), maxpool2d_forward(np.zeros((1, 1, 5, 5)), 2)[1]
            ),
            "dout must have the output's shape",
        ),
        (
            lambda: global_avgpool_backward(
                np.zeros((1, 2)), global_avgpool_forward(np.zeros((1, 1, 3, 3)))[1]
            ),
            "dout must have shape",
        ),
    ],
)
def test_bad_pooling_arguments(call, message):
    with pytest.raises(UserError, match=message):
        call()
