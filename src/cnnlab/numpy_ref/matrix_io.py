"""Read a 2-D matrix of numbers from a JSON, CSV or ``.npy`` file, refusing anything else clearly.

- JSON: a list of rows, each a list of numbers: ``[[1, 2], [3, 4]]``.
- CSV: one row per line, values separated by commas (spaces around them are fine).
- ``.npy``: a 2-D array of integers or floats saved with ``numpy.save``.

Ragged rows, non-numbers, NaN/infinity, empty files and any other number of dimensions raise a
``DataError`` (a ``UserError``) that names the file and the first problem.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from cnnlab.errors import DataError, DataNotFoundError

SUFFIXES = (".json", ".csv", ".npy")


def load_matrix(path: str | Path, what: str = "matrix") -> np.ndarray:
    """A float64 ``(rows, cols)`` array read from ``path``.

    Args:
        path: a ``.json``, ``.csv`` or ``.npy`` file.
        what: what the matrix is for (e.g. ``"kernel"``), used in error messages.

    Raises:
        DataNotFoundError: the file does not exist.
        DataError: unsupported suffix, unreadable content, not a rectangular 2-D matrix of
            finite numbers.
    """
    path = Path(path)
    where = f"{what} file {path}"
    suffix = path.suffix.lower()
    if path.is_dir():
        raise DataError(f"{where} is a folder; give a matrix file ({', '.join(SUFFIXES)})")
    if suffix not in SUFFIXES:
        raise DataError(
            f"{where}: unsupported file type {path.suffix or '(none)'!r}; use {', '.join(SUFFIXES)}"
        )
    if not path.is_file():
        raise DataNotFoundError(f"{where} does not exist")
    if suffix == ".npy":
        m = _read_npy(path, where)
    else:
        rows = _read_json(path, where) if suffix == ".json" else _read_csv(path, where)
        m = np.array(rows, dtype=np.float64)
    if m.size == 0:
        raise DataError(f"{where}: the matrix is empty")
    if not np.isfinite(m).all():
        r, c = np.argwhere(~np.isfinite(m))[0]
        raise DataError(
            f"{where}: row {r + 1}, column {c + 1} is {m[r, c]}; only finite numbers are allowed"
        )
    return m


def _read_npy(path: Path, where: str) -> np.ndarray:
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY":
        raise DataError(f"{where}: not a .npy file (it does not start with the .npy magic "
                        "bytes); save the matrix with numpy.save")
    try:
        m = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - a damaged header raises SyntaxError, TokenError...
        if "pickle" in str(exc):  # never follow NumPy's advice to unpickle a user's file
            raise DataError(f"{where}: holds pickled Python objects, not a numeric array; "
                            "cnnlab does not load pickles") from None
        detail = " ".join(str(exc).split())[:160]
        raise DataError(f"{where}: not a readable .npy array ({detail}); the file is "
                        "truncated or corrupt") from None
    if not isinstance(m, np.ndarray):
        raise DataError(f"{where}: expected one array saved with numpy.save")
    if m.dtype.kind not in "iuf":
        raise DataError(f"{where}: expected integers or floats, got dtype {m.dtype}")
    if m.ndim != 2:
        raise DataError(
            f"{where}: expected a 2-D matrix, got a {m.ndim}-D array of shape {m.shape}"
        )
    return m.astype(np.float64)


def _read_json(path: Path, where: str) -> list[list[float]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}: not valid JSON ({exc})") from exc
    if not isinstance(data, list) or not data:
        raise DataError(
            f"{where}: expected a 2-D matrix as a non-empty list of rows, e.g. [[1, 2], [3, 4]]"
        )
    rows = []
    for r, row in enumerate(data, 1):
        if not isinstance(row, list):
            raise DataError(
                f"{where}: expected a 2-D matrix (a list of rows), but row {r} is {_short(row)}, "
                "not a list"
            )
        values = []
        for c, v in enumerate(row, 1):
            # bool is an int in Python but `true` in a matrix file is a mistake
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                dims = (
                    " (a 2-D matrix has numbers in its rows, not lists)"
                    if isinstance(v, list)
                    else ""
                )
                raise DataError(f"{where}: row {r}, column {c} is {_short(v)}, not a number{dims}")
            values.append(float(v))
        rows.append(values)
    _check_rectangular(rows, where)
    return rows


def _read_csv(path: Path, where: str) -> list[list[float]]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: tolerate a spreadsheet's BOM
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: not a text CSV file ({exc})") from exc
    rows = []
    for r, row in enumerate(csv.reader(text.splitlines()), 1):
        if not any(cell.strip() for cell in row):
            continue  # blank lines, e.g. a trailing newline
        values = []
        for c, cell in enumerate(row, 1):
            try:
                v = float(cell.strip())
            except ValueError:
                raise DataError(
                    f"{where}: line {r}, column {c} is {cell.strip()!r}, not a number"
                ) from None
            if not math.isfinite(v):
                raise DataError(
                    f"{where}: line {r}, column {c} is {cell.strip()!r}; only finite numbers "
                    "are allowed"
                )
            values.append(v)
        rows.append(values)
    if not rows:
        raise DataError(f"{where}: the file has no values")
    _check_rectangular(rows, where)
    return rows


def _check_rectangular(rows: list[list[float]], where: str) -> None:
    for r, row in enumerate(rows, 1):
        if len(row) != len(rows[0]):
            raise DataError(
                f"{where}: ragged matrix: row {r} has {len(row)} values but row 1 has "
                f"{len(rows[0])}"
            )


def _short(v: object) -> str:
    s = json.dumps(v)
    return s if len(s) <= 30 else s[:27] + "..."
