"""Receptive-field geometry of one tensor, and how each kind of operation changes it.

Every activation tensor carries a :class:`Geo`: per spatial axis (``h``, ``w``) the receptive
field ``rf`` (in input pixels), the jump ``j`` (input pixels between neighbouring units, the
"effective stride") and the start ``s`` (input coordinate of the centre of unit 0; pixel centres
are 0, 1, 2, ...). A sliding window with effective kernel ``k_eff = d*(k-1)+1``, stride ``st``
and left padding ``p`` gives (Araujo et al., Distill 2019; Dumoulin & Visin 2016)::

    rf_out = rf_in + (k_eff - 1) * j_in
    j_out  = j_in * st
    s_out  = s_in + ((k_eff - 1) / 2 - p) * j_in

To follow reshapes, permutes and flattening, ``dims`` records which spatial axis each tensor
dimension holds: one tuple of *atoms* ``(tag, size)`` per dimension, ``tag`` being ``"h"``,
``"w"`` or ``None`` (batch, channels, features). ``(N, C, H, W)`` is
``(((None, N),), ((None, C),), (("h", H),), (("w", W),))``; flattening to ``(N, C*H*W)`` keeps
all three atoms in one dimension, so a later matrix multiply knows it mixes every position.
Atoms of size 1 are dropped (a dimension of size 1 is ``()``).

A tensor that does not depend on the input image (a weight, a constant) has no Geo (``None``);
:data:`UNKNOWN` marks a tensor whose geometry could not be followed (the caller warns).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace

AXES = ("h", "w")
Atom = tuple[str | None, int]
Dims = tuple[tuple[Atom, ...], ...]


@dataclass(frozen=True)
class Geo:
    """Receptive field ``rf``, jump and start per axis ``(h, w)``, and the axis layout ``dims``."""

    rf: tuple[float, float] | None
    jump: tuple[float, float] | None
    start: tuple[float, float] | None
    dims: Dims = ()

    @property
    def known(self) -> bool:
        return self.rf is not None


UNKNOWN = Geo(None, None, None, ())


def plain(size: int) -> tuple[Atom, ...]:
    """Atoms of a non-spatial dimension of ``size`` (batch, channels, features)."""
    return ((None, size),) if size > 1 else ()


def input_geo(shape: Sequence[int]) -> Geo | None:
    """Geometry of the network input ``(N, C, H, W)``; ``None`` (no receptive field) otherwise."""
    if len(shape) != 4:
        return None
    n, c, h, w = shape
    dims = (plain(n), plain(c), (("h", h),) if h > 1 else (), (("w", w),) if w > 1 else ())
    return Geo((1, 1), (1, 1), (0, 0), dims)


def axis_size(geo: Geo, axis: str) -> int:
    """Number of positions the tensor has along spatial ``axis`` (1 when the axis is gone)."""
    return next((s for d in geo.dims for t, s in d if t == axis), 1)


def _has(geo: Geo, axis: str) -> bool:
    return any(t == axis for d in geo.dims for t, _ in d)


def _coalesce(atoms: Sequence[Atom]) -> tuple[Atom, ...]:
    """Merge neighbouring non-spatial atoms and drop size-1 atoms."""
    out: list[Atom] = []
    for tag, size in atoms:
        if size == 1:
            continue
        if tag is None and out and out[-1][0] is None:
            out[-1] = (None, out[-1][1] * size)
        else:
            out.append((tag, size))
    return tuple(out)


def _set_axis(geo: Geo, a: int, rf: float, jump: float, start: float) -> Geo:
    def put(t: tuple[float, float] | None, v: float) -> tuple[float, float]:
        lst = list(t or (0, 0))
        lst[a] = v
        return (lst[0], lst[1])

    return replace(geo, rf=put(geo.rf, rf), jump=put(geo.jump, jump), start=put(geo.start, start))


# --------------------------------------------------------------------------------- sliding windows


def window_layout(geo: Geo) -> bool:
    """True when the last two dims are (h, w) and the leading ones hold no spatial axis."""
    if not geo.known or len(geo.dims) < 3:
        return False
    for pos, axis in ((-2, "h"), (-1, "w")):
        d = geo.dims[pos]
        if d == ():
            if _has(geo, axis):  # the axis lives elsewhere: a permuted layout
                return False
        elif d != ((axis, d[0][1]),):
            return False
    return all(t is None for d in geo.dims[:-2] for t, _ in d)


def sliding(
    geo: Geo,
    out_shape: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    pad_left: Sequence[int],
    dilation: Sequence[int] = (1, 1),
) -> Geo:
    """A 2-D sliding window (convolution, pooling, locally connected) over the last two dims.

    Args:
        geo: geometry of the input ``(N, C, H, W)``.
        out_shape: the output shape ``(N, C', H', W')``.
        kernel, stride, pad_left, dilation: per axis ``(h, w)``; ``pad_left`` is the padding
            before the first row/column (top/left), which alone moves the start.
    """
    if not window_layout(geo):
        return UNKNOWN
    new = geo
    for a in range(2):
        k_eff = dilation[a] * (kernel[a] - 1) + 1
        j = geo.jump[a]
        new = _set_axis(
            new, a,
            rf=geo.rf[a] + (k_eff - 1) * j,
            jump=j * stride[a],
            start=geo.start[a] + ((k_eff - 1) / 2 - pad_left[a]) * j,
        )
    return _respatial(new, out_shape)


def _respatial(geo: Geo, out_shape: Sequence[int]) -> Geo:
    """Same layout as a window op: plain leading dims, then h and w of the new sizes."""
    h, w = out_shape[-2], out_shape[-1]
    dims = tuple(plain(s) for s in out_shape[:-2]) + (
        (("h", h),) if h > 1 else (),
        (("w", w),) if w > 1 else (),
    )
    return replace(geo, dims=dims)


def pad(geo: Geo, in_shape: Sequence[int], pads: Sequence[int]) -> Geo:
    """``F.pad``-style padding ``(left_last, right_last, left_2nd_last, ...)``; negative crops."""
    if not geo.known:
        return UNKNOWN
    dims = list(geo.dims)
    new = geo
    for i in range(len(pads) // 2):
        pos = len(in_shape) - 1 - i
        left, right = pads[2 * i], pads[2 * i + 1]
        size = in_shape[pos] + left + right
        tags = [t for t, _ in dims[pos] if t is not None]
        if not tags:
            dims[pos] = plain(size)
            continue
        if len(dims[pos]) != 1 and (left or right):
            return UNKNOWN  # padding a dimension that merges a spatial axis with others
        (tag,) = tags
        a = AXES.index(tag)
        new = _set_axis(new, a, new.rf[a], new.jump[a], new.start[a] - left * new.jump[a])
        dims[pos] = ((tag, size),) if size > 1 else ()
    return replace(new, dims=tuple(dims))


def mix(geo: Geo, axes: Sequence[str], *, keep_dims: bool = False) -> Geo:
    """Every output unit sees all positions along ``axes`` (global pooling, flatten + dense,
    statistics of layer/group normalisation).

    Equivalent to a valid window as large as the input along each axis, so
    ``rf += (n - 1) * j`` and the start moves to the centre of the ``n`` positions. The axes'
    atoms are removed (the caller places the output dims) unless ``keep_dims`` (the output has
    the input's shape, as in normalisation).
    """
    if not geo.known:
        return UNKNOWN
    new = geo
    for axis in axes:
        a = AXES.index(axis)
        n = axis_size(geo, axis)
        j = geo.jump[a]
        new = _set_axis(new, a, geo.rf[a] + (n - 1) * j, j, geo.start[a] + (n - 1) / 2 * j)
    if keep_dims:
        return new
    dims = tuple(tuple(x for x in d if x[0] not in axes) for d in new.dims)
    return replace(new, dims=dims)


def spatial_tags(atoms: Sequence[Atom]) -> list[str]:
    return [t for t, _ in atoms if t is not None]


def reduce_dims(geo: Geo, dims: Sequence[int], keepdim: bool, out_ndim: int) -> Geo:
    """A reduction (mean/sum/max/norm statistics) over tensor dims ``dims``."""
    if not geo.known:
        return UNKNOWN
    nd = len(geo.dims)
    red = sorted({d % nd for d in dims})
    new = mix(geo, [t for d in red for t in spatial_tags(geo.dims[d])])
    kept = [() if i in red else new.dims[i] for i in range(nd)]
    if not keepdim:
        kept = [d for i, d in enumerate(kept) if i not in red]
    if len(kept) != out_ndim:
        return UNKNOWN
    return replace(new, dims=tuple(kept))


# --------------------------------------------------------------------------------- merging paths


def merge(geos: Sequence[Geo | None], dims: Dims) -> tuple[Geo | None, list[str]]:
    """Geometry of an output computed from several inputs (add, concatenate, multiply).

    Per axis, inputs that still have several positions along it are *aligned* inputs: with
    equal jumps the receptive field is the hull of their fields (the maximum when the centres
    agree); differing jumps or centres give a warning. Inputs broadcast along the axis (a
    squeeze-excitation scale of size 1) contribute their full field without alignment checks.

    Returns:
        ``(geo, warnings)``; ``geo`` is ``None`` when every input is a constant.
    """
    live = [g for g in geos if g is not None]
    if not live:
        return None, []
    if any(not g.known for g in live):
        return UNKNOWN, []
    warnings: list[str] = []
    rf, jump, start = [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]
    for a, axis in enumerate(AXES):
        aligned = [g for g in live if _has(g, axis)] or live[:1]
        jumps = {g.jump[a] for g in aligned}
        starts = {g.start[a] for g in aligned}
        if len(jumps) == 1:
            left = min(g.start[a] - (g.rf[a] - 1) / 2 for g in aligned)
            right = max(g.start[a] + (g.rf[a] - 1) / 2 for g in aligned)
            rf[a], jump[a], start[a] = right - left + 1, aligned[0].jump[a], (left + right) / 2
            if len(starts) > 1:
                warnings.append(
                    f"paths are misaligned along {axis}: centres {_fmt_set(starts)} differ, "
                    f"so the receptive field is the hull of the paths' fields ({as_number(rf[a])})"
                )
        else:
            best = max(aligned, key=lambda g: g.rf[a])
            rf[a], jump[a], start[a] = best.rf[a], best.jump[a], best.start[a]
            warnings.append(
                f"paths are misaligned along {axis}: jumps {_fmt_set(jumps)} differ, so units "
                f"do not line up; the receptive field shown is the largest path's"
            )
        rf[a] = max([rf[a]] + [g.rf[a] for g in live])
    return Geo((rf[0], rf[1]), (jump[0], jump[1]), (start[0], start[1]), dims), warnings


def as_number(x: float) -> int | float:
    """An int when the value is integral (receptive fields, jumps), else the float (starts)."""
    return int(x) if float(x).is_integer() else x


def _fmt_set(values: set[float]) -> str:
    return ", ".join(str(as_number(v)) for v in sorted(values))


def broadcast_dims(inputs: Sequence[tuple[Geo | None, Sequence[int]]], out_shape: Sequence[int]) -> Dims:
    """Dims of an elementwise result: per output dim, the atoms of an input that is not broadcast
    along it (preferring one holding a spatial axis); inputs are right-aligned as in NumPy."""
    n = len(out_shape)
    dims: list[tuple[Atom, ...]] = []
    for i, size in enumerate(out_shape):
        choice: tuple[Atom, ...] | None = None
        for geo, shape in inputs:
            k = i - (n - len(shape))
            if geo is None or not geo.known or k < 0 or shape[k] != size:
                continue
            atoms = geo.dims[k]
            if choice is None or (spatial_tags(atoms) and not spatial_tags(choice)):
                choice = atoms
        dims.append(choice if choice is not None else plain(size))
    return tuple(dims)


# --------------------------------------------------------------------------------- layout changes


def reshape(geo: Geo, out_shape: Sequence[int]) -> Geo:
    """``view``/``reshape``/``flatten``: regroup atoms into the new dims.

    Non-spatial atoms may be split (channel shuffle splits C into groups); a spatial axis that
    would be split (patchifying H) makes the geometry unknown.
    """
    if not geo.known:
        return UNKNOWN
    queue = deque(a for d in geo.dims for a in d)
    dims = []
    for size in out_shape:
        got: list[Atom] = []
        need = size
        while need > 1:
            if not queue:
                return UNKNOWN
            tag, s = queue[0]
            if need % s == 0:
                got.append(queue.popleft())
                need //= s
            elif tag is None and s % need == 0:
                got.append((None, need))
                queue[0] = (None, s // need)
                need = 1
            else:
                return UNKNOWN
        dims.append(_coalesce(got))
    if queue:
        return UNKNOWN
    return replace(geo, dims=tuple(dims))


def permute(geo: Geo, order: Sequence[int]) -> Geo:
    if not geo.known:
        return UNKNOWN
    nd = len(geo.dims)
    return replace(geo, dims=tuple(geo.dims[o % nd] for o in order))


def transpose(geo: Geo, d0: int, d1: int) -> Geo:
    if not geo.known:
        return UNKNOWN
    nd = len(geo.dims)
    order = list(range(nd))
    order[d0 % nd], order[d1 % nd] = order[d1 % nd], order[d0 % nd]
    return permute(geo, order)


def expand(geo: Geo, out_shape: Sequence[int]) -> Geo:
    """Broadcast to ``out_shape``: new leading dims and size-1 dims become plain copies."""
    if not geo.known:
        return UNKNOWN
    lead = len(out_shape) - len(geo.dims)
    dims = [plain(s) for s in out_shape[:lead]]
    for d, s in zip(geo.dims, out_shape[lead:]):
        dims.append(d if d or s == 1 else plain(s))
    return replace(geo, dims=tuple(dims))


def slice_dim(geo: Geo, dim: int, begin: int, step: int, out_size: int, in_size: int) -> Geo:
    """``x[..., begin::step, ...]`` with ``out_size`` elements along ``dim``."""
    if not geo.known:
        return UNKNOWN
    dims = list(geo.dims)
    atoms = dims[dim]
    tags = spatial_tags(atoms)
    if not tags:
        dims[dim] = plain(out_size)
        return replace(geo, dims=tuple(dims))
    if out_size == in_size and step == 1:
        return geo
    if len(atoms) != 1:
        return UNKNOWN  # cropping a dimension that merges a spatial axis with others
    a = AXES.index(tags[0])
    new = _set_axis(geo, a, geo.rf[a], geo.jump[a] * step, geo.start[a] + begin * geo.jump[a])
    dims[dim] = ((tags[0], out_size),) if out_size > 1 else ()
    return replace(new, dims=tuple(dims))


def cat(inputs: Sequence[tuple[Geo | None, Sequence[int]]], dim: int, out_shape: Sequence[int]
        ) -> tuple[Geo | None, list[str]]:
    """Concatenate along ``dim`` (channels in CNNs); along a spatial axis it is not followed."""
    nd = len(out_shape)
    dim %= nd
    for geo, _ in inputs:
        if geo is not None and geo.known and spatial_tags(geo.dims[dim]):
            return UNKNOWN, []
    dims = list(broadcast_dims(inputs, out_shape))
    dims[dim] = plain(out_shape[dim])
    return merge([g for g, _ in inputs], tuple(dims))


def window_visits(in_size: int, out_size: int, kernel: int, stride: int, pad_left: int,
                  dilation: int = 1) -> int:
    """Along one axis, how many (output position, kernel tap) pairs fall inside the input.

    A pooling layer reads exactly ``C * visits_h * visits_w`` input elements (taps that fall on
    padding read nothing), so this is the exact count of comparisons/additions it performs.
    """
    total = 0
    for o in range(out_size):
        base = o * stride - pad_left
        total += sum(1 for t in range(kernel) if 0 <= base + t * dilation < in_size)
    return total


def adaptive_windows(in_size: int, out_size: int) -> tuple[int, int, float]:
    """Adaptive pooling along one axis: ``(visits, largest window, stride in/out)``.

    Window ``i`` covers ``[floor(i*in/out), ceil((i+1)*in/out))`` as in PyTorch; windows are
    uniform (an ordinary pooling) exactly when ``out`` divides ``in``.
    """
    bounds = [(i * in_size // out_size, -(-(i + 1) * in_size // out_size)) for i in range(out_size)]
    visits = sum(e - b for b, e in bounds)
    kmax = max(e - b for b, e in bounds)
    return visits, kmax, in_size / out_size


def same_padding(in_size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int, int]:
    """TensorFlow/Keras ``padding="same"``: ``(out, pad_left, pad_right)``, extra on the right."""
    k_eff = dilation * (kernel - 1) + 1
    out = math.ceil(in_size / stride)
    total = max((out - 1) * stride + k_eff - in_size, 0)
    return out, total // 2, total - total // 2
