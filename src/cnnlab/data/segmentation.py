"""Binary segmentation data sets: Weizmann horses and ISBI 2012 membranes, decoded once, cached.

======== ================================== ======= ============== =============================
name     source                             images  size           foreground (mask = 1)
======== ================================== ======= ============== =============================
horse    ``weizmann-horse.tar.gz``:         328     varies,        the horse (``figure_ground``
         ``weizmann_horse_db/{gray,                 ~150-600 px    >= 128; JPEG masks)
         figure_ground}/horseNNN.jpg``
isbi2012 ``isbi2012-membrane.tar.gz``:      30      512 x 512      the membrane (label 0; 255
         ``isbi2012-membrane/{image,                               is cell interior), ~22%
         label}/N.png``
======== ================================== ======= ============== =============================

Both are grayscale (one channel). Where they are looked for: ``data_dir`` (a folder or the
archive), else ``$CNNLAB_DATA``, ``./data``, ``../shared/data`` beside the checkout; in a folder
as the archive, as the unpacked top folder, or as the two sub-folders themselves.

Masks are binarised at 128 (``mask >= 128`` for horses, ``label < 128`` for membranes). A mask
whose pixels are not close to black or white is refused rather than thresholded blindly: more
than :data:`MAX_GREY_FRACTION` of its pixels in the grey band 64..191 means it is not a binary
mask (the real masks have none there, measured). An image and its mask must have the same size.

Decoded arrays are cached in ``cache_dir`` (as :func:`cnnlab.data.load_dataset` does, keyed on a
SHA-256 of the source and checked against a checksum of the arrays). Images keep their native
sizes in the cache; :func:`segmentation_splits` makes the tensors one run uses:

* **splits** (seeded, recorded): horses -- a random ``test_fraction`` of the images for test
  (``split_seed``), then ``val`` images for validation from the rest; membranes -- contiguous
  slices (neighbouring slices are nearly identical), the last ``test_fraction`` of the stack
  for test (24 train / 6 test at 0.2), validation taken just before them.
* **resizing** to one ``size`` ``(H, W)`` (both divisible by 32 for ``unet_mobilenet_v2``):
  images with antialiased bilinear interpolation (uint8), masks the same way in float and then
  thresholded at 0.5, so they stay binary. Horses are resized without keeping the aspect ratio.

:func:`augment_pair` augments an image batch and its masks with the *same* random transform:
horizontal flips for horses (the course's ``RandomFlip("horizontal")``), the eight flips and
90-degree rotations of the square for membranes (a slice has no preferred orientation).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab._io import atomic_write, output_dir
from cnnlab.data import _images
from cnnlab.data.augment import hflip
from cnnlab.data.datasets import read_npz_cache
from cnnlab.errors import DataError, DataNotFoundError, UserError

MAX_GREY_FRACTION = 0.05  # of a mask's pixels in 64..191: more and it is not a binary mask
_CACHE_FORMAT = 1


@dataclass(frozen=True)
class _SegSpec:
    archive: str
    top: str  # the folder the archive unpacks to
    image_dir: str  # relative to the folder holding both sub-folders
    mask_dir: str
    foreground_below: bool  # True: foreground is mask < 128 (membranes); else mask >= 128
    foreground: str
    augment: str  # "hflip" or "dihedral"
    contiguous: bool  # split by position (slices of a stack) rather than at random


_SPECS: dict[str, _SegSpec] = {
    "horse": _SegSpec("weizmann-horse.tar.gz", "weizmann-horse", "weizmann_horse_db/gray",
                      "weizmann_horse_db/figure_ground", False, "horse", "hflip", False),
    "isbi2012": _SegSpec("isbi2012-membrane.tar.gz", "isbi2012-membrane", "image", "label",
                         True, "membrane", "dihedral", True),
}
SEGMENTATION_DATASETS: tuple[str, ...] = tuple(_SPECS)  # = datasets.SEGMENTATION_DATASETS


@dataclass(frozen=True, eq=False)
class SegmentationDataset:
    """Images and binary masks at their native sizes, in memory.

    Attributes:
        name: ``"horse"`` or ``"isbi2012"``.
        images: per image ``(H, W, C)`` uint8.
        masks: per image ``(H, W)`` uint8 in {0, 1} (1 = ``foreground``).
        names: file stems, e.g. ``"horse001"``, ``"17"``.
        foreground: what mask value 1 is.
        source: the archive or folder decoded.
    """

    name: str
    images: tuple[np.ndarray, ...]
    masks: tuple[np.ndarray, ...]
    names: tuple[str, ...]
    foreground: str
    source: str

    @property
    def in_chans(self) -> int:
        return int(self.images[0].shape[2])

    def __len__(self) -> int:
        return len(self.images)

    @property
    def augment(self) -> str:
        return _SPECS[self.name].augment

    def foreground_fraction(self) -> float:
        return float(sum(m.sum() for m in self.masks) / sum(m.size for m in self.masks))


# ------------------------------------------------------------------------------------ finding

def _search_dirs(data_dir: str | Path | None) -> list[Path]:
    from cnnlab.data.datasets import _REPO

    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    dirs = [Path(os.environ["CNNLAB_DATA"])] if os.environ.get("CNNLAB_DATA") else []
    return dirs + [Path.cwd() / "data", _REPO.parent / "shared" / "data"]


def _find(spec: _SegSpec, folder: Path) -> Path | None:
    if folder.is_file():
        return folder
    for cand in (folder / spec.archive, folder / spec.top, folder):
        if cand.is_file():
            return cand
        if (cand / spec.image_dir).is_dir() and (cand / spec.mask_dir).is_dir():
            return cand
    return None


def find_segmentation_source(name: str, data_dir: str | Path | None = None) -> Path:
    """The archive or folder ``load_segmentation(name)`` reads.

    Raises:
        DataNotFoundError: naming every place looked in.
    """
    spec = _spec(name)
    dirs = _search_dirs(data_dir)
    for folder in dirs:
        if folder.exists():
            found = _find(spec, folder)
            if found is not None:
                return found
    raise DataNotFoundError(f"{name} not found (looked in: {', '.join(map(str, dirs))}); put "
                            f"{spec.archive} there or point --data-dir at it")


def _spec(name: str) -> _SegSpec:
    if name not in _SPECS:
        raise UserError(f"unknown segmentation dataset {name!r}; choose one of "
                        f"{list(SEGMENTATION_DATASETS)}")
    return _SPECS[name]


# ------------------------------------------------------------------------------------ reading

def _files(source: Path, spec: _SegSpec) -> dict[tuple[str, str], tuple[str, bytes]]:
    """``{(kind, stem): (where, bytes)}`` for kind "image"/"mask"."""
    if source.is_file():
        items = _images._iter_tar_files(source)
    else:
        items = ((p.relative_to(source).parts, p.read_bytes())
                 for sub in (spec.image_dir, spec.mask_dir)
                 for p in sorted((source / sub).iterdir()) if p.is_file())
    out = {}
    for parts, data in items:
        if any(p.startswith(".") for p in parts) or \
                not parts[-1].lower().endswith(_images.IMAGE_SUFFIXES):
            continue
        folder = "/".join(parts[:-1])
        for kind, sub in (("image", spec.image_dir), ("mask", spec.mask_dir)):
            if folder == sub or folder.endswith("/" + sub):
                out[(kind, Path(parts[-1]).stem)] = ("/".join(parts), data)
    return out


def _natural(stem: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", stem)]


def binarize_mask(mask: np.ndarray, where: str, *, foreground_below: bool = False) -> np.ndarray:
    """``(H, W)`` uint8 -> {0, 1}: thresholded at 128, refused when it is not a binary mask.

    Raises:
        DataError: more than :data:`MAX_GREY_FRACTION` of the pixels in the grey band 64..191.
    """
    grey = float(((mask >= 64) & (mask < 192)).mean()) if mask.size else 0.0
    if grey > MAX_GREY_FRACTION:
        raise DataError(f"{where} is not a binary mask: {grey:.0%} of its pixels are grey "
                        f"(64..191), at most {MAX_GREY_FRACTION:.0%} allowed; give black/white "
                        "masks")
    fg = mask < 128 if foreground_below else mask >= 128
    return fg.astype(np.uint8)


def _read(name: str, source: Path) -> SegmentationDataset:
    spec = _spec(name)
    files = _files(source, spec)
    stems = {k for _, k in files}
    lone = sorted(s for s in stems if ("image", s) not in files or ("mask", s) not in files)
    if lone:
        kind = "mask" if ("image", lone[0]) in files else "image"
        raise DataError(f"{source}: {lone[0]} has no {kind} ({len(lone)} unpaired file(s)); "
                        f"every image in {spec.image_dir}/ needs a mask of the same name in "
                        f"{spec.mask_dir}/")
    if not stems:
        raise DataError(f"{source}: no images found in {spec.image_dir}/ and {spec.mask_dir}/")
    images, masks, names = [], [], []
    for stem in sorted(stems, key=_natural):
        where_i, data_i = files[("image", stem)]
        where_m, data_m = files[("mask", stem)]
        img, _ = _images.read_image(data_i, where_i, 1, source=str(source))
        raw, _ = _images.read_image(data_m, where_m, 1, source=str(source))
        if img.shape[:2] != raw.shape[:2]:
            raise DataError(f"{source}: image {where_i} is {img.shape[1]}x{img.shape[0]} pixels "
                            f"but its mask {where_m} is {raw.shape[1]}x{raw.shape[0]}; they "
                            "must have the same size")
        masks.append(binarize_mask(raw[..., 0], f"{source}: {where_m}",
                                   foreground_below=spec.foreground_below))
        images.append(img)
        names.append(stem)
    return SegmentationDataset(name, tuple(images), tuple(masks), tuple(names),
                               spec.foreground, str(source))


# ------------------------------------------------------------------------------------ caching

def _pack(ds: SegmentationDataset) -> dict[str, np.ndarray]:
    return {"images": np.concatenate([a.reshape(-1) for a in ds.images]),
            "masks": np.concatenate([m.reshape(-1) for m in ds.masks]),
            "shapes": np.array([a.shape for a in ds.images], dtype=np.int64)}


def _digest(arrays: dict[str, np.ndarray], names: list[str]) -> str:
    h = hashlib.sha256(json.dumps(names).encode())
    for k in ("images", "masks", "shapes"):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _unpack(name: str, arrays: dict[str, np.ndarray], names: list[str],
            source: Path) -> SegmentationDataset:
    images, masks, at = [], [], 0
    for h, w, c in arrays["shapes"]:
        n = int(h * w)
        images.append(arrays["images"][at * c:(at + n) * c].reshape(h, w, c))
        masks.append(arrays["masks"][at:at + n].reshape(h, w))
        at += n
    spec = _spec(name)
    return SegmentationDataset(name, tuple(images), tuple(masks), tuple(names), spec.foreground,
                               str(source))


def _cache_problem(arrays: dict[str, np.ndarray], name: str, digest: str) -> str | None:
    meta = json.loads(str(arrays["meta"]))
    if meta.get("format") != _CACHE_FORMAT or meta.get("name") != name \
            or meta.get("source_sha256") != digest:
        return "written for other source files or another cache format"
    if meta.get("arrays_sha256") != _digest(arrays, meta["names"]):
        return "its arrays do not match their checksum (edited or damaged)"
    if arrays["images"].dtype != np.uint8 or arrays["masks"].dtype != np.uint8 \
            or int(arrays["masks"].max(initial=0)) > 1:
        return "its arrays have unexpected types or mask values"
    return None


def _read_cache(path: Path, name: str, digest: str, source: Path) -> SegmentationDataset | None:
    arrays = read_npz_cache(path, source, lambda a: _cache_problem(a, name, digest))
    if arrays is None:
        return None
    return _unpack(name, arrays, json.loads(str(arrays["meta"]))["names"], source)


def load_segmentation(name: str, *, data_dir: str | Path | None = None,
                      cache_dir: str | Path | None = None,
                      use_cache: bool = True) -> SegmentationDataset:
    """Load a segmentation data set by name, decoding it once and caching the arrays.

    Raises:
        DataNotFoundError: not found (the message lists where it looked).
        DataError: unreadable files, an image without mask, sizes that differ, a mask that is
            not binary.
    """
    from cnnlab.data.datasets import _source_digest, default_cache_dir

    source = find_segmentation_source(name, data_dir)
    if not use_cache:
        return _read(name, source)
    folder = output_dir(cache_dir or default_cache_dir(), "--cache-dir")
    digest = _source_digest(name, source)
    path = folder / f"{name}-{digest[:16]}.npz"
    cached = _read_cache(path, name, digest, source)
    if cached is not None:
        return cached
    ds = _read(name, source)
    arrays = _pack(ds)
    meta = {"format": _CACHE_FORMAT, "name": name, "source_sha256": digest,
            "names": list(ds.names), "arrays_sha256": _digest(arrays, list(ds.names))}
    atomic_write(path, lambda f: np.savez(f, meta=np.array(json.dumps(meta)), **arrays))
    return ds


# ------------------------------------------------------------------------ splits and resizing

@dataclass
class SegmentationSplits:
    """The tensors of one run, on its device.

    Attributes:
        train_images, val_images, test_images: ``(N, C, H, W)`` uint8.
        train_masks, val_masks, test_masks: ``(N, 1, H, W)`` uint8 in {0, 1}.
        names: the image names of each split (``{"train": [...], "val": [...], "test": [...]}``).
        mean, std: per-channel statistics of the training images (after resizing), [0, 1] units.
        image_size: ``(H, W)``.
        split: how the split was made (recorded in results).
    """

    train_images: torch.Tensor
    train_masks: torch.Tensor
    val_images: torch.Tensor
    val_masks: torch.Tensor
    test_images: torch.Tensor
    test_masks: torch.Tensor
    names: dict[str, list[str]]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: tuple[int, int]
    split: dict

    @property
    def in_chans(self) -> int:
        return int(self.train_images.shape[1])


def resize_pair(image: np.ndarray, mask: np.ndarray, size: tuple[int, int]
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``(H, W, C)`` image and its ``(H, W)`` {0, 1} mask -> ``(C, h, w)`` uint8 and
    ``(1, h, w)`` uint8 in {0, 1} (bilinear with antialiasing; the mask thresholded at 0.5)."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    m = torch.from_numpy(np.ascontiguousarray(mask))[None, None].float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        m = F.interpolate(m, size=size, mode="bilinear", antialias=True, align_corners=False)
    return (x[0].round().clamp(0, 255).to(torch.uint8), (m[0] >= 0.5).to(torch.uint8))


def check_size(size: tuple[int, int], multiple: int = 32) -> tuple[int, int]:
    """``size`` as two ints, each a positive multiple of ``multiple`` (one error line if not)."""
    h, w = (int(s) for s in size)
    if h < multiple or w < multiple or h % multiple or w % multiple:
        near = [max(multiple, round(s / multiple) * multiple) for s in (h, w)]
        raise UserError(f"image size {h}x{w} is not divisible by {multiple}: unet_mobilenet_v2 "
                        f"halves it 5 times; use e.g. {near[0]}x{near[1]}")
    return h, w


def split_indices(ds: SegmentationDataset, test_fraction: float, val: int, split_seed: int
                  ) -> dict[str, list[int]]:
    """Indices of the train / val / test images (see the module docstring)."""
    n = len(ds)
    if not 0 < test_fraction < 1:
        raise UserError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_test = max(1, math.ceil(test_fraction * n))
    if val < 0 or n - n_test - val < 1:
        raise UserError(f"cannot hold out {n_test} test and {val} validation images of {n}")
    if _SPECS[ds.name].contiguous:
        order = list(range(n))
    else:
        order = [int(i) for i in np.random.default_rng(split_seed).permutation(n)]
    test = sorted(order[n - n_test:])
    val_idx = sorted(order[n - n_test - val:n - n_test])
    train = sorted(order[:n - n_test - val])
    return {"train": train, "val": val_idx, "test": test}


def segmentation_splits(ds: SegmentationDataset, *, size: tuple[int, int],
                        test_fraction: float = 0.2, val: int = 0, split_seed: int = 0,
                        device: str | torch.device = "cpu") -> SegmentationSplits:
    """Split, resize and move a segmentation data set to ``device``."""
    size = check_size(size)
    idx = split_indices(ds, test_fraction, val, split_seed)
    tensors = {}
    for part, ids in idx.items():
        pairs = [resize_pair(ds.images[i], ds.masks[i], size) for i in ids]
        c = ds.in_chans
        imgs = torch.stack([p[0] for p in pairs]) if pairs else torch.zeros((0, c, *size),
                                                                           dtype=torch.uint8)
        msks = torch.stack([p[1] for p in pairs]) if pairs else torch.zeros((0, 1, *size),
                                                                           dtype=torch.uint8)
        tensors[part] = (imgs.to(device), msks.to(device))
    x = tensors["train"][0].double() / 255
    mean = tuple(float(v) for v in x.mean(dim=(0, 2, 3)))
    std = tuple(float(v) for v in x.std(dim=(0, 2, 3), unbiased=False))
    names = {part: [ds.names[i] for i in ids] for part, ids in idx.items()}
    split = {"how": "contiguous slices, test last" if _SPECS[ds.name].contiguous
             else "seeded random permutation", "split_seed": split_seed,
             "test_fraction": test_fraction, "val": val,
             **{f"num_{k}": len(v) for k, v in idx.items()}, "test_names": names["test"]}
    return SegmentationSplits(*tensors["train"], *tensors["val"], *tensors["test"], names=names,
                              mean=mean, std=std, image_size=size, split=split)


# ------------------------------------------------------------------------------- augmentation

AUGMENTS = ("none", "hflip", "dihedral")


def augment_pair(images: torch.Tensor, masks: torch.Tensor, recipe: str,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one random transform per sample to images ``(N, C, H, W)`` and masks alike.

    Args:
        recipe: ``"none"``, ``"hflip"`` (left-right flip with probability 1/2) or
            ``"dihedral"`` (one of the 8 flips/rotations of the square, uniformly; H == W).
        generator: on the tensors' device; the draws are 1 (hflip) or 3 (dihedral) per sample.
    """
    if recipe not in AUGMENTS:
        raise UserError(f"unknown segmentation augmentation {recipe!r}; choose from "
                        f"{', '.join(AUGMENTS)}")
    if recipe == "none":
        return images, masks
    n, dev = len(images), images.device
    flip = torch.rand(n, generator=generator, device=dev) < 0.5
    images, masks = hflip(images, flip), hflip(masks, flip)
    if recipe == "dihedral":
        if images.shape[-1] != images.shape[-2]:
            raise UserError(f"dihedral augmentation needs square images, got "
                            f"{tuple(images.shape[-2:])}")
        vflip = torch.rand(n, generator=generator, device=dev) < 0.5
        swap = torch.rand(n, generator=generator, device=dev) < 0.5

        def apply(t: torch.Tensor) -> torch.Tensor:
            t = torch.where(vflip[:, None, None, None], t.flip(2), t)
            return torch.where(swap[:, None, None, None], t.transpose(2, 3), t)

        images, masks = apply(images), apply(masks)
    return images, masks
