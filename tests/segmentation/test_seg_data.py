"""Segmentation data: the real Weizmann horses and ISBI 2012 slices (decoded, binarised, cached),
seeded/contiguous splits, masks that stay binary through resizing and augmentation, and the bad
inputs (size mismatch, non-binary mask, unpaired file, size not divisible by 32)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from cnnlab.data import (
    SEGMENTATION_DATASETS,
    augment_pair,
    load_dataset,
    load_segmentation,
    segmentation_splits,
)
from cnnlab.data.segmentation import find_segmentation_source, resize_pair
from cnnlab.errors import DataError, UserError

def _shared(name: str) -> Path:
    """The real archive (../shared/data, or $CNNLAB_DATA); the test is skipped without it."""
    try:
        return find_segmentation_source(name)
    except DataError:
        pytest.skip(f"{name} not found (set CNNLAB_DATA to the folder of ../shared/data)")


def test_registered_with_the_data_registry():
    assert SEGMENTATION_DATASETS == ("horse", "isbi2012")


def test_real_horses_load_binarised_and_cached(tmp_path):
    src = _shared("horse")
    ds = load_dataset("horse", data_dir=src, cache_dir=tmp_path)
    assert len(ds) == 328 and ds.names[0] == "horse001" and ds.in_chans == 1
    assert all(i.shape[:2] == m.shape for i, m in zip(ds.images, ds.masks, strict=True))
    assert all(set(np.unique(m)) <= {0, 1} for m in ds.masks)
    heights = [i.shape[0] for i in ds.images]
    assert min(heights) < 200 < max(heights)  # native sizes vary (README: ~150-600 px)
    assert 0.1 < ds.foreground_fraction() < 0.4  # horses cover about a quarter of a picture
    again = load_segmentation("horse", data_dir=src, cache_dir=tmp_path)  # from the cache
    assert len(list(tmp_path.glob("horse-*.npz"))) == 1
    assert all(np.array_equal(a, b) for a, b in zip(ds.masks, again.masks, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(ds.images, again.images, strict=True))
    # independent decode of one pair with Pillow
    direct = load_segmentation("horse", data_dir=src, use_cache=False)
    assert np.array_equal(direct.images[5], ds.images[5])


def test_real_membranes_and_their_contiguous_split(tmp_path):
    ds = load_segmentation("isbi2012", data_dir=_shared("isbi2012"), cache_dir=tmp_path)
    assert len(ds) == 30 and ds.names[:3] == ("0", "1", "2") and ds.names[-1] == "29"
    assert all(i.shape == (512, 512, 1) for i in ds.images)
    assert ds.foreground_fraction() == pytest.approx(0.22, abs=0.01)  # README: ~22% membrane
    sp = segmentation_splits(ds, size=(128, 128), test_fraction=0.2, val=2)
    assert sp.names["test"] == [str(i) for i in range(24, 30)]
    assert sp.names["val"] == ["22", "23"] and len(sp.names["train"]) == 22


def test_a_corrupt_cache_is_rebuilt(tmp_path):
    src = _shared("isbi2012")
    load_segmentation("isbi2012", data_dir=src, cache_dir=tmp_path)
    cache = next(tmp_path.glob("isbi2012-*.npz"))
    data = bytearray(cache.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cache.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="ignoring the cache"):
        ds = load_segmentation("isbi2012", data_dir=src, cache_dir=tmp_path)
    assert len(ds) == 30


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _write_isbi(root: Path, pairs) -> Path:
    for sub in ("image", "label"):
        (root / "isbi2012-membrane" / sub).mkdir(parents=True, exist_ok=True)
    for i, (img, lab) in enumerate(pairs):
        (root / "isbi2012-membrane" / "image" / f"{i}.png").write_bytes(_png(img))
        if lab is not None:
            (root / "isbi2012-membrane" / "label" / f"{i}.png").write_bytes(_png(lab))
    return root


def _pair(h=64, w=64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (h, w), dtype=np.uint8),
            np.where(rng.random((h, w)) < 0.2, 0, 255).astype(np.uint8))


def test_foreground_is_the_membrane_label_zero(tmp_path):
    img, lab = _pair()
    ds = load_segmentation("isbi2012", data_dir=_write_isbi(tmp_path, [(img, lab)] * 2),
                           use_cache=False)
    assert np.array_equal(ds.masks[0], (lab == 0).astype(np.uint8))


def test_image_mask_size_mismatch_is_one_line(tmp_path):
    img, lab = _pair()
    root = _write_isbi(tmp_path, [(img, lab), (img, lab[:, :60])])
    with pytest.raises(DataError, match=r"image .*1.png is 64x64 pixels but its mask .*1.png "
                                        r"is 60x64; they must have the same size"):
        load_segmentation("isbi2012", data_dir=root, use_cache=False)


def test_a_grey_mask_is_refused(tmp_path):
    img, _ = _pair()
    root = _write_isbi(tmp_path, [(img, img)])  # an image given as its own mask
    with pytest.raises(DataError, match=r"0.png is not a binary mask: \d+% of its pixels are grey"):
        load_segmentation("isbi2012", data_dir=root, use_cache=False)


def test_an_image_without_mask_is_one_line(tmp_path):
    img, lab = _pair()
    root = _write_isbi(tmp_path, [(img, lab), (img, None)])
    with pytest.raises(DataError, match="1 has no mask"):
        load_segmentation("isbi2012", data_dir=root, use_cache=False)


def test_size_not_divisible_by_32_is_one_line(tmp_path):
    img, lab = _pair()
    ds = load_segmentation("isbi2012", data_dir=_write_isbi(tmp_path, [(img, lab)] * 5),
                           use_cache=False)
    with pytest.raises(UserError, match="image size 100x64 is not divisible by 32.*96x64"):
        segmentation_splits(ds, size=(100, 64))


def test_horse_split_is_seeded_disjoint_and_complete(tmp_path):
    ds = load_segmentation("horse", data_dir=_shared("horse"), cache_dir=tmp_path)
    a = segmentation_splits(ds, size=(64, 64), test_fraction=0.2, val=10, split_seed=3)
    b = segmentation_splits(ds, size=(64, 64), test_fraction=0.2, val=10, split_seed=3)
    c = segmentation_splits(ds, size=(64, 64), test_fraction=0.2, val=10, split_seed=4)
    assert a.names == b.names and a.names["test"] != c.names["test"]
    every = a.names["train"] + a.names["val"] + a.names["test"]
    assert sorted(every) == sorted(ds.names) and len(a.names["test"]) == 66
    assert a.split["test_names"] == a.names["test"] and a.split["split_seed"] == 3
    assert a.train_masks.shape == (252, 1, 64, 64)
    assert set(a.train_masks.unique().tolist()) <= {0, 1}


@given(h=st.integers(20, 90), w=st.integers(20, 90), out=st.sampled_from([32, 64, 96]),
       seed=st.integers(0, 100))
def test_masks_stay_binary_through_resizing(h, w, out, seed):
    rng = np.random.default_rng(seed)
    mask = (rng.random((h, w)) < rng.random()).astype(np.uint8)
    img = rng.integers(0, 256, (h, w, 1), dtype=np.uint8)
    x, m = resize_pair(img, mask, (out, out))
    assert x.shape == (1, out, out) and m.shape == (1, out, out) and m.dtype == torch.uint8
    assert set(m.unique().tolist()) <= {0, 1}


@pytest.mark.parametrize("recipe, outcomes", [("hflip", 2), ("dihedral", 8)])
def test_augmentation_moves_image_and_mask_together(recipe, outcomes):
    rng = np.random.default_rng(0)
    mask = torch.from_numpy((rng.random((64, 1, 8, 8)) < 0.5).astype(np.uint8))
    mask[:, :, 0, 0], mask[:, :, 0, 1] = 1, 0  # an asymmetric corner: each transform differs
    images = mask.repeat(1, 3, 1, 1) * 200 + 7  # the image is its mask, in every channel
    g = torch.Generator().manual_seed(0)
    x, m = augment_pair(images, mask, recipe, g)
    assert set(m.unique().tolist()) <= {0, 1}
    assert torch.equal(x, m.repeat(1, 3, 1, 1) * 200 + 7)  # same transform per sample
    seen = {tuple(m[i].flatten().tolist()) for i in range(64)}
    base = mask[0]
    views = {tuple(t.flatten().tolist()) for t in (
        base, base.flip(2), base.flip(1), base.flip(1).flip(2), base.transpose(1, 2),
        base.transpose(1, 2).flip(2), base.transpose(1, 2).flip(1),
        base.transpose(1, 2).flip(1).flip(2))}
    # every sample was one of the 8 symmetries of its own square; all allowed ones occur
    same = torch.stack([mask[0]] * 64)
    _, m2 = augment_pair(same.repeat(1, 1, 1, 1), same, recipe, torch.Generator().manual_seed(1))
    assert len({tuple(t.flatten().tolist()) for t in m2}) == outcomes
    assert {tuple(t.flatten().tolist()) for t in m2} <= views
    assert len(seen) > 1
    with pytest.raises(UserError, match="unknown segmentation augmentation"):
        augment_pair(images, mask, "elastic", g)
