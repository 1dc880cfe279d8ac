"""The model registry: builders registered by name with a decorator, built with :func:`create`.

In the style of timm's ``_registry``/``_builder``: each architecture module decorates its
keyword-only builder functions with :func:`register_model`, which records a frozen
:class:`ModelInfo` next to the builder. :func:`create` validates the common arguments (and any
extra keyword against the builder's signature) before building, so that a typo fails with one
clear :class:`~cnnlab.errors.UserError` instead of a ``TypeError`` deep inside a constructor.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from cnnlab.errors import UserError

Builder = Callable[..., nn.Module]

# The arguments every builder takes (width only when ModelInfo.supports_width).
_COMMON = ("num_classes", "in_chans", "width")


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model without building it.

    Attributes:
        name: the registered name, e.g. ``"mobilenet_v2"``.
        family: the architecture family, e.g. ``"mobilenet_v2"``, ``"resnet_cifar"``.
        default_input: the input of one example at the paper's setting, without the batch
            dimension: ``(C, H, W)`` for images, e.g. ``(3, 224, 224)`` or ``(3, 32, 32)``
            (a sequence model would give its own shape, e.g. ``(L, F)``).
        min_input: the smallest accepted size of the dimensions after the channel one, e.g.
            ``(32, 32)`` for ``(H, W)``: the network's total downsampling factor, so the last
            feature map keeps at least one pixel computed from real input rather than padding.
        supports_width: whether the builder takes a width multiplier (alpha).
        description: one line naming the paper and table the architecture follows.
        reference_classes: the number of classes of the data set the paper defines the network
            for (1000 for ImageNet, 10 for CIFAR-10); ``cnnlab models`` counts parameters with it.
        options: extra keyword arguments the builder accepts besides the common ones.
        task: what the model maps to what: ``"image_classification"`` is
            ``(N, C, H, W) -> (N, num_classes)`` logits (every model of this issue); later
            families (segmentation, sequence models) register their own task.
    """

    name: str
    family: str
    default_input: tuple[int, ...]
    min_input: tuple[int, ...]
    supports_width: bool
    description: str
    reference_classes: int = 10
    options: tuple[str, ...] = ()
    task: str = "image_classification"


_builders: dict[str, Builder] = {}
_infos: dict[str, ModelInfo] = {}


def register_model(
    *,
    family: str,
    default_input: tuple[int, ...],
    min_input: tuple[int, ...],
    description: str,
    reference_classes: int = 10,
    task: str = "image_classification",
    options: tuple[str, ...] = (),
    name: str | None = None,
) -> Callable[[Builder], Builder]:
    """Decorator registering a keyword-only builder ``fn(*, num_classes, in_chans[, width], ...)``.

    The model's name is ``name`` or the function's name; ``supports_width`` is read from the
    builder's signature. The model-specific options are the builder's other keyword-only
    parameters plus ``options``, the names a builder forwards through ``**kwargs`` to its model
    class (so that their defaults live in one place, the class).

    Example::

        @register_model(family="mobilenet_v2", default_input=(3, 224, 224), min_input=(32, 32),
                        description="MobileNetV2, Sandler et al. 2018, Table 2")
        def mobilenet_v2(*, num_classes: int, in_chans: int, width: float = 1.0) -> nn.Module:
            ...
    """

    def decorator(fn: Builder) -> Builder:
        model_name = name or fn.__name__
        if model_name in _builders:
            raise ValueError(f"model {model_name!r} is already registered")
        params = inspect.signature(fn).parameters
        positional = [p for p in params.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if positional:
            raise TypeError(f"builder {model_name!r} must take keyword-only arguments")
        forwards = any(p.kind == p.VAR_KEYWORD for p in params.values())
        if bool(options) != forwards:
            raise TypeError(
                f"builder {model_name!r}: declare options= exactly when it takes **kwargs"
            )
        missing = [a for a in ("num_classes", "in_chans") if a not in params]
        if missing:
            raise TypeError(f"builder {model_name!r} must accept {', '.join(missing)}")
        _builders[model_name] = fn
        _infos[model_name] = ModelInfo(
            name=model_name,
            family=family,
            default_input=tuple(default_input),
            min_input=tuple(min_input),
            supports_width="width" in params,
            description=description,
            reference_classes=reference_classes,
            options=tuple(p for p, v in params.items()
                          if p not in _COMMON and v.kind == v.KEYWORD_ONLY) + tuple(options),
            task=task,
        )
        return fn

    return decorator


def list_models(pattern: str | None = None) -> list[str]:
    """The registered model names, sorted; optionally only those matching a shell pattern.

    Args:
        pattern: e.g. ``"resnet*"`` or ``"*cifar"`` (``fnmatch`` syntax); ``None`` for all.
    """
    names = sorted(_builders)
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return names


def _lookup(name: str) -> str:
    if name in _builders:
        return name
    close = difflib.get_close_matches(str(name), list(_builders), n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UserError(
        f"unknown model {name!r}{hint} (known: {len(_builders)} models, see `cnnlab models`)"
    )


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a registered model.

    Raises:
        UserError: for an unknown name, listing close matches.
    """
    return _infos[_lookup(name)]


def _check_positive_int(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{what} must be a positive integer, got {value!r}")


def create(name: str, num_classes: int = 10, in_chans: int = 3, width: float = 1.0,
           **kwargs: object) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: a name from :func:`list_models`.
        num_classes: size of the classifier output ``(N, num_classes)``.
        in_chans: input channels ``C`` of the ``(N, C, H, W)`` input (1 for Fashion-MNIST).
        width: the width multiplier alpha (> 0); only for models with ``supports_width``.
        **kwargs: model-specific options, listed in ``model_info(name).options``
            (e.g. ``norm_layer``, ``act_layer``, ``dropout``, ``depth``, ``shortcut``).

    Returns:
        The model, in training mode, on the CPU (or on the device of a surrounding
        ``with torch.device(...)`` block, e.g. ``"meta"`` for shape-only analysis).

    Raises:
        UserError: unknown name (with close matches), unknown keyword, non-positive width or
            class/channel counts, or a width for a model without a width multiplier.
    """
    key = _lookup(name)
    info = _infos[key]
    _check_positive_int("num_classes", num_classes)
    _check_positive_int("in_chans", in_chans)
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width) \
            or width <= 0:
        raise UserError(f"width must be a finite number > 0, got {width!r}")
    unknown = sorted(set(kwargs) - set(info.options))
    if unknown:
        accepted = ", ".join(info.options) if info.options else "none"
        raise UserError(
            f"{key} got unknown keyword argument(s) {', '.join(unknown)}; "
            f"accepted options: {accepted}"
        )
    if info.supports_width:
        kwargs["width"] = float(width)
    elif width != 1.0:
        raise UserError(f"{key} has no width multiplier; got width={width!r} (only 1.0 allowed)")
    return _builders[key](num_classes=num_classes, in_chans=in_chans, **kwargs)
