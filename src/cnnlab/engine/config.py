"""One place for every hyperparameter of a training run (units in the comments)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab import _io
from cnnlab._numbers import check_number
from cnnlab.errors import DataError, UserError

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
COMPILE_MODES = ("", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

# Keys that may differ between a run and its --resume: where things are written or read, and how
# progress is shown. Everything else changes the result and must match the saved run.
RESUME_IGNORED = frozenset({"out", "resume", "quiet", "tensorboard", "data_dir", "cache_dir",
                            "download", "log_every_s", "threads"})  # threads: checked apart


# The numeric fields and their meaningful ranges (checked by cnnlab._numbers.check_number, which
# also rejects NaN and infinity; the option is named as the CLI spells it).
_NUMERIC: dict[str, dict[str, Any]] = {
    "width": {"low": 0, "low_open": True},
    "resolution": {"low": 0, "low_open": True},
    "subset": {"low": 1, "integer": True},
    "val_fraction": {"low": 0},
    "split_seed": {"low": 0, "integer": True},
    "epochs": {"low": 1, "integer": True},
    "batch_size": {"low": 1, "integer": True},
    "lr": {"low": 0, "low_open": True},
    "momentum": {"low": 0, "high": 1, "high_open": True},
    "weight_decay": {"low": 0},
    "warmup": {"low": 0, "high": 1, "high_open": True},
    "label_smoothing": {"low": 0, "high": 1, "high_open": True},
    "ema": {"low": 0, "high": 1, "high_open": True},
    "seed": {"low": 0, "integer": True},
    "eval_batch_size": {"low": 1, "integer": True},
    "threads": {"low": 1, "integer": True},
    "log_every_s": {"low": 0},
}
_OPTIONAL = {"subset", "threads"}  # None: not set


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as ``config.json`` beside its results.

    The defaults are a sensible generic recipe (SGD Nesterov, one-cycle, label smoothing 0.1);
    ``cnnlab train --help`` and the README list tuned recipes per data set.
    """

    # what to train, on what
    model: str = "simple_cnn"  # a name from cnnlab.models.list_models()
    dataset: str = "fashion-mnist"  # cifar10 | fashion-mnist (images) | sst5 (sentences)
    width: float = 1.0  # width multiplier alpha (channels x alpha)
    resolution: float = 1.0  # resolution multiplier rho: images resized to round(rho x native)
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra options for models.create
    encoder_weights: str | None = None  # unet_mobilenet_v2: its encoder's starting weights, a
    #          MobileNetV2 weights file or run folder (cnnlab.engine.encoder_weights); None: random
    data_dir: str | None = None  # None: the search order of cnnlab.data.datasets
    cache_dir: str | None = None  # decoded-array cache; None: $CNNLAB_CACHE or ~/.cache/cnnlab
    download: bool = False  # fetch the data with torchvision when missing (needs internet)
    subset: int | None = None  # train on this many images (stratified), test on the same fraction
    val_fraction: float = 0.1  # held out for validation: a fraction, or a count when >= 1; 0 = none
    split_seed: int = 0  # seeds the subset and the validation split (not the training)
    task_kwargs: dict[str, Any] = field(default_factory=dict)  # options of the data set's task
    #                                 (cnnlab.engine.tasks), e.g. sst5: train_on=phrases

    # optimisation
    epochs: int = 10  # passes over the training split
    batch_size: int = 256  # images per step over all processes (the last partial batch of
    #                        each epoch is dropped); with N processes each trains on 1/N of it
    lr: float = 0.1  # peak learning rate (per step, no batch-size scaling applied)
    lr_scales: dict[str, float] = field(default_factory=dict)  # module name prefix -> multiplier
    #                   of lr for its parameters (e.g. {"backbone": 0.1}: fine-tune a pretrained
    #                   backbone 10x slower than a new head); the longest prefix wins; default 1
    optimizer: str = "sgd"  # sgd (Nesterov momentum) | adamw
    momentum: float = 0.9  # SGD momentum; AdamW beta1
    weight_decay: float = 5e-4  # L2 (SGD) / decoupled (AdamW) coefficient; not on norm or bias
    schedule: str = "onecycle"  # onecycle (linear up, linear down to 0) | cosine | constant
    warmup: float = 0.2  # fraction of all steps spent ramping the lr linearly up from lr/10
    label_smoothing: float = 0.1  # in [0, 1); the training loss only (val/test report plain CE)
    augment: str = "default"  # "default" (the dataset's recipe), "none", or "flip,translate=4,..."
    ema: float = 0.0  # decay per step of an exponential moving average of the weights; 0 = off
    seed: int = 0  # seeds initialisation, shuffling, augmentation and dropout

    # speed
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N
    amp: bool | None = None  # bf16 autocast; None = on for CUDA, off on the CPU
    channels_last: bool | None = None  # NHWC memory format; None = on for CUDA
    compile: str = ""  # torch.compile mode for the model ("" = off): default | reduce-overhead
    #                    (CUDA graphs) | max-autotune | max-autotune-no-cudagraphs; the first steps
    #                    pay the compilation
    eval_batch_size: int = 1024  # images per forward pass when evaluating
    threads: int | None = None  # torch CPU threads (None: the process's setting, not chosen);
    #                             an exact resume needs the run's own number
    tta: bool = False  # evaluate val/test on the image and its mirror image (mean of the logits)
    sync_bn: bool = False  # with several processes (CUDA): BatchNorm statistics over the global
    #                        batch (SyncBatchNorm) instead of each rank's part

    # outputs
    out: str | None = None  # run directory (checkpoints, metrics, plots); None writes nothing
    resume: bool = False  # continue the run in `out` from its checkpoint
    quiet: bool = False  # one line per epoch instead of progress bars
    tensorboard: bool = False  # also write TensorBoard logs to out/tensorboard (needs tensorboard)
    log_every_s: float = 0.5  # seconds between progress updates (each one syncs the GPU)

    def validate(self) -> TrainConfig:
        """Check every value; raise one :class:`UserError` naming the first bad one."""
        from cnnlab.engine.tasks import dataset_names

        def need(ok: bool, what: str) -> None:
            if not ok:
                raise UserError(what)

        need(self.dataset in dataset_names(),
             f"unknown dataset {self.dataset!r}; choose one of {list(dataset_names())}")
        need(self.optimizer in OPTIMIZERS,
             f"optimizer must be one of {list(OPTIMIZERS)}, not {self.optimizer!r}")
        need(self.schedule in SCHEDULES,
             f"schedule must be one of {list(SCHEDULES)}, not {self.schedule!r}")
        need(isinstance(self.device, str) and (self.device in DEVICES
                                               or self.device.startswith("cuda:")),
             f"device must be auto, cpu, cuda or cuda:N, not {self.device!r}")
        need(isinstance(self.model_kwargs, dict) and all(isinstance(k, str)
                                                         for k in self.model_kwargs),
             f"model kwargs must be a mapping of names to values, not {self.model_kwargs!r}")
        need(isinstance(self.lr_scales, dict) and all(isinstance(k, str) and k
                                                       for k in self.lr_scales),
             f"lr scales must map module names to multipliers, not {self.lr_scales!r}")
        for prefix, scale in self.lr_scales.items():
            check_number(scale, f"learning-rate scale of {prefix!r}", low=0, low_open=True)
        need(isinstance(self.task_kwargs, dict) and all(isinstance(k, str)
                                                        for k in self.task_kwargs),
             f"task kwargs must be a mapping of names to values, not {self.task_kwargs!r}")
        need(self.compile in COMPILE_MODES,
             f"compile mode must be one of {list(COMPILE_MODES[1:])} (or empty for off), not "
             f"{self.compile!r}")
        need(self.encoder_weights is None
             or (isinstance(self.encoder_weights, str) and self.encoder_weights),
             f"encoder weights must be a file or run folder path, not {self.encoder_weights!r}")
        for name, kw in _NUMERIC.items():
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
                continue
            check_number(value, f"--{name.replace('_', '-')}", **kw)
        need(not self.resume or self.out is not None, "resume needs an output directory (--out)")
        return self

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str | Path | None = None
                  ) -> TrainConfig:
        """The inverse of :meth:`to_dict`; unknown keys are an error (a newer or foreign file).

        With ``source`` (the file it was read from) the values are also validated, and any
        problem is a DataError naming the file.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        where = f"{source}: " if source is not None else ""
        if not isinstance(data, dict):
            raise DataError(f"{where}expected a training config (a JSON object), found "
                            f"{type(data).__name__}")
        unknown = sorted(set(data) - names)
        if unknown:
            raise (DataError if source else UserError)(
                f"{where}unknown training config keys {unknown}; known: {sorted(names)}")
        config = cls(**data)
        if source is not None:
            try:
                config.validate()
            except UserError as exc:
                raise DataError(f"{where}the saved config is damaged: {exc}") from None
        return config

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a ``config.json`` written by a run (its ``"config"`` entry, or the whole file).

        Raises:
            DataNotFoundError: no such file.
            DataError: the file is not valid JSON, not a run's config, or holds bad values.
        """
        return cls.from_dict(read_run_file(path)["config"], source=path)

    def differences(self, other: TrainConfig | dict[str, Any],
                    ignore: frozenset[str] = RESUME_IGNORED) -> dict[str, tuple[Any, Any]]:
        """``{key: (self's value, other's value)}`` for every result-changing key that differs."""
        theirs = other.to_dict() if isinstance(other, TrainConfig) else dict(other)
        # a key the other side lacks (saved before the key existed) had its default
        theirs = {**{f.name: f.default for f in dataclasses.fields(self)
                     if f.default is not dataclasses.MISSING},
                  **{f.name: f.default_factory() for f in dataclasses.fields(self)
                     if f.default_factory is not dataclasses.MISSING}, **theirs}
        mine = self.to_dict()
        keys = (set(mine) | set(theirs)) - ignore
        return {k: (mine.get(k), theirs.get(k)) for k in sorted(keys)
                if mine.get(k) != theirs.get(k)}


def read_run_file(path: str | Path) -> dict[str, Any]:
    """A run folder's ``config.json`` as a dict with a ``"config"`` entry (older files that hold
    only the config are wrapped): the one reader of run configs.

    Raises:
        DataNotFoundError: no such file.
        DataError: not valid JSON, or not a JSON object.
    """
    data = _io.read_json(path, "run config")
    if not isinstance(data, dict):
        raise DataError(f"run config {path}: expected a JSON object, found {type(data).__name__}")
    if "config" not in data:
        data = {"config": data}
    return data
