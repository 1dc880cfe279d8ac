"""Seeded, stratified subsets and train/validation splits; the tensors a training run uses.

Conventions (also what ``cnnlab train`` documents):

- ``subset=N`` keeps N training images, stratified by class (each class keeps its share, rounded
  by largest remainder) and chosen with ``split_seed``; the test set is cut the same way to the
  same fraction (``ceil(N * test / train)`` images, at least one per class), so a quick run
  evaluates in proportion to what it trained on.
- The validation set is then taken from the (subset) training set, stratified and seeded:
  ``val_fraction`` in ``[0, 1)`` is a fraction, a value ``>= 1`` a number of images, 0 means none.
- ``split_seed`` is separate from the training seed, so runs with different training seeds see the
  same validation images.
- ``resolution`` rho resizes every image once, before training, to ``round(rho * H)`` x
  ``round(rho * W)`` with antialiased bilinear interpolation, back to uint8 (rounding costs at most
  half a grey level); rho = 1 leaves the images untouched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.data.datasets import Dataset
from cnnlab.errors import UserError


def stratified_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Choose ``n`` indices of ``labels`` keeping each class's share (largest remainder).

    Args:
        labels: ``(N,)`` integer class labels.
        n: how many to choose, ``0 <= n <= N``.
        seed: the choice is a pure function of (labels, n, seed).

    Returns:
        ``(n,)`` int64 indices into ``labels``, sorted.
    """
    labels = np.asarray(labels)
    if not 0 <= n <= len(labels):
        raise UserError(f"cannot choose {n} of {len(labels)} images")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * (n / len(labels)) if len(labels) else counts.astype(float)
    take = np.floor(quota).astype(np.int64)
    # hand the remaining picks to the largest fractional parts (ties: the rarer class first)
    rest = n - int(take.sum())
    order = np.lexsort((counts, -(quota - take)))
    take[order[:rest]] += 1
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def per_class_indices(labels: np.ndarray, n: int, seed: int, what: str = "images") -> np.ndarray:
    """Choose exactly ``n`` indices of every class present in ``labels`` (seeded).

    Args:
        labels: ``(N,)`` integer class labels.
        n: how many per class, ``1 <= n <=`` the smallest class's count.
        seed: the choice is a pure function of (labels, n, seed); a larger ``n`` with the same
            seed keeps the smaller choice and adds to it (nested label budgets).
        what: names the images in the error message (e.g. ``"labels per class"``).

    Returns:
        ``(n * classes,)`` int64 indices into ``labels``, sorted.
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise UserError(f"{what} must be a positive whole number, not {n!r}")
    if len(counts) and n > counts.min():
        c = classes[int(np.argmin(counts))]
        raise UserError(f"{what} {n} is more than the data has: class {c} has only "
                        f"{counts.min()} images")
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:n] for c in classes]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def class_subset(ds: Dataset, classes: Sequence[str], *, train_per_class: int | None = None,
                 test_per_class: int | None = None, seed: int = 0,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None
                 ) -> Dataset:
    """A data set of some of ``ds``'s classes, relabelled ``0..k-1`` in the order given.

    The transfer-learning split: pretrain on one set of classes (the *source* task), then
    transfer to a disjoint set (the *target* task) with few labels per class. The result is an
    ordinary :class:`Dataset` (same ``name``), so the engine trains on it unchanged.

    Args:
        ds: the loaded data set.
        classes: class names of ``ds``, e.g. ``("dog", "frog", "horse", "ship", "truck")``.
        train_per_class, test_per_class: keep exactly this many training / test images of every
            class (seeded, :func:`per_class_indices`); None keeps them all.
        seed: seeds the choice (the test images use ``seed + 1``).
        mean, std: the normalisation the new data set declares (default: ``ds``'s, so that a
            backbone pretrained on the source classes sees its target images normalised the way
            it was trained; ImageNet weights want ImageNet's statistics).

    Raises:
        UserError: an unknown or repeated class, or more images per class than the data has.
    """
    names = list(classes)
    unknown = [c for c in names if c not in ds.classes]
    if unknown:
        raise UserError(f"unknown class {unknown[0]!r} for {ds.name}; choose from "
                        f"{', '.join(ds.classes)}")
    if len(set(names)) != len(names) or not names:
        raise UserError(f"classes must be distinct and not empty, not {names}")
    old = np.array([ds.classes.index(c) for c in names])
    relabel = np.full(ds.num_classes, -1, np.int64)
    relabel[old] = np.arange(len(old))

    def pick(images: np.ndarray, labels: np.ndarray, n: int | None, s: int, split: str):
        idx = np.flatnonzero(np.isin(labels, old))
        if n is not None:
            idx = idx[per_class_indices(labels[idx], n, s, f"{split} images per class")]
        return images[idx], relabel[labels[idx]]

    xtr, ytr = pick(ds.train_images, ds.train_labels, train_per_class, seed, "training")
    xte, yte = pick(ds.test_images, ds.test_labels, test_per_class, seed + 1, "test")
    return Dataset(name=ds.name, classes=tuple(names), train_images=xtr, train_labels=ytr,
                   test_images=xte, test_labels=yte,
                   mean=tuple(float(m) for m in (ds.mean if mean is None else mean)),
                   std=tuple(float(v) for v in (ds.std if std is None else std)),
                   source=ds.source)


def _count(value: float, total: int, what: str) -> int:
    if value < 0:
        raise UserError(f"{what} must be >= 0, not {value}")
    n = int(round(value * total)) if value < 1 else int(value)
    if value >= 1 and value != int(value):
        raise UserError(f"{what} >= 1 is a number of images and must be whole, not {value}")
    if n >= total:
        raise UserError(f"{what}={value} would hold out {n} of {total} training images; leave "
                        "some to train on")
    return n


def train_val_indices(labels: np.ndarray, val_fraction: float, seed: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, validation), stratified by class and seeded.

    Args:
        labels: ``(N,)`` class labels.
        val_fraction: a fraction in ``[0, 1)``, or a number of images when ``>= 1``.
        seed: the split seed.

    Returns:
        ``(train indices, validation indices)``, disjoint, sorted, covering ``range(N)``.
    """
    n_val = _count(val_fraction, len(labels), "val_fraction")
    val = stratified_indices(labels, n_val, seed)
    train = np.setdiff1d(np.arange(len(labels)), val, assume_unique=True)
    return train, val


def resized_size(size: tuple[int, int], resolution: float) -> tuple[int, int]:
    """``round(rho * H), round(rho * W)`` for the resolution multiplier rho."""
    if not resolution > 0:
        raise UserError(f"resolution multiplier must be > 0, not {resolution}")
    h, w = (max(1, int(round(resolution * s))) for s in size)
    return h, w


def resize_images(images: torch.Tensor, size: tuple[int, int], *, chunk: int = 4096
                  ) -> torch.Tensor:
    """Resize uint8 images with antialiased bilinear interpolation, on their own device.

    Args:
        images: ``(N, C, H, W)`` uint8.
        size: the new ``(H', W')``.
        chunk: images per interpolation call (bounds the float32 temporaries).

    Returns:
        ``(N, C, H', W')`` uint8.
    """
    if tuple(images.shape[2:]) == tuple(size):
        return images
    out = torch.empty((*images.shape[:2], *size), dtype=torch.uint8, device=images.device)
    for s in range(0, len(images), chunk):
        x = images[s:s + chunk].float()
        y = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        out[s:s + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


@dataclass
class Splits:
    """The tensors one training run uses, already on its device.

    Attributes:
        train_images, val_images, test_images: ``(N, C, H, W)`` uint8 (val may have N = 0).
        train_labels, val_labels, test_labels: ``(N,)`` int64.
        classes: class names in label order.
        mean, std: per-channel normalisation in [0, 1] units.
        image_size: ``(H, W)`` after the resolution multiplier.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: tuple[int, int]

    @property
    def in_chans(self) -> int:
        return int(self.train_images.shape[1])


def make_splits(ds: Dataset, *, val_fraction: float = 0.1, subset: int | None = None,
                split_seed: int = 0, resolution: float = 1.0,
                device: str | torch.device = "cpu") -> Splits:
    """Subset, split, resize and move a data set to ``device`` (see the module docstring).

    Args:
        ds: the loaded data set.
        val_fraction: held out from the (subset) training set; a fraction, or a count when >= 1.
        subset: keep this many training images (and the same fraction of the test set).
        split_seed: seeds the subset and the validation split.
        resolution: the resolution multiplier rho.
        device: where the tensors live (the GPU for the fast path).
    """
    train_idx = np.arange(len(ds.train_labels))
    test_idx = np.arange(len(ds.test_labels))
    if subset is not None:
        if not 0 < subset <= len(ds.train_labels):
            raise UserError(f"subset must be in [1, {len(ds.train_labels)}] for {ds.name}, not "
                            f"{subset}")
        train_idx = stratified_indices(ds.train_labels, subset, split_seed)
        n_test = math.ceil(subset * len(ds.test_labels) / len(ds.train_labels))
        n_test = min(len(ds.test_labels), max(n_test, ds.num_classes))
        test_idx = stratified_indices(ds.test_labels, n_test, split_seed + 1)
    tr, va = train_val_indices(ds.train_labels[train_idx], val_fraction, split_seed)
    size = resized_size(ds.native_size, resolution)

    def to_device(images: np.ndarray, labels: np.ndarray, idx: np.ndarray):
        x = torch.from_numpy(images[idx]).to(device).permute(0, 3, 1, 2)  # (N, H, W, C) -> NCHW
        x = resize_images(x.contiguous(), size)
        return x, torch.from_numpy(labels[idx]).to(device)

    train = to_device(ds.train_images, ds.train_labels, train_idx[tr])
    val = to_device(ds.train_images, ds.train_labels, train_idx[va])
    test = to_device(ds.test_images, ds.test_labels, test_idx)
    return Splits(*train, *val, *test, classes=ds.classes, mean=ds.mean, std=ds.std,
                  image_size=size)
