"""The data sets cnnlab trains on, found on disk, decoded once and cached as uint8 arrays.

Where the data is looked for (first match wins):

1. ``data_dir`` when given (``--data-dir``): only there. It may be a folder or an archive file.
2. ``$CNNLAB_DATA``.
3. ``./data`` (the current directory).
4. ``../shared/data`` relative to the repository checkout that cnnlab runs from.
5. Fashion-MNIST only: ``/usr/share/datasets/fashion-mnist`` (Debian package
   ``dataset-fashion-mnist``).

In each folder, CIFAR-10 is looked for as ``cifar-10-batches-py/``, ``cifar-10-python.tar.gz``
(the official python distribution), ``cifar10/`` or ``cifar10-jpg.tar.gz`` / ``cifar10.tar[.gz]``
(an image tree ``[top/]{train,test}/<class>/*.jpg|png``); Fashion-MNIST as the four IDX files
(``.gz`` or raw) in the folder itself, in ``fashion-mnist/`` or in torchvision's
``FashionMNIST/raw/``.

Decoded arrays are cached as ``.npz`` in ``cache_dir`` (default ``$CNNLAB_CACHE`` or
``~/.cache/cnnlab``), keyed on a SHA-256 of the source files' contents, so that a later run loads
CIFAR-10 in a fraction of a second instead of decoding 60,000 JPEGs. A cache file is used only
when it matches: its source checksum, the arrays' shapes, dtypes and label range, and a checksum
of the arrays themselves; anything else (a truncated, bit-flipped or edited file) is reported in
a warning and the cache is rebuilt from the source.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnnlab._io import atomic_write, one_line, output_dir
from cnnlab.data import _idx, _images
from cnnlab.errors import DataError, DataNotFoundError, UserError

if TYPE_CHECKING:
    import torch

_REPO = Path(__file__).resolve().parents[3]
_CACHE_FORMAT = 2  # bump when the cached arrays change meaning

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image data set held in memory as uint8.

    Attributes:
        name: the registry name (``"cifar10"``, ``"fashion-mnist"``).
        classes: class names in label order.
        train_images: ``(N, H, W, C)`` uint8.
        train_labels: ``(N,)`` int64 in ``[0, num_classes)``.
        test_images: ``(M, H, W, C)`` uint8.
        test_labels: ``(M,)`` int64.
        mean: per-channel mean of the training images, in [0, 1] units (pixel / 255).
        std: per-channel standard deviation of the training images, in [0, 1] units.
        source: the file or folder the arrays were decoded from.
    """

    name: str
    classes: tuple[str, ...]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return int(self.train_images.shape[3])

    @property
    def native_size(self) -> tuple[int, int]:
        """The stored image size ``(H, W)``."""
        return int(self.train_images.shape[1]), int(self.train_images.shape[2])

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The images of ``split`` ("train" or "test") as torch tensors.

        Returns:
            ``(images (N, C, H, W) uint8, labels (N,) int64)``; the images share no memory with
            the arrays (they are made contiguous in the channels-first layout).
        """
        import torch

        if split not in ("train", "test"):
            raise UserError(f"split must be 'train' or 'test', not {split!r}")
        images = getattr(self, f"{split}_images")
        labels = getattr(self, f"{split}_labels")
        return (torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                torch.from_numpy(labels))

    def info(self) -> dict:
        """What a saved run needs to know about its data (JSON-serialisable)."""
        return {"name": self.name, "classes": list(self.classes), "mean": list(self.mean),
                "std": list(self.std), "native_size": list(self.native_size),
                "in_chans": self.in_chans, "num_train": len(self.train_labels),
                "num_test": len(self.test_labels), "source": self.source}


@dataclass(frozen=True)
class _Spec:
    classes: tuple[str, ...]
    shape: tuple[int, int, int]  # (H, W, C)
    find: Callable[[Path], Path | None]  # a folder -> the source in it, or None
    read: Callable[[Path], dict[str, tuple[np.ndarray, np.ndarray]]]
    how_to_get: str
    system_dirs: tuple[Path, ...] = ()


# ---------------------------------------------------------------------------------------- CIFAR-10

def _find_cifar10(folder: Path) -> Path | None:
    if folder.is_file():
        return folder
    if (folder / "data_batch_1").is_file() or (folder / "train").is_dir():
        return folder
    for name in ("cifar-10-batches-py", "cifar-10-python.tar.gz", "cifar10", "cifar10-jpg.tar.gz",
                 "cifar10.tar.gz", "cifar10.tar"):
        if (folder / name).exists():
            return folder / name
    subs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(subs) == 1 and (subs[0] / "train").is_dir():  # one top folder of any name
        return folder
    return None


def _is_pickle_source(source: Path) -> bool:
    if source.is_dir():
        return (source / "data_batch_1").is_file()
    return source.name.startswith("cifar-10-python")


def _read_cifar10(source: Path):
    if _is_pickle_source(source):
        return _images.read_cifar_pickles(source, CIFAR10_CLASSES)
    splits, _ = _images.read_image_tree(source, classes=CIFAR10_CLASSES, size=(32, 32),
                                        channels=3)
    return splits


# ----------------------------------------------------------------------------------- Fashion-MNIST

_FMNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _find_fashion_mnist(folder: Path) -> Path | None:
    for sub in (folder, folder / "fashion-mnist", folder / "FashionMNIST" / "raw"):
        if _idx_file(sub, "train-images-idx3-ubyte") is not None:
            return sub
    return None


def _read_fashion_mnist(folder: Path):
    out = {}
    for split, (img_stem, lbl_stem) in _FMNIST_FILES.items():
        paths = [_idx_file(folder, img_stem), _idx_file(folder, lbl_stem)]
        missing = [s for s, p in zip((img_stem, lbl_stem), paths) if p is None]
        if missing:
            raise DataNotFoundError(f"{folder}: the Fashion-MNIST files {missing} (.gz or raw) are "
                                    "missing; " + _SPECS["fashion-mnist"].how_to_get)
        images = _idx.read_idx(paths[0], ndim=3)
        labels = _idx.read_idx(paths[1], ndim=1).astype(np.int64)
        if images.shape[1:] != (28, 28):
            raise DataError(f"{paths[0]}: images are {images.shape[1]}x{images.shape[2]}, "
                            "expected 28x28")
        if len(labels) != len(images):
            raise DataError(f"{paths[1]}: {len(labels)} labels for the {len(images)} images of "
                            f"{paths[0]}")
        _images._check_labels(labels, 10, str(paths[1]))
        out[split] = (images[..., None], labels)  # (N, 28, 28) -> (N, 28, 28, 1)
    return out


_SPECS: dict[str, _Spec] = {
    "cifar10": _Spec(
        classes=CIFAR10_CLASSES, shape=(32, 32, 3), find=_find_cifar10, read=_read_cifar10,
        how_to_get=("get the official python version from " + CIFAR10_URL + " (unpack it or "
                    "leave it as is), or run with --download on a machine with internet "
                    "(load_dataset(..., download=True)), or point --data-dir at an image tree / "
                    "archive laid out {train,test}/<class>/*.jpg|png")),
    "fashion-mnist": _Spec(
        classes=FASHION_MNIST_CLASSES, shape=(28, 28, 1), find=_find_fashion_mnist,
        read=_read_fashion_mnist,
        how_to_get=("install the Debian package: sudo apt-get install dataset-fashion-mnist "
                    f"(puts the IDX files in {FASHION_MNIST_SYSTEM_DIR}), or --download on a "
                    "machine with internet, or point --data-dir at the four IDX files"),
        system_dirs=(FASHION_MNIST_SYSTEM_DIR,)),
}

DATASETS: tuple[str, ...] = tuple(_SPECS)
"""The image-classification data sets (what ``cnnlab train --dataset`` accepts)."""

SEGMENTATION_DATASETS: tuple[str, ...] = ("horse", "isbi2012")
"""The binary-segmentation data sets, read by :mod:`cnnlab.data.segmentation`; :func:`load_dataset`
accepts these names too and then returns a
:class:`~cnnlab.data.segmentation.SegmentationDataset`."""


def _spec(name: str) -> _Spec:
    if name not in _SPECS:
        raise UserError(f"unknown dataset {name!r}; choose one of "
                        f"{list(DATASETS + SEGMENTATION_DATASETS)}")
    return _SPECS[name]


def default_data_dirs(name: str) -> list[Path]:
    """The folders searched for ``name`` when no ``data_dir`` is given, in order."""
    dirs = [Path(os.environ["CNNLAB_DATA"])] if os.environ.get("CNNLAB_DATA") else []
    dirs += [Path.cwd() / "data", _REPO.parent / "shared" / "data"]
    return dirs + list(_spec(name).system_dirs)


def default_cache_dir() -> Path:
    """``$CNNLAB_CACHE``, else ``~/.cache/cnnlab``."""
    env = os.environ.get("CNNLAB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "cnnlab"


def find_source(name: str, data_dir: str | Path | None = None) -> Path:
    """The file or folder ``load_dataset`` would read ``name`` from.

    Raises:
        DataNotFoundError: naming every place looked at and how to get the data.
    """
    spec = _spec(name)
    dirs = [Path(data_dir).expanduser()] if data_dir is not None else default_data_dirs(name)
    for folder in dirs:
        if folder.exists():
            found = spec.find(folder)
            if found is not None:
                return found
    looked = ", ".join(str(d) for d in dirs)
    raise DataNotFoundError(f"{name} not found (looked in: {looked}); {spec.how_to_get}")


def _source_files(name: str, source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if name == "fashion-mnist":  # the folder may hold other data sets too
        stems = [s for pair in _FMNIST_FILES.values() for s in pair]
        return [p for p in (_idx_file(source, s) for s in stems) if p is not None]
    return sorted(p for p in source.rglob("*") if p.is_file())


def _source_digest(name: str, source: Path) -> str:
    """SHA-256 of the source files' names (relative to ``source``) and contents: the cache is
    keyed on what the arrays were decoded from, not on paths or modification times."""
    h = hashlib.sha256(json.dumps({"format": _CACHE_FORMAT, "name": name}).encode())
    for p in _source_files(name, source):
        rel = p.name if p == source else str(p.relative_to(source))
        h.update(f"\0{rel}\0{p.stat().st_size}\0".encode())
        with open(p, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


_CACHED = ("train_images", "train_labels", "test_images", "test_labels", "mean", "std")


def _arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of the cached arrays (names, dtypes, shapes, bytes): an edited or damaged cache
    file does not match it."""
    h = hashlib.sha256()
    for key in _CACHED:
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _mean_std(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = images.reshape(-1, images.shape[-1])
    # per channel, in float64 so that 10^8 summands do not lose precision
    mean = x.mean(axis=0, dtype=np.float64)
    var = np.zeros_like(mean)
    for start in range(0, len(x), 1 << 22):  # chunks bound the float64 temporaries (32 MiB)
        d = x[start:start + (1 << 22)].astype(np.float64) - mean
        var += (d * d).sum(axis=0)
    std = np.sqrt(var / len(x))
    return tuple(float(v) for v in mean / 255), tuple(float(v) for v in std / 255)


def _download(name: str, data_dir: Path) -> None:
    import torchvision

    cls = {"cifar10": torchvision.datasets.CIFAR10,
           "fashion-mnist": torchvision.datasets.FashionMNIST}[name]
    data_dir.mkdir(parents=True, exist_ok=True)
    for train in (True, False):
        try:
            cls(root=str(data_dir), train=train, download=True)
        except (OSError, RuntimeError) as exc:  # URLError is an OSError
            raise DataNotFoundError(f"downloading {name} into {data_dir} failed ({exc}); "
                                    f"{_SPECS[name].how_to_get}") from exc


def load_dataset(name: str, *, data_dir: str | Path | None = None,
                 cache_dir: str | Path | None = None, use_cache: bool = True,
                 download: bool = False) -> Dataset:
    """Load a data set by name, decoding it once and caching the uint8 arrays.

    Args:
        name: one of :data:`DATASETS`.
        data_dir: where the data is (a folder or an archive); default: the search order in the
            module docstring.
        cache_dir: where decoded arrays are cached; default :func:`default_cache_dir`.
        use_cache: False decodes from the source every time and writes no cache.
        download: when the data is not found, download it with torchvision into ``data_dir``
            (default ``$CNNLAB_DATA`` or ``./data``). Needs internet.

    Returns:
        A :class:`Dataset` with ``(N, H, W, C)`` uint8 images; for a name of
        :data:`SEGMENTATION_DATASETS`, a :class:`~cnnlab.data.segmentation.SegmentationDataset`
        (``download`` does not apply to them).

    Raises:
        DataNotFoundError: the data is nowhere it looked; the message lists where and how to get it.
        DataError: a file is truncated or corrupt, an image has the wrong size, a label is out of
            range, class folders are unknown or empty.
    """
    if name in SEGMENTATION_DATASETS:
        from cnnlab.data.segmentation import load_segmentation

        return load_segmentation(name, data_dir=data_dir, cache_dir=cache_dir,
                                 use_cache=use_cache)
    spec = _spec(name)
    try:
        source = find_source(name, data_dir)
    except DataNotFoundError:
        if not download:
            raise
        target = Path(data_dir or os.environ.get("CNNLAB_DATA") or Path.cwd() / "data")
        _download(name, target)
        source = find_source(name, target)
    cache_file = digest = None
    if use_cache:
        folder = output_dir(cache_dir or default_cache_dir(), "--cache-dir")
        digest = _source_digest(name, source)
        cache_file = folder / f"{name}-{digest[:16]}.npz"
        cached = _read_cache(cache_file, name, spec, source, digest)
        if cached is not None:
            return cached
    splits = spec.read(source)
    for split, (images, _) in splits.items():
        if images.shape[1:] != spec.shape:
            raise DataError(f"{source}: {split} images have shape {images.shape[1:]}, expected "
                            f"{spec.shape} (H, W, C)")
    mean, std = _mean_std(splits["train"][0])
    ds = Dataset(name=name, classes=spec.classes, train_images=splits["train"][0],
                 train_labels=splits["train"][1], test_images=splits["test"][0],
                 test_labels=splits["test"][1], mean=mean, std=std, source=str(source))
    if cache_file is not None:
        _write_cache(cache_file, ds, digest)
    return ds


def _write_cache(path: Path, ds: Dataset, source_digest: str) -> None:
    arrays = {"train_images": ds.train_images, "train_labels": ds.train_labels,
              "test_images": ds.test_images, "test_labels": ds.test_labels,
              "mean": np.array(ds.mean), "std": np.array(ds.std)}
    meta = {"format": _CACHE_FORMAT, "name": ds.name, "source_sha256": source_digest,
            "arrays_sha256": _arrays_digest(arrays)}
    # atomic: a crash or a concurrent run never leaves a half-written cache behind
    atomic_write(path, lambda f: np.savez(f, meta=np.array(json.dumps(meta)), **arrays))


def read_npz_cache(path: Path, source: Path,
                   problem_of: Callable[[dict[str, np.ndarray]], str | None]
                   ) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file, or None (with a warning) when it is missing, unreadable or
    ``problem_of(arrays)`` names a problem: then the caller decodes ``source`` again and
    rewrites the cache (the image data sets here, the segmentation ones in
    :mod:`cnnlab.data.segmentation`)."""
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        problem = problem_of(arrays)
    except Exception as exc:  # noqa: BLE001 - our own derived file: any failure means rebuild
        problem = f"unreadable ({type(exc).__name__}: {one_line(exc, 120)})"
    if problem is not None:
        warnings.warn(f"ignoring the cache {path}: {problem}; decoding {source} again",
                      stacklevel=4)  # the caller of the data set's loader
        return None
    return arrays


def _read_cache(path: Path, name: str, spec: _Spec, source: Path,
                source_digest: str) -> Dataset | None:
    """The cached data set, or None (with a warning) when the file is missing, unreadable or
    does not match: then the caller decodes the source again and rewrites the cache."""
    arrays = read_npz_cache(path, source,
                            lambda a: _cache_problem(a, name, spec, source_digest))
    if arrays is None:
        return None
    return Dataset(name=name, classes=spec.classes, train_images=arrays["train_images"],
                   train_labels=arrays["train_labels"], test_images=arrays["test_images"],
                   test_labels=arrays["test_labels"],
                   mean=tuple(float(v) for v in arrays["mean"]),
                   std=tuple(float(v) for v in arrays["std"]), source=str(source))


def _cache_problem(arrays: dict[str, np.ndarray], name: str, spec: _Spec,
                   source_digest: str) -> str | None:
    """What is wrong with a cache file's arrays (None: it can be used)."""
    missing = [k for k in ("meta", *_CACHED) if k not in arrays]
    if missing:
        return f"it lacks {missing}"
    meta = json.loads(str(arrays["meta"]))
    if meta.get("format") != _CACHE_FORMAT or meta.get("name") != name:
        return f"written for {meta.get('name')!r} in cache format {meta.get('format')}"
    if meta.get("source_sha256") != source_digest:
        return "it was decoded from other source files (checksum differs)"
    channels = spec.shape[2]
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != spec.shape:
            return (f"{split} images are {images.dtype} {images.shape}, expected uint8 "
                    f"(N, {', '.join(map(str, spec.shape))})")
        if labels.dtype != np.int64 or labels.shape != (len(images),):
            return f"{split} labels are {labels.dtype} {labels.shape} for {len(images)} images"
        if len(labels) and (labels.min() < 0 or labels.max() >= len(spec.classes)):
            return f"{split} labels leave the range [0, {len(spec.classes)})"
    for key in ("mean", "std"):
        if arrays[key].shape != (channels,) or not np.isfinite(arrays[key]).all():
            return f"{key} is {arrays[key]!r}, expected {channels} finite numbers"
    if meta.get("arrays_sha256") != _arrays_digest(arrays):
        return "its arrays do not match their checksum (edited or damaged)"
    return None
