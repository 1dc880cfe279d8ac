"""Stratified subsets, validation splits and resizing, against counting and Pillow."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cnnlab.data import (
    Dataset,
    make_splits,
    resize_images,
    resized_size,
    stratified_indices,
    train_val_indices,
)
from cnnlab.errors import UserError


@settings(max_examples=40)
@given(counts=st.lists(st.integers(1, 40), min_size=1, max_size=6), frac=st.floats(0, 1),
       seed=st.integers(0, 2**31))
def test_stratified_indices_keep_class_shares(counts, frac, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(seed).shuffle(labels)
    n = int(round(frac * len(labels)))
    idx = stratified_indices(labels, n, seed)
    assert len(idx) == n and len(np.unique(idx)) == n and np.all(np.diff(idx) > 0)
    got = np.bincount(labels[idx], minlength=len(counts))
    quota = np.array(counts) * n / len(labels)
    assert np.all(np.abs(got - quota) < 1)  # largest remainder: within one of the exact share
    np.testing.assert_array_equal(idx, stratified_indices(labels, n, seed))


def test_stratified_indices_depend_on_seed():
    labels = np.arange(1000) % 10
    a, b = stratified_indices(labels, 100, 0), stratified_indices(labels, 100, 1)
    assert not np.array_equal(a, b)
    with pytest.raises(UserError, match="cannot choose 1001 of 1000"):
        stratified_indices(labels, 1001, 0)


@pytest.mark.parametrize("val, expected", [(0.1, 100), (0, 0), (250, 250)])
def test_train_val_indices(val, expected):
    labels = np.arange(1000) % 10
    train, valid = train_val_indices(labels, val, seed=3)
    assert len(valid) == expected and len(np.intersect1d(train, valid)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, valid])), np.arange(1000))
    if expected:
        assert np.bincount(labels[valid]).tolist() == [expected // 10] * 10


@pytest.mark.parametrize("val, message", [(-0.1, ">= 0"), (1000, "leave some"), (2.5, "whole")])
def test_train_val_indices_bad(val, message):
    with pytest.raises(UserError, match=message):
        train_val_indices(np.arange(1000) % 10, val, seed=0)


@pytest.mark.parametrize("size", [(24, 24), (16, 16), (40, 40), (13, 20)])
def test_resize_matches_pillow_bilinear(size, rng):
    """torch's antialiased bilinear follows Pillow's; rounding may differ by one grey level."""
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    out = resize_images(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), size)
    assert out.dtype == torch.uint8 and tuple(out.shape) == (3, 3, *size)
    for i in range(3):
        ref = np.asarray(Image.fromarray(images[i]).resize(size[::-1], Image.BILINEAR))
        assert np.abs(out[i].permute(1, 2, 0).numpy().astype(int) - ref).max() <= 1


def test_resized_size():
    assert resized_size((32, 32), 0.5) == (16, 16)
    assert resized_size((28, 28), 1.15) == (32, 32)
    with pytest.raises(UserError, match="resolution multiplier must be > 0"):
        resized_size((32, 32), 0)


def tiny_dataset(rng, n_train=200, n_test=50, shape=(8, 8, 3)):
    return Dataset(name="toy", classes=tuple("abcdefghij"),
                   train_images=rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
                   train_labels=np.arange(n_train) % 10,
                   test_images=rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
                   test_labels=np.arange(n_test) % 10, mean=(0.5,) * 3, std=(0.25,) * 3,
                   source="memory")


def test_make_splits_subset_val_and_resolution(rng):
    ds = tiny_dataset(rng)
    sp = make_splits(ds, val_fraction=0.2, subset=100, split_seed=1, resolution=1.5)
    assert tuple(sp.train_images.shape) == (80, 3, 12, 12)
    assert tuple(sp.val_images.shape) == (20, 3, 12, 12)
    # the test set is cut to the same fraction: ceil(100 * 50 / 200) = 25 images
    assert tuple(sp.test_images.shape) == (25, 3, 12, 12)
    assert torch.bincount(sp.train_labels).tolist() == [8] * 10
    assert sp.image_size == (12, 12) and sp.in_chans == 3
    # at rho = 1 the images are the dataset's, in (N, C, H, W)
    full = make_splits(ds, val_fraction=0, split_seed=1)
    np.testing.assert_array_equal(full.train_images.permute(0, 2, 3, 1).numpy(), ds.train_images)
    assert len(full.val_labels) == 0 and len(full.test_labels) == 50
    with pytest.raises(UserError, match=r"subset must be in \[1, 200\]"):
        make_splits(ds, subset=500)
