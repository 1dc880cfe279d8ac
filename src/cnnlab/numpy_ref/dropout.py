"""Inverted dropout (``torch.nn.Dropout``), train and eval mode, with its backward.

Train mode keeps each value with probability ``1 - p`` and divides the kept ones by ``1 - p``, so
the expected output equals the input and eval mode can be the identity (no rescaling at test
time). The mask is drawn from a NumPy generator, or given, so a step can be replayed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnlab.errors import UserError
from cnnlab.numpy_ref._args import as_float_array


def check_drop_probability(p: float, op: str = "dropout") -> float:
    """``p`` in [0, 1], else a ``UserError``."""
    v = float(p)
    if not 0.0 <= v <= 1.0:
        raise UserError(f"{op}: the drop probability p must be in [0, 1], got {p}")
    return v


def dropout_forward(
    x: Any,
    p: float = 0.5,
    training: bool = True,
    rng: np.random.Generator | None = None,
    mask: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Inverted dropout.

    Args:
        x: any shape.
        p: probability of dropping a value, in [0, 1].
        training: drop and rescale (True) or pass ``x`` through unchanged (False).
        rng: generator for the mask (default a fresh ``default_rng()``).
        mask: a 0/1 keep mask of ``x``'s shape to use instead of drawing one (train mode).

    Returns:
        ``(out, cache)``: ``out = x * mask / (1 - p)`` in train mode (0 everywhere for p = 1,
        as PyTorch), ``x`` in eval mode; ``cache`` is the scale ``mask / (1 - p)`` (ones in eval
        mode), which is also the backward's factor.
    """
    x = as_float_array(x, "input x", "dropout")
    p = check_drop_probability(p)
    if not training:
        return x.copy(), np.ones_like(x)
    if mask is None:
        mask = (rng or np.random.default_rng()).random(x.shape) >= p
    mask = np.asarray(mask)
    if mask.shape != x.shape or not np.isin(mask, (0, 1)).all():
        raise UserError(f"dropout: mask must be 0/1 values of the input's shape {x.shape}")
    scale = np.zeros_like(x) if p == 1.0 else mask.astype(np.float64) / (1.0 - p)
    return x * scale, scale


def dropout_backward(dout: Any, cache: np.ndarray) -> np.ndarray:
    """Gradient of ``dropout_forward``: ``dout`` times the same scale (0 where dropped)."""
    dout = as_float_array(dout, "upstream gradient dout", "dropout backward")
    if dout.shape != cache.shape:
        raise UserError(
            f"dropout backward: dout must have the input's shape {cache.shape}, got {dout.shape}"
        )
    return dout * cache
