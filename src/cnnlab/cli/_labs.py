"""The lab walkthroughs' parsers and runners (``cnnlab walkthrough adam`` ... ``metrics``).

Each parses its options, calls one ``cnnlab.numpy_ref.labs`` function and hands the result to
``walkthrough._finish`` (text or JSON, and the figure).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cnnlab.errors import DataError, DataNotFoundError, UserError

_COMMON_JSON = "the numbers and conclusion"


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got "
                                         f"{text!r}") from None
    return values


def register(sub: argparse._SubParsersAction, add_output: Callable) -> None:
    p = sub.add_parser(
        "adam", help="Adam: E[S_t] = E[g^2](1 - beta2^t), bias correction, a lower beta1",
        description="Simulate Adam's second moment S_t over many runs of i.i.d. gradients and "
        "compare its mean with E[g^2](1 - beta2^t); write out the first step with and without "
        "bias correction; compare the spread of m_hat / sqrt(S_hat) for beta1 and a lower beta1.")
    p.add_argument("--beta1", type=float, default=0.9, help="first-moment decay (default 0.9)")
    p.add_argument("--beta2", type=float, default=0.999, help="second-moment decay (0.999)")
    p.add_argument("--low-beta1", type=float, default=0.5, help="the lower beta1 compared (0.5)")
    p.add_argument("--steps", type=int, default=50, help="steps per run (default 50)")
    p.add_argument("--runs", type=int, default=2000, help="simulated runs (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    add_output(p, "adam.png", _COMMON_JSON)
    p.set_defaults(func=_run("adam", lambda a: dict(
        beta1=a.beta1, beta2=a.beta2, low_beta1=a.low_beta1, steps=a.steps, runs=a.runs,
        seed=a.seed)))

    p = sub.add_parser(
        "batch-size", help="SGD vs mini-batch vs full batch: gradient variance ~ 1/B, noise, cost",
        description="On a least-squares problem: the variance of the mini-batch gradient against "
        "the batch size B (sigma^2/B (N-B)/(N-1)), the loss curve's noise and the cost per epoch.")
    p.add_argument("--n", type=int, default=512, help="samples (default 512)")
    p.add_argument("--batch-sizes", type=_ints, default=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
                   metavar="B,B,...", help="batch sizes measured (default 1,2,4,...,512)")
    p.add_argument("--curve-batch-sizes", type=_ints, default=(1, 32, 512), metavar="B,B,...",
                   help="batch sizes trained for the loss curves (default 1,32,512)")
    p.add_argument("--draws", type=int, default=1000, help="random batches per size (1000)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
    p.add_argument("--lr", type=float, default=0.02, help="SGD learning rate (default 0.02)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fashion-mnist", action="store_true",
                   help="measure the variance on real data instead: per-sample gradients of "
                   "softmax regression on --n Fashion-MNIST training images (no curves)")
    p.add_argument("--data-dir", type=Path, metavar="DIR",
                   help="where Fashion-MNIST is (default: cnnlab.data's search order)")
    add_output(p, "batch-size.png", _COMMON_JSON)
    p.set_defaults(func=_run("batch_size", _batch_size_kwargs))

    p = sub.add_parser(
        "regularization", help="L1 vs L2 loss with outliers, L1 vs L2 penalty (exact zeros)",
        description="Fit a line with L1 and L2 losses to points with outliers, and a sparse "
        "linear model with L1 (proximal and subgradient) and L2 penalties: which fit follows the "
        "outliers, and how many weights become exactly 0.")
    p.add_argument("--points", type=Path, metavar="FILE",
                   help="points as a 2-column matrix x,y (JSON, CSV or .npy); default: 12 "
                   "points on y = 2x + 1 with 2 outliers")
    p.add_argument("--lam", type=float, default=0.1, help="penalty strength (default 0.1)")
    p.add_argument("--iterations", type=int, default=500, help="solver steps (default 500)")
    p.add_argument("--seed", type=int, default=0)
    add_output(p, "regularization.png", _COMMON_JSON)
    p.set_defaults(func=_run("regularization", _regularization_kwargs))

    p = sub.add_parser(
        "batchnorm", help="batch norm in training vs evaluation mode, running statistics",
        description="Batch norm on two small batches sharing a sample: batch statistics in "
        "training mode, running statistics (momentum) in evaluation mode, a batch of 1.")
    p.add_argument("--momentum", type=float, default=0.1, help="PyTorch's momentum (0.1)")
    p.add_argument("--steps", type=int, default=50, help="training steps (default 50)")
    add_output(p, "batchnorm.png", _COMMON_JSON)
    p.set_defaults(func=_run("batchnorm", lambda a: dict(momentum=a.momentum, steps=a.steps)))

    p = sub.add_parser(
        "dropout", help="inverted dropout in training vs evaluation mode",
        description="Inverted dropout: one mask written out, the mean over many masks against "
        "evaluation mode (the identity), and what it would be without the 1/(1-p) scaling.")
    p.add_argument("--p", type=float, default=0.5, help="drop probability (default 0.5)")
    p.add_argument("--masks", type=int, default=10000, help="masks averaged (default 10000)")
    p.add_argument("--seed", type=int, default=0)
    add_output(p, "dropout.png", _COMMON_JSON)
    p.set_defaults(func=_run("dropout", lambda a: dict(p=a.p, masks=a.masks, seed=a.seed)))

    p = sub.add_parser(
        "linear-collapse", help="linear layers without non-linearities are one linear map",
        description="A stack of linear layers equals one linear map (W = W_L ... W_1); with "
        "ReLU between them the best single affine fit leaves a residual.")
    p.add_argument("--widths", type=_ints, default=(4, 6, 2, 5, 3), metavar="D,D,...",
                   help="layer widths, input first (default 4,6,2,5,3)")
    p.add_argument("--samples", type=int, default=200, help="random inputs (default 200)")
    p.add_argument("--seed", type=int, default=0)
    add_output(p, "linear-collapse.png", _COMMON_JSON)
    p.set_defaults(func=_run("linear_collapse", lambda a: dict(
        widths=a.widths, samples=a.samples, seed=a.seed)))

    p = sub.add_parser(
        "metrics", help="precision/recall/F1, ROC and PR curves, cheapest threshold, calibration",
        description="Metrics of a detector or classifier: confusion matrix, precision, recall "
        "and F1 (per class, micro, macro, weighted), ROC and precision-recall curves with their "
        "areas, the threshold of least cost, and calibration (reliability bins, ECE). Default: "
        "a defect detector on 20 parts. --scores: a CSV with a header 'label,score' (score = "
        "P(class 1)) or 'label,<class>,<class>,...' (class probabilities), or JSON "
        '{"labels": [...], "scores": [...], "classes": [...]}. --run: a cnnlab train folder '
        "(its test_predictions.npz).")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--scores", type=Path, metavar="FILE", help="true labels and scores")
    src.add_argument("--run", type=Path, metavar="DIR", help="a cnnlab train output folder")
    p.add_argument("--classes", metavar="NAME,NAME", help="class names, when the file has none")
    p.add_argument("--positive", metavar="CLASS",
                   help="class taken against the rest for curves, threshold and calibration "
                   "(name or index; default the second of two classes, else the first)")
    p.add_argument("--threshold", type=float, default=0.5, help="decision threshold (0.5)")
    p.add_argument("--cost-fn", type=float, default=5.0,
                   help="cost of a missed positive, e.g. a missed defect (default 5)")
    p.add_argument("--cost-fp", type=float, default=1.0, help="cost of a false alarm (1)")
    p.add_argument("--bins", type=int, default=5, help="calibration bins (default 5)")
    add_output(p, "metrics.png", _COMMON_JSON)
    p.set_defaults(func=_run("metrics", _metrics_kwargs))


def _run(lab: str, kwargs: Callable[[argparse.Namespace], dict]) -> Callable:
    def run(args: argparse.Namespace) -> int:
        from cnnlab.cli.walkthrough import _finish
        from cnnlab.numpy_ref import labs

        result = getattr(labs, f"{lab}_lab")(**kwargs(args))
        return _finish(result, args, result.name, result.title, result.settings)

    return run


def _batch_size_kwargs(a: argparse.Namespace) -> dict:
    kw = dict(n=a.n, batch_sizes=a.batch_sizes, curve_batch_sizes=a.curve_batch_sizes,
              draws=a.draws, epochs=a.epochs, lr=a.lr, seed=a.seed)
    if a.fashion_mnist:
        from cnnlab.cli._labs_data import fashion_mnist_gradients

        kw["gradients"], kw["source"] = fashion_mnist_gradients(a.n, a.seed, a.data_dir)
    return kw


def _regularization_kwargs(a: argparse.Namespace) -> dict:
    kw = dict(lam=a.lam, iterations=a.iterations, seed=a.seed)
    if a.points is not None:
        from cnnlab.numpy_ref.matrix_io import load_matrix

        m = load_matrix(a.points, "points")
        if m.shape[1] != 2 or m.shape[0] < 2:
            raise UserError(f"points file {a.points}: expected 2 columns (x, y) and >= 2 rows, "
                            f"got {m.shape[0]}x{m.shape[1]}")
        kw.update(x=m[:, 0], y=m[:, 1])
    return kw


def _metrics_kwargs(a: argparse.Namespace) -> dict:
    names = tuple(c.strip() for c in a.classes.split(",")) if a.classes else None
    kw = dict(threshold=a.threshold, cost_fn=a.cost_fn, cost_fp=a.cost_fp, bins=a.bins)
    if a.scores is not None:
        from cnnlab.numpy_ref.scores_io import load_scores

        labels, scores, names = load_scores(a.scores, names)
        kw.update(labels=labels, scores=scores, classes=names, source=f"scores file {a.scores}")
    elif a.run is not None:
        labels, scores, names = _run_predictions(a.run)
        kw.update(labels=labels, scores=scores, classes=names,
                  source=f"test predictions of the run {a.run}")
    elif names is not None:
        kw.update(classes=names)
    if a.positive is not None:
        known = names or (("ok", "defect") if a.scores is None and a.run is None else None)
        kw["positive"] = _class_index(a.positive, known)
    return kw


def _class_index(text: str, names: tuple[str, ...] | None) -> int:
    if names and text in names:
        return names.index(text)
    try:
        return int(text)
    except ValueError:
        raise UserError(f"--positive {text!r} is not a class index nor one of the classes "
                        f"{', '.join(names or ())}") from None


def _run_predictions(run: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The test labels, softmax probabilities and class names a ``cnnlab train`` run saved."""
    preds, config = run / "test_predictions.npz", run / "config.json"
    if not config.is_file():
        raise DataNotFoundError(f"{run} is not a cnnlab run folder (no config.json)")
    if not preds.is_file():
        raise DataNotFoundError(f"{preds} does not exist: the run did not finish, or predates "
                                "saved test predictions (train it again)")
    try:
        with np.load(preds, allow_pickle=False) as f:
            labels, probs = f["labels"], f["probs"].astype(np.float64)
        classes = tuple(json.loads(config.read_text())["data"]["classes"])
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"cannot read the run's predictions {preds}: {exc}") from exc
    return labels, probs, classes
