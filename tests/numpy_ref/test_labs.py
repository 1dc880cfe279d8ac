"""The lab walkthroughs: every printed number recomputed independently (plain NumPy, PyTorch,
scikit-learn, SciPy), both wordings of each conclusion that can go either way, and the bad
inputs as one line with exit status 2."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from sklearn.linear_model import Lasso, Ridge

from cnnlab.cli import main
from cnnlab.numpy_ref.labs import adam as adam_mod
from cnnlab.numpy_ref.labs import batch_size as bs_mod
from cnnlab.numpy_ref.labs import linear_collapse as lc_mod
from cnnlab.numpy_ref.labs import metrics as metrics_mod
from cnnlab.numpy_ref.labs import normalization as norm_mod
from cnnlab.numpy_ref.labs import regularization as reg_mod


def lab(capsys, *argv):
    code = main(["walkthrough", *argv, "--json", "--no-figure"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_adam_numbers(capsys):
    got = lab(capsys, "adam", "--steps", "20", "--runs", "500")
    # S_t by the written recursion, on the same draws
    g = np.random.default_rng(0).normal(0.5, 1.0, (20, 500))
    s, means = np.zeros(500), []
    for gt in g:
        s = 0.999 * s + 0.001 * gt**2
        means.append(s.mean())
    np.testing.assert_allclose(got["mean_S"], means, rtol=1e-12)
    np.testing.assert_allclose(got["expected_S"], 1.25 * (1 - 0.999 ** np.arange(1, 21)), rtol=1e-12)
    assert got["first_step"]["factor"] == pytest.approx(0.1 / np.sqrt(0.001), rel=1e-6)
    t = np.array(got["factor_t"])
    np.testing.assert_allclose(got["factor"], (1 - 0.9**t) / np.sqrt(1 - 0.999**t), rtol=1e-12)
    assert got["direction"]["0.5"]["std"] > got["direction"]["0.9"]["std"]
    assert "uncorrected first step is 3.16x the corrected one (larger, not smaller)" in got["conclusion"]
    assert "widened the spread" in got["conclusion"]


def test_adam_wordings_both_ways():
    assert "(smaller, not larger)" in adam_mod.first_step_sentence(0.03, 0.99, 0.9)
    assert "(larger, not smaller)" in adam_mod.first_step_sentence(3.16, 0.9, 0.999)
    assert "narrowed" in adam_mod.spread_sentence(0.5, 0.9, 0.5, 0.2)
    assert "widened" in adam_mod.spread_sentence(0.9, 0.5, 0.2, 0.5)


def test_batch_size_numbers(capsys):
    got = lab(capsys, "batch-size", "--draws", "300", "--batch-sizes", "1,8,64,512")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 4))
    w = rng.uniform(-2, 2, 4)
    y = x @ w + 0.5 * rng.standard_normal(512)
    g = -y[:, None] * x  # per-sample gradient at w = 0
    sigma2 = ((g - g.mean(0)) ** 2).sum(1).mean()
    assert got["sigma2"] == pytest.approx(sigma2, rel=1e-12)
    b = np.array([1, 8, 64, 512])
    np.testing.assert_allclose(got["variance_formula"], sigma2 / b * (512 - b) / 511, rtol=1e-12, atol=1e-20)
    assert got["variance"][-1] < 1e-20  # the full batch has no variance
    assert [got["curves"][k]["updates_per_epoch"] for k in ("1", "32", "512")] == [512, 16, 1]
    assert "followed sigma^2/B" in got["conclusion"]


def test_batch_size_wordings_both_ways():
    r = np.array([0.9, 1.1])
    assert "followed" in bs_mod.variance_sentence(True, 1.0, [1, 2], r)
    assert "departed from" in bs_mod.variance_sentence(False, 9.0, [1, 2], r)
    assert bs_mod.noise_words(1.0, 0.0) == "fell from 1 to 0"
    assert bs_mod.noise_words(0.1, 0.2).startswith("rose")


def test_regularization_numbers(capsys):
    from scipy.optimize import linprog

    got = lab(capsys, "regularization")
    x, y = np.array(reg_mod.LINE_X), np.array(reg_mod.LINE_Y)
    slope, intercept = np.polyfit(x, y, 1)
    assert got["line"]["l2"]["slope"] == pytest.approx(slope, rel=1e-10)
    assert got["line"]["l2"]["intercept"] == pytest.approx(intercept, rel=1e-10)
    # least absolute deviations as a linear programme: min sum(u) with -u <= y - a x - b <= u
    n = x.size
    a_ub = np.block([[-x[:, None], -np.ones((n, 1)), -np.eye(n)], [x[:, None], np.ones((n, 1)), -np.eye(n)]])
    lp = linprog(np.r_[0, 0, np.ones(n)], A_ub=a_ub, b_ub=np.r_[-y, y],
                 bounds=[(None, None)] * 2 + [(0, None)] * n)
    ours = np.abs(y - got["line"]["l1"]["slope"] * x - got["line"]["l1"]["intercept"]).sum()
    assert ours == pytest.approx(lp.fun, abs=1e-8)
    assert "the L2 fit followed the outliers" in got["conclusion"]
    # the penalties against scikit-learn on the same data (same objective, alpha = lam)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((60, 100))
    w = np.zeros(100)
    w[rng.choice(100, 10, replace=False)] = rng.uniform(1, 3, 10) * rng.choice([-1, 1], 10)
    b = a @ w + 0.1 * rng.standard_normal(60)
    ridge = Ridge(alpha=0.1 * 60, fit_intercept=False).fit(a, b).coef_
    np.testing.assert_allclose(got["penalty"]["w_l2"], ridge, rtol=1e-8, atol=1e-10)
    lasso = Lasso(alpha=0.1, fit_intercept=False, tol=1e-12, max_iter=100000).fit(a, b).coef_
    w_l1 = np.array(got["penalty"]["w_l1"])
    np.testing.assert_allclose(w_l1, lasso, atol=1e-3)  # ISTA, 500 steps, vs coordinate descent
    assert got["penalty"]["l1_zero"] == int((w_l1 == 0).sum()) == int((lasso == 0).sum())
    assert got["penalty"]["l2_zero"] == 0 and got["penalty"]["subgradient_zero"] == 0


def test_regularization_wordings_both_ways():
    assert reg_mod.follows_sentence(25.0, 17.0).startswith("the L2 fit followed")
    assert reg_mod.follows_sentence(10.0, 17.0).startswith("the L1 fit followed")
    s = reg_mod.zeros_sentence(100, 71, 0, 0, 64, 0, 3)
    assert s.startswith("L1 regularisation set 71 of 100 weights to exactly 0; L2 set none to 0, "
                        "none below 1e-6 and 64 below 1e-2")


def test_batchnorm_numbers_match_torch(capsys):
    got = lab(capsys, "batchnorm", "--steps", "7")
    bn_a = torch.nn.BatchNorm1d(3, momentum=0.1).double()
    a = torch.tensor(norm_mod.BATCH_A, dtype=torch.float64)
    b = torch.tensor(norm_mod.BATCH_B, dtype=torch.float64)
    bn_b = torch.nn.BatchNorm1d(3, momentum=0.1).double()
    np.testing.assert_allclose(got["train"]["sample0_in_a"], bn_a(a)[0].detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(got["train"]["sample0_in_b"], bn_b(b)[0].detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(got["running"]["after_1"]["mean"], bn_a.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(got["running"]["after_1"]["var"], bn_a.running_var.numpy(), rtol=1e-12)
    for _ in range(6):
        bn_a(a)
    np.testing.assert_allclose(got["running"]["after_7"]["mean"], bn_a.running_mean.numpy(), rtol=1e-12)
    bn_a.eval()
    np.testing.assert_allclose(got["eval"]["sample0_in_b"], bn_a(b)[0].detach().numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        torch.nn.BatchNorm1d(3).double()(a[:1])
    assert "more than one value per channel" in got["batch_of_one"]
    assert "gave different outputs in the two batches" in got["conclusion"]
    assert "it gave the same output in both" in got["conclusion"]
    assert "after 7 steps 52.2%" in got["conclusion"]  # 1 - 0.9^7 = 0.5217


def test_batchnorm_wordings_both_ways():
    assert "gave the same output in both batches" in norm_mod.eval_mode_sentence(True, 0.0, True)
    assert "its outputs still differed" in norm_mod.eval_mode_sentence(False, 1.0, False)


def test_dropout_numbers(capsys):
    got = lab(capsys, "dropout", "--p", "0.25", "--masks", "2000")
    x, mask = np.array(got["x"]), np.array(got["mask"])
    np.testing.assert_allclose(got["train_out"], x * mask / 0.75, rtol=1e-15)
    assert got["eval_out"] == x.tolist()
    assert np.all(np.abs(np.array(got["train_mean"]) - x) <= 4 * np.array(got["train_stderr"]))
    assert "it would be 0.75 times the input" in got["conclusion"]
    assert "was within" in norm_mod.scaling_sentence(1.0, 10, 0.5)
    assert "missed by up to 9.0" in norm_mod.scaling_sentence(9.0, 10, 0.5)


def test_linear_collapse_numbers(capsys):
    got = lab(capsys, "linear-collapse", "--widths", "4,6,2,5,3")
    w = np.array(got["W"])
    assert w.shape == (3, 4) and got["rank"] == np.linalg.matrix_rank(w) == 2
    assert got["max_difference"] < 1e-12 and got["relu_affine_rms_residual"] > 0.05
    assert "equals one 4->3 linear map" in got["conclusion"] and "does not collapse" in got["conclusion"]
    assert "the ReLUs never switched off" in lc_mod.collapse_sentence(2, 3, 3, 0.0, 0.0, 1.0)
    assert "differs from the product map" in lc_mod.collapse_sentence(2, 3, 3, 1.0, 1.0, 1.0)


def check_metrics_against_sklearn(got, y, probs, pos, threshold=0.5):
    k = probs.shape[1]
    pred = probs.argmax(1) if k > 2 or threshold is None else (probs[:, 1] >= threshold).astype(int)
    np.testing.assert_array_equal(got["confusion"], skm.confusion_matrix(y, pred, labels=list(range(k))))
    p, r, f, _ = skm.precision_recall_fscore_support(y, pred, labels=list(range(k)), zero_division=0)
    np.testing.assert_allclose(got["per_class"]["f1"], f, atol=1e-12)
    np.testing.assert_allclose(got["per_class"]["precision"], p, atol=1e-12)
    for avg in ("micro", "macro", "weighted"):
        sf = skm.f1_score(y, pred, labels=list(range(k)), average=avg, zero_division=0)
        assert got["averages"][avg]["f1"] == pytest.approx(sf, abs=1e-12)
    yb = (y == pos).astype(int)
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(yb, probs[:, pos]), abs=1e-12)
    assert got["average_precision"] == pytest.approx(skm.average_precision_score(yb, probs[:, pos]), abs=1e-12)


def test_metrics_defaults(capsys):
    got = lab(capsys, "metrics")
    y = np.array(metrics_mod.DEFECT_LABELS)
    s = np.array(metrics_mod.DEFECT_SCORES)
    check_metrics_against_sklearn(got, y, np.c_[1 - s, s], 1)
    # the cheapest threshold by brute force over every cut
    costs = {t: 5 * ((s < t) & (y == 1)).sum() + ((s >= t) & (y == 0)).sum() for t in np.unique(s)}
    best = min(costs.values())
    assert got["cost"]["best_cost"] == best == 6 and costs[got["cost"]["best_threshold"]] == best
    assert got["cost"]["at_threshold"] == 5 * 3 + 2
    assert "found 5 of the 8 'defect' samples (recall 0.625) with 2 false alarm(s)" in got["conclusion"]
    assert "the cheapest threshold is 0.2 (total cost 6 vs 17 at 0.5)" in got["conclusion"]
    same = lab(capsys, "metrics", "--cost-fn", "1", "--cost-fp", "1", "--threshold", "0.6")
    assert "0.6 is already a cheapest threshold" in same["conclusion"]


def test_metrics_scores_file_multiclass_and_run_folder(capsys, tmp_path):
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(3), 120)
    y = np.where(rng.random(120) < 0.6, probs.argmax(1), rng.integers(0, 3, 120))
    names = ["cat", "dog", "eel"]
    rows = ["label," + ",".join(names)] + [
        f"{names[c]}," + ",".join(repr(float(v)) for v in p) for c, p in zip(y, probs, strict=True)]
    (tmp_path / "s.csv").write_text("\n".join(rows) + "\n")
    got = lab(capsys, "metrics", "--scores", str(tmp_path / "s.csv"), "--positive", "dog")
    check_metrics_against_sklearn(got, y, probs, 1, threshold=None)
    assert got["classes"] == names and got["positive"] == "dog"
    # a cnnlab train folder: config.json names the classes, test_predictions.npz holds the rest
    from cnnlab.engine.outputs import write_predictions

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"data": {"classes": names}}))
    write_predictions(run / "test_predictions.npz", torch.tensor(y), torch.tensor(np.log(probs)))
    got = lab(capsys, "metrics", "--run", str(run))
    check_metrics_against_sklearn(got, y, probs.astype(np.float32).astype(np.float64), 0, threshold=None)
    assert got["positive"] == "cat"


@pytest.mark.parametrize(
    "files,argv,message",
    [
        ({"s.csv": "label,score\n0,0.1\n2,0.9\n"}, ["metrics", "--scores", "s.csv"],
         r"line 3: label '2' is not 0 or 1 nor one of the classes 0, 1"),
        ({"s.csv": "label,score\nok,0.1\nbad,0.9\n"},
         ["metrics", "--scores", "s.csv", "--classes", "ok,defect"],
         "label 'bad' is not 0 or 1 nor one of the classes ok, defect"),
        ({"s.csv": "label,score\n0,0.1\n1,1.7\n"}, ["metrics", "--scores", "s.csv"],
         r"scores: 1.7 is outside \[0, 1\]; probabilities are required here"),
        ({"s.json": '{"labels": [0, 1, 1], "scores": [0.2, 0.4]}'}, ["metrics", "--scores", "s.json"],
         "3 labels but 2 scores"),
        ({}, ["metrics", "--cost-fn", "-1"], "cost_fn must be a finite number >= 0, got -1"),
        ({}, ["metrics", "--cost-fp", "-0.5"], "cost_fp must be a finite number >= 0, got -0.5"),
        ({}, ["metrics", "--run", "nowhere"], "nowhere is not a cnnlab run folder"),
        ({}, ["adam", "--beta1", "1"], r"beta1 must be in \[0, 1\), got 1.0"),
        ({}, ["adam", "--beta2", "-0.2"], r"beta2 must be in \[0, 1\), got -0.2"),
        ({}, ["dropout", "--p", "1.5"], r"p must be in \[0, 1\], got 1.5"),
        ({}, ["batch-size", "--batch-sizes", "0,4"], r"batch size 0 is not in \[1, 512\]"),
        ({}, ["batchnorm", "--momentum", "2"], r"momentum must be in \[0, 1\], got 2.0"),
        ({"p.csv": "1,2,3\n4,5,6\n"}, ["regularization", "--points", "p.csv"], "expected 2 columns"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch, files, argv, message):
    monkeypatch.chdir(tmp_path)
    for name, content in files.items():
        Path(name).write_text(content)
    code = main(["walkthrough", *argv, "--no-figure"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("cnnlab: error: "), err
    assert re.search(message, err), err


@pytest.mark.parametrize("name", ["adam", "batch-size", "regularization", "batchnorm", "dropout",
                                  "linear-collapse", "metrics"])
def test_text_and_figure(capsys, tmp_path, name):
    small = {"adam": ["--runs", "50"], "batch-size": ["--draws", "20"], "dropout": ["--masks", "50"]}
    assert main(["walkthrough", name, "--out", str(tmp_path), *small.get(name, [])]) == 0
    out = capsys.readouterr().out
    assert "one step written out:" in out and "\nconclusion: " in out
    png = (tmp_path / f"{name}.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000


def test_softmax_regression_per_sample_gradients_match_torch_autograd():
    from cnnlab.cli._labs_data import softmax_regression_gradients

    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((5, 7)), rng.integers(0, 3, 5)
    w, b = rng.standard_normal((3, 7)), rng.standard_normal(3)
    got = softmax_regression_gradients(x, y, w, b)
    for i in range(5):
        wt, bt = torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)
        torch.nn.functional.cross_entropy(torch.tensor(x[i:i + 1]) @ wt.T + bt,
                                          torch.tensor(y[i:i + 1])).backward()
        np.testing.assert_allclose(got[i], np.r_[wt.grad.numpy().ravel(), bt.grad.numpy()],
                                   rtol=1e-12, atol=1e-14)


def test_batch_size_on_fashion_mnist_files(capsys, tmp_path, monkeypatch):
    """The real-data variant end to end, on a tiny Fashion-MNIST in the IDX format."""
    import gzip

    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))

    rng = np.random.default_rng(0)
    for prefix, n in (("train", 64), ("t10k", 16)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            header = bytes([0, 0, 8, arr.ndim]) + np.asarray(arr.shape, ">i4").tobytes()
            with gzip.open(tmp_path / f"{prefix}-{kind}-ubyte.gz", "wb") as f:
                f.write(header + arr.tobytes())
    got = lab(capsys, "batch-size", "--fashion-mnist", "--data-dir", str(tmp_path), "--n", "40",
              "--draws", "50", "--batch-sizes", "1,4,40,64")
    assert got["batch_sizes"] == [1, 4, 40] and got["dim"] == 7850
    b = np.array([1, 4, 40])
    np.testing.assert_allclose(got["variance_formula"], got["sigma2"] / b * (40 - b) / 39,
                               rtol=1e-12, atol=1e-20)
    assert got["conclusion"].startswith("on Fashion-MNIST, softmax regression at init, 40 ")
