"""Classification metrics against scikit-learn on random and degenerate inputs (one class only,
ties in scores, all-zero predictions): the values (1e-12) and the warnings, stated both ways."""

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from cnnlab.errors import UserError
from cnnlab.numpy_ref.classification import (
    calibration,
    cheapest_threshold,
    confusion_matrix,
    curves,
    precision_recall_f1,
)


def sk_prf(y, p, k, average):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = skm.precision_recall_fscore_support(y, p, labels=list(range(k)), average=average)
    return out, {str(w.message).split(" is ill-defined")[0] for w in caught}


def ours_warned(prf):
    return {w.split(" is ill-defined")[0].capitalize().replace("F1", "F-score") for w in prf.warnings}


CASES = {
    "random-3": (np.random.default_rng(1).integers(0, 3, 200), np.random.default_rng(2).integers(0, 3, 200), 3),
    "all-zero-predictions": (np.array([0, 1, 1, 0, 1]), np.zeros(5, int), 2),
    "one-class-only": (np.ones(6, int), np.array([1, 1, 0, 1, 0, 1]), 2),
    "absent-class": (np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 3),
}


@pytest.mark.parametrize("name", list(CASES))
def test_precision_recall_f1_and_confusion_match_sklearn(name):
    y, p, k = CASES[name]
    cm = confusion_matrix(y, p, k)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y, p, labels=list(range(k))))
    prf = precision_recall_f1(cm)
    (sp, sr, sf, ss), warned = sk_prf(y, p, k, None)
    for a, b in ((prf.precision, sp), (prf.recall, sr), (prf.f1, sf), (prf.support, ss)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    assert ours_warned(prf) == warned  # same undefined cases named
    for avg in ("micro", "macro", "weighted"):
        (sp, sr, sf, _), _ = sk_prf(y, p, k, avg)
        got = prf.averages[avg]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((sp, sr, sf), abs=1e-12)


def test_all_zero_predictions_state_the_warning():
    prf = precision_recall_f1(confusion_matrix([0, 1, 1, 0, 1], [0] * 5, 2))
    assert prf.warnings == (
        "precision is ill-defined and set to 0 for classes with no predicted samples: 1",)
    assert prf.precision[1] == 0 and prf.recall[1] == 0
    assert precision_recall_f1(confusion_matrix([0, 1], [0, 1], 2)).warnings == ()


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True)])
def test_curves_match_sklearn_random_and_tied_scores(seed, ties):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    s = rng.random(300) + 0.3 * y
    if ties:
        s = np.round(s * 8) / 8  # heavy ties
    c = curves(y, s)
    assert c.warnings == ()
    assert c.roc_auc == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert c.average_precision == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    fpr, tpr, thr = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(c.fpr, fpr, atol=1e-12)
    np.testing.assert_allclose(c.tpr, tpr, atol=1e-12)
    np.testing.assert_array_equal(c.thresholds[1:], thr[1:])
    prec, rec, _ = skm.precision_recall_curve(y, s)
    np.testing.assert_allclose(c.precision[1:], prec[:-1][::-1][: len(c.precision) - 1], atol=1e-12)


def test_one_class_only_is_nan_auc_with_the_warnings_sklearn_gives():
    s = [0.1, 0.4, 0.35, 0.8]
    for y, sk_message in (([1, 1, 1, 1], None), ([0, 0, 0, 0], "No positive class found")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sk_auc = skm.roc_auc_score(y, s)
            sk_ap = skm.average_precision_score(y, s)
        assert any("Only one class is present" in str(w.message) for w in caught)
        c = curves(y, s)
        assert np.isnan(c.roc_auc) and np.isnan(sk_auc)
        assert "only one class is present in the true labels: ROC AUC is undefined" in c.warnings
        assert c.average_precision == pytest.approx(sk_ap, abs=1e-12)
        if sk_message:
            assert any(sk_message in str(w.message) for w in caught)
            assert any("no positive samples" in w for w in c.warnings)


def test_cheapest_threshold_by_brute_force():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 80)
    s = np.round(rng.random(80) * 0.7 + 0.3 * y, 2)
    c = curves(y, s)
    for cfn, cfp in ((10, 1), (1, 1), (1, 20)):
        choice = cheapest_threshold(c, cfn, cfp)
        brute = {t: cfn * int(((s < t) & (y == 1)).sum()) + cfp * int(((s >= t) & (y == 0)).sum())
                 for t in [np.inf, *np.unique(s)]}
        assert choice.cost == min(brute.values())
        assert brute[choice.threshold] == choice.cost
        assert choice.bayes_threshold == pytest.approx(cfp / (cfp + cfn))
    # a missed defect costing more moves the threshold down
    assert cheapest_threshold(c, 10, 1).threshold <= cheapest_threshold(c, 1, 10).threshold


def test_calibration_matches_sklearn_calibration_curve_and_ece_by_hand():
    rng = np.random.default_rng(7)
    p = rng.random(500)
    p[:5] = [0.0, 0.1, 0.2, 1.0, 0.5]  # bin edges
    y = (rng.random(500) < p**2).astype(int)
    cal = calibration(y, p, bins=10)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    full = cal.count > 0
    np.testing.assert_allclose(cal.frequency[full], prob_true, atol=1e-12)
    np.testing.assert_allclose(cal.confidence[full], prob_pred, atol=1e-12)
    by_hand = 0.0
    for lo, hi in zip(cal.edges[:-1], cal.edges[1:], strict=True):
        inside = ((p > lo) | ((lo == 0) & (p == 0))) & (p <= hi)  # (lo, hi], and 0 in the first
        if inside.any():
            by_hand += inside.sum() / 500 * abs(y[inside].mean() - p[inside].mean())
    assert cal.ece == pytest.approx(by_hand, abs=1e-12)
    assert calibration([1, 0], [1.0, 0.0], bins=4).ece == 0.0


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: curves([0, 2, 1], [0.1, 0.2, 0.3]), "true labels: 2 is not a class; labels must be 0 or 1"),
        (lambda: curves([0, 1], [0.1, 0.2, 0.3]), "3 values for 2 labels"),
        (lambda: calibration([0, 1], [0.5, 1.2]), r"1.2 is outside \[0, 1\]"),
        (lambda: cheapest_threshold(curves([0, 1], [0.1, 0.9]), -1, 1), "cost_fn must be a finite number >= 0, got -1"),
        (lambda: confusion_matrix([0, 1.5], [0, 1], 2), "1.5 is not a class index"),
    ],
)
def test_bad_input_names_the_problem(call, message):
    with pytest.raises(UserError, match=message):
        call()
