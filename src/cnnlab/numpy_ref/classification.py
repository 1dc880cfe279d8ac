"""Classification metrics, written out: confusion matrix, precision / recall / F1 (per class,
micro, macro, weighted), ROC and precision-recall curves with their areas, the decision threshold
of least cost, and calibration (reliability bins, ECE).

Conventions are scikit-learn's (tested against it): rows of the confusion matrix are the true
class; an undefined ratio (no predicted samples, no true samples) is set to 0 and named in
``warnings``, as ``zero_division="warn"`` does; ``roc_auc`` with one class only is NaN with a
warning; average precision is ``sum_k (R_k - R_(k-1)) P_k`` over the distinct thresholds.
A score ``>= threshold`` predicts the positive class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnlab.errors import UserError
from cnnlab.numpy_ref._args import as_float_array


def check_labels(y: Any, num_classes: int = 2, name: str = "labels") -> np.ndarray:
    """``y`` as a 1-D int64 array of class indices in ``[0, num_classes)``, else a ``UserError``
    naming the first bad value."""
    a = np.asarray(y)
    if a.ndim != 1 or a.size == 0:
        raise UserError(f"{name} must be a non-empty 1-D sequence, got shape {a.shape}")
    if a.dtype.kind == "f":
        bad = a[a != np.round(a)]
        if bad.size:
            raise UserError(f"{name}: {bad[0]} is not a class index (0 ... {num_classes - 1})")
        a = a.astype(np.int64)
    if a.dtype.kind not in "iub":
        raise UserError(f"{name} must be class indices (0 ... {num_classes - 1}), got {a.dtype}")
    a = a.astype(np.int64)
    out = (a < 0) | (a >= num_classes)
    if out.any():
        allowed = "0 or 1" if num_classes == 2 else f"0 ... {num_classes - 1}"
        raise UserError(f"{name}: {a[out][0]} is not a class; labels must be {allowed}")
    return a


def check_scores(score: Any, n: int, probabilities: bool, name: str = "scores") -> np.ndarray:
    """``score`` as 1-D float64 of length ``n``, finite, and in [0, 1] when ``probabilities``."""
    s = as_float_array(score, name, "metrics", ndim=1, layout="(N,)")
    if s.shape != (n,):
        raise UserError(f"{name}: {s.size} values for {n} labels; they must match one to one")
    if not np.isfinite(s).all():
        raise UserError(f"{name} contains NaN or infinite values")
    if probabilities and ((s < 0) | (s > 1)).any():
        bad = s[(s < 0) | (s > 1)][0]
        raise UserError(f"{name}: {bad} is outside [0, 1]; probabilities are required here")
    return s


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """``(K, K)`` int64 counts, rows = true class, columns = predicted class."""
    t = check_labels(y_true, num_classes, "true labels")
    p = check_labels(y_pred, num_classes, "predicted labels")
    if t.shape != p.shape:
        raise UserError(f"{t.size} true labels but {p.size} predictions; they must match")
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


@dataclass(frozen=True)
class PRF:
    """Precision, recall, F1 per class and averaged.

    Attributes:
        precision, recall, f1: ``(K,)``; ``support``: ``(K,)`` true samples per class.
        averages: ``{"micro" | "macro" | "weighted": {"precision", "recall", "f1"}}``.
        warnings: scikit-learn's ``UndefinedMetricWarning`` cases, one sentence each.
    """

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    averages: dict[str, dict[str, float]]
    warnings: tuple[str, ...]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def precision_recall_f1(confusion: Any) -> PRF:
    """Per-class and averaged precision, recall and F1 from a confusion matrix.

    ``precision_k = TP / (TP + FP)``, ``recall_k = TP / (TP + FN)``,
    ``F1_k = 2 TP / (2 TP + FP + FN)``; micro sums TP, FP, FN over classes first, macro is the
    plain mean of the per-class values, weighted the mean weighted by support.

    Args:
        confusion: ``(K, K)`` counts, rows = true class.
    """
    cm = as_float_array(confusion, "confusion", "precision_recall_f1", ndim=2, layout="(K, K)")
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    support = cm.sum(axis=1)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    warnings = []
    if ((tp + fp) == 0).any():
        warnings.append(
            "precision is ill-defined and set to 0 for classes with no predicted samples: "
            + ", ".join(str(k) for k in np.flatnonzero(tp + fp == 0))
        )
    if ((tp + fn) == 0).any():
        warnings.append(
            "recall is ill-defined and set to 0 for classes with no true samples: "
            + ", ".join(str(k) for k in np.flatnonzero(tp + fn == 0))
        )
    if ((2 * tp + fp + fn) == 0).any():
        warnings.append(
            "F1 is ill-defined and set to 0 for classes with no true nor predicted samples: "
            + ", ".join(str(k) for k in np.flatnonzero(2 * tp + fp + fn == 0))
        )
    s_tp, s_fp, s_fn = tp.sum(), fp.sum(), fn.sum()
    weights = support / support.sum() if support.sum() > 0 else np.zeros_like(support)
    averages = {
        "micro": {
            "precision": float(_ratio(np.array([s_tp]), np.array([s_tp + s_fp]))[0]),
            "recall": float(_ratio(np.array([s_tp]), np.array([s_tp + s_fn]))[0]),
            "f1": float(_ratio(np.array([2 * s_tp]), np.array([2 * s_tp + s_fp + s_fn]))[0]),
        },
        "macro": {"precision": float(precision.mean()), "recall": float(recall.mean()),
                  "f1": float(f1.mean())},
        "weighted": {"precision": float(weights @ precision), "recall": float(weights @ recall),
                     "f1": float(weights @ f1)},
    }
    return PRF(precision, recall, f1, support.astype(np.int64), averages, tuple(warnings))


@dataclass(frozen=True)
class Curves:
    """ROC and precision-recall curves of one binary score, at every distinct threshold.

    Attributes:
        thresholds: ``(T + 1,)`` decreasing: ``inf`` (nothing positive), then the distinct
            scores; the positive prediction is ``score >= threshold``.
        tp, fp: ``(T + 1,)`` counts at each threshold.
        tpr, fpr: ``(T + 1,)`` ROC coordinates (NaN when the class they divide by is absent).
        precision: ``(T + 1,)`` (1 at ``inf``, where nothing is predicted positive).
        roc_auc: trapezoidal area under the ROC curve (NaN with one class only).
        average_precision: ``sum_k (R_k - R_(k-1)) P_k`` (0 without positives).
        warnings: the undefined cases, one sentence each.
    """

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    tpr: np.ndarray
    fpr: np.ndarray
    precision: np.ndarray
    roc_auc: float
    average_precision: float
    warnings: tuple[str, ...]

    @property
    def recall(self) -> np.ndarray:
        return self.tpr


def curves(y_true: Any, score: Any) -> Curves:
    """ROC and PR curves, ROC AUC and average precision of a binary score (ties share a point).

    Args:
        y_true: ``(N,)`` 0/1.
        score: ``(N,)`` any real numbers, higher meaning "more likely positive".
    """
    y = check_labels(y_true, 2, "true labels")
    s = check_scores(score, y.size, probabilities=False)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), y.size - 1]  # last index of each tie group
    tp = np.r_[0, np.cumsum(y_sorted)[last]]
    fp = np.r_[0, (last + 1) - tp[1:]]
    thresholds = np.r_[np.inf, s_sorted[last]]
    pos, neg = int(y.sum()), int(y.size - y.sum())
    warnings = []
    with np.errstate(divide="ignore", invalid="ignore"):
        tpr = tp / pos if pos else np.full(tp.shape, np.nan)
        fpr = fp / neg if neg else np.full(fp.shape, np.nan)
    if not pos:
        warnings.append("no positive samples in the true labels: the true positive rate and "
                        "recall are undefined; average precision is 0")
    if not neg:
        warnings.append("no negative samples in the true labels: the false positive rate is "
                        "undefined")
    if pos and neg:
        roc_auc = float(np.trapezoid(tpr, fpr))
    else:
        roc_auc = float("nan")
        warnings.append("only one class is present in the true labels: ROC AUC is undefined")
    precision = np.r_[1.0, tp[1:] / (tp[1:] + fp[1:])]
    ap = float(np.sum(np.diff(tpr) * precision[1:])) if pos else 0.0
    return Curves(thresholds, tp, fp, tpr, fpr, precision, roc_auc, ap, tuple(warnings))


@dataclass(frozen=True)
class CostChoice:
    """The threshold of least total cost ``cost_fn * FN + cost_fp * FP``.

    Attributes:
        threshold: the chosen threshold (predict positive when ``score >= threshold``).
        fn, fp: the misses and false alarms it leaves.
        cost: their total cost.
        costs: ``(T + 1,)`` total cost at each of the curves' thresholds.
        bayes_threshold: ``cost_fp / (cost_fp + cost_fn)``, the best threshold if the scores
            are calibrated probabilities.
    """

    threshold: float
    fn: int
    fp: int
    cost: float
    costs: np.ndarray
    bayes_threshold: float


def check_cost(value: float, name: str) -> float:
    """A cost >= 0 (and finite), else a ``UserError`` naming it."""
    v = float(value)
    if not np.isfinite(v) or v < 0:
        raise UserError(f"{name} must be a finite number >= 0, got {value}")
    return v


def cheapest_threshold(c: Curves, cost_fn: float, cost_fp: float) -> CostChoice:
    """Scan every threshold of ``c`` for the least total cost (ties: the highest threshold)."""
    cost_fn, cost_fp = check_cost(cost_fn, "cost_fn"), check_cost(cost_fp, "cost_fp")
    if cost_fn + cost_fp == 0:
        raise UserError("cost_fn and cost_fp are both 0: every threshold costs nothing")
    fn = c.tp[-1] - c.tp  # positives not yet predicted positive
    costs = cost_fn * fn + cost_fp * c.fp
    k = int(np.argmin(costs))
    return CostChoice(float(c.thresholds[k]), int(fn[k]), int(c.fp[k]), float(costs[k]), costs,
                      cost_fp / (cost_fp + cost_fn))


@dataclass(frozen=True)
class Calibration:
    """Reliability bins of probabilities against outcomes.

    Attributes:
        edges: ``(B + 1,)`` bin edges ``0, 1/B, ..., 1``; bin ``b`` holds ``(edge_b, edge_(b+1)]``
            (the first also 0), as scikit-learn's ``calibration_curve``.
        count: ``(B,)`` samples per bin.
        confidence: ``(B,)`` mean predicted probability per bin (NaN when empty).
        frequency: ``(B,)`` fraction of outcomes that were 1 per bin (NaN when empty).
        ece: expected calibration error ``sum_b count_b / N * |frequency_b - confidence_b|``.
    """

    edges: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    frequency: np.ndarray
    ece: float


def calibration(outcome: Any, prob: Any, bins: int = 10) -> Calibration:
    """Reliability diagram data and ECE.

    Args:
        outcome: ``(N,)`` 0/1 (for a binary detector: the true label; for top-label calibration:
            whether the predicted class was right).
        prob: ``(N,)`` predicted probabilities of outcome 1, in [0, 1].
        bins: number of equal-width bins, >= 1.
    """
    y = check_labels(outcome, 2, "outcomes")
    p = check_scores(prob, y.size, probabilities=True, name="probabilities")
    if isinstance(bins, bool) or int(bins) != bins or bins < 1:
        raise UserError(f"calibration: bins must be a whole number >= 1, got {bins}")
    edges = np.linspace(0.0, 1.0, int(bins) + 1)
    which = np.searchsorted(edges[1:-1], p)  # (edge_b, edge_b+1], the first bin also holds 0
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(which, weights=p, minlength=bins) / count
        frequency = np.bincount(which, weights=y, minlength=bins) / count
    full = count > 0
    ece = float(np.sum(count[full] / y.size * np.abs(frequency[full] - confidence[full])))
    return Calibration(edges, count, confidence, frequency, ece)
