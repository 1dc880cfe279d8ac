"""Architecture analyzer: per-layer output shapes, parameters, operation counts (MACs, FLOPs and
the rest, each labelled), receptive field, jump and start per axis, activation memory.

Two front ends build the same :class:`Analysis`:

- :mod:`cnnlab.analysis.spec` reads Keras-style layer lists (YAML/JSON), including
  ``LocallyConnected2D`` and Inception-style branches;
- :mod:`cnnlab.analysis.torch_graph` captures the graph a PyTorch ``nn.Module`` really executes
  (functional ops, ``x + y``, ``torch.cat``, ``@``; shared modules and tied weights) on fake
  tensors, without allocating activations.

Example::

    >>> from cnnlab.analysis import analyze
    >>> a = analyze("examples/exercises/two_conv_layers.yaml")
    >>> a.totals["total_params"], a.layers[-1].receptive_field
    (5088, (5, 5))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cnnlab.analysis.result import OP_KINDS, Analysis, AnalysisError, Layer, OpCounts
from cnnlab.errors import UserError

__all__ = ["analyze", "Analysis", "AnalysisError", "Layer", "OpCounts", "OP_KINDS"]


def analyze(
    target: str | Path | Mapping[str, Any] | Any,
    input_shape: Sequence[int] | None = None,
    *,
    batch: int = 1,
) -> Analysis:
    """Analyze a network.

    Args:
        target: an ``nn.Module``; a spec dict; or a string: a spec file (``.yaml``/``.yml``/
            ``.json``), a cnnlab model name, ``torchvision:NAME`` or ``package.module:callable``.
        input_shape: per-sample input ``(C, H, W)`` (or ``(features,)``). Spec files carry their
            own; cnnlab models and torchvision classifiers have defaults; modules need it.
        batch: batch size for operation counts and activation memory.

    Returns:
        The :class:`Analysis` (``.layers``, ``.totals``, ``.to_json()``, ``.to_markdown()``,
        ``.to_csv()``).

    Raises:
        AnalysisError: an impossible layer; ``.partial`` holds the rows before it.
        UserError: an unknown target, a missing input shape, bad arguments.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise UserError(f"batch must be a positive integer, got {batch!r}")
    shape = None if input_shape is None else _check_shape(input_shape)
    if isinstance(target, Mapping):
        from cnnlab.analysis.spec import analyze_spec

        return analyze_spec(target, batch=batch, input_shape=shape)
    if isinstance(target, (str, Path)):
        from cnnlab.analysis.targets import resolve

        resolved = resolve(target)
        if resolved.spec is not None:
            from cnnlab.analysis.spec import analyze_spec

            return analyze_spec(resolved.spec, source=resolved.label, batch=batch, input_shape=shape)
        if shape is None and resolved.default_input is None:
            raise UserError(f"{resolved.label}: no default input shape is known; give one, "
                            "e.g. --input 3,224,224")
        model = resolved.build()  # may refine the default input (vision transformers)
        shape = shape or resolved.default_input
        label = resolved.label
    else:
        model, label = target, type(target).__name__
        if shape is None:
            raise UserError(f"{label}: an input shape (C, H, W) is needed to analyze a module")
    from cnnlab.analysis.torch_graph import analyze_module

    return analyze_module(model, shape, batch=batch, source=label)


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    values = tuple(shape)
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        raise UserError(f"input shape must be positive integers like (3, 32, 32), got {shape!r}")
    return values
