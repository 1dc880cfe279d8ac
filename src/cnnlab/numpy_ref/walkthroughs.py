"""The course exercises, step by step, with every intermediate matrix.

``residual_walkthrough``: conv -> ReLU -> + input (skip) -> ReLU -> max pool -> global average
pool, on one single-channel image. ``conv_backward_walkthrough``: the gradients of a valid,
stride-1 convolution, each written as the correlation / full convolution that produces it.

Both run the engine's own ops (``conv2d_forward``, ``residual_block_forward``, ...) and return a
result object with ``steps()`` (for ``views``), ``text()`` and ``to_json()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnlab.errors import UserError
from cnnlab.numpy_ref._args import as_float_array
from cnnlab.numpy_ref.conv import Padding, conv2d_backward, conv2d_forward, conv2d_geometry
from cnnlab.numpy_ref.pool import global_avgpool_forward, maxpool2d_forward
from cnnlab.numpy_ref.residual import residual_block_forward
from cnnlab.numpy_ref.views import Step, format_number, render_text

# The course exercise's defaults (issue 2).
COURSE_INPUT = [
    [100, 150, 200, 50, 30],
    [80, 120, 180, 255, 90],
    [40, 70, 110, 230, 200],
    [30, 60, 100, 150, 120],
    [20, 50, 80, 100, 90],
]
COURSE_KERNEL = [[0.1, -0.2, 0.1], [-0.1, 0.4, 0.1], [0.2, -0.1, 0.1]]
COURSE_X = [[1, 2, 1, 0], [2, 1, 0, 1], [1, 0, 2, 1], [0, 1, 2, 1]]
COURSE_W = [[1, -1, 0], [0, 1, -1], [-1, 0, 1]]
COURSE_DY = [[1, -1], [-1, 1]]


def _matrix(a: Any, name: str) -> np.ndarray:
    m = as_float_array(a, name, "walkthrough", ndim=2, layout="(rows, cols)")
    if not np.isfinite(m).all():
        raise UserError(f"walkthrough: {name} contains NaN or infinite values")
    return m


def _as_4d(m: np.ndarray) -> np.ndarray:
    return m[None, None]  # (H, W) -> (1, 1, H, W): one image, one channel


def worked_cell(window: np.ndarray, kernel: np.ndarray, label: str) -> str:
    """The arithmetic of one output cell, e.g. ``y[0,0] = 1*1 + 2*(-1) + ... = -2``.

    Args:
        window: the input values the cell sees, same shape as ``kernel``.
        kernel: the kernel as applied.
        label: the cell's name, e.g. ``"conv[0,0]"``.
    """

    def num(v: float) -> str:
        s = format_number(v)
        return f"({s})" if s.startswith("-") else s

    terms = [f"{num(a)}*{num(b)}" for a, b in zip(window.ravel(), kernel.ravel(), strict=True)]
    total = float(np.sum(window * kernel))
    return f"{label} = " + " + ".join(terms) + f" = {format_number(total)}"


def _padding_words(pad: tuple[int, int, int, int]) -> str:
    top, bottom, left, right = pad
    if len(set(pad)) == 1:
        return f"{top} row/column of zeros on every side"
    return (
        f"zeros: {top} row(s) on top, {bottom} at the bottom, {left} column(s) left, {right} right"
    )


# ------------------------------------------------------------------------------------------------
# Residual block walkthrough
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResidualWalkthrough:
    """Every intermediate of the residual exercise (all 2-D, one channel).

    ``residual`` is the block's output ``relu(relu(conv) + input)``, the matrix that is pooled;
    ``residual_sum`` is the sum before that last ReLU.
    """

    input: np.ndarray
    kernel: np.ndarray
    stride: int
    padding: Padding
    pad: tuple[int, int, int, int]  # (top, bottom, left, right) as resolved
    pool: int
    pool_stride: int
    ceil_mode: bool
    padded_input: np.ndarray
    conv: np.ndarray
    relu: np.ndarray
    residual_sum: np.ndarray
    residual: np.ndarray
    maxpool: np.ndarray
    gap: float

    def to_json(self) -> dict[str, Any]:
        """``{"conv", "relu", "residual", "maxpool": nested lists, "gap": number}``."""
        return {
            "conv": self.conv.tolist(),
            "relu": self.relu.tolist(),
            "residual": self.residual.tolist(),
            "maxpool": self.maxpool.tolist(),
            "gap": self.gap,
        }

    def settings(self) -> str:
        """One line: stride, padding and pooling."""
        return (
            f"stride {self.stride}, padding {self.padding!r}, max pool {self.pool}x{self.pool} "
            f"stride {self.pool_stride}{' (ceil mode)' if self.ceil_mode else ''}"
        )

    def steps(self) -> list[Step]:
        kh, kw = self.kernel.shape
        h, w = self.residual.shape
        ph, pw = self.maxpool.shape
        covered_h = (ph - 1) * self.pool_stride + self.pool
        covered_w = (pw - 1) * self.pool_stride + self.pool
        if self.ceil_mode:
            pool_note = "ceil mode: a last, partial window is kept where input is left over"
        elif (covered_h, covered_w) != (h, w):
            pool_note = (
                f"floor mode (PyTorch's default): only whole windows, so {h}x{w} -> {ph}x{pw};"
                f"\nthe last {h - covered_h} row(s) and {w - covered_w} column(s) are in no "
                "window (ceil mode keeps partial windows)"
            )
        else:
            pool_note = "the windows tile the map exactly"
        same = np.array_equal(self.residual_sum, self.residual)
        return [
            Step("input X", self.input, "the image (one channel)"),
            Step("kernel K", self.kernel, "the filter"),
            Step(
                "padded input",
                self.padded_input,
                _padding_words(self.pad),
                highlight=(0, 0, kh, kw),
            ),
            Step(
                "conv = xcorr(padded X, K)",
                self.conv,
                f"cross-correlation, stride {self.stride}: slide K over the padded input,\n"
                "multiply elementwise and add (K is not flipped, as in PyTorch)\n"
                + worked_cell(self.padded_input[:kh, :kw], self.kernel, "conv[0,0]"),
                highlight=(0, 0, 1, 1),
            ),
            Step(
                "relu = max(conv, 0)",
                self.relu,
                "negative values become 0"
                + (" (there are none here)" if (self.conv >= 0).all() else ""),
            ),
            Step(
                "relu + X  (skip connection)",
                self.residual_sum,
                "add the block's input back, cell by cell",
            ),
            Step(
                "residual = relu(relu + X)",
                self.residual,
                "the block output" + (" (unchanged here: every sum is >= 0)" if same else ""),
            ),
            Step(
                f"max pool {self.pool}x{self.pool}, stride {self.pool_stride}",
                self.maxpool,
                "largest value of each window\n" + pool_note,
            ),
            Step(
                "global average pool", self.gap, f"mean of the {ph}x{pw} pooled values: one number"
            ),
        ]

    def text(self) -> str:
        head = (
            "Residual block walkthrough: conv -> ReLU -> + input (skip) -> ReLU -> max pool "
            f"-> global average pool\nsettings: {self.settings()}"
        )
        return head + "\n\n" + render_text(self.steps())


def residual_walkthrough(
    input: Any = None,
    kernel: Any = None,
    stride: int = 1,
    padding: Padding = 1,
    pool: int = 2,
    pool_stride: int | None = None,
    ceil_mode: bool = False,
) -> ResidualWalkthrough:
    """Run the residual exercise on one single-channel image.

    Args:
        input: ``(H, W)`` image; default the course's 5x5 ``COURSE_INPUT``.
        kernel: ``(kh, kw)`` filter; default the course's 3x3 ``COURSE_KERNEL``.
        stride: convolution stride.
        padding: convolution padding, as ``conv2d_forward`` accepts.
        pool: max-pool window size.
        pool_stride: max-pool stride (default ``pool``).
        ceil_mode: max-pool rounding (PyTorch's, default floor).

    Raises:
        UserError: bad matrices or settings; a convolution whose output shape differs from the
            input's (the skip add would be impossible), with both shapes in the message.
    """
    x = _matrix(COURSE_INPUT if input is None else input, "input")
    k = _matrix(COURSE_KERNEL if kernel is None else kernel, "kernel")
    pool_stride = pool if pool_stride is None else pool_stride
    g = conv2d_geometry(
        _as_4d(x).shape, _as_4d(k).shape, stride, padding, op="walkthrough residual"
    )
    out, cache = residual_block_forward(_as_4d(x), _as_4d(k), None, stride, padding)
    pooled, _ = maxpool2d_forward(out, pool, pool_stride, 0, ceil_mode)
    gap, _ = global_avgpool_forward(pooled)
    top, bottom, left, right = g.pad
    return ResidualWalkthrough(
        input=x,
        kernel=k,
        stride=stride,
        padding=padding,
        pad=g.pad,
        pool=pool,
        pool_stride=pool_stride,
        ceil_mode=ceil_mode,
        padded_input=np.pad(x, ((top, bottom), (left, right))),
        conv=cache.conv[0, 0],
        relu=cache.relu[0, 0],
        residual_sum=cache.residual[0, 0],
        residual=out[0, 0],
        maxpool=pooled[0, 0],
        gap=float(gap[0, 0]),
    )


# ------------------------------------------------------------------------------------------------
# Convolution backward walkthrough
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvBackwardWalkthrough:
    """Forward output and both gradients of ``Y = xcorr(X, W)`` (valid, stride 1), with the
    matrices that produce them."""

    x: np.ndarray
    w: np.ndarray
    dy: np.ndarray
    y: np.ndarray
    dW: np.ndarray
    dX: np.ndarray
    dy_padded: np.ndarray  # dL/dY with kh-1 / kw-1 rows / columns of zeros on every side
    w_rot180: np.ndarray

    def to_json(self) -> dict[str, Any]:
        """``{"y", "dW", "dX"}`` as nested lists."""
        return {"y": self.y.tolist(), "dW": self.dW.tolist(), "dX": self.dX.tolist()}

    def steps(self) -> list[Step]:
        kh, kw = self.w.shape
        yh, yw = self.y.shape
        # dX[0,0] sees a single dY value; a cell one step in shows the sum better
        ci, cj = min(1, self.x.shape[0] - 1), min(1, self.x.shape[1] - 1)
        return [
            Step("X (input)", self.x),
            Step("W (kernel)", self.w),
            Step(
                "Y = xcorr(X, W)",
                self.y,
                "forward: valid cross-correlation, stride 1\n"
                + worked_cell(self.x[:kh, :kw], self.w, "Y[0,0]"),
            ),
            Step("dL/dY (upstream gradient)", self.dy, "given"),
            Step(
                "dL/dW = xcorr(X, dL/dY)",
                self.dW,
                "correlate the input with the upstream gradient:\n"
                "dW[i,j] = sum over output cells of dY[r,c] * X[r+i, c+j]\n"
                + worked_cell(self.x[:yh, :yw], self.dy, "dW[0,0]"),
            ),
            Step("rot180(W)", self.w_rot180, "W flipped up-down and left-right"),
            Step(
                "dL/dY zero-padded",
                self.dy_padded,
                f"{kh - 1} row(s) / {kw - 1} column(s) of zeros on every side (kernel size - 1)",
            ),
            Step(
                "dL/dX = xcorr(padded dL/dY, rot180(W))",
                self.dX,
                "the full convolution of dL/dY with W: each output cell sends dY[r,c] * W\n"
                "back to the input window it came from:\n"
                "dX[i,j] = sum over r,c of dY[r,c] * W[i-r, j-c] (0 where i-r or j-c is off W)\n"
                + worked_cell(
                    self.dy_padded[ci : ci + kh, cj : cj + kw], self.w_rot180, f"dX[{ci},{cj}]"
                ),
            ),
        ]

    def text(self) -> str:
        head = (
            "Convolution backward walkthrough: Y = xcorr(X, W), valid, stride 1 (xcorr is "
            "cross-correlation,\nwhat PyTorch's conv2d computes: the kernel is not flipped)"
        )
        tail = (
            "\ncheck: dL/dW and dL/dX above equal conv2d_backward's vectorized gradients "
            "(to 1e-12 relative)."
        )
        return head + "\n\n" + render_text(self.steps()) + "\n" + tail


def conv_backward_walkthrough(
    x: Any = None, w: Any = None, dy: Any = None
) -> ConvBackwardWalkthrough:
    """Gradients of a valid, stride-1, single-channel convolution, computed as correlations.

    ``dL/dW = xcorr(X, dL/dY)`` and ``dL/dX = xcorr(pad(dL/dY, k - 1), rot180(W))``, each then
    checked against ``conv2d_backward``.

    Args:
        x: ``(H, W)`` input; default the course's 4x4 ``COURSE_X``.
        w: ``(kh, kw)`` kernel; default the course's 3x3 ``COURSE_W``.
        dy: ``(H - kh + 1, W - kw + 1)`` upstream gradient; default ``COURSE_DY``.

    Raises:
        UserError: bad matrices, a kernel larger than the input, or ``dy`` not of ``Y``'s shape.
    """
    x = _matrix(COURSE_X if x is None else x, "X")
    w = _matrix(COURSE_W if w is None else w, "W")
    dy = _matrix(COURSE_DY if dy is None else dy, "dL/dY")
    conv2d_geometry(_as_4d(x).shape, _as_4d(w).shape, op="walkthrough conv-backward")  # checks
    y, cache = conv2d_forward(_as_4d(x), _as_4d(w))
    if dy.shape != y.shape[2:]:
        raise UserError(
            f"dL/dY must have the shape of Y = xcorr(X, W), {y.shape[2]}x{y.shape[3]} "
            f"(X {x.shape[0]}x{x.shape[1]}, W {w.shape[0]}x{w.shape[1]}), "
            f"got {dy.shape[0]}x{dy.shape[1]}"
        )
    kh, kw = w.shape
    dw, _ = conv2d_forward(_as_4d(x), _as_4d(dy))  # X correlated with dY
    w_rot = w[::-1, ::-1].copy()
    dy_padded = np.pad(dy, ((kh - 1, kh - 1), (kw - 1, kw - 1)))
    dx, _ = conv2d_forward(_as_4d(dy_padded), _as_4d(w_rot))
    # The engine's backward must agree with the textbook formulas; a mismatch is a bug in cnnlab.
    dx_ref, dw_ref, _ = conv2d_backward(_as_4d(dy), cache)
    for name, a, ref in (("dL/dW", dw, dw_ref), ("dL/dX", dx, dx_ref)):
        if not np.allclose(a, ref, rtol=1e-12, atol=1e-12 * max(1.0, float(np.abs(ref).max()))):
            raise AssertionError(f"{name}: the correlation formula and conv2d_backward disagree")
    return ConvBackwardWalkthrough(
        x=x, w=w, dy=dy, y=y[0, 0], dW=dw[0, 0], dX=dx[0, 0], dy_padded=dy_padded, w_rot180=w_rot
    )
