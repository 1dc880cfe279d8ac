"""``cnnlab explain``: Grad-CAM / Guided Backprop pictures of a trained run, and sanity checks.

    cnnlab explain --checkpoint RUN_DIR --images test:0-7 --out DIR [--method ...] [--layer ...]
    cnnlab explain sanity --checkpoint RUN_DIR [--images test:0-15] --out DIR
    cnnlab explain course-figure [--checkpoint RUN_DIR] [--pairs N] --out DIR

Images are test-set indexes of the run's data set (``0,5,17``, ``test:0-7``, ``train:3``) or image
files (resized to the model's input size, with a printed note). The first form writes, per
image, the chosen method's picture and the course figure (original | Guided Backprop | Grad-CAM
for two classes), plus ``explain.json``; ``sanity`` writes the cascading-randomisation plots, the
deletion/insertion curves and ``sanity.json``; ``course-figure`` runs the study
:mod:`cnnlab.studies.course_figure` (a cat and a dog on one CIFAR-10 canvas, Grad-CAM vs Guided
Backprop measured) and writes its report.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# the choices live where the work is done
from cnnlab.explain.pipeline import BASELINES, DEFAULT_SANITY_IMAGES, METHODS, WEIGHTS
from cnnlab.studies.course_figure import BUDGETS as COURSE_BUDGETS

EXAMPLES = """\
examples:
  cnnlab explain --checkpoint runs/fmnist --images test:0-7 --out runs/fmnist/explain
  cnnlab explain --checkpoint runs/cifar --images 3,17 cat.jpg --method guided-gradcam \\
      --target cat --out runs/cifar/explain
  cnnlab explain sanity --checkpoint runs/fmnist --images test:0-15 --out runs/fmnist/sanity
  cnnlab explain course-figure --pairs 400 --out runs/course-figure   # trains simple_cnn once
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "explain",
        help="Grad-CAM / Guided Backprop explanations and their sanity checks",
        description="Explain a trained run's decisions with Grad-CAM, Grad-CAM++, Guided Backprop "
        "or Guided Grad-CAM, or (with 'sanity') check whether those maps can be trusted: "
        "cascading model randomisation (Adebayo et al. 2018) and deletion/insertion curves "
        "(Petsiuk et al. 2018).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=["sanity", "course-figure"],
        help="'sanity': run the sanity checks instead of drawing explanations; "
        "'course-figure': the course's cat/dog figure on two-class CIFAR-10 canvases, "
        "measured (trains the budget's model when --checkpoint is not given)",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        metavar="RUN_DIR",
        help="a 'cnnlab train --out' folder (required except for course-figure)",
    )
    p.add_argument(
        "--images",
        nargs="+",
        metavar="SPEC",
        help="image files and/or indexes into the run's data set: '0,5,17' and "
        "'test:0-7' (test split, all of it whatever --subset the run used), 'train:3' "
        f"(default for sanity: {DEFAULT_SANITY_IMAGES[0]})",
    )
    p.add_argument("--method", choices=METHODS, default="gradcam", help="default: gradcam")
    p.add_argument(
        "--layer",
        metavar="NAME",
        help="dotted name of the CAM layer (default: the last conv block, found "
        "automatically and printed)",
    )
    p.add_argument(
        "--target",
        metavar="CLASS",
        help="class to explain, as index or name (default: each image's prediction)",
    )
    p.add_argument(
        "--second-target",
        metavar="CLASS",
        help="second class of the course figure (default: the next most probable)",
    )
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument(
        "--weights",
        choices=WEIGHTS,
        default="final",
        help="which weights of the run (default: final)",
    )
    p.add_argument(
        "--data-dir",
        metavar="PATH",
        help="where the run's data set is (default: the "
        "run's own --data-dir, or else the usual search order)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto (default: cpu)")
    p.add_argument(
        "--cmap", default="jet", help="matplotlib colormap of the heatmaps (default: jet)"
    )
    p.add_argument(
        "--alpha", type=float, default=0.5, help="heatmap opacity in [0, 1] (default: 0.5)"
    )
    g = p.add_argument_group("sanity options")
    g.add_argument(
        "--seed", type=int, default=0, help="randomisation / random-order seed (default: 0)"
    )
    g.add_argument(
        "--steps",
        type=int,
        default=32,
        help="deletion/insertion steps from 0 to all pixels (default: 32)",
    )
    g.add_argument(
        "--deletion-baseline",
        choices=BASELINES,
        default="zeros",
        help="what deleted pixels become (default: zeros = the data set's mean colour)",
    )
    g.add_argument(
        "--insertion-baseline",
        choices=BASELINES,
        default="blur",
        help="what insertion starts from (default: blur)",
    )
    c = p.add_argument_group("course-figure options")
    c.add_argument("--pairs", type=int, default=None,
                   help="two-class canvases to measure (default: the budget's, 400 for quick)")
    c.add_argument("--budget", default=None, choices=list(COURSE_BUDGETS),
                   help="training recipe and sizes of course-figure (default: quick)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Hand the parsed options to :func:`cnnlab.explain.pipeline.run` (or, for course-figure,
    to the study runner)."""
    from cnnlab.errors import UserError
    from cnnlab.explain.pipeline import ExplainOptions
    from cnnlab.explain.pipeline import run as explain

    if args.action == "course-figure":
        return _course_figure(args)
    if args.checkpoint is None:
        raise UserError("--checkpoint is required (a 'cnnlab train --out' folder)")

    fields = ExplainOptions.__dataclass_fields__
    return explain(ExplainOptions(**{k: v for k, v in vars(args).items() if k in fields}))


def _course_figure(args: argparse.Namespace) -> int:
    from cnnlab.studies import get_study
    from cnnlab.studies.runner import run as run_study

    study = get_study("course-figure")
    options = study.make_options(
        data_dir=args.data_dir, budget=args.budget or study.default_budget, device=args.device,
        out=str(args.out), checkpoint=str(args.checkpoint) if args.checkpoint else None,
        pairs=args.pairs, seed=args.seed)
    _, files = run_study(study, options)
    print(f"report: {files['html']}")
    return 0
