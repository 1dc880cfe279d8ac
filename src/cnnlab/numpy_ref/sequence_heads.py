"""Output heads on top of an RNN's states ``h`` ``(N, T, H)``, masked by sequence length.

- **many-to-one** (sentence classification): one output per sequence, from its last real state
  ``h[n, lengths[n] - 1]``: ``y_hat = W h_T + b``, so ``softmax`` is called once per sentence.
- **many-to-many** (tagging): one output per real step, ``y_hat_t = W h_t + b``: ``softmax`` is
  called ``lengths[n]`` times; padded steps get no output gradient and no loss.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnlab.errors import UserError
from cnnlab.numpy_ref._args import as_float_array
from cnnlab.numpy_ref.layers import linear_backward, linear_forward, softmax_cross_entropy
from cnnlab.numpy_ref.rnn import step_mask


def softmax(z: Any) -> np.ndarray:
    """``exp(z) / sum(exp(z))`` along the last axis, computed as ``exp(z - max z)`` so that
    large scores do not overflow. Any shape ``(..., K)``."""
    z = as_float_array(z, "scores z", "softmax")
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _last_index(lengths: Any, n: int, t: int, op: str) -> np.ndarray:
    step_mask(lengths, n, t, op)  # checks
    return np.full(n, t - 1) if lengths is None else np.asarray(lengths) - 1


def many_to_one_forward(h: Any, w: Any, b: Any, lengths: Any = None) -> tuple[np.ndarray, tuple]:
    """Logits from each sequence's last real state.

    Args:
        h: ``(N, T, H)`` states; w: ``(K, H)``; b: ``(K,)``.
        lengths: ``(N,)`` or None (all ``T``).

    Returns:
        ``(logits (N, K), cache)``.
    """
    h = as_float_array(h, "states h", "many-to-one", ndim=3, layout="(N, T, H)")
    n, t, _ = h.shape
    last = _last_index(lengths, n, t, "many-to-one")
    logits, lin = linear_forward(h[np.arange(n), last], w, b)
    return logits, (h.shape, last, lin)


def many_to_one_backward(dlogits: Any, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradient of ``many_to_one_forward``: only ``h[n, lengths[n] - 1]`` receives any.

    Returns:
        ``(dh (N, T, H), dw (K, H), db (K,))``.
    """
    shape, last, lin = cache
    dlast, dw, db = linear_backward(dlogits, lin)
    dh = np.zeros(shape)
    dh[np.arange(shape[0]), last] = dlast
    return dh, dw, db


def many_to_many_forward(h: Any, w: Any, b: Any, lengths: Any = None
                         ) -> tuple[np.ndarray, tuple]:
    """Logits at every step; padded steps are 0.

    Args:
        h: ``(N, T, H)``; w: ``(K, H)``; b: ``(K,)``; lengths: ``(N,)`` or None.

    Returns:
        ``(logits (N, T, K), cache)``.
    """
    h = as_float_array(h, "states h", "many-to-many", ndim=3, layout="(N, T, H)")
    n, t, d = h.shape
    mask = step_mask(lengths, n, t, "many-to-many")
    flat, lin = linear_forward(h.reshape(n * t, d), w, b)  # (N*T, K)
    logits = flat.reshape(n, t, -1) * mask[..., None]
    return logits, (mask, lin)


def many_to_many_backward(dlogits: Any, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradient of ``many_to_many_forward`` (padded steps pass nothing back).

    Returns:
        ``(dh (N, T, H), dw (K, H), db (K,))``.
    """
    mask, lin = cache
    dlogits = as_float_array(dlogits, "dlogits", "many-to-many backward", ndim=3,
                             layout="(N, T, K)")
    n, t, k = dlogits.shape
    if mask.shape != (n, t):
        raise UserError(f"many-to-many backward: dlogits must be ({mask.shape[0]}, "
                        f"{mask.shape[1]}, K), got {dlogits.shape}")
    dflat, dw, db = linear_backward((dlogits * mask[..., None]).reshape(n * t, k), lin)
    return dflat.reshape(n, t, -1), dw, db


def sequence_cross_entropy(logits: Any, y: Any, lengths: Any = None) -> tuple[float, np.ndarray]:
    """Mean cross-entropy over the real steps of every sequence (as
    ``torch.nn.functional.cross_entropy`` with the padded targets set to ``ignore_index``).

    Args:
        logits: ``(N, T, K)``; y: ``(N, T)`` class indices (anything at padded steps);
        lengths: ``(N,)`` or None.

    Returns:
        ``(loss, dlogits (N, T, K))``, zero gradient at padded steps.
    """
    z = as_float_array(logits, "logits", "sequence_cross_entropy", ndim=3, layout="(N, T, K)")
    n, t, k = z.shape
    y = np.asarray(y)
    if y.shape != (n, t):
        raise UserError(f"sequence_cross_entropy: y must have shape ({n}, {t}), got {y.shape}")
    keep = step_mask(lengths, n, t, "sequence_cross_entropy").astype(bool)
    loss, dflat = softmax_cross_entropy(z[keep], y[keep])
    dz = np.zeros_like(z)
    dz[keep] = dflat
    return loss, dz
