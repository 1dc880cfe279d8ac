"""End-to-end studies: each plans runs, trains and measures them, judges and reports.

Every study is one module exposing ``STUDY`` (a :class:`cnnlab.studies.base.Study`) and is
registered in :data:`STUDIES` below; ``cnnlab study NAME`` and ``cnnlab study list`` read this
table. The framework pieces: :mod:`~cnnlab.studies.base` (what a study declares),
:mod:`~cnnlab.studies.runner` (validation, logger, results, report), :mod:`~cnnlab.studies.store`
(reuse / resume / refuse runs), :mod:`~cnnlab.studies.findings` (noise-aware verdicts). See
docs/studies.md for how to add a study.
"""

from __future__ import annotations

import importlib

# study name -> module defining STUDY. Adding a study: its module plus one line here.
STUDIES: dict[str, str] = {
    "mobilenet": "cnnlab.studies.mobilenet",
    "dynamics": "cnnlab.studies.dynamics",
    "course-figure": "cnnlab.studies.course_figure",
    "transfer": "cnnlab.studies.transfer",
    "segmentation": "cnnlab.studies.segmentation",
    "sentiment": "cnnlab.studies.sentiment",
}


def get_study(name: str):
    """The :class:`~cnnlab.studies.base.Study` registered as ``name``."""
    from cnnlab.errors import UserError

    if name not in STUDIES:
        raise UserError(f"unknown study {name!r}; choose from {', '.join(STUDIES)}")
    return importlib.import_module(STUDIES[name]).STUDY
