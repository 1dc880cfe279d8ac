"""What the dynamics study's findings, plots and tables read from its results payload: number
formatting, accessors (runs of a section, errors, gradient logs) and per-run summaries."""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np

from cnnlab.report import fmt_num


def _f(x: float | None) -> str:
    return fmt_num(x, 3)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ratio_words(r: float) -> str:
    """``x0.70`` style factor, with 'exactly 0' / 'undefined' for degenerate values."""
    if r is None or (isinstance(r, float) and math.isnan(r)):
        return "undefined"
    return f"x{_f(r)}"


def _div(a: float, b: float) -> float:
    return a / b if b else math.nan


# ------------------------------------------------------------------------------ accessors
def _init_cfg(payload: dict, norm: str, init: str) -> dict:
    return next(c for c in payload["init"]["configs"] if c["norm"] == norm and c["init"] == init)


def _runs(payload: dict, section: str) -> list[dict]:
    return [r for r in payload["runs"] if r["spec"]["section"] == section]


def _final_train_error(run: dict) -> float:
    return 1.0 - run["metrics"]["history"][-1]["train_accuracy"]


def _test_error(run: dict) -> float:
    return 1.0 - run["metrics"]["test_accuracy"]


def _label(spec: dict) -> str:
    family = "ResNet" if spec["model"] == "resnet_cifar" else "plain"
    return f"{family}-{spec['depth']}"


def _rms(run: dict) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(steps (S,), rms (S, L), layer names)``: RMS gradient per weight, every layer."""
    g = run["grad_norms"]
    norms = np.asarray(g["norms"], dtype=np.float64)  # (S, L)
    return np.asarray(g["steps"]), norms / np.sqrt(np.asarray(g["numel"], dtype=np.float64)), \
        g["layers"]


def _conv_columns(run: dict) -> list[int]:
    """Indices of the conv layers (not the classifier) in the gradient logs."""
    return [i for i, name in enumerate(run["grad_norms"]["layers"]) if not name.startswith(
        "classifier")]


def flow_summary(run: dict) -> dict[str, float]:
    """First-conv / last-conv RMS gradient ratio at the first step and its median over training."""
    _, rms, _ = _rms(run)
    convs = _conv_columns(run)
    first, last = rms[:, convs[0]], rms[:, convs[-1]]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(last > 0, first / last, np.nan)
    finite = ratio[np.isfinite(ratio)]
    return {"first_rms_step0": float(first[0]), "last_rms_step0": float(last[0]),
            "ratio_step0": float(ratio[0]),
            "ratio_median": float(np.median(finite)) if len(finite) else math.nan,
            "max_conv_grad_norm": float(np.max(np.asarray(run["grad_norms"]["norms"])[:, convs]))}


def symmetry_summary(run: dict) -> dict[str, Any]:
    """Filter distances at init and at the end, filter norms, gradient and accuracy."""
    rec = run["filters"]["records"]
    start, end = rec[0]["layers"], rec[-1]["layers"]
    return {
        "rel_start_min": min(d["relative"] for d in start),
        "rel_start_max": max(d["relative"] for d in start),
        "rel_end_min": min(d["relative"] for d in end),
        "rel_end_max": max(d["relative"] for d in end),
        "norm_start": statistics.fmean(d["mean_norm"] for d in start),
        "norm_end": statistics.fmean(d["mean_norm"] for d in end),
        "change_max": max(d["change"] for d in end),
        "change_min": min(d["change"] for d in end),
        "max_conv_grad_norm": flow_summary(run)["max_conv_grad_norm"],
        "test_accuracy": run["metrics"]["test_accuracy"],
        "final_train_error": _final_train_error(run),
    }


def degradation_table(payload: dict) -> list[dict[str, Any]]:
    """One row per (family, depth): final training/test error, mean and spread over seeds."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in _runs(payload, "degradation"):
        groups.setdefault((r["spec"]["model"], r["spec"]["depth"]), []).append(r)
    rows = []
    for (model, depth), runs in sorted(groups.items()):
        tr = [_final_train_error(r) for r in runs]
        te = [_test_error(r) for r in runs]
        rows.append({"model": model, "family": "ResNet" if model == "resnet_cifar" else "plain",
                     "depth": depth, "seeds": len(runs), "train_error": statistics.fmean(tr),
                     "train_error_spread": max(tr) - min(tr), "test_error": statistics.fmean(te),
                     "test_error_spread": max(te) - min(te),
                     "params": runs[0]["metrics"].get("parameters")})
    return rows


def _flow_pairs(payload: dict) -> list[tuple[dict, dict, str]]:
    flow = {r["spec"]["act"]: r for r in _runs(payload, "flow")}
    pairs = []
    if "relu" in flow and "sigmoid" in flow:
        pairs.append((flow["sigmoid"], flow["relu"], "Sigmoid vs ReLU, no batch norm"))
    deepest = max(payload["budget"]["depths"])
    deg = {r["spec"]["model"]: r for r in _runs(payload, "degradation")
           if r["spec"]["depth"] == deepest and r["spec"]["seed"] == 0}
    if len(deg) == 2:
        pairs.append((deg["plain_cnn"], deg["resnet_cifar"],
                      f"Plain vs residual, {deepest} layers, batch norm"))
    return pairs
