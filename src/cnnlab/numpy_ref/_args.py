"""Argument checks shared by the NumPy ops: each bad value becomes one ``UserError`` naming it."""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from cnnlab.errors import UserError


def as_float_array(
    a: Any, name: str, op: str, ndim: int | None = None, layout: str = ""
) -> np.ndarray:
    """``a`` as a float64 array, or a ``UserError`` naming ``op``, ``name`` and what was wrong
    (``layout``, e.g. ``"(N, C, H, W)"``, is quoted when the number of dimensions is wrong).

    The engine computes in float64 throughout so that its numbers can serve as the reference.
    """
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise UserError(f"{op}: {name} must be numeric, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        expected = f"{ndim}-D {layout}".rstrip()
        raise UserError(f"{op}: {name} must be {expected}, got shape {arr.shape}")
    if arr.size == 0:
        raise UserError(f"{op}: {name} is empty (shape {arr.shape})")
    return arr.astype(np.float64, copy=False)


def as_int(value: Any, name: str, op: str, minimum: int) -> int:
    """A Python int >= ``minimum`` (bools and floats are refused: ``stride=1.5`` is a mistake)."""
    if isinstance(value, bool):
        raise UserError(f"{op}: {name} must be an integer, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise UserError(f"{op}: {name} must be an integer, got {value!r}") from None
    if v < minimum:
        raise UserError(f"{op}: {name} must be >= {minimum}, got {v}")
    return v


def as_pair(value: Any, name: str, op: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, as ``(height, width)``, each >= ``minimum``."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise UserError(f"{op}: {name} must be an int or a pair (height, width), got {value!r}")
        return (as_int(value[0], name, op, minimum), as_int(value[1], name, op, minimum))
    v = as_int(value, name, op, minimum)
    return (v, v)


def check_vector(v: np.ndarray, length: int, name: str, op: str, what: str) -> None:
    """Require a 1-D array of ``length`` entries (one per ``what``)."""
    if v.shape != (length,):
        raise UserError(f"{op}: {name} must have shape ({length},), one per {what}; got {v.shape}")
