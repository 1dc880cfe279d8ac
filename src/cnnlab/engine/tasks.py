"""What the training loop trains on: a task gives the data, the batches, the loss and the metrics.

The trainer (:mod:`cnnlab.engine.trainer`) owns everything that is the same for every task: the
seeded streams, the optimiser and schedule, EMA, checkpoints and exact resumption, NaN/inf checks,
Ctrl-C, progress, ``history.csv``/``metrics.json`` and data parallelism. It asks a :class:`Task`
for the rest, always in the same order::

    TaskClass.check_config(config)           settings the task cannot use fail before any data
    task = TaskClass(config, device, data)   loads (or takes) the data and splits it
    task.check_model(name, info)             the model fits the task (registry models only)
    create_model(config, **task.model_kwargs())
    every epoch:
        perm = task.epoch_order(seed, batch)   step k trains perm[k * batch:(k + 1) * batch]
        inputs, targets = task.batch(idx, generator)       model(*inputs) -> outputs
        loss = task.loss(outputs, targets)                 the objective, a scalar
        sums += task.step_stats(outputs, targets)          float64 (len(stat_names),) sums
        task.after_step(model)                             after each optimiser step
        task.train_metrics(sums, seen)   -> {"train_accuracy": ..., ...} for the history row
        task.evaluate(model, "val")      -> EvalResult (loss, accuracy, confusion, metrics)
    task.evaluate(model, "test"); task.write_predictions(path, result)

Two tasks exist: :class:`ImageClassification` (every image data set of :data:`cnnlab.data.DATASETS`,
the default) and :class:`~cnnlab.engine.text_task.TextClassification` (``sst5``). A task is
chosen by the data set: :func:`task_class` looks ``config.dataset`` up in the registry.

How to add a task (e.g. binary segmentation: image batches, ``(B, 1, H, W)`` 0/1 mask targets,
a BCE/IoU/Dice loss, IoU/Dice metrics, joint image+mask augmentation):

1. Subclass :class:`Task` in its own module (``engine/segmentation_task.py``). Set ``name`` to
   the ``task`` the model registry gives its models (``register_model(..., task="...")``), so that
   a model of another task is refused in one line; set ``classes`` (for a 2x2 pixel confusion:
   ``("background", "foreground")``), ``stat_names``, ``history_columns`` and ``examples``.
2. ``check_config``: reject the settings it cannot honour (one :class:`UserError` line each), and
   read its own options from ``config.task_kwargs`` (``--task-kw loss=dice``) with
   :func:`task_options`.
3. ``__init__``: load the data (or take the preloaded object the caller passed), split it
   (``split_seed``, ``subset``, ``val_fraction``) and keep it on ``device``.
4. ``batch``: gather ``idx`` and augment with ``generator`` (images and masks with the same
   draws); return ``((images,), masks)``. Any randomness must come from ``generator`` (or
   torch's global generator): both are re-seeded per epoch and saved in mid-epoch checkpoints,
   which is what makes a resumed run bit-identical.
5. ``loss``, ``step_stats`` (sums, e.g. ``[correct pixels, intersection, union]``),
   ``train_metrics`` (must include ``train_accuracy``; may add ``train_iou`` ... listed in
   ``history_columns``), ``evaluate`` (an :class:`EvalResult` whose ``metrics`` holds ``iou``,
   ``dice``: they become ``val_iou``, ``test_iou`` ...), ``score`` (what picks the best epoch,
   e.g. the IoU), ``data_info`` (what a saved run needs to rebuild its inputs).
6. Register it in :func:`_register_builtin` at the end of this module:
   ``register_task(("pets-seg",), "cnnlab.engine.segmentation_task:BinarySegmentation")`` (a
   lazy import path keeps ``import cnnlab`` light). :func:`dataset_names` then offers the data
   set to ``--dataset`` and ``TrainConfig.validate``.

Nothing in the trainer changes for a new task.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cnnlab.engine import outputs
from cnnlab.engine.metrics import EvalResult, evaluate
from cnnlab.errors import UserError

if TYPE_CHECKING:
    from cnnlab.engine.config import TrainConfig
    from cnnlab.models import ModelInfo


class Task:
    """The protocol the trainer uses (see the module docstring); defaults where one is natural.

    Attributes:
        name: the models' registry task this task trains (``ModelInfo.task``).
        classes: class names (the confusion matrix's rows and columns).
        examples: what one training example is called in messages ("images", "sentences").
        stat_names: the per-step sums :meth:`step_stats` returns, in order.
        history_columns: extra ``history.csv`` columns beyond :data:`outputs.HISTORY_COLUMNS`.
        restore_best: test (and save as ``model.pt``) the weights of the best validation epoch
            instead of the last epoch's (early stopping on the validation split).
        config_defaults: :class:`TrainConfig` fields whose default differs for this task
            (``cnnlab train`` starts from them when the option is not given; an explicit value
            still wins and is still checked by :meth:`check_config`).
    """

    name: str = ""
    classes: tuple[str, ...] = ()
    examples: str = "examples"
    stat_names: tuple[str, ...] = ("correct",)
    history_columns: tuple[str, ...] = ()
    restore_best: bool = False
    config_defaults: Mapping[str, Any] = {}

    @classmethod
    def check_config(cls, config: TrainConfig) -> None:
        """Raise a one-line :class:`UserError` for a setting this task cannot honour."""

    def split_size(self, split: str) -> int:
        """Examples in ``split`` ("train", "val" or "test"); 0 when there is none."""
        raise NotImplementedError

    @property
    def num_train(self) -> int:
        return self.split_size("train")

    def check_model(self, model: str, info: ModelInfo) -> None:
        """Refuse a registry model of another task (one line)."""
        if info.task != self.name:
            theirs, ours = info.task.replace("_", " "), self.name.replace("_", " ")
            raise UserError(f"{model} is {_article(theirs)} {theirs} model; data set "
                            f"{self.dataset_name()!r} is {ours}: choose {_article(ours)} {ours} "
                            "model (cnnlab models)")

    def dataset_name(self) -> str:
        return str(self.data_info().get("name", "?"))

    def model_kwargs(self) -> dict[str, Any]:
        """The registry builder's arguments the data set fixes (``num_classes``, ``in_chans``,
        ``vocab_size``...)."""
        raise NotImplementedError

    def epoch_order(self, seed: int, batch_size: int) -> torch.Tensor:
        """The training examples' order in one epoch, ``(N,)`` int64: step ``k`` trains on
        ``order[k * batch_size:(k + 1) * batch_size]`` (a last partial batch is dropped). A pure
        function of ``seed`` (derived from the run's seed and the epoch). The default: a uniform
        shuffle of the training split on ``self.device``."""
        shuffle = torch.Generator(device=self.device)
        shuffle.manual_seed(seed)
        return torch.randperm(self.num_train, generator=shuffle, device=self.device)

    def batch(self, idx: torch.Tensor, generator: torch.Generator
              ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """``(inputs, targets)`` of the training examples ``idx``: the model runs
        ``model(*inputs)``; augmentation draws from ``generator``."""
        raise NotImplementedError

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training objective (a scalar mean over the batch)."""
        raise NotImplementedError

    def step_stats(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``(len(stat_names),)`` float64 sums over the batch (no host synchronisation)."""
        raise NotImplementedError

    def train_metrics(self, sums: torch.Tensor, seen: float) -> dict[str, float]:
        """The history row's training metrics from the epoch's sums over ``seen`` examples;
        ``train_accuracy`` is required (the progress bar shows it)."""
        return {"train_accuracy": float(sums[0]) / seen}

    def after_step(self, model: nn.Module) -> None:
        """Called after every optimiser step (e.g. a max-norm constraint); default nothing."""

    def evaluate(self, model: nn.Module, split: str, *, batch_size: int, amp: bool,
                 channels_last: bool) -> EvalResult:
        """Loss, accuracy, confusion matrix and task metrics on ``split`` ("val" or "test")."""
        raise NotImplementedError

    def score(self, result: EvalResult) -> float:
        """What makes a validation result the best so far (higher is better)."""
        return result.accuracy

    def per_class(self, result: EvalResult) -> list[dict]:
        return result.per_class(self.classes)

    def write_predictions(self, path: Path, result: EvalResult) -> None:
        """``test_predictions.npz`` (labels and softmax probabilities by default)."""
        raise NotImplementedError

    def write_files(self, out: Path) -> None:
        """Extra files a run folder needs (e.g. a vocabulary); written with ``config.json``."""

    def data_info(self) -> dict[str, Any]:
        """``config.json``'s ``data`` entry: what :func:`cnnlab.engine.load_run` needs (``name``,
        ``task``, ``classes``, ``in_chans``, ``builder``: extra :meth:`model_kwargs`)."""
        raise NotImplementedError


def _article(words: str) -> str:
    return "an" if words[:1] in "aeiou" else "a"


def task_options(config: TrainConfig, allowed: Mapping[str, Callable[[Any], Any]]
                 ) -> dict[str, Any]:
    """``config.task_kwargs`` checked against ``{name: converter}``; a converter raises
    ``ValueError``/``TypeError`` (or :class:`UserError`) for a bad value. One line per problem."""
    unknown = sorted(set(config.task_kwargs) - set(allowed))
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise UserError(f"--task-kw {', '.join(unknown)}: not an option of data set "
                        f"{config.dataset!r} (its options: {known})")
    out = {}
    for key, value in config.task_kwargs.items():
        try:
            out[key] = allowed[key](value)
        except (TypeError, ValueError) as exc:
            raise UserError(f"--task-kw {key}={value!r}: {exc}") from None
    return out


def one_of(choices: Sequence[str]) -> Callable[[Any], str]:
    """A :func:`task_options` converter accepting exactly one of ``choices``."""
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return check


# ------------------------------------------------------------------------- image classification

class ImageClassification(Task):
    """uint8 images on the training device, batched augmentation, cross-entropy, accuracy.

    Exactly what the trainer did before tasks existed: :func:`cnnlab.data.make_splits`, the
    data set's :class:`cnnlab.data.Augment` recipe, ``CrossEntropyLoss(label_smoothing)`` and
    :func:`cnnlab.engine.metrics.evaluate`.

    Attributes:
        data: the :class:`cnnlab.data.Dataset`.
        splits: its tensors on the device (:class:`cnnlab.data.Splits`).
        augment: the augmentation recipe at this resolution.
    """

    name = "image_classification"
    examples = "images"

    @classmethod
    def check_config(cls, config: TrainConfig) -> None:
        from cnnlab.data import Augment

        task_options(config, {})
        Augment.parse(config.augment, config.dataset)  # bad specs fail before the data

    def __init__(self, config: TrainConfig, device: torch.device, data: Any = None) -> None:
        from cnnlab.data import Augment, load_dataset, make_splits

        self.config, self.device = config, device
        augment = Augment.parse(config.augment, config.dataset)
        if data is None:
            data = load_dataset(config.dataset, data_dir=config.data_dir,
                                cache_dir=config.cache_dir, download=config.download)
        elif getattr(data, "name", None) != config.dataset:
            raise UserError(f"config.dataset is {config.dataset!r} but the dataset given is "
                            f"{getattr(data, 'name', type(data).__name__)!r}")
        self.data = data
        self.splits = make_splits(data, val_fraction=config.val_fraction, subset=config.subset,
                                  split_seed=config.split_seed, resolution=config.resolution,
                                  device=device)
        self.classes = tuple(self.splits.classes)
        self.augment = augment.scaled(config.resolution).check_fits(self.splits.image_size)
        self._criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    def split_size(self, split: str) -> int:
        return len(getattr(self.splits, f"{split}_labels"))

    def check_model(self, model: str, info: ModelInfo) -> None:
        super().check_model(model, info)
        h, w = self.splits.image_size
        if len(info.min_input) == 2 and (h < info.min_input[0] or w < info.min_input[1]):
            raise UserError(f"{model} needs inputs of at least {info.min_input[0]}x"
                            f"{info.min_input[1]} pixels, but resolution {self.config.resolution}"
                            f" gives {h}x{w}")

    def model_kwargs(self) -> dict[str, Any]:
        return {"num_classes": len(self.classes), "in_chans": self.splits.in_chans}

    def batch(self, idx, generator):
        sp = self.splits
        x = self.augment(sp.train_images[idx], sp.mean, sp.std, generator)
        return (x,), sp.train_labels[idx]

    def loss(self, outputs, targets):
        return self._criterion(outputs.float(), targets)

    def step_stats(self, outputs, targets):
        return (outputs.argmax(1) == targets).sum().to(torch.float64).reshape(1)

    def evaluate(self, model, split, *, batch_size, amp, channels_last):
        sp = self.splits
        return self.evaluate_images(model, getattr(sp, f"{split}_images"),
                                    getattr(sp, f"{split}_labels"), batch_size=batch_size,
                                    amp=amp, channels_last=channels_last)

    def evaluate_images(self, model, images, labels, *, batch_size, amp, channels_last):
        """:meth:`evaluate` on any uint8 images of this data set (callbacks use it)."""
        sp = self.splits
        return evaluate(model, images, labels, mean=sp.mean, std=sp.std,
                        num_classes=len(sp.classes), batch_size=batch_size, amp=amp,
                        channels_last=channels_last, tta=self.config.tta)

    def write_predictions(self, path, result):
        outputs.write_predictions(path, self.splits.test_labels, result.logits)

    def data_info(self) -> dict[str, Any]:
        sp, ds = self.splits, self.data
        return {"name": ds.name, "classes": list(sp.classes), "mean": list(sp.mean),
                "std": list(sp.std), "image_size": list(sp.image_size),
                "native_size": list(ds.native_size), "in_chans": sp.in_chans,
                "num_train": len(sp.train_labels), "num_val": len(sp.val_labels),
                "num_test": len(sp.test_labels), "source": ds.source,
                "augment": self.augment.describe()}


# ------------------------------------------------------------------------------------ registry

_REGISTRY: dict[str, type[Task] | str] = {}


def register_task(datasets: Sequence[str], task: type[Task] | str) -> None:
    """Train the data sets ``datasets`` with ``task``: a :class:`Task` subclass or its lazy
    import path ``"package.module:Class"``."""
    for name in datasets:
        _REGISTRY[name] = task


def dataset_names() -> tuple[str, ...]:
    """Every data set the engine trains on (``--dataset`` choices)."""
    return tuple(_REGISTRY)


def task_class(dataset: str) -> type[Task]:
    """The task of a data set.

    Raises:
        UserError: an unknown data set (listing the known ones).
    """
    if dataset not in _REGISTRY:
        raise UserError(f"unknown dataset {dataset!r}; choose one of {list(_REGISTRY)}")
    task = _REGISTRY[dataset]
    if isinstance(task, str):
        module, _, cls = task.partition(":")
        task = _REGISTRY[dataset] = getattr(importlib.import_module(module), cls)
    return task


def _register_builtin() -> None:
    from cnnlab.data import DATASETS, SEGMENTATION_DATASETS

    register_task(DATASETS, ImageClassification)
    register_task(("sst5",), "cnnlab.engine.text_task:TextClassification")
    register_task(SEGMENTATION_DATASETS, "cnnlab.engine.segmentation_task:BinarySegmentation")


_register_builtin()
