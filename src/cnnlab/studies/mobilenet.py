"""The MobileNet study: V1 vs V2 vs a conventional CNN (and a ResNet), width multiplier alpha and
resolution multiplier rho, theory (MACs) against measured speed and accuracy, one report.

``cnnlab study mobilenet`` (or :func:`run_study`) does, for one data set and budget:

1. **Plan** (:func:`plan_runs`): a conventional CNN, MobileNetV1, MobileNetV2 and a ResNet at
   alpha = 1; alpha in ``budget.alphas`` for V1 and V2; rho in ``budget.rhos`` for V1 and V2;
   each trained with ``seeds`` seeds. Conv MobileNet (full convolutions) is analysed and timed
   but not trained: it is the reference of the depthwise-separable reduction.
2. **Train** every run with the training engine, each in ``OUT/runs/<run id>/``: finished runs
   are reused, interrupted ones resumed, so re-running the command continues a study.
3. **Count** parameters and MACs of every architecture with the analyzer at the input size it was
   trained at (:mod:`cnnlab.studies._mobilenet_theory` also splits MACs by convolution kind).
4. **Measure** batch-1 latency and large-batch throughput of every architecture on the CPU, and
   on the GPU when one is used (cached in ``OUT/speed/``).
5. **Compare** with theory: alpha^2, rho^2 and the depthwise-separable cost ratio
   1/N + 1/Dk^2 (Howard et al. 2017, Eq. 5) against the analyzer's counts and measured latency,
   and the share of MACs in 1x1 convolutions (the paper: about 95%).
6. **Report** (:mod:`cnnlab.studies._mobilenet_report`): ``report.html`` (self-contained),
   ``report.md``, ``results.json``, ``results.csv``, plots, and a written interpretation
   generated from the numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab import _malloc
from cnnlab._io import output_dir
from cnnlab.errors import UserError

DATASETS = ("fashion-mnist", "cifar10")
DEVICES = ("auto", "cpu", "cuda")


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
class Budget:
    """How much work a study does; every number here is a training or measurement setting.

    ``subset`` counts training images (None: the whole training set); ``trained`` lists the roles
    trained at alpha = rho = 1, ``timed_only`` those only analysed and timed.
    """

    name: str
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
    description: str


_ALPHAS = (1.0, 0.75, 0.5, 0.25)
_RHOS = (1.0, 0.875, 0.75, 0.5)

BUDGETS: dict[str, Budget] = {b.name: b for b in (
    # 2 CPU cores, <= 10 minutes for Fashion-MNIST: every run of the plan, on a small subset for
    # one epoch; ResNet-18 (6x the MACs of MobileNetV2) is timed, ResNet-20 trained instead.
    Budget("quick", epochs=2, subset=3000, seeds=1, batch_size=64, lr=0.05,
           alphas=_ALPHAS, rhos=_RHOS, trained=("conventional", "v1", "v2", "resnet"),
           timed_only=("conv_v1",), latency_repeats=20, latency_seconds=2.0,
           throughput_batch_cpu=64, throughput_batch_cuda=1024, throughput_seconds=3.0,
           description="every run on 3,000 training images for 2 epochs (a CPU study: "
                       "accuracies are far from converged)"),
    Budget("standard", epochs=15, subset=None, seeds=1, batch_size=256, lr=0.1,
           alphas=_ALPHAS, rhos=_RHOS, trained=("conventional", "v1", "v2", "resnet"),
           timed_only=("conv_v1",), latency_repeats=50, latency_seconds=5.0,
           throughput_batch_cpu=128, throughput_batch_cuda=1024, throughput_seconds=5.0,
           description="the whole training set for 15 epochs, one seed (meant for a GPU)"),
    Budget("full", epochs=30, subset=None, seeds=3, batch_size=512, lr=0.2,
           alphas=_ALPHAS, rhos=_RHOS, trained=("conventional", "v1", "v2", "resnet"),
           timed_only=("conv_v1",), latency_repeats=100, latency_seconds=10.0,
           throughput_batch_cpu=256, throughput_batch_cuda=1024, throughput_seconds=10.0,
           description="the whole training set for 30 epochs, three seeds (meant for a GPU)"),
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
    """Every run of the study, baselines first (the order they are trained in)."""
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}")
    specs: list[RunSpec] = []
    for s in range(seeds):
        specs += [RunSpec(r, 1.0, 1.0, s, "baseline") for r in budget.trained]
        for role in ("v1", "v2"):
            specs += [RunSpec(role, a, 1.0, s, "alpha") for a in budget.alphas if a != 1.0]
            specs += [RunSpec(role, 1.0, r, s, "rho") for r in budget.rhos if r != 1.0]
    specs += [RunSpec(r, 1.0, 1.0, None, "baseline") for r in budget.timed_only]
    return specs


@dataclass
class StudyConfig:
    """Settings of one study invocation (saved in results.json)."""

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    budget: str = "quick"
    seeds: int | None = None  # None: the budget's default
    device: str = "auto"
    out: str = "runs/study-mobilenet"
    subset: int | None = None  # overrides the budget's subset (tests, quick looks)
    epochs: int | None = None  # overrides the budget's epochs
    roles: tuple[str, ...] | None = None  # restrict the trained roles (tests)
    alphas: tuple[float, ...] | None = None  # override the sweeps (tests)
    rhos: tuple[float, ...] | None = None
    measure_speed: bool = True
    speed_seconds: float | None = None  # caps each latency/throughput measurement (tests)
    quiet: bool = False

    def resolved_budget(self) -> Budget:
        if self.budget not in BUDGETS:
            raise UserError(f"unknown budget {self.budget!r}; choose from {', '.join(BUDGETS)}")
        b = BUDGETS[self.budget]
        changes: dict[str, Any] = {}
        if self.subset is not None:
            changes["subset"] = self.subset
        if self.epochs is not None:
            changes["epochs"] = self.epochs
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

    def validate(self) -> StudyConfig:
        if self.dataset not in DATASETS:
            raise UserError(f"unknown dataset {self.dataset!r}; choose from {', '.join(DATASETS)}")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise UserError(f"unknown device {self.device!r}; choose from {', '.join(DEVICES)}")
        if self.seeds is not None and self.seeds < 1:
            raise UserError(f"--seeds must be at least 1, got {self.seeds}")
        if self.subset is not None and self.subset < 20:
            raise UserError(f"--subset must be at least 20 images, got {self.subset}")
        if self.epochs is not None and self.epochs < 1:
            raise UserError(f"--epochs must be at least 1, got {self.epochs}")
        self.resolved_budget()
        return self


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


def _train_config(spec: RunSpec, cfg: StudyConfig, budget: Budget, device: str):
    from cnnlab.engine import TrainConfig

    return TrainConfig(
        model=spec.arch.model, dataset=cfg.dataset, data_dir=cfg.data_dir, width=spec.width,
        resolution=spec.resolution, subset=budget.subset, epochs=budget.epochs,
        batch_size=budget.batch_size, lr=budget.lr, seed=spec.seed or 0, device=device,
        quiet=True,
    ).validate()


def _log(cfg: StudyConfig, message: str) -> None:
    if not cfg.quiet:
        print(message, file=sys.stderr, flush=True)


def run_study(cfg: StudyConfig) -> StudyResult:
    """Run (or continue) the study described by ``cfg`` and write its report.

    Raises:
        UserError: bad settings, missing data, or an output folder holding another study's runs.
    """
    import torch

    from cnnlab.data import load_dataset, resized_size
    from cnnlab.engine import resolve_device
    from cnnlab.provenance import environment
    from cnnlab.studies import _mobilenet_report, _mobilenet_theory
    from cnnlab.studies._runs import train_or_reuse

    cfg.validate()
    _malloc.tune()  # comparable CPU timings: MobileNets lose about half their speed without it
    budget = cfg.resolved_budget()
    seeds = cfg.seeds or budget.seeds
    device = resolve_device(cfg.device)
    out = output_dir(cfg.out, "--out", lock=True)  # the one opener: a file or /sys/x is one line
    specs = plan_runs(budget, seeds)
    started = time.perf_counter()

    ds = load_dataset(cfg.dataset, data_dir=cfg.data_dir)
    native = tuple(ds.train_images.shape[1:3])
    in_chans, num_classes = ds.in_chans, ds.num_classes

    # 1. train (or reuse) every run
    records: dict[str, Any] = {}
    trained = [s for s in specs if s.seed is not None]
    for i, spec in enumerate(trained, 1):
        _log(cfg, f"[{i}/{len(trained)}] {spec.run_id} ...")
        t0 = time.perf_counter()
        rec = train_or_reuse(_train_config(spec, cfg, budget, device.type),
                             out / "runs" / spec.run_id, dataset=ds)  # loaded once, shared
        records[spec.run_id] = rec
        what = "reused" if rec.reused else f"trained in {time.perf_counter() - t0:.0f} s"
        _log(cfg, f"    test accuracy {rec.metrics['test_accuracy']:.4f} ({what})")

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
            speeds[arch_id] = {
                dev: _speed(model, shape, dev, budget, out / "speed" / f"{arch_id}-{dev}.json")
                for dev in speed_devices
            }
            _log(cfg, f"timed {arch_id}: " + ", ".join(
                f"{d} {v['latency_ms']:.2f} ms" for d, v in speeds[arch_id].items()))

    # 3. one row per architecture: counts, speed, accuracy over seeds
    rows = []
    for arch_id, spec in archs.items():
        runs = [records[s.run_id] for s in trained if s.arch_id == arch_id]
        rows.append(_row(spec, counts[arch_id], speeds.get(arch_id, {}), runs))

    theory = _mobilenet_theory.compare(rows, counts, num_classes)
    env = environment(device)
    env["torch_threads"] = torch.get_num_threads()
    result = StudyResult(rows=rows, theory=theory, interpretation=[], environment=env, out=out,
                         trained_now=sum(not r.reused for r in records.values()),
                         reused=sum(r.reused for r in records.values()))
    result.interpretation = _mobilenet_report.interpret(result, device.type)
    study_info = {
        "config": dataclasses.asdict(cfg), "budget": dataclasses.asdict(budget), "seeds": seeds,
        "native_size": list(native), "in_chans": in_chans, "num_classes": num_classes,
        "device": device.type, "elapsed_s": time.perf_counter() - started,
        "_counts": counts,  # per-layer counts for the plots; not written to results.json
    }
    result.files = _mobilenet_report.write(result, study_info, records)
    return result


def _build(spec: RunSpec, in_chans: int, num_classes: int):
    from cnnlab import models

    kwargs = {"width": spec.width} if models.model_info(spec.arch.model).supports_width else {}
    return models.create(spec.arch.model, num_classes=num_classes, in_chans=in_chans, **kwargs)


def _speed(model, shape, dev: str, budget: Budget, cache: Path) -> dict[str, Any]:
    """Batch-1 latency and throughput on ``dev``, cached so a re-run does not re-measure."""
    from cnnlab._json import write_json
    from cnnlab.studies.timing import measure_speed

    if cache.exists():
        return json.loads(cache.read_text())
    cuda = dev == "cuda"
    lat = measure_speed(model, shape, batch_size=1, device=dev, repeats=budget.latency_repeats,
                        max_seconds=budget.latency_seconds, amp_bf16=cuda, channels_last=cuda)
    batch = budget.throughput_batch_cuda if cuda else budget.throughput_batch_cpu
    thr = measure_speed(model, shape, batch_size=batch, device=dev, repeats=20, warmup=2,
                        max_seconds=budget.throughput_seconds, amp_bf16=cuda, channels_last=cuda)
    data = {"latency_ms": lat.median_ms, "latency_iqr_ms": lat.iqr_ms, "latency_calls": lat.calls,
            "throughput": thr.images_per_s, "throughput_batch": thr.batch_size,
            "threads": lat.threads, "dtype": lat.dtype}
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_json(cache, data)
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
        row[f"{dev}_throughput"] = s["throughput"] if s else None
    return row


# ------------------------------------------------------------------------------------- the CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``cnnlab study mobilenet``."""
    from cnnlab.cli import add_threads_option

    parser.add_argument("--dataset", default="fashion-mnist", choices=DATASETS)
    parser.add_argument("--data-dir", default=None,
                        help="where the data set is (default: the data set's search order)")
    parser.add_argument("--budget", default="quick", choices=list(BUDGETS),
                        help="; ".join(f"{b.name}: {b.description}" for b in BUDGETS.values()))
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds per run (default: the budget's; mean +- std over seeds)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--subset", type=int, default=None,
                        help="training images per run (overrides the budget)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (overrides the budget)")
    parser.add_argument("--no-speed", dest="measure_speed", action="store_false",
                        help="skip the latency/throughput measurements")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    add_threads_option(parser)
    parser.add_argument("--out", default="runs/study-mobilenet", help="report folder")


def run_from_args(args: argparse.Namespace) -> int:
    from cnnlab.cli import apply_threads

    apply_threads(args)
    cfg = StudyConfig(dataset=args.dataset, data_dir=args.data_dir, budget=args.budget,
                      seeds=args.seeds, device=args.device, out=args.out, subset=args.subset,
                      epochs=args.epochs, measure_speed=args.measure_speed, quiet=args.quiet)
    result = run_study(cfg)
    print(f"report: {result.files['html']}")
    for line in result.interpretation:
        print(f"- {line}")
    return 0
