"""Turn a TARGET (spec file, cnnlab model name, ``torchvision:NAME``, ``pkg.module:callable``)
into something the analyzer can run, with its default input shape when one is known."""

from __future__ import annotations

import difflib
import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.errors import UserError

SPEC_SUFFIXES = (".yaml", ".yml", ".json")
TORCHVISION_DEFAULT_INPUT = (3, 224, 224)


@dataclass
class Target:
    """A resolved target: exactly one of ``spec`` (a dict) or ``build`` (returns an nn.Module)."""

    label: str
    default_input: tuple[int, ...] | None
    spec: dict[str, Any] | None = None
    build: Callable[[], Any] | None = None


def resolve(target: str | Path) -> Target:
    """Resolve a TARGET string.

    Raises:
        UserError: a missing file, an unknown model name, or a callable that cannot be imported.
    """
    text = str(target)
    if text.startswith("torchvision:"):
        return _torchvision(text.split(":", 1)[1])
    if Path(text).suffix.lower() in SPEC_SUFFIXES or Path(text).is_file():
        from cnnlab.analysis.spec import load_spec

        return Target(label=Path(text).name, default_input=None, spec=load_spec(text))
    if ":" in text:
        return _callable(text)
    return _cnnlab_model(text)


def build_on_meta(fn: Callable[[], Any]) -> Any:
    """Build a model without allocating its weights (``meta`` device); builders that compute
    with tensors at construction time (torchvision's RegNet) cannot, and are built on the CPU."""
    import torch

    try:
        with torch.device("meta"):
            return fn()
    except NotImplementedError:  # "Cannot copy out of meta tensor": needs real tensors
        return fn()


def _torchvision(name: str) -> Target:
    import torchvision

    classification = set(torchvision.models.list_models(module=torchvision.models))
    known = set(torchvision.models.list_models())
    if name not in known:
        close = difflib.get_close_matches(name, sorted(known), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"unknown torchvision model {name!r}{hint} "
                        "(see torchvision.models.list_models())")
    default = None
    if name in classification:
        default = TORCHVISION_DEFAULT_INPUT
        weights = torchvision.models.get_model_weights(name)
        crop = getattr(weights.DEFAULT.transforms(), "crop_size", None) if len(weights) else None
        if crop:
            default = (3, crop[0], crop[-1])

    def build() -> Any:
        with warnings.catch_warnings():  # googlenet/inception warn about their init scheme
            warnings.simplefilter("ignore", FutureWarning)
            model = build_on_meta(lambda: torchvision.models.get_model(name, weights=None))
        # vision transformers are built for one image size, which the weights' crop size need
        # not be without those weights (vit_h_14: 518 with SWAG weights, 224 without)
        size = getattr(model, "image_size", None)
        if default is not None and isinstance(size, int):
            target.default_input = (3, size, size)
        return model

    target = Target(label=f"torchvision:{name}", default_input=default, build=build)
    return target


def _callable(text: str) -> Target:
    module_name, _, attr = text.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"cannot import module {module_name!r} for target {text!r}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"module {module_name!r} has no attribute {attr!r} (target {text!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserError(f"{text!r} is not callable; expected a function or class returning an nn.Module")

    def build() -> Any:
        import torch

        if isinstance(obj, torch.nn.Module):
            return obj
        try:
            model = obj()
        except UserError:
            raise
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - arbitrary user code
            detail = " ".join(str(exc).split())[:160]
            raise UserError(f"calling {text!r} with no arguments failed ({type(exc).__name__}"
                            f"{': ' + detail if detail else ''}); the target must build an "
                            "nn.Module without arguments") from None
        if not isinstance(model, torch.nn.Module):
            raise UserError(f"{text!r} returned {type(model).__name__}, expected an nn.Module")
        return model

    return Target(label=text, default_input=None, build=build)


def _cnnlab_model(name: str) -> Target:
    try:
        models = importlib.import_module("cnnlab.models")
    except ImportError as exc:
        raise UserError(
            f"{name!r} is not a spec file (.yaml/.yml/.json), not torchvision:NAME and not "
            f"package.module:callable, and the cnnlab model registry is not available ({exc})"
        ) from exc
    names = list(models.list_models())
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"unknown target {name!r}: not a spec file and not a cnnlab model "
                        f"(models: {', '.join(names)}){hint}")
    info = models.model_info(name)
    # the paper's setting: 1000 classes for the ImageNet-size models, 10 for the CIFAR ones
    # (as `cnnlab models` counts them), so the totals compare with the papers' tables
    classes = info.reference_classes
    return Target(label=f"{name} ({classes} classes)", default_input=tuple(info.default_input),
                  build=lambda: build_on_meta(lambda: models.create(name, num_classes=classes)))
