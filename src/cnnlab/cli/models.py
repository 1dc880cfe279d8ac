"""``cnnlab models``: list the registered models with their parameter counts.

Parameters are ``model.parameters()`` (batch-norm running statistics are buffers, listed apart in
``--json``; :func:`cnnlab.analysis.params.count_parameters`), counted at the paper's setting: width 1, 3 input channels and the paper's number of
classes (1000 for the ImageNet-size models, 10 for the CIFAR ones; ``model_info(name)
.reference_classes``). Models are built on the meta device, so listing costs no memory or time.
"""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "models",
        help="list the registered models with their parameter counts",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
    )
    p.add_argument("pattern", nargs="?", default=None,
                   help="only names matching this shell pattern, e.g. 'mobilenet*'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def _rows(pattern: str | None) -> list[dict]:
    import torch

    from cnnlab.analysis.params import count_parameters
    from cnnlab.models import create, list_models, model_info

    rows = []
    for name in list_models(pattern):
        info = model_info(name)
        with torch.device("meta"):  # shapes only: no allocation, no init cost
            model = create(name, num_classes=info.reference_classes)
        counted = count_parameters(model)
        rows.append({
            "name": name,
            "family": info.family,
            "default_input": list(info.default_input),
            "min_input": list(info.min_input),
            "num_classes": info.reference_classes,
            "params": counted.total,  # PyTorch's convention: model.parameters(), not buffers
            "buffers": counted.buffers,
            "supports_width": info.supports_width,
            "task": info.task,
            "options": list(info.options),
            "description": info.description,
        })
    return rows


def run(args: argparse.Namespace) -> int:
    from cnnlab.errors import UserError

    rows = _rows(args.pattern)
    if not rows:
        raise UserError(f"no registered model matches {args.pattern!r}; run `cnnlab models`")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich import box
    from rich.console import Console
    from rich.table import Table

    # Piped to a file or another program: no terminal width to respect, keep rows on one line.
    console = Console() if sys.stdout.isatty() else Console(width=200)
    wide = console.width >= 120  # the description needs about 60 columns of its own
    table = Table(title="cnnlab models (parameters at width 1, 3 input channels)",
                  box=box.SIMPLE_HEAD)
    for col, kw in (("name", {"style": "bold"}), ("family", {}), ("input", {}),
                    ("classes", {"justify": "right"}), ("params", {"justify": "right"})):
        table.add_column(col, no_wrap=True, **kw)
    if wide:
        table.add_column("description")
    for r in rows:
        cells = [r["name"], r["family"], "x".join(map(str, r["default_input"])),
                 str(r["num_classes"]), f"{r['params']:,}"]
        table.add_row(*cells, *([r["description"]] if wide else []))
    console.print(table)
    if not wide:
        console.print("[dim](descriptions: use a terminal of 120+ columns, or --json)[/dim]")
    return 0
