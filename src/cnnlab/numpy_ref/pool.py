"""Max, average and global-average pooling with PyTorch's semantics, each with its backward.

Output size per dimension (``torch.nn.MaxPool2d`` / ``AvgPool2d``)::

    out = floor((size + 2 * padding - kernel) / stride) + 1          ceil_mode=False
    out = ceil((size + 2 * padding - kernel) / stride) + 1           ceil_mode=True,
          minus 1 if the last window would start at or after size + padding

i.e. with ``ceil_mode`` a last, partial window is added when some input is left over, but only
if it starts inside the input or the left padding (never entirely in the right padding).
Padding must be at most half the kernel, as PyTorch requires, so every window sees at least one
input value. Max pooling pads with -inf; average pooling pads with zeros and divides by
``count_include_pad`` rules (see ``avgpool2d_forward``).

Like the convolution, both are computed as a loop over the kernel taps, each tap one strided
slice of the whole batch; the backward passes add shifted slices back (no ``np.add.at``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnlab.errors import UserError
from cnnlab.numpy_ref._args import as_float_array, as_pair


@dataclass(frozen=True)
class PoolGeometry:
    """Shapes of one pooling: input, window, and the padded extent the taps read."""

    shape: tuple[int, int, int, int]  # (N, C, H, W)
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    out_h: int
    out_w: int

    @property
    def extent(self) -> tuple[int, int]:
        """Height and width of the padded array the windows read (covers ceil_mode overhang)."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        _, _, h, w = self.shape
        return (
            max(h + 2 * ph, (self.out_h - 1) * sh + kh),
            max(w + 2 * pw, (self.out_w - 1) * sw + kw),
        )

    def tap_slices(self, i: int, j: int) -> tuple[slice, slice]:
        """Rows and columns of the padded array that kernel tap (i, j) reads for all outputs."""
        (sh, sw) = self.stride
        return (
            slice(i, i + (self.out_h - 1) * sh + 1, sh),
            slice(j, j + (self.out_w - 1) * sw + 1, sw),
        )


def _pool_out_size(size: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    # PyTorch's pooling_output_shape (aten/src/ATen/native/Pool.h)
    out = (size + 2 * p - k + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def pool2d_geometry(
    x_shape: tuple[int, ...],
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    ceil_mode: bool = False,
    op: str = "pool2d",
) -> PoolGeometry:
    """Check a pooling's arguments and work out its output size (PyTorch's rules).

    Args:
        x_shape: ``(N, C, H, W)``.
        kernel_size: int or ``(kh, kw)``, >= 1.
        stride: int or ``(sh, sw)``, >= 1; None means ``kernel_size`` (PyTorch's default).
        padding: int or ``(ph, pw)``, 0 <= padding <= kernel // 2.
        ceil_mode: round the output size up (see the module docstring).
        op: the operation named in error messages.

    Raises:
        UserError: naming the first problem found.
    """
    if len(x_shape) != 4:
        raise UserError(f"{op}: input x must be 4-D (N, C, H, W), got shape {tuple(x_shape)}")
    kernel = as_pair(kernel_size, "kernel_size", op, 1)
    stride_ = kernel if stride is None else as_pair(stride, "stride", op, 1)
    pad = as_pair(padding, "padding", op, 0)
    n, c, h, w = x_shape
    outs = []
    for dim, size, k, s, p in (
        ("height", h, kernel[0], stride_[0], pad[0]),
        ("width", w, kernel[1], stride_[1], pad[1]),
    ):
        if p > k // 2:
            raise UserError(
                f"{op}: padding {p} must be at most half the kernel {dim} {k} (PyTorch's rule)"
            )
        if k > size + 2 * p:
            raise UserError(
                f"{op}: kernel {dim} {k} is larger than the padded input {dim} {size + 2 * p} "
                f"({size} + 2 x padding {p})"
            )
        outs.append(_pool_out_size(size, k, s, p, ceil_mode))
    return PoolGeometry((n, c, h, w), kernel, stride_, pad, outs[0], outs[1])


def _padded(x: np.ndarray, g: PoolGeometry, fill: float) -> np.ndarray:
    n, c, h, w = g.shape
    ph, pw = g.padding
    xp = np.full((n, c, *g.extent), fill)
    xp[:, :, ph : ph + h, pw : pw + w] = x
    return xp


def _crop(dxp: np.ndarray, g: PoolGeometry) -> np.ndarray:
    _, _, h, w = g.shape
    ph, pw = g.padding
    return np.ascontiguousarray(dxp[:, :, ph : ph + h, pw : pw + w])


def _check_dout(dout: Any, g: PoolGeometry, op: str) -> np.ndarray:
    dout = as_float_array(dout, "upstream gradient dout", op, ndim=4, layout="(N, C, H, W)")
    expected = (*g.shape[:2], g.out_h, g.out_w)
    if dout.shape != expected:
        raise UserError(f"{op}: dout must have the output's shape {expected}, got {dout.shape}")
    return dout


# ------------------------------------------------------------------------------------------------
# Max pooling
# ------------------------------------------------------------------------------------------------


@dataclass
class _MaxPoolCache:
    argmax: np.ndarray  # (N, C, Ho, Wo) index i*kw + j of the winning tap
    geometry: PoolGeometry


def maxpool2d_forward(
    x: Any,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    ceil_mode: bool = False,
) -> tuple[np.ndarray, _MaxPoolCache]:
    """Max pooling as ``torch.nn.functional.max_pool2d``.

    Ties go to the first maximum in row-major window order and NaN wins, as in PyTorch, so the
    gradient goes to the same element.

    Args:
        x: ``(N, C, H, W)``.
        kernel_size, stride, padding, ceil_mode: see ``pool2d_geometry``.

    Returns:
        ``(out, cache)``, ``out`` of shape ``(N, C, Ho, Wo)``.
    """
    x = as_float_array(x, "input x", "maxpool2d", ndim=4, layout="(N, C, H, W)")
    g = pool2d_geometry(x.shape, kernel_size, stride, padding, ceil_mode, "maxpool2d")
    xp = _padded(x, g, -np.inf)
    kh, kw = g.kernel
    out = argmax = None
    for i in range(kh):
        for j in range(kw):
            v = xp[(..., *g.tap_slices(i, j))]  # (N, C, Ho, Wo)
            if out is None:
                out, argmax = v.copy(), np.zeros(v.shape, dtype=np.intp)
                continue
            # strictly greater keeps the first maximum; NaN propagates (PyTorch's CPU kernel)
            better = (v > out) | np.isnan(v)
            out[better] = v[better]
            argmax[better] = i * kw + j
    return out, _MaxPoolCache(argmax, g)


def maxpool2d_backward(dout: Any, cache: _MaxPoolCache) -> np.ndarray:
    """Gradient of ``maxpool2d_forward``: each output's gradient goes to its window's maximum.

    Args:
        dout: ``(N, C, Ho, Wo)``.
        cache: from ``maxpool2d_forward``.

    Returns:
        dx ``(N, C, H, W)``; overlapping windows add up.
    """
    g = cache.geometry
    dout = _check_dout(dout, g, "maxpool2d backward")
    dxp = np.zeros((*g.shape[:2], *g.extent))
    kh, kw = g.kernel
    for i in range(kh):
        for j in range(kw):
            dxp[(..., *g.tap_slices(i, j))] += np.where(cache.argmax == i * kw + j, dout, 0.0)
    return _crop(dxp, g)


# ------------------------------------------------------------------------------------------------
# Average pooling
# ------------------------------------------------------------------------------------------------


@dataclass
class _AvgPoolCache:
    divisor: np.ndarray  # (Ho, Wo)
    geometry: PoolGeometry


def _avg_divisor(g: PoolGeometry, count_include_pad: bool) -> np.ndarray:
    """Per-output divisor (Ho, Wo), as PyTorch's avg_pool2d CPU kernel computes it: a window
    clipped to the padded input (count_include_pad) or to the input itself."""
    counts = []
    for size, out, k, s, p in (
        (g.shape[2], g.out_h, g.kernel[0], g.stride[0], g.padding[0]),
        (g.shape[3], g.out_w, g.kernel[1], g.stride[1], g.padding[1]),
    ):
        start = np.arange(out) * s - p
        end = np.minimum(start + k, size + p)  # a ceil_mode window may hang past the padding
        if count_include_pad:
            counts.append(end - start)
        else:
            counts.append(np.minimum(end, size) - np.maximum(start, 0))
    return np.outer(counts[0], counts[1]).astype(np.float64)


def avgpool2d_forward(
    x: Any,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> tuple[np.ndarray, _AvgPoolCache]:
    """Average pooling as ``torch.nn.functional.avg_pool2d``.

    Each output is the sum of its window divided by the window size. With
    ``count_include_pad=True`` (PyTorch's default) zero padding counts in the size, but the
    part of a ``ceil_mode`` window beyond the padding does not; with ``False`` only input
    values count.

    Args:
        x: ``(N, C, H, W)``.
        kernel_size, stride, padding, ceil_mode: see ``pool2d_geometry``.
        count_include_pad: whether padding zeros count in the divisor.

    Returns:
        ``(out, cache)``, ``out`` of shape ``(N, C, Ho, Wo)``.
    """
    x = as_float_array(x, "input x", "avgpool2d", ndim=4, layout="(N, C, H, W)")
    g = pool2d_geometry(x.shape, kernel_size, stride, padding, ceil_mode, "avgpool2d")
    xp = _padded(x, g, 0.0)
    out = np.zeros((*g.shape[:2], g.out_h, g.out_w))
    for i in range(g.kernel[0]):
        for j in range(g.kernel[1]):
            out += xp[(..., *g.tap_slices(i, j))]
    divisor = _avg_divisor(g, count_include_pad)
    return out / divisor, _AvgPoolCache(divisor, g)


def avgpool2d_backward(dout: Any, cache: _AvgPoolCache) -> np.ndarray:
    """Gradient of ``avgpool2d_forward``: each window cell receives ``dout / divisor``.

    Args:
        dout: ``(N, C, Ho, Wo)``.
        cache: from ``avgpool2d_forward``.

    Returns:
        dx ``(N, C, H, W)``.
    """
    g = cache.geometry
    share = _check_dout(dout, g, "avgpool2d backward") / cache.divisor
    dxp = np.zeros((*g.shape[:2], *g.extent))
    for i in range(g.kernel[0]):
        for j in range(g.kernel[1]):
            dxp[(..., *g.tap_slices(i, j))] += share
    return _crop(dxp, g)


# ------------------------------------------------------------------------------------------------
# Global average pooling
# ------------------------------------------------------------------------------------------------


def global_avgpool_forward(x: Any) -> tuple[np.ndarray, tuple[int, ...]]:
    """Mean over all spatial positions: ``x.mean((2, 3))``, ``adaptive_avg_pool2d(x, 1)`` flattened.

    Args:
        x: ``(N, C, H, W)``.

    Returns:
        ``(out, cache)``, ``out`` of shape ``(N, C)``.
    """
    x = as_float_array(x, "input x", "global_avgpool", ndim=4, layout="(N, C, H, W)")
    return x.mean(axis=(2, 3)), x.shape


def global_avgpool_backward(dout: Any, cache: tuple[int, ...]) -> np.ndarray:
    """Gradient of ``global_avgpool_forward``: ``dout / (H * W)`` spread over every position.

    Args:
        dout: ``(N, C)``.
        cache: from ``global_avgpool_forward``.

    Returns:
        dx ``(N, C, H, W)``.
    """
    n, c, h, w = cache
    dout = as_float_array(
        dout, "upstream gradient dout", "global_avgpool backward", ndim=2, layout="(N, C)"
    )
    if dout.shape != (n, c):
        raise UserError(f"global_avgpool backward: dout must have shape {(n, c)}, got {dout.shape}")
    return np.broadcast_to((dout / (h * w))[:, :, None, None], (n, c, h, w)).copy()
