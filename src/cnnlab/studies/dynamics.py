"""The training-dynamics study: initialisation, symmetry, vanishing gradients and degradation.

``cnnlab study dynamics --out DIR`` measures, on a real data set, what the theory questions of a
deep-learning course ask about, and writes a report (``report.html`` with embedded plots,
``report.md``, ``results.json``, ``results.csv``, ``plots/``):

1. **Initialisation at depth** -- a plain ReLU stack of 3x3 convolutions (:class:`ConvStack`,
   constant width and resolution) at initialisation: std of every layer's pre-activation and of
   the loss gradient with respect to it, under zero, N(0, 0.01^2), Xavier/Glorot and He/Kaiming
   init, with and without batch norm, against He et al. (2015)'s variance recursion.
2. **Symmetry** -- the same small plain CNN trained from zero, constant and He init: pairwise
   distance between the filters of each layer before and after training, and accuracy.
3. **Vanishing gradients** -- the gradient norm of every layer at every recorded step, for
   sigmoid vs ReLU deep plain nets (no batch norm) and for a plain vs a residual net of the same
   depth (with batch norm).
4. **Degradation** -- plain and residual nets (He et al. 2016, CIFAR design) at several depths:
   training and test error per epoch.
5. **Batch norm** -- on/off in sections 1 and 3, summarised.

Every number in the report's text is computed from the measurements of that invocation; where a
measurement contradicts the textbook expectation, the text says so.

Training runs go to ``DIR/runs/<key>/`` (one engine run folder each): re-running the same command
reuses finished runs and resumes interrupted ones (:mod:`cnnlab.studies.store`). The budgets
(:data:`BUDGETS`) differ only in sizes; ``standard`` is meant for a GPU and runs the same code.
The smallest degradation depth is trained with ``budget.noise_seeds`` seeds: their spread is the
noise every training-error comparison is judged against.

Read top to bottom: budgets, plan, section 1's measurement, ``execute`` (the whole study),
``STUDY`` (its declaration for the framework, :mod:`cnnlab.studies.runner`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from cnnlab.data import DATASETS
from cnnlab.studies import base, runner
from cnnlab.studies._dynamics_measure import (
    INIT_SCHEMES,
    ConvStack,
    FilterRecorder,
    GradNormRecorder,
    LayerStats,
    TestErrorRecorder,
    fans,
    filter_distance,
    init_variance,
    layer_stats,
    reinit_,
    theory_std,
    weighted_layers,
)
from cnnlab.studies._dynamics_runs import RunSpec, TrainSettings
from cnnlab.studies._dynamics_runs import execute as execute_run

__all__ = [
    "BUDGETS", "INIT_SCHEMES", "Budget", "ConvStack", "FilterRecorder", "GradNormRecorder",
    "LayerStats", "RunSpec", "STUDY", "TestErrorRecorder", "fans", "filter_distance",
    "init_variance", "layer_stats", "measure_init", "plan_runs", "reinit_", "run_study",
    "theory_std", "weighted_layers",
]

TITLE = "Training dynamics: initialisation, symmetry, vanishing gradients, degradation"


@dataclass(frozen=True)
class Budget(base.Budget):
    """The sizes of one study invocation (every section runs in every budget).

    Attributes:
        name: ``"smoke"``, ``"quick"`` or ``"standard"``.
        init_depth, init_width, init_batch, init_nets: section 1's :class:`ConvStack` (conv
            layers, channels), the number of real images in its measured batch, and how many
            randomly initialised networks are measured per init.
        subset: training images of every run (stratified; the test set keeps the same
            fraction); None for the whole training set.
        resolution: input resolution multiplier of the training runs (0.5: 28x28 -> 14x14).
        batch_size: images per step.
        sym_depth, sym_epochs: section 2's plain CNN depth (6n+2) and training epochs.
        flow_depth, flow_epochs: section 3's sigmoid-vs-ReLU plain nets without batch norm.
        depths, epochs: section 4's plain and residual depths (6n+2) and epochs; the deepest
            pair is also section 3's plain-vs-residual comparison.
        seeds: training seeds per degradation model (the findings use their mean).
        noise_seeds: seeds of the smallest depth's plain and residual nets (>= seeds): their
            spread is the noise of every training-error comparison.
        log_points: about this many recorded steps per run (gradient norms, filters).
    """

    init_depth: int
    init_width: int
    init_batch: int
    init_nets: int
    subset: int | None
    resolution: float
    batch_size: int
    sym_depth: int
    sym_epochs: int
    flow_depth: int
    flow_epochs: int
    depths: tuple[int, ...]
    epochs: int
    seeds: int = 1
    noise_seeds: int = 3
    log_points: int = 200


BUDGETS: dict[str, Budget] = {
    # a pipeline check for the tests (well under a minute on 2 CPU cores): its training is far
    # too short for sections 2-4 to show anything; section 1 is already meaningful
    "smoke": Budget(
        "smoke", init_depth=20, init_width=64, init_batch=4, init_nets=4, subset=600,
        resolution=0.5, batch_size=100, sym_depth=8, sym_epochs=1, flow_depth=8, flow_epochs=1,
        depths=(8, 14), epochs=1, log_points=20,
        description="a pipeline check: sections 2-4 too short to show anything",
        cost="about 1 min, measured on 2 CPU cores (the test suite's run)"),
    # 2 CPU cores, <= 10 minutes: 5,000 Fashion-MNIST images at 14x14; the smallest setting in
    # which degradation showed in our trials (plain-8/20/32: 5 epochs)
    "quick": Budget(
        "quick", init_depth=30, init_width=64, init_batch=8, init_nets=4, subset=5000,
        resolution=0.5, batch_size=128, sym_depth=8, sym_epochs=3, flow_depth=20, flow_epochs=3,
        depths=(8, 20, 32), epochs=5,
        description="5,000 Fashion-MNIST images at 14x14, depths 8/20/32, 5 epochs",
        # 78 s for the 11 one-seed runs and section 1, measured (docs/dynamics-study-*, AMD
        # EPYC, 2 cores); the 4 extra depth-8 seeds add about 4 x 3 s
        cost="about 1.5 min (measured on 2 CPU cores, AMD EPYC, 2 torch threads)"),
    # one GPU: the whole training set at full resolution, He et al.'s depths up to 56, 2 seeds
    "standard": Budget(
        "standard", init_depth=50, init_width=128, init_batch=32, init_nets=8, subset=None,
        resolution=1.0, batch_size=128, sym_depth=20, sym_epochs=10, flow_depth=20,
        flow_epochs=10, depths=(8, 20, 32, 44, 56), epochs=30, seeds=2, log_points=400,
        description="for one GPU: the whole training set at full resolution, depths 8-56, "
                    "2 seeds (3 at depth 8)",
        cost="not measured on 2 CPU cores (many hours; meant for a GPU)"),
}

# learning rates: He et al. 2016's 0.1 with batch norm. Without batch norm the 20-layer plain
# ReLU net (He init, 5,000 images at 14x14, 3 epochs) stayed at or fell back to chance with
# lr 0.1, 0.05, 0.02 and 0.01 in our trials, and reached 31-71% training error over 3 seeds
# with 0.005 (0.003 was slower): deep plain nets without normalisation are fragile to train.
LR_BN, LR_NO_BN = 0.1, 0.005
INIT_SECTION = ("zero", "normal", "xavier", "he")  # section 1's schemes
SYM_INITS = ("zero", "constant", "he")  # section 2's schemes


def plan_runs(budget: Budget) -> list[RunSpec]:
    """Every training run of a budget, in the order they are run (sections 2, 3, 4)."""
    runs = [RunSpec(key=f"symmetry-{init}", section="symmetry", model="plain_cnn",
                    depth=budget.sym_depth, norm="bn", act="relu", init=init, lr=LR_BN,
                    epochs=budget.sym_epochs, filters=True) for init in SYM_INITS]
    runs += [RunSpec(key=f"flow-plain-d{budget.flow_depth}-nobn-{act}", section="flow",
                     model="plain_cnn", depth=budget.flow_depth, norm="none", act=act, init="he",
                     lr=LR_NO_BN, epochs=budget.flow_epochs) for act in ("relu", "sigmoid")]
    for depth in budget.depths:
        runs += _degradation(budget, depth, range(budget.seeds))
    # the noise: more seeds of the reference (smallest) depth, after the planned ones
    runs += _degradation(budget, min(budget.depths), range(budget.seeds, budget.noise_seeds))
    return runs


def _degradation(budget: Budget, depth: int, seeds: range) -> list[RunSpec]:
    return [RunSpec(key=f"degradation-{family}-d{depth}-s{seed}", section="degradation",
                    model=model, depth=depth, norm="bn", act="relu", init="default",
                    lr=LR_BN, epochs=budget.epochs, seed=seed)
            for seed in seeds
            for model, family in (("plain_cnn", "plain"), ("resnet_cifar", "resnet"))]


# ------------------------------------------------------------------ 1. initialisation at depth
def _geomean(rows: list[list[float]]) -> list[float]:
    """Per-layer geometric mean over networks (0 where any network is exactly 0)."""
    t = torch.tensor(rows, dtype=torch.float64)  # (networks, layers)
    return torch.where((t > 0).all(0), t.clamp_min(1e-300).log().mean(0).exp(),
                       torch.zeros(())).tolist()


def measure_init(ds, budget: Budget, device: torch.device) -> dict[str, Any]:
    """Section 1: per-layer std of activations and gradients at initialisation.

    For every (norm, init) pair, ``budget.init_nets`` networks with different random weights
    (one for zero init, which has no randomness) measure the same batch. One finite-width
    network's per-layer gains fluctuate, and their product over depth is close to log-normal, so
    the per-layer *geometric* mean over networks (a typical network) is reported beside every
    network's values. The :class:`ConvStack` runs in float64, so that N(0, 0.01^2) init, whose
    activations shrink ~10x per layer, stays above the underflow limit down to the last layer.

    Args:
        ds: the loaded :class:`cnnlab.data.Dataset`.
        budget: gives the depth, width, batch size and number of networks.
        device: where to compute.

    Returns:
        ``{"settings": ..., "configs": [one dict per (norm, init)]}``: ``act_std`` /
        ``grad_std`` (geometric means, per layer), ``act_std_nets`` / ``grad_std_nets`` (per
        network), ``act_zero`` / ``grad_zero`` (exactly 0 in every network) and, without norm,
        He et al.'s predictions (textbook and with zero padding).
    """
    from cnnlab.data import normalize, stratified_indices

    idx = stratified_indices(ds.train_labels, budget.init_batch, seed=0)
    images = torch.from_numpy(ds.train_images[idx]).permute(0, 3, 1, 2).to(device)
    x = normalize(images, ds.mean, ds.std).double()  # (N, C, H, W)
    y = torch.from_numpy(ds.train_labels[idx]).to(device)
    input_sq_map = x.pow(2).mean(dim=(0, 1)).cpu()  # (H, W): E[x_0^2] per pixel
    configs = []
    for norm in ("none", "bn"):
        for scheme in INIT_SECTION:
            stats = []
            for seed in range(1 if scheme == "zero" else budget.init_nets):
                net = ConvStack(budget.init_depth, budget.init_width, in_chans=ds.in_chans,
                                num_classes=ds.num_classes, norm_layer=norm)
                net = reinit_(net, scheme, seed=seed).to(device=device, dtype=torch.float64)
                stats.append(layer_stats(net, net.preactivations, x, y))
            layers = [(*fans(b[0].weight), init_variance(scheme, *fans(b[0].weight)))
                      for b in net.blocks]
            row: dict[str, Any] = {
                "norm": norm, "init": scheme, "networks": len(stats),
                "act_std": _geomean([s.act_std for s in stats]),
                "grad_std": _geomean([s.grad_std for s in stats]),
                "act_std_nets": [s.act_std for s in stats],
                "grad_std_nets": [s.grad_std for s in stats],
                "act_zero": [all(z) for z in zip(*(s.act_zero for s in stats), strict=True)],
                "grad_zero": [all(z) for z in zip(*(s.grad_zero for s in stats), strict=True)],
                "input_sq": stats[0].input_sq, "weight_var": [v for _, _, v in layers]}
            if norm == "none":  # He et al.'s recursion has no normalisation layer in it
                top = row["grad_std"][-1]
                row["theory_act_std"], row["theory_grad_std"] = theory_std(
                    layers, row["input_sq"], top)
                row["theory_padded_act_std"], row["theory_padded_grad_std"] = theory_std(
                    layers, input_sq_map, top)
            configs.append(row)
    settings = {"depth": budget.init_depth, "width": budget.init_width,
                "batch": budget.init_batch, "networks": budget.init_nets,
                "image_size": list(x.shape[-2:]), "dtype": "float64"}
    return {"settings": settings, "configs": configs}


def _init_section(session: runner.Session) -> dict[str, Any]:
    """Section 1, or its saved result when an earlier invocation measured the same settings."""
    ds, budget = session.dataset(), session.budget
    settings = {"dataset": ds.name, "source": ds.source, "depth": budget.init_depth,
                "width": budget.init_width, "batch": budget.init_batch,
                "networks": budget.init_nets}

    def measure() -> dict[str, Any]:
        session.log(f"init-at-depth: {budget.init_depth}-layer conv stack, width "
                    f"{budget.init_width}, {len(INIT_SECTION)} inits x batch norm off/on, "
                    f"{budget.init_nets} networks each")
        t0 = time.perf_counter()
        result = measure_init(ds, budget, session.device)
        result["time_s"] = time.perf_counter() - t0
        return result

    result, reused = session.store.measured("init-at-depth", settings, measure)
    if reused:
        session.log("init-at-depth: measured earlier, reused")
    return {**result, "reused": reused}


# --------------------------------------------------------------------------------- the study
def execute(session: runner.Session) -> base.Outcome:
    """Every section in one session: measure at init, train (or reuse) every run, judge."""
    from cnnlab.studies import _dynamics_findings, _dynamics_report

    budget: Budget = session.budget  # type: ignore[assignment]
    opts = session.options
    ds = session.dataset()
    init = _init_section(session)
    settings = TrainSettings(dataset=opts.dataset, data_dir=opts.data_dir, subset=budget.subset,
                             resolution=budget.resolution, batch_size=budget.batch_size,
                             log_points=budget.log_points, device=str(session.device))
    specs = plan_runs(budget)
    runs = []
    for i, spec in enumerate(specs, 1):
        session.log(f"[{i}/{len(specs)}] {spec.section}")
        runs.append(execute_run(spec, settings, ds, session.store, session.log))

    payload: dict[str, Any] = {
        "study": "dynamics", "title": TITLE, "dataset": opts.dataset, "data_source": ds.source,
        "num_classes": ds.num_classes, "budget": asdict(budget), "device": str(session.device),
        "train_settings": asdict(settings), "init": init, "runs": runs,
    }
    by_section = _dynamics_findings.findings(payload)
    return base.Outcome(
        payload=payload, rows=_dynamics_report.result_rows(payload),
        findings=[f for k in _dynamics_findings.SECTIONS for f in by_section[k]],
        resolution=_dynamics_findings.resolution(payload),
        layout=lambda rep: _dynamics_report.layout(rep, payload, by_section))


def run_study(out: str | Path, *, dataset: str = "fashion-mnist", data_dir: str | None = None,
              budget: str | Budget = "quick", device: str = "auto",
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every section, write the report and return the results payload.

    Args:
        out: the study folder (created); runs go to ``out/runs/<key>``.
        dataset: ``"fashion-mnist"`` or ``"cifar10"``.
        data_dir: where the data is (default: the search order of :mod:`cnnlab.data`).
        budget: a key of :data:`BUDGETS` or a :class:`Budget`.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        log: progress lines go here (default: stderr).

    Returns:
        The payload written to ``results.json``.
    """
    options = base.StudyOptions(dataset=dataset, data_dir=data_dir, budget=budget,
                                device=device, out=str(out))
    outcome, _ = runner.run(STUDY, options, log=log)
    return outcome.payload


STUDY = base.Study(
    name="dynamics", title=TITLE,
    summary="vanishing gradients, degradation, zero/Xavier/He initialisation and residual "
            "connections, measured",
    budgets=BUDGETS, datasets=DATASETS, execute=execute)
