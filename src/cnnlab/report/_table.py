"""The one Markdown table renderer and the one CSV writer of cnnlab.

Every Markdown table cnnlab prints or writes (study reports, ``cnnlab analyze --format md``) goes
through :func:`markdown_table`, so escaping is done once: a ``|`` inside a cell would otherwise
split the cell, and a line break would end the table. Every CSV file of rows goes through
:func:`csv_text` / :func:`write_csv`: columns are the union of the rows' keys in first-seen
order, and values are made strict (NaN/inf -> empty, as JSON null) by
:func:`cnnlab._json.json_safe`.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cnnlab._io import atomic_write
from cnnlab._json import json_safe


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    """A GitHub-flavoured Markdown table as lines (header, rule, one line per row).

    Cells are already formatted strings; ``|`` is escaped and line breaks become spaces.
    """
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in body]
    return lines


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """CSV with a header line; ``columns`` defaults to every key of every row, first seen first."""
    if columns is None:
        keys: list[str] = []
        for row in rows:
            keys += [k for k in row if k not in keys]
        columns = keys
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json_safe(row.get(k)) for k in columns})
    return buf.getvalue()


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]],
              columns: Sequence[str] | None = None) -> Path:
    """Write :func:`csv_text` to ``path`` atomically; returns the path."""
    path = Path(path)
    atomic_write(path, csv_text(rows, columns))
    return path
