"""Small layers, each backward right beside its forward: ReLU, linear, softmax cross-entropy."""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnlab.errors import UserError
from cnnlab.numpy_ref._args import as_float_array, check_vector


def relu_forward(x: Any) -> tuple[np.ndarray, np.ndarray]:
    """``max(x, 0)`` elementwise.

    Args:
        x: any shape, e.g. ``(N, C, H, W)``.

    Returns:
        ``(out, cache)``, ``out`` of the same shape.
    """
    x = as_float_array(x, "input x", "relu")
    return np.maximum(x, 0.0), x


def relu_backward(dout: Any, cache: np.ndarray) -> np.ndarray:
    """Gradient of ``relu_forward``: ``dout`` where ``x > 0``, else 0 (0 at exactly 0, as PyTorch).

    Args:
        dout: same shape as the forward input.
        cache: from ``relu_forward``.

    Returns:
        dx, same shape.
    """
    dout = as_float_array(dout, "upstream gradient dout", "relu backward")
    if dout.shape != cache.shape:
        raise UserError(
            f"relu backward: dout must have the input's shape {cache.shape}, got {dout.shape}"
        )
    return np.where(cache > 0, dout, 0.0)


def linear_forward(x: Any, w: Any, b: Any = None) -> tuple[np.ndarray, tuple]:
    """Fully connected layer ``x @ w.T + b``, as ``torch.nn.functional.linear``.

    Args:
        x: ``(N, D)``.
        w: ``(M, D)`` (PyTorch's layout: one row per output).
        b: ``(M,)`` or None.

    Returns:
        ``(out, cache)``, ``out`` of shape ``(N, M)``.
    """
    x = as_float_array(x, "input x", "linear", ndim=2, layout="(N, D)")
    w = as_float_array(w, "weight w", "linear", ndim=2, layout="(M, D)")
    if w.shape[1] != x.shape[1]:
        raise UserError(
            f"linear: x has {x.shape[1]} features but w expects {w.shape[1]} (w.shape = {w.shape}, "
            "one row per output)"
        )
    out = x @ w.T
    if b is not None:
        b = as_float_array(b, "bias b", "linear")
        check_vector(b, w.shape[0], "bias b", "linear", "output")
        out += b
    return out, (x, w, b is not None)


def linear_backward(dout: Any, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradient of ``linear_forward``.

    Args:
        dout: ``(N, M)``.
        cache: from ``linear_forward``.

    Returns:
        ``(dx, dw, db)``: ``(N, D)``, ``(M, D)``, ``(M,)`` or None without bias.
    """
    x, w, has_bias = cache
    dout = as_float_array(
        dout, "upstream gradient dout", "linear backward", ndim=2, layout="(N, M)"
    )
    if dout.shape != (x.shape[0], w.shape[0]):
        raise UserError(
            f"linear backward: dout must have shape {(x.shape[0], w.shape[0])}, got {dout.shape}"
        )
    return dout @ w, dout.T @ x, (dout.sum(axis=0) if has_bias else None)


def softmax_cross_entropy(logits: Any, y: Any) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy and its gradient, as ``torch.nn.functional.cross_entropy``.

    Numerically stable: ``log softmax(z) = z - max(z) - log(sum(exp(z - max(z))))``, so large
    logits neither overflow nor lose the small probabilities.

    Args:
        logits: ``(N, K)`` unnormalised class scores.
        y: ``(N,)`` integer class indices in ``[0, K)``.

    Returns:
        ``(loss, dlogits)``: the mean loss over the batch and its gradient ``(N, K)``,
        ``(softmax(logits) - onehot(y)) / N``.
    """
    z = as_float_array(logits, "logits", "softmax_cross_entropy", ndim=2, layout="(N, K)")
    y = np.asarray(y)
    n, k = z.shape
    if y.dtype.kind not in "iu":
        raise UserError(f"softmax_cross_entropy: labels y must be integers, got dtype {y.dtype}")
    if y.shape != (n,):
        raise UserError(
            f"softmax_cross_entropy: labels y must have shape ({n},), one per row of logits; "
            f"got {y.shape}"
        )
    if y.min() < 0 or y.max() >= k:
        bad = y[(y < 0) | (y >= k)][0]
        raise UserError(f"softmax_cross_entropy: label {bad} is outside [0, {k}) for {k} classes")
    shifted = z - z.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # (N, K)
    rows = np.arange(n)
    loss = float(-log_p[rows, y].mean())
    dlogits = np.exp(log_p)
    dlogits[rows, y] -= 1.0
    return loss, dlogits / n
