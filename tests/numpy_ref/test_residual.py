"""The residual block against the same composition written in PyTorch float64 (values and
autograd gradients), and its shape errors. Tolerance: rtol 1e-10, atol 1e-10."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from cnnlab.errors import UserError
from cnnlab.numpy_ref import residual_block_backward, residual_block_forward


@given(
    st.integers(1, 2),
    st.integers(1, 4),
    st.sampled_from([1, 3, 5]),
    st.integers(1, 2),
    st.booleans(),
    st.integers(3, 8),
    st.integers(0, 2**31),
)
def test_residual_block_matches_torch(torch_ref, assert_close, n, c, k, dilation, bias, size, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, size, size + 1))
    w = rng.standard_normal((c, c, k, k)) * 0.5
    b = rng.standard_normal(c) if bias else None
    pad = dilation * (k - 1) // 2  # keeps the size for odd k
    out, cache = residual_block_forward(x, w, b, padding=pad, dilation=dilation)
    conv = F.conv2d(
        torch.tensor(x),
        torch.tensor(w),
        None if b is None else torch.tensor(b),
        padding=pad,
        dilation=dilation,
    )
    assert_close(cache.conv, conv.numpy(), 1e-10, 1e-10)
    dout = rng.standard_normal(out.shape)
    ref, grads = torch_ref(
        lambda x, w, b: F.relu(F.relu(F.conv2d(x, w, b, padding=pad, dilation=dilation)) + x),
        x,
        w,
        b,
        dout=dout,
    )
    assert_close(out, ref, 1e-10, 1e-10)
    for ours, theirs in zip(residual_block_backward(dout, cache), grads, strict=True):
        assert_close(ours, theirs, 1e-10, 1e-10)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_residual_block_same_padding_default_with_even_kernel():
    rng = np.random.default_rng(8)
    x, w = rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((2, 2, 2, 2))
    out, _ = residual_block_forward(x, w)  # padding 'same': asymmetric (0 before, 1 after)
    xt = torch.tensor(x)
    ref = F.relu(F.relu(F.conv2d(xt, torch.tensor(w), padding="same")) + xt)
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-10, atol=1e-10)


def test_channel_mismatch_is_a_clear_error():
    with pytest.raises(UserError, match="3 output channels but the input has 2"):
        residual_block_forward(np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3, 3)))


@pytest.mark.parametrize("stride,padding,shape", [(2, 1, "3x3"), (1, 0, "3x3"), (1, 2, "7x7")])
def test_spatial_mismatch_names_both_shapes(stride, padding, shape):
    with pytest.raises(UserError, match=rf"output is {shape} but the input \(the skip\) is 5x5"):
        residual_block_forward(
            np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 3, 3)), stride=stride, padding=padding
        )
