"""Reader for the IDX format of MNIST / Fashion-MNIST (``train-images-idx3-ubyte[.gz]``, ...).

The format (http://yann.lecun.com/exdb/mnist/): a 4-byte magic ``00 00 TT DD`` where ``TT`` is
the element type (``0x08`` = unsigned byte, the only one these data sets use) and ``DD`` the number
of dimensions, then ``DD`` big-endian int32 sizes, then the elements in row-major order.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from cnnlab.errors import DataError

_UBYTE = 0x08


def read_idx(path: str | Path, *, ndim: int) -> np.ndarray:
    """Read one IDX file of unsigned bytes, gzip-compressed (``.gz``) or raw.

    Args:
        path: the file.
        ndim: the number of dimensions expected (3 for images ``(N, H, W)``, 1 for labels ``(N,)``).

    Returns:
        A uint8 array of the shape stored in the header.

    Raises:
        DataError: gzip errors, a bad magic number, an element type other than unsigned byte, the
            wrong number of dimensions, or a payload whose size does not match the header.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read gzip/IDX data ({exc}); the file is truncated or "
                        "corrupt, download or install it again") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: bad IDX magic number {raw[:4].hex() or '(empty file)'}; "
                        f"expected 0000{_UBYTE:02x}{ndim:02x}")
    if raw[2] != _UBYTE or raw[3] != ndim:
        raise DataError(f"{path}: IDX magic {raw[:4].hex()} says element type 0x{raw[2]:02x} with "
                        f"{raw[3]} dimensions; expected unsigned bytes (0x08) with {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: IDX header truncated ({len(raw)} bytes, expected {header})")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != expected:
        raise DataError(f"{path}: IDX header says shape {shape} = {expected} bytes of data but the "
                        f"file holds {len(raw) - header}; the file is truncated or corrupt")
    # a writable copy: torch refuses to share memory with read-only buffers
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzip-compressed when ``path`` ends in ``.gz``).

    The inverse of :func:`read_idx`; used to build test fixtures and small data sets.
    """
    array = np.ascontiguousarray(array, dtype=np.uint8)
    data = (bytes([0, 0, _UBYTE, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
            + array.tobytes())
    path = Path(path)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
