"""The segmentation study: BCE vs IoU vs Dice losses, frozen vs trainable, pretrained vs random
MobileNetV2 encoders, and the classic U-Net, on real horses (and real neurons).

``cnnlab study segmentation --dataset horse|isbi2012 --out DIR`` trains, through the engine's
segmentation task (:mod:`cnnlab.engine.segmentation_task`), the course's U-Net
(``unet_mobilenet_v2``: MobileNetV2 encoder tapped at block_1/3/6/13 expand and block_16 project,
pix2pix decoder) and Ronneberger et al.'s ``unet``, and writes a report (``report.html``,
``report.md``, ``results.json``, ``results.csv``, ``plots/``):

1. **Pretraining** -- the "pretrained" encoder is a MobileNetV2 that cnnlab trained itself on
   CIFAR-10 (``mobilenet_v2_cifar``, same widths; its RGB stem is summed to the one grey channel,
   :func:`cnnlab.engine.encoder_weights.load_encoder_weights`): no ImageNet weights exist offline.
   ``--encoder-weights FILE`` uses another file instead (e.g. torchvision's ImageNet
   MobileNetV2 state dict, or a cnnlab run).
2. **Losses** -- BCE, the course's soft IoU loss, soft Dice and BCE + Dice on the course's
   setting (pretrained, frozen encoder); BCE and IoU with ``budget.seeds`` seeds each: their
   pooled spread is the noise every IoU comparison is judged against.
3. **Encoders** -- pretrained/random x frozen/trainable, with BCE.
4. **Classic U-Net** -- ``unet`` at ``budget.unet_base`` channels (BatchNorm added), with BCE.

Every run reports test IoU and Dice (data-set IoU from pooled pixel counts, and per-image means;
:mod:`cnnlab.segmentation.metrics`), pixel error, parameters, MACs (cnnlab's analyzer) and
training time; the report shows the best and worst test images of the best configuration
(image / true mask / predicted mask / errors). On ``isbi2012`` it also states the pixel error
beside the U-Net paper's 0.0611 (on the challenge's test slices, which differ from ours).

Runs go to ``DIR/runs/<key>/`` (engine run folders): re-running reuses finished runs and resumes
interrupted ones (:mod:`cnnlab.studies.store`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from cnnlab.data import SEGMENTATION_DATASETS
from cnnlab.errors import UserError
from cnnlab.studies import base, runner

TITLE = "Segmentation: U-Net with a MobileNetV2 encoder, BCE vs IoU vs Dice losses"
ENCODERS = ("pretrained-frozen", "pretrained-trainable", "random-frozen", "random-trainable")
REFERENCE = ("bce", "pretrained-frozen")  # the course's setting with its usual loss
PAPER_PIXEL_ERROR = 0.0611  # Ronneberger et al. 2015, Table 1: ISBI 2012 challenge test set


@dataclass(frozen=True)
class Budget(base.Budget):
    """The sizes of one invocation.

    Attributes:
        size: images are resized to ``size`` x ``size`` (divisible by 32).
        epochs, batch_size, lr: every segmentation run (AdamW, cosine schedule).
        width, decoder_width: ``unet_mobilenet_v2``'s alpha and decoder multiplier.
        unet_base: the classic U-Net's first-stage channels (64 in the paper).
        seeds: seeds of the BCE and IoU runs (the noise); the other configurations get one.
        losses: the losses trained on the reference encoder.
        encoders: the encoder settings trained with BCE.
        unet: also train the classic U-Net.
        subset: training images per run (None: the whole training split).
        pretrain_subset, pretrain_epochs: the CIFAR-10 pretraining of the encoder.
        isbi: ``(field, value)`` pairs replacing the above on ``isbi2012``: its 24 training
            slices are 512x512 with thin membranes, so larger images, smaller batches and more
            epochs than for 262 horses.
    """

    size: int
    epochs: int
    batch_size: int
    lr: float
    width: float
    decoder_width: float
    unet_base: int
    seeds: int
    losses: tuple[str, ...] = ("bce", "iou", "dice", "bce_dice")
    encoders: tuple[str, ...] = ENCODERS
    unet: bool = True
    subset: int | None = None
    pretrain_subset: int | None = 10_000
    pretrain_epochs: int = 3
    isbi: tuple[tuple[str, Any], ...] = ()  # overrides for isbi2012 (24 larger training images)


BUDGETS: dict[str, Budget] = {
    "smoke": Budget(
        "smoke", size=64, epochs=1, batch_size=16, lr=3e-3, width=0.35, decoder_width=0.25,
        unet_base=4, seeds=2, losses=("bce", "iou"), encoders=("pretrained-frozen",
                                                               "random-trainable"),
        subset=64, pretrain_subset=500, pretrain_epochs=1,
        description="a pipeline check: far too short to show anything",
        cost="about 36 s (measured on 2 CPU cores, 1 torch thread, under load, CIFAR-10 "
             "pretraining of 500 images included)"),
    "quick": Budget(
        "quick", size=96, epochs=6, batch_size=16, lr=3e-3, width=0.35, decoder_width=0.25,
        unet_base=8, seeds=3, pretrain_subset=5000, pretrain_epochs=2,
        isbi=(("size", 256), ("batch_size", 4), ("epochs", 10)),
        description="horses 96x96 (membranes 256x256), alpha 0.35, 6 epochs (membranes 10); "
                    "BCE and IoU with 3 seeds",
        # 13 runs incl. 121-165 s of CIFAR-10 pretraining, 1 torch thread, other agents loading
        # the machine: horse 370 s (docs/segmentation-study-horse-cpu) and 436 s, isbi2012
        # 530 s (docs/segmentation-study-isbi2012-cpu) and 443 s wall; user time 3.7-4.4 min
        cost="6-9 min per data set (measured on 2 CPU cores, AMD EPYC, 1 torch thread, "
             "under load from other processes)"),
    "standard": Budget(
        "standard", size=160, epochs=40, batch_size=16, lr=3e-3, width=1.0, decoder_width=1.0,
        unet_base=16, seeds=3, pretrain_subset=10_000, pretrain_epochs=3,
        isbi=(("size", 256), ("batch_size", 4), ("epochs", 40)),
        description="for 2 CPU cores: horses 160x160 (membranes 256x256), alpha 1, 40 epochs; "
                    "BCE and IoU with 3 seeds; the budget of the goal (test IoU >= 0.80)",
        # horse, 2026-12-02: 4320 s in the report, 72 min 3 s wall (/usr/bin/time), 13 runs
        # incl. 343 s of CIFAR-10 pretraining; frozen-encoder runs 275-281 s, trainable 427-439
        # s, unet 410 s; the first run (340 s) shared the CPU with a niced test for a while
        cost="72 min on horses (measured on 2 CPU cores, Intel Xeon, 2 torch threads, idle "
             "machine); membranes not measured"),
    "gpu": Budget(
        "gpu", size=224, epochs=40, batch_size=16, lr=1e-3, width=1.0, decoder_width=1.0,
        unet_base=32, seeds=3, pretrain_subset=None, pretrain_epochs=15,
        isbi=(("size", 512), ("batch_size", 4), ("epochs", 100)),
        description="for one GPU: 224x224 (membranes 512x512), alpha 1, 40 epochs, the whole "
                    "of CIFAR-10 for pretraining, 3 seeds of BCE and IoU",
        cost="not measured (no GPU was lent to this project's sessions)"),
}


@dataclass
class StudyOptions(base.StudyOptions):
    """The segmentation study's options."""

    dataset: str = "horse"
    encoder_weights: str | None = None
    size: int | None = None

    def resolve_budget(self, budget: Budget) -> Budget:  # type: ignore[override]
        from cnnlab.data.segmentation import check_size

        if self.dataset == "isbi2012" and budget.isbi:
            budget = dataclasses.replace(budget, **dict(budget.isbi))
        if self.size is not None:
            check_size((self.size, self.size))
            budget = dataclasses.replace(budget, size=int(self.size))
        if self.encoder_weights is not None and not Path(self.encoder_weights).exists():
            raise UserError(f"--encoder-weights {self.encoder_weights} does not exist")
        return budget


@dataclass(frozen=True)
class RunSpec:
    """One training run: ``model`` with ``loss`` and ``encoder`` (``"-"`` for ``unet``)."""

    key: str
    model: str
    loss: str
    encoder: str
    seed: int

    @property
    def config_label(self) -> str:
        if self.model == "unet":
            return f"unet, {self.loss}"
        return f"unet_mobilenet_v2, {self.encoder}, {self.loss}"


def plan_runs(budget: Budget) -> list[RunSpec]:
    """Every segmentation run of a budget, in the order they are trained."""
    runs: list[RunSpec] = []

    def add(model: str, loss: str, encoder: str, seeds: range) -> None:
        for s in seeds:
            key = (f"unet-{loss}-s{s}" if model == "unet"
                   else f"mnv2-{encoder}-{loss}-s{s}")
            if all(r.key != key for r in runs):
                runs.append(RunSpec(key, model, loss, encoder, s))

    for loss in budget.losses:  # the losses on the course's setting
        add("unet_mobilenet_v2", loss, REFERENCE[1],
            range(budget.seeds if loss in ("bce", "iou") else 1))
    for enc in budget.encoders:
        add("unet_mobilenet_v2", "bce", enc, range(1))
    if budget.unet:
        add("unet", "bce", "-", range(1))
    return runs


# --------------------------------------------------------------------------- training a run
def _file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()[:16]


def train_config(spec: RunSpec, budget: Budget, opts: StudyOptions, device: str):
    """The engine configuration of one run."""
    from cnnlab.engine import TrainConfig

    if spec.model == "unet":
        model_kwargs: dict[str, Any] = {"base": budget.unet_base, "norm_layer": "bn"}
        width = 1.0
    else:
        model_kwargs = {"decoder_width": budget.decoder_width,
                        "freeze_encoder": spec.encoder.endswith("frozen")}
        width = budget.width
    return TrainConfig(
        model=spec.model, dataset=opts.dataset, width=width, model_kwargs=model_kwargs,
        task_kwargs={"loss": spec.loss, "size": budget.size}, data_dir=opts.data_dir,
        subset=budget.subset, val_fraction=0, epochs=budget.epochs,
        batch_size=budget.batch_size, lr=budget.lr, optimizer="adamw", weight_decay=1e-4,
        schedule="cosine", warmup=0.1, label_smoothing=0.0, augment="default", seed=spec.seed,
        device=device, quiet=True)


def build_model(spec: RunSpec, config, in_chans: int, weights: str | None) -> torch.nn.Module:
    """The run's network, seeded as the engine seeds its own; encoder weights loaded."""
    from cnnlab import models
    from cnnlab.engine import derive_seed
    from cnnlab.engine.encoder_weights import load_encoder_weights

    torch.manual_seed(derive_seed(config.seed, "init"))
    kwargs = dict(config.model_kwargs)
    if spec.model != "unet":
        kwargs["width"] = config.width
    model = models.create(spec.model, num_classes=1, in_chans=in_chans, **kwargs)
    if spec.encoder.startswith("pretrained"):
        load_encoder_weights(model, weights)
    return model


def pretrain_encoder(session: runner.Session) -> dict[str, Any]:
    """The encoder weights "pretrained" means: ``--encoder-weights`` or a CIFAR-10 run."""
    from cnnlab.engine import TrainConfig

    opts, budget = session.options, session.budget
    if opts.encoder_weights:
        return {"source": "file", "path": str(opts.encoder_weights),
                "sha256_16": _file_digest(opts.encoder_weights)}
    cfg = TrainConfig(model="mobilenet_v2_cifar", dataset="cifar10", width=budget.width,
                      data_dir=None, subset=budget.pretrain_subset, val_fraction=0,
                      epochs=budget.pretrain_epochs, batch_size=128, lr=0.1, optimizer="sgd",
                      weight_decay=5e-4, schedule="onecycle", label_smoothing=0.1,
                      device=str(session.device), quiet=True)
    session.log(f"pretraining the encoder: mobilenet_v2_cifar alpha {budget.width} on "
                f"{budget.pretrain_subset or 'all'} CIFAR-10 images, {budget.pretrain_epochs} "
                "epochs")
    rec = session.store.train("pretrain-cifar10", cfg)
    path = rec.run_dir / "model.pt"
    return {"source": "cnnlab run: mobilenet_v2_cifar on CIFAR-10", "path": str(path),
            "test_accuracy": rec.metrics["test_accuracy"],
            "train_seconds": rec.metrics["train_time_s"], "reused": rec.reused}


def execute_run(session: runner.Session, spec: RunSpec, weights: str | None) -> dict[str, Any]:
    """Train (or reuse) one run; its row of results."""
    budget, opts = session.budget, session.options
    cfg = train_config(spec, budget, opts, str(session.device))
    ds = session.dataset()
    # the weights' content, not their path, is what changes the result (a moved folder reuses)
    spec_dict = {**asdict(spec), "encoder_weights_sha256": _file_digest(weights)
                 if spec.encoder.startswith("pretrained") else None}
    record = session.store.train(spec.key, cfg, spec=spec_dict, dataset=ds,
                                 model=lambda: build_model(spec, cfg, ds.in_chans, weights))
    m = record.metrics
    session.log(f"{spec.key}: test IoU {m['test_iou']:.3f}, Dice {m['test_dice']:.3f}, "
                f"{m['train_time_s']:.0f} s" + (" (reused)" if record.reused else ""))
    return {"key": spec.key, "dataset": opts.dataset, "model": spec.model, "loss": spec.loss,
            "encoder": spec.encoder, "seed": spec.seed, "config": spec.config_label,
            "test_iou": m["test_iou"], "test_dice": m["test_dice"],
            "test_iou_per_image": m["test_iou_per_image"],
            "test_dice_per_image": m["test_dice_per_image"],
            "test_pixel_error": 1 - m["test_pixel_accuracy"],
            "test_precision": m["test_precision"], "test_recall": m["test_recall"],
            "train_seconds": m["train_time_s"], "wall_seconds": m["wall_time_s"],
            "final_train_loss": m["history"][-1]["train_loss"],
            "final_train_iou": m["history"][-1].get("train_iou"),
            "params": m["parameters"], "reused": record.reused,
            "run_dir": str(record.run_dir)}


def model_costs(session: runner.Session) -> dict[str, dict[str, int]]:
    """Parameters and MACs of each model of the plan (cnnlab's analyzer, batch 1)."""
    from cnnlab import models
    from cnnlab.analysis import analyze

    budget = session.budget
    ds = session.dataset()
    shape = (ds.in_chans, budget.size, budget.size)
    out = {}
    for name, kwargs in (("unet_mobilenet_v2", {"width": budget.width,
                                                "decoder_width": budget.decoder_width}),
                         ("unet", {"base": budget.unet_base, "norm_layer": "bn"})):
        with torch.device("meta"):
            model = models.create(name, num_classes=1, in_chans=ds.in_chans, **kwargs)
        a = analyze(model, shape)
        out[name] = {"params": int(a.totals["total_params"]),
                     "macs": int(a.totals["total_macs"])}
    return out


def execute(session: runner.Session) -> base.Outcome:
    """Pretrain (or take) the encoder, train every run, judge, lay out the report."""
    from cnnlab.studies import _segmentation_findings as findings_mod
    from cnnlab.studies import _segmentation_report as report_mod

    budget: Budget = session.budget  # type: ignore[assignment]
    opts: StudyOptions = session.options  # type: ignore[assignment]
    ds = session.dataset()
    pre = pretrain_encoder(session) if any(
        e.startswith("pretrained") for e in budget.encoders) else None
    weights = pre["path"] if pre else None
    if weights:  # a bad file fails now, before any segmentation run: one line
        from cnnlab import models
        from cnnlab.engine.encoder_weights import load_encoder_weights

        probe = models.create("unet_mobilenet_v2", num_classes=1, in_chans=ds.in_chans,
                              width=budget.width, decoder_width=budget.decoder_width)
        pre["loaded"] = load_encoder_weights(probe, weights)
    specs = plan_runs(budget)
    rows = []
    for i, spec in enumerate(specs, 1):
        session.log(f"[{i}/{len(specs)}] {spec.config_label}, seed {spec.seed}")
        rows.append(execute_run(session, spec, weights))
    costs = model_costs(session)
    for r in rows:
        r["macs"] = costs[r["model"]]["macs"]
    split = json.loads((Path(rows[0]["run_dir"]) / "config.json").read_text())["data"]["split"]
    payload: dict[str, Any] = {
        "study": "segmentation", "title": TITLE, "dataset": opts.dataset,
        "data_source": ds.source, "foreground": ds.foreground, "budget": asdict(budget),
        "device": str(session.device), "pretraining": pre, "split": split, "costs": costs,
        "runs": rows,
    }
    payload["overlays"] = report_mod.pick_overlays(payload, ds, session.out)
    found = findings_mod.findings(payload)
    return base.Outcome(
        payload=payload, rows=[{k: v for k, v in r.items() if k != "run_dir"} for r in rows],
        findings=found, resolution=findings_mod.resolution(payload),
        layout=lambda rep: report_mod.layout(rep, payload, found, ds))


def run_study(out: str | Path, *, dataset: str = "horse", data_dir: str | None = None,
              budget: str | Budget = "quick", device: str = "auto",
              encoder_weights: str | None = None, threads: int | None = None,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the study, write the report, return the results payload."""
    if threads:
        torch.set_num_threads(threads)
    options = StudyOptions(dataset=dataset, data_dir=data_dir, budget=budget, device=device,
                           out=str(out), encoder_weights=encoder_weights)
    outcome, _ = runner.run(STUDY, options, log=log)
    return outcome.payload


STUDY = base.Study(
    name="segmentation", title=TITLE,
    summary="U-Net with a MobileNetV2 encoder: BCE vs soft IoU vs Dice losses, frozen vs "
            "trainable, pretrained vs random encoder, and the classic U-Net",
    budgets=BUDGETS, datasets=SEGMENTATION_DATASETS, execute=execute, options=StudyOptions,
    extra_options=(
        base.Option("--encoder-weights", "encoder_weights",
                    "MobileNetV2 weights for the 'pretrained' encoder (a torchvision state dict, "
                    "a cnnlab run or weights file); default: pretrain on CIFAR-10 here",
                    type=str),
        base.Option("--size", "size", "resize images to SIZE x SIZE (divisible by 32; default: "
                    "the budget's)"),
    ))
