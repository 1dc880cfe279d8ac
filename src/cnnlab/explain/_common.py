"""Plumbing shared by every explanation method: eval mode, input checks, targets, the base class."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor, nn

from cnnlab.errors import UserError

# What callers may pass as ``targets``: None (each image's predicted class), one class for every
# image, or one class per image.
Targets = None | int | Sequence[int] | Tensor | np.ndarray


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run the body with every submodule in eval mode, then restore each one's own flag.

    Explanations describe the model as it predicts: BatchNorm uses its running statistics (so an
    image's map does not depend on the other images in the batch, and running statistics are never
    updated by an explanation) and dropout is off. Flags are restored module by module, so a model
    in a mixed state (say BatchNorm frozen in eval inside a model in train mode) comes back as it
    was.
    """
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def check_images(x: Tensor) -> None:
    """Raise UserError unless ``x`` is a floating-point batch of images ``(N, C, H, W)``."""
    if not isinstance(x, Tensor):
        raise UserError(f"images must be a torch.Tensor (N, C, H, W), got {type(x).__name__}")
    if x.ndim != 4 or x.shape[0] == 0:
        raise UserError(f"images must have shape (N, C, H, W) with N >= 1, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise UserError(f"images must be a floating-point tensor, got dtype {x.dtype}")


def prepare_images(model: nn.Module, x: Tensor) -> Tensor:
    """``x`` checked to be images ``(N, C, H, W)`` of the model's dtype, on the model's device."""
    check_images(x)
    params = [p for p in (*model.parameters(), *model.buffers()) if p.is_floating_point()]
    if params and x.dtype != params[0].dtype:
        raise UserError(
            f"images are {x.dtype} but the model's parameters are {params[0].dtype}: convert "
            f"the images (x.to({params[0].dtype}))"
        )
    return x.to(model_device(model))


def check_logits(logits: object) -> Tensor:
    """The model's output, checked to be class scores ``(N, num_classes)``."""
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise UserError(
            f"the model must return class scores (N, num_classes) for explanations, got {shape}"
        )
    return logits


def resolve_targets(targets: Targets, logits: Tensor) -> Tensor:
    """One class index per image, as a long tensor ``(N,)`` on the logits' device.

    Args:
        targets: None (each image's predicted class, the argmax of its logits), an int (that class
            for every image), or a sequence / tensor / array of N class indexes.
        logits: the model's output ``(N, num_classes)``.

    Raises:
        UserError: wrong count, a class out of range, or non-integer classes.
    """
    n, num_classes = logits.shape
    if targets is None:
        return logits.detach().argmax(dim=1)
    if isinstance(targets, (int, np.integer)) and not isinstance(targets, bool):
        t = torch.full((n,), int(targets), dtype=torch.long)
    else:
        try:
            t = torch.as_tensor(
                np.asarray(targets.cpu() if isinstance(targets, Tensor) else targets)
            )
        except (TypeError, ValueError) as exc:
            raise UserError(f"targets must be class indexes, got {targets!r}") from exc
        if t.ndim != 1:
            raise UserError(
                f"targets must be one class index per image (N,), got shape {tuple(t.shape)}"
            )
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise UserError(f"targets must be integer class indexes, got dtype {t.dtype}")
        if t.numel() != n:
            raise UserError(f"got {t.numel()} targets for {n} images: give one class per image")
        t = t.long()
    bad = (t < 0) | (t >= num_classes)
    if bool(bad.any()):
        raise UserError(
            f"target class {int(t[bad][0])} is out of range: the model has {num_classes} classes "
            f"(0..{num_classes - 1})"
        )
    return t.to(logits.device)


def selected_score(logits: Tensor, targets: Tensor) -> Tensor:
    """Sum over the batch of each image's target logit: one backward pass serves every image.

    In eval mode the images of a batch do not interact, so the gradient of this sum with respect to
    image n's activations is the gradient of image n's own target logit.
    """
    return logits.gather(1, targets[:, None]).sum()


class Explainer:
    """What every method shares: the model, the last call's ``logits``/``targets``, and a context
    manager whose exit drops them (it never swallows an exception). No method leaves a hook
    registered between calls, so there is nothing else to release."""

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise UserError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.logits: Tensor | None = None  # (N, num_classes) of the last call, detached
        self.targets: Tensor | None = None  # (N,) classes explained by the last call

    def close(self) -> None:
        """Drop the tensors of the last call."""
        self.logits = self.targets = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
