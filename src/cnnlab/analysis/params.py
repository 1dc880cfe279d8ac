"""What "parameters" means for a PyTorch module, computed in one place.

PyTorch's convention (torchvision's ``meta["num_params"]``, torchinfo, the papers' tables): the
parameters are the elements of ``model.parameters()``, each shared (tied) tensor once, split by
``requires_grad`` into trainable and frozen. Buffers (batch norm's running mean and variance,
``num_batches_tracked``, index tables) are state, not parameters: they get their own labelled count
and are never added to the parameters.

Keras-style layer lists keep Keras' own convention instead (batch norm's moving mean and variance
are *non-trainable weights* and count in ``Total params``); :mod:`cnnlab.analysis.spec` applies it.

``analyze`` (via :mod:`cnnlab.analysis.torch_graph`), ``cnnlab models``, the studies and
``cnnlab train``'s ``metrics.json`` all call :func:`count_parameters`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ParamCount:
    """Element counts of one module: ``trainable + frozen`` parameters and, apart, its buffers."""

    trainable: int
    frozen: int
    buffers: int

    @property
    def total(self) -> int:
        """Parameters (trainable + frozen); buffers are not parameters."""
        return self.trainable + self.frozen

    def to_dict(self) -> dict[str, int]:
        return {"params": self.total, "trainable_params": self.trainable,
                "frozen_params": self.frozen, "buffers": self.buffers}


def count_parameters(model: Any) -> ParamCount:
    """Count the parameters of ``model`` the PyTorch way; buffers separately.

    Works on real and ``meta`` tensors (only shapes are read). A tensor registered under two
    names (tied weights, a module used twice) counts once, as in ``model.parameters()``.
    """
    trainable = frozen = 0
    for p in model.parameters():  # already de-duplicated by identity
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    buffers = sum(b.numel() for b in model.buffers())
    return ParamCount(trainable, frozen, buffers)


__all__ = ["ParamCount", "count_parameters"]
