"""Read true labels and predicted scores from a CSV or JSON file, refusing anything else clearly.

- CSV with a header: a ``label`` column and either one ``score`` column (the probability of
  class 1) or one column per class (class probabilities, the header names the classes).
- JSON: ``{"labels": [...], "scores": [...] or [[...], ...], "classes": [...]}`` (classes
  optional).

Labels are class indices (0 ... K-1) or class names. Every problem raises a ``DataError`` naming
the file, the line and the value.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.errors import DataError, DataNotFoundError


def _label(value: Any, classes: Sequence[str], where: str) -> int:
    text = str(value).strip()
    if text in classes:
        return list(classes).index(text)
    try:
        f = float(text)
    except ValueError:
        f = math.nan
    if math.isfinite(f) and f == int(f) and 0 <= int(f) < len(classes):
        return int(f)
    allowed = "0 or 1" if len(classes) == 2 else f"0 ... {len(classes) - 1}"
    raise DataError(f"{where}: label {text!r} is not {allowed} nor one of the classes "
                    f"{', '.join(classes)}")


def _score(value: Any, where: str) -> float:
    try:
        v = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        raise DataError(f"{where}: score {value!r} is not a number") from None
    if not math.isfinite(v):
        raise DataError(f"{where}: score {value!r} is not a finite number")
    return v


def load_scores(path: str | Path, classes: Sequence[str] | None = None
                ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """``(labels (N,) int64, scores (N,) or (N, K) float64, class names)`` from ``path``.

    Args:
        path: a ``.csv`` or ``.json`` file.
        classes: the class names, when the file does not give them (default ``("0", "1")``
            for one score column, the header's names for several).
    """
    path = Path(path)
    where = f"scores file {path}"
    if path.suffix.lower() not in (".csv", ".json"):
        raise DataError(f"{where}: unsupported file type {path.suffix or '(none)'!r}; use .csv "
                        "or .json")
    if not path.is_file():
        raise DataNotFoundError(f"{where} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: not a text file ({exc})") from exc
    if path.suffix.lower() == ".json":
        return _from_json(text, classes, where)
    return _from_csv(text, classes, where)


def _from_csv(text: str, classes: Sequence[str] | None, where: str):
    rows = [r for r in csv.reader(text.splitlines()) if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise DataError(f"{where}: expected a header (label,score or label,<class>,...) and at "
                        "least one row")
    header = [h.strip() for h in rows[0]]
    if "label" not in header:
        raise DataError(f"{where}: the header {','.join(header)!r} has no 'label' column")
    li = header.index("label")
    score_cols = [j for j in range(len(header)) if j != li]
    if not score_cols:
        raise DataError(f"{where}: no score column besides 'label'")
    if len(score_cols) == 1:
        names = tuple(classes) if classes else ("0", "1")
    else:
        names = tuple(classes) if classes else tuple(header[j] for j in score_cols)
    labels, scores = [], []
    for n, row in enumerate(rows[1:], 2):
        at = f"{where}, line {n}"
        if len(row) != len(header):
            raise DataError(f"{at}: {len(row)} values but the header has {len(header)}")
        labels.append(_label(row[li], names, at))
        scores.append([_score(row[j], at) for j in score_cols])
    s = np.array(scores, dtype=np.float64)
    return np.array(labels, dtype=np.int64), (s[:, 0] if s.shape[1] == 1 else s), names


def _from_json(text: str, classes: Sequence[str] | None, where: str):
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or "labels" not in data or "scores" not in data:
        raise DataError(f'{where}: expected {{"labels": [...], "scores": [...]}}')
    labels, scores = data["labels"], data["scores"]
    if not isinstance(labels, list) or not isinstance(scores, list) or not labels:
        raise DataError(f"{where}: labels and scores must be non-empty lists")
    if len(labels) != len(scores):
        raise DataError(f"{where}: {len(labels)} labels but {len(scores)} scores; they must "
                        "match one to one")
    multi = isinstance(scores[0], list)
    given = data.get("classes") or classes
    if given:
        names = tuple(str(c) for c in given)
    else:
        names = tuple(str(j) for j in range(len(scores[0]) if multi else 2))
    y = [_label(v, names, f"{where}, item {i + 1}") for i, v in enumerate(labels)]
    rows = []
    for i, v in enumerate(scores):
        at = f"{where}, item {i + 1}"
        if multi != isinstance(v, list) or (multi and len(v) != len(scores[0])):
            raise DataError(f"{at}: every score must be a number, or every one a list of "
                            f"{len(scores[0]) if multi else 'K'} numbers")
        rows.append([_score(e, at) for e in v] if multi else _score(v, at))
    return np.array(y, dtype=np.int64), np.array(rows, dtype=np.float64), names
