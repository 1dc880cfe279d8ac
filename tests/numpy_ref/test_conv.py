"""conv2d against PyTorch float64 (values and autograd gradients), naive == vectorized, central
differences, 'same' padding rules, and the errors.

Tolerance: float64 results agree to rtol 1e-10 (atol 1e-10 for values near 0); the two
implementations differ only by summation order (~1e-15 relative).
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from cnnlab.errors import UserError
from cnnlab.numpy_ref import (
    conv2d_backward,
    conv2d_backward_naive,
    conv2d_forward,
    conv2d_forward_naive,
    same_padding,
)

RTOL, ATOL = 1e-10, 1e-10


@st.composite
def conv_cases(draw, max_extra=8):
    """Random valid convolution arguments, with the padding as torch's F.pad sides where that
    can be stated without our own code ('same' is checked separately against its definition)."""
    groups = draw(st.integers(1, 3))
    c, k = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    kind = draw(st.sampled_from(["int", "pair", "sides", "valid", "same"]))
    if kind == "int":
        padding = draw(st.integers(0, 3))
        sides = (padding,) * 4
    elif kind == "pair":
        padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
        sides = (padding[0], padding[0], padding[1], padding[1])
    elif kind == "sides":
        sides = tuple(draw(st.integers(0, 3)) for _ in range(4))
        padding = ((sides[0], sides[1]), (sides[2], sides[3]))
    else:
        padding, sides = kind, (0, 0, 0, 0) if kind == "valid" else None
    size = []
    for eff, before_after in (
        (dilation[0] * (kh - 1) + 1, sides[:2] if sides else (0, 0)),
        (dilation[1] * (kw - 1) + 1, sides[2:] if sides else (0, 0)),
    ):
        low = 1 if kind == "same" else max(1, eff - sum(before_after))
        size.append(draw(st.integers(low, low + max_extra)))
    return dict(
        n=draw(st.integers(1, 2)),
        c=c,
        k=k,
        h=size[0],
        w=size[1],
        kh=kh,
        kw=kw,
        stride=stride,
        dilation=dilation,
        groups=groups,
        padding=padding,
        sides=sides,
        bias=draw(st.booleans()),
        flip=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31)),
    )


def tf_same_sides(h, w, kh, kw, stride, dilation):
    """TensorFlow's documented 'SAME' rule, restated here independently of cnnlab."""
    sides = []
    for size, k, s, d in ((h, kh, stride[0], dilation[0]), (w, kw, stride[1], dilation[1])):
        out = math.ceil(size / s)
        total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
        sides += [total // 2, total - total // 2]
    return tuple(sides)


def make(case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"]))
    w = rng.standard_normal((case["k"], case["c"] // case["groups"], case["kh"], case["kw"]))
    b = rng.standard_normal(case["k"]) if case["bias"] else None
    return rng, x, w, b


def args(case):
    return dict(
        stride=case["stride"],
        padding=case["padding"],
        dilation=case["dilation"],
        groups=case["groups"],
        flip_kernel=case["flip"],
    )


@given(conv_cases())
def test_conv2d_matches_torch_values_and_gradients(torch_ref, assert_close, case):
    rng, x, w, b = make(case)
    out, cache = conv2d_forward(x, w, b, **args(case))
    top, bottom, left, right = case["sides"] or tf_same_sides(
        case["h"], case["w"], case["kh"], case["kw"], case["stride"], case["dilation"]
    )

    def reference(xt, wt, bt):
        w_used = torch.flip(wt, [2, 3]) if case["flip"] else wt  # true convolution = flipped kernel
        return F.conv2d(
            F.pad(xt, (left, right, top, bottom)),
            w_used,
            bt,
            case["stride"],
            0,
            case["dilation"],
            case["groups"],
        )

    dout = rng.standard_normal(out.shape)
    ref, grads = torch_ref(reference, x, w, b, dout=dout)
    assert_close(out, ref, RTOL, ATOL)
    for ours, theirs in zip(conv2d_backward(dout, cache), grads, strict=True):
        assert_close(ours, theirs, RTOL, ATOL)


@given(conv_cases(max_extra=4))
def test_naive_equals_vectorized(case):
    rng, x, w, b = make(case)
    out, cache = conv2d_forward(x, w, b, **args(case))
    out_n, cache_n = conv2d_forward_naive(x, w, b, **args(case))
    np.testing.assert_allclose(out_n, out, rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    for a, ref in zip(
        conv2d_backward_naive(dout, cache_n), conv2d_backward(dout, cache), strict=True
    ):
        if ref is None:
            assert a is None
        else:
            np.testing.assert_allclose(a, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size,kernel,dilation", [(5, 3, 1), (6, 4, 1), (7, 2, 2), (8, 3, 3)])
def test_same_padding_stride_1_is_pytorch_and_keeps_the_size(
    size, kernel, dilation, stride, assert_close
):
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 3, size, size + 1)), rng.standard_normal((4, 3, kernel, kernel))
    out, _ = conv2d_forward(x, w, stride=stride, padding="same", dilation=dilation)
    # TensorFlow's defining property: output = ceil(input / stride)
    assert out.shape[2:] == (math.ceil(size / stride), math.ceil((size + 1) / stride))
    if stride == 1:
        ref = F.conv2d(torch.tensor(x), torch.tensor(w), padding="same", dilation=dilation)
        assert_close(out, ref.numpy(), RTOL, ATOL)


def test_same_padding_puts_the_odd_extra_after():
    # hand-worked: k=4, stride 1 -> total 3 = 1 before + 2 after (PyTorch and TensorFlow agree)
    assert same_padding(5, 4) == (1, 2)
    # TensorFlow, stride 2: size 5 -> out 3, total (3-1)*2+3-5 = 2; size 6 -> out 3, total 1
    assert same_padding(5, 3, stride=2) == (1, 1)
    assert same_padding(6, 3, stride=2) == (0, 1)
    assert same_padding(4, 1, stride=2) == (0, 0)


def test_flip_kernel_is_textbook_convolution():
    x = [[[[1.0, 2.0], [3.0, 4.0]]]]
    w = [[[[1.0, 0.0], [0.0, 0.0]]]]
    assert conv2d_forward(x, w)[0].item() == 1.0  # cross-correlation: w picks x[0, 0]
    assert conv2d_forward(x, w, flip_kernel=True)[0].item() == 4.0  # rot180(w) picks x[1, 1]


def test_depthwise_with_channel_multiplier_matches_torch(torch_ref, assert_close):
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, 6, 9, 9)), rng.standard_normal((12, 1, 3, 3))  # multiplier 2
    out, cache = conv2d_forward(x, w, stride=2, padding=1, groups=6)
    dout = rng.standard_normal(out.shape)
    ref, (dx, dw) = torch_ref(
        lambda x, w: F.conv2d(x, w, stride=2, padding=1, groups=6), x, w, dout=dout
    )
    assert_close(out, ref, RTOL, ATOL)
    assert_close(conv2d_backward(dout, cache)[0], dx, RTOL, ATOL)
    assert_close(conv2d_backward(dout, cache)[1], dw, RTOL, ATOL)


def test_central_differences(central_differences):
    rng = np.random.default_rng(3)
    x, w, b = (
        rng.standard_normal((1, 2, 5, 4)),
        rng.standard_normal((4, 1, 3, 2)),
        rng.standard_normal(4),
    )
    kw = dict(stride=(2, 1), padding=((1, 0), (0, 1)), dilation=(1, 2), groups=2)
    out, cache = conv2d_forward(x, w, b, **kw)
    dout = rng.standard_normal(out.shape)
    numeric = central_differences(
        lambda: np.sum(conv2d_forward(x, w, b, **kw)[0] * dout), (x, w, b)
    )
    for grad, num in zip(conv2d_backward(dout, cache), numeric, strict=True):
        # the loss is linear in each array, so only rounding remains: ~1e-9
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-7)


def test_integer_input_is_computed_in_float64():
    out, _ = conv2d_forward(np.ones((1, 1, 3, 3), dtype=np.int32), np.full((1, 1, 2, 2), 0.5))
    assert out.dtype == np.float64
    assert (out == 2.0).all()


X4 = np.zeros((1, 4, 5, 5))
W4 = np.zeros((2, 4, 3, 3))


@pytest.mark.parametrize(
    "call,message",
    [
        (
            lambda: conv2d_forward(np.zeros((4, 5, 5)), W4),
            r"x must be 4-D \(N, C, H, W\), got shape \(4, 5, 5\)",
        ),
        (lambda: conv2d_forward(X4, np.zeros((2, 4, 3))), "weight w must be 4-D"),
        (
            lambda: conv2d_forward(X4, np.zeros((2, 3, 3, 3))),
            "weight expects 3 input channels per group",
        ),
        (
            lambda: conv2d_forward(X4, np.zeros((3, 2, 3, 3)), groups=3),
            "input channels 4 are not divisible by groups=3",
        ),
        (lambda: conv2d_forward(X4, np.zeros((3, 2, 3, 3)), groups=2), "output channels 3"),
        (lambda: conv2d_forward(X4, W4, stride=0), "stride must be >= 1, got 0"),
        (lambda: conv2d_forward(X4, W4, stride=(1, -1)), "stride must be >= 1, got -1"),
        (lambda: conv2d_forward(X4, W4, stride=1.5), "stride must be an integer"),
        (lambda: conv2d_forward(X4, W4, dilation=0), "dilation must be >= 1, got 0"),
        (lambda: conv2d_forward(X4, W4, groups=0), "groups must be >= 1"),
        (lambda: conv2d_forward(X4, W4, padding=-1), "padding must be >= 0, got -1"),
        (lambda: conv2d_forward(X4, W4, padding="full"), "unknown padding 'full'"),
        (
            lambda: conv2d_forward(X4, W4, padding=(1, 2, 3)),
            "padding must be an int, a pair or a string",
        ),
        (
            lambda: conv2d_forward(X4, np.zeros((2, 4, 7, 3))),
            "effective kernel height 7 .* larger than the padded input height 5",
        ),
        (
            lambda: conv2d_forward(X4, W4, dilation=(1, 3)),
            r"effective kernel width 7 \(dilation 3 x \(3 - 1\) \+ 1\)",
        ),
        (lambda: conv2d_forward(X4, W4, b=np.zeros(3)), r"bias b must have shape \(2,\)"),
        (lambda: conv2d_forward(np.full((1, 4, 5, 5), "a"), W4), "must be numeric"),
        (
            lambda: conv2d_backward(np.zeros((1, 2, 2, 2)), conv2d_forward(X4, W4)[1]),
            r"dout must have the output's shape \(1, 2, 3, 3\)",
        ),
    ],
)
def test_bad_input_is_a_user_error_naming_the_problem(call, message):
    with pytest.raises(UserError, match=message) as info:
        call()
    assert isinstance(info.value, ValueError)
