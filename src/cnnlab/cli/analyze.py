"""``cnnlab analyze TARGET``: per-layer shapes, parameters, operation counts and receptive fields.

TARGET is a spec file (``.yaml``/``.yml``/``.json``), a cnnlab model name, ``torchvision:NAME``
or ``package.module:callable``. When a layer is impossible, the rows before it are printed (in
the chosen format) and the command ends with one error line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import re
import sys

from cnnlab.errors import UserError

FORMATS = ("table", "json", "csv", "markdown")
_COUNTED = (
    "Counted, each in its own column: conv/linear multiply-accumulates (MACs, the papers' "
    "Mult-Adds; FLOPs = 2 x MACs), bias additions, normalisation, activations, pooling and "
    "reductions, other elementwise arithmetic (one op per element). Data movement (view, "
    "permute, cat, pad, slicing, copies) does no arithmetic and counts 0. Every other operation "
    "is listed by name under 'not counted'."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "analyze",
        help="per-layer shapes, parameters, MACs and receptive fields",
        description="Per-layer output shapes, parameters, operation counts and receptive fields.",
        epilog=_COUNTED,
    )
    p.add_argument("target", metavar="TARGET",
                   help="spec file, cnnlab model name, torchvision:NAME or package.module:callable")
    p.add_argument("--input", metavar="C,H,W", default=None,
                   help="per-sample input shape (spec files carry their own; cnnlab and "
                        "torchvision classifiers have defaults)")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    p.add_argument("--batch", type=int, default=1, metavar="N",
                   help="batch size for operation counts and activation memory (default: 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cnnlab.analysis import AnalysisError, analyze

    if args.batch < 1:
        raise UserError(f"--batch must be a positive integer, got {args.batch}")
    shape = parse_shape(args.input) if args.input is not None else None
    try:
        result = analyze(args.target, shape, batch=args.batch)
    except AnalysisError as exc:
        if exc.partial is not None and exc.partial.layers:
            _emit(exc.partial, args.format)  # the rows before the impossible layer
        raise
    _emit(result, args.format)
    return 0


def parse_shape(text: str) -> tuple[int, ...]:
    """``"3,32,32"`` (or ``3x32x32``, or ``10`` for a flat input) -> ``(3, 32, 32)``."""
    parts = [p for p in re.split(r"[,x\s]+", text.strip()) if p]
    if not parts or len(parts) > 4 or not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise UserError(f"--input must be positive integers C,H,W (e.g. 3,32,32), got {text!r}")
    return tuple(int(p) for p in parts)


def _emit(result, fmt: str) -> None:  # noqa: ANN001
    if fmt == "json":
        print(result.to_json())
    elif fmt == "csv":
        sys.stdout.write(result.to_csv())
    elif fmt == "markdown":
        sys.stdout.write(result.to_markdown())
    else:
        _print_table(result)


def _print_table(result) -> None:  # noqa: ANN001
    from rich.console import Console
    from rich.table import Table

    from cnnlab.analysis.result import TABLE_HEADER, display_cells

    console = Console(markup=False, highlight=False, soft_wrap=False,
                      width=None if sys.stdout.isatty() else 240)
    console.print(result.source)
    table = Table()
    for i, head in enumerate(TABLE_HEADER):
        table.add_column(head, justify="left" if i < 3 else "right", no_wrap=i == 0)
    for row in result.layers:
        table.add_row(*display_cells(row))
    console.print(table)
    for line in result.summary_lines() + result.footnotes():
        console.print(line)
