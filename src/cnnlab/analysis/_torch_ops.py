"""Per-ATen-op rules of the PyTorch front end: what one operation counts and how it moves the
receptive-field geometry.

:mod:`cnnlab.analysis.torch_graph` captures the executed graph and calls :func:`rule_for` for every
ATen op it sees; each rule adds the op's arithmetic to its row (units: :mod:`cnnlab.analysis.result`)
and returns the geometry of each output (``None``: not derived from the input image). An op with
no rule that is not pointwise is listed in ``not_counted``, never silently counted as 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.utils._pytree import tree_leaves

from cnnlab.analysis import _geometry as G
from cnnlab.analysis.result import Layer

if TYPE_CHECKING:
    from cnnlab.analysis.torch_graph import _Capture

Geo = G.Geo


class Op:
    """One ATen call: its row, arguments bound to the schema's names, outputs and geometry."""

    def __init__(self, cap: _Capture, row: Layer, func: Any, name: str, args: tuple, kwargs: dict,
                 outs: list[torch.Tensor]) -> None:
        self.cap, self.row, self.name, self.outs = cap, row, name, outs
        self.overload = func._overloadname
        self.a: dict[str, Any] = {}
        for i, arg in enumerate(func._schema.arguments):
            if i < len(args) and not arg.kwarg_only:
                self.a[arg.name] = args[i]
            elif arg.name in kwargs:
                self.a[arg.name] = kwargs[arg.name]
            elif arg.has_default_value():
                self.a[arg.name] = arg.default_value
        self.tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]

    def geo(self, t: Any) -> Geo | None:
        return self.cap.geo.get(t) if isinstance(t, torch.Tensor) else None

    def numel(self) -> int:
        return self.outs[0].numel() if self.outs else 0


def _not_counted(op: Op) -> list[Geo | None]:
    key = f"aten.{op.name}"
    op.cap.result.not_counted[key] = op.cap.result.not_counted.get(key, 0) + 1
    return [_unknown_if_live(op)] * len(op.outs)


def _unknown_if_live(op: Op) -> Geo | None:
    return G.UNKNOWN if any(op.geo(t) is not None for t in op.tensors) else None


def _merge_into(op: Op, dims: G.Dims, geos: Sequence[Geo | None]) -> Geo | None:
    geo, warnings = G.merge(geos, dims)
    op.cap.warn(op.row, warnings)
    return geo


def _pointwise(op: Op) -> list[Geo | None]:
    if op.name in _ACTIVATIONS:
        op.row.ops.act += op.numel()
    else:
        op.row.ops.elementwise += op.numel()
    inputs = [(op.geo(t), tuple(t.shape)) for t in op.tensors]
    dims = G.broadcast_dims(inputs, tuple(op.outs[0].shape))
    return [_merge_into(op, dims, [g for g, _ in inputs])] * len(op.outs)


_ACTIVATIONS = frozenset({
    "relu", "relu6", "hardtanh", "sigmoid", "tanh", "hardswish", "hardsigmoid", "silu", "gelu",
    "elu", "selu", "celu", "leaky_relu", "softplus", "mish", "threshold", "clamp", "clamp_min",
    "clamp_max", "log_sigmoid_forward", "_prelu_kernel", "prelu", "rrelu_with_noise", "glu",
})


def _is_pointwise(func: Any, key: str) -> bool:
    return torch.Tag.pointwise in func.tags or key in _ACTIVATIONS


def _convolution(op: Op) -> list[Geo | None]:
    x, w, out = op.a["input"], op.a["weight"], op.outs[0]
    if op.a["transposed"]:  # every input element is scattered to C_out/groups * prod(k) outputs
        op.row.ops.macs += x.shape[0] * math.prod(x.shape[2:]) * math.prod(w.shape)
    else:  # every output element sums C_in/groups * prod(k) products
        op.row.ops.macs += out.numel() * math.prod(w.shape[1:])
    if op.a["bias"] is not None:
        op.row.ops.bias += out.numel()
    g = op.geo(x)
    if g is None:
        return [None]
    if op.a["transposed"] or out.dim() != 4:
        return [G.UNKNOWN]
    return [G.sliding(g, out.shape, w.shape[2:], _pair(op.a["stride"]), _pair(op.a["padding"]),
                      _pair(op.a["dilation"]))]


def _matmul(op: Op) -> list[Geo | None]:
    """mm, addmm, bmm, baddbmm and the fused addmm+activation: ``(.., M, K) @ (.., K, N)``."""
    a, b = op.a.get("mat1", op.a["self"]), op.a.get("mat2")
    bias = op.a["self"] if "mat1" in op.a or op.name == "baddbmm" else None
    if op.name == "baddbmm":
        a, b = op.a["batch1"], op.a["batch2"]
    n_out = op.numel()
    op.row.ops.macs += n_out * a.shape[-1]  # each output element: K multiply-adds
    if op.name in ("addmm", "_addmm_activation"):
        op.row.ops.bias += n_out
    elif op.name == "baddbmm":
        op.row.ops.elementwise += n_out
    if op.name == "_addmm_activation":
        op.row.ops.act += n_out
    return [_product_geo(op, op.geo(a), a.shape, op.geo(b), b.shape, op.geo(bias))]


def _product_geo(op: Op, ga: Geo | None, a_shape: Sequence[int], gb: Geo | None,
                 b_shape: Sequence[int], g_bias: Geo | None = None) -> Geo | None:
    """Geometry of ``(.., M, K) @ (.., K, N)`` (+ bias): the contracted K mixes its positions."""
    ga = G.mix(ga, G.spatial_tags(ga.dims[-1])) if ga is not None and ga.known else ga
    gb = G.mix(gb, G.spatial_tags(gb.dims[-2])) if gb is not None and gb.known else gb
    da = ga.dims if ga is not None and ga.known else tuple(G.plain(s) for s in a_shape)
    db = gb.dims if gb is not None and gb.known else tuple(G.plain(s) for s in b_shape)
    return _merge_into(op, da[:-1] + db[-1:], [ga, gb, g_bias])


def _attention(op: Op) -> list[Geo | None]:
    """Fused ``scaled_dot_product_attention`` kernels (flash, efficient, cuDNN, the CPU flash
    kernel): counted as the math backend's decomposition runs, so that a model gives the same
    totals whichever backend the dispatcher picks (a ``meta`` model gets the math path)::

        q * sqrt(s), k * sqrt(s)         elementwise  B*H*L*E + B*Hk*S*E
        a = q @ k^T                      MACs         B*H*L*S*E
        a + mask (if any)                elementwise  B*H*L*S
        softmax(a)                       act          B*H*L*S
        a @ v                            MACs         B*H*L*S*Ev

    q ``(B, H, L, E)``, k ``(B, Hk, S, E)``, v ``(B, Hk, S, Ev)``; output ``(B, H, L, Ev)``.
    """
    q, k, v = op.a["query"], op.a["key"], op.a["value"]
    mask = op.a.get("attn_mask", op.a.get("attn_bias"))
    *batch, n_l, e = q.shape
    n_s, ev = k.shape[-2], v.shape[-1]
    scores = math.prod(batch) * n_l * n_s
    op.row.ops.macs += scores * e + scores * ev
    op.row.ops.elementwise += q.numel() + k.numel() + (scores if mask is not None else 0)
    op.row.ops.act += scores
    if op.a.get("is_causal"):
        op.cap.warn(op.row, ["causal attention: the mask's construction is not counted"])
    gk = op.geo(k)
    gk = G.transpose(gk, -2, -1) if gk is not None and gk.known else gk
    k_t = (*k.shape[:-2], e, n_s)
    geo = _product_geo(op, op.geo(q), q.shape, gk, k_t, op.geo(mask))
    if geo is not None and geo.known:  # softmax over the keys
        geo = G.mix(geo, G.spatial_tags(geo.dims[-1]), keep_dims=True)
    out = _product_geo(op, geo, (*batch, n_l, n_s), op.geo(v), v.shape)
    return [out] + [None] * (len(op.outs) - 1)


def _batch_norm(op: Op) -> list[Geo | None]:
    x = op.a["input"]
    op.row.ops.norm += x.numel()
    g = op.geo(x)
    if g is not None and op.a.get("training", False):  # batch statistics mix every position
        g = G.mix(g, ("h", "w"), keep_dims=True)
    return [g] + [None] * (len(op.outs) - 1)


def _layer_norm(op: Op) -> list[Geo | None]:
    x, normalized = op.a["input"], op.a["normalized_shape"]
    op.row.ops.norm += x.numel()
    g = op.geo(x)
    if g is not None and g.known:
        tags = [t for d in g.dims[len(g.dims) - len(normalized):] for t in G.spatial_tags(d)]
        g = G.mix(g, tags, keep_dims=True)
    return [g] + [None] * (len(op.outs) - 1)


def _group_norm(op: Op) -> list[Geo | None]:
    x = op.a["input"]
    op.row.ops.norm += x.numel()
    g = op.geo(x)
    if g is not None and g.known:  # statistics over (C/groups, H, W)
        g = G.mix(g, [t for d in g.dims[2:] for t in G.spatial_tags(d)], keep_dims=True)
    return [g] + [None] * (len(op.outs) - 1)


def _pool(op: Op) -> list[Geo | None]:
    x, out = op.a["self"], op.outs[0]
    k = _pair(op.a["kernel_size"])
    s = _pair(op.a["stride"] or k)
    p = _pair(op.a["padding"])
    d = _pair(op.a.get("dilation", 1))
    h, w, ho, wo = x.shape[-2], x.shape[-1], out.shape[-2], out.shape[-1]
    op.row.ops.pool += math.prod(x.shape[:-2]) * G.window_visits(h, ho, k[0], s[0], p[0], d[0]) * \
        G.window_visits(w, wo, k[1], s[1], p[1], d[1])
    g = op.geo(x)
    geo = None if g is None else G.sliding(g, out.shape, k, s, p, d) if out.dim() == 4 else G.UNKNOWN
    return [geo] * len(op.outs)


def _adaptive_pool(op: Op) -> list[Geo | None]:
    x, out = op.a["self"], op.outs[0]
    (vh, kh, sh), (vw, kw, sw) = (G.adaptive_windows(x.shape[-2], out.shape[-2]),
                                         G.adaptive_windows(x.shape[-1], out.shape[-1]))
    op.row.ops.pool += math.prod(x.shape[:-2]) * vh * vw
    g = op.geo(x)
    if g is None:
        return [None] * len(op.outs)
    for n_in, n_out in ((x.shape[-2], out.shape[-2]), (x.shape[-1], out.shape[-1])):
        if n_in % n_out:
            op.cap.warn(op.row, [
                f"adaptive pooling {n_in} -> {n_out} uses windows of unequal size: receptive "
                "field shown for the largest window, jump in/out"])
    # out == 1 is a window as large as the input: global pooling
    geo = G.sliding(g, out.shape, (kh, kw), (sh, sw), (0, 0)) if out.dim() == 4 else G.UNKNOWN
    return [geo] * len(op.outs)


def _reduction(op: Op) -> list[Geo | None]:
    if isinstance(op.a.get("other"), torch.Tensor):  # max(x, y) / min(x, y): elementwise
        return _pointwise(op)
    x = op.a["self"]
    op.row.ops.pool += x.numel()
    dims = op.a.get("dim")
    if dims is None or dims == []:
        dims = list(range(x.dim()))
    dims = [dims] if isinstance(dims, int) else list(dims)
    g = op.geo(x)
    geo = None if g is None else G.reduce_dims(g, dims, bool(op.a.get("keepdim", False)), op.outs[0].dim())
    return [geo] * len(op.outs)


def _softmax(op: Op) -> list[Geo | None]:
    x = op.a["self"]
    op.row.ops.act += op.numel()
    g = op.geo(x)
    if g is not None and g.known:
        g = G.mix(g, G.spatial_tags(g.dims[op.a["dim"] % x.dim()]), keep_dims=True)
    return [g]


# ----- data movement: no arithmetic


def _same_layout(op: Op) -> list[Geo | None]:
    """view/reshape/flatten/squeeze/unsqueeze/clone/detach/dtype casts: regroup the atoms."""
    g = op.geo(op.tensors[0]) if op.tensors else None
    return [None if g is None else G.reshape(g, op.outs[0].shape)] * len(op.outs)


def _permute(op: Op) -> list[Geo | None]:
    g = op.geo(op.a["self"])
    return [None if g is None else G.permute(g, op.a["dims"])]


def _transpose(op: Op) -> list[Geo | None]:
    g = op.geo(op.a["self"])
    if g is None:
        return [None]
    if op.name == "t":
        return [G.transpose(g, 0, -1)]
    return [G.transpose(g, op.a["dim0"], op.a["dim1"])]


def _as_strided(op: Op) -> list[Geo | None]:
    """Restriding to another memory format keeps the logical layout; other views are not followed."""
    if tuple(op.a["size"]) == tuple(op.a["self"].shape):
        return _same_layout(op)
    return _untracked_move(op)


def _expand(op: Op) -> list[Geo | None]:
    g = op.geo(op.a["self"])
    return [None if g is None else G.expand(g, op.outs[0].shape)]


def _copy(op: Op) -> list[Geo | None]:
    src = op.geo(op.a["src"])
    return [None if src is None else G.expand(src, op.outs[0].shape)]


def _slice(op: Op) -> list[Geo | None]:
    x = op.a["self"]
    g = op.geo(x)
    if g is None:
        return [None]
    dim = op.a["dim"] % x.dim()
    step = op.a["step"]
    positions = range(x.shape[dim])[slice(op.a["start"], op.a["end"], step)]
    begin = positions.start if len(positions) else 0
    return [G.slice_dim(g, dim, begin, step, op.outs[0].shape[dim], x.shape[dim])]


def _select(op: Op) -> list[Geo | None]:
    x = op.a["self"]
    g = op.geo(x)
    if g is None:
        return [None]
    dim = op.a["dim"] % x.dim()
    g = G.slice_dim(g, dim, op.a["index"] % x.shape[dim], 1, 1, x.shape[dim])
    return [G.reshape(g, op.outs[0].shape) if g.known else g]


def _split(op: Op) -> list[Geo | None]:
    x = op.a["self"]
    g = op.geo(x)
    if g is None:
        return [None] * len(op.outs)
    dim = op.a["dim"] % x.dim()
    geos, begin = [], 0
    for t in op.outs:
        size = 1 if op.name == "unbind" else t.shape[dim]
        piece = G.slice_dim(g, dim, begin, 1, size, x.shape[dim])
        geos.append(G.reshape(piece, t.shape) if piece.known else piece)
        begin += size
    return geos


def _cat(op: Op) -> list[Geo | None]:
    tensors = [t for t in op.a["tensors"] if t.numel() > 0]
    dim = op.a["dim"]
    if op.name == "stack":  # stack = unsqueeze each input at dim, then cat
        inputs = []
        for t in tensors:
            d = dim % (t.dim() + 1)
            shape = (*t.shape[:d], 1, *t.shape[d:])
            g = op.geo(t)
            inputs.append((None if g is None else G.reshape(g, shape), shape))
    else:
        inputs = [(op.geo(t), tuple(t.shape)) for t in tensors]
    geo, warnings = G.cat(inputs, dim, tuple(op.outs[0].shape))
    op.cap.warn(op.row, warnings)
    return [geo]


def _pad(op: Op) -> list[Geo | None]:
    x = op.a["self"]
    g = op.geo(x)
    return [None if g is None else G.pad(g, x.shape, op.a.get("pad", op.a.get("padding")))]


def _constant(op: Op) -> list[Geo | None]:
    return [None] * len(op.outs)


def _untracked_move(op: Op) -> list[Geo | None]:
    return [_unknown_if_live(op)] * len(op.outs)


RULES: dict[str, Callable[[Op], list[Geo | None]]] = {
    **dict.fromkeys(("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                     "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
                     "_scaled_dot_product_fused_attention_overrideable"), _attention),
    "convolution": _convolution,
    **dict.fromkeys(("mm", "addmm", "bmm", "baddbmm", "_addmm_activation"), _matmul),
    **dict.fromkeys(("_native_batch_norm_legit_no_training", "native_batch_norm",
                     "_native_batch_norm_legit", "cudnn_batch_norm", "miopen_batch_norm"), _batch_norm),
    "native_layer_norm": _layer_norm,
    "native_group_norm": _group_norm,
    **dict.fromkeys(("max_pool2d_with_indices", "max_pool2d", "avg_pool2d"), _pool),
    **dict.fromkeys(("_adaptive_avg_pool2d", "adaptive_max_pool2d", "adaptive_avg_pool2d"), _adaptive_pool),
    **dict.fromkeys(("mean", "sum", "amax", "amin", "max", "min", "var", "std", "var_mean",
                     "logsumexp", "linalg_vector_norm", "norm"), _reduction),
    **dict.fromkeys(("_softmax", "_safe_softmax", "_log_softmax", "softmax", "log_softmax"), _softmax),
    **dict.fromkeys(("view", "_unsafe_view", "reshape", "_reshape_alias", "view_copy", "flatten",
                     "unflatten", "squeeze", "unsqueeze", "clone", "contiguous", "detach", "alias",
                     "_to_copy", "lift_fresh", "lift_fresh_copy"), _same_layout),
    "permute": _permute,
    **dict.fromkeys(("transpose", "t"), _transpose),
    **dict.fromkeys(("expand", "expand_copy"), _expand),
    "copy": _copy,
    "slice": _slice,
    "select": _select,
    **dict.fromkeys(("split", "split_with_sizes", "unbind"), _split),
    **dict.fromkeys(("cat", "stack"), _cat),
    **dict.fromkeys(("constant_pad_nd", "reflection_pad2d", "replication_pad2d"), _pad),
    **dict.fromkeys(("empty", "zeros", "ones", "full", "arange", "scalar_tensor", "new_zeros",
                     "new_ones", "new_empty", "new_full", "empty_like", "zeros_like", "ones_like",
                     "full_like", "empty_strided", "fill", "zero", "linspace", "eye"), _constant),
    "as_strided": _as_strided,
    **dict.fromkeys(("roll", "flip", "index", "index_select", "gather", "repeat",
                     "unfold", "pixel_shuffle", "pixel_unshuffle", "_unsafe_index"), _untracked_move),
}


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = list(v)
    return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])


def rule_for(func: Any, key: str) -> Callable[[Op], list[Geo | None]]:
    """The rule of ATen op ``func`` (``key``: its name without a trailing in-place ``_``)."""
    rule = RULES.get(key)
    if rule is None:
        rule = _pointwise if _is_pointwise(func, key) else _not_counted
    return rule
