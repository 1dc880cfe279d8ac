"""Running a study: validate the common options, open the folder, execute, write, report.

:func:`run` is the only way a study runs (``cnnlab study NAME`` and every study's Python API go
through it)::

    options -> validate (data set, device, budget, --out) -> Session (budget, device, run store,
    logger, environment) -> study.execute(session) -> Outcome -> results.json, results.csv,
    report.md / report.html (title, budget, what it can tell apart, headline findings, the
    study's sections, environment)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cnnlab._io import release_dir
from cnnlab.errors import UserError
from cnnlab.studies.base import Budget, Outcome, Study, StudyOptions
from cnnlab.studies.store import RunStore, open_output_folder


@dataclass
class Session:
    """What a study's ``execute`` works with.

    Attributes:
        study: the study.
        options: its validated options.
        budget: the resolved budget (after the options' overrides).
        device: the resolved ``torch.device``.
        store: the run store of the output folder.
        out: the output folder.
        log: the study's one logger: progress lines (to stderr unless ``quiet``).
        environment: versions, device, git commit, command, time, torch threads.
    """

    study: Study
    options: StudyOptions
    budget: Budget
    device: Any
    store: RunStore
    out: Path
    log: Callable[[str], None]
    environment: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)
    _dataset: Any = None

    def dataset(self):
        """The study's data set (``options.dataset``), loaded once and shared by every run."""
        if self._dataset is None:
            from cnnlab.data import load_dataset

            self._dataset = load_dataset(self.options.dataset, data_dir=self.options.data_dir)
        return self._dataset


def validate(study: Study, options: StudyOptions) -> Budget:
    """Check the common options (one clear error each) and return the resolved budget."""
    from cnnlab.engine.config import DEVICES

    if options.dataset not in study.datasets:
        raise UserError(f"unknown dataset {options.dataset!r} for the {study.name} study; "
                        f"choose from {', '.join(study.datasets)}")
    if options.device not in DEVICES and not options.device.startswith("cuda:"):
        raise UserError(f"unknown device {options.device!r}; choose from {', '.join(DEVICES)}")
    budget = options.budget
    if isinstance(budget, str):
        if budget not in study.budgets:
            raise UserError(f"unknown budget {budget!r}; choose from {', '.join(study.budgets)}")
        budget = study.budgets[budget]
    out = Path(options.out or study.default_out())
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    return options.resolve_budget(budget)


def _logger(study: Study, options: StudyOptions,
            log: Callable[[str], None] | None) -> Callable[[str], None]:
    if log is not None:
        return log
    if options.quiet:
        return lambda line: None
    return lambda line: print(f"{study.name}: {line}", file=sys.stderr, flush=True)


def run(study: Study, options: StudyOptions,
        log: Callable[[str], None] | None = None) -> tuple[Outcome, dict[str, Path]]:
    """Run (or continue) ``study`` and write its results and report.

    Args:
        study: the study.
        options: its options (the study's options dataclass).
        log: progress lines go here instead of stderr.

    Returns:
        ``(outcome, files)``; ``files`` maps ``html``, ``markdown``, ``json``, ``csv`` to paths.

    Raises:
        UserError: bad options, missing data, or a folder holding runs with other settings.
    """
    import torch

    from cnnlab.engine import resolve_device
    from cnnlab.provenance import environment

    budget = validate(study, options)
    device = resolve_device(options.device)
    out = open_output_folder(options.out or study.default_out())
    try:
        env = environment(device)
        env["torch_threads"] = torch.get_num_threads()
        store = RunStore(out, log=not options.quiet)
        session = Session(study, options, budget, device, store, out,
                          _logger(study, options, log), env)
        outcome = study.execute(session)
        payload = outcome.payload
        payload.update(
            budget=asdict(budget), environment=env, resolution=list(outcome.resolution),
            findings=[f.to_dict() for f in outcome.findings],
            runs_trained=session.store.trained, runs_reused=session.store.reused,
            wall_time_s=time.perf_counter() - session.started)
        files = _write(session, outcome)
        session.log(f"report: {files['html']} ({session.store.trained} runs trained, "
                    f"{session.store.reused} reused, {payload['wall_time_s']:.0f} s)")
        return outcome, files
    finally:
        release_dir(out)  # the lock is this invocation's, also when it fails


def _write(session: Session, outcome: Outcome) -> dict[str, Path]:
    from cnnlab.report import Report, save_results

    p, b, env = outcome.payload, session.budget, session.environment
    rep = Report(session.out, p.get("title") or session.study.title)
    rep.text(f"Budget **{b.name}**: {b.description}. Data: **{session.options.dataset}**; "
             f"device {env['device']}; wall time {p['wall_time_s']:.0f} s "
             f"({p['runs_trained']} runs trained, {p['runs_reused']} reused from an earlier "
             "invocation). Every number here was measured by this invocation (or the earlier "
             "one whose runs it reused); nothing in the text is written in advance.")
    rep.section("What this budget can and cannot tell apart")
    rep.bullets(outcome.resolution)
    rep.section("Findings")
    rep.bullets(f.claim for f in outcome.findings if f.headline)
    outcome.layout(rep)
    rep.section("Environment")
    rep.code("\n".join(f"{k}: {v}" for k, v in {**asdict(b), **env}.items()))
    jpath, cpath = save_results(session.out, p, outcome.rows)
    md, html = rep.write()
    return {"html": html, "markdown": md, "json": jpath, "csv": cpath}
