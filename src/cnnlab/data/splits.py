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
