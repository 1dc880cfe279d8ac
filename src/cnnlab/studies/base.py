"""What a study declares: its budgets, its options, its plan's outcome and its findings' shape.

A study is one module that builds a :class:`Study`: a name and title, its :class:`Budget`\\ s
(how much work, each with its description and what it costs on 2 CPU cores), the data sets it
accepts, its own options beyond the common ones (as :class:`Option` data; ``cli/`` turns them into
command-line flags) and ``execute(session) -> Outcome``. The framework
(:mod:`cnnlab.studies.runner`) validates the common options, opens the run store, loads nothing
itself, calls ``execute`` and writes ``results.json``, ``results.csv`` and the report. A study never
parses arguments and never imports the command-line package.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cnnlab.studies.findings import Finding

if TYPE_CHECKING:
    from cnnlab.report import Report
    from cnnlab.studies.runner import Session


@dataclass(frozen=True)
class Budget:
    """How much work one invocation does. Studies subclass it with their own sizes.

    Attributes:
        name: the ``--budget`` value.
        description: one line for ``--help`` and ``cnnlab study list``.
        cost: the wall time on 2 CPU cores, with how it was measured (``cnnlab study list``).
    """

    name: str
    description: str = field(default="", kw_only=True)
    cost: str = field(default="not measured on 2 CPU cores", kw_only=True)


@dataclass(frozen=True)
class Option:
    """One study-specific option, as data: ``cli/study.py`` makes it a command-line flag.

    Attributes:
        flag: e.g. ``"--seeds"``.
        dest: the field of the study's options dataclass it sets.
        help: the help text.
        type: ``int``, ``float`` or ``str``; None for an on/off switch.
        switch_to: for a switch, the value the flag sets (the field's default is the other).
    """

    flag: str
    dest: str
    help: str
    type: Callable[[str], Any] | None = int
    switch_to: bool = True


@dataclass
class StudyOptions:
    """The options every study has (validated by the framework, not by each study).

    ``budget`` is a key of the study's budgets or a :class:`Budget` itself (tests, sweeps);
    ``out`` empty means ``runs/study-<name>``.
    """

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    budget: str | Budget = "quick"
    device: str = "auto"
    out: str = ""
    quiet: bool = False

    def resolve_budget(self, budget: Budget) -> Budget:
        """The budget after this study's own overrides (default: unchanged); raise UserError
        for a bad study-specific option."""
        return budget


@dataclass
class Outcome:
    """What ``Study.execute`` returns; the framework writes it.

    Attributes:
        payload: ``results.json`` (the framework adds ``environment``, ``findings``,
            ``resolution``, ``budget``, ``wall_time_s``, ``runs_trained``, ``runs_reused``).
        rows: ``results.csv``, one dict per line.
        findings: every finding, in report order; headline ones open the report.
        resolution: the report's first lines: what this budget can and cannot tell apart.
        layout: adds the study's own sections to the report (after the findings).
        result: anything the study's Python API returns besides (e.g. a result object).
    """

    payload: dict[str, Any]
    rows: Sequence[Mapping[str, Any]]
    findings: Sequence[Finding]
    resolution: Sequence[str]
    layout: Callable[[Report], None]
    result: Any = None


@dataclass(frozen=True)
class Study:
    """One study, as the framework and ``cnnlab study`` see it."""

    name: str
    title: str
    summary: str  # one line: what the study asks
    budgets: Mapping[str, Budget]
    datasets: tuple[str, ...]
    execute: Callable[[Session], Outcome]
    options: type[StudyOptions] = StudyOptions
    extra_options: tuple[Option, ...] = ()
    default_budget: str = "quick"
    epilog: str = ""  # extra --help text

    def default_out(self) -> str:
        return f"runs/study-{self.name}"

    def make_options(self, **values: Any) -> StudyOptions:
        """The study's options dataclass from keyword values (unknown keys are an error)."""
        names = {f.name for f in dataclasses.fields(self.options)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise TypeError(f"{self.name} study has no option(s) {unknown}")
        return self.options(**values)
