"""Front end for PyTorch ``nn.Module``s: the executed graph, captured at the ATen level.

Why dispatch-level capture rather than ``torch.fx``: symbolic tracing fails on data-dependent
Python control flow and on modules it cannot trace, while a ``TorchDispatchMode`` sees every ATen
operation that really runs, including ``x + y``, ``torch.cat``, ``@`` and ``F.conv2d`` written
in ``forward`` (torch's own ``FlopCounterMode`` counts the same way). The forward pass runs under
``FakeTensorMode``: activations are shape-only fake tensors (no memory, no arithmetic) while real
or ``meta`` parameters stay the model's own objects, so parameter identity tells shared modules
and tied weights apart without copying the model.

Rows are formed from three layers of information:

- global module forward hooks give the scope: each call of a *leaf* module (one without children:
  ``Conv2d``, ``BatchNorm2d``, ``ReLU``, ``Dropout`` ...) is one row named by its qualified name
  (``layer1.0.conv1``; a second call of the same module is ``layer1.0.conv1#2``);
- a ``TorchFunctionMode`` groups the ATen ops of one functional call outside leaf modules
  (``x + y`` in a residual block, ``torch.flatten``, ``torch.cat``, ``@``) into one row named
  ``<scope>:<function>`` (``layer1.0:add_``);
- the ``TorchDispatchMode`` counts each ATen op into the current row, records which parameters it
  reads (a parameter counts once, in the first row that reads it; later readers note the
  sharing) and which rows produced its inputs (tensor identity; in-place ops update it), and
  carries the receptive-field geometry (:mod:`cnnlab.analysis._geometry`) from tensor to tensor.

The model runs in ``eval()`` mode (restored afterwards) under ``torch.no_grad()``: batch norm then
uses its running statistics. Parameters follow PyTorch's convention
(:func:`cnnlab.analysis.params.count_parameters`): the elements of ``model.parameters()``, trainable
or frozen by ``requires_grad``; buffers (running statistics, ``num_batches_tracked``) are a
separate count (per row: the buffers it reads), never parameters.

What each ATen op counts lives in :mod:`cnnlab.analysis._torch_ops`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from cnnlab.analysis import _geometry as G
from cnnlab.analysis._torch_ops import Op, rule_for
from cnnlab.analysis.params import count_parameters
from cnnlab.analysis.result import Analysis, AnalysisError, Layer, UnusedParams, format_shape
from cnnlab.errors import UserError

aten = torch.ops.aten
Geo = G.Geo


class _OpFailed(RuntimeError):
    """An ATen op of the model failed (a shape error); carries the row it happened in."""

    def __init__(self, row: Layer, shapes: str, exc: Exception) -> None:
        super().__init__(str(exc))
        self.row, self.shapes, self.original = row, shapes, exc


class _CaptureBug(Exception):
    """An error in the analyzer's own bookkeeping: not the user's fault, keeps its traceback."""


# ----------------------------------------------------------------------------------- public entry


def analyze_module(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    batch: int = 1,
    source: str | None = None,
) -> Analysis:
    """Analyze an ``nn.Module`` on a fake input of shape ``(batch, *input_shape)``.

    Args:
        model: any module; its parameters may be real or on the ``meta`` device. It is put in
            ``eval()`` mode during the analysis and restored afterwards; nothing is computed.
        input_shape: ``(C, H, W)`` for images (receptive fields are computed only then), or any
            other per-sample shape.
        batch: batch size of the fake input.
        source: label for the result (defaults to the class name).

    Raises:
        AnalysisError: the forward pass fails on this input (the message names the layer, its
            input shape and PyTorch's reason; ``.partial`` holds the rows before it).
    """
    if not isinstance(model, nn.Module):
        raise UserError(f"expected an nn.Module, got {type(model).__name__}")
    if isinstance(model, torch.jit.ScriptModule):
        raise UserError("TorchScript modules are not supported: analyze the Python nn.Module")
    shape = tuple(int(s) for s in input_shape)
    if not shape or min(shape) < 1 or batch < 1:
        raise UserError(f"input shape must be positive integers, got {tuple(input_shape)} (batch {batch})")
    cap = _Capture(model, batch, source or type(model).__name__, shape)
    return cap.run()


# ----------------------------------------------------------------------------------- capture


class _Capture:
    def __init__(self, model: nn.Module, batch: int, source: str, shape: tuple[int, ...]) -> None:
        self.model, self.batch, self.shape = model, batch, shape
        self.result = Analysis(source=source, input_shape=shape, batch=batch)
        # the root is "": its functional rows have no scope prefix
        self.module_names = {id(m): n for n, m in model.named_modules()}
        # id(parameter) -> (qualified name, trainable, numel); model.parameters() lists a
        # tied tensor once, as count_parameters counts it
        self.params: dict[int, tuple[str, bool, int]] = {}
        for n, p in model.named_parameters():
            self.params[id(p)] = (n, p.requires_grad, p.numel())
        # id(buffer) -> numel: state such as running statistics, shown apart from parameters
        self.buffers = {id(b): b.numel() for b in model.buffers()}
        self.result.buffers = count_parameters(model).buffers
        self.result.convention = "pytorch"
        self.owner: dict[int, str] = {}  # parameter id -> the row that counted it
        self.buffer_owner: set[int] = set()  # buffers already counted in a row
        self.shared: dict[str, list[str]] = {}  # row -> rows whose parameters it reuses
        self.producer: WeakIdKeyDictionary = WeakIdKeyDictionary()  # tensor -> row name
        self.geo: WeakIdKeyDictionary = WeakIdKeyDictionary()  # tensor -> Geo
        self.calls: Counter[str] = Counter()
        self.stack: list[nn.Module] = []
        self.leaf: tuple[nn.Module, Layer, int] | None = None  # (module, row, stack depth)
        self.func: tuple[str, str] | None = None  # (row name, type) of the open functional call
        self.func_row: Layer | None = None
        self.done: set[int] = set()  # id(row) of finished rows
        self.untracked: set[str] = set()
        self.input_shapes: dict[int, str] = {}  # id(row) -> its input shapes, for error lines
        self.failed = False  # an op of the model failed: hooks unwinding must not close rows

    # ---------------------------------------------------------------- driving the forward pass

    def run(self) -> Analysis:
        from torch._subclasses.fake_tensor import FakeTensorMode

        first = next((t for t in (*self.model.parameters(), *self.model.buffers())
                      if t.is_floating_point()), None)
        dtype = first.dtype if first is not None else torch.float32
        device = first.device if first is not None else torch.device("cpu")
        self.result.dtype = str(dtype).removeprefix("torch.")
        modes = [(m, m.training) for m in self.model.modules()]
        # FakeTensorMode logs a traceback for an op whose shape check fails; that failure is
        # the user's (a layer that does not fit its input) and is reported in one line instead
        fake_log = logging.getLogger("torch._subclasses.fake_tensor")
        log_level = fake_log.level
        fake_log.setLevel(logging.CRITICAL)
        hooks = [
            nn.modules.module.register_module_forward_pre_hook(self._guard(self._pre_hook)),
            nn.modules.module.register_module_forward_hook(self._guard(self._post_hook), always_call=True),
        ]
        try:
            self.model.eval()
            with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
                x = torch.empty((self.batch, *self.shape), dtype=dtype, device=device)
                self.producer[x] = "input"
                geo = G.input_geo(x.shape)
                if geo is not None:
                    self.geo[x] = geo
                else:
                    self.result.warnings.append(
                        f"input {self.shape} is not (C, H, W): receptive fields are not computed")
                try:
                    with _Dispatch(self), _Functions(self):
                        out = self.model(x)
                except _OpFailed as exc:
                    self._fail(f"layer {exc.row.name!r} ({exc.row.type}) on input {exc.shapes}: "
                               f"{_one_line(exc.original)}", exc.original)
                except (RuntimeError, ValueError, AssertionError, IndexError, TypeError) as exc:
                    where = self._scope_name() or "the model's forward"
                    self._fail(f"{self.result.source} on input {format_shape(self.shape)} failed in "
                               f"{where}: {type(exc).__name__}: {_one_line(exc)}", exc)
                self._finish(out)
        finally:
            fake_log.setLevel(log_level)
            for h in hooks:
                h.remove()
            for m, training in modes:
                m.train(training)
        return self.result

    def _fail(self, message: str, exc: Exception) -> None:
        self.result.layers = [r for r in self.result.layers if id(r) in self.done]
        self.result.error = message
        raise AnalysisError(message, partial=self.result) from exc

    def _finish(self, out: Any) -> None:
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if outs and outs[0] in self.producer and self.producer[outs[0]] != "input":
            self.result.output = self.producer[outs[0]]
        for row_name, owners in self.shared.items():
            row = self.result.layer(row_name)
            row.notes.append("reuses weights counted in " + ", ".join(owners))
        self._collect_unused()

    def _collect_unused(self) -> None:
        """Parameters never read, grouped under the shortest module prefix that is all unused."""
        names = {pid: info for pid, info in self.params.items() if pid not in self.owner}
        if not names:
            return
        used_names = [info[0] for pid, info in self.params.items() if pid in self.owner]
        groups: dict[str, list[int]] = {}
        for info in names.values():
            parts = info[0].split(".")
            prefix = info[0]
            for i in range(1, len(parts)):
                cand = ".".join(parts[:i])
                if not any(u == cand or u.startswith(cand + ".") for u in used_names):
                    prefix = cand
                    break
            groups.setdefault(prefix, [0, 0])
            groups[prefix][0 if info[1] else 1] += info[2]
        for prefix, (tr, nt) in groups.items():
            self.result.unused.append(UnusedParams(prefix, tr, nt))
        self.result.warnings.append(
            f"{sum(tr + nt for tr, nt in groups.values()):,} parameters are never used by the "
            f"forward pass ({', '.join(groups)}): counted in the totals, in no row")

    # ---------------------------------------------------------------- module scopes

    def _guard(self, fn: Callable[..., None]) -> Callable[..., None]:
        def hook(*args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:  # our bookkeeping failed: a bug, not bad input
                raise _CaptureBug(f"analyzer bookkeeping failed in {fn.__name__}: {exc!r}") from exc
        return hook

    def _pre_hook(self, module: nn.Module, args: Any) -> None:
        self.stack.append(module)
        if self.leaf is not None or self.func is not None or next(module.children(), None) is not None:
            return
        base = self.module_names.get(id(module))
        if base is None:
            base = f"{self._scope_name()}:{type(module).__name__}".lstrip(":")
        elif base == "":
            base = type(module).__name__
        row = self._new_row(base, type(module).__name__)
        self.leaf = (module, row, len(self.stack))
        tensors = [t for t in tree_leaves(args) if isinstance(t, torch.Tensor)]
        self.input_shapes[id(row)] = self._shapes(tensors)
        for t in tensors:
            self._link(row, t)

    def _post_hook(self, module: nn.Module, args: Any, output: Any) -> None:
        if self.stack and self.stack[-1] is module:
            self.stack.pop()
        if self.failed:
            return
        if self.leaf is not None and self.leaf[0] is module and self.leaf[2] == len(self.stack) + 1:
            row = self.leaf[1]
            self.leaf = None
            self._close_row(row, output)

    def _scope_name(self) -> str:
        for m in reversed(self.stack):
            name = self.module_names.get(id(m))
            if name is not None:
                return name
        return ""

    # ---------------------------------------------------------------- rows

    def _new_row(self, base: str, kind: str) -> Layer:
        self.calls[base] += 1
        n = self.calls[base]
        row = Layer(name=base if n == 1 else f"{base}#{n}", type=kind, inputs=[], output_shape=())
        self.result.layers.append(row)
        return row

    def current_row(self, func: Any) -> Layer:
        if self.leaf is not None:
            return self.leaf[1]
        if self.func is not None:
            if self.func_row is None:
                self.func_row = self._new_row(*self.func)
            return self.func_row
        # an op outside any module call and any torch function (rare): a row of its own
        name = func._overloadpacket.__name__
        return self._new_row(f"{self._scope_name()}:{name}".lstrip(":"), name)

    def _close_row(self, row: Layer, output: Any) -> None:
        outs = [t for t in tree_leaves(output) if isinstance(t, torch.Tensor)]
        for t in outs:
            self.producer[t] = row.name
        if outs:
            first = outs[0]
            shape = tuple(first.shape)
            row.output_shape = shape[1:] if shape and shape[0] == self.batch else shape
            row.set_geometry(self.geo.get(first))
            row.memory_bytes = sum(t.numel() * t.element_size() for t in outs)
        if output is not None:  # None: a module unwinding from an exception (always_call hooks)
            self.done.add(id(row))

    def _link(self, row: Layer, t: torch.Tensor) -> None:
        p = self.producer.get(t)
        if p is not None and p != row.name and p not in row.inputs:
            row.inputs.append(p)

    def _use_param(self, row: Layer, pid: int) -> None:
        name, trainable, numel = self.params[pid]
        owner = self.owner.get(pid)
        if owner is None:
            self.owner[pid] = row.name
            if trainable:
                row.trainable_params += numel
            else:
                row.non_trainable_params += numel
        elif owner != row.name:
            owners = self.shared.setdefault(row.name, [])
            if owner not in owners:
                owners.append(owner)

    def _use_buffer(self, row: Layer, bid: int) -> None:
        if bid not in self.buffer_owner:  # like a parameter: counted in the first row reading it
            self.buffer_owner.add(bid)
            row.buffers += self.buffers[bid]

    def _shapes(self, tensors: Sequence[torch.Tensor]) -> str:
        acts = [t for t in tensors if id(t) not in self.params and id(t) not in self.buffers]
        return " + ".join(format_shape(_strip(tuple(t.shape), self.batch)) for t in acts) or "()"

    # ---------------------------------------------------------------- one ATen op

    def record(self, row: Layer, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        for t in inputs:
            if id(t) in self.params:
                self._use_param(row, id(t))
            elif id(t) in self.buffers:
                self._use_buffer(row, id(t))
            else:
                self._link(row, t)
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        name = func._overloadpacket.__name__
        key = name[:-1] if name.endswith("_") and not name.endswith("__") else name
        rule = rule_for(func, key)
        op = Op(self, row, func, key, args, kwargs, outs)
        known_inputs = all(g is None or g.known for g in map(op.geo, inputs))
        geos = rule(op)
        for i, t in enumerate(outs):
            g = geos[i] if i < len(geos) else None
            self.producer[t] = row.name
            if g is None:
                self.geo.pop(t, None)
            else:
                self.geo[t] = g
            if g is not None and not g.known and known_inputs:
                self._untracked(key, row)
        if func._schema.is_mutable and outs and outs[0]._base is not None:
            # an in-place op on a view changes its base too (x[:, :c] += y)
            base = outs[0]._base
            self.producer[base] = row.name
            gb, go = self.geo.get(base), self.geo.get(outs[0])
            if gb is not None and go is not None:
                merged, _ = G.merge([gb, go], gb.dims)
                self.geo[base] = merged

    def _untracked(self, op: str, row: Layer) -> None:
        if op not in self.untracked:
            self.untracked.add(op)
            self.result.warnings.append(
                f"receptive field not followed through aten.{op} (first in {row.name!r}); rows "
                "that depend on it show none")

    def warn(self, row: Layer, messages: list[str]) -> None:
        for m in messages:
            if m not in row.notes:
                row.notes.append(m)
                self.result.warnings.append(f"{row.name!r}: {m}")


# ----------------------------------------------------------------------------------- modes


class _Dispatch(TorchDispatchMode):
    _PASS = frozenset({"device", "size", "stride", "dim", "numel", "is_contiguous",
                       "storage_offset", "sym_size", "sym_stride", "sym_numel",
                       "sym_storage_offset", "is_strides_like_format", "is_non_overlapping_and_dense",
                       "layout", "sym_is_contiguous"})

    def __init__(self, cap: _Capture) -> None:
        super().__init__()
        self.cap = cap

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if func._overloadpacket.__name__ in self._PASS:
            return func(*args, **kwargs)
        cap = self.cap
        try:
            row = cap.current_row(func)
        except Exception as exc:
            raise _CaptureBug(f"analyzer bookkeeping failed: {exc!r}") from exc
        try:
            out = func(*args, **kwargs)
        except RuntimeError as exc:
            tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
            shapes = cap.input_shapes.get(id(row)) or cap._shapes(tensors)
            cap.failed = True
            raise _OpFailed(row, shapes, exc) from exc
        try:
            cap.record(row, func, args, kwargs, out)
            if cap.leaf is None and cap.func is None:
                cap._close_row(row, out)
        except Exception as exc:
            raise _CaptureBug(f"analyzer bookkeeping failed on aten.{func}: {exc!r}") from exc
        return out


class _Functions(TorchFunctionMode):
    """Groups the ATen ops of one functional call (outside leaf modules) into one row."""

    def __init__(self, cap: _Capture) -> None:
        super().__init__()
        self.cap = cap

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        cap = self.cap
        if cap.leaf is not None or cap.func is not None:
            return func(*args, **kwargs)
        scope, fname = cap._scope_name(), _function_name(func)
        cap.func = (f"{scope}:{fname}" if scope else fname, fname)
        cap.func_row = None
        try:
            out = func(*args, **kwargs)
        finally:
            row, cap.func, cap.func_row = cap.func_row, None, None
        if row is not None:
            try:
                tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
                cap.input_shapes[id(row)] = cap._shapes(tensors)
                cap._close_row(row, out)
            except Exception as exc:
                raise _CaptureBug(f"analyzer bookkeeping failed after {fname}: {exc!r}") from exc
        return out


def _function_name(func: Any) -> str:
    """``Tensor.__iadd__`` -> ``add_``, ``Tensor.__matmul__`` -> ``matmul``, ``F.relu`` -> ``relu``."""
    name = getattr(func, "__name__", None) or str(func)
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
        if name.startswith("i") and name[1:] in _BINARY:
            return name[1:] + "_"
        if name.startswith("r") and name[1:] in _BINARY:
            return name[1:]
    return name


_BINARY = {"add", "sub", "mul", "truediv", "floordiv", "matmul", "pow", "mod", "and", "or", "xor",
           "lshift", "rshift"}


def _strip(shape: tuple[int, ...], batch: int) -> tuple[int, ...]:
    return shape[1:] if shape and shape[0] == batch else shape



def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


__all__ = ["analyze_module"]
