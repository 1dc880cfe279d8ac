"""Resumable collections of training runs: finished runs are reused, interrupted ones resumed.

Every study keeps each training run in its own folder ``<study out>/runs/<run id>/`` written by
the training engine. Re-running a study calls :func:`train_or_reuse` for every run again: a run
whose ``metrics.json`` exists (the engine writes it last, after the final weights) is read back
without training; a run with only a checkpoint continues from it (the engine's ``--resume``,
bit-identical on the CPU); anything else starts fresh. A folder holding a run with different
settings is an error rather than a silent mix of two studies.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from cnnlab.data import Dataset
from cnnlab.engine import Callback, TrainConfig, train
from cnnlab.engine import checkpoint as ckpt_io
from cnnlab.errors import UserError

METRICS = "metrics.json"


@dataclass
class RunRecord:
    """A finished training run as a study sees it.

    Attributes:
        run_dir: the run folder.
        config: its resolved training configuration.
        metrics: the contents of ``metrics.json`` (test accuracy, history, timings...).
        reused: True when it was read back from an earlier invocation without training.
        result: the engine's ``RunResult`` when it was trained now (None when reused).
    """

    run_dir: Path
    config: TrainConfig
    metrics: dict[str, Any]
    reused: bool
    result: Any = None


def train_or_reuse(config: TrainConfig, run_dir: str | Path,
                   callbacks: Sequence[Callback] = (), *, model: nn.Module | None = None,
                   dataset: Dataset | None = None) -> RunRecord:
    """Train ``config`` into ``run_dir``, or reuse / resume what an earlier invocation left there.

    Args:
        config: the run's settings; its ``out`` and ``resume`` fields are set here.
        run_dir: the run's folder.
        callbacks: extra engine callbacks (their state is checkpointed with the run).
        model: train this module (e.g. re-initialised by the study) instead of building
            ``config.model``; as :func:`cnnlab.engine.train`. Unused when the run is reused.
        dataset: an already loaded data set, shared by the runs of a study; as for ``train``.

    Returns:
        The :class:`RunRecord`.

    Raises:
        UserError: ``run_dir`` holds a run whose result-changing settings differ from ``config``.
    """
    run_dir = Path(run_dir)
    metrics_path = run_dir / METRICS
    has_checkpoint = (run_dir / ckpt_io.CHECKPOINT).exists()
    config = dataclasses.replace(config, out=str(run_dir), resume=has_checkpoint)
    if has_checkpoint or metrics_path.exists():
        saved = TrainConfig.load(run_dir / "config.json")
        diff = config.differences(saved)
        if diff:
            changes = ", ".join(f"{k}: {b!r} there, {a!r} now" for k, (a, b) in sorted(diff.items()))
            raise UserError(f"{run_dir} holds a run with other settings ({changes}); use another "
                            "--out or delete that folder")
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        return RunRecord(run_dir, config, metrics, reused=True)
    result = train(config, callbacks=callbacks, model=model, dataset=dataset)
    metrics = json.loads(metrics_path.read_text())
    return RunRecord(run_dir, config, metrics, reused=False, result=result)
