"""The MobileNet study: V1 vs V2 vs a conventional CNN (and a ResNet), width multiplier alpha and
resolution multiplier rho, theory (MACs) against measured speed and accuracy, one report.

``cnnlab study mobilenet`` (or :func:`run_study`) does, for one data set and budget (read
this module top to bottom: budgets, plan, one run, the whole study, its declaration):

1. **Plan** (:func:`plan_runs`): a conventional CNN, MobileNetV1, MobileNetV2 and a ResNet at
   alpha = 1; alpha in ``budget.alphas`` for V1 and V2; rho in ``budget.rhos`` for V1 and V2;
   each trained with ``seeds`` seeds; the reference configuration (alpha = rho = 1) of every
   family with at least ``budget.reference_seeds`` seeds, whose spread judges every accuracy
   comparison (:mod:`cnnlab.studies._mobilenet_findings`). Conv MobileNet (full convolutions)
   is analysed and timed but not trained: it is the reference of the depthwise-separable
   reduction.
2. **Train** every run with the training engine, each in ``OUT/runs/<run id>/``: finished runs
   are reused, interrupted ones resumed, so re-running the command continues a study.
3. **Count** parameters and MACs of every architecture with the analyzer at the input size it was
   trained at (:mod:`cnnlab.studies._mobilenet_theory` also splits MACs by convolution kind).
4. **Measure** batch-1 latency and large-batch throughput of every architecture on the CPU, and
   on the GPU when one is used (cached in ``OUT/runs/speed/``), with the spread over repeats.
5. **Compare** with theory: alpha^2, rho^2 and the depthwise-separable cost ratio
   1/N + 1/Dk^2 (Howard et al. 2017, Eq. 5) against the analyzer's counts and measured latency,
   and the share of MACs in 1x1 convolutions (the paper: about 95%).
6. **Judge and report**: findings as data (:mod:`cnnlab.studies._mobilenet_findings`), the
   report's sections (:mod:`cnnlab.studies._mobilenet_report`); the framework
   (:mod:`cnnlab.studies.runner`) writes ``report.html``, ``report.md``, ``results.json`` and
   ``results.csv``.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab import _malloc
from cnnlab.data import DATASETS
from cnnlab.errors import UserError
from cnnlab.studies import base, runner


@dataclass(frozen=True)
class Arch:
    """One role in the study, e.g. the conventional CNN or MobileNetV2."""

    key: str  # role: conventional | v1 | v2 | resnet | conv_v1
    model: str  # registry name
    label: str  # how plots and tables name it


ROLES: dict[str, Arch] = {a.key: a for a in (
    Arch("conventional", "vgg_small", "VGG-small (conventional)"),
    Arch("v1", "mobilenet_v1_cifar", "MobileNetV1"),
    Arch("v2", "mobilenet_v2_cifar", "MobileNetV2"),
    Arch("resnet", "resnet18", "ResNet-18"),
    Arch("conv_v1", "conv_mobilenet_v1_cifar", "Conv MobileNet (full convs)"),
)}


@dataclass(frozen=True)
class Budget(base.Budget):
    """How much work a study does; every number here is a training or measurement setting.

    ``subset`` counts training images (None: the whole training set); ``trained`` lists the roles
    trained at alpha = rho = 1, ``timed_only`` those only analysed and timed;
    ``reference_seeds`` is the least number of seeds of every family's alpha = rho = 1 run (the
    noise every accuracy comparison is judged against).
    """

    epochs: int
    subset: int | None  # training images per run (stratified); the test set shrinks alike
    seeds: int  # default number of seeds per run (--seeds overrides)
    batch_size: int  # images per training step
    lr: float  # peak learning rate (SGD Nesterov, one-cycle)
    alphas: tuple[float, ...]
    rhos: tuple[float, ...]
    trained: tuple[str, ...]  # roles trained at alpha = rho = 1
    timed_only: tuple[str, ...]  # roles analysed and timed but not trained
    latency_repeats: int  # batch-1 timed calls (capped by latency_seconds)
    latency_seconds: float
    throughput_batch_cpu: int  # images per call for CPU throughput
    throughput_batch_cuda: int
    throughput_seconds: float
    reference_seeds: int = 3


_ALPHAS = (1.0, 0.75, 0.5, 0.25)
_RHOS = (1.0, 0.875, 0.75, 0.5)

BUDGETS: dict[str, Budget] = {b.name: b for b in (
    # 2 CPU cores, <= 10 minutes for Fashion-MNIST: every run of the plan, on a small subset for
    # one epoch; ResNet-18 (6x the MACs of MobileNetV2) is timed, ResNet-20 trained instead.
    Budget("quick", epochs=2, subset=3000, seeds=1, batch_size=64, lr=0.05,
           alphas=_ALPHAS, rhos=_RHOS, trained=("conventional", "v1", "v2", "resnet"),
           timed_only=("conv_v1",), latency_repeats=20, latency_seconds=2.0,
           throughput_batch_cpu=64, throughput_batch_cuda=1024, throughput_seconds=3.0,
           description="every run on 3,000 training images for 2 epochs, the four reference "
                       "runs with 3 seeds (a CPU study: accuracies are far from converged)",
           # measured 2026-12-02, AMD EPYC, 2 torch threads (docs/mobilenet-study-*/README.md):
           # the first 11 runs, on an idle machine, trained in 570 s (about 10 s more per run for
           # data and evaluation); one seed of the four reference runs takes 272 s; the speed
           # part 58 s; the v2 alpha/rho runs about 80 s each. Sum: about 30 min. The whole
           # invocation was not timed idle (its later runs shared the CPU with other jobs).
           cost="about 30 min (estimated from per-run times measured on 2 idle CPU cores, AMD "
                "EPYC)"),
    Budget("standard", epochs=15, subset=None, seeds=1, batch_size=256, lr=0.1,
           alphas=_ALPHAS, rhos=_RHOS, trained=("conventional", "v1", "v2", "resnet"),
           timed_only=("conv_v1",), latency_repeats=50, latency_seconds=5.0,
           throughput_batch_cpu=128, throughput_batch_cuda=1024, throughput_seconds=5.0,
           description="the whole training set for 15 epochs, one seed, the reference runs "
                       "with 3 (meant for a GPU)",
           cost="not measured on 2 CPU cores (hours; meant for a GPU)"),
    Budget("full", epochs=30, subset=None, seeds=3, batch_size=512, lr=0.2,
           alphas=_ALPHAS, rhos=_RHOS, trained=("conventional", "v1", "v2", "resnet"),
           timed_only=("conv_v1",), latency_repeats=100, latency_seconds=10.0,
           throughput_batch_cpu=256, throughput_batch_cuda=1024, throughput_seconds=10.0,
           description="the whole training set for 30 epochs, three seeds (meant for a GPU)",
           cost="not measured on 2 CPU cores (a day; meant for a GPU)"),
)}


@dataclass(frozen=True)
class RunSpec:
    """One architecture setting (role, alpha, rho) and, for trained runs, one seed."""

    role: str
    width: float
    resolution: float
    seed: int | None  # None: analysed and timed only
    sweep: str  # "baseline" | "alpha" | "rho"

    @property
    def arch(self) -> Arch:
        return ROLES[self.role]

    @property
    def arch_id(self) -> str:
        return f"{self.arch.model}-a{self.width:g}-r{self.resolution:g}"

    @property
    def run_id(self) -> str:
        return f"{self.arch_id}-s{self.seed}"


def plan_runs(budget: Budget, seeds: int) -> list[RunSpec]:
    """Every run of the study, baselines first (the order they are trained in), then the
    reference seeds beyond ``seeds``, then the timed-only architectures."""
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}")
    specs: list[RunSpec] = []
    for s in range(seeds):
        specs += [RunSpec(r, 1.0, 1.0, s, "baseline") for r in budget.trained]
        for role in ("v1", "v2"):
            specs += [RunSpec(role, a, 1.0, s, "alpha") for a in budget.alphas if a != 1.0]
            specs += [RunSpec(role, 1.0, r, s, "rho") for r in budget.rhos if r != 1.0]
    for s in range(seeds, budget.reference_seeds):  # the noise: reference runs, more seeds
        specs += [RunSpec(r, 1.0, 1.0, s, "baseline") for r in budget.trained]
    specs += [RunSpec(r, 1.0, 1.0, None, "baseline") for r in budget.timed_only]
    return specs


@dataclass
class StudyConfig(base.StudyOptions):
    """Settings of one study invocation (saved in results.json): the common options and these."""

    out: str = "runs/study-mobilenet"
    seeds: int | None = None  # None: the budget's default
    subset: int | None = None  # overrides the budget's subset (tests, quick looks)
    epochs: int | None = None  # overrides the budget's epochs
    roles: tuple[str, ...] | None = None  # restrict the trained roles (tests)
    alphas: tuple[float, ...] | None = None  # override the sweeps (tests)
    rhos: tuple[float, ...] | None = None
    reference_seeds: int | None = None  # overrides the budget's (tests)
    measure_speed: bool = True
    speed_seconds: float | None = None  # caps each latency/throughput measurement (tests)

    def resolve_budget(self, b: Budget) -> Budget:
        for flag, value, least in (("--seeds", self.seeds, 1), ("--subset", self.subset, 20),
                                   ("--epochs", self.epochs, 1)):
            if value is not None and value < least:
                unit = " images" if flag == "--subset" else ""
                raise UserError(f"{flag} must be at least {least}{unit}, got {value}")
        changes: dict[str, Any] = {}
        if self.subset is not None:
            changes["subset"] = self.subset
        if self.epochs is not None:
            changes["epochs"] = self.epochs
        if self.reference_seeds is not None:
            changes["reference_seeds"] = self.reference_seeds
        if self.roles is not None:
            unknown = [r for r in self.roles if r not in ROLES]
            if unknown:
                raise UserError(f"unknown study roles {unknown}; choose from {', '.join(ROLES)}")
            changes["trained"] = tuple(r for r in self.roles if r != "conv_v1")
            changes["timed_only"] = tuple(r for r in self.roles if r == "conv_v1")
        if self.alphas is not None:
            changes["alphas"] = tuple(self.alphas)
        if self.rhos is not None:
            changes["rhos"] = tuple(self.rhos)
        if self.speed_seconds is not None:
            changes["latency_seconds"] = changes["throughput_seconds"] = self.speed_seconds
        for a in changes.get("alphas", ()):
            if not 0 < a <= 4:
                raise UserError(f"width multiplier alpha must be in (0, 4], got {a}")
        for r in changes.get("rhos", ()):
            if not 0 < r <= 4:
                raise UserError(f"resolution multiplier rho must be in (0, 4], got {r}")
        return dataclasses.replace(b, **changes)


@dataclass
class StudyResult:
    """What :func:`run_study` produced: one row per architecture, the theory tables, the files."""

    rows: list[dict[str, Any]]
    theory: dict[str, Any]
    interpretation: list[str]
    environment: dict[str, Any]
    out: Path
    files: dict[str, Path] = field(default_factory=dict)
    trained_now: int = 0
    reused: int = 0
    findings: list[Any] = field(default_factory=list)  # the Finding objects behind interpretation


def _train_config(spec: RunSpec, cfg: StudyConfig, budget: Budget, device: str):
    from cnnlab.engine import TrainConfig

    return TrainConfig(
        model=spec.arch.model, dataset=cfg.dataset, data_dir=cfg.data_dir, width=spec.width,
        resolution=spec.resolution, subset=budget.subset, epochs=budget.epochs,
        batch_size=budget.batch_size, lr=budget.lr, seed=spec.seed or 0, device=device,
        quiet=True,
    ).validate()


def execute(session: runner.Session) -> base.Outcome:
    """The whole study in one session: train, count, time, compare, judge."""
    from cnnlab.data import resized_size
    from cnnlab.studies import _mobilenet_findings, _mobilenet_report, _mobilenet_theory

    cfg: StudyConfig = session.options  # type: ignore[assignment]
    budget: Budget = session.budget  # type: ignore[assignment]
    log, store, device = session.log, session.store, session.device
    _malloc.tune()  # comparable CPU timings: MobileNets lose about half their speed without it
    seeds = cfg.seeds or budget.seeds
    specs = plan_runs(budget, seeds)

    ds = session.dataset()  # loaded once, shared by every run
    native = tuple(ds.train_images.shape[1:3])
    in_chans, num_classes = ds.in_chans, ds.num_classes

    # 1. train (or reuse) every run
    records: dict[str, Any] = {}
    trained = [s for s in specs if s.seed is not None]
    for i, spec in enumerate(trained, 1):
        log(f"[{i}/{len(trained)}] {spec.run_id} ...")
        rec = store.train(spec.run_id, _train_config(spec, cfg, budget, device.type), dataset=ds)
        records[spec.run_id] = rec
        what = "reused" if rec.reused else f"trained in {rec.metrics['train_time_s']:.0f} s"
        log(f"    test accuracy {rec.metrics['test_accuracy']:.4f} ({what})")

    # 2. count and time every architecture once
    archs: dict[str, RunSpec] = {}
    for s in specs:
        archs.setdefault(s.arch_id, s)
    counts: dict[str, dict[str, Any]] = {}
    speeds: dict[str, dict[str, Any]] = {}
    speed_devices = ["cpu"] + (["cuda"] if device.type == "cuda" else [])
    for arch_id, spec in archs.items():
        size = resized_size(native, spec.resolution)
        shape = (in_chans, *size)
        model = _build(spec, in_chans, num_classes)
        counts[arch_id] = _mobilenet_theory.count(model, shape)
        counts[arch_id]["input_shape"] = list(shape)
        if cfg.measure_speed:
            speeds[arch_id] = {dev: _speed(store, model, shape, dev, budget, arch_id)
                               for dev in speed_devices}
            log(f"timed {arch_id}: " + ", ".join(
                f"{d} {v['latency_ms']:.2f} ms" for d, v in speeds[arch_id].items()))

    # 3. one row per architecture: counts, speed, accuracy over seeds
    rows = []
    for arch_id, spec in archs.items():
        runs = [records[s.run_id] for s in trained if s.arch_id == arch_id]
        rows.append(_row(spec, counts[arch_id], speeds.get(arch_id, {}), runs))
    theory = _mobilenet_theory.compare(rows, counts, num_classes)

    # 4. judge: every accuracy comparison against the reference runs' seed-to-seed spread
    spread = _mobilenet_findings.accuracy_spread(rows)
    findings = _mobilenet_findings.findings(rows, theory, device.type, spread)
    result = StudyResult(rows=rows, theory=theory, interpretation=[f.claim for f in findings],
                         environment=session.environment, out=session.out,
                         trained_now=sum(not r.reused for r in records.values()),
                         reused=sum(r.reused for r in records.values()), findings=findings)
    study_info = {
        "config": dataclasses.asdict(cfg), "budget": dataclasses.asdict(budget), "seeds": seeds,
        "native_size": list(native), "in_chans": in_chans, "num_classes": num_classes,
        "device": device.type,
    }
    payload = {
        "title": f"MobileNet study on {cfg.dataset}", "study": study_info,
        "interpretation": result.interpretation, "rows": rows, "theory": theory,
        "runs": [{"run_id": k, "test_accuracy": v.metrics["test_accuracy"],
                  "best_val_accuracy": v.metrics.get("best_val_accuracy"),
                  "train_time_s": v.metrics["train_time_s"],
                  "images_per_s": v.metrics["images_per_s"], "reused": v.reused,
                  "history": v.metrics["history"]} for k, v in records.items()],
    }
    labels = {k: a.label for k, a in ROLES.items()}
    return base.Outcome(
        payload=payload, rows=rows, findings=findings,
        resolution=_mobilenet_findings.resolution(rows, spread),
        layout=lambda rep: _mobilenet_report.layout(rep, result, study_info, counts, records,
                                                    labels),
        result=result)


def run_study(cfg: StudyConfig) -> StudyResult:
    """Run (or continue) the study described by ``cfg`` and write its report.

    Raises:
        UserError: bad settings, missing data, or an output folder holding another study's runs.
    """
    outcome, files = runner.run(STUDY, cfg)
    result: StudyResult = outcome.result
    result.files = files
    return result


def _build(spec: RunSpec, in_chans: int, num_classes: int):
    from cnnlab import models

    kwargs = {"width": spec.width} if models.model_info(spec.arch.model).supports_width else {}
    return models.create(spec.arch.model, num_classes=num_classes, in_chans=in_chans, **kwargs)


def _speed(store, model, shape, dev: str, budget: Budget, arch_id: str) -> dict[str, Any]:
    """Batch-1 latency and throughput on ``dev``, kept in the run store so that a re-run with
    the same timing settings does not re-measure."""
    settings = {"arch": arch_id, "shape": list(shape), "device": dev,
                **{k: getattr(budget, k) for k in (
                    "latency_repeats", "latency_seconds", "throughput_batch_cpu",
                    "throughput_batch_cuda", "throughput_seconds")}}
    return store.measured(f"speed/{arch_id}-{dev}", settings,
                          lambda: _measure_speed(model, shape, dev, budget))[0]


def _measure_speed(model, shape, dev: str, budget: Budget) -> dict[str, Any]:
    from cnnlab.studies.timing import measure_speed

    cuda = dev == "cuda"
    lat = measure_speed(model, shape, batch_size=1, device=dev, repeats=budget.latency_repeats,
                        max_seconds=budget.latency_seconds, amp_bf16=cuda, channels_last=cuda)
    batch = budget.throughput_batch_cuda if cuda else budget.throughput_batch_cpu
    thr = measure_speed(model, shape, batch_size=batch, device=dev, repeats=20, warmup=2,
                        max_seconds=budget.throughput_seconds, amp_bf16=cuda, channels_last=cuda)
    data = {"latency_ms": lat.median_ms, "latency_iqr_ms": lat.iqr_ms, "latency_calls": lat.calls,
            "throughput": thr.images_per_s, "throughput_batch": thr.batch_size,
            "threads": lat.threads, "dtype": lat.dtype}
    return data


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    # one seed has no spread: None ("-" in tables), not a misleading 0
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _row(spec: RunSpec, counts: dict[str, Any], speed: dict[str, dict[str, Any]],
         runs: Sequence[Any]) -> dict[str, Any]:
    acc_mean, acc_std = _mean_std([r.metrics["test_accuracy"] for r in runs])
    time_mean, _ = _mean_std([r.metrics["train_time_s"] for r in runs])
    ips_mean, _ = _mean_std([r.metrics["images_per_s"] for r in runs])
    row: dict[str, Any] = {
        "arch_id": spec.arch_id, "role": spec.role, "model": spec.arch.model,
        "label": spec.arch.label, "sweep": spec.sweep, "width": spec.width,
        "resolution": spec.resolution, "input": "x".join(map(str, counts["input_shape"])),
        "params": counts["params"], "macs": counts["macs"],
        "macs_1x1_share": counts["share_1x1"], "trained": bool(runs), "seeds": len(runs),
        "test_accuracy": acc_mean, "test_accuracy_std": acc_std,
        "train_time_s": time_mean, "train_images_per_s": ips_mean,
    }
    for dev in ("cpu", "cuda"):
        s = speed.get(dev)
        row[f"{dev}_latency_ms"] = s["latency_ms"] if s else None
        row[f"{dev}_latency_iqr_ms"] = s["latency_iqr_ms"] if s else None
        row[f"{dev}_throughput"] = s["throughput"] if s else None
    return row


# ------------------------------------------------------------------------------ the study
STUDY = base.Study(
    name="mobilenet", title="MobileNet study",
    summary="MobileNet V1 vs V2 vs a conventional CNN, width and resolution multipliers, "
            "theory (MACs) against measured speed and accuracy",
    budgets=BUDGETS, datasets=DATASETS, execute=execute, options=StudyConfig,
    extra_options=(
        base.Option("--seeds", "seeds", "seeds per run (default: the budget's; mean +- std "
                    "over seeds)"),
        base.Option("--subset", "subset", "training images per run (overrides the budget)"),
        base.Option("--epochs", "epochs", "epochs (overrides the budget)"),
        base.Option("--no-speed", "measure_speed", "skip the latency/throughput measurements",
                    type=None, switch_to=False),
    ))
