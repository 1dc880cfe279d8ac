"""Strict JSON for every file cnnlab writes (metrics, results, explanations).

JSON has no NaN or infinity: they are written as ``null`` ("not available") so that any JSON
reader accepts the file. NumPy and torch scalars and arrays become plain numbers and lists;
paths become strings. Files are written to a temporary name and renamed into place, so a reader
(or an interrupted run) never sees half a file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf as None, NumPy/torch values as Python ones, paths as strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy / torch scalars and arrays
        return json_safe(value.tolist())
    return value


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Pretty, strict JSON (see the module docstring), written atomically."""
    atomic_write_text(path, json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")
