"""A minimal residual block: conv -> ReLU -> + skip -> ReLU, where the skip is the block input.

    out = relu(relu(conv(x)) + x)

The skip is the identity, so the convolution must give back the input's shape: as many output
channels as input channels, and a stride and padding that keep the spatial size (stride 1 with
``padding='same'``, or ``(k - 1) / 2`` for an odd kernel).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnlab.errors import UserError
from cnnlab.numpy_ref._args import as_float_array
from cnnlab.numpy_ref.conv import Padding, conv2d_backward, conv2d_forward, conv2d_geometry
from cnnlab.numpy_ref.layers import relu_backward, relu_forward


@dataclass
class ResidualCache:
    """Every intermediate of the block (all ``(N, C, H, W)``) and the caches for the backward."""

    conv: np.ndarray  # conv(x)
    relu: np.ndarray  # relu(conv(x))
    residual: np.ndarray  # relu(conv(x)) + x, before the last ReLU
    conv_cache: Any
    relu_cache: Any
    out_relu_cache: Any


def residual_block_forward(
    x: Any,
    w: Any,
    b: Any = None,
    stride: int | tuple[int, int] = 1,
    padding: Padding = "same",
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> tuple[np.ndarray, ResidualCache]:
    """``relu(relu(conv2d(x, w, b)) + x)``.

    Args:
        x: ``(N, C, H, W)``, also the skip connection.
        w: ``(C, C // groups, kh, kw)``: C output channels so that the skip add is possible.
        b: ``(C,)`` or None.
        stride, padding, dilation, groups: as in ``conv2d_forward``; together they must keep
            the spatial size.

    Returns:
        ``(out, cache)``: ``out`` ``(N, C, H, W)``; ``cache.conv``, ``cache.relu`` and
        ``cache.residual`` hold the intermediate results.

    Raises:
        UserError: when the convolution's output shape differs from the input's (the message
            gives both), plus everything ``conv2d_forward`` refuses.
    """
    op = "residual block"
    x = as_float_array(x, "input x", op, ndim=4, layout="(N, C, H, W)")
    w = as_float_array(w, "weight w", op, ndim=4, layout="(C, C/groups, kh, kw)")
    if w.shape[0] != x.shape[1]:
        raise UserError(
            f"{op}: the convolution has {w.shape[0]} output channels but the input has "
            f"{x.shape[1]}; the skip add needs equal channel counts"
        )
    g = conv2d_geometry(x.shape, w.shape, stride, padding, dilation, groups, op)
    if (g.out_h, g.out_w) != (g.h, g.w):
        raise UserError(
            f"{op}: the convolution output is {g.out_h}x{g.out_w} but the input (the skip) is "
            f"{g.h}x{g.w}, so they cannot be added (stride {stride}, padding {padding!r}: conv "
            f"output shape {(g.n, g.k, g.out_h, g.out_w)}, input shape {x.shape}); the skip add "
            "needs stride 1 and padding 'same'"
        )
    conv, conv_cache = conv2d_forward(x, w, b, stride, padding, dilation, groups)
    hidden, relu_cache = relu_forward(conv)
    residual = hidden + x
    out, out_relu_cache = relu_forward(residual)
    return out, ResidualCache(conv, hidden, residual, conv_cache, relu_cache, out_relu_cache)


def residual_block_backward(
    dout: Any, cache: ResidualCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradient of ``residual_block_forward``.

    The skip makes the input's gradient a sum of two paths: straight through the add, and back
    through the convolution.

    Args:
        dout: ``(N, C, H, W)``.
        cache: from ``residual_block_forward``.

    Returns:
        ``(dx, dw, db)`` as ``conv2d_backward`` (``db`` None without bias).
    """
    dres = relu_backward(dout, cache.out_relu_cache)  # d/d(relu(conv) + x)
    dconv = relu_backward(dres, cache.relu_cache)
    dx_conv, dw, db = conv2d_backward(dconv, cache.conv_cache)
    return dx_conv + dres, dw, db
