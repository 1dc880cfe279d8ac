"""2-D batch normalisation (``torch.nn.BatchNorm2d``), train and eval mode, with its backward.

Train mode normalises each channel with the batch's mean and *biased* variance (divide by
``m = N * H * W``) and returns updated running statistics::

    running_mean <- (1 - momentum) * running_mean + momentum * mean
    running_var  <- (1 - momentum) * running_var  + momentum * var * m / (m - 1)   (unbiased)

exactly as PyTorch does. Eval mode normalises with the running statistics and changes nothing.
The functions are pure: the new running statistics are returned, not written in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from cnnlab.errors import UserError
from cnnlab.numpy_ref._args import as_float_array, check_vector

_OP = "batchnorm2d"


class RunningStats(NamedTuple):
    """Per-channel running mean and (unbiased) variance, each ``(C,)``."""

    mean: np.ndarray
    var: np.ndarray


@dataclass
class _BatchNormCache:
    x_hat: np.ndarray  # (N, C, H, W) normalised input
    inv_std: np.ndarray  # (C,)
    gamma: np.ndarray  # (C,)
    training: bool


def batchnorm2d_forward(
    x: Any,
    gamma: Any,
    beta: Any,
    running_mean: Any,
    running_var: Any,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> tuple[np.ndarray, _BatchNormCache, RunningStats]:
    """Batch normalisation over ``(N, H, W)`` for each channel, then scale and shift.

    Args:
        x: ``(N, C, H, W)``.
        gamma: scale ``(C,)`` (PyTorch's ``weight``).
        beta: shift ``(C,)`` (PyTorch's ``bias``).
        running_mean: ``(C,)``.
        running_var: ``(C,)``.
        training: use batch statistics and update the running ones (True) or use the running
            statistics (False).
        momentum: weight of the new batch in the running statistics, in [0, 1].
        eps: added to the variance before the square root, > 0.

    Returns:
        ``(out, cache, running)``: ``out`` ``(N, C, H, W)``; ``cache`` for the backward;
        ``running`` the updated ``RunningStats`` in train mode, the given ones in eval mode.

    Raises:
        UserError: bad shapes, momentum outside [0, 1], eps <= 0, or a single value per
            channel in train mode (its variance is undefined, PyTorch refuses it too).
    """
    x = as_float_array(x, "input x", _OP, ndim=4, layout="(N, C, H, W)")
    n, c, h, w = x.shape
    params = {}
    for name, v in (
        ("gamma", gamma),
        ("beta", beta),
        ("running_mean", running_mean),
        ("running_var", running_var),
    ):
        params[name] = as_float_array(v, name, _OP)
        check_vector(params[name], c, name, _OP, "channel")
    if not 0.0 <= momentum <= 1.0:
        raise UserError(f"{_OP}: momentum must be in [0, 1], got {momentum}")
    if not eps > 0:
        raise UserError(f"{_OP}: eps must be > 0, got {eps}")
    rm, rv = params["running_mean"], params["running_var"]
    if training:
        m = n * h * w
        if m < 2:
            raise UserError(
                f"{_OP}: train mode needs more than one value per channel, got input shape "
                f"{x.shape}"
            )
        mean = x.mean(axis=(0, 2, 3))
        var = x.var(axis=(0, 2, 3))  # biased: this is what normalises
        running = RunningStats(
            (1 - momentum) * rm + momentum * mean,
            (1 - momentum) * rv + momentum * var * m / (m - 1),
        )
    else:
        mean, var = rm, rv
        running = RunningStats(rm.copy(), rv.copy())
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mean[None, :, None, None]) * inv_std[None, :, None, None]
    out = params["gamma"][None, :, None, None] * x_hat + params["beta"][None, :, None, None]
    return out, _BatchNormCache(x_hat, inv_std, params["gamma"], training), running


def batchnorm2d_backward(
    dout: Any, cache: _BatchNormCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradient of ``batchnorm2d_forward``.

    In train mode the batch mean and variance depend on ``x``, which gives the compact form
    (per channel, ``m = N * H * W``, ``g = dout * gamma``)::

        dx = inv_std / m * (m * g - sum(g) - x_hat * sum(g * x_hat))

    In eval mode the statistics are constants and ``dx = dout * gamma * inv_std``.

    Args:
        dout: ``(N, C, H, W)``.
        cache: from ``batchnorm2d_forward``.

    Returns:
        ``(dx, dgamma, dbeta)``: ``(N, C, H, W)``, ``(C,)``, ``(C,)``.
    """
    dout = as_float_array(
        dout, "upstream gradient dout", f"{_OP} backward", ndim=4, layout="(N, C, H, W)"
    )
    if dout.shape != cache.x_hat.shape:
        raise UserError(
            f"{_OP} backward: dout must have the input's shape {cache.x_hat.shape}, "
            f"got {dout.shape}"
        )
    dgamma = (dout * cache.x_hat).sum(axis=(0, 2, 3))
    dbeta = dout.sum(axis=(0, 2, 3))
    g = dout * cache.gamma[None, :, None, None]
    inv_std = cache.inv_std[None, :, None, None]
    if not cache.training:
        return g * inv_std, dgamma, dbeta
    m = g.shape[0] * g.shape[2] * g.shape[3]
    g_sum = g.sum(axis=(0, 2, 3), keepdims=True)
    gx_sum = (g * cache.x_hat).sum(axis=(0, 2, 3), keepdims=True)
    dx = inv_std / m * (m * g - g_sum - cache.x_hat * gx_sum)
    return dx, dgamma, dbeta
