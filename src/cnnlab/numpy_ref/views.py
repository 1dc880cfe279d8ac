"""Show a sequence of named matrices: as aligned text, and as one figure of annotated heatmaps.

Text needs NumPy only; the figure imports matplotlib when it is drawn (and uses
``matplotlib.figure.Figure`` directly, so no GUI backend or pyplot state is involved).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab.errors import UserError

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Step:
    """One named matrix of a walkthrough.

    Attributes:
        title: what the matrix is, e.g. ``"conv = padded input * K"``.
        matrix: 2-D values (a scalar or 1-D array is shown as one row).
        note: explanation printed under the title (may span lines).
        highlight: ``(row, col, height, width)`` of cells to outline in the figure, e.g. the
            window that produced a worked example.
    """

    title: str
    matrix: Any
    note: str = ""
    highlight: tuple[int, int, int, int] | None = None

    @property
    def values(self) -> np.ndarray:
        m = np.asarray(self.matrix, dtype=np.float64)
        if m.ndim > 2:
            raise UserError(f"step {self.title!r}: can only show 2-D matrices, got shape {m.shape}")
        return np.atleast_2d(m)


def _decimals_needed(values: np.ndarray, max_decimals: int) -> int:
    """Fewest decimals (<= max_decimals) that show every value as rounding to max_decimals does,
    so 58.99999999999999 prints as 59 and 0.5 as 0.5."""
    target = np.round(values, max_decimals)
    for d in range(max_decimals + 1):
        if np.allclose(np.round(values, d), target, rtol=0, atol=0.5 * 10.0**-max_decimals):
            return d
    return max_decimals


def format_number(v: float, max_decimals: int = 4) -> str:
    """One number with as few decimals as it needs (at most ``max_decimals``); never ``-0``."""
    d = _decimals_needed(np.asarray([v], dtype=np.float64), max_decimals)
    s = f"{v:.{d}f}"
    return "0" if float(s) == 0 else s


def format_cells(m: np.ndarray, max_decimals: int = 4) -> list[list[str]]:
    """Every cell of a 2-D matrix as text, with one shared number of decimals."""
    d = _decimals_needed(m, max_decimals)
    cells = [[f"{v:.{d}f}" for v in row] for row in m]
    zero = f"{0:.{d}f}"
    return [[zero if float(c) == 0 else c for c in row] for row in cells]  # no "-0.0"


def format_matrix(matrix: Any, max_decimals: int = 4, indent: str = "  ") -> str:
    """A matrix as right-aligned columns, e.g.::

        59  -12.5
         0    3.25

    Args:
        matrix: 2-D values (scalars and 1-D arrays are shown as one row).
        max_decimals: values are rounded to this many decimals; fewer are shown when enough.
        indent: prefix of every line.
    """
    m = Step("", matrix).values
    cells = format_cells(m, max_decimals)
    width = max(len(c) for row in cells for c in row)
    return "\n".join(indent + "  ".join(c.rjust(width) for c in row) for row in cells)


def shape_label(matrix: Any) -> str:
    """``"5x5"`` for a matrix, ``"scalar"`` for one number."""
    m = np.asarray(matrix)
    return "scalar" if m.ndim == 0 else "x".join(str(s) for s in m.shape)


def render_text(steps: Sequence[Step], max_decimals: int = 4) -> str:
    """All steps as text: a numbered title with the shape, the note, then the matrix."""
    blocks = []
    for number, step in enumerate(steps, 1):
        lines = [f"[{number}] {step.title}  ({shape_label(step.matrix)})"]
        lines += [f"    {line}" for line in step.note.splitlines()]
        lines.append(format_matrix(step.values, max_decimals, indent="    "))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


# Panel geometry, in inches and points: a panel is about 3.3 in wide whatever the matrix size,
# so the font shrinks with the cell; below _MIN_FONT the values would be unreadable and are left
# out (the colours still show the pattern, and the text output has every value).
_PANEL_IN = 3.3
_MAX_FONT, _MIN_FONT = 13.0, 6.0


def plot_steps(
    steps: Sequence[Step],
    title: str | None = None,
    footer: str | None = None,
    ncols: int | None = None,
    max_decimals: int = 2,
) -> Figure:
    """One figure with an annotated heatmap per step.

    Each panel shows the step's values written in the cells (black or white, whichever reads
    better on the cell's colour), a colour bar, and a title with the step's name and shape.
    Matrices with both signs use a diverging map centred on 0 (red positive, blue negative).

    Args:
        steps: the matrices to show, in order.
        title: figure title.
        footer: small text at the bottom (e.g. settings and code version).
        ncols: panels per row (default: up to 4).
        max_decimals: decimals written in the cells (the text output has more).

    Returns:
        A ``matplotlib.figure.Figure`` (save it with ``fig.savefig``).
    """
    from matplotlib.figure import Figure

    if not steps:
        raise UserError("plot_steps: no steps to show")
    ncols = ncols or min(4, len(steps))
    nrows = -(-len(steps) // ncols)
    fig = Figure(
        figsize=(ncols * (_PANEL_IN + 1.0), nrows * (_PANEL_IN + 1.1) + 0.6), layout="constrained"
    )
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat[len(steps) :]:
        ax.set_visible(False)
    for ax, step in zip(axes.flat, steps, strict=False):  # spare panels are hidden above
        _heatmap(fig, ax, step, max_decimals)
    if title:
        fig.suptitle(title, fontsize=14, fontweight="bold")
    if footer:
        fig.supxlabel(footer, fontsize=8, color="0.35")
    return fig


def _heatmap(fig: Figure, ax: Any, step: Step, max_decimals: int) -> None:
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    m = step.values
    lo, hi = float(m.min()), float(m.max())
    if lo < 0 < hi:
        bound = max(-lo, hi)
        cmap, norm = "RdBu_r", Normalize(-bound, bound)
    elif hi > lo:
        cmap, norm = "viridis", Normalize(lo, hi)
    else:  # one value (or all equal): no scale to show, a neutral colour
        cmap, norm = "Greys", Normalize(lo - 0.2, lo + 1.0)  # light grey
    image = ax.imshow(m, cmap=cmap, norm=norm)
    if hi > lo:
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if step.highlight is not None:
        r, c, h, w = step.highlight
        ax.add_patch(
            Rectangle((c - 0.5, r - 0.5), w, h, fill=False, edgecolor="#ff7f0e", linewidth=3)
        )
    ax.set_title(f"{step.title}\n({shape_label(step.matrix)})", fontsize=10)
    ax.set_xticks(range(m.shape[1]))
    ax.set_yticks(range(m.shape[0]))
    ax.tick_params(labelsize=7, length=0)
    cells = format_cells(m, max_decimals)
    chars = max(len(c) for row in cells for c in row)
    cell_pt = _PANEL_IN * 72 / max(m.shape)
    # a digit is about 0.6 em wide; leave 15% of the cell as margin
    font = min(_MAX_FONT, 0.85 * cell_pt / (0.6 * chars))
    if font < _MIN_FONT:
        ax.set_xlabel("(too many cells to write the values: see the text output)", fontsize=7)
        return
    colours = image.cmap(image.norm(m))
    for r in range(m.shape[0]):
        for c in range(m.shape[1]):
            red, green, blue, _ = colours[r, c]
            luminance = 0.299 * red + 0.587 * green + 0.114 * blue
            ax.text(
                c,
                r,
                cells[r][c],
                ha="center",
                va="center",
                fontsize=font,
                color="black" if luminance > 0.5 else "white",
            )


def save_steps_figure(
    steps: Sequence[Step],
    path: str | Path,
    title: str | None = None,
    footer: str | None = None,
    dpi: int = 130,
) -> Path:
    """Draw ``plot_steps`` and save it (PNG, PDF or SVG from the suffix); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_steps(steps, title, footer).savefig(path, dpi=dpi)
    return path
