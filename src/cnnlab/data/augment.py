"""Data augmentation as batched tensor ops on whatever device the batch lives on.

Every op takes a whole batch ``(N, C, H, W)`` and per-sample random parameters drawn from a
``torch.Generator`` on the batch's device, so one code path runs on GPU-resident data (no
DataLoader workers, no host round trips) and on the CPU, and a run is reproducible from its seed.

:class:`Augment` composes them in this order: translate + flip (one gather on uint8), conversion
to float, rotation, normalisation, cutout. Zero padding means black pixels (value 0 before
normalisation); cutout fills with 0 after normalisation, i.e. the data set's mean colour
(DeVries & Taylor 2017).

Default recipes (:data:`AUGMENT_RECIPES`), at native resolution (pixel amounts scale with rho):

- ``cifar10``: random horizontal flip, random translation by up to 4 px with reflect padding (the
  standard "pad 4 + random crop", reflect as in the fast CIFAR trainers).
- ``fashion-mnist``: random horizontal flip (garments and shoes are still the same class when
  mirrored), random translation by up to 2 px with zero padding (the background is black).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F

from cnnlab._numbers import check_number
from cnnlab.errors import UserError

PAD_MODES = ("reflect", "zero")


def hflip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror the samples where ``mask`` is True left-right.

    Args:
        x: ``(N, C, H, W)``, any dtype.
        mask: ``(N,)`` bool.
    """
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def _source_index(pos: torch.Tensor, size: int, pad_mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Map shifted positions to source pixels: ``(index clamped into range, inside-image mask)``."""
    if pad_mode == "reflect":  # mirror without repeating the edge pixel, as F.pad(mode="reflect")
        pos = torch.where(pos < 0, -pos, pos)
        pos = torch.where(pos > size - 1, 2 * (size - 1) - pos, pos)
        return pos, torch.ones_like(pos, dtype=torch.bool)
    inside = (pos >= 0) & (pos < size)
    return pos.clamp(0, size - 1), inside


def translate(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, *, pad_mode: str = "reflect",
              flip: torch.Tensor | None = None) -> torch.Tensor:
    """Shift each sample by whole pixels (pad + crop), optionally mirroring it, in one gather.

    ``out[n, :, i, j] = x[n, :, i + dy[n], j + dx[n]]`` with the padding rule outside the image;
    where ``flip[n]`` the result is then mirrored left-right. Equivalent to padding by
    ``max |shift|`` and cropping the original size at a random offset.

    Args:
        x: ``(N, C, H, W)``, any dtype (uint8 keeps the gather cheap).
        dx, dy: ``(N,)`` integer shifts, ``|shift| < W`` resp. ``H`` for reflect padding.
        pad_mode: "reflect" or "zero".
        flip: ``(N,)`` bool or None.

    Returns:
        ``(N, C, H, W)``, same dtype as ``x``.
    """
    if pad_mode not in PAD_MODES:
        raise UserError(f"pad_mode must be one of {PAD_MODES}, not {pad_mode!r}")
    n, c, h, w = x.shape
    rows, row_ok = _source_index(torch.arange(h, device=x.device) + dy[:, None], h, pad_mode)
    cols, col_ok = _source_index(torch.arange(w, device=x.device) + dx[:, None], w, pad_mode)
    if flip is not None:  # mirror the output: column j reads what column W-1-j would have read
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        col_ok = torch.where(flip[:, None], col_ok.flip(1), col_ok)
    index = (rows[:, :, None] * w + cols[:, None, :]).reshape(n, 1, h * w)  # (N, 1, H*W)
    out = x.reshape(n, c, h * w).gather(2, index.expand(n, c, h * w)).reshape(n, c, h, w)
    if pad_mode == "zero":
        ok = (row_ok[:, :, None] & col_ok[:, None, :])[:, None]  # (N, 1, H, W)
        out = out * ok.to(out.dtype)
    return out


def rotate(x: torch.Tensor, degrees: torch.Tensor, *, pad_mode: str = "zero") -> torch.Tensor:
    """Rotate each sample about its centre by ``degrees[n]`` (counter-clockwise), bilinearly.

    Args:
        x: ``(N, C, H, W)`` floating point.
        degrees: ``(N,)`` angles.
        pad_mode: "zero" fills uncovered corners with 0, "reflect" mirrors the image into them.

    Returns:
        ``(N, C, H, W)``, same dtype as ``x``.
    """
    n, _, h, w = x.shape
    a = torch.deg2rad(degrees.to(torch.float32))
    cos, sin = torch.cos(a), torch.sin(a)
    # affine_grid maps each output pixel to the input point it samples, in [-1, 1] coordinates
    # (x right, y down); rotating that point by +a in pixel units turns the image by a
    # counter-clockwise on screen, as torchvision's rotate does. The h/w factors keep the
    # rotation rigid for non-square images.
    zero = torch.zeros_like(a)
    theta = torch.stack([torch.stack([cos, -sin * h / w, zero], 1),
                         torch.stack([sin * w / h, cos, zero], 1)], 1)  # (N, 2, 3)
    grid = F.affine_grid(theta.to(x.dtype), [n, 1, h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", align_corners=False,
                         padding_mode="reflection" if pad_mode == "reflect" else "zeros")


def cutout(x: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square centred at ``(cy[n], cx[n])``, clipped at the borders.

    Args:
        x: ``(N, C, H, W)``.
        cy, cx: ``(N,)`` integer centres (anywhere in the image, so squares may be partly outside).
        size: the square's side in pixels.
    """
    _, _, h, w = x.shape
    top, left = cy - size // 2, cx - size // 2
    r = torch.arange(h, device=x.device)
    c = torch.arange(w, device=x.device)
    in_r = (r >= top[:, None]) & (r < top[:, None] + size)  # (N, H)
    in_c = (c >= left[:, None]) & (c < left[:, None] + size)  # (N, W)
    return x.masked_fill((in_r[:, :, None] & in_c[:, None, :])[:, None], 0)


@functools.lru_cache(maxsize=32)
def _affine(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
            ) -> tuple[torch.Tensor, torch.Tensor]:
    # Made once per (statistics, device): building them every batch would copy from the host,
    # and a blocking host-to-GPU copy waits for the GPU to finish all queued work.
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (1.0 / (255.0 * std_t)).to(device), (-mean_t / std_t).to(device)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x / 255 - mean) / std`` per channel, as float32.

    Args:
        x: ``(N, C, H, W)`` uint8 (or float in the 0..255 range).
        mean, std: per-channel statistics in [0, 1] units.
    """
    scale, shift = _affine(tuple(float(m) for m in mean), tuple(float(s) for s in std), x.device)
    return torch.addcmul(shift, x.float(), scale)  # one multiply-add per pixel


@dataclass(frozen=True)
class Augment:
    """An augmentation recipe: what to apply to a training batch, with amounts in pixels/degrees.

    Attributes:
        flip: random horizontal flip with probability 1/2.
        translate: maximum shift in pixels along each axis (0 = off); uniform in [-t, t].
        pad_mode: what the shift and rotation reveal: "reflect" or "zero" (black).
        rotate: maximum rotation in degrees (0 = off); uniform in [-r, r].
        cutout: side in pixels of the square zeroed at a uniform random centre (0 = off).
    """

    flip: bool = False
    translate: int = 0
    pad_mode: str = "reflect"
    rotate: float = 0.0
    cutout: int = 0

    def __post_init__(self) -> None:
        if self.pad_mode not in PAD_MODES:
            raise UserError(f"pad mode must be one of {PAD_MODES}, not {self.pad_mode!r}")
        check_number(self.translate, "augmentation translate", low=0, integer=True)
        check_number(self.rotate, "augmentation rotate", low=0, high=180)
        check_number(self.cutout, "augmentation cutout", low=0, integer=True)

    def check_fits(self, size: tuple[int, int]) -> Augment:
        """Raise UserError unless the pixel amounts make sense for images of ``size`` (H, W):
        a shift or a cutout as large as the image would blank it."""
        h, w = size
        why = f"(the images are {h}x{w} pixels)"
        check_number(self.translate, "augmentation translate", low=0, high=min(h, w) - 1,
                     integer=True, why=why)
        check_number(self.cutout, "augmentation cutout", low=0, high=min(h, w), integer=True,
                     why=why)
        return self

    @classmethod
    def parse(cls, spec: str, dataset: str | None = None) -> Augment:
        """Build a recipe from ``"default"``, ``"none"`` or ``"flip,translate=4,pad=zero,..."``.

        ``"default"`` is the data set's recipe; further comma-separated ``key=value`` items
        override it (``"default,cutout=8"``). Keys: flip (0/1), translate, pad, rotate, cutout.
        """
        items = [s.strip() for s in spec.split(",") if s.strip()]
        aug = cls()
        if items and items[0] in ("default", "none"):
            if items.pop(0) == "default":
                if dataset not in AUGMENT_RECIPES:
                    raise UserError(f"no default augmentation for dataset {dataset!r}")
                aug = AUGMENT_RECIPES[dataset]
        names = {f.name for f in fields(cls)} | {"pad"}
        changes: dict = {}
        for item in items:
            key, _, value = item.partition("=")
            key = "pad_mode" if key == "pad" else key
            if key not in names:
                raise UserError(f"unknown augmentation {key!r} in {spec!r}; use default, none, "
                                "flip, translate=PX, pad=reflect|zero, rotate=DEG, cutout=PX")
            try:
                if key == "flip":
                    changes[key] = value in ("", "1", "true", "yes")
                elif key == "pad_mode":
                    changes[key] = value
                else:
                    changes[key] = (float if key == "rotate" else int)(value)
            except ValueError:
                raise UserError(f"augmentation {key}={value!r} is not a number") from None
        return replace(aug, **changes)

    def describe(self) -> str:
        """The canonical ``parse``-able spec of this recipe."""
        return (f"flip={int(self.flip)},translate={self.translate},pad={self.pad_mode},"
                f"rotate={self.rotate:g},cutout={self.cutout}")

    def scaled(self, resolution: float) -> Augment:
        """The recipe for images resized by ``resolution`` (pixel amounts scale, angles do not)."""
        return replace(self, translate=int(round(self.translate * resolution)),
                       cutout=int(round(self.cutout * resolution)))

    def __call__(self, x: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment and normalise a batch.

        Args:
            x: ``(N, C, H, W)`` uint8 on any device.
            mean, std: per-channel normalisation in [0, 1] units.
            generator: a generator on ``x``'s device; the same generator state gives the same batch.

        Returns:
            ``(N, C, H, W)`` float32, normalised.
        """
        n, _, h, w = x.shape
        kw = {"generator": generator, "device": x.device}
        flip = torch.rand(n, **kw) < 0.5 if self.flip else None
        if self.translate:
            t = self.translate
            if self.pad_mode == "reflect" and t >= min(h, w):
                raise UserError(f"reflect translation by {t} px needs images larger than {t} px")
            dx = torch.randint(-t, t + 1, (n,), **kw)
            dy = torch.randint(-t, t + 1, (n,), **kw)
            x = translate(x, dx, dy, pad_mode=self.pad_mode, flip=flip)
        elif flip is not None:
            x = hflip(x, flip)
        if self.rotate:
            angles = (torch.rand(n, **kw) * 2 - 1) * self.rotate
            x = rotate(x.float(), angles, pad_mode=self.pad_mode)
        x = normalize(x, mean, std)
        if self.cutout:
            cy = torch.randint(0, h, (n,), **kw)
            cx = torch.randint(0, w, (n,), **kw)
            x = cutout(x, cy, cx, self.cutout)
        return x


AUGMENT_RECIPES: dict[str, Augment] = {
    "cifar10": Augment(flip=True, translate=4, pad_mode="reflect"),
    "fashion-mnist": Augment(flip=True, translate=2, pad_mode="zero"),
}
"""Per-dataset default recipes (see the module docstring for why)."""
