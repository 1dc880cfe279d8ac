"""Loaders on small data sets the tests write in the real formats, and their error messages.

References: IDX files are written here with ``struct`` from the format description (not with our
writer); CIFAR batches are pickled here as dicts of ``(N, 3072)`` rows; image trees are written
with Pillow (PNG is lossless, so decoding must give back the exact arrays; JPEG is compared with
Pillow's own decoder).
"""

import gzip
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.data import (
    CIFAR10_CLASSES,
    DATASETS,
    FASHION_MNIST_CLASSES,
    default_data_dirs,
    load_dataset,
)
from cnnlab.data import datasets as datasets_mod
from cnnlab.errors import DataError, DataNotFoundError, UserError

FMNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")


# ------------------------------------------------------------------------------------ writers

def idx_bytes(array: np.ndarray) -> bytes:
    """IDX as documented: 0x00 0x00, type 0x08 (ubyte), ndim, big-endian int32 sizes, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fmnist(folder: Path, rng, n_train=30, n_test=20, gz=True, shape=(28, 28),
                 corrupt: dict | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train": (rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
                  np.arange(n_train) % 10),
        "test": (rng.integers(0, 256, (n_test, *shape), dtype=np.uint8), np.arange(n_test) % 10),
    }
    names = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    for split, (images, labels) in arrays.items():
        for stem, arr in zip(names[split], (images, labels)):
            data = (corrupt or {}).get(stem, idx_bytes(arr))
            if gz:
                (folder / (stem + ".gz")).write_bytes(gzip.compress(data))
            else:
                (folder / stem).write_bytes(data)
    return arrays


def write_cifar_pickles(folder: Path, rng, per_batch=4):
    """cifar-10-batches-py: dicts with b'data' (N, 3072) rows of R, G, B planes, b'labels'."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {"train": ([], []), "test": ([], [])}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        hwc = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
        labels = list(rng.integers(0, 10, per_batch))
        rows = hwc.transpose(0, 3, 1, 2).reshape(per_batch, 3072)
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": rows,
                 b"filenames": [f"{i}.png".encode() for i in range(per_batch)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        split = "test" if name == "test_batch" else "train"
        out[split][0].append(hwc)
        out[split][1].extend(labels)
    meta = {b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return {s: (np.concatenate(im), np.array(lb)) for s, (im, lb) in out.items()}


def write_tree(root: Path, rng, fmt="png", per_class=2, size=(32, 32), classes=CIFAR10_CLASSES):
    """root/{train,test}/<class>/NNNN.<fmt>; returns {split: {class: [array, ...]}} by name."""
    arrays = {}
    for split in ("train", "test"):
        arrays[split] = {}
        for cls in classes:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            arrays[split][cls] = []
            for i in range(per_class):
                a = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(a).save(root / split / cls / f"{i:04d}.{fmt}")
                arrays[split][cls].append(a)
    return arrays


def make_tar(src: Path, archive: Path, arcname: str) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname=arcname)
    return archive


def load(name, data_dir, tmp_path, **kw):
    return load_dataset(name, data_dir=data_dir, cache_dir=tmp_path / "cache", **kw)


# ----------------------------------------------------------------------------- Fashion-MNIST

@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx_roundtrip(tmp_path, rng, gz):
    arrays = write_fmnist(tmp_path / "fm", rng, gz=gz)
    ds = load("fashion-mnist", tmp_path / "fm", tmp_path)
    np.testing.assert_array_equal(ds.train_images[..., 0], arrays["train"][0])
    np.testing.assert_array_equal(ds.train_labels, arrays["train"][1])
    np.testing.assert_array_equal(ds.test_images[..., 0], arrays["test"][0])
    assert ds.train_labels.dtype == np.int64 and ds.train_images.dtype == np.uint8
    assert ds.classes == FASHION_MNIST_CLASSES and ds.in_chans == 1 and ds.native_size == (28, 28)
    # mean/std over all training pixels, in [0, 1] units
    np.testing.assert_allclose(ds.mean, [arrays["train"][0].mean() / 255], rtol=1e-12)
    np.testing.assert_allclose(ds.std, [arrays["train"][0].std() / 255], rtol=1e-12)
    x, y = ds.tensors("train")
    assert tuple(x.shape) == (30, 1, 28, 28) and x.dtype.is_floating_point is False


def test_fashion_mnist_torchvision_layout(tmp_path, rng):
    write_fmnist(tmp_path / "d" / "FashionMNIST" / "raw", rng)
    assert load("fashion-mnist", tmp_path / "d", tmp_path).train_images.shape == (30, 28, 28, 1)


def test_fashion_mnist_cache_is_used_and_invalidated(tmp_path, rng, monkeypatch):
    arrays = write_fmnist(tmp_path / "fm", rng)
    load("fashion-mnist", tmp_path / "fm", tmp_path)
    assert len(list((tmp_path / "cache").glob("fashion-mnist-*.npz"))) == 1

    def boom(*a, **k):
        raise AssertionError("the cache should have been used")

    monkeypatch.setitem(datasets_mod._SPECS, "fashion-mnist",
                        datasets_mod._SPECS["fashion-mnist"].__class__(
                            **{**datasets_mod._SPECS["fashion-mnist"].__dict__, "read": boom}))
    ds = load("fashion-mnist", tmp_path / "fm", tmp_path)
    np.testing.assert_array_equal(ds.train_images[..., 0], arrays["train"][0])
    # the key is the files' contents: touching a file keeps the cache ...
    f = tmp_path / "fm" / "train-labels-idx1-ubyte.gz"
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    load("fashion-mnist", tmp_path / "fm", tmp_path)
    # ... new contents change it: the (patched) reader must run again
    with gzip.open(f, "wb") as g:
        g.write(idx_bytes(np.arange(30)[::-1] % 10))
    with pytest.raises(AssertionError, match="cache"):
        load("fashion-mnist", tmp_path / "fm", tmp_path)


def _bad_labels():
    return idx_bytes(np.array([0, 1, 10] + [0] * 27))


@pytest.mark.parametrize("stem, data, message", [
    ("train-images-idx3-ubyte", b"\x00\x00\x08\x01" + b"\x00" * 12, "magic"),
    ("train-images-idx3-ubyte", b"\x12\x34\x56\x78", "magic"),
    ("train-images-idx3-ubyte", idx_bytes(np.zeros((30, 28, 28)))[:-5], "truncated"),
    ("train-labels-idx1-ubyte", idx_bytes(np.zeros(29)), "29 labels"),
    ("train-labels-idx1-ubyte", _bad_labels(), "label 10 at index 2"),
    ("t10k-images-idx3-ubyte", idx_bytes(np.zeros((20, 27, 28))), "27x28"),
])
def test_fashion_mnist_bad_idx(tmp_path, rng, stem, data, message):
    write_fmnist(tmp_path / "fm", rng, corrupt={stem: data})
    with pytest.raises(DataError, match=message) as err:
        load("fashion-mnist", tmp_path / "fm", tmp_path)
    assert "\n" not in str(err.value) and "fm" in str(err.value)


def test_fashion_mnist_truncated_gzip(tmp_path, rng):
    write_fmnist(tmp_path / "fm", rng)
    f = tmp_path / "fm" / "t10k-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz.*truncated or corrupt"):
        load("fashion-mnist", tmp_path / "fm", tmp_path)


def test_fashion_mnist_missing(tmp_path, rng):
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist") as err:
        load("fashion-mnist", tmp_path / "nothing", tmp_path)
    assert str(tmp_path / "nothing") in str(err.value)
    write_fmnist(tmp_path / "fm", rng)
    (tmp_path / "fm" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError, match="t10k-labels-idx1-ubyte"):
        load("fashion-mnist", tmp_path / "fm", tmp_path)


@pytest.mark.skipif(not FMNIST_SYSTEM.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_matches_published_description(tmp_path):
    """60,000 / 10,000 images of 28x28, 6,000 / 1,000 per class (Xiao et al. 2017)."""
    ds = load_dataset("fashion-mnist", data_dir=FMNIST_SYSTEM, use_cache=False)
    assert ds.train_images.shape == (60000, 28, 28, 1)
    assert ds.test_images.shape == (10000, 28, 28, 1)
    assert np.bincount(ds.train_labels).tolist() == [6000] * 10
    assert np.bincount(ds.test_labels).tolist() == [1000] * 10


# ----------------------------------------------------------------------------------- CIFAR-10

def test_cifar_pickles_folder_and_archive(tmp_path, rng):
    arrays = write_cifar_pickles(tmp_path / "d" / "cifar-10-batches-py", rng)
    for data_dir in (tmp_path / "d",
                     make_tar(tmp_path / "d" / "cifar-10-batches-py",
                              tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py")):
        ds = load("cifar10", data_dir, tmp_path, use_cache=False)
        for split in ("train", "test"):
            np.testing.assert_array_equal(getattr(ds, f"{split}_images"), arrays[split][0])
            np.testing.assert_array_equal(getattr(ds, f"{split}_labels"), arrays[split][1])
        assert ds.classes == CIFAR10_CLASSES and ds.native_size == (32, 32) and ds.in_chans == 3


def test_cifar_pickle_errors(tmp_path, rng):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_pickles(folder, rng)
    good = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="data_batch_3.*truncated or corrupt"):
        load("cifar10", folder, tmp_path, use_cache=False)
    # a pickle that would run code is refused, not executed
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": os.getcwd, b"labels": []}))
    with pytest.raises(DataError, match="data_batch_3.*unexpected object"):
        load("cifar10", folder, tmp_path, use_cache=False)
    batch = pickle.loads(good, encoding="bytes")
    batch[b"labels"][1] = 12
    (folder / "data_batch_3").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match="label 12 at index 1"):
        load("cifar10", folder, tmp_path, use_cache=False)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        load("cifar10", folder, tmp_path, use_cache=False)


def _flatten(arrays, split):
    """Expected (images, labels) for a tree: classes in label order, files sorted by name."""
    images = [a for cls in CIFAR10_CLASSES for a in arrays[split][cls]]
    labels = [i for i, cls in enumerate(CIFAR10_CLASSES) for _ in arrays[split][cls]]
    return np.stack(images), np.array(labels)


def test_cifar_png_tree_folder_and_targz(tmp_path, rng):
    arrays = write_tree(tmp_path / "cifar10", rng, fmt="png")
    archive = make_tar(tmp_path / "cifar10", tmp_path / "cifar10-jpg.tar.gz", "cifar10")
    for data_dir in (tmp_path / "cifar10", archive, tmp_path):
        ds = load("cifar10", data_dir, tmp_path, use_cache=False)
        for split in ("train", "test"):
            images, labels = _flatten(arrays, split)
            np.testing.assert_array_equal(getattr(ds, f"{split}_images"), images)
            np.testing.assert_array_equal(getattr(ds, f"{split}_labels"), labels)


def test_cifar_jpeg_tree_matches_pillow_decoder(tmp_path, rng):
    write_tree(tmp_path / "t", rng, fmt="jpg", per_class=1)
    archive = make_tar(tmp_path / "t", tmp_path / "c.tar.gz", "top")
    ds = load("cifar10", archive, tmp_path)
    for i, cls in enumerate(CIFAR10_CLASSES):
        ref = np.asarray(Image.open(tmp_path / "t" / "test" / cls / "0000.jpg").convert("RGB"))
        # both use libjpeg(-turbo); allow one grey level for a different IDCT build
        assert np.abs(ds.test_images[i].astype(int) - ref).max() <= 1
    again = load("cifar10", archive, tmp_path)  # from the cache
    np.testing.assert_array_equal(again.train_images, ds.train_images)


def test_cifar_tree_errors(tmp_path, rng):
    root = tmp_path / "cifar10"
    write_tree(root, rng, per_class=1)

    def expect(message):
        with pytest.raises(DataError, match=message) as err:
            load("cifar10", root, tmp_path, use_cache=False)
        assert "\n" not in str(err.value)

    (root / "train" / "zebra").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "train" / "zebra" / "0.png")
    expect(r"unknown class folders train/\['zebra'\]")
    (root / "train" / "zebra" / "0.png").unlink()
    (root / "train" / "zebra").rmdir()

    (root / "test" / "cat" / "0000.png").unlink()
    expect(r"test/\['cat'\] are missing or hold no images")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "test" / "cat" / "0000.png")
    expect(r"test/cat/0000.png is 16x16 pixels, expected 32x32")
    (root / "test" / "cat" / "0000.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    expect(r"cannot decode test/cat/0000.png.*truncated or corrupt")
    (root / "test" / "cat" / "0000.png").unlink()
    (root / "test" / "cat" / "notes.txt").write_text("hello")
    expect(r"unexpected file test/cat/notes.txt")


def test_truncated_archive(tmp_path, rng):
    write_tree(tmp_path / "cifar10", rng, per_class=3)
    archive = make_tar(tmp_path / "cifar10", tmp_path / "cifar10.tar.gz", "cifar10")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cifar10.tar.gz: cannot read the archive.*truncated"):
        load("cifar10", archive, tmp_path, use_cache=False)


def test_cifar_missing_says_where_and_how(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        load("cifar10", tmp_path / "empty", tmp_path)
    message = str(err.value)
    assert str(tmp_path / "empty") in message and "cifar-10-python.tar.gz" in message
    assert "--download" in message and "\n" not in message


def test_download_uses_torchvision_and_then_reads_the_batches(tmp_path, rng, monkeypatch):
    """--download calls torchvision's CIFAR10(download=True) (faked here: no internet)."""
    import torchvision

    calls = []

    class FakeCIFAR10:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            if not (Path(root) / "cifar-10-batches-py").is_dir():
                write_cifar_pickles(Path(root) / "cifar-10-batches-py", rng)

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    ds = load("cifar10", tmp_path / "dl", tmp_path, download=True)
    assert calls == [(str(tmp_path / "dl"), True, True), (str(tmp_path / "dl"), False, True)]
    assert ds.train_images.shape == (20, 32, 32, 3)

    class Offline:
        def __init__(self, root, train, download):
            raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", Offline)
    with pytest.raises(DataNotFoundError, match="downloading cifar10 into .* failed"):
        load("cifar10", tmp_path / "dl2", tmp_path, download=True)


def test_default_search_order(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "env"))
    monkeypatch.chdir(tmp_path)
    dirs = default_data_dirs("fashion-mnist")
    assert dirs[:2] == [tmp_path / "env", tmp_path / "data"]
    assert dirs[-1] == FMNIST_SYSTEM
    assert FMNIST_SYSTEM not in default_data_dirs("cifar10")


def test_unknown_dataset():
    with pytest.raises(UserError, match=r"unknown dataset 'mnist'.*fashion-mnist"):
        load_dataset("mnist")
    assert set(DATASETS) == {"cifar10", "fashion-mnist"}


def _edit_cache(cache: Path, **changes) -> None:
    """Re-save the cache .npz with some arrays replaced (a valid zip: only our checks see it)."""
    with np.load(cache) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    with open(cache, "wb") as f:
        np.savez(f, **arrays)


def _labels_edited(cache):  # the case: val accuracy 1.0, test 0.107
    with np.load(cache) as z:
        labels = z["train_labels"].copy()
    _edit_cache(cache, train_labels=(labels + 1) % 10)


@pytest.mark.parametrize("damage, why", [
    (lambda c: c.write_bytes(b"not a zip"), "unreadable"),
    (lambda c: c.write_bytes(c.read_bytes()[: c.stat().st_size // 2]), "unreadable"),
    (lambda c: c.write_bytes(c.read_bytes()[:600] + bytes([c.read_bytes()[600] ^ 0x10])
                             + c.read_bytes()[601:]), "unreadable|checksum"),
    (_labels_edited, "checksum"),
    (lambda c: _edit_cache(c, test_labels=np.full(20, 12, dtype=np.int64)), "range"),
    (lambda c: _edit_cache(c, train_labels=np.zeros(30, dtype=np.int32)), "labels are int32"),
    (lambda c: _edit_cache(c, train_images=np.zeros((30, 28, 27, 1), np.uint8)), "images are"),
    (lambda c: _edit_cache(c, mean=np.array([np.nan])), "mean"),
    (lambda c: _edit_cache(c, meta=np.array('{"format": 2, "name": "fashion-mnist"}')),
     "other source files"),
])
def test_damaged_or_edited_cache_is_rebuilt_with_a_warning(tmp_path, rng, damage, why):
    arrays = write_fmnist(tmp_path / "fm", rng)
    load("fashion-mnist", tmp_path / "fm", tmp_path)
    (cache,) = (tmp_path / "cache").glob("*.npz")
    good = cache.read_bytes()
    damage(cache)
    with pytest.warns(UserWarning, match=f"ignoring the cache .*({why})") as caught:
        ds = load("fashion-mnist", tmp_path / "fm", tmp_path)
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    np.testing.assert_array_equal(ds.train_labels, arrays["train"][1])  # decoded again
    np.testing.assert_array_equal(ds.test_labels, arrays["test"][1])
    assert cache.read_bytes() == good  # and rewritten as it was
    import warnings as _w

    with _w.catch_warnings():
        _w.simplefilter("error")
        load("fashion-mnist", tmp_path / "fm", tmp_path)  # the rebuilt cache is used silently


def test_cache_dir_that_is_a_file(tmp_path, rng):
    write_fmnist(tmp_path / "fm", rng)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=r"--cache-dir .*file is not a folder") as err:
        load_dataset("fashion-mnist", data_dir=tmp_path / "fm", cache_dir=tmp_path / "file")
    assert "\n" not in str(err.value)
    assert (tmp_path / "file").read_text() == "x"
