"""Metrics of a detector, written out: the confusion matrix, precision / recall / F1 (per class,
micro, macro, weighted), ROC and precision-recall curves with their areas, the threshold of least
cost for a stated cost of a miss and of a false alarm, and calibration (reliability bins, ECE).

Binary scores (the probability of the positive class) are thresholded at ``threshold``;
``(N, K)`` class probabilities (a trained classifier's test predictions) are classified by
argmax, and the curves, threshold and calibration take one class against the rest.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cnnlab.errors import UserError
from cnnlab.numpy_ref.classification import (
    calibration,
    check_cost,
    check_labels,
    check_scores,
    cheapest_threshold,
    confusion_matrix,
    curves,
    precision_recall_f1,
)
from cnnlab.numpy_ref.labs._result import LabResult, num, table

# A defect detector on 20 parts: 1 = defect. Scores are P(defect); ties on purpose.
DEFECT_LABELS = [1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
DEFECT_SCORES = [0.95, 0.9, 0.85, 0.7, 0.6, 0.45, 0.35, 0.2,
                 0.8, 0.55, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1, 0.1, 0.05, 0.05, 0.02]
DEFECT_CLASSES = ("ok", "defect")


def threshold_sentence(chosen: float, cost: float, at_default: float, default: float,
                       cost_fn: float, cost_fp: float) -> str:
    costs = f"with a miss costing {num(cost_fn)} and a false alarm {num(cost_fp)}"
    if cost < at_default:
        where = "no score" if not np.isfinite(chosen) else num(chosen)
        return (f"{costs}, the cheapest threshold is {where} (total cost {num(cost)} vs "
                f"{num(at_default)} at {num(default)})")
    return f"{costs}, {num(default)} is already a cheapest threshold (total cost {num(cost)})"


def metrics_lab(
    labels: Sequence[int] | np.ndarray | None = None,
    scores: Sequence[float] | np.ndarray | None = None,
    classes: Sequence[str] | None = None,
    threshold: float = 0.5,
    cost_fn: float = 5.0,
    cost_fp: float = 1.0,
    positive: int | None = None,
    bins: int = 5,
    source: str = "",
) -> LabResult:
    """Every metric of one set of predictions.

    Args:
        labels: ``(N,)`` true classes (default ``DEFECT_LABELS``).
        scores: ``(N,)`` probabilities of class 1, or ``(N, K)`` class probabilities (default
            ``DEFECT_SCORES``).
        classes: the class names (default ``("ok", "defect")`` for binary scores, else 0..K-1).
        threshold: binary decision threshold, in [0, 1].
        cost_fn, cost_fp: cost of a missed positive and of a false alarm, >= 0.
        positive: the class taken against the rest for curves, threshold and calibration
            (default 1 for binary, else 0).
        bins: reliability bins.
        source: where the predictions came from, for the settings line.

    Raises:
        UserError: labels not class indices, scores not probabilities or of another length,
            negative costs, a threshold outside [0, 1], an unknown positive class.
    """
    default = labels is None and scores is None
    y_raw = DEFECT_LABELS if labels is None else labels
    s_raw = np.asarray(DEFECT_SCORES if scores is None else scores, dtype=np.float64)
    cost_fn, cost_fp = check_cost(cost_fn, "cost_fn"), check_cost(cost_fp, "cost_fp")
    if not 0 <= threshold <= 1:
        raise UserError(f"threshold must be in [0, 1], got {threshold}")
    if s_raw.ndim == 2:
        k = s_raw.shape[1]
        if k < 2:
            raise UserError(f"class probabilities need >= 2 columns, got {k}")
        y = check_labels(y_raw, k, "true labels")
        probs = np.stack([check_scores(s_raw[:, j], y.size, True) for j in range(k)], axis=1)
        pred = probs.argmax(axis=1)
        binary = False
    else:
        k = 2
        y = check_labels(y_raw, 2, "true labels")
        probs1 = check_scores(s_raw, y.size, True)
        probs = np.stack([1 - probs1, probs1], axis=1)
        pred = (probs1 >= threshold).astype(np.int64)
        binary = True
    names = tuple(classes) if classes is not None else (
        DEFECT_CLASSES if binary else tuple(str(j) for j in range(k)))
    if len(names) != k:
        raise UserError(f"{len(names)} class names for {k} classes")
    pos = (1 if binary else 0) if positive is None else positive
    if not 0 <= pos < k:
        raise UserError(f"positive class {pos} is not one of 0 ... {k - 1}")
    cm = confusion_matrix(y, pred, k)
    prf = precision_recall_f1(cm)
    yb = (y == pos).astype(np.int64)
    c = curves(yb, probs[:, pos])
    choice = cheapest_threshold(c, cost_fn, cost_fp)
    tp_d = int(((probs[:, pos] >= threshold) & (yb == 1)).sum())
    fp_d = int(((probs[:, pos] >= threshold) & (yb == 0)).sum())
    fn_d = int(yb.sum()) - tp_d
    cost_default = cost_fn * fn_d + cost_fp * fp_d
    cal = calibration(yb, probs[:, pos], bins)
    top = calibration((pred == y).astype(np.int64), probs.max(axis=1), bins) if not binary else None
    pname = names[pos]

    p_pos, r_pos, f_pos = prf.precision[pos], prf.recall[pos], prf.f1[pos]
    full = np.flatnonzero(cal.count)
    b0 = int(full[np.argmax(cal.count[full])])
    worked = [
        f"{pname}: precision = TP / (TP + FP) = {tp_d} / ({tp_d} + {fp_d}) = "
        f"{num(tp_d / (tp_d + fp_d)) if tp_d + fp_d else '0 (undefined)'};  recall = TP / "
        f"(TP + FN) = {tp_d} / ({tp_d} + {fn_d}) = {num(tp_d / (tp_d + fn_d)) if tp_d + fn_d else '0 (undefined)'}"
        + (f"  (at threshold {num(threshold)})" if not binary else ""),
        f"F1 = 2 TP / (2 TP + FP + FN) = {2 * tp_d} / ({2 * tp_d} + {fp_d} + {fn_d}) = "
        f"{num(2 * tp_d / (2 * tp_d + fp_d + fn_d)) if tp_d + fp_d + fn_d else '0'}",
        f"cost at threshold {num(threshold)} = {num(cost_fn)} * FN + {num(cost_fp)} * FP = "
        f"{num(cost_fn)} * {fn_d} + {num(cost_fp)} * {fp_d} = {num(cost_default)};  at "
        f"{num(choice.threshold)}: {num(cost_fn)} * {choice.fn} + {num(cost_fp)} * {choice.fp} = "
        f"{num(choice.cost)}",
        f"ECE term of bin ({num(cal.edges[b0])}, {num(cal.edges[b0 + 1])}]: {cal.count[b0]}/{y.size}"
        f" * |{num(cal.frequency[b0])} - {num(cal.confidence[b0])}| = "
        f"{num(cal.count[b0] / y.size * abs(cal.frequency[b0] - cal.confidence[b0]))}",
    ]
    if binary:
        decided = (f"at threshold {num(threshold)} the detector found {tp_d} of the {int(yb.sum())} "
                   f"{pname!r} samples (recall {num(r_pos)}) with {fp_d} false alarm(s) (precision "
                   f"{num(p_pos)}, F1 {num(f_pos)})")
    else:
        decided = (f"by argmax the classifier's accuracy is {num(np.trace(cm) / cm.sum())} "
                   f"(micro F1), macro F1 {num(prf.averages['macro']['f1'])}; class {pname!r}: "
                   f"precision {num(p_pos)}, recall {num(r_pos)}")
    auc = "undefined" if np.isnan(c.roc_auc) else num(c.roc_auc)
    conclusion = (
        f"{decided}; ROC AUC {auc}, average precision {num(c.average_precision)}; "
        f"{threshold_sentence(choice.threshold, choice.cost, cost_default, threshold, cost_fn, cost_fp)}"
        f" (for calibrated probabilities: {num(choice.bayes_threshold)}); ECE {num(cal.ece)}"
        + (f", top-label ECE {num(top.ece)}" if top is not None else "") + "."
    )
    shown = k <= 12
    sections = [
        ("confusion matrix (rows = true class, columns = predicted)",
         table(["true \\ pred", *names], [[n, *map(str, row)] for n, row in zip(names, cm, strict=True)])
         if shown else f"{k} classes: see the figure and --json"),
        ("precision, recall, F1",
         table(["class", "precision", "recall", "F1", "support"],
               [[n, prf.precision[j], prf.recall[j], prf.f1[j], str(prf.support[j])]
                for j, n in enumerate(names)]
               + [[avg, *(prf.averages[avg][m] for m in ("precision", "recall", "f1")),
                   str(int(prf.support.sum()))] for avg in ("micro", "macro", "weighted")])
         + "".join(f"\nwarning: {w}" for w in prf.warnings)),
        (f"ROC and precision-recall curves, {pname!r} against the rest",
         f"ROC AUC {auc}, average precision {num(c.average_precision)}, "
         f"{c.thresholds.size - 1} distinct scores" + "".join(f"\nwarning: {w}" for w in c.warnings)
         + ("\n" + table(["threshold", "TP", "FP", "TPR", "FPR", "precision", "cost"],
                         [[num(t) if np.isfinite(t) else "inf", str(tp), str(fp), tr, fr, pr, co]
                          for t, tp, fp, tr, fr, pr, co in zip(
                              c.thresholds, c.tp, c.fp, c.tpr, c.fpr, c.precision, choice.costs,
                              strict=True)])
            if c.thresholds.size <= 25 else "")),
        (f"calibration of P({pname}), {bins} bins",
         table(["bin", "count", "mean P", "fraction"],
               [[f"({num(lo)}, {num(hi)}]", str(n), cf, fr]
                for lo, hi, n, cf, fr in zip(cal.edges[:-1], cal.edges[1:], cal.count,
                                             cal.confidence, cal.frequency, strict=True)])
         + f"\nECE = sum_b count_b / N * |fraction_b - mean P_b| = {num(cal.ece)}"
         + (f"\ntop-label ECE (confidence of the predicted class vs correct) = {num(top.ece)}"
            if top is not None else "")),
    ]
    values = {
        "classes": list(names), "positive": pname, "threshold": threshold,
        "confusion": cm,
        "per_class": {"precision": prf.precision, "recall": prf.recall, "f1": prf.f1,
                      "support": prf.support},
        "averages": prf.averages, "warnings": [*prf.warnings, *c.warnings],
        "roc_auc": c.roc_auc, "average_precision": c.average_precision,
        "roc": {"fpr": c.fpr, "tpr": c.tpr, "thresholds": c.thresholds},
        "pr": {"recall": c.recall, "precision": c.precision},
        "cost": {"cost_fn": cost_fn, "cost_fp": cost_fp, "at_threshold": cost_default,
                 "best_threshold": choice.threshold, "best_cost": choice.cost,
                 "best_fn": choice.fn, "best_fp": choice.fp,
                 "bayes_threshold": choice.bayes_threshold},
        "calibration": {"edges": cal.edges, "count": cal.count, "confidence": cal.confidence,
                        "frequency": cal.frequency, "ece": cal.ece,
                        "top_label_ece": None if top is None else top.ece},
    }

    def draw(fig):
        ax = fig.subplots(2, 3).ravel()
        rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax[0].imshow(rates, cmap="Blues", vmin=0, vmax=1)
        if k <= 12:
            for i in range(k):
                for j in range(k):
                    ax[0].text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                               color="white" if rates[i, j] > 0.5 else "black")
        ax[0].set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true",
                  title="confusion matrix")
        if k <= 12:
            ax[0].set_xticklabels(names, rotation=45, ha="right", fontsize=7)
            ax[0].set_yticklabels(names, fontsize=7)
        ax[1].plot(c.fpr, c.tpr, "o-", ms=3)
        ax[1].plot([0, 1], [0, 1], ":", color="0.6")
        ax[1].set(xlabel="false positive rate", ylabel="true positive rate",
                  title=f"ROC, AUC {auc}")
        ax[2].step(c.recall, c.precision, where="post")
        ax[2].set(xlabel="recall", ylabel="precision", ylim=(0, 1.05),
                  title=f"precision-recall, AP {num(c.average_precision)}")
        finite = np.isfinite(c.thresholds)
        ax[3].plot(c.thresholds[finite], choice.costs[finite], "o-", ms=3)
        ax[3].axvline(threshold, color="0.6", ls=":", label=f"threshold {num(threshold)}")
        if np.isfinite(choice.threshold):
            ax[3].axvline(choice.threshold, color="C3", ls="--",
                          label=f"cheapest {num(choice.threshold)}")
        ax[3].set(xlabel="threshold", ylabel="total cost",
                  title=f"cost: miss {num(cost_fn)}, false alarm {num(cost_fp)}")
        ax[3].legend(fontsize=7)
        ok = cal.count > 0
        ax[4].plot([0, 1], [0, 1], ":", color="0.6")
        ax[4].plot(cal.confidence[ok], cal.frequency[ok], "o-")
        ax[4].set(xlabel=f"mean P({pname})", ylabel="fraction positive", xlim=(0, 1),
                  ylim=(0, 1), title=f"reliability, ECE {num(cal.ece)}")
        ax[5].hist([probs[yb == 0, pos], probs[yb == 1, pos]], bins=20, range=(0, 1),
                   label=["rest", pname])
        ax[5].set(xlabel=f"P({pname})", ylabel="count", title="scores by true class")
        ax[5].legend(fontsize=7)

    return LabResult(
        "metrics", "Classification metrics: P/R/F1, ROC and PR curves, threshold, calibration",
        (source or ("the course's defect detector, 20 parts" if default else "given scores"))
        + f"; {y.size} samples, {k} classes, positive {pname!r}, "
        + (f"threshold {num(threshold)}, " if binary else "argmax, ")
        + f"cost of a miss {num(cost_fn)}, of a false alarm {num(cost_fp)}, {bins} bins",
        sections, worked, conclusion, values, draw, figsize=(13.0, 8.0))
