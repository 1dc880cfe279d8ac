"""The analyzer's result: one :class:`Layer` row per layer call, totals, warnings, not-counted ops.

Both front ends (layer-list spec files and captured PyTorch graphs) produce this same structure,
so tables, JSON, CSV and Markdown are written in one place.

Units (documented once, used everywhere):

- ``macs``: multiply-accumulates of convolutions and matrix products (conv, linear, locally
  connected, ``@``/``bmm``): the papers' "Mult-Adds". ``flops = 2 * macs``.
- ``bias``: one addition per output element that gets a bias.
- ``norm``: batch/layer/group normalisation, one (fused multiply-add) per output element.
- ``act``: activations (ReLU, sigmoid, hardswish, GELU, softmax ...), one per output element.
- ``pool``: pooling and reductions, one comparison/addition per input element read by a window
  (taps on padding read nothing and are not counted).
- ``elementwise``: other elementwise arithmetic (``x + y``, ``x * s``), one per output element.
- data movement (view, permute, cat, pad, slicing, copies) does no arithmetic and counts 0;
  every other operation is listed in ``not_counted`` by name, never silently as 0.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cnnlab.analysis._geometry import Geo, as_number
from cnnlab.errors import UserError

OP_KINDS = ("macs", "bias", "norm", "act", "pool", "elementwise")


@dataclass
class OpCounts:
    """Operation counts of one row, by kind (see the module docstring for units)."""

    macs: int = 0
    bias: int = 0
    norm: int = 0
    act: int = 0
    pool: int = 0
    elementwise: int = 0

    @property
    def flops(self) -> int:
        """Floating-point operations of the conv/linear part: a multiply and an add per MAC."""
        return 2 * self.macs

    def __iadd__(self, other: OpCounts) -> OpCounts:
        for k in OP_KINDS:
            setattr(self, k, getattr(self, k) + getattr(other, k))
        return self

    def scaled(self, factor: int) -> OpCounts:
        return OpCounts(**{k: getattr(self, k) * factor for k in OP_KINDS})


@dataclass
class Layer:
    """One row: a layer (or one call of a module, or one functional op).

    ``output_shape`` excludes the batch dimension: ``(C, H, W)`` or ``(features,)``.
    Parameters follow the front end's ecosystem (:attr:`Analysis.convention`): for a PyTorch
    module ``non_trainable_params`` are frozen parameters (``requires_grad=False``) and
    ``buffers`` the buffer elements the row reads (running mean/var), which are not parameters;
    for a Keras-style spec ``non_trainable_params`` are Keras' non-trainable weights (batch norm's
    moving mean and variance) and ``buffers`` is 0.
    ``receptive_field``, ``jump`` and ``start`` are per axis ``(h, w)`` in input pixels, ``None``
    when the input has no spatial axes or the geometry could not be followed (see warnings).
    """

    name: str
    type: str
    inputs: list[str]
    output_shape: tuple[int, ...]
    trainable_params: int = 0
    non_trainable_params: int = 0
    buffers: int = 0
    ops: OpCounts = field(default_factory=OpCounts)
    receptive_field: tuple[int | float, int | float] | None = None
    jump: tuple[int | float, int | float] | None = None
    start: tuple[int | float, int | float] | None = None
    memory_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def params(self) -> int:
        return self.trainable_params + self.non_trainable_params

    @property
    def macs(self) -> int:
        return self.ops.macs

    def set_geometry(self, geo: Geo | None) -> None:
        if geo is not None and geo.known:
            self.receptive_field = (as_number(geo.rf[0]), as_number(geo.rf[1]))
            self.jump = (as_number(geo.jump[0]), as_number(geo.jump[1]))
            self.start = (as_number(geo.start[0]), as_number(geo.start[1]))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "output_shape": list(self.output_shape),
            "params": self.params,
            "trainable_params": self.trainable_params,
            "macs": self.ops.macs,
            "receptive_field": _list(self.receptive_field),
            "jump": _list(self.jump),
            # extra keys beyond the minimum
            "non_trainable_params": self.non_trainable_params,
            "buffers": self.buffers,
            "flops": self.ops.flops,
            **{f"{k}_ops": getattr(self.ops, k) for k in OP_KINDS[1:]},
            "start": _list(self.start),
            "memory_bytes": self.memory_bytes,
            "inputs": list(self.inputs),
        }
        if self.notes:
            d["notes"] = list(self.notes)
        return d


def _list(t: Sequence[Any] | None) -> list[Any] | None:
    return None if t is None else list(t)


@dataclass
class UnusedParams:
    """Parameters (or float buffers) that the forward pass never read, e.g. auxiliary heads."""

    name: str
    trainable: int
    non_trainable: int


@dataclass
class Analysis:
    """Per-layer shapes, parameters, operation counts and receptive fields of one network.

    Attributes:
        source: what was analyzed (file, model name, class).
        input_shape: ``(C, H, W)`` or ``(features,)``, without the batch.
        batch: the batch size the operation counts and memory are for.
        layers: rows in execution order.
        output: name of the row whose output is the network's output.
        warnings: misaligned branches, untracked receptive fields, Keras incompatibilities.
        not_counted: operation name -> number of calls whose arithmetic is not counted.
        unused: parameters never used by the forward pass (included in the totals).
        convention: ``"keras"`` (spec files: non-trainable weights include batch norm's moving
            statistics) or ``"pytorch"`` (modules: parameters are ``model.parameters()``;
            non-trainable means frozen; buffers are counted apart in ``buffers``).
        buffers: a module's buffer elements (each once, read or not); never in the params.
        error: for a partial result, the one-line reason the analysis stopped.
    """

    source: str
    input_shape: tuple[int, ...]
    batch: int = 1
    dtype: str = "float32"
    layers: list[Layer] = field(default_factory=list)
    output: str | None = None
    warnings: list[str] = field(default_factory=list)
    not_counted: dict[str, int] = field(default_factory=dict)
    unused: list[UnusedParams] = field(default_factory=list)
    error: str | None = None
    convention: str = "keras"
    buffers: int = 0

    def layer(self, name: str) -> Layer:
        for row in self.layers:
            if row.name == name:
                return row
        raise KeyError(name)

    @property
    def output_layer(self) -> Layer | None:
        if self.output is None:
            return self.layers[-1] if self.layers else None
        return self.layer(self.output)

    @property
    def totals(self) -> dict[str, Any]:
        ops = OpCounts()
        for row in self.layers:
            ops += row.ops
        trainable = sum(r.trainable_params for r in self.layers) + sum(u.trainable for u in self.unused)
        non_trainable = sum(r.non_trainable_params for r in self.layers) + sum(
            u.non_trainable for u in self.unused
        )
        out = self.output_layer
        return {
            "total_params": trainable + non_trainable,
            "trainable_params": trainable,
            "non_trainable_params": non_trainable,
            "buffers": self.buffers,
            "total_macs": ops.macs,
            "total_flops": ops.flops,
            **{f"{k}_ops": getattr(ops, k) for k in OP_KINDS[1:]},
            "receptive_field": _list(out.receptive_field) if out else None,
            "jump": _list(out.jump) if out else None,
            "start": _list(out.start) if out else None,
            "activation_memory_bytes": sum(r.memory_bytes for r in self.layers),
        }

    # ------------------------------------------------------------------------------ formats

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: ``layers`` plus the totals at top level (see ``--format json``)."""
        d: dict[str, Any] = {"layers": [r.to_dict() for r in self.layers]}
        d.update(self.totals)
        d.update(
            source=self.source,
            input_shape=list(self.input_shape),
            batch=self.batch,
            dtype=self.dtype,
            params_convention=self.convention,
            output=self.output_layer.name if self.output_layer else None,
            warnings=list(self.warnings),
            not_counted=dict(self.not_counted),
            unused_params=[vars(u) for u in self.unused],
        )
        if self.error is not None:
            d["error"] = self.error
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_csv(self) -> str:
        """One row per layer and a final ``TOTAL`` row; warnings and not-counted ops go into
        the ``notes`` column of the total row so that nothing is dropped."""
        from cnnlab.report import csv_text  # the one CSV writer: strict values, one header

        rows = [_cells(row.to_dict(), "; ".join(row.notes)) for row in self.layers]
        t = self.totals
        total = {"name": "TOTAL", "type": "", "output_shape": None, "params": t["total_params"],
                 "macs": t["total_macs"], "flops": t["total_flops"],
                 "memory_bytes": t["activation_memory_bytes"], **t}
        rows.append(_cells(total, "; ".join(self.footnotes())))
        return csv_text(rows, _CSV_COLUMNS)

    def to_markdown(self) -> str:
        """A GitHub-flavoured Markdown table, the totals and the footnotes."""
        from cnnlab.report import markdown_table  # the report's renderer: escaping done once

        lines = markdown_table(TABLE_HEADER, [display_cells(row) for row in self.layers])
        lines.append("")
        lines.extend(f"- {line}" for line in self.summary_lines() + self.footnotes())
        return "\n".join(lines) + "\n"

    def summary_lines(self) -> list[str]:
        t = self.totals
        rf = "n/a" if t["receptive_field"] is None else _pair(t["receptive_field"])
        if self.convention == "pytorch":
            params = (f"params: {t['total_params']:,} (trainable {t['trainable_params']:,}, frozen "
                      f"{t['non_trainable_params']:,}); buffers, not parameters (running "
                      f"statistics, counters): {t['buffers']:,}")
        else:
            params = (f"params: {t['total_params']:,} (trainable {t['trainable_params']:,}, "
                      f"non-trainable {t['non_trainable_params']:,}; Keras convention: batch-norm "
                      "moving mean/variance are non-trainable weights)")
        return [
            f"input {format_shape(self.input_shape)}, batch {self.batch}, {self.dtype}",
            params,
            f"conv/linear MACs (Mult-Adds): {t['total_macs']:,}; FLOPs = 2 x MACs: {t['total_flops']:,}",
            "other ops: " + ", ".join(f"{k} {t[k + '_ops']:,}" for k in OP_KINDS[1:]),
            f"output receptive field (h, w): {rf}; jump {_pair(t['jump'])}; start {_pair(t['start'])}",
            f"activation memory (sum of layer outputs): {_bytes(t['activation_memory_bytes'])}",
        ]

    def footnotes(self) -> list[str]:
        notes = [f"warning: {w}" for w in self.warnings]
        if self.not_counted:
            notes.append("not counted: " + ", ".join(
                f"{op} ({n} call{'s' if n > 1 else ''})" for op, n in sorted(self.not_counted.items())))
        else:
            notes.append("not counted: nothing (every op is counted or is data movement)")
        if self.unused:
            notes.append("never used by forward (in totals, in no row): " + ", ".join(
                f"{u.name} ({u.trainable + u.non_trainable:,})" for u in self.unused))
        if self.error:
            notes.append(f"stopped: {self.error}")
        return notes


_CSV_COLUMNS = ["name", "type", "output_shape", "params", "trainable_params",
                "non_trainable_params", "buffers", "macs", "flops"] + [f"{k}_ops" for k in OP_KINDS[1:]] + [
                "receptive_field", "jump", "start", "memory_bytes", "notes"]


def _cells(d: dict[str, Any], notes: str) -> dict[str, Any]:
    """One CSV row: shapes and lists joined with ``x`` (``3x32x32``), missing values empty."""
    out = {}
    for col in _CSV_COLUMNS[:-1]:
        v = d.get(col)
        out[col] = "x".join(str(x) for x in v) if isinstance(v, list) else ("" if v is None else v)
    return {**out, "notes": notes}


def format_shape(shape: Sequence[int] | None) -> str:
    """``(3, 32, 32)``; a flat shape as ``(10,)``; ``-`` for None."""
    if shape is None:
        return "-"
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _pair(p: Sequence[Any] | None) -> str:
    return "-" if p is None else f"{p[0]}, {p[1]}"


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


def display_cells(row: Layer) -> list[str]:
    """The cells of one table row (shared by Markdown and the rich table)."""
    return [row.name, row.type, format_shape(row.output_shape), f"{row.params:,}",
            f"{row.non_trainable_params:,}", f"{row.buffers:,}", f"{row.ops.macs:,}", f"{row.ops.flops:,}"] + [
        f"{getattr(row.ops, k):,}" for k in OP_KINDS[1:]] + [
        _pair(row.receptive_field), _pair(row.jump), _pair(row.start), _bytes(row.memory_bytes)]


TABLE_HEADER = ["Layer", "Type", "Output (C, H, W)", "Params", "Non-train.", "Buffers", "MACs", "FLOPs",
                "Bias", "Norm", "Act", "Pool", "Elem.", "RF (h, w)", "Jump", "Start", "Act. mem."]


class AnalysisError(UserError):
    """The analysis stopped at an impossible layer; ``partial`` holds the rows before it."""

    def __init__(self, message: str, partial: Analysis | None = None) -> None:
        super().__init__(message)
        self.partial = partial


__all__ = ["Analysis", "AnalysisError", "Layer", "OpCounts", "UnusedParams", "OP_KINDS", "TABLE_HEADER"]
