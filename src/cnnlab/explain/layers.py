"""Which layer to explain: a layer by dotted name, and the default (the last conv layer's block)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cnnlab.errors import UserError
from cnnlab.explain._common import eval_mode, prepare_images


def resolve_layer(model: nn.Module, layer: nn.Module | str) -> tuple[str, nn.Module]:
    """The ``(dotted name, module)`` of a layer of ``model`` given as a module or a dotted name.

    Raises:
        UserError: the name is not a submodule of ``model`` (the message lists the closest names),
            or the module given is not part of ``model``.
    """
    names = {name: module for name, module in model.named_modules() if name}
    if isinstance(layer, str):
        if layer in names:
            return layer, names[layer]
        close = difflib.get_close_matches(layer, list(names), n=5, cutoff=0.5)
        hint = f"; closest names: {', '.join(close)}" if close else ""
        raise UserError(
            f"layer {layer!r} is not a submodule of {type(model).__name__}{hint} "
            f"(all {len(names)} names: model.named_modules())"
        )
    if isinstance(layer, nn.Module):
        for name, module in names.items():
            if module is layer:
                return name, module
        if layer is model:
            raise UserError(
                "the target layer must be a submodule of the model, not the model itself"
            )
        raise UserError(f"the target layer {type(layer).__name__} is not a submodule of the model")
    raise UserError(
        f"target layer must be an nn.Module or a dotted name, got {type(layer).__name__}"
    )


# Pooling ends the feature map even when it keeps the size (a 1x1 map into global pooling).
_POOLING = (
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.LPPool2d,
)


@dataclass
class _Call:
    name: str
    module: nn.Module
    output: object


def _trace_calls(model: nn.Module, x: Tensor) -> tuple[list[_Call], dict[str, int]]:
    """Every submodule call of one forward pass, in order of completion, and call counts by name."""
    calls: list[_Call] = []
    counts: dict[str, int] = {}
    handles = []

    def hook(name: str):
        def record(module: nn.Module, inputs: object, output: object) -> None:
            calls.append(_Call(name, module, output))
            counts[name] = counts.get(name, 0) + 1

        return record

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(hook(name)))
        with eval_mode(model), torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return calls, counts


def default_target_layer(model: nn.Module, example: Tensor) -> str:
    """The dotted name of the default Grad-CAM layer: the block that ends with the last conv layer.

    One forward pass of ``example`` (eval mode, no gradients) records every submodule call. From
    the last ``Conv2d`` that runs, the output is followed while it keeps that conv's spatial size
    (BatchNorm, activation, residual addition, end of the block); the result is the final feature
    map before pooling or flattening (a pooling layer ends it even if it keeps the size). The layer
    returned is the innermost container that outputs exactly that tensor and runs once
    (``features.18`` in MobileNetV2, ``layer4.1`` in ResNet-18), or, when no container does (a VGG
    ``features`` ending in max-pooling), the last plain layer that does (its ReLU). So the default
    map is the rectified feature map of the last conv block, as in the Grad-CAM paper.

    Args:
        model: the classifier.
        example: a batch ``(N, C, H, W)`` of the model's input size (one image is enough).

    Raises:
        UserError: the model runs no ``Conv2d``.
    """
    calls, counts = _trace_calls(model, prepare_images(model, example)[:1])
    conv_positions = [i for i, c in enumerate(calls) if isinstance(c.module, nn.Conv2d)]
    if not conv_positions:
        raise UserError(
            f"{type(model).__name__} runs no nn.Conv2d layer: name the target layer explicitly"
        )
    start = conv_positions[-1]
    size = calls[start].output.shape[-2:]
    end = start
    for i in range(start + 1, len(calls)):
        out = calls[i].output
        if isinstance(calls[i].module, _POOLING) or not (
            isinstance(out, Tensor) and out.ndim == 4 and out.shape[-2:] == size
        ):
            break
        end = i
    final = calls[end].output
    producers = [c for c in calls[start : end + 1] if c.output is final and counts[c.name] == 1]
    containers = [c for c in producers if any(True for _ in c.module.children())]
    if containers:
        return containers[0].name  # containers complete after their children: first = innermost
    if producers:
        return producers[-1].name  # e.g. the ReLU after BatchNorm: the last to touch the tensor
    return calls[start].name
