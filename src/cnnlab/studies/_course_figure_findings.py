"""The course-figure study's summary table and findings, with their confidence intervals.

Pointing-game rates get 95% Wilson score intervals (:meth:`scipy.stats.binomtest`'s
``proportion_ci``); mean energy shares, mean Spearman rho and the paired difference of two
methods' rho get 95% percentile bootstrap intervals over canvases (:func:`scipy.stats.bootstrap`,
seeded). A rate or share is judged against chance (0.5: the asked half is half the canvas) and a
difference against 0, by whether the interval excludes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import binomtest, bootstrap

from cnnlab.studies._course_figure_measure import METHODS
from cnnlab.studies.findings import NOT_DISTINGUISHABLE, Finding

LEVEL = 0.95
SIDES = ("left", "right")


def wilson(hits: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a rate ``hits / n`` (NaN, NaN for n = 0)."""
    if n == 0:
        return float("nan"), float("nan")
    ci = binomtest(hits, n).proportion_ci(LEVEL, method="wilson")
    return float(ci.low), float(ci.high)


def mean_ci(values: Sequence[float], seed: int) -> tuple[float, float, float]:
    """Mean and 95% percentile bootstrap interval (NaN where fewer than 2 values)."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if len(v) < 2:
        return (float(v.mean()) if len(v) else float("nan")), float("nan"), float("nan")
    if np.all(v == v[0]):
        return float(v[0]), float(v[0]), float(v[0])
    ci = bootstrap((v,), np.mean, confidence_level=LEVEL, n_resamples=2000, method="percentile",
                   rng=np.random.default_rng(seed)).confidence_interval
    return float(v.mean()), float(ci.low), float(ci.high)


def _against(low: float, high: float, ref: float) -> str:
    """``"above"``, ``"below"`` (the interval excludes ``ref``) or not distinguishable."""
    if low > ref:
        return "above"
    if high < ref:
        return "below"
    return NOT_DISTINGUISHABLE


def _words(side: str) -> str:
    return {"above": "above chance", "below": "below chance"}.get(
        side, "not distinguishable from chance")


def summary(rows: Sequence[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """One line per (method, asked side): pointing rate with Wilson CI, mean energy share with
    bootstrap CI, and the method's mean rho between its two maps (the same on both sides)."""
    table = []
    for method, name in METHODS.items():
        rho = mean_ci([r[f"{method}:rho"] for r in rows], seed)
        for side in SIDES:
            hits = [r[f"{method}:hit_{side}"] for r in rows]
            k, n = int(sum(hits)), len(hits)
            lo, hi = wilson(k, n)
            energies = [r[f"{method}:energy_{side}"] for r in rows]
            e, elo, ehi = mean_ci(energies, seed)
            table.append({
                "method": name, "key": method, "asked": side, "n": n, "pointing": k / n if n else
                float("nan"), "pointing_low": lo, "pointing_high": hi, "energy": e,
                "energy_low": elo, "energy_high": ehi,
                "energy_undefined": sum(x is None for x in energies),
                "rho": rho[0], "rho_low": rho[1], "rho_high": rho[2]})
    return table


def _fmt(v: float, pct: bool = True) -> str:
    return f"{100 * v:.0f}%" if pct else f"{v:.2f}"


def findings(table: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]], seed: int,
             scope: str) -> list[Finding]:
    """Per method: pointing game and energy against chance (both sides); the rho comparison of
    Guided Backprop with Grad-CAM (the paper's expectation: Guided Backprop barely changes with
    the class, Grad-CAM moves to it)."""
    out = []
    for method, name in METHODS.items():
        lines = [t for t in table if t["key"] == method]
        parts, verdicts = [], set()
        for t in lines:
            v = _against(t["pointing_low"], t["pointing_high"], 0.5)
            ve = _against(t["energy_low"], t["energy_high"], 0.5)
            verdicts |= {v, ve}
            parts.append(
                f"asked for the {t['asked']} class: pointing game {_fmt(t['pointing'])} "
                f"(95% CI {_fmt(t['pointing_low'])}-{_fmt(t['pointing_high'])}, {_words(v)}), "
                f"energy inside its half {_fmt(t['energy'])} "
                f"(CI {_fmt(t['energy_low'])}-{_fmt(t['energy_high'])}, {_words(ve)})")
        verdict = "above chance" if verdicts == {"above"} else (
            "below chance" if verdicts == {"below"} else "mixed, or not distinguishable from chance")
        out.append(Finding(
            f"{name} ({scope}, {lines[0]['n']} canvases): " + "; ".join(parts) + ".",
            verdict=verdict, section="localisation", headline=True,
            numbers={f"{t['asked']}_{k}": t[k] for t in lines
                     for k in ("pointing", "pointing_low", "pointing_high", "energy",
                               "energy_low", "energy_high")},
            noise="95% Wilson (pointing) and bootstrap (energy) intervals over canvases; "
                  "chance = 0.5"))
    rho = {t["key"]: t for t in table if t["asked"] == "left"}
    pairs = [(r["guided:rho"], r["gradcam:rho"]) for r in rows
             if r["guided:rho"] is not None and r["gradcam:rho"] is not None]
    d, lo, hi = mean_ci([a - b for a, b in pairs], seed)
    side = _against(lo, hi, 0.0)
    verdict = {"above": "as expected", "below": "contrary to the expectation"}.get(side, side)
    out.append(Finding(
        f"Rank correlation between a method's two maps of the same canvas ({scope}): "
        + ", ".join(f"{METHODS[k]} rho = {_fmt(t['rho'], False)} "
                    f"(CI {_fmt(t['rho_low'], False)} to {_fmt(t['rho_high'], False)})"
                    for k, t in rho.items())
        + f". Guided Backprop minus Grad-CAM, paired: {d:+.2f} (CI {lo:+.2f} to {hi:+.2f}, "
        f"{len(pairs)} canvases with both defined) -- {verdict} (the Grad-CAM paper: Guided "
        "Backprop nearly the same map for both classes, Grad-CAM class-discriminative).",
        verdict=verdict, section="rank correlation", headline=True,
        numbers={**{f"{k}_rho": t["rho"] for k, t in rho.items()}, "guided_minus_gradcam": d,
                 "low": lo, "high": hi, "n": len(pairs)},
        noise="95% percentile bootstrap interval of the paired mean difference over canvases"))
    return out
