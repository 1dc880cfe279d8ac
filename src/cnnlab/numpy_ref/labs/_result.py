"""What every lab returns: numbers, one step's arithmetic, a conclusion, and a figure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab.numpy_ref.views import format_number

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plain(value: Any) -> Any:
    """``value`` with NumPy arrays and scalars as Python lists and numbers (NaN/inf as None)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return plain(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def num(v: float, decimals: int = 4) -> str:
    """A number as the text shows it: ``decimals`` decimals at most (as few as needed) from 1
    up, ``decimals`` significant digits below 1."""
    v = float(v)
    if not np.isfinite(v):
        return str(v)
    if abs(v) >= 1e7:
        return f"{v:.3g}"
    if 0 < abs(v) < 1:  # significant digits, so 0.00123 is not rounded to 0.0012
        return f"{v:.{decimals}g}"
    return format_number(v, decimals)


def paren(v: float) -> str:
    """:func:`num`, in parentheses when negative (for written-out products)."""
    s = num(v)
    return f"({s})" if s.startswith("-") else s


def table(header: list[str], rows: list[list[Any]]) -> str:
    """Right-aligned columns; numbers through :func:`num`."""
    cells = [header] + [[c if isinstance(c, str) else num(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells)


@dataclass(frozen=True)
class LabResult:
    """One lab's outcome.

    Attributes:
        name: the walkthrough's name, e.g. ``"adam"``.
        title: one line saying what was measured.
        settings: one line with the settings used.
        sections: ``(heading, body)`` blocks of text, in order.
        worked: one step's arithmetic written out (lines).
        conclusion: a sentence generated from the numbers.
        values: every number reported (arrays allowed); ``to_json`` makes them plain.
        draw: ``draw(fig)`` fills a matplotlib figure with the lab's panels.
        figsize: the figure's size in inches.
    """

    name: str
    title: str
    settings: str
    sections: list[tuple[str, str]]
    worked: list[str]
    conclusion: str
    values: dict[str, Any]
    draw: Callable[[Figure], None] = field(repr=False, compare=False)
    figsize: tuple[float, float] = (13.0, 4.2)

    def text(self) -> str:
        blocks = [f"{self.title}\nsettings: {self.settings}"]
        for n, (head, body) in enumerate(self.sections, 1):
            blocks.append(f"[{n}] {head}\n" + "\n".join("    " + line for line in body.splitlines()))
        blocks.append("one step written out:\n" + "\n".join("    " + w for w in self.worked))
        blocks.append(f"conclusion: {self.conclusion}")
        return "\n\n".join(blocks)

    def to_json(self) -> dict[str, Any]:
        """The numbers as plain JSON values, with ``conclusion`` last."""
        return {**plain(self.values), "conclusion": self.conclusion}

    def figure(self, title: str | None = None, footer: str | None = None) -> Figure:
        from matplotlib.figure import Figure

        fig = Figure(figsize=self.figsize, layout="constrained")
        self.draw(fig)
        fig.suptitle(title or self.title, fontsize=12, fontweight="bold")
        if footer:
            fig.supxlabel(footer, fontsize=8, color="0.35")
        return fig

    def save_figure(self, path: str | Path, title: str | None = None,
                    footer: str | None = None, dpi: int = 120) -> Path:
        """Draw the figure and save it (PNG, PDF or SVG from the suffix); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.figure(title, footer).savefig(path, dpi=dpi)
        return path
