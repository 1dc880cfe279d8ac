"""The training runs of the transfer study: what each one trains and how, as data.

Three kinds of run, each an engine run in ``<out>/runs/<key>`` through the study's run store
(reused when finished, resumed when interrupted, refused when the folder holds other settings):

- **augmentation runs** (:class:`AugSpec`): one CNN on a small training subset of all classes,
  with an ``--augment`` recipe; the callback :class:`~cnnlab.engine.SplitEvaluator` adds the
  clean training accuracy (eval mode, no augmentation) to every epoch's history row;
- **the pretraining run** (:class:`PretrainSpec`): a backbone network trained on the *source*
  classes; its final weights (``model.pt``, read back through :mod:`cnnlab.engine.checkpoint`)
  are the pretrained backbone;
- **transfer runs** (:class:`TransferSpec`): a :class:`~cnnlab.models.transfer.TransferNet` on
  the *target* classes with ``labels_per_class`` labelled images per class, trained with one of
  the :data:`STRATEGIES`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from cnnlab.data import Dataset
from cnnlab.engine import SplitEvaluator, TrainConfig, derive_seed
from cnnlab.engine import checkpoint as ckpt_io
from cnnlab.errors import UserError
from cnnlab.models.transfer import Backbone, TransferNet, make_backbone
from cnnlab.studies.store import RunStore


@dataclass(frozen=True)
class Strategy:
    """How a transfer run uses the backbone.

    Attributes:
        name: the ``--strategies`` value.
        label: how the report names it.
        pretrained: start from the pretrained backbone (False: random initialisation).
        trainable: which backbone blocks train: ``"all"``, ``"none"`` or ``"last"`` (the last
            stage, or the last ``--unfreeze`` blocks).
        backbone_lr: the backbone's learning rate as a fraction of the head's.
    """

    name: str
    label: str
    pretrained: bool
    trainable: str
    backbone_lr: float = 1.0


# images per evaluation forward pass: these small CNNs evaluated twice as fast with 256 as with
# the engine's 1024 on the 2-core CPU (compact_cnn at half width: 1,970 vs 1,000 images/s,
# measured under load); the per-epoch clean-train and validation passes dominate part 1
EVAL_BATCH = 256
BACKBONE_LR = 0.1  # fine-tuning: pretrained weights move 10x slower than the new head
STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("scratch", "from scratch", pretrained=False, trainable="all"),
    Strategy("linear", "linear probe (backbone frozen)", pretrained=True, trainable="none"),
    Strategy("partial", "partial unfreeze (last stage)", pretrained=True, trainable="last",
             backbone_lr=BACKBONE_LR),
    Strategy("finetune", "full fine-tuning", pretrained=True, trainable="all",
             backbone_lr=BACKBONE_LR),
)}


def trainable_blocks(strategy: Strategy, backbone: Backbone,
                     unfreeze: int | None) -> tuple[str, ...]:
    """The backbone blocks a strategy trains (``unfreeze``: last N blocks for ``"last"``;
    None: the last stage)."""
    if strategy.trainable == "all":
        return backbone.blocks
    if strategy.trainable == "none":
        return ()
    return backbone.last_stage if unfreeze is None else backbone.last_blocks(unfreeze)


def lr_scales(strategy: Strategy) -> dict[str, float]:
    """The engine's ``TrainConfig.lr_scales`` of a strategy (empty: one learning rate)."""
    if strategy.trainable == "none" or strategy.backbone_lr == 1.0:
        return {}
    return {"backbone": strategy.backbone_lr}


def apply_strategy(net: TransferNet, strategy: Strategy, backbone: Backbone,
                   unfreeze: int | None) -> TransferNet:
    """Freeze ``net``'s backbone as the strategy says (in place; returns ``net``)."""
    return net.freeze(trainable_blocks(strategy, backbone, unfreeze))


# ------------------------------------------------------------------------------------ specs
@dataclass(frozen=True)
class AugSpec:
    """One augmentation run: ``augment`` is the report's name, ``recipe`` the ``--augment``
    spec (``"none"``, ``"flip,rotate=15"``, ...)."""

    key: str
    augment: str
    recipe: str
    seed: int


@dataclass(frozen=True)
class PretrainSpec:
    """The backbone network trained on the source classes."""

    key: str
    backbone: str
    classes: tuple[str, ...]
    per_class: int
    epochs: int


@dataclass(frozen=True)
class TransferSpec:
    """One transfer run.

    Attributes:
        key: the run folder's name.
        backbone: a :func:`~cnnlab.models.transfer.make_backbone` name.
        strategy: a key of :data:`STRATEGIES`.
        labels_per_class: labelled training images per target class (chosen with ``seed``, so
            each seed draws its own labelled images; every strategy with that seed gets the same).
        seed: the training seed.
        epochs, batch_size: the same for every strategy at one label budget.
        unfreeze: the last N blocks of the ``"partial"`` strategy (None: the last stage).
    """

    key: str
    backbone: str
    strategy: str
    labels_per_class: int
    seed: int
    epochs: int
    batch_size: int
    unfreeze: int | None = None


def jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists): the run store compares a
    run's saved settings with the new ones."""
    return json.loads(json.dumps(value))


def divisor_batch(n: int, most: int) -> int:
    """The largest batch size ``<= most`` that divides ``n`` (the engine drops a last partial
    batch; with a divisor every labelled image is used in every epoch)."""
    return max(b for b in range(1, min(n, most) + 1) if n % b == 0)


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file (a weights file's identity in the run settings)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class Settings:
    """What every run of one invocation shares."""

    device: str
    resolution: float  # of the transfer part (7.0 = 224 px for ImageNet weights)
    lr: float  # peak learning rate of the transfer runs' head
    aug_model: str
    aug_dropout: float
    aug_width: float
    aug_subset: int
    aug_val: int
    aug_epochs: int
    aug_lr: float
    aug_optimizer: str
    aug_schedule: str
    aug_batch: int
    pretrain_lr: float
    pretrain_batch: int
    eval_points: int


def _how(rec: Any) -> str:
    return "reused" if rec.reused else f"trained in {rec.metrics['train_time_s']:.1f} s"


def aug_config(spec: AugSpec, s: Settings) -> TrainConfig:
    # no label smoothing: the logged training loss is the plain cross-entropy of the augmented
    # batches, comparable with the validation loss
    return TrainConfig(
        model=s.aug_model, dataset="cifar10", width=s.aug_width,
        model_kwargs={"dropout": s.aug_dropout}, subset=s.aug_subset, val_fraction=s.aug_val,
        epochs=s.aug_epochs, batch_size=s.aug_batch, lr=s.aug_lr, optimizer=s.aug_optimizer,
        momentum=0.9, weight_decay=5e-4, schedule=s.aug_schedule, warmup=0.1,
        label_smoothing=0.0, augment=spec.recipe, seed=spec.seed, device=s.device, quiet=True,
        eval_batch_size=EVAL_BATCH)


def run_aug(spec: AugSpec, s: Settings, ds: Dataset, store: RunStore,
            log: Callable[[str], None]) -> dict[str, Any]:
    """Train (or reuse) one augmentation run; returns its spec and ``metrics.json``."""
    rec = store.train(spec.key, aug_config(spec, s), [SplitEvaluator("train", "clean_train")],
                      spec=jsonable(asdict(spec)), dataset=ds)
    m = rec.metrics
    last = m["history"][-1]
    log(f"{spec.key}: clean train {last['clean_train_accuracy']:.3f}, val "
        f"{last['val_accuracy']:.3f} ({_how(rec)})")
    return {"spec": asdict(spec), "reused": rec.reused, "metrics": m}


def pretrain_config(spec: PretrainSpec, s: Settings) -> TrainConfig:
    # the dataset's standard augmentation (flip + translate) and a cosine schedule
    return TrainConfig(
        model=spec.backbone, dataset="cifar10", resolution=s.resolution, val_fraction=0,
        epochs=spec.epochs, batch_size=s.pretrain_batch, lr=s.pretrain_lr, optimizer="sgd",
        momentum=0.9, weight_decay=5e-4, schedule="cosine", warmup=0.1, label_smoothing=0.0,
        augment="default", seed=0, device=s.device, quiet=True, eval_batch_size=EVAL_BATCH)


def run_pretrain(spec: PretrainSpec, s: Settings, source: Dataset, store: RunStore,
                 log: Callable[[str], None]) -> dict[str, Any]:
    """Train (or reuse) the backbone on the source classes; returns its spec, metrics and the
    path of its final weights."""
    rec = store.train(spec.key, pretrain_config(spec, s), spec=jsonable(asdict(spec)),
                      dataset=source)
    m = rec.metrics
    log(f"{spec.key}: source-task test accuracy {m['test_accuracy']:.3f} ({_how(rec)})")
    return {"spec": asdict(spec), "reused": rec.reused, "metrics": m,
            "weights": str(rec.run_dir / ckpt_io.FINAL)}


def transfer_config(spec: TransferSpec, s: Settings) -> TrainConfig:
    strategy = STRATEGIES[spec.strategy]
    # the target task's few labelled images: flip + translate (the data set's recipe), no
    # validation split (the labels are too few), SGD with a cosine schedule
    return TrainConfig(
        model=f"transfer-{spec.backbone}", dataset="cifar10", resolution=s.resolution,
        val_fraction=0, epochs=spec.epochs, batch_size=spec.batch_size, lr=s.lr,
        lr_scales=lr_scales(strategy), optimizer="sgd", momentum=0.9, weight_decay=5e-4,
        schedule="cosine", warmup=0.1, label_smoothing=0.0, augment="default", seed=spec.seed,
        device=s.device, quiet=True, eval_batch_size=EVAL_BATCH)


@dataclass(frozen=True)
class Pretrained:
    """Where the pretrained backbone's weights are and how they map onto it."""

    path: str
    torchvision: bool  # a user's torchvision state dict (--weights) instead of our pretraining
    digest: str

    def load_into(self, backbone: Backbone) -> None:
        ckpt_io.load_module_weights(backbone.module, self.path, prefix=backbone.weights_prefix,
                                    ignore=backbone.head_prefixes, arch=_arch(backbone))


def _arch(b: Backbone) -> str:
    return f"torchvision {b.name}" if b.torchvision else f"the {b.name} backbone"


def build_transfer_net(spec: TransferSpec, num_classes: int,
                       pretrained: Pretrained | None) -> tuple[TransferNet, Backbone]:
    """The run's network: seeded backbone (pretrained weights loaded when the strategy says
    so), a new head, frozen as the strategy says."""
    strategy = STRATEGIES[spec.strategy]
    torchvision = pretrained is not None and pretrained.torchvision
    torch.manual_seed(derive_seed(spec.seed, "init"))
    backbone = make_backbone(spec.backbone, torchvision=torchvision)
    if strategy.pretrained:
        if pretrained is None:
            raise UserError(f"strategy {spec.strategy!r} needs a pretrained backbone")
        pretrained.load_into(backbone)
    net = TransferNet(backbone, num_classes, seed=derive_seed(spec.seed, "head"))
    return apply_strategy(net, strategy, backbone, spec.unfreeze), backbone


def frozen_check(net_weights: dict[str, torch.Tensor], pretrained: Pretrained,
                 backbone: Backbone, trainable: Sequence[str]) -> dict[str, Any]:
    """Compare every frozen backbone tensor (parameters and BatchNorm buffers) of a trained
    run's final weights with the pretrained file, bit for bit.

    Returns:
        ``{"tensors": compared, "identical": how many are bit-identical, "changed": the first
        few names that changed}``.
    """
    state = ckpt_io.load_weights(pretrained.path)
    p = backbone.weights_prefix
    compared = identical = 0
    changed = []
    for name, tensor in net_weights.items():
        if not name.startswith("backbone."):
            continue
        inner = name[len("backbone."):]
        if any(inner == b or inner.startswith(b + ".") for b in trainable):
            continue
        compared += 1
        if torch.equal(tensor.cpu(), state[p + inner].cpu()):
            identical += 1
        elif len(changed) < 5:
            changed.append(inner)
    return {"tensors": compared, "identical": identical, "changed": changed}


def run_transfer(spec: TransferSpec, s: Settings, target: Dataset, store: RunStore,
                 pretrained: Pretrained | None, log: Callable[[str], None]) -> dict[str, Any]:
    """Train (or reuse) one transfer run; returns its spec, metrics, trainable parameters and,
    for a partly or wholly frozen backbone, the bit-for-bit check of its frozen tensors."""
    strategy = STRATEGIES[spec.strategy]
    net, backbone = build_transfer_net(spec, target.num_classes, pretrained)
    trainable = net.trainable_parameters()
    total = sum(p.numel() for p in net.parameters())
    every = max(1, spec.epochs // max(1, s.eval_points))
    settings = {**asdict(spec), "pretrained": None if pretrained is None else pretrained.digest,
                "classes": list(target.classes)}
    rec = store.train(spec.key, transfer_config(spec, s), [SplitEvaluator("test", every=every)],
                      spec=jsonable(settings), model=lambda: net, dataset=target)
    m = rec.metrics
    out: dict[str, Any] = {"spec": asdict(spec), "reused": rec.reused, "metrics": m,
                           "trainable_params": trainable, "total_params": total,
                           "trainable_blocks": list(net.trainable_blocks),
                           "lr_scales": lr_scales(strategy), "frozen": None}
    if strategy.pretrained and len(net.trainable_blocks) < len(backbone.blocks):
        final = ckpt_io.load_weights(rec.run_dir / ckpt_io.FINAL)
        out["frozen"] = frozen_check(final, pretrained, backbone, net.trainable_blocks)
    log(f"{spec.key}: test accuracy {m['test_accuracy']:.3f}, {trainable:,} trainable "
        f"parameters ({_how(rec)})")
    return out
