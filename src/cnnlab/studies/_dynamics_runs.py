"""The training runs of the dynamics study: one folder each, reused when finished, resumed when not.

Each run trains with the engine into ``<out>/runs/<key>`` through the study's run store
(:meth:`cnnlab.studies.store.RunStore.train`: a finished run is read back, an interrupted one
resumes from its checkpoint, a folder started for another setting is refused), with the study's
recorders
(:mod:`cnnlab.studies._dynamics_measure`) as callbacks. The recorders' logs are read back from
the run's final checkpoint, where the engine saves every callback's state: the same code path
whether the run was trained now, resumed, or finished long ago.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from cnnlab import models
from cnnlab.data import Dataset
from cnnlab.engine import TrainConfig, derive_seed
from cnnlab.engine import checkpoint as ckpt_io
from cnnlab.errors import DataError
from cnnlab.studies._dynamics_measure import (
    INIT_SCHEMES,
    FilterRecorder,
    GradNormRecorder,
    TestErrorRecorder,
    reinit_,
)
from cnnlab.studies.store import RunStore


@dataclass(frozen=True)
class RunSpec:
    """One training run of the study.

    Attributes:
        key: the run's folder name under ``runs/``, e.g. ``"degradation-plain-d20-s0"``.
        section: ``"symmetry"``, ``"flow"`` or ``"degradation"``.
        model: ``"plain_cnn"`` or ``"resnet_cifar"`` (registry names).
        depth: weighted layers, ``6n + 2``.
        norm: ``"bn"`` or ``"none"``.
        act: activation name, e.g. ``"relu"``, ``"sigmoid"``.
        init: a key of :data:`~cnnlab.studies._dynamics_measure.INIT_SCHEMES`.
        lr: peak learning rate.
        epochs: passes over the training subset.
        filters: also record the filter distances (symmetry runs).
        seed: training seed.
    """

    key: str
    section: str
    model: str
    depth: int
    norm: str
    act: str
    init: str
    lr: float
    epochs: int
    filters: bool = False
    seed: int = 0

    @property
    def family(self) -> str:
        return "ResNet" if self.model == "resnet_cifar" else "plain"

    @property
    def label(self) -> str:
        """A short human name, e.g. ``"plain-20 (BN, relu, He/Kaiming init)"``."""
        norm = "BN" if self.norm == "bn" else "no BN"
        return f"{self.family}-{self.depth} ({norm}, {self.act}, {INIT_SCHEMES[self.init]} init)"


@dataclass(frozen=True)
class TrainSettings:
    """What every run of one study shares (from the budget and the command line)."""

    dataset: str
    data_dir: str | None
    subset: int | None
    resolution: float
    batch_size: int
    log_points: int
    device: str


def train_config(spec: RunSpec, s: TrainSettings) -> TrainConfig:
    """The engine configuration of one run."""
    # He et al. 2016 (Sec. 4.2): SGD, momentum 0.9, weight decay 1e-4, batch 128; a cosine
    # schedule after a short warm-up replaces their step schedule (far fewer epochs here). No
    # augmentation and no label smoothing: the training error is the plain training error.
    return TrainConfig(
        model=spec.model, dataset=s.dataset, resolution=s.resolution,
        model_kwargs={"depth": spec.depth, "norm_layer": spec.norm, "act_layer": spec.act},
        data_dir=s.data_dir, subset=s.subset, val_fraction=0, epochs=spec.epochs,
        batch_size=s.batch_size, lr=spec.lr, optimizer="sgd", momentum=0.9, weight_decay=1e-4,
        schedule="cosine", warmup=0.1, label_smoothing=0.0, augment="none", seed=spec.seed,
        device=s.device, quiet=True)


def build_model(spec: RunSpec, ds: Dataset) -> nn.Module:
    """The run's network with its initialisation (seeded as the engine seeds its own)."""
    seed = derive_seed(spec.seed, "init")
    torch.manual_seed(seed)
    model = models.create(spec.model, num_classes=ds.num_classes, in_chans=ds.in_chans,
                          depth=spec.depth, norm_layer=spec.norm, act_layer=spec.act)
    return reinit_(model, spec.init, seed=seed)


def plural(n: int, word: str) -> str:
    """``"1 epoch"``, ``"3 epochs"``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def _every(spec: RunSpec, s: TrainSettings, n_train: int) -> int:
    """Record one step in this many, so that about ``log_points`` steps are recorded."""
    steps = max(1, n_train // min(s.batch_size, n_train)) * spec.epochs
    return max(1, steps // max(1, s.log_points))


def execute(spec: RunSpec, s: TrainSettings, ds: Dataset, store: RunStore,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train one run (or reuse / resume it) and return its outcome.

    Returns:
        ``{"spec", "reused", "metrics" (metrics.json), "grad_norms", "test_curve",
        "filters"}``: ``grad_norms`` is a :class:`GradNormRecorder` state, ``test_curve`` the
        :class:`TestErrorRecorder` rows, ``filters`` a :class:`FilterRecorder` state or None.
    """
    run_dir = store.run_dir(spec.key)
    n_train = s.subset if s.subset is not None else len(ds.train_labels)
    recorders = [GradNormRecorder(_every(spec, s, n_train)), TestErrorRecorder()]
    if spec.filters:
        recorders.append(FilterRecorder(_every(spec, s, n_train)))
    finished = (run_dir / "metrics.json").is_file()
    if not finished:
        how = "resuming" if (run_dir / ckpt_io.CHECKPOINT).exists() else "training"
        log(f"{spec.key}: {how} {spec.label}, {plural(spec.epochs, 'epoch')}, lr {spec.lr}")
    record = store.train(spec.key, train_config(spec, s), recorders, spec=asdict(spec),
                         model=lambda: build_model(spec, ds), dataset=ds)
    if record.reused:
        log(f"{spec.key}: finished earlier, reused")
    # the final checkpoint holds every callback's state at the end of the last epoch
    path = run_dir / ckpt_io.CHECKPOINT
    if not path.is_file():
        raise DataError(f"{path} is missing: it holds the run's gradient logs; delete {run_dir} "
                        "to train the run again")
    states = {type(r).__qualname__: ckpt_io.callback_state(path, type(r)) for r in recorders}
    m = record.metrics
    log(f"{spec.key}: final training error {1 - m['history'][-1]['train_accuracy']:.3f}, "
        f"test error {1 - m['test_accuracy']:.3f}, {m['wall_time_s']:.1f} s")
    return {"spec": asdict(spec), "reused": record.reused, "metrics": m,
            "grad_norms": states["GradNormRecorder"],
            "test_curve": states["TestErrorRecorder"]["rows"],
            "filters": _without_initial(states.get("FilterRecorder"))}


def _without_initial(state: dict[str, Any] | None) -> dict[str, Any] | None:
    """A FilterRecorder state without its initial-weight tensors (not JSON, not needed)."""
    return None if state is None else {k: v for k, v in state.items() if k != "initial"}
