"""The augmentation and transfer-learning study: overfitting shown and diagnosed; frozen vs partly
unfrozen vs fine-tuned backbones.

``cnnlab study transfer --dataset cifar10 --out DIR`` runs the two experiments of a course's
transfer-learning unit correctly and writes a report whose every verdict is computed:

1. **Augmentation and overfitting.** One small CNN with dropout (``compact_cnn``) trained on a
   CIFAR-10 subset small enough to overfit, with no augmentation, with the course's pair (random
   horizontal flip + random rotation) and with stronger settings (+ translation + cutout), same
   epochs and seeds. Per epoch: the training loss/accuracy as the optimiser saw it (augmented,
   dropout on), the *clean* training accuracy (eval mode, no augmentation:
   :class:`~cnnlab.engine.SplitEvaluator`) and the validation loss/accuracy. Every run gets a
   diagnosis -- overfitting, underfitting or fine -- by a rule printed beside it
   (:mod:`cnnlab.studies._transfer_findings`).
2. **Transfer.** No ImageNet weights can be downloaded here, so pretraining is our own: a
   backbone (``resnet20`` on the CPU budget; the ResNet-18 and MobileNetV2 CIFAR variants on a
   GPU) is trained on the *source* classes (by default airplane, automobile, bird, cat, deer)
   and transferred to the disjoint *target* classes (dog, frog, horse, ship, truck) with few
   labels per class. At every label budget, with the same epochs and seeds: from scratch; linear
   probe (backbone frozen: parameters untouched bit for bit and batch norm in eval mode inside
   the training model); partial unfreeze (the last stage trainable); full fine-tuning (backbone
   at a tenth of the head's learning rate). The report shows target accuracy against labels per
   class, curves, trainable parameters and training time per strategy.

``--weights FILE`` replaces our pretraining with a torchvision state dict (ResNet-18/50 or
MobileNetV2, ``--backbone``), loaded into the matching ImageNet architecture at 224 px with a new
head, as the course does with Keras; a file of another architecture fails with one line naming
the first mismatching tensor.

Noise: every setting is trained with ``budget.seeds`` seeds; differences are judged against the
pooled seed-to-seed spread of the same invocation (:mod:`cnnlab.studies.findings`).

Read top to bottom: budgets, options, plan, ``execute``, ``STUDY``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cnnlab.data import CIFAR10_CLASSES, class_subset
from cnnlab.errors import DataNotFoundError, UserError
from cnnlab.models.transfer import IMAGENET_MEAN, IMAGENET_STD, check_backbone, make_backbone
from cnnlab.studies import base, runner
from cnnlab.studies._transfer_runs import (
    STRATEGIES,
    AugSpec,
    Pretrained,
    PretrainSpec,
    Settings,
    TransferSpec,
    divisor_batch,
    file_digest,
    run_aug,
    run_pretrain,
    run_transfer,
)

__all__ = ["BUDGETS", "STRATEGIES", "STUDY", "Budget", "TransferOptions", "plan"]

TITLE = "Augmentation and transfer learning: overfitting diagnosed; frozen vs fine-tuned backbones"
SOURCE = ("airplane", "automobile", "bird", "cat", "deer")
TARGET = ("dog", "frog", "horse", "ship", "truck")

# the course's pair (random flip + random rotation) and a stronger recipe; rotations reflect at
# the border like Keras' RandomRotation (fill_mode="reflect")
AUGMENTS: tuple[tuple[str, str], ...] = (
    ("none", "none"),
    ("flip+rotate", "flip,rotate=15"),
    ("strong", "flip,rotate=15,translate=4,cutout=8"),
)


@dataclass(frozen=True)
class Budget(base.Budget):
    """The sizes of one invocation.

    Attributes:
        aug_subset, aug_val: part 1's CIFAR-10 training images (all classes, stratified) and how
            many of them are held out for validation.
        aug_epochs, aug_batch, aug_lr, aug_optimizer, aug_schedule: part 1's training (Adam at
            a constant learning rate after a short warm-up, as a Keras course trains: a decaying
            schedule would flatten the validation loss before it can rise).
        aug_dropout, aug_width: dropout before the CNN's classifier; its width multiplier.
        backbones: part 2's backbones (CIFAR variants).
        resolution: part 2's input resolution multiplier (0.5: 32 -> 16 px).
        pretrain_per_class, pretrain_epochs: the source task's training images per class and
            epochs.
        labels: labelled target images per class, one transfer experiment each.
        transfer_images: images each transfer run sees in all (epochs = this / its training
            set, the same for every strategy at one label budget).
        test_per_class: target (and source) test images per class.
        seeds: seeds of every setting of both parts (>= 3: the noise).
        lr: the transfer runs' peak learning rate (the head's).
        batch_size: the transfer runs' largest batch (a divisor of the training set is used).
    """

    aug_subset: int
    aug_val: int
    aug_epochs: int
    backbones: tuple[str, ...]
    resolution: float
    pretrain_per_class: int
    pretrain_epochs: int
    labels: tuple[int, ...]
    transfer_images: int
    test_per_class: int
    seeds: int = 3
    aug_batch: int = 50
    aug_lr: float = 2e-3
    aug_optimizer: str = "adamw"
    aug_schedule: str = "constant"
    aug_dropout: float = 0.3
    aug_width: float = 1.0
    pretrain_lr: float = 0.1
    pretrain_batch: int = 128
    lr: float = 0.05
    batch_size: int = 64
    eval_points: int = 5


BUDGETS: dict[str, Budget] = {b.name: b for b in (
    # 2 CPU cores, <= 10 minutes: part 1 at half width on 500 images, where 24 epochs without
    # augmentation overfitted clearly in our trials (clean train 0.9+, val 0.4, val loss +15%
    # from its minimum); part 2 at 16x16 px
    Budget("quick", aug_subset=1000, aug_val=500, aug_epochs=24, aug_width=0.5,
           backbones=("resnet20",), resolution=0.5, pretrain_per_class=1000, pretrain_epochs=6,
           labels=(25, 100), transfer_images=2500, test_per_class=200, batch_size=50,
           eval_points=3,
           description="part 1: compact_cnn (half width) on 500 CIFAR-10 images, 24 epochs; "
                       "part 2: resnet20 at 16x16 pretrained on 5,000 source images, 25 and 100 "
                       "labels per target class; 3 seeds everywhere",
           # 456 s for all 34 runs (7 min 44 s for the whole process), measured with
           # --threads 1 on the 2-core AMD EPYC under load from three other jobs (load average
           # about 5); 434 s in an earlier run of a slightly smaller plan
           cost="about 8 min (measured on 2 CPU cores, AMD EPYC, 1 torch thread, under load "
                "from other jobs)"),
    Budget("standard", aug_subset=6000, aug_val=1000, aug_epochs=60, aug_batch=128,
           backbones=("resnet18", "mobilenet_v2_cifar"), resolution=1.0,
           pretrain_per_class=5000, pretrain_epochs=30, labels=(25, 100, 500),
           transfer_images=50_000, test_per_class=1000,
           description="for one GPU: ResNet-18 and MobileNetV2 CIFAR variants pretrained on the "
                       "whole source half of CIFAR-10, 25/100/500 labels per class, 3 seeds",
           cost="not measured on 2 CPU cores (hours; meant for a GPU)"),
    Budget("full", aug_subset=11000, aug_val=1000, aug_epochs=100, aug_batch=128,
           backbones=("resnet18", "mobilenet_v2_cifar"), resolution=1.0,
           pretrain_per_class=5000, pretrain_epochs=60, labels=(10, 25, 100, 500, 2500),
           transfer_images=100_000, test_per_class=1000, seeds=5,
           description="for one GPU: as standard with 10-2,500 labels per class, 5 seeds",
           cost="not measured on 2 CPU cores (many hours; meant for a GPU)"),
)}


def _names(value: str | tuple[str, ...] | None, flag: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = tuple(v.strip() for v in value.split(",")) if isinstance(value, str) else value
    if not items or any(not v for v in items):
        raise UserError(f"{flag} needs a comma-separated list, not {value!r}")
    return items


@dataclass
class TransferOptions(base.StudyOptions):
    """The common options plus the study's own (None: the budget's or the default)."""

    dataset: str = "cifar10"
    backbone: str | None = None
    strategies: str | None = None  # comma-separated keys of STRATEGIES
    labels_per_class: str | None = None  # comma-separated counts, e.g. "25,100"
    source_classes: str | None = None
    target_classes: str | None = None
    unfreeze: int | None = None  # partial: the last N blocks (None: the last stage)
    seeds: int | None = None
    weights: str | None = None  # a torchvision state dict: ImageNet backbone at 224 px
    augmentation: bool = True  # part 1 (off: transfer only)

    def resolve_budget(self, budget: base.Budget) -> Budget:
        b: Budget = budget  # type: ignore[assignment]
        changes: dict[str, Any] = {}
        if self.seeds is not None:
            if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
                raise UserError(f"--seeds must be a whole number >= 1, not {self.seeds!r}")
            changes["seeds"] = self.seeds
        labels = _names(self.labels_per_class, "--labels-per-class")
        if labels is not None:
            try:
                counts = tuple(int(v) for v in labels)
            except ValueError:
                raise UserError(f"--labels-per-class must be whole numbers, not "
                                f"{self.labels_per_class!r}") from None
            if any(c < 1 for c in counts):
                raise UserError(f"--labels-per-class must be >= 1, not {self.labels_per_class!r}")
            changes["labels"] = counts
        if self.weights is not None:
            if not Path(self.weights).is_file():
                raise DataNotFoundError(f"weights file {self.weights} does not exist (--weights "
                                        "takes a torchvision state dict saved with torch.save)")
            changes["backbones"] = (self.backbone or "resnet50",)
        elif self.backbone is not None:
            changes["backbones"] = (self.backbone,)
        for name in changes.get("backbones", b.backbones):
            check_backbone(name, torchvision=self.weights is not None)
        self.strategy_names()  # each raises one line for a bad value
        self.classes()
        if self.unfreeze is not None and (isinstance(self.unfreeze, bool)
                                          or not isinstance(self.unfreeze, int)
                                          or self.unfreeze < 1):
            raise UserError(f"--unfreeze must be a whole number of blocks >= 1, not "
                            f"{self.unfreeze!r}")
        return dataclasses.replace(b, **changes)

    def strategy_names(self) -> tuple[str, ...]:
        names = _names(self.strategies, "--strategies") or tuple(STRATEGIES)
        unknown = [s for s in names if s not in STRATEGIES]
        if unknown:
            raise UserError(f"unknown strategy {unknown[0]!r}; choose from "
                            f"{', '.join(STRATEGIES)}")
        return tuple(dict.fromkeys(names))

    def classes(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        source = _names(self.source_classes, "--source-classes") or SOURCE
        target = _names(self.target_classes, "--target-classes") or TARGET
        for flag, names in (("--source-classes", source), ("--target-classes", target)):
            unknown = [c for c in names if c not in CIFAR10_CLASSES]
            if unknown:
                raise UserError(f"{flag}: unknown class {unknown[0]!r}; choose from "
                                f"{', '.join(CIFAR10_CLASSES)}")
            if len(set(names)) != len(names):
                raise UserError(f"{flag} lists a class twice: {', '.join(names)}")
            if len(names) < 2:
                raise UserError(f"{flag} needs at least 2 classes, not {', '.join(names)}")
        both = [c for c in target if c in source]
        if both and self.weights is None:
            raise UserError(f"source and target classes overlap ({', '.join(both)}); transfer "
                            "is measured on classes the backbone was not trained on")
        return source, target


# ------------------------------------------------------------------------------------ plan
def plan(budget: Budget, options: TransferOptions) -> dict[str, list]:
    """Every run of an invocation, as data: ``{"augmentation", "pretrain", "transfer"}``."""
    source, _ = options.classes()
    aug = [AugSpec(f"aug-{name}-s{seed}", name, recipe, seed)
           for name, recipe in AUGMENTS for seed in range(budget.seeds)] \
        if options.augmentation else []
    pre = [] if options.weights else [
        PretrainSpec(f"pretrain-{b}", b, source, budget.pretrain_per_class,
                     budget.pretrain_epochs) for b in budget.backbones]
    k = len(options.classes()[1])
    transfer = []
    for b in budget.backbones:
        for n in budget.labels:
            epochs = max(1, round(budget.transfer_images / (n * k)))
            batch = divisor_batch(n * k, budget.batch_size)
            for seed in range(budget.seeds):
                for s in options.strategy_names():
                    transfer.append(TransferSpec(f"transfer-{b}-{n}pc-{s}-s{seed}", b, s, n, seed,
                                                 epochs, batch, options.unfreeze))
    return {"augmentation": aug, "pretrain": pre, "transfer": transfer}


# ----------------------------------------------------------------------------- the study
def execute(session: runner.Session) -> base.Outcome:
    """Both parts in one session: train (or reuse) every run, diagnose, judge, report."""
    from cnnlab.studies import _transfer_findings as judge
    from cnnlab.studies import _transfer_report as report

    opts: TransferOptions = session.options  # type: ignore[assignment]
    budget: Budget = session.budget  # type: ignore[assignment]
    log, store = session.log, session.store
    source_names, target_names = opts.classes()
    specs = plan(budget, opts)
    weights = None
    if opts.weights:  # a file of another architecture fails here, in one line, before the data
        weights = Pretrained(opts.weights, True, file_digest(opts.weights))
        for b in budget.backbones:
            weights.load_into(make_backbone(b, torchvision=True))
    ds = session.dataset()
    resolution = 224 / ds.native_size[0] if opts.weights else budget.resolution
    s = Settings(device=str(session.device), resolution=resolution, lr=budget.lr,
                 aug_model="compact_cnn", aug_dropout=budget.aug_dropout,
                 aug_width=budget.aug_width,
                 aug_subset=budget.aug_subset, aug_val=budget.aug_val,
                 aug_epochs=budget.aug_epochs, aug_lr=budget.aug_lr, aug_batch=budget.aug_batch,
                 aug_optimizer=budget.aug_optimizer, aug_schedule=budget.aug_schedule,
                 pretrain_lr=budget.pretrain_lr, pretrain_batch=budget.pretrain_batch,
                 eval_points=budget.eval_points)
    # the bad inputs that need the data, before anything trains
    counts = {c: int((ds.train_labels == ds.classes.index(c)).sum()) for c in target_names}
    for n in budget.labels:
        short = next((c for c, have in counts.items() if have < n), None)
        if short is not None:
            raise UserError(f"--labels-per-class {n} is more than the data has: class "
                            f"{short!r} has {counts[short]} training images")

    # 1. augmentation and overfitting
    aug_runs = []
    for i, spec in enumerate(specs["augmentation"], 1):
        log(f"[augmentation {i}/{len(specs['augmentation'])}] {spec.key}")
        aug_runs.append(_aug_record(run_aug(spec, s, ds, store, log), judge))

    # 2. transfer: pretrain on the source classes, then every strategy on the target classes
    pretrain_runs = []
    pretrained: dict[str, Pretrained] = {}
    for spec in specs["pretrain"]:
        src = class_subset(ds, source_names, train_per_class=spec.per_class,
                           test_per_class=budget.test_per_class, seed=0)
        log(f"[pretrain] {spec.key}: {spec.backbone} on {', '.join(source_names)}")
        rec = run_pretrain(spec, s, src, store, log)
        pretrain_runs.append(rec)
        pretrained[spec.backbone] = Pretrained(rec["weights"], False, file_digest(rec["weights"]))
    transfer_runs = []
    targets: dict[tuple[int, int], Any] = {}
    for i, spec in enumerate(specs["transfer"], 1):
        key = (spec.labels_per_class, spec.seed)
        if key not in targets:  # the labelled images of this seed, shared by the strategies
            targets[key] = class_subset(
                ds, target_names, train_per_class=spec.labels_per_class,
                test_per_class=budget.test_per_class, seed=spec.seed,
                mean=IMAGENET_MEAN if weights else None, std=IMAGENET_STD if weights else None)
        log(f"[transfer {i}/{len(specs['transfer'])}] {spec.key}")
        rec = run_transfer(spec, s, targets[key], store, weights or pretrained.get(spec.backbone),
                           log)
        transfer_runs.append(_transfer_record(rec))

    labels = {k: v.label for k, v in STRATEGIES.items()}
    chance = 1 / len(target_names)
    findings = judge.aug_findings(aug_runs) + judge.transfer_findings(transfer_runs, labels,
                                                                       chance)
    notes = report.budget_notes(budget, opts, pretrain_runs, s)
    payload: dict[str, Any] = {
        "study": "transfer", "title": TITLE, "dataset": opts.dataset, "data_source": ds.source,
        "device": str(session.device), "settings": asdict(s), "rule": asdict(judge.RULE),
        "rule_words": judge.RULE.words(), "source_classes": list(source_names),
        "target_classes": list(target_names), "weights": opts.weights,
        "strategies": {k: asdict(v) for k, v in STRATEGIES.items()},
        "augment_summary": judge.aug_summary(aug_runs) if aug_runs else [],
        "transfer_summary": judge.transfer_summary(transfer_runs) if transfer_runs else [],
        "pretrain": [_pretrain_record(r) for r in pretrain_runs],
        "runs": aug_runs + transfer_runs,
    }
    return base.Outcome(
        payload=payload, rows=report.result_rows(payload), findings=findings,
        resolution=judge.resolution(aug_runs, transfer_runs, notes),
        layout=lambda rep: report.layout(rep, payload, findings))


def _aug_record(rec: dict[str, Any], judge) -> dict[str, Any]:
    spec, m = rec["spec"], rec["metrics"]
    hist = m["history"]
    d = judge.diagnose(hist)
    return {"part": "augmentation", "key": spec["key"], "augment": spec["augment"],
            "recipe": spec["recipe"], "seed": spec["seed"], "strategy": None,
            "labels_per_class": None, "test_accuracy": m["test_accuracy"],
            "trainable_params": m["parameters"], "train_seconds": m["train_time_s"],
            "final_logged_train_accuracy": hist[-1]["train_accuracy"],
            "final_clean_train_accuracy": hist[-1]["clean_train_accuracy"],
            "final_val_accuracy": hist[-1]["val_accuracy"], "gap": d.gap,
            "diagnosis": d.verdict, "diagnosis_rule": d.because,
            "diagnosis_detail": d.to_dict(), "reused": rec["reused"], "history": hist}


def _transfer_record(rec: dict[str, Any]) -> dict[str, Any]:
    spec, m = rec["spec"], rec["metrics"]
    return {"part": "transfer", "key": spec["key"], "backbone": spec["backbone"],
            "strategy": spec["strategy"], "labels_per_class": spec["labels_per_class"],
            "seed": spec["seed"], "epochs": spec["epochs"], "batch_size": spec["batch_size"],
            "test_accuracy": m["test_accuracy"], "trainable_params": rec["trainable_params"],
            "total_params": rec["total_params"], "train_seconds": m["train_time_s"],
            "trainable_blocks": rec["trainable_blocks"], "lr_scales": rec["lr_scales"],
            "frozen": rec["frozen"], "reused": rec["reused"], "history": m["history"]}


def _pretrain_record(rec: dict[str, Any]) -> dict[str, Any]:
    m = rec["metrics"]
    return {**rec["spec"], "test_accuracy": m["test_accuracy"], "train_seconds":
            m["train_time_s"], "num_train": m["num_train"], "reused": rec["reused"],
            "history": m["history"]}


STUDY = base.Study(
    name="transfer", title=TITLE,
    summary="augmentation vs overfitting (diagnosed by a printed rule) and transfer learning: "
            "from scratch, linear probe, partial unfreeze, fine-tuning at few labels per class",
    budgets=BUDGETS, datasets=("cifar10",), execute=execute, options=TransferOptions,
    extra_options=(
        base.Option("--backbone", "backbone", "transfer backbone: resnet20 | resnet18 | "
                    "mobilenet_v2_cifar (CIFAR variants, pretrained here on the source "
                    "classes); with --weights: resnet18 | resnet50 | mobilenet_v2 (torchvision, "
                    "224 px; default resnet50)", type=str),
        base.Option("--strategies", "strategies", "comma-separated subset of "
                    f"{','.join(STRATEGIES)} (default: all)", type=str),
        base.Option("--labels-per-class", "labels_per_class", "comma-separated labelled "
                    "target images per class (default: the budget's, e.g. 25,100)", type=str),
        base.Option("--source-classes", "source_classes", "comma-separated CIFAR-10 classes "
                    f"to pretrain on (default {','.join(SOURCE)})", type=str),
        base.Option("--target-classes", "target_classes", "comma-separated CIFAR-10 classes "
                    f"to transfer to, disjoint from the source (default {','.join(TARGET)})",
                    type=str),
        base.Option("--unfreeze", "unfreeze", "partial strategy: the last N backbone blocks "
                    "train (default: the backbone's last stage)"),
        base.Option("--seeds", "seeds", "seeds of every setting (default: the budget's, 3)"),
        base.Option("--weights", "weights", "a torchvision state dict (.pth) of --backbone: "
                    "replaces our pretraining; inputs resized to 224 px (meant for a GPU)",
                    type=str),
        base.Option("--no-augmentation", "augmentation", "skip part 1 (augmentation and "
                    "overfitting)", type=None, switch_to=False),
    ),
    epilog="The diagnosis rule, the strategies' learning rates and every threshold are printed "
           "in the report beside the numbers they judge.")
