"""Readers of labelled images: CIFAR-10 python pickles and ``{train,test}/<class>/`` trees.

Both return ``{"train": (images, labels), "test": (images, labels)}`` with images ``(N, H, W, C)``
uint8 and labels ``(N,)`` int64, plus the class names in label order.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import warnings
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from cnnlab._io import one_line
from cnnlab.errors import DataError

SplitArrays = dict[str, tuple[np.ndarray, np.ndarray]]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")
_SPLITS = ("train", "test")

# ------------------------------------------------------------------------------------------------
# CIFAR-10 python pickles ("cifar-10-batches-py", what torchvision downloads)

CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"
CIFAR_META = "batches.meta"


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batches without executing arbitrary code from the file.

    The batches hold only dicts, lists, bytes and numpy arrays; any other global in the stream
    means the file is not a CIFAR batch.
    """

    # numpy's own reconstructors, looked up from live objects so that both the numpy 1 and 2
    # module paths ("numpy.core.multiarray" / "numpy._core.multiarray") map to them
    _ALLOWED = {
        "_reconstruct": np.zeros(1).__reduce__()[0],
        "scalar": np.float64(0).__reduce__()[0],
        "ndarray": np.ndarray,
        "dtype": np.dtype,
    }

    def find_class(self, module: str, name: str):  # noqa: D102 - pickle API
        if module.split(".")[0] == "numpy" and name in self._ALLOWED:
            return self._ALLOWED[name]
        if (module, name) == ("_codecs", "encode"):  # how Python 3 writes bytes at protocol 2
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR batch")


def _unpickle(data: bytes, where: str) -> dict:
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - damaged pickles raise many types
        raise DataError(f"{where}: not a readable CIFAR-10 pickle ({type(exc).__name__}: "
                        f"{one_line(exc, 120)}); "
                        "the file is truncated or corrupt") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a pickled dict, found {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_batch(data: bytes, where: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(data, where)
    missing = [k for k in ("data", "labels") if k not in batch]
    if missing:
        raise DataError(f"{where}: CIFAR batch lacks the keys {missing}")
    images = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3 * 32 * 32:
        raise DataError(f"{where}: CIFAR batch data has shape {images.shape} dtype {images.dtype}; "
                        "expected (N, 3072) uint8 (32x32 RGB images)")
    if labels.shape != (len(images),):
        raise DataError(f"{where}: {len(labels)} labels for {len(images)} images")
    _check_labels(labels, num_classes, where)
    # rows hold the R, G, B planes one after another: (N, 3, 32, 32) -> (N, 32, 32, 3)
    return images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{where}: label {int(labels[i])} at index {i} is out of range "
                        f"[0, {num_classes})")


def read_cifar_pickles(source: Path, classes: Sequence[str]) -> SplitArrays:
    """Read ``cifar-10-batches-py`` from its folder, or from ``cifar-10-python.tar.gz``.

    Args:
        source: the ``cifar-10-batches-py`` folder or the original tar(.gz) archive holding it.
        classes: the expected class names, checked against ``batches.meta``.
    """
    names = (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH, CIFAR_META)
    if source.is_dir():
        missing = [n for n in names if not (source / n).is_file()]
        if missing:
            raise DataError(f"{source}: the CIFAR-10 batches {missing} are missing")
        blobs = {n: (source / n).read_bytes() for n in names}
    else:
        blobs = _members_by_basename(source, names)
    meta = _unpickle(blobs[CIFAR_META], f"{source}/{CIFAR_META}")
    label_names = [n.decode() if isinstance(n, bytes) else str(n)
                   for n in meta.get("label_names", [])]
    if label_names != list(classes):
        raise DataError(f"{source}/{CIFAR_META}: class names {label_names} differ from the "
                        f"expected {list(classes)}")
    out: SplitArrays = {}
    for split, batches in (("train", CIFAR_TRAIN_BATCHES), ("test", (CIFAR_TEST_BATCH,))):
        parts = [_cifar_batch(blobs[b], f"{source}/{b}", len(classes)) for b in batches]
        out[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return out


def _members_by_basename(archive: Path, names: Sequence[str]) -> dict[str, bytes]:
    wanted = set(names)
    found: dict[str, bytes] = {}
    for parts, data in _iter_tar_files(archive):
        if parts[-1] in wanted:
            found[parts[-1]] = data
    missing = sorted(wanted - set(found))
    if missing:
        raise DataError(f"{archive}: the archive lacks the CIFAR-10 batches {missing}")
    return found


# ------------------------------------------------------------------------------------------------
# image trees: {train,test}/<class>/<name>.jpg|png, as a folder or a tar(.gz) archive


def _iter_tar_files(archive: Path) -> Iterator[tuple[tuple[str, ...], bytes]]:
    """Yield ``(path parts, bytes)`` for every regular file of a tar / tar.gz archive.

    ``tarfile`` ends the member list silently at the first damaged header after the first
    member; what follows it is checked here, so a corrupt archive is reported as corrupt rather
    than as missing content.
    """
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                if member.isfile():
                    f = tar.extractfile(member)
                    yield tuple(Path(member.name).parts), f.read()
            _check_tar_end(tar, archive)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{archive}: cannot read the archive ({type(exc).__name__}: "
                        f"{one_line(exc, 120)}); it is truncated or corrupt, copy or download "
                        "it again") from None


def _check_tar_end(tar: tarfile.TarFile, archive: Path) -> None:
    """Only zero padding may follow the last member (reading it also checks a gzip CRC)."""
    tar.fileobj.seek(tar.offset)
    while chunk := tar.fileobj.read(1 << 20):
        if chunk.strip(b"\0"):
            raise DataError(f"{archive}: the archive is corrupt (a damaged member header at "
                            f"byte {tar.offset} of the tar stream); copy or download it again")


def _iter_tree_files(root: Path) -> Iterator[tuple[tuple[str, ...], bytes]]:
    for split in _SPLITS:
        base = root / split
        if not base.is_dir():
            continue
        for dirpath, _, filenames in os.walk(base):
            for name in filenames:
                path = Path(dirpath) / name
                yield path.relative_to(root).parts, path.read_bytes()


def read_image_tree(source: Path, *, classes: Sequence[str] | None, size: tuple[int, int],
                    channels: int) -> tuple[SplitArrays, list[str]]:
    """Decode every image of a ``{train,test}/<class>/*`` tree (folder or tar / tar.gz archive).

    The tree may sit under one top folder (``cifar10/train/cat/0001.jpg``). Images are ordered by
    (class, file name) so the result does not depend on the archive's member order. Hidden files
    are skipped; any other non-image file in a class folder is an error.

    Decoding uses Pillow in this process, about 50 us per 32x32 JPEG (3-4 s for CIFAR-10, once:
    ``load_dataset`` caches the arrays). Threads do not help (half of that time is Python code
    holding the GIL) and a process pool is unsafe from arbitrary callers (spawn re-imports the
    caller's main module, fork clashes with torch's threads); see bench/NOTES-training.md.

    Args:
        source: the folder that holds ``train/`` and ``test/`` (or their top folder), or an archive.
        classes: the expected class folder names in label order, or None to take the sorted
            folder names of ``train/``.
        size: the expected image size ``(H, W)``.
        channels: 3 decodes as RGB, 1 as grayscale.

    Returns:
        ``({"train": (images (N, H, W, C) uint8, labels (N,) int64), "test": ...}, class names)``.
    """
    files = _iter_tar_files(source) if source.is_file() else _iter_tree_files(_tree_root(source))
    keys: dict[str, list[tuple[str, str]]] = {s: [] for s in _SPLITS}  # split -> [(class, name)]
    blobs: dict[str, list[tuple[str, bytes]]] = {s: [] for s in _SPLITS}
    for parts, data in files:
        if any(p.startswith(".") for p in parts):
            continue
        if len(parts) == 4:  # one top folder above split/class/file
            parts = parts[1:]
        if len(parts) != 3 or parts[0] not in _SPLITS:
            continue
        split, cls, name = parts
        if not name.lower().endswith(IMAGE_SUFFIXES):
            raise DataError(f"{source}: unexpected file {'/'.join(parts)} in a class folder; "
                            f"expected images ({', '.join(IMAGE_SUFFIXES)})")
        keys[split].append((cls, name))
        blobs[split].append(("/".join(parts), data))
    if not keys["train"] and not keys["test"]:
        raise DataError(f"{source}: no images found; expected the layout "
                        "[top/]{train,test}/<class>/<name>.jpg|png")
    names = sorted({c for c, _ in keys["train"]}) if classes is None else list(classes)
    out: SplitArrays = {}
    for split in _SPLITS:
        present = {c for c, _ in keys[split]}
        unknown = sorted(present - set(names))
        if unknown:
            raise DataError(f"{source}: unknown class folders {split}/{unknown}; expected the "
                            f"classes {names}")
        empty = [c for c in names if c not in present]
        if empty:
            raise DataError(f"{source}: class folders {split}/{empty} are missing or hold no "
                            "images")
        index = {c: i for i, c in enumerate(names)}
        labels = np.array([index[c] for c, _ in keys[split]], dtype=np.int64)
        order = sorted(range(len(labels)), key=lambda i: (labels[i], keys[split][i][1]))
        images = decode_images([blobs[split][i] for i in order], str(source), size, channels)
        out[split] = (images, labels[order])
    return out, names


def _tree_root(folder: Path) -> Path:
    if (folder / "train").is_dir() or (folder / "test").is_dir():
        return folder
    subs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return subs[0] if len(subs) == 1 else folder


def decode_images(items: Sequence[tuple[str, bytes]], source: str, size: tuple[int, int],
                  channels: int) -> np.ndarray:
    """Decode encoded images (JPEG, PNG, ...) into ``(N, H, W, C)`` uint8, checking their size.

    Args:
        items: ``(name used in error messages, encoded bytes)`` pairs.
        source: the file or folder they came from, for error messages.
        size: the expected ``(H, W)``.
        channels: 3 converts to RGB, 1 to grayscale (see :func:`read_image`).
    """
    h, w = size
    out = np.empty((len(items), h, w, channels), dtype=np.uint8)
    for i, (where, data) in enumerate(items):
        arr, _ = read_image(data, where, channels, source=source)
        if arr.shape[:2] != (h, w):
            raise DataError(f"{source}: {where} is {arr.shape[1]}x{arr.shape[0]} pixels, "
                            f"expected {w}x{h}")
        out[i] = arr
    return out


# Pillow modes holding more than 8 bits per pixel, and the range their values are scaled from
_HIGH_DEPTH = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535}


def read_image(data: bytes, where: str, channels: int, *, source: str | None = None
               ) -> tuple[np.ndarray, str | None]:
    """Decode one image file's bytes into uint8 ``(H, W, channels)`` -- the one image reader.

    8-bit images go through Pillow's mode conversion (RGB <-> grayscale, palettes, alpha
    dropped). Images of more bits per pixel are *scaled* to 0..255, never clipped (Pillow's own
    conversion clips a 16-bit image, which turns almost every pixel white): 16-bit integers by
    255/65535, 32-bit integers likewise when they lie in 0..65535 and otherwise from their own
    range, floats from 0..1 when they lie there and otherwise from their own range.

    Args:
        data: the encoded file (PNG, JPEG, TIFF, ...).
        where: names the image in error messages.
        channels: 3 for RGB, 1 for grayscale.
        source: the folder or archive holding it, prefixed to error messages.

    Returns:
        ``(image (H, W, channels) uint8, conversion)``: ``conversion`` says in words what was
        done to reach 8-bit ``channels`` (None when the file already was that).

    Raises:
        DataError: the bytes are not a readable image, or a float image holds NaN/inf.
    """
    from PIL import Image

    mode = "RGB" if channels == 3 else "L"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                src = im.mode
                if src in _HIGH_DEPTH or src in ("I", "F"):
                    gray, note = _scale_to_8bit(np.asarray(im), src, where)
                    arr = gray if channels == 1 else np.repeat(gray[..., None], 3, axis=2)
                    if channels == 3:
                        note += ", grayscale copied to R, G and B"
                else:
                    arr = np.asarray(im.convert(mode) if src != mode else im)
                    note = None if src == mode else f"converted from Pillow mode {src} to {mode}"
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises a dozen types on damaged files
        detail = one_line(exc, 120) or type(exc).__name__
        raise DataError(f"{source + ': ' if source else ''}cannot decode {where} ({detail}); the "
                        "file is truncated or corrupt, or not an image") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.array(arr, dtype=np.uint8), note  # a writable copy (torch.from_numpy)


def _scale_to_8bit(a: np.ndarray, mode: str, where: str) -> tuple[np.ndarray, str]:
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise DataError(f"{where} holds NaN or infinite pixel values")
    lo, hi = float(a.min()), float(a.max())
    if mode in _HIGH_DEPTH or (mode == "I" and lo >= 0 and hi <= 65535):
        top, base, how = 65535.0, 0.0, "16-bit"
    elif mode == "F" and lo >= 0 and hi <= 1:
        top, base, how = 1.0, 0.0, "floating-point 0..1"
    else:
        top, base, how = (hi if hi > lo else lo + 1), lo, f"range {lo:g}..{hi:g}"
    out = np.rint((a - base) * (255.0 / (top - base))).astype(np.uint8)
    return out, (f"{how} grayscale (Pillow mode {mode}) scaled linearly to 0..255 "
                 f"({base:g}..{top:g} -> 0..255), not clipped")
