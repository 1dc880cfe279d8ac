"""The report document model and its Markdown / HTML renderers."""

from __future__ import annotations

import base64
import html
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab._io import atomic_write
from cnnlab._json import write_json
from cnnlab.report._table import markdown_table, write_csv

# A column: (key in the row dict, header text, formatter or None for fmt_num).
Column = tuple[str, str, Callable[[Any], str] | None]


def fmt_num(value: Any, digits: int = 3) -> str:
    """Format a number for a table: thousands separators for big integers, ``digits``
    significant figures otherwise, ``-`` for None/NaN."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.{digits - 1}e}"
        if abs(value) >= 10 ** digits:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


@dataclass
class _Block:
    kind: str  # heading | text | bullets | table | figure | code
    data: dict[str, Any] = field(default_factory=dict)


_INLINE = [
    (re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"`(.+?)`"), r"<code>\1</code>"),
]


def _inline_html(text: str) -> str:
    """The small Markdown subset used in report text (**bold**, `code`), escaped for HTML."""
    out = html.escape(text, quote=False)
    for pattern, repl in _INLINE:
        out = pattern.sub(repl, out)
    return out


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")
    if not slug:
        raise ValueError(f"figure name {name!r} has no usable characters")
    return slug


class Report:
    """A report under construction; figures are written to ``out_dir/plots`` as they are added.

    Args:
        out_dir: directory that receives ``report.md``, ``report.html`` and ``plots/``.
        title: the page title.
    """

    def __init__(self, out_dir: str | os.PathLike, title: str) -> None:
        self.out_dir = Path(out_dir)
        self.title = title
        self.blocks: list[_Block] = []
        (self.out_dir / "plots").mkdir(parents=True, exist_ok=True)

    # -- building ------------------------------------------------------------------------------
    def section(self, title: str, level: int = 2) -> Report:
        self.blocks.append(_Block("heading", {"text": title, "level": level}))
        return self

    def text(self, paragraph: str) -> Report:
        self.blocks.append(_Block("text", {"text": paragraph}))
        return self

    def bullets(self, items: Iterable[str]) -> Report:
        self.blocks.append(_Block("bullets", {"items": list(items)}))
        return self

    def code(self, content: str) -> Report:
        self.blocks.append(_Block("code", {"text": content}))
        return self

    def table(
        self,
        rows: Sequence[Mapping[str, Any]],
        columns: Sequence[Column] | None = None,
        caption: str | None = None,
    ) -> Report:
        """Add a table; ``columns`` defaults to every key of the first row."""
        if columns is None:
            columns = [(k, k, None) for k in (rows[0].keys() if rows else [])]
        header = [h for _, h, _ in columns]
        body = [[(f or fmt_num)(row.get(k)) for k, _, f in columns] for row in rows]
        self.blocks.append(_Block("table", {"header": header, "body": body, "caption": caption}))
        return self

    def figure(self, fig: Any, name: str, caption: str) -> Path:
        """Save a matplotlib figure (or copy an existing PNG path) as ``plots/<name>.png``."""
        path = self.out_dir / "plots" / f"{_slug(name)}.png"
        if isinstance(fig, (str, os.PathLike)):
            data = Path(fig).read_bytes()
            if not data.startswith(b"\x89PNG"):
                raise ValueError(f"{fig} is not a PNG file")
            path.write_bytes(data)
        else:
            import matplotlib.pyplot as plt

            fig.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(fig)
        self.blocks.append(_Block("figure", {"path": path, "caption": caption}))
        return path

    # -- rendering -----------------------------------------------------------------------------
    def to_markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        for b in self.blocks:
            d = b.data
            if b.kind == "heading":
                lines += ["#" * d["level"] + " " + d["text"], ""]
            elif b.kind == "text":
                lines += [d["text"], ""]
            elif b.kind == "bullets":
                lines += [f"- {item}" for item in d["items"]] + [""]
            elif b.kind == "code":
                lines += ["```", d["text"].rstrip("\n"), "```", ""]
            elif b.kind == "table":
                if d["caption"]:
                    lines += [f"*{d['caption']}*", ""]
                lines += [*markdown_table(d["header"], d["body"]), ""]
            elif b.kind == "figure":
                rel = d["path"].relative_to(self.out_dir).as_posix()
                lines += [f"![{d['caption']}]({rel})", "", f"*{d['caption']}*", ""]
        return "\n".join(lines)

    def to_html(self) -> str:
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(self.title)}</title>",
            f"<style>{_CSS}</style></head><body><main>",
            f"<h1>{html.escape(self.title)}</h1>",
        ]
        for b in self.blocks:
            d = b.data
            if b.kind == "heading":
                lvl = min(max(d["level"], 2), 6)
                parts.append(f"<h{lvl}>{_inline_html(d['text'])}</h{lvl}>")
            elif b.kind == "text":
                parts.append(f"<p>{_inline_html(d['text'])}</p>")
            elif b.kind == "bullets":
                items = "".join(f"<li>{_inline_html(i)}</li>" for i in d["items"])
                parts.append(f"<ul>{items}</ul>")
            elif b.kind == "code":
                parts.append(f"<pre>{html.escape(d['text'])}</pre>")
            elif b.kind == "table":
                cap = f"<caption>{_inline_html(d['caption'])}</caption>" if d["caption"] else ""
                head = "".join(f"<th>{html.escape(h)}</th>" for h in d["header"])
                body = "".join(
                    "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                    for row in d["body"]
                )
                parts.append(
                    f'<div class="tw"><table>{cap}<thead><tr>{head}</tr></thead>'
                    f"<tbody>{body}</tbody></table></div>"
                )
            elif b.kind == "figure":
                data = base64.b64encode(d["path"].read_bytes()).decode("ascii")
                cap = _inline_html(d["caption"])
                parts.append(
                    f'<figure><img alt="{html.escape(d["caption"])}" '
                    f'src="data:image/png;base64,{data}"><figcaption>{cap}</figcaption></figure>'
                )
        parts.append("</main></body></html>")
        return "\n".join(parts)

    def write(self) -> tuple[Path, Path]:
        """Write ``report.md`` and ``report.html``; returns their paths."""
        md = self.out_dir / "report.md"
        page = self.out_dir / "report.html"
        atomic_write(md, self.to_markdown())
        atomic_write(page, self.to_html())
        return md, page


def save_results(out_dir: str | os.PathLike, payload: Mapping[str, Any],
                 rows: Sequence[Mapping[str, Any]]) -> tuple[Path, Path]:
    """Write ``results.json`` (the whole payload) and ``results.csv`` (one line per row).

    Values that JSON cannot hold (NaN, inf) are written as null so the file is strict JSON.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jpath, cpath = out / "results.json", out / "results.csv"
    write_json(jpath, payload)
    write_csv(cpath, rows)
    return jpath, cpath


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1b1f24;margin:0;
background:#f6f7f9}main{max-width:1100px;margin:0 auto;padding:24px 32px;background:#fff}
h1{font-size:1.8em;border-bottom:2px solid #2b6cb0;padding-bottom:.3em}h2{margin-top:1.6em;
color:#2b6cb0}table{border-collapse:collapse;font-size:.88em;margin:.6em 0}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:right}th{background:#eef2f7}
td:first-child,th:first-child{text-align:left}caption{caption-side:top;text-align:left;
font-style:italic;padding:4px 0}.tw{overflow-x:auto}figure{margin:1em 0}
img{max-width:100%;border:1px solid #e1e4e8}figcaption{font-size:.9em;color:#57606a}
code,pre{background:#f0f2f4;border-radius:3px;padding:1px 4px;font-size:.9em}
pre{padding:8px;overflow-x:auto}
"""
