"""2-D convolution as ``torch.nn.functional.conv2d`` computes it, with its backward.

Deep-learning "convolution" is cross-correlation: the kernel slides over the input *without*
being flipped::

    out[n, k, y, x] = b[k] + sum_{c, i, j} xp[n, g*Cg + c, y*sh + i*dh, x*sw + j*dw] * w[k, c, i, j]

where ``xp`` is the zero-padded input, ``g = k // (K / groups)`` is the group of output channel
``k`` and ``Cg = C / groups`` the input channels it sees. ``flip_kernel=True`` rotates the kernel
by 180 degrees first, which gives textbook ("true") convolution. A 2x2 example (x and w as
``(1, 1, 2, 2)`` arrays)::

    x = [[1, 2],          w = [[1, 0],
         [3, 4]]               [0, 0]]
    conv2d_forward(x, w)                    -> [[1]]   (cross-correlation: w picks x[0, 0])
    conv2d_forward(x, w, flip_kernel=True)  -> [[4]]   (true convolution: rot180(w) picks x[1, 1])

Two implementations sit side by side: ``conv2d_forward_naive`` / ``conv2d_backward_naive`` loop
over every output cell and are meant to be read; ``conv2d_forward`` / ``conv2d_backward`` are
the fast ones (the comment above ``_ConvCache`` says how) and are tested against the naive ones.

Padding can be an int, ``(ph, pw)``, ``((top, bottom), (left, right))``, ``'valid'`` (none) or
``'same'`` (see ``same_padding``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnlab.errors import UserError
from cnnlab.numpy_ref._args import as_float_array, as_int, as_pair, check_vector

Padding = int | tuple[int, int] | tuple[tuple[int, int], tuple[int, int]] | str
PADDING_STRINGS = ("valid", "same")


def same_padding(size: int, kernel: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """Padding ``(before, after)`` of one spatial dimension for ``padding='same'``.

    The rule is TensorFlow's: the output has ``ceil(size / stride)`` entries and the total
    padding is the least that achieves it, ``max((out - 1) * stride + d * (k - 1) + 1 - size, 0)``.
    When the total is odd the extra row/column goes *after* (bottom/right), as in both PyTorch and
    TensorFlow. For ``stride == 1`` this is exactly PyTorch's ``padding='same'`` (total
    ``d * (k - 1)``, output size == input size). PyTorch refuses ``'same'`` for ``stride > 1``;
    we follow TensorFlow there, so e.g. size 5, kernel 3, stride 2 gives output 3 with padding
    (1, 1), and size 6 gives output 3 with padding (0, 1).

    Args:
        size: input size along this dimension.
        kernel: kernel size along this dimension.
        stride: stride along this dimension.
        dilation: dilation along this dimension.

    Returns:
        ``(before, after)``: zeros added at the top/left and at the bottom/right.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


@dataclass(frozen=True)
class ConvGeometry:
    """Everything both implementations need to know about one convolution's shapes."""

    n: int
    c: int
    h: int
    w: int
    k: int
    kh: int
    kw: int
    groups: int
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad: tuple[int, int, int, int]  # (top, bottom, left, right)
    out_h: int
    out_w: int

    @property
    def cg(self) -> int:
        """Input channels per group."""
        return self.c // self.groups

    @property
    def kg(self) -> int:
        """Output channels per group."""
        return self.k // self.groups


def resolve_padding(
    padding: Padding,
    in_size: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    op: str = "conv2d",
) -> tuple[int, int, int, int]:
    """Any accepted padding form as ``(top, bottom, left, right)``; a ``UserError`` otherwise."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            top, bottom = same_padding(in_size[0], kernel[0], stride[0], dilation[0])
            left, right = same_padding(in_size[1], kernel[1], stride[1], dilation[1])
            return (top, bottom, left, right)
        raise UserError(
            f"{op}: unknown padding {padding!r}; expected one of {', '.join(PADDING_STRINGS)}, "
            "an int, (ph, pw) or ((top, bottom), (left, right))"
        )
    if isinstance(padding, (tuple, list)) and len(padding) == 2:
        sides: list[int] = []
        for p in padding:
            if isinstance(p, (tuple, list)):
                if len(p) != 2:
                    raise UserError(
                        f"{op}: padding {padding!r} must be ((top, bottom), (left, right))"
                    )
                sides += [as_int(p[0], "padding", op, 0), as_int(p[1], "padding", op, 0)]
            else:
                sides += [as_int(p, "padding", op, 0)] * 2
        return (sides[0], sides[1], sides[2], sides[3])
    if isinstance(padding, (tuple, list)):
        raise UserError(f"{op}: padding must be an int, a pair or a string, got {padding!r}")
    p = as_int(padding, "padding", op, 0)
    return (p, p, p, p)


def conv2d_geometry(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    stride: int | tuple[int, int] = 1,
    padding: Padding = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    op: str = "conv2d",
) -> ConvGeometry:
    """Check a convolution's arguments and work out its padding and output size.

    Args:
        x_shape: input shape ``(N, C, H, W)``.
        w_shape: weight shape ``(K, C // groups, kh, kw)``.
        stride, padding, dilation, groups: as in ``conv2d_forward``.
        op: the operation named in error messages.

    Raises:
        UserError: naming the first problem found.
    """
    if len(x_shape) != 4:
        raise UserError(f"{op}: input x must be 4-D (N, C, H, W), got shape {tuple(x_shape)}")
    if len(w_shape) != 4:
        raise UserError(
            f"{op}: weight w must be 4-D (K, C/groups, kh, kw), got shape {tuple(w_shape)}"
        )
    n, c, h, w = x_shape
    k, wc, kh, kw = w_shape
    sh, sw = as_pair(stride, "stride", op, 1)
    dh, dw = as_pair(dilation, "dilation", op, 1)
    groups = as_int(groups, "groups", op, 1)
    if c % groups:
        raise UserError(f"{op}: input channels {c} are not divisible by groups={groups}")
    if k % groups:
        raise UserError(
            f"{op}: output channels {k} (w.shape[0]) are not divisible by groups={groups}"
        )
    if wc != c // groups:
        raise UserError(
            f"{op}: weight expects {wc} input channels per group (w.shape[1]) but x has {c} "
            f"channels / groups={groups} = {c // groups}"
        )
    top, bottom, left, right = resolve_padding(padding, (h, w), (kh, kw), (sh, sw), (dh, dw), op)
    eff_h, eff_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    for dim, eff, k_, d_, size, before, after in (
        ("height", eff_h, kh, dh, h, top, bottom),
        ("width", eff_w, kw, dw, w, left, right),
    ):
        if eff > size + before + after:
            raise UserError(
                f"{op}: effective kernel {dim} {eff} (dilation {d_} x ({k_} - 1) + 1) is larger "
                f"than the padded input {dim} {size + before + after} ({size} + padding "
                f"{before} + {after})"
            )
    return ConvGeometry(
        n=n,
        c=c,
        h=h,
        w=w,
        k=k,
        kh=kh,
        kw=kw,
        groups=groups,
        stride=(sh, sw),
        dilation=(dh, dw),
        pad=(top, bottom, left, right),
        out_h=(h + top + bottom - eff_h) // sh + 1,
        out_w=(w + left + right - eff_w) // sw + 1,
    )


def _prepare(
    x: Any, w: Any, b: Any, stride: Any, padding: Any, dilation: Any, groups: Any, op: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, ConvGeometry]:
    x = as_float_array(x, "input x", op, ndim=4, layout="(N, C, H, W)")
    w = as_float_array(w, "weight w", op, ndim=4, layout="(K, C/groups, kh, kw)")
    g = conv2d_geometry(x.shape, w.shape, stride, padding, dilation, groups, op)
    if b is not None:
        b = as_float_array(b, "bias b", op)
        check_vector(b, g.k, "bias b", op, "output channel")
    return x, w, b, g


def _pad(x: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """Zero-pad ``x`` (N, C, H, W) by ``g.pad`` -> (N, C, Hp, Wp)."""
    top, bottom, left, right = g.pad
    xp = np.zeros((g.n, g.c, g.h + top + bottom, g.w + left + right))
    xp[:, :, top : top + g.h, left : left + g.w] = x
    return xp


# ------------------------------------------------------------------------------------------------
# Naive version: one output cell at a time, the formula in the module docstring read literally.
# ------------------------------------------------------------------------------------------------


@dataclass
class _NaiveCache:
    xp: np.ndarray  # (N, C, Hp, Wp) padded input
    w: np.ndarray  # (K, Cg, kh, kw) the kernel as applied (already flipped for flip_kernel)
    geometry: ConvGeometry
    flip_kernel: bool
    has_bias: bool


def conv2d_forward_naive(
    x: Any,
    w: Any,
    b: Any = None,
    stride: int | tuple[int, int] = 1,
    padding: Padding = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    flip_kernel: bool = False,
) -> tuple[np.ndarray, _NaiveCache]:
    """Readable loop version of ``conv2d_forward`` (same arguments, same result, slow)."""
    x, w, b, g = _prepare(x, w, b, stride, padding, dilation, groups, "conv2d")
    if flip_kernel:
        w = w[:, :, ::-1, ::-1]
    xp = _pad(x, g)
    (sh, sw), (dh, dw) = g.stride, g.dilation
    out = np.zeros((g.n, g.k, g.out_h, g.out_w))
    for n in range(g.n):
        for k in range(g.k):
            group = k // g.kg
            channels = slice(group * g.cg, (group + 1) * g.cg)  # the inputs this filter sees
            for y in range(g.out_h):
                for x_ in range(g.out_w):
                    # the receptive field: kh x kw taps, dilation apart, starting at (y*sh, x*sw)
                    window = xp[
                        n,
                        channels,
                        y * sh : y * sh + dh * (g.kh - 1) + 1 : dh,
                        x_ * sw : x_ * sw + dw * (g.kw - 1) + 1 : dw,
                    ]  # (Cg, kh, kw)
                    out[n, k, y, x_] = np.sum(window * w[k]) + (b[k] if b is not None else 0.0)
    return out, _NaiveCache(xp, w, g, flip_kernel, b is not None)


def conv2d_backward_naive(
    dout: Any, cache: _NaiveCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Readable loop version of ``conv2d_backward``: each output cell sends its gradient back
    to the window and the kernel that produced it."""
    g = cache.geometry
    dout = _check_dout(dout, g)
    (sh, sw), (dh, dw) = g.stride, g.dilation
    dxp = np.zeros_like(cache.xp)
    dw_ = np.zeros_like(cache.w)
    for n in range(g.n):
        for k in range(g.k):
            group = k // g.kg
            channels = slice(group * g.cg, (group + 1) * g.cg)
            for y in range(g.out_h):
                for x_ in range(g.out_w):
                    rows = slice(y * sh, y * sh + dh * (g.kh - 1) + 1, dh)
                    cols = slice(x_ * sw, x_ * sw + dw * (g.kw - 1) + 1, dw)
                    # out = sum(window * w[k])  =>  d/dwindow = w[k],  d/dw[k] = window
                    dxp[n, channels, rows, cols] += dout[n, k, y, x_] * cache.w[k]
                    dw_[k] += dout[n, k, y, x_] * cache.xp[n, channels, rows, cols]
    top, _, left, _ = g.pad
    dx = dxp[:, :, top : top + g.h, left : left + g.w].copy()
    if cache.flip_kernel:
        dw_ = dw_[:, :, ::-1, ::-1].copy()
    db = dout.sum(axis=(0, 2, 3)) if cache.has_bias else None
    return dx, dw_, db


def _check_dout(dout: Any, g: ConvGeometry) -> np.ndarray:
    dout = as_float_array(
        dout, "upstream gradient dout", "conv2d backward", ndim=4, layout="(N, K, Ho, Wo)"
    )
    expected = (g.n, g.k, g.out_h, g.out_w)
    if dout.shape != expected:
        raise UserError(
            f"conv2d backward: dout must have the output's shape {expected}, got {dout.shape}"
        )
    return dout


# ------------------------------------------------------------------------------------------------
# Vectorized version.
# ------------------------------------------------------------------------------------------------
#
# How it works. Lay the padded input out channel-first and flatten all images into one long
# row per channel: X[c, n*Hp*Wp + r*Wp + s] = xp[n, c, r, s]. For stride 1, kernel tap (i, j)
# reads, for the output at flat position p, the input at p + i*dh*Wp + j*dw: the tap's inputs
# for ALL outputs are one contiguous slice X[:, off:off + L]. Stacking the kh*kw slices gives the
# im2col matrix with plain slice copies (no gather), and the whole convolution is ONE GEMM,
# (K, C*kh*kw) @ (C*kh*kw, L). Positions whose window runs off the right/bottom edge compute
# garbage that is cropped at the end: (Hp*Wp)/(Ho*Wo) - 1 extra work, 13% for 32x32, padding 1.
#
# A stride s would waste s*s of that work, so the padded input is first split into s*s
# "phases" (polyphase decomposition): phase (a, b) holds xp[:, :, a::s, b::s]. Tap (i, j) reads
# phase ((i*dh) % sh, (j*dw) % sw) shifted by ((i*dh) // sh, (j*dw) // sw) in phase
# coordinates, which is again a plain slice.
#
# Backward: dW = dOut @ cols^T (one GEMM); dX: dcols = W^T @ dOut (one GEMM), then each tap's
# rows of dcols are added back onto their shifted slice (col2im as kh*kw slice additions, no
# np.add.at). Groups are a leading batch axis of the matmuls.
#
# Depthwise (one input channel per group) is the exception: a GEMM whose inner dimension is 1
# is slower than the direct sum over taps of (weight * shifted slice), so that is used there.
# bench/NOTES-numpy-conv.md records what was tried and what it measured.


@dataclass
class _ConvCache:
    x: np.ndarray  # (G, Cg*T, L) im2col columns, or (sh, sw, G, Cg, L) phases when depthwise
    w: np.ndarray  # (G, Kg, Cg*T) kernel as applied (flipped for flip_kernel), T = kh*kw taps
    geometry: ConvGeometry
    phase_shape: tuple[int, int]  # (Hq, Wq)
    flip_kernel: bool
    has_bias: bool


def _taps(g: ConvGeometry, wq: int) -> list[tuple[int, int, int]]:
    """For each kernel tap, row-major: (phase row a, phase column b, flat offset in the phase)."""
    (sh, sw), (dh, dw) = g.stride, g.dilation
    taps = []
    for i in range(g.kh):
        for j in range(g.kw):
            u, a = divmod(i * dh, sh)
            v, b = divmod(j * dw, sw)
            taps.append((a, b, u * wq + v))
    return taps


def _phase_slices(size: int, before: int, s: int, a: int) -> tuple[slice, slice]:
    """Which input rows land in phase ``a`` (padded rows a, a+s, ...), and where in the phase."""
    first = (a - before) % s  # first input row r >= 0 with (r + before) % s == a
    count = len(range(first, size, s))
    start = (first + before) // s
    return slice(first, size, s), slice(start, start + count)


def _to_phases(x: np.ndarray, g: ConvGeometry) -> tuple[np.ndarray, int, int]:
    """(N, C, H, W) -> zero-padded phases (sh, sw, G, Cg, N*Hq*Wq), written in one pass."""
    (sh, sw) = g.stride
    top, bottom, left, right = g.pad
    hq = -(-(g.h + top + bottom) // sh)
    wq = -(-(g.w + left + right) // sw)
    xph = np.zeros((sh, sw, g.c, g.n, hq, wq))
    xt = x.transpose(1, 0, 2, 3)  # (C, N, H, W) view
    for a in range(sh):
        rows, prow = _phase_slices(g.h, top, sh, a)
        for b in range(sw):
            cols, pcol = _phase_slices(g.w, left, sw, b)
            xph[a, b, :, :, prow, pcol] = xt[:, :, rows, cols]
    return xph.reshape(sh, sw, g.groups, g.cg, g.n * hq * wq), hq, wq


def _from_phases(dxph: np.ndarray, g: ConvGeometry, hq: int, wq: int) -> np.ndarray:
    """Inverse of ``_to_phases``, dropping the padding: -> (N, C, H, W)."""
    (sh, sw) = g.stride
    top, _, left, _ = g.pad
    dxph = dxph.reshape(sh, sw, g.c, g.n, hq, wq)
    dx = np.empty((g.n, g.c, g.h, g.w))
    dxt = dx.transpose(1, 0, 2, 3)  # (C, N, H, W) view
    for a in range(sh):
        rows, prow = _phase_slices(g.h, top, sh, a)
        for b in range(sw):
            cols, pcol = _phase_slices(g.w, left, sw, b)
            dxt[:, :, rows, cols] = dxph[a, b, :, :, prow, pcol]
    return dx


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` (batched), as a broadcast product when the inner dimension is 1, where it is
    several times faster than NumPy's matmul."""
    return a * b if a.shape[-1] == 1 else np.matmul(a, b)


def conv2d_forward(
    x: Any,
    w: Any,
    b: Any = None,
    stride: int | tuple[int, int] = 1,
    padding: Padding = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    flip_kernel: bool = False,
) -> tuple[np.ndarray, _ConvCache]:
    """2-D convolution (cross-correlation) as ``torch.nn.functional.conv2d``.

    Computes in float64. Output size per dimension:
    ``(size + pad_before + pad_after - (dilation * (k - 1) + 1)) // stride + 1``.
    Memory: an im2col buffer of ``C * kh * kw * N * Hp * Wp / (sh * sw)`` floats is kept for
    the backward pass (about 43 MB for N=16, C=32, 32x32, 3x3).

    Args:
        x: input ``(N, C, H, W)``.
        w: weight ``(K, C // groups, kh, kw)``.
        b: bias ``(K,)`` or None.
        stride: int or ``(sh, sw)``, >= 1.
        padding: int, ``(ph, pw)``, ``((top, bottom), (left, right))``, ``'valid'`` or
            ``'same'`` (see ``same_padding``); zeros are added.
        dilation: int or ``(dh, dw)``, >= 1: spacing between kernel taps.
        groups: input and output channels are split into this many groups, each convolved
            separately; ``groups == C`` with ``K == C`` is depthwise convolution.
        flip_kernel: rotate the kernel by 180 degrees first (textbook convolution).

    Returns:
        ``(out, cache)``: ``out`` is ``(N, K, Ho, Wo)``; ``cache`` is for ``conv2d_backward``.

    Raises:
        UserError: non-4-D input, shape mismatches, stride/dilation/groups < 1, channels not
            divisible by groups, negative or unknown padding, kernel larger than padded input.
    """
    x, w, b, g = _prepare(x, w, b, stride, padding, dilation, groups, "conv2d")
    if flip_kernel:
        w = w[:, :, ::-1, ::-1]
    ntaps = g.kh * g.kw
    wmat = np.ascontiguousarray(w).reshape(g.groups, g.kg, g.cg * ntaps)  # (G, Kg, Cg*T)
    xph, hq, wq = _to_phases(x, g)
    taps = _taps(g, wq)
    size = g.n * hq * wq
    # every real output lies in the first `length` flat positions, and the largest tap offset
    # added to them stays inside the phase array
    length = size - max(off for _, _, off in taps)
    if g.cg == 1:  # depthwise: sum over taps of weight * shifted slice
        out = np.zeros((g.groups, g.kg, size))
        acc = out[:, :, :length]
        for t, (a, b_, off) in enumerate(taps):
            acc += _matmul(wmat[:, :, t : t + 1], xph[a, b_, :, :, off : off + length])
        saved = xph
    else:  # im2col by slice copies (none for 1x1: phase (0, 0) is the matrix), then one GEMM
        if ntaps == 1:
            saved = xph[0, 0]
        else:
            cols = np.zeros((g.groups, g.cg, ntaps, size))
            for t, (a, b_, off) in enumerate(taps):
                cols[:, :, t, :length] = xph[a, b_, :, :, off : off + length]
            saved = cols.reshape(g.groups, g.cg * ntaps, size)
        out = np.matmul(wmat, saved)  # (G, Kg, L)
    out = out.reshape(g.k, g.n, hq, wq)[:, :, : g.out_h, : g.out_w].transpose(1, 0, 2, 3)
    out = np.ascontiguousarray(out)  # (N, K, Ho, Wo)
    if b is not None:
        out += b[None, :, None, None]
    return out, _ConvCache(saved, wmat, g, (hq, wq), flip_kernel, b is not None)


def conv2d_backward(
    dout: Any, cache: _ConvCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients of ``conv2d_forward`` given the upstream gradient.

    ``dx`` is the full convolution of ``dout`` with the kernel (for stride 1: ``dout``
    zero-padded by ``k - 1`` and correlated with the 180-degree-rotated kernel, then cropped by
    the forward padding); ``dw`` is the correlation of the padded input with ``dout``.

    Args:
        dout: upstream gradient ``(N, K, Ho, Wo)``.
        cache: from ``conv2d_forward``.

    Returns:
        ``(dx, dw, db)``: ``(N, C, H, W)``, ``(K, C // groups, kh, kw)``, and ``(K,)`` or None
        when the forward pass had no bias.
    """
    g = cache.geometry
    dout = _check_dout(dout, g)
    hq, wq = cache.phase_shape
    taps = _taps(g, wq)
    size = g.n * hq * wq
    length = size - max(off for _, _, off in taps)
    # dout on the forward output's flat grid, zeros at the cropped garbage positions, so that
    # those positions contribute nothing to dw and dx
    grid = np.zeros((g.k, g.n, hq, wq))
    grid[:, :, : g.out_h, : g.out_w] = dout.transpose(1, 0, 2, 3)
    dgrid = grid.reshape(g.groups, g.kg, size)  # (G, Kg, L)
    sh, sw = g.stride
    dxph = np.zeros((sh, sw, g.groups, g.cg, size))
    if g.cg == 1:  # depthwise, as in the forward pass
        dw = np.empty_like(cache.w)  # (G, Kg, T)
        dg = dgrid[:, :, :length]
        for t, (a, b_, off) in enumerate(taps):
            xs = cache.x[a, b_, :, :, off : off + length]  # (G, 1, L)
            dw[:, :, t] = np.matmul(dg, xs.transpose(0, 2, 1))[:, :, 0]
            dxph[a, b_, :, :, off : off + length] += _matmul(cache.w[:, None, :, t], dg)
    else:
        dw = np.matmul(dgrid, cache.x.transpose(0, 2, 1))  # (G, Kg, Cg*T)
        dcols = np.matmul(cache.w.transpose(0, 2, 1), dgrid)  # (G, Cg*T, L)
        dcols = dcols.reshape(g.groups, g.cg, len(taps), size)
        for t, (a, b_, off) in enumerate(taps):
            dxph[a, b_, :, :, off : off + length] += dcols[:, :, t, :length]
    dx = _from_phases(dxph, g, hq, wq)
    dw = dw.reshape(g.k, g.cg, g.kh, g.kw)
    if cache.flip_kernel:
        dw = np.ascontiguousarray(dw[:, :, ::-1, ::-1])
    db = dout.sum(axis=(0, 2, 3)) if cache.has_bias else None
    return dx, dw, db
