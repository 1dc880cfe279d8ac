"""Guided Backpropagation (Springenberg et al., ICLR 2015 workshop, arXiv:1412.6806)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from cnnlab.explain._common import (
    Explainer,
    Targets,
    check_logits,
    eval_mode,
    prepare_images,
    resolve_targets,
    selected_score,
)


class _GuidedClamp(torch.autograd.Function):
    """``clamp(x, 0, upper)`` whose backward passes only positive gradients where the gate was open.

    The gate is ``x > 0`` for ReLU and ``0 < x < upper`` for ReLU6 (the inputs where the ordinary
    derivative is 1). Only the boolean gate is saved, so the in-place variant (which overwrites
    ``x``) is safe.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, upper: float | None, inplace: bool) -> Tensor:
        gate = x > 0 if upper is None else (x > 0) & (x < upper)
        ctx.save_for_backward(gate)
        if inplace:
            ctx.mark_dirty(x)
            return x.clamp_(0, upper)
        return x.clamp(0, upper)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (gate,) = ctx.saved_tensors
        return grad.clamp(min=0) * gate, None, None


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _relu(args: tuple, kwargs: dict, inplace: bool | None) -> Tensor:
    inplace = bool(_arg(args, kwargs, 1, "inplace", False)) if inplace is None else inplace
    return _GuidedClamp.apply(args[0], None, inplace)


def _hardtanh(args: tuple, kwargs: dict, func: Callable) -> Tensor:
    low = _arg(args, kwargs, 1, "min_val", -1.0)
    high = _arg(args, kwargs, 2, "max_val", 1.0)
    if low != 0:  # a hardtanh that is not a ReLU6-like clamp keeps its ordinary gradient
        return func(*args, **kwargs)
    return _GuidedClamp.apply(args[0], float(high), bool(_arg(args, kwargs, 3, "inplace", False)))


def _relu6(args: tuple, kwargs: dict) -> Tensor:
    return _GuidedClamp.apply(args[0], 6.0, bool(_arg(args, kwargs, 1, "inplace", False)))


# Every way a model can call ReLU or ReLU6 through torch's Python API. nn.ReLU calls F.relu and
# nn.ReLU6 calls F.hardtanh(x, 0, 6), so modules and functional calls are both covered.
_GUIDED: dict[Callable, Callable[[tuple, dict, Callable], Tensor]] = {
    F.relu: lambda a, k, f: _relu(a, k, None),
    torch.relu: lambda a, k, f: _relu(a, k, False),
    Tensor.relu: lambda a, k, f: _relu(a, k, False),
    F.relu_: lambda a, k, f: _relu(a, k, True),
    torch.relu_: lambda a, k, f: _relu(a, k, True),
    Tensor.relu_: lambda a, k, f: _relu(a, k, True),
    F.relu6: lambda a, k, f: _relu6(a, k),
    F.hardtanh: lambda a, k, f: _hardtanh(a, k, f),
}


class _GuidedMode(TorchFunctionMode):
    """While active, every ReLU / ReLU6 call (module, functional or method) is guided."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        guided = _GUIDED.get(func)
        return guided(args, kwargs, func) if guided is not None else func(*args, **kwargs)


class GuidedBackprop(Explainer):
    """Guided Backpropagation: the input gradient with every ReLU's backward rectified.

    Through each ReLU the backward pass keeps a gradient only where the forward input was positive
    *and* the gradient itself is positive. ReLU6 is treated the same way (gate ``0 < x < 6``).

    How: while :meth:`compute` runs, a ``torch.overrides.TorchFunctionMode`` routes every call of
    ``F.relu``, ``torch.relu``, ``Tensor.relu`` (and their in-place ``_`` forms), ``F.relu6`` and
    ``F.hardtanh(x, 0, max)`` to a guided autograd function. That covers ``nn.ReLU`` /
    ``nn.ReLU6`` modules and functional calls alike, in-place ones included, without changing the
    model: nothing is swapped, so nothing has to be restored, even when an exception is raised.
    Not covered: other activations (GELU, SiLU, Hardswish keep their ordinary gradient), ReLUs
    written as ``clamp``/``max``, and code that does not go through torch's Python API
    (TorchScript, compiled graphs).

    Computed in eval mode (module flags restored afterwards), with ``torch.autograd.grad`` with
    respect to a copy of the input, so parameters' ``.grad`` are untouched.

    Args:
        model: a classifier returning logits ``(N, num_classes)``.
    """

    def compute(self, x: Tensor, targets: Targets = None) -> Tensor:
        """Guided gradients of each image's target logit with respect to its pixels.

        Args:
            x: images ``(N, C, H, W)``.
            targets: None (predicted classes), an int, or one class index per image.

        Returns:
            Gradients ``(N, C, H, W)`` (signed; see :mod:`cnnlab.explain.overlay` to display).
        """
        x = prepare_images(self.model, x)
        with torch.inference_mode(False), torch.enable_grad(), eval_mode(self.model):
            inputs = x.detach().clone().requires_grad_(True)
            with _GuidedMode():
                logits = check_logits(self.model(inputs))
            target = resolve_targets(targets, logits)
            (grad,) = torch.autograd.grad(selected_score(logits, target), inputs)
        self.logits, self.targets = logits.detach(), target
        return grad
