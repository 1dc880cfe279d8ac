"""``cnnlab tune``: Hyperband search over a YAML space with Optuna (see cnnlab.studies.tune)."""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
example (the course's space, Fashion-MNIST):
  cnnlab tune --space examples/tune/course_space.yaml --dataset fashion-mnist \\
      --max-epochs 7 --reduction-factor 3 --trials 30 --workers 2 --out runs/tune-course
several machines: the same command with --storage postgresql://USER:PASS@HOST/DB on each.
Ctrl-C stops the search (exit 130); the same command again continues it: trials that were
running are marked failed and queued again, finished ones are kept.
outputs in --out: tune.db (the study, unless --storage), report.html/.md, results.json/.csv,
plots/, final/ (the best configuration retrained on train+validation, tested once).
"""


def _count(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    from cnnlab.studies.tune import PRUNERS, SAMPLERS

    p = subparsers.add_parser(
        "tune", help="Hyperband hyperparameter search (Optuna), resumable, several workers",
        description="Search a YAML space of CNN configurations with Optuna and Hyperband "
        "pruning; every trial trains through the engine; the best is retrained and tested once.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", required=True, help="the space file (YAML), e.g. "
                   "examples/tune/course_space.yaml")
    p.add_argument("--dataset", default="fashion-mnist", choices=("fashion-mnist", "cifar10"))
    p.add_argument("--out", required=True, help="output folder (storage, report, final run)")
    p.add_argument("--trials", type=_count, help="stop after N finished trials in the study")
    p.add_argument("--time-budget", type=float, dest="time_budget_s", metavar="S",
                   help="stop starting trials after S seconds")
    p.add_argument("--max-epochs", type=_count, default=7)
    p.add_argument("--min-epochs", type=_count, default=1)
    p.add_argument("--reduction-factor", type=_count, default=3)
    p.add_argument("--sampler", choices=SAMPLERS, default="tpe")
    p.add_argument("--pruner", choices=PRUNERS, default="hyperband")
    p.add_argument("--storage", help="Optuna storage URL, e.g. postgresql://u:p@host/db "
                   "(default: sqlite in --out)")
    p.add_argument("--study-name", default="cnnlab-tune")
    p.add_argument("--workers", type=_count, default=1,
                   help="worker processes on this machine (each gets threads/K torch threads)")
    p.add_argument("--threads", type=_count, help="torch CPU threads in all (default: all cores)")
    p.add_argument("--subset", type=_count, help="training images per trial (stratified)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=_count, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir")
    p.add_argument("--cache-dir")
    p.add_argument("--compare-random", action="store_true",
                   help="also run random search without pruning on the same epoch budget")
    p.add_argument("--random-seed", type=_count, metavar="R",
                   help="seed of that random search (default: --seed, so its first draws are "
                   "the search's TPE start-up draws; another seed draws independently)")
    p.add_argument("--no-retrain", dest="retrain", action="store_false",
                   help="skip retraining the best configuration")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cnnlab.studies.tune import TuneConfig, tune

    fields = {k: v for k, v in vars(args).items() if k not in ("func", "command", "argv")}
    result = tune(TuneConfig(**fields))
    if result.final:
        print(f"best trial #{result.best['number']}: val acc {result.best['value']:.4f}; "
              f"retrained test accuracy {result.final['test_accuracy']:.4f}")
    print(f"report: {result.files['html']}", file=sys.stdout)
    return 0
