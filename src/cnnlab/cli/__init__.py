"""The ``cnnlab`` command line.

Each command lives in its own module under ``cnnlab.cli`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` to a callable ``(args) -> int``. Modules are imported
lazily so that ``cnnlab walkthrough`` does not pay for importing torch.

User errors (``cnnlab.errors.UserError``, which subclasses ``ValueError``) are printed as one line
``cnnlab: error: ...`` with exit status 2; argparse usage errors also exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

from cnnlab import __version__, _malloc
from cnnlab.errors import UserError

# command name -> (module, one-line help). Keep in the order a newcomer meets them.
COMMANDS: dict[str, tuple[str, str]] = {
    "walkthrough": ("cnnlab.cli.walkthrough", "step-by-step NumPy walkthroughs of the course exercises"),
    "analyze": ("cnnlab.cli.analyze", "per-layer shapes, parameters, MACs and receptive fields"),
    "models": ("cnnlab.cli.models", "list the registered models with their parameter counts"),
    "train": ("cnnlab.cli.train", "train a model on CIFAR-10 or Fashion-MNIST"),
    "study": ("cnnlab.cli.study", "end-to-end studies that write a report"),
    "tune": ("cnnlab.cli.tune", "Hyperband hyperparameter search (Optuna), resumable, many workers"),
    "explain": ("cnnlab.cli.explain", "Grad-CAM / Guided Backprop explanations and their sanity checks"),
}


def _build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnlab",
        description="Compute, train, measure and explain convolutional networks.",
    )
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_) in COMMANDS.items():
        if name == command:
            importlib.import_module(module).register(sub)
        else:
            sub.add_parser(name, help=help_, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = _build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    args.argv = argv  # what a command that relaunches itself (train --nproc-per-node) passes on
    _malloc.tune()  # every command: freed tensor memory stays in the process (see _malloc)
    warnings.formatwarning = _one_line_warning
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        # one line whatever the message holds (a library's multi-line text quoted in it)
        print(f"cnnlab: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cnnlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`cnnlab models --json | head`): not an error of ours. Point stdout
        # at devnull so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    """Warnings on the command line: ``cnnlab: warning: ...`` on one line, no source lines."""
    return f"cnnlab: warning: {' '.join(str(message).split())}\n"


def add_threads_option(parser: argparse._ActionsContainer) -> None:
    """``--threads N``: torch CPU threads for a command that computes."""
    parser.add_argument("--threads", type=_positive_int, metavar="N",
                        help="torch CPU threads (default: torch's choice; on a busy machine 1 is "
                             "often faster; exact resumes need the same number)")


def apply_threads(args: argparse.Namespace) -> None:
    """Set torch's CPU threads from ``--threads`` when it was given."""
    threads = getattr(args, "threads", None)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def error(message: str) -> int:
    """Print one CLI error line and return exit status 2 (for commands' own checks)."""
    print(f"cnnlab: error: {message}", file=sys.stderr)
    return 2
