"""Hyperband bookkeeping for the report: brackets, their rungs, and which bracket a trial is in.

Optuna's :class:`~optuna.pruners.HyperbandPruner` documents (and implements)::

    n_brackets = floor(log_eta(max_resource / min_resource)) + 1

bracket ``s`` (0-based) is a :class:`~optuna.pruners.SuccessiveHalvingPruner` with
``min_early_stopping_rate = s``, so its rungs end at ``min_resource * eta ** (s + k)`` steps
(``k = 0, 1, ...`` while below ``max_resource``), and it receives a share of the trials
proportional to ``ceil(n_brackets * eta ** (n_brackets - 1 - s) / (n_brackets - s))``.
Here a step is an epoch (trials report validation accuracy at epochs 1, 2, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Bracket:
    """One Hyperband bracket.

    Attributes:
        index: ``s``, 0-based (0 prunes earliest).
        rungs: the epochs at which a trial of this bracket may be stopped, ascending.
        share: the bracket's trial-allocation weight (Optuna's ``n`` of Algorithm 1).
    """

    index: int
    rungs: tuple[int, ...]
    share: int


def brackets(max_epochs: int, reduction_factor: int, min_epochs: int = 1) -> list[Bracket]:
    """The brackets Optuna's HyperbandPruner builds for this budget (see the module docstring)."""
    if max_epochs < min_epochs or min_epochs < 1 or reduction_factor < 2:
        raise ValueError(f"need 1 <= min_epochs <= max_epochs and reduction_factor >= 2, got "
                         f"{min_epochs}, {max_epochs}, {reduction_factor}")
    n = math.floor(math.log(max_epochs / min_epochs, reduction_factor)) + 1
    out = []
    for s in range(n):
        rungs = []
        k = 0
        while min_epochs * reduction_factor ** (s + k) < max_epochs:
            rungs.append(min_epochs * reduction_factor ** (s + k))
            k += 1
        rest = n - 1 - s
        out.append(Bracket(s, tuple(rungs), math.ceil(n * reduction_factor**rest / (rest + 1))))
    return out


def bracket_of(pruner: Any, study: Any, trial: Any) -> int | None:
    """The bracket ``pruner`` (a HyperbandPruner) put ``trial`` (a FrozenTrial) in.

    Optuna has no public accessor, so its own bracket choice (``_get_bracket_id``, Optuna 4-5)
    is read, and the report shows what the pruner really did; the test suite checks it against
    the pruner's behaviour (a losing trial stops at its bracket's first rung). None for other
    pruners, and where an Optuna version lacks those internals (the report then says
    "unknown" rather than guess).
    """
    import optuna

    if not isinstance(pruner, optuna.pruners.HyperbandPruner):
        return None
    try:
        if not pruner._pruners:  # as its prune() does: set up the brackets once
            pruner._try_initialization(study)
        return int(pruner._get_bracket_id(study, trial))
    except AttributeError:
        return None
