"""The run store of a study folder: finished runs are reused, interrupted ones resumed, a folder
holding other settings is refused.

Layout of a study folder (``--out``)::

    report.html, report.md, results.json, results.csv, plots/    written by the framework
    runs/<key>/          one training run each (the engine's run folder)
    runs/<key>.json      one measurement-only result each (e.g. timings), with its settings

Re-running a study calls :meth:`RunStore.train` for every run again: a run whose ``metrics.json``
exists (the engine writes it last, after the final weights) is read back without training; a run
with only a checkpoint continues from it (the engine's ``--resume``, bit-identical on the CPU);
anything else starts fresh. A run folder whose saved settings differ from the run's is an error
(:func:`refuse_other_settings`) rather than a silent mix of two studies. Measurements
(:meth:`RunStore.measured`) are re-used when their settings match and re-measured otherwise.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab._json import write_json
from cnnlab._io import output_dir
from cnnlab.errors import UserError

METRICS = "metrics.json"
SPEC_FILE = "study_run.json"  # the study's own description of a run (what TrainConfig lacks)


def open_output_folder(path: str | Path) -> Path:
    """Create (or reopen) a study's output folder: the one place a study folder is made.

    A file, a place under a file, an unwritable place or a folder another run holds is one
    line; the folder stays locked (advisory) while the study writes to it, until
    :func:`cnnlab._io.release_dir` (the runner's, at the end of the invocation) or the process ends.
    """
    return output_dir(path, "--out", lock=True)


def refuse_other_settings(folder: Path, diff: Mapping[str, tuple[Any, Any]]) -> None:
    """Raise the one error for a folder holding a run with other settings.

    Args:
        diff: ``{setting: (value there, value now)}`` for every setting that differs.
    """
    if diff:
        changes = ", ".join(f"{k}: {there!r} there, {now!r} now"
                            for k, (there, now) in sorted(diff.items()))
        raise UserError(f"{folder} holds a run with other settings ({changes}); use another "
                        "--out or delete that folder")


@dataclass
class RunRecord:
    """A finished training run as a study sees it.

    Attributes:
        key: the run's name under ``runs/``.
        run_dir: the run folder.
        config: its resolved training configuration.
        metrics: the contents of ``metrics.json`` (test accuracy, history, timings...).
        reused: True when it was read back from an earlier invocation without training.
        result: the engine's ``RunResult`` when it was trained now (None when reused).
    """

    key: str
    run_dir: Path
    config: Any
    metrics: dict[str, Any]
    reused: bool
    result: Any = None


class RunStore:
    """The runs and measurements of one study folder; counts what was trained and reused.

    ``log``: the engine's per-epoch lines of each trained run (off for ``--quiet``).
    """

    def __init__(self, root: str | Path, *, log: bool = True) -> None:
        self.root = Path(root)
        self.log = log
        self.trained = 0
        self.reused = 0

    def run_dir(self, key: str) -> Path:
        return self.root / "runs" / key

    def train(self, key: str, config: Any, callbacks: Sequence[Any] = (), *,
              spec: Mapping[str, Any] | None = None,
              model: Callable[[], Any] | None = None, dataset: Any = None) -> RunRecord:
        """Train ``config`` into ``runs/<key>``, or reuse / resume what an earlier invocation left.

        Args:
            key: the run's folder name.
            config: its :class:`cnnlab.engine.TrainConfig` (``out`` and ``resume`` are set here).
            callbacks: extra engine callbacks (their state is checkpointed with the run).
            spec: the study's own settings of the run (saved as ``study_run.json`` and checked
                like the config), for what the config does not hold (e.g. an initialisation).
            model: builds the module to train instead of ``config.model``; called only when
                the run is trained or resumed, never when it is reused.
            dataset: an already loaded data set, shared by the runs of a study.

        Raises:
            UserError: the folder holds a run whose result-changing settings differ.
        """
        from cnnlab.engine import TrainConfig, train
        from cnnlab.engine import checkpoint as ckpt_io

        run_dir = self.run_dir(key)
        metrics_path = run_dir / METRICS
        if spec is not None:
            self._check_spec(run_dir, dict(spec))
        has_checkpoint = (run_dir / ckpt_io.CHECKPOINT).exists()
        config = dataclasses.replace(config, out=str(run_dir), resume=has_checkpoint)
        if has_checkpoint or metrics_path.exists():
            saved = TrainConfig.load(run_dir / "config.json")
            refuse_other_settings(run_dir, {k: (there, now) for k, (now, there)
                                            in config.differences(saved).items()})
        if metrics_path.exists():
            self.reused += 1
            return RunRecord(key, run_dir, config, json.loads(metrics_path.read_text()),
                             reused=True)
        result = train(config, callbacks=callbacks, model=model() if model else None,
                       dataset=dataset, log=self.log)
        self.trained += 1
        return RunRecord(key, run_dir, config, json.loads(metrics_path.read_text()),
                         reused=False, result=result)

    @staticmethod
    def _check_spec(run_dir: Path, spec: dict[str, Any]) -> None:
        path = run_dir / SPEC_FILE
        if path.is_file():
            saved = json.loads(path.read_text())
            refuse_other_settings(run_dir, {k: (saved.get(k), v) for k, v in spec.items()
                                            if saved.get(k) != v})
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json(path, spec)

    def measured(self, name: str, settings: Mapping[str, Any],
                 measure: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
        """A measurement-only result, re-used when saved with the same settings.

        Args:
            name: file name under ``runs/`` (``runs/<name>.json``; may contain ``/``).
            settings: everything the result depends on (JSON values).
            measure: computes the result when there is none to re-use.

        Returns:
            ``(result, reused)``.
        """
        path = self.root / "runs" / f"{name}.json"
        want = json.loads(json.dumps(dict(settings)))  # as it reads back from JSON
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("key") == want:
                return saved["result"], True
        result = measure()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {"key": want, "result": result})
        return result, False
