"""Optimisers with weight decay only where it belongs, per-step lr schedules, and a weight EMA."""

from __future__ import annotations

import math

import torch
from torch import nn

from cnnlab.engine.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: conv/linear weights with decay; biases and norm parameters without.

    Decaying BatchNorm scales and biases only shrinks them without regularising anything (BN
    makes the following layer invariant to the scale of its input), so they are excluded; every
    parameter with at most one dimension is a bias or a norm parameter.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, config: TrainConfig, device: torch.device
                   ) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (plain SGD at momentum 0) or AdamW, over :func:`param_groups`.

    On CUDA the fused implementations (one kernel for all parameters) are used.
    """
    groups = param_groups(model, config.weight_decay)
    fused = {"fused": True} if device.type == "cuda" else {}
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                               nesterov=config.momentum > 0, **fused)
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.momentum, 0.999), **fused)


def lr_factor(step: int, total: int, schedule: str, warmup: float) -> float:
    """The learning rate at ``step`` (0-based) of ``total``, as a fraction of the peak.

    All schedules first ramp linearly from 0.1 to 1 over ``warmup * total`` steps; then
    ``onecycle`` falls linearly to 0 at the end, ``cosine`` follows half a cosine to 0 and
    ``constant`` stays at 1.
    """
    warm = warmup * total
    if step < warm:
        return 0.1 + 0.9 * step / warm
    if schedule == "constant":
        return 1.0
    t = (step - warm) / max(total - warm, 1)  # progress after the warm-up, in [0, 1)
    if schedule == "onecycle":
        return 1.0 - t
    return 0.5 * (1.0 + math.cos(math.pi * t))


class EMA:
    """An exponential moving average of a model's weights and float buffers.

    ``ema = decay_n * ema + (1 - decay_n) * weights`` after every step, with the warm-up
    ``decay_n = min(decay, (1 + n) / (10 + n))`` so that early averages do not remember the
    random initialisation. Integer buffers (BatchNorm's step counter) are copied.

    Attributes:
        module: the averaged copy; evaluate this one.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        import copy

        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self._source: nn.Module | None = None

    def _pair(self, model: nn.Module) -> None:
        # The optimiser and BatchNorm update tensors in place, so the pairing of averaged and
        # live tensors is built once instead of walking two state dicts every step.
        ema = self.module.state_dict()
        live = {k: v.detach() for k, v in model.state_dict().items()}
        self._floats = ([ema[k] for k, v in live.items() if v.dtype.is_floating_point],
                        [v for v in live.values() if v.dtype.is_floating_point])
        self._others = [(ema[k], v) for k, v in live.items() if not v.dtype.is_floating_point]
        self._source = model

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        if model is not self._source:
            self._pair(model)
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        # one fused kernel per dtype group instead of one per tensor
        torch._foreach_lerp_(*self._floats, 1.0 - d)
        for e, v in self._others:
            e.copy_(v)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.updates = state["updates"]
        self.module.load_state_dict(state["module"])  # copies in place: the pairing stays valid
