"""Findings as data, judged against the noise measured in the same study.

A :class:`Finding` is a claim with the numbers behind it, the spread it was judged against and a
verdict. Comparisons go through :func:`compare` (two means of a metric, against the seed-to-seed
spread) or :func:`compare_ratio` (two timings, against their spread over repeats): a difference
inside the noise is :data:`NOT_DISTINGUISHABLE`, never a winner.

The rule: two means ``a`` (over ``n_a`` runs) and ``b`` (over ``n_b``) differ when
``|a - b| > k * s * sqrt(1/n_a + 1/n_b)`` with ``s`` the one-run standard deviation measured in the
study and ``k = 2`` (about a 95% two-sided test for normal noise). Timings: the log of a ratio
differs from 0 when ``|ln r| > k * sqrt(r_a^2 + r_b^2)``, with ``r = IQR / (2 median)`` of each
measurement (the relative half-IQR, a robust one-sigma-like spread over repeats).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

NOT_DISTINGUISHABLE = "not distinguishable at this budget"
K = 2.0  # how many spreads a difference must exceed (see the module docstring)


@dataclass(frozen=True)
class Finding:
    """One statement of a report.

    Attributes:
        claim: the sentence, with its numbers.
        verdict: e.g. ``"as expected"``, ``"contrary to the expectation"``, ``"higher"``,
            :data:`NOT_DISTINGUISHABLE`, or ``"measured"`` for a plain measurement.
        numbers: the values the claim states, by name.
        noise: the spread it was judged against, in words (None: no comparison made).
        section: the part of the study it belongs to.
        headline: also listed at the top of the report.
    """

    claim: str
    verdict: str = "measured"
    numbers: Mapping[str, Any] = field(default_factory=dict)
    noise: str | None = None
    section: str = ""
    headline: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Spread:
    """The one-run standard deviation of a metric, measured in the study, and how.

    ``value`` None means no spread could be measured (a single run): nothing is then
    distinguishable.
    """

    value: float | None
    what: str  # e.g. "std of test accuracy over 3 seeds of 4 reference configurations"

    def threshold(self, n_a: int = 1, n_b: int = 1) -> float:
        """The smallest difference of two means (over n_a, n_b runs) called a difference."""
        if self.value is None:
            return math.inf
        return K * self.value * math.sqrt(1 / n_a + 1 / n_b)

    def words(self, scale: float = 1.0, unit: str = "") -> str:
        if self.value is None:
            return f"no spread measured ({self.what})"
        return f"s = {self.value * scale:.2g}{unit}, {self.what}"


def pooled_std(groups: Iterable[Sequence[float]]) -> float | None:
    """Pooled standard deviation over groups of repeated runs (groups of one are skipped)."""
    num = den = 0.0
    for g in groups:
        if len(g) > 1:
            num += statistics.variance(g) * (len(g) - 1)
            den += len(g) - 1
    return math.sqrt(num / den) if den else None


def compare(a: float, b: float, spread: Spread, n_a: int = 1, n_b: int = 1) -> str:
    """``"higher"`` (a above b), ``"lower"`` or :data:`NOT_DISTINGUISHABLE`."""
    if abs(a - b) <= spread.threshold(n_a, n_b):
        return NOT_DISTINGUISHABLE
    return "higher" if a > b else "lower"


def relative_spread(median: float | None, iqr: float | None) -> float | None:
    """A timing's relative half-IQR over its repeats (None when unknown)."""
    if not median or iqr is None:
        return None
    return iqr / (2 * median)


def compare_ratio(ratio: float, rel_a: float | None, rel_b: float | None) -> str:
    """Is the timing ratio a/b above 1 (``"higher"``), below (``"lower"``) or inside the noise?"""
    if rel_a is None or rel_b is None:
        return NOT_DISTINGUISHABLE
    if abs(math.log(ratio)) <= K * math.hypot(rel_a, rel_b):
        return NOT_DISTINGUISHABLE
    return "higher" if ratio > 1 else "lower"
