"""Embedding lookup, as ``torch.nn.functional.embedding``: row ``ids[n, t]`` of the table."""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnlab.errors import UserError
from cnnlab.numpy_ref._args import as_float_array


def embedding_forward(ids: Any, weight: Any) -> tuple[np.ndarray, tuple]:
    """Look up one vector per token id: ``out[n, t] = weight[ids[n, t]]``.

    Args:
        ids: integer ids of any shape, e.g. ``(N, T)``, each in ``[0, V)``.
        weight: ``(V, E)``, one row per vocabulary entry.

    Returns:
        ``(out, cache)``, ``out`` of shape ``ids.shape + (E,)``.
    """
    w = as_float_array(weight, "weight", "embedding", ndim=2, layout="(V, E)")
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise UserError(f"embedding: ids must be integers, got dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= w.shape[0]):
        raise UserError(f"embedding: ids must be in [0, {w.shape[0]}) (rows of weight), got "
                        f"{ids.min()}..{ids.max()}")
    return w[ids], (ids, w.shape)


def embedding_backward(dout: Any, cache: tuple) -> np.ndarray:
    """Gradient of ``embedding_forward`` with respect to the table.

    A row used k times receives the sum of its k upstream gradients (``np.add.at`` adds
    repeated indices; ``dw[ids] += dout`` would keep only one of them).

    Args:
        dout: ``ids.shape + (E,)``.
        cache: from ``embedding_forward``.

    Returns:
        dweight, ``(V, E)``.
    """
    ids, shape = cache
    dout = as_float_array(dout, "upstream gradient dout", "embedding backward")
    if dout.shape != ids.shape + (shape[1],):
        raise UserError(f"embedding backward: dout must have shape {ids.shape + (shape[1],)}, "
                        f"got {dout.shape}")
    dw = np.zeros(shape)
    np.add.at(dw, ids.ravel(), dout.reshape(-1, shape[1]))
    return dw
