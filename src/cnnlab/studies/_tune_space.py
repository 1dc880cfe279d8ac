"""The search-space file of ``cnnlab tune``: YAML in, Optuna define-by-run suggestions out.

Format (``examples/tune/course_space.yaml`` is the course's space)::

    model: stacked_cnn            # a registered model (cnnlab models)
    fixed:                        # values not searched: TrainConfig fields or model options
      optimizer: adamw
      weight_decay: 0.0
    params:                       # searched, suggested in this order
      conv_layers: {type: int, low: 2, high: 5}
      filters: {type: int, low: 32, high: 256, step: 32, per_layer: conv_layers}
      kernel: {type: categorical, choices: [3, 5], per_layer: conv_layers}
      lr: {type: categorical, choices: [0.0001, 0.0005, 0.001]}
      momentum: {type: float, low: 0.8, high: 0.99, when: {optimizer: [sgd]}}

Types: ``int`` and ``float`` (``low``, ``high``, optional ``step`` or ``log: true``) and
``categorical`` (``choices``). Conditions (define-by-run: an inactive parameter is never
suggested, so it never appears in a trial):

- ``per_layer: COUNT`` -- one value per layer, suggested as ``NAME_1 .. NAME_n`` where ``n`` is
  the value of the int parameter ``COUNT``; the model receives the list ``NAME=[...]`` and
  ``COUNT`` itself is not passed on (it is the lists' length).
- ``when: {OTHER: [values]}`` -- active only when ``OTHER`` (suggested earlier) took one of them.

A parameter whose name is a :class:`~cnnlab.engine.TrainConfig` field sets that field (``lr``,
``batch_size``, ...); every other name is an option of the model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.errors import UserError

TYPES = ("int", "float", "categorical")
_KEYS = {"int": {"type", "low", "high", "step", "log", "per_layer", "when"},
         "float": {"type", "low", "high", "step", "log", "per_layer", "when"},
         "categorical": {"type", "choices", "per_layer", "when"}}
# TrainConfig fields a space may not touch: the tuner owns them
_RESERVED = frozenset({"model", "dataset", "epochs", "out", "resume", "subset", "val_fraction",
                       "model_kwargs", "data_dir", "cache_dir", "download", "quiet",
                       "tensorboard", "device"})


def _train_fields() -> set[str]:
    from cnnlab.engine import TrainConfig

    return {f.name for f in dataclasses.fields(TrainConfig)} - _RESERVED


@dataclass(frozen=True)
class Param:
    """One searched parameter (see the module docstring for the meaning of the fields)."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    per_layer: str | None = None
    when: tuple[str, tuple[Any, ...]] | None = None


@dataclass
class Space:
    """A parsed, validated search space.

    Attributes:
        model: the registered model every trial builds.
        fixed: values that are not searched (training fields and model options).
        params: the searched parameters, in suggestion order.
        source: the file it came from (for messages).
    """

    model: str
    fixed: dict[str, Any] = field(default_factory=dict)
    params: list[Param] = field(default_factory=list)
    source: str = "<space>"

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Ask ``trial`` (an ``optuna.Trial``) for the active parameters only.

        Returns:
            The values by space name: per-layer parameters as lists, counts as ints.
        """
        values: dict[str, Any] = {}
        for p in self.params:
            if p.when is not None and values.get(p.when[0], _MISSING) not in p.when[1]:
                continue
            if p.per_layer is not None:
                n = values.get(p.per_layer)
                if n is None:  # the count itself is inactive
                    continue
                values[p.name] = [_suggest_one(trial, p, f"{p.name}_{i}") for i in range(1, n + 1)]
            else:
                values[p.name] = _suggest_one(trial, p, p.name)
        return values

    def counts(self) -> set[str]:
        """Names of the parameters that are layer counts (``per_layer`` targets)."""
        return {p.per_layer for p in self.params if p.per_layer is not None}

    def split(self, values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(TrainConfig overrides, model options)`` of fixed values plus suggested ``values``."""
        train_fields = _train_fields()
        counts = self.counts()
        train: dict[str, Any] = {}
        model: dict[str, Any] = {}
        for name, value in {**self.fixed, **values}.items():
            if name in counts:
                continue
            (train if name in train_fields else model)[name] = value
        return train, model

    def fixed_from_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Rebuild :meth:`suggest`'s values from an Optuna trial's flat ``params``."""
        return self.suggest(_Replay(params))


_MISSING = object()


class _Replay:
    """Stands in for an ``optuna.Trial``: answers with recorded values."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self._params = params

    def _get(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._params[name]

    suggest_int = suggest_float = suggest_categorical = _get


def _suggest_one(trial: Any, p: Param, name: str) -> Any:
    if p.type == "categorical":
        return trial.suggest_categorical(name, list(p.choices))
    if p.type == "int":
        return trial.suggest_int(name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    return trial.suggest_float(name, float(p.low), float(p.high), step=p.step, log=p.log)


def load_space(path: str | Path) -> Space:
    """Read and validate a space file; any problem is one :class:`UserError` naming it."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"space file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"space file {path} is not valid YAML: "
                        f"{str(exc).splitlines()[0]}") from None
    return parse_space(data, source=str(path))


def parse_space(data: Any, source: str = "<space>") -> Space:
    """Validate a space given as a dict (the parsed YAML)."""
    def bad(msg: str) -> UserError:
        return UserError(f"space {source}: {msg}")

    if not isinstance(data, Mapping):
        raise bad("expected a mapping with keys model, fixed, params")
    unknown = sorted(set(data) - {"model", "fixed", "params", "description"})
    if unknown:
        raise bad(f"unknown top-level key(s) {unknown}; known: description, fixed, model, params")
    from cnnlab import models

    model = data.get("model")
    if not isinstance(model, str):
        raise bad("'model' must name a registered model (see `cnnlab models`)")
    try:
        info = models.model_info(model)
    except UserError as exc:
        raise bad(str(exc)) from None
    allowed = _train_fields() | set(info.options)
    fixed = dict(data.get("fixed") or {})
    params_in = data.get("params") or {}
    if not isinstance(params_in, Mapping) or not params_in:
        raise bad("'params' must be a non-empty mapping of parameter name -> definition")

    params: list[Param] = []
    seen: dict[str, Param] = {}
    for name, spec in params_in.items():
        if not isinstance(spec, Mapping):
            raise bad(f"parameter {name!r} must be a mapping with a 'type'")
        p = _parse_param(str(name), spec, seen, bad)
        if p.name in fixed:
            raise bad(f"parameter {p.name!r} is both fixed and searched")
        params.append(p)
        seen[p.name] = p
    counts = {p.per_layer for p in params if p.per_layer}
    for name in list(fixed) + [p.name for p in params if p.name not in counts]:
        if name in _RESERVED:
            raise bad(f"{name!r} is set by `cnnlab tune` itself (its options), not by the space")
        if name not in allowed:
            raise bad(f"{name!r} is neither a training setting nor an option of {model} "
                      f"(options: {', '.join(info.options) or 'none'})")
    return Space(model=model, fixed=fixed, params=params, source=source)


def _parse_param(name: str, spec: Mapping[str, Any], seen: Mapping[str, Param], bad) -> Param:
    kind = spec.get("type")
    if kind not in TYPES:
        raise bad(f"parameter {name!r} has unknown type {kind!r}; choose one of {list(TYPES)}")
    extra = sorted(set(spec) - _KEYS[kind])
    if extra:
        raise bad(f"parameter {name!r} ({kind}) has unknown key(s) {extra}; allowed: "
                  f"{sorted(_KEYS[kind])}")
    per_layer = spec.get("per_layer")
    if per_layer is not None:
        count = seen.get(per_layer)
        if count is None:
            raise bad(f"parameter {name!r} is per_layer of {per_layer!r}, which is not a "
                      "parameter defined before it")
        if count.type != "int" or count.per_layer is not None or count.low < 0:
            raise bad(f"parameter {name!r}: per_layer {per_layer!r} must be a plain int "
                      "parameter with low >= 0 (a layer count)")
    when = spec.get("when")
    if when is not None:
        if not isinstance(when, Mapping) or len(when) != 1:
            raise bad(f"parameter {name!r}: 'when' must be one mapping OTHER: [values]")
        (other, values), = when.items()
        if other not in seen:
            raise bad(f"parameter {name!r} is conditional on {other!r}, which is not a "
                      "parameter defined before it")
        values = tuple(values) if isinstance(values, (list, tuple)) else (values,)
        when = (str(other), values)
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, (list, tuple)) or not choices:
            raise bad(f"parameter {name!r} needs a non-empty list of choices")
        if len(set(map(repr, choices))) != len(choices):
            raise bad(f"parameter {name!r} lists a choice twice: {list(choices)}")
        return Param(name, kind, choices=tuple(choices), per_layer=per_layer, when=when)
    low, high, step, log = spec.get("low"), spec.get("high"), spec.get("step"), spec.get("log", False)
    num = (int,) if kind == "int" else (int, float)
    for what, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, num) or not math.isfinite(v):
            raise bad(f"parameter {name!r} needs a finite {kind} {what}, got {v!r}")
    if low > high:
        raise bad(f"parameter {name!r} has low {low} > high {high}")
    if step is not None and (isinstance(step, bool) or not isinstance(step, num) or step <= 0):
        raise bad(f"parameter {name!r}: step must be a positive {kind}, got {step!r}")
    if not isinstance(log, bool):
        raise bad(f"parameter {name!r}: log must be true or false, got {log!r}")
    if log and (low <= 0 or step is not None):
        raise bad(f"parameter {name!r}: log scale needs low > 0 and no step")
    return Param(name, kind, low=low, high=high, step=step, log=log, per_layer=per_layer,
                 when=when)
