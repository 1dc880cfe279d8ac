"""Strict JSON for every file cnnlab writes (metrics, results, explanations).

JSON has no NaN or infinity: they are written as ``null`` ("not available") so that any JSON
reader accepts the file. NumPy and torch scalars and arrays become plain numbers and lists;
paths become strings. Files are written with :func:`cnnlab._io.atomic_write`, so a reader (or
an interrupted run) never sees half a file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cnnlab._io import atomic_write


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


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Pretty, strict JSON (see the module docstring), written atomically."""
    atomic_write(path, json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")
