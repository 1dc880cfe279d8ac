"""Optimisers as ``torch.optim`` computes them, one inspectable step at a time: SGD (momentum,
Nesterov, weight decay), RMSprop, Adam and AdamW (bias correction switchable).

Each optimiser holds one float64 parameter array and its state. ``step(grad)`` applies one
update and returns a :class:`StepRecord` with every intermediate (the moments, their
bias-corrected values, the update), so a walkthrough or a student can print the arithmetic.
With the same gradients the parameters match ``torch.optim`` in float64 to 1e-12 (tested).

Notation follows PyTorch's documentation: ``m`` the first moment (momentum buffer), ``v`` the
second moment (the course's ``S_t``). Adam's ``eps`` is added to ``sqrt(v_hat)`` as PyTorch does,
not inside the square root.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnlab.errors import UserError
from cnnlab.numpy_ref._args import as_float_array


@dataclass(frozen=True)
class StepRecord:
    """One optimiser step.

    Attributes:
        t: the step number, from 1.
        grad: the gradient as given, same shape as the parameters.
        values: the named intermediates of this step (e.g. ``"m"``, ``"v"``, ``"m_hat"``,
            ``"update"``), each an array of the parameters' shape.
        param: the parameters after the step.
    """

    t: int
    grad: np.ndarray
    values: dict[str, np.ndarray]
    param: np.ndarray


def _check_rate(value: float, name: str, op: str, low_open: bool = False) -> float:
    v = float(value)
    if not np.isfinite(v) or v < 0 or (low_open and v == 0):
        raise UserError(f"{op}: {name} must be {'> 0' if low_open else '>= 0'}, got {value}")
    return v


def check_beta(value: float, name: str, op: str) -> float:
    """A decay rate in [0, 1) (1 would never forget its first value), else a ``UserError``."""
    v = float(value)
    if not 0.0 <= v < 1.0:
        raise UserError(f"{op}: {name} must be in [0, 1), got {value}")
    return v


@dataclass
class _Optimizer:
    param: np.ndarray
    t: int = field(default=0, init=False)
    history: list[StepRecord] = field(default_factory=list, init=False)

    _OP = "optimizer"

    def __post_init__(self) -> None:
        self.param = as_float_array(self.param, "param", self._OP).copy()

    def _grad(self, grad: Any) -> np.ndarray:
        g = as_float_array(grad, "grad", f"{self._OP} step")
        if g.shape != self.param.shape:
            raise UserError(
                f"{self._OP} step: grad must have the parameters' shape {self.param.shape}, "
                f"got {g.shape}"
            )
        return g

    def step(self, grad: Any) -> StepRecord:
        """Apply one update with ``grad`` (the parameters' shape); returns its record."""
        g = self._grad(grad)
        self.t += 1
        values = self._update(g)
        rec = StepRecord(self.t, g.copy(), {k: np.array(v) for k, v in values.items()},
                         self.param.copy())
        self.history.append(rec)
        return rec

    def _update(self, g: np.ndarray) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class SGD(_Optimizer):
    """``torch.optim.SGD``: ``g <- g + wd * p``; with momentum ``mu``,
    ``b <- g`` at step 1, then ``b <- mu * b + (1 - dampening) * g``; the direction is ``b``, or
    ``g + mu * b`` with Nesterov; ``p <- p - lr * direction``."""

    lr: float = 0.01
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    _OP = "SGD"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_rate(self.lr, "lr", self._OP)
        _check_rate(self.weight_decay, "weight_decay", self._OP)
        check_beta(self.momentum, "momentum", self._OP)
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            raise UserError("SGD: Nesterov momentum needs momentum > 0 and dampening 0")
        self.buf: np.ndarray | None = None

    def _update(self, g: np.ndarray) -> dict[str, np.ndarray]:
        g = g + self.weight_decay * self.param
        out = {"grad_with_decay": g}
        direction = g
        if self.momentum:
            if self.buf is None:
                self.buf = g.copy()
            else:
                self.buf = self.momentum * self.buf + (1 - self.dampening) * g
            direction = g + self.momentum * self.buf if self.nesterov else self.buf
            out["buf"] = self.buf
        update = self.lr * direction
        self.param = self.param - update
        return {**out, "update": update}


@dataclass
class RMSprop(_Optimizer):
    """``torch.optim.RMSprop``: ``v <- alpha * v + (1 - alpha) * g^2``; centred, also
    ``gbar <- alpha * gbar + (1 - alpha) * g`` and ``v - gbar^2`` in place of ``v``;
    ``p <- p - lr * g / (sqrt(v) + eps)`` (through a momentum buffer when momentum > 0)."""

    lr: float = 0.01
    alpha: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0
    centered: bool = False
    _OP = "RMSprop"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_rate(self.lr, "lr", self._OP)
        _check_rate(self.eps, "eps", self._OP)
        _check_rate(self.weight_decay, "weight_decay", self._OP)
        check_beta(self.alpha, "alpha", self._OP)
        check_beta(self.momentum, "momentum", self._OP)
        self.v = np.zeros_like(self.param)
        self.g_avg = np.zeros_like(self.param)
        self.buf = np.zeros_like(self.param)

    def _update(self, g: np.ndarray) -> dict[str, np.ndarray]:
        g = g + self.weight_decay * self.param
        self.v = self.alpha * self.v + (1 - self.alpha) * g * g
        out = {"v": self.v}
        if self.centered:
            self.g_avg = self.alpha * self.g_avg + (1 - self.alpha) * g
            denom = np.sqrt(self.v - self.g_avg**2) + self.eps
            out["g_avg"] = self.g_avg
        else:
            denom = np.sqrt(self.v) + self.eps
        if self.momentum > 0:
            self.buf = self.momentum * self.buf + g / denom
            update = self.lr * self.buf
            out["buf"] = self.buf
        else:
            update = self.lr * g / denom
        self.param = self.param - update
        return {**out, "denom": denom, "update": update}


@dataclass
class Adam(_Optimizer):
    """``torch.optim.Adam`` / ``AdamW``::

        m <- beta1 * m + (1 - beta1) * g            (first moment)
        v <- beta2 * v + (1 - beta2) * g^2          (second moment, the course's S_t)
        m_hat = m / (1 - beta1^t),  v_hat = v / (1 - beta2^t)   (bias correction)
        p <- p - lr * m_hat / (sqrt(v_hat) + eps)

    ``weight_decay`` is added to the gradient (``g + wd * p``, L2 regularisation) for Adam and
    applied to the parameters directly (``p <- p * (1 - lr * wd)`` before the step) when
    ``decoupled`` (AdamW). With ``bias_correction=False``, ``m_hat = m`` and ``v_hat = v``.
    """

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False
    bias_correction: bool = True
    _OP = "Adam"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_rate(self.lr, "lr", self._OP)
        _check_rate(self.eps, "eps", self._OP)
        _check_rate(self.weight_decay, "weight_decay", self._OP)
        check_beta(self.beta1, "beta1", self._OP)
        check_beta(self.beta2, "beta2", self._OP)
        self.m = np.zeros_like(self.param)
        self.v = np.zeros_like(self.param)

    def _update(self, g: np.ndarray) -> dict[str, np.ndarray]:
        if self.decoupled:
            self.param = self.param * (1 - self.lr * self.weight_decay)
        else:
            g = g + self.weight_decay * self.param
        self.m = self.beta1 * self.m + (1 - self.beta1) * g
        self.v = self.beta2 * self.v + (1 - self.beta2) * g * g
        if self.bias_correction:
            m_hat = self.m / (1 - self.beta1**self.t)
            v_hat = self.v / (1 - self.beta2**self.t)
        else:
            m_hat, v_hat = self.m, self.v
        update = self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
        self.param = self.param - update
        return {"m": self.m, "v": self.v, "m_hat": m_hat, "v_hat": v_hat, "update": update}


def AdamW(param: Any, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,  # noqa: N802
          eps: float = 1e-8, weight_decay: float = 1e-2, bias_correction: bool = True) -> Adam:
    """``torch.optim.AdamW``: Adam with decoupled weight decay (PyTorch's default 1e-2)."""
    return Adam(param, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                decoupled=True, bias_correction=bias_correction)
