"""``cnnlab walkthrough residual|conv-backward|adam|batch-size|regularization|batchnorm|dropout|
linear-collapse|metrics``: the course exercises and labs, every number shown.

Prints every intermediate (or, with ``--json``, only the result values as one JSON object on
stdout) and saves one figure into ``--out``. NumPy and matplotlib only: no torch import (``metrics
--run`` reads the run's saved predictions with NumPy).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.errors import UserError

DEFAULT_OUT = Path("runs/walkthrough")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "walkthrough",
        help="step-by-step NumPy walkthroughs of the course exercises",
        description="Step-by-step NumPy walkthroughs of the course exercises: every intermediate "
        "matrix printed and drawn as an annotated heatmap.",
    )
    sub = parser.add_subparsers(dest="walkthrough", metavar="WALKTHROUGH", required=True)

    res = sub.add_parser(
        "residual",
        help="conv -> ReLU -> + input -> ReLU -> max pool -> global average pool",
        description="The residual-block exercise on one single-channel image: conv -> ReLU -> "
        "add the input (skip) -> ReLU -> max pool -> global average pool. Defaults: the course's "
        "5x5 input and 3x3 filter, stride 1, padding 1, 2x2 max pool with stride 2 (floor mode, "
        "as PyTorch: 5x5 pools to 2x2). Matrix files: JSON (list of rows), CSV or .npy.",
    )
    res.add_argument("--input", type=Path, metavar="FILE", help="input image (H x W)")
    res.add_argument("--kernel", type=Path, metavar="FILE", help="filter (kh x kw)")
    res.add_argument("--stride", type=int, default=1, help="convolution stride (default 1)")
    res.add_argument(
        "--padding",
        default="1",
        help="convolution padding: an int, PH,PW, 'same' or 'valid' (default 1)",
    )
    res.add_argument(
        "--pool",
        type=int,
        default=2,
        metavar="SIZE",
        help="max-pool window SIZE x SIZE (default 2)",
    )
    res.add_argument("--pool-stride", type=int, metavar="S", help="max-pool stride (default SIZE)")
    res.add_argument(
        "--ceil-mode",
        action="store_true",
        help="keep partial pooling windows (PyTorch's ceil_mode; default floor)",
    )
    _add_output_options(
        res,
        "residual.png",
        "conv, relu, residual (the block output relu(relu + input)), maxpool (nested lists), "
        "gap (a number)",
    )
    res.set_defaults(func=run_residual)

    back = sub.add_parser(
        "conv-backward",
        help="dL/dW and dL/dX of a valid, stride-1 convolution",
        description="Gradients of Y = xcorr(X, W) (valid, stride 1): dL/dW = xcorr(X, dL/dY) and "
        "dL/dX = xcorr(zero-padded dL/dY, rot180(W)), the full convolution. Defaults: the course's "
        "4x4 X, 3x3 W and 2x2 dL/dY. Matrix files: JSON (list of rows), CSV or .npy.",
    )
    back.add_argument("--x", "--input", dest="x", type=Path, metavar="FILE", help="input X (H x W)")
    back.add_argument(
        "--w", "--kernel", dest="w", type=Path, metavar="FILE", help="kernel W (kh x kw)"
    )
    back.add_argument(
        "--dy",
        "--grad-output",
        dest="dy",
        type=Path,
        metavar="FILE",
        help="upstream gradient dL/dY, shape (H - kh + 1) x (W - kw + 1)",
    )
    _add_output_options(back, "conv-backward.png", "y, dW, dX (nested lists)")
    back.set_defaults(func=run_conv_backward)
    _register_rnn(sub)

    from cnnlab.cli import _labs

    _labs.register(sub, _add_output_options)


def _add_output_options(parser: argparse.ArgumentParser, figure: str, keys: str) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"folder for the figure {figure} (default {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help=f"print only the result values as one JSON object on stdout: {keys}",
    )
    parser.add_argument("--no-figure", action="store_true", help="do not draw or save the figure")


def parse_padding(text: str) -> int | tuple[int, int] | str:
    """``--padding``: ``"1"`` -> 1, ``"1,2"`` -> (1, 2), ``"same"``/``"valid"`` as they are."""
    t = text.strip().lower()
    if t in ("same", "valid"):
        return t
    try:
        parts = [int(p) for p in t.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return (parts[0], parts[1])
    raise UserError(f"--padding must be an int, PH,PW, 'same' or 'valid', got {text!r}")


def _load(path: Path | None, what: str) -> np.ndarray | None:
    from cnnlab.numpy_ref.matrix_io import load_matrix

    return None if path is None else load_matrix(path, what)


def _finish(result: Any, args: argparse.Namespace, name: str, title: str, settings: str) -> int:
    """Print the text or the JSON, and save the figure unless told not to."""
    from cnnlab.numpy_ref.views import save_steps_figure

    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print(result.text())
    if args.no_figure:
        return 0
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file, not a folder")
    path = args.out / f"{name}.png"
    try:
        if hasattr(result, "save_figure"):  # a lab: its own panels
            result.save_figure(path, title, _footer(settings))
        else:
            save_steps_figure(result.steps(), path, title, _footer(settings))
    except OSError as exc:
        raise UserError(f"cannot write the figure {path}: {exc.strerror or exc}") from exc
    # keep stdout pure JSON with --json
    print(f"\nfigure: {path}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _footer(settings: str) -> str:
    """What produced the figure. Not provenance.environment(): that imports torch and
    torchvision (seconds), which a NumPy walkthrough has no use for."""
    from cnnlab import __version__
    from cnnlab.provenance import git_commit

    commit = git_commit()
    return (
        f"{settings}   |   cnnlab {__version__}, git {commit[:12] if commit else 'unknown'}"
        f"{'-dirty' if commit and commit.endswith('-dirty') else ''}, numpy {np.__version__}"
    )


@contextmanager
def _no_overflow(what: str) -> Iterator[None]:
    """Float64 overflow or an invalid operation (inf - inf) is the user's input, not a result:
    one error line instead of NumPy's warnings and an ``inf`` printed as if it were a value."""
    with np.errstate(over="raise", invalid="raise"):
        try:
            yield
        except FloatingPointError as exc:
            raise UserError(f"{what}: the values are too large for float64 ({exc}; the largest "
                            f"float64 is about 1.8e308); scale the input down") from None


def run_residual(args: argparse.Namespace) -> int:
    with _no_overflow("walkthrough residual"):
        return _run_residual(args)


def run_conv_backward(args: argparse.Namespace) -> int:
    with _no_overflow("walkthrough conv-backward"):
        return _run_conv_backward(args)


def _run_residual(args: argparse.Namespace) -> int:
    from cnnlab.numpy_ref.walkthroughs import residual_walkthrough

    result = residual_walkthrough(
        _load(args.input, "input"),
        _load(args.kernel, "kernel"),
        args.stride,
        parse_padding(args.padding),
        args.pool,
        args.pool_stride,
        args.ceil_mode,
    )
    return _finish(
        result,
        args,
        "residual",
        "Residual block: conv -> ReLU -> + input -> ReLU -> max pool -> average",
        result.settings(),
    )


def _run_conv_backward(args: argparse.Namespace) -> int:
    from cnnlab.numpy_ref.walkthroughs import conv_backward_walkthrough

    result = conv_backward_walkthrough(
        _load(args.x, "X"), _load(args.w, "W"), _load(args.dy, "dL/dY")
    )
    return _finish(
        result,
        args,
        "conv-backward",
        "Convolution backward: dL/dW = xcorr(X, dL/dY), dL/dX = xcorr(pad(dL/dY), rot180(W))",
        "valid, stride 1",
    )


# ------------------------------------------------------------------------------------------ rnn

def _register_rnn(sub: argparse._SubParsersAction) -> None:
    rnn = sub.add_parser(
        "rnn",
        help="an RNN classifying a sentence's sentiment into 5 classes, step by step",
        description="A small Elman RNN (fixed weights, 3-D word vectors, 3 hidden units) reads a "
        "sentence word by word: x_t and h_t at every step, one cell's arithmetic, and the "
        "softmax output(s) over the 5 sentiment classes (once for many-to-one, after every word "
        "for many-to-many).",
    )
    rnn.add_argument("--sentence", default=None, help="the sentence (default: the course's)")
    rnn.add_argument("--mode", choices=("many-to-one", "many-to-many"), default="many-to-one")
    _add_output_options(rnn, "rnn.png", "tokens, hidden, outputs, softmax_calls, classes, ...")
    rnn.set_defaults(func=run_rnn)


def run_rnn(args: argparse.Namespace) -> int:
    from cnnlab.numpy_ref.rnn_walkthrough import DEFAULT_SENTENCE, rnn_walkthrough

    result = rnn_walkthrough(DEFAULT_SENTENCE if args.sentence is None else args.sentence,
                             args.mode)
    print(json.dumps(result.to_json()) if args.json else result.text())
    if args.no_figure:
        return 0
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file, not a folder")
    path = args.out / "rnn.png"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig = result.figure()
        fig.supxlabel(_footer(f"mode {args.mode}"), fontsize=7, color="0.35")
        fig.savefig(path, dpi=130)
    except OSError as exc:
        raise UserError(f"cannot write the figure {path}: {exc.strerror or exc}") from exc
    print(f"\nfigure: {path}", file=sys.stderr if args.json else sys.stdout)
    return 0
