"""Front end for layer-list spec files (YAML or JSON) written with Keras layer names and arguments.

```yaml
input: [3, 32, 32]              # C, H, W (or [features] for a flat input)
layers:
  - {type: Conv2D, filters: 16, kernel_size: 3, strides: 1, padding: valid}
  - {type: Conv2D, filters: 32, kernel_size: 3, dilation_rate: 2, padding: same, name: c2}
  - {type: MaxPooling2D, pool_size: 2, strides: 2}
  - {type: Flatten}
  - {type: Dense, units: 10}
```

Each layer takes the previous layer's output unless it names ``inputs: [name, ...]`` (the model
input is ``input``); a layer may only name layers listed before it, so a graph cannot have a
cycle. The last layer is the model's output. Defaults follow Keras: pooling strides default to
the pool size, padding to ``valid``, ``use_bias`` to true; ``padding: same`` follows TensorFlow
(``pad_total = max((ceil(in/s) - 1)*s + k_eff - in, 0)``, the extra row/column at the
bottom/right). Layouts are channels-first ``(C, H, W)`` so that tables compare directly with
PyTorch. Unnamed layers get Keras's names (``conv2d``, ``conv2d_1``, ...).

Arithmetic that Keras itself refuses but which is well defined (strides > 1 together with
dilation > 1, which PyTorch runs) is analyzed, with a warning. A layer that cannot exist stops
the analysis with one line naming the layer, its input shape and why; the rows before it are kept
in ``AnalysisError.partial``.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cnnlab.analysis import _geometry as G
from cnnlab.analysis.result import Analysis, AnalysisError, Layer, format_shape
from cnnlab._io import read_text
from cnnlab.errors import UserError

_BYTES_PER_ELEMENT = 4  # float32 activations

ACTIVATIONS = frozenset({
    "relu", "relu6", "sigmoid", "hard_sigmoid", "tanh", "softmax", "softplus", "softsign", "elu",
    "selu", "gelu", "swish", "silu", "hard_swish", "hard_silu", "leaky_relu", "mish",
    "exponential", "linear",
})

_CONV_OPTS = {"strides": 1, "padding": "valid", "dilation_rate": 1, "use_bias": True,
              "activation": None}
_POOL_OPTS = {"pool_size": 2, "strides": None, "padding": "valid"}

# type -> (required arguments, optional arguments with their Keras defaults)
LAYER_TYPES: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "Conv2D": (("filters", "kernel_size"), {**_CONV_OPTS, "groups": 1}),
    "DepthwiseConv2D": (("kernel_size",), {**_CONV_OPTS, "depth_multiplier": 1}),
    "SeparableConv2D": (("filters", "kernel_size"), {**_CONV_OPTS, "depth_multiplier": 1}),
    "LocallyConnected2D": (("filters", "kernel_size"),
                           {"strides": 1, "padding": "valid", "use_bias": True, "activation": None}),
    "MaxPooling2D": ((), dict(_POOL_OPTS)),
    "AveragePooling2D": ((), dict(_POOL_OPTS)),
    "GlobalAveragePooling2D": ((), {"keepdims": False}),
    "GlobalMaxPooling2D": ((), {"keepdims": False}),
    "BatchNormalization": ((), {"center": True, "scale": True, "epsilon": 1e-3, "momentum": 0.99}),
    "Activation": (("activation",), {}),
    "ReLU": ((), {"max_value": None, "negative_slope": 0.0, "threshold": 0.0}),
    "Dropout": (("rate",), {}),
    "Flatten": ((), {}),
    "Dense": (("units",), {"use_bias": True, "activation": None}),
    "Concatenate": ((), {}),
    "Add": ((), {}),
}
_COMMON_KEYS = ("type", "name", "inputs")


class _Problem(Exception):
    """Why a layer is impossible; the driver adds the layer's name, type and input shape."""


class _Stop(Exception):
    """A complete one-line message that stops the analysis (the driver keeps the partial rows)."""


@dataclass
class _Tensor:
    shape: tuple[int, ...]  # without the batch: (C, H, W) or (features,)
    geo: G.Geo | None


# ------------------------------------------------------------------------------------ loading


def load_spec(path: str | Path) -> dict[str, Any]:
    """Read a spec file (``.yaml``/``.yml`` or ``.json``) into a dict.

    Raises:
        UserError: the file is missing or is not valid YAML/JSON.
    """
    import yaml

    p = Path(path)
    if not p.exists():
        raise UserError(f"spec file {str(p)!r} does not exist")
    text = read_text(p, "spec file")
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{p}: not valid JSON: {exc}") from exc
    except yaml.YAMLError as exc:
        raise UserError(f"{p}: not valid YAML: {' '.join(str(exc).split())}") from exc
    except RecursionError:
        raise UserError(f"{p}: nested too deeply to be a spec") from None
    if not isinstance(data, Mapping):
        raise UserError(f"{p}: expected a mapping with 'input' and 'layers', got {type(data).__name__}")
    return dict(data)


# ------------------------------------------------------------------------------------ analysis


def analyze_spec(spec: Mapping[str, Any], *, source: str = "spec", batch: int = 1,
                 input_shape: tuple[int, ...] | None = None) -> Analysis:
    """Analyze a layer-list spec (the dict a spec file holds).

    Args:
        spec: ``{"input": [C, H, W] | [features], "layers": [{...}, ...]}``.
        source: a label for the result (the file name).
        batch: operation counts and memory are for this many samples.
        input_shape: overrides ``spec["input"]``.

    Raises:
        AnalysisError: an impossible or malformed layer; ``.partial`` holds the rows before it.
        UserError: the spec as a whole is malformed (no ``input`` or ``layers``).
    """
    unknown = set(spec) - {"input", "layers"}
    if unknown:
        raise UserError(f"{source}: unknown top-level key(s) {sorted(unknown)} (expected 'input' and 'layers')")
    shape = _input_shape(list(input_shape) if input_shape is not None else spec.get("input"), source)
    layers = spec.get("layers")
    if not isinstance(layers, list) or not layers:
        raise UserError(f"{source}: 'layers' must be a non-empty list of layers, got {layers!r}")

    result = Analysis(source=source, input_shape=shape, batch=batch)
    tensors: dict[str, _Tensor] = {"input": _Tensor(shape, G.input_geo((batch, *shape)))}
    used: set[str] = set()
    counters: dict[str, int] = {}
    previous = "input"
    for index, raw in enumerate(layers):
        try:
            name, kind, args, input_names = _parse_layer(raw, index, counters, tensors, previous)
            xs = [tensors[n] for n in input_names]
            try:
                row, out = _build(kind, name, args, xs, batch)
            except _Problem as exc:
                raise _Stop(f"layer {name!r} ({kind}) on input {_fmt_inputs(xs)}: {exc}") from None
        except _Stop as exc:
            result.error = str(exc)
            raise AnalysisError(str(exc), partial=result) from None
        row.inputs = list(input_names)
        row.memory_bytes = batch * math.prod(out.shape) * _BYTES_PER_ELEMENT
        if out.geo is not None and not out.geo.known and all(x.geo is None or x.geo.known for x in xs):
            row.notes.append("receptive field not followed through this layer (it joins positions "
                             "flattened into features); later layers show none")
        result.warnings.extend(f"layer {name!r}: {w}" for w in row.notes)
        result.layers.append(row)
        tensors[name] = out
        used.update(input_names)
        previous = name
    result.output = previous
    dangling = [r.name for r in result.layers[:-1] if r.name not in used]
    if dangling:
        result.warnings.append(
            f"output of {', '.join(map(repr, dangling))} is used by no later layer "
            f"(the model output is the last layer, {previous!r})")
    return result


def _input_shape(value: Any, source: str) -> tuple[int, ...]:
    if (not isinstance(value, list) or len(value) not in (1, 3)
            or not all(_is_int(v) and v >= 1 for v in value)):
        raise UserError(f"{source}: 'input' must be [C, H, W] or [features] with positive integers, "
                        f"got {value!r}")
    return tuple(value)


def _parse_layer(raw: Any, index: int, counters: dict[str, int], tensors: dict[str, _Tensor],
                 previous: str) -> tuple[str, str, dict[str, Any], list[str]]:
    """Check one layer entry's type, name, inputs and arguments (Keras defaults filled in)."""
    if not isinstance(raw, Mapping):
        raise _Stop(f"layer #{index + 1}: expected a mapping like {{type: Conv2D, ...}}, got {raw!r}")
    kind = raw.get("type")
    where = f"layer #{index + 1}" + (f" {raw['name']!r}" if "name" in raw else "")
    if kind not in LAYER_TYPES:
        close = difflib.get_close_matches(str(kind), LAYER_TYPES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise _Stop(f"{where}: unknown layer type {kind!r} (expected one of "
                            f"{', '.join(LAYER_TYPES)}){hint}")
    if "name" in raw:
        name = raw["name"]
        if not isinstance(name, str) or not name:
            raise _Stop(f"{where} ({kind}): 'name' must be a non-empty string, got {name!r}")
    else:
        base = _keras_name(kind)
        n = counters.get(base, 0)
        counters[base] = n + 1
        name = base if n == 0 else f"{base}_{n}"
    if name in tensors:
        raise _Stop(f"{where} ({kind}): the name {name!r} is already used")
    inputs = raw.get("inputs", [previous])
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise _Stop(f"layer {name!r} ({kind}): 'inputs' must be a list of layer names, got {inputs!r}")
    for i in inputs:
        if i not in tensors:
            raise _Stop(
                f"layer {name!r} ({kind}): input {i!r} is not defined before this layer (inputs are "
                "'input' or layers listed earlier, so cycles cannot be written)")
    required, optional = LAYER_TYPES[kind]
    given = {k: v for k, v in raw.items() if k not in _COMMON_KEYS}
    shapes = _fmt_inputs([tensors[i] for i in inputs])
    for k in given:
        if k not in required and k not in optional:
            allowed = ", ".join(sorted((*required, *optional))) or "none"
            raise _Stop(f"layer {name!r} ({kind}) on input {shapes}: unknown argument {k!r} "
                                f"(expected: {allowed})")
    for k in required:
        if k not in given:
            raise _Stop(f"layer {name!r} ({kind}) on input {shapes}: missing required argument {k!r}")
    return name, kind, {**optional, **given}, inputs


# ------------------------------------------------------------------------------------ layer rules


def _build(kind: str, name: str, a: dict[str, Any], xs: list[_Tensor], n: int) -> tuple[Layer, _Tensor]:
    if kind not in ("Concatenate", "Add") and len(xs) != 1:
        raise _Problem(f"takes exactly one input, got {len(xs)}")
    row = Layer(name=name, type=kind, inputs=[], output_shape=())
    out = _RULES[kind](row, a, xs, n)
    row.output_shape = out.shape
    row.set_geometry(out.geo)
    return row, out


def _conv_family(row: Layer, a: dict[str, Any], xs: list[_Tensor], n: int) -> _Tensor:
    """Conv2D, DepthwiseConv2D, SeparableConv2D and LocallyConnected2D."""
    (x,) = xs
    c, h, w = _spatial(x, row.type)
    kind = row.type
    k = _pair(a, "kernel_size")
    s = _pair(a, "strides")
    d = _pair(a, "dilation_rate") if "dilation_rate" in a else (1, 1)
    if kind == "LocallyConnected2D" and a["padding"] != "valid":
        raise _Problem(f"padding {a['padding']!r} is not supported: LocallyConnected2D has only "
                       "padding 'valid' (as in Keras)")
    (ho, wo), pl = _window(h, w, k, s, d, a["padding"], explicit_ok=True)
    use_bias = _bool(a, "use_bias")
    if max(s) > 1 and max(d) > 1:
        row.notes.append("Keras/TensorFlow reject strides > 1 together with dilation_rate > 1 "
                         "(PyTorch runs it); the numbers are the arithmetic of that convolution")
    kk = k[0] * k[1]
    if kind == "Conv2D":
        f, g = _positive(a, "filters"), _positive(a, "groups")
        if c % g or f % g:
            raise _Problem(f"groups={g} must divide both the input channels ({c}) and filters ({f})")
        row.trainable_params = f * (c // g) * kk + (f if use_bias else 0)
        row.ops.macs = n * ho * wo * f * (c // g) * kk
        bias_elems = ho * wo * f
    elif kind == "DepthwiseConv2D":
        f = c * _positive(a, "depth_multiplier")
        row.trainable_params = f * kk + (f if use_bias else 0)
        row.ops.macs = n * ho * wo * f * kk
        bias_elems = ho * wo * f
    elif kind == "SeparableConv2D":
        f, dm = _positive(a, "filters"), _positive(a, "depth_multiplier")
        # depthwise (c*dm kernels of k_h x k_w) then pointwise 1x1 (c*dm -> f); one bias of f
        row.trainable_params = c * dm * kk + c * dm * f + (f if use_bias else 0)
        row.ops.macs = n * ho * wo * (c * dm * kk + c * dm * f)
        bias_elems = ho * wo * f
    else:  # LocallyConnected2D: one unshared kernel and one bias per output location and filter
        f = _positive(a, "filters")
        row.trainable_params = ho * wo * f * (kk * c + (1 if use_bias else 0))
        row.ops.macs = n * ho * wo * f * kk * c
        bias_elems = ho * wo * f
    row.ops.bias = n * bias_elems if use_bias else 0
    shape = (f, ho, wo)
    _activation(row, a.get("activation"), n * math.prod(shape))
    geo = G.sliding(x.geo, (n, *shape), k, s, pl, d) if x.geo else None
    return _Tensor(shape, geo)


def _pooling(row: Layer, a: dict[str, Any], xs: list[_Tensor], n: int) -> _Tensor:
    (x,) = xs
    c, h, w = _spatial(x, row.type)
    k = _pair(a, "pool_size")
    s = k if a["strides"] is None else _pair(a, "strides")
    (ho, wo), pl = _window(h, w, k, s, (1, 1), a["padding"], explicit_ok=False)
    row.ops.pool = n * c * G.window_visits(h, ho, k[0], s[0], pl[0]) * G.window_visits(w, wo, k[1], s[1], pl[1])
    shape = (c, ho, wo)
    return _Tensor(shape, G.sliding(x.geo, (n, *shape), k, s, pl) if x.geo else None)


def _global_pooling(row: Layer, a: dict[str, Any], xs: list[_Tensor], n: int) -> _Tensor:
    (x,) = xs
    c, h, w = _spatial(x, row.type)
    keep = _bool(a, "keepdims")
    row.ops.pool = n * c * h * w
    geo = G.reduce_dims(x.geo, (2, 3), keep, 4 if keep else 2) if x.geo else None
    return _Tensor((c, 1, 1) if keep else (c,), geo)


def _batch_norm(row: Layer, a: dict[str, Any], xs: list[_Tensor], n: int) -> _Tensor:
    (x,) = xs
    c = x.shape[0]  # channels of (C, H, W), features of (F,)
    # gamma (scale) and beta (center) are trained; the moving mean and variance are not (Keras)
    row.trainable_params = c * (int(_bool(a, "scale")) + int(_bool(a, "center")))
    row.non_trainable_params = 2 * c
    row.ops.norm = n * math.prod(x.shape)
    return x


def _activation_layer(row: Layer, a: dict[str, Any], xs: list[_Tensor], n: int) -> _Tensor:
    (x,) = xs
    _activation(row, a["activation"] if row.type == "Activation" else "relu", n * math.prod(x.shape))
    return x


def _dropout(row: Layer, a: dict[str, Any], xs: list[_Tensor], n: int) -> _Tensor:
    rate = a["rate"]
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise _Problem(f"rate must be a number in [0, 1), got {rate!r}")
    return xs[0]  # identity at inference: no arithmetic


def _flatten(row: Layer, a: dict[str, Any], xs: list[_Tensor], n: int) -> _Tensor:
    (x,) = xs
    shape = (math.prod(x.shape),)
    return _Tensor(shape, G.reshape(x.geo, (n, *shape)) if x.geo else None)


def _dense(row: Layer, a: dict[str, Any], xs: list[_Tensor], n: int) -> _Tensor:
    (x,) = xs
    if len(x.shape) != 1:
        raise _Problem("Dense needs a flat input (features,); add Flatten or GlobalAveragePooling2D "
                       "before it")
    units, use_bias = _positive(a, "units"), _bool(a, "use_bias")
    fin = x.shape[0]
    row.trainable_params = units * fin + (units if use_bias else 0)
    row.ops.macs = n * fin * units
    row.ops.bias = n * units if use_bias else 0
    _activation(row, a.get("activation"), n * units)
    geo = x.geo
    if geo is not None and geo.known:
        # every unit reads every feature: it mixes all positions flattened into them
        geo = G.mix(geo, G.spatial_tags(geo.dims[1]))
        geo = replace(geo, dims=(geo.dims[0], G.plain(units)))
    return _Tensor((units,), geo)


def _merge_layer(row: Layer, a: dict[str, Any], xs: list[_Tensor], n: int) -> _Tensor:
    if len(xs) < 2:
        raise _Problem(f"{row.type} needs at least two inputs, got {len(xs)}")
    shapes = [x.shape for x in xs]
    if row.type == "Add":
        if len(set(shapes)) != 1:
            raise _Problem(f"Add needs inputs of equal shape, got {' and '.join(map(format_shape, shapes))}")
        shape = shapes[0]
        row.ops.elementwise = n * (len(xs) - 1) * math.prod(shape)
        geo, warnings = G.merge([x.geo for x in xs], xs[0].geo.dims if xs[0].geo else ())
    else:
        if len({len(s) for s in shapes}) != 1 or len({s[1:] for s in shapes}) != 1:
            raise _Problem("Concatenate needs inputs of equal spatial size (it joins channels), got "
                           + " and ".join(map(format_shape, shapes)))
        shape = (sum(s[0] for s in shapes), *shapes[0][1:])
        full = (n, *shape)
        geo, warnings = G.cat([(x.geo, (n, *x.shape)) for x in xs], 1, full)
    row.notes.extend(warnings)
    return _Tensor(shape, geo)

_RULES: dict[str, Callable[[Layer, dict[str, Any], list[_Tensor], int], _Tensor]] = {
    "Conv2D": _conv_family, "DepthwiseConv2D": _conv_family, "SeparableConv2D": _conv_family,
    "LocallyConnected2D": _conv_family,
    "MaxPooling2D": _pooling, "AveragePooling2D": _pooling,
    "GlobalAveragePooling2D": _global_pooling, "GlobalMaxPooling2D": _global_pooling,
    "BatchNormalization": _batch_norm, "Activation": _activation_layer, "ReLU": _activation_layer,
    "Dropout": _dropout, "Flatten": _flatten, "Dense": _dense,
    "Concatenate": _merge_layer, "Add": _merge_layer,
}


# ------------------------------------------------------------------------------------ helpers


def _window(h: int, w: int, k: tuple[int, int], s: tuple[int, int], d: tuple[int, int],
            padding: Any, *, explicit_ok: bool) -> tuple[tuple[int, int], tuple[int, int]]:
    """Output size and top/left padding of a sliding window, or a _Problem saying why not."""
    choices = "'valid', 'same', an int or [ph, pw]" if explicit_ok else "'valid' or 'same'"
    if padding == "same":
        (ho, pt, _), (wo, pleft, _) = G.same_padding(h, k[0], s[0], d[0]), G.same_padding(w, k[1], s[1], d[1])
        return (ho, wo), (pt, pleft)
    if padding == "valid":
        p = (0, 0)
    elif explicit_ok and (_is_int(padding) or (isinstance(padding, list) and len(padding) == 2
                                               and all(_is_int(v) for v in padding))):
        p = (padding, padding) if _is_int(padding) else tuple(padding)
        if min(p) < 0:
            raise _Problem(f"padding must be >= 0, got {padding!r}")
    else:
        raise _Problem(f"padding must be {choices}, got {padding!r}")
    out = []
    for axis, size, kk, st, dd, pp in (("height", h, k[0], s[0], d[0], p[0]), ("width", w, k[1], s[1], d[1], p[1])):
        k_eff = dd * (kk - 1) + 1
        padded = size + 2 * pp
        if k_eff > padded:
            what = f"kernel {kk}" + (f", dilation {dd}" if dd > 1 else "")
            pad_txt = f" padded input {axis} {padded}" if pp else f" input {axis} {size}"
            raise _Problem(f"effective kernel {k_eff} ({what}) is larger than the{pad_txt}")
        out.append((padded - k_eff) // st + 1)
    return (out[0], out[1]), (p[0], p[1])


def _activation(row: Layer, name: Any, elements: int) -> None:
    if name is None or name == "linear":
        return
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise _Problem(f"unknown activation {name!r} (expected one of {', '.join(sorted(ACTIVATIONS))})")
    row.ops.act += elements


def _spatial(x: _Tensor, kind: str) -> tuple[int, int, int]:
    if len(x.shape) != 3:
        raise _Problem(f"{kind} needs a (C, H, W) input")
    return x.shape  # type: ignore[return-value]


def _pair(a: dict[str, Any], key: str) -> tuple[int, int]:
    v = a[key]
    if _is_int(v) and v >= 1:
        return (v, v)
    if isinstance(v, list) and len(v) == 2 and all(_is_int(x) and x >= 1 for x in v):
        return (v[0], v[1])
    raise _Problem(f"{key} must be a positive integer or [h, w], got {v!r}")


def _positive(a: dict[str, Any], key: str) -> int:
    v = a[key]
    if not _is_int(v) or v < 1:
        raise _Problem(f"{key} must be a positive integer, got {v!r}")
    return v


def _bool(a: dict[str, Any], key: str) -> bool:
    v = a[key]
    if not isinstance(v, bool):
        raise _Problem(f"{key} must be true or false, got {v!r}")
    return v


def _keras_name(kind: str) -> str:
    """Keras's default layer name: ``Conv2D`` -> ``conv2d``, ``ReLU`` -> ``re_lu``."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", kind)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)




def _fmt_inputs(xs: list[_Tensor]) -> str:
    return " + ".join(format_shape(x.shape) for x in xs)
