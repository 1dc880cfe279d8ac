"""The course's Grad-CAM figure for real: a cat and a dog on one canvas, class-discriminativeness
measured.

``cnnlab explain course-figure [--checkpoint RUN] [--pairs N] --out DIR`` (also
``cnnlab study course-figure``):

1. **The model.** With ``--checkpoint`` a finished CIFAR-10 run (``cnnlab train --out``); without,
   the budget's model (quick: simple_cnn; fully convolutional, global average pooling) trained
   through the engine with its CPU recipe into ``DIR/runs/<model>-cifar10``, reused by the next
   invocation (:meth:`cnnlab.studies.store.RunStore.train`). The model must accept a 32x64 canvas
   (:func:`cnnlab.explain.composite.check_accepts_canvas`: one error line otherwise).
2. **The canvases.** N pairs of CIFAR-10 *test* images side by side on 32x64
   (:func:`cnnlab.explain.composite.compose_pairs`, pixels copied exactly): half of them a cat
   and a dog, half two other distinct classes; which class goes left and which images are used
   are drawn with ``--seed``.
3. **The figure.** original | Guided Backprop 'cat' | Grad-CAM 'cat' | Guided Backprop 'dog' |
   Grad-CAM 'dog', with the model's probabilities (:func:`cnnlab.explain.overlay.course_figure`).
4. **The measurement.** For Grad-CAM, Grad-CAM++, Guided Backprop and Guided Grad-CAM, asked for
   the left and for the right class of every canvas: the pointing game and the energy share inside
   the asked class's half (:mod:`cnnlab.explain.localization`), and Spearman's rho between the
   method's two maps of the same canvas; Wilson / bootstrap 95% intervals
   (:mod:`~cnnlab.studies._course_figure_findings`). The measurement is cached in
   ``DIR/runs/composites.json`` with its settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.errors import UserError
from cnnlab.studies import base, runner

TITLE = "The course's Grad-CAM figure on CIFAR-10: 'cat' and 'dog' in one image"
MODEL = "resnet20"  # the default model of a budget that names none


@dataclass(frozen=True)
class Budget(base.Budget):
    """Sizes of one invocation.

    Attributes:
        subset: training images of the default model (stratified); None: all 50,000.
        epochs: its training epochs.
        batch_size: its images per step.
        pairs: canvases measured (``--pairs`` overrides).
        figures: cat/dog canvases drawn as course figures.
        model: the registry model trained when no ``--checkpoint`` is given (fully
            convolutional with global pooling, so it accepts the 32x64 canvas).
    """

    subset: int | None
    epochs: int
    batch_size: int
    pairs: int
    figures: int = 4
    model: str = MODEL


BUDGETS = {b.name: b for b in (
    Budget("smoke", subset=500, epochs=1, batch_size=100, pairs=8, figures=1,
           description="a pipeline check: the model is barely trained",
           cost="well under a minute on 2 CPU cores (the test suite's run)"),
    # 2 CPU cores, idle: simple_cnn (94.8k parameters, global pooling) on 20,000 images for 8
    # epochs reaches 67.5% test accuracy (seed 0, 2 threads), the whole command 2 min 35 s
    # (docs/gradcam-course-figure-cifar10-cpu/README.md); resnet20 at 5,000 images x 3 epochs
    # reached only 43.8%, too weak to tell a cat from a dog (the earlier report: Grad-CAM's
    # cat and dog maps correlated at rho 0.95 on cat/dog canvases).
    Budget("quick", subset=20000, epochs=8, batch_size=128, pairs=400, model="simple_cnn",
           description="simple_cnn on 20,000 CIFAR-10 images for 8 epochs, 400 canvases",
           cost="2 min 35 s, measured on 2 idle CPU cores (AMD EPYC)"),
    Budget("standard", subset=None, epochs=30, batch_size=128, pairs=1000,
           description="for one GPU: resnet20 on all 50,000 images for 30 epochs, 1000 canvases",
           cost="not measured on 2 CPU cores (meant for a GPU)"),
)}


@dataclass
class CourseFigureOptions(base.StudyOptions):
    """The common options plus ``checkpoint`` (a trained run), ``pairs`` and ``seed``."""

    dataset: str = "cifar10"
    checkpoint: str | None = None
    pairs: int | None = None
    seed: int | None = None

    def resolve_budget(self, budget: base.Budget) -> base.Budget:
        if self.pairs is not None:
            if isinstance(self.pairs, bool) or not isinstance(self.pairs, int) or self.pairs < 1:
                raise UserError(f"--pairs must be a whole number >= 1, got {self.pairs!r}")
            budget = dataclasses.replace(
                budget, pairs=self.pairs,
                description=f"{budget.description}; here --pairs {self.pairs} canvases instead")
        return budget


def _model(session: runner.Session, ds) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(model in eval mode, its data settings, what it is) -- trained here or loaded."""
    from cnnlab.engine import TrainConfig, load_run

    opts, budget = session.options, session.budget
    if opts.checkpoint:
        loaded = load_run(opts.checkpoint, session.device)
        run_dir, metrics = Path(opts.checkpoint), loaded.metrics or {}
    else:
        config = TrainConfig(model=budget.model, dataset="cifar10", data_dir=opts.data_dir,
                             subset=budget.subset, val_fraction=0.0, epochs=budget.epochs,
                             batch_size=budget.batch_size, lr=0.1, device=str(session.device),
                             quiet=True, seed=0)
        key = f"{budget.model}-cifar10"
        session.log(f"model: {budget.model} on {budget.subset or 'all'} CIFAR-10 images, "
                    f"{budget.epochs} epochs (reused when trained before)")
        record = session.store.train(key, config, dataset=ds)
        loaded = load_run(record.run_dir, session.device)
        run_dir, metrics = record.run_dir, record.metrics
    if loaded.data.get("name", loaded.config.dataset) != "cifar10":
        raise UserError(f"{run_dir} is a {loaded.config.dataset} run; the course figure needs a "
                        "CIFAR-10 run (its cat and dog classes)")
    if tuple(loaded.data["image_size"]) != ds.native_size:
        raise UserError(f"{run_dir} was trained at {loaded.data['image_size']}; the course "
                        "figure composes 32x32 test images and needs a run at resolution 1")
    info = {"run": str(run_dir), "model": loaded.config.model,
            "test_accuracy": metrics.get("test_accuracy"),
            "trained_here": not opts.checkpoint, "subset": loaded.config.subset,
            "epochs": loaded.config.epochs}
    return loaded.model, loaded.data, info


def execute(session: runner.Session) -> base.Outcome:
    """The whole study: model, canvases, measurement, figures, findings."""
    import torch

    from cnnlab.data import normalize
    from cnnlab.explain import default_target_layer
    from cnnlab.explain.composite import check_accepts_canvas
    from cnnlab.studies._course_figure_findings import findings, summary
    from cnnlab.studies._course_figure_measure import (
        COURSE_PAIR,
        METHODS,
        canvases,
        figure_maps,
        measure,
        plan_composites,
    )
    from cnnlab.studies._course_figure_report import draw_figures, layout

    budget: Budget = session.budget  # type: ignore[assignment]
    seed = session.options.seed if session.options.seed is not None else 0
    ds = session.dataset()
    model, data, info = _model(session, ds)
    h, w = ds.native_size
    check_accepts_canvas(model, (ds.in_chans, h, 2 * w), f"model {info['model']} ({info['run']})")

    def prepare(images):
        return normalize(images.to(session.device), data["mean"], data["std"])

    layer = default_target_layer(model, prepare(torch.zeros(1, ds.in_chans, h, 2 * w,
                                                            dtype=torch.uint8)))
    plan = plan_composites(ds.test_labels, ds.classes, budget.pairs, seed)
    settings = {"run": info["run"], "pairs": budget.pairs, "seed": seed, "layer": layer,
                "test_accuracy": info["test_accuracy"], "methods": list(METHODS)}
    rows, reused = session.store.measured(
        "composites", settings,
        lambda: {"rows": measure(model, layer, ds.test_images, plan, prepare, log=session.log)})
    rows = rows["rows"]
    if reused:
        session.log("composites: measured earlier with the same settings, reused")
    cat, dog = ([c.lower() for c in ds.classes].index(n) for n in COURSE_PAIR)
    shown = [c for c in plan if c.course_pair][: budget.figures]
    figures = []
    if shown:
        x = prepare(canvases(ds.test_images, shown))
        with torch.no_grad():
            probs = torch.softmax(model(x).double(), dim=1).cpu()
        maps = figure_maps(model, layer, x, cat, dog)
        figures = draw_figures(x, shown, maps, probs, data, ds.classes, cat, dog)
    table = summary(rows, seed)
    course_rows = [r for r in rows if r["course_pair"]]
    course_table = summary(course_rows, seed) if course_rows else []
    found = findings(table, rows, seed, "all class pairs")
    if course_rows:
        found += [dataclasses.replace(f, headline=False, section=f"cat/dog: {f.section}")
                  for f in findings(course_table, course_rows, seed, "cat/dog canvases only")]
    alone = sum(r["left_alone_correct"] and r["right_alone_correct"] for r in rows)
    payload = {"title": TITLE, "model": info, "layer": layer, "pairs": budget.pairs,
               "seed": seed, "classes": list(ds.classes), "summary": table,
               "summary_cat_dog": course_table, "both_halves_correct_alone": alone,
               "canvas": [ds.in_chans, h, 2 * w]}
    resolution = [
        (f"{budget.pairs} canvases ({len(course_rows)} cat/dog): a pointing-game rate's 95% "
        f"Wilson interval is at most about +-{100 * 0.98 / max(1, budget.pairs) ** 0.5:.0f} "
        "points wide, so rates closer than that to chance (50%) or to each other are not told "
        "apart."),
        (f"One model ({info['model']}, test accuracy "
        f"{info['test_accuracy'] if info['test_accuracy'] is None else round(100 * info['test_accuracy'], 1)}"
        "% on its own test split): the intervals are over canvases, not over training seeds; "
        "another model could localise differently."),
        (f"Both halves classified correctly on their own in {alone} of {len(rows)} canvases: the "
        "metrics ask about the true class of each half whether or not the model recognises it."),
    ]
    return base.Outcome(payload=payload, rows=rows, findings=found, resolution=resolution,
                        layout=lambda rep: layout(rep, payload, figures, found))


STUDY = base.Study(
    name="course-figure", title=TITLE,
    summary="Grad-CAM vs Guided Backprop for 'cat' and 'dog' on one canvas, measured",
    budgets=BUDGETS, datasets=("cifar10",), execute=execute, options=CourseFigureOptions,
    extra_options=(
        base.Option("--checkpoint", "checkpoint", "a finished CIFAR-10 run folder (default: "
                    "train the budget's model with its recipe, reused next time)", type=str),
        base.Option("--pairs", "pairs", "canvases to measure (default: the budget's)"),
        base.Option("--seed", "seed", "seed of the canvases (default 0)"),
    ))
