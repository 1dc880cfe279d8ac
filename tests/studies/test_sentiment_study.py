"""The sentiment study end to end on the real SST-5 (a tiny budget), its re-run, its one-line
errors, and its measurements recomputed from each run's saved predictions."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from cnnlab.cli import main
from cnnlab.data.sst import find_sst, load_sst
from cnnlab.errors import DataNotFoundError
from cnnlab.studies.sentiment import BUDGETS, LENGTH_BINS, plan_runs, run_study


def _real():
    try:
        return find_sst()
    except DataNotFoundError:
        return None


SST = _real()
needs_sst = pytest.mark.skipif(SST is None, reason="sst-trees.tar.gz not found (CNNLAB_DATA)")

TINY = dataclasses.replace(
    BUDGETS["smoke"], models=("kim_cnn", "bag_of_embeddings"), seeds=1,
    reference=(("bag_of_embeddings", "sentences"),), reference_seeds=3, epochs_sentences=1,
    epochs_phrases=1, phrases_subset=2000, embed_dim=8, hidden_size=8, batch_size=100)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("sentiment")
    try:
        payload = run_study(out, data_dir=str(SST), budget=TINY, device="cpu",
                            log=lambda line: None)
        yield out, payload
    finally:
        torch.set_num_threads(old)


@needs_sst
@pytest.mark.slow
def test_tiny_study_writes_every_run_and_its_measurements(study):
    out, payload = study
    results = json.loads((out / "results.json").read_text())
    # 2 models x 2 training sets, plus 2 more seeds of the reference
    assert len(results["runs"]) == len(plan_runs(TINY)) == 6
    test = load_sst(SST).test
    lengths = np.array([len(t) for t in test.tokens])
    for r in results["runs"]:
        assert {"model", "train_on", "seed", "test_accuracy", "train_seconds"} <= set(r)
        # recomputed here from the run's saved predictions and the test labels read anew
        saved = np.load(out / "runs" / r["key"] / "test_predictions.npz")
        assert np.array_equal(saved["labels"], test.labels)
        pred = saved["probs"].argmax(1)
        assert r["test_accuracy"] == pytest.approx((pred == test.labels).mean(), abs=1e-12)
        assert r["within_one_accuracy"] == pytest.approx(
            (np.abs(pred - test.labels) <= 1).mean(), abs=1e-12)
        cm = np.array(r["confusion"])
        assert cm.sum() == 2210 and np.array_equal(cm.sum(1), np.bincount(test.labels, minlength=5))
        for (lo, hi), b in zip(LENGTH_BINS, r["accuracy_by_length"], strict=True):
            sel = (lengths >= lo) & (lengths <= hi)
            assert b["sentences"] == sel.sum()
            assert b["accuracy"] == pytest.approx((pred[sel] == test.labels[sel]).mean())
        config = json.loads((out / "runs" / r["key"] / "config.json").read_text())
        assert config["data"]["train_on"] == r["train_on"]
        # phrase runs train for the sentences' class prior; sentence runs need no shift
        assert config["data"]["prior"] == ("sentences" if r["train_on"] == "phrases"
                                           else "train")
        assert r["num_train"] == (2000 if r["train_on"] == "phrases" else 8544)
    # the noise: the reference's three seeds, measured in this invocation
    ref = [r["test_accuracy"] for r in results["runs"]
           if (r["model"], r["train_on"]) == ("bag_of_embeddings", "sentences")]
    assert len(ref) == 3 and len(set(ref)) > 1
    assert "std of test accuracy over the seeds of bag of embeddings on sentences (3 seeds)" \
        in results["resolution"][0]
    claims = [f["claim"] for f in results["findings"]]
    assert any(c.startswith("Highest mean test accuracy") for c in claims)
    assert any("Goal (>= 45.0%" in c for c in claims)
    md = (out / "report.md").read_text()
    assert "CNN-rand" in md and "GloVe" in md and "logit-adjusted loss" in md
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == ["accuracy.png",
                                                                     "confusion_best.png"]
    assert (out / "results.csv").read_text().count("\n") == 7  # header + 6 runs


@needs_sst
@pytest.mark.slow
def test_rerun_reuses_every_run(study):
    out, first = study
    again = run_study(out, data_dir=str(SST), budget=TINY, device="cpu", log=lambda line: None)
    assert again["runs_trained"] == 0 and again["runs_reused"] == 6
    assert [r["test_accuracy"] for r in again["runs"]] == \
        [r["test_accuracy"] for r in first["runs"]]


@pytest.mark.parametrize("bad, message", [
    (["--models", "kim_cnn,transformer"], "--models: unknown 'transformer'; choose from rnn, "),
    (["--train-on", "words"], "--train-on: unknown 'words'; choose from sentences, phrases"),
    (["--seeds", "0"], "--seeds must be a positive integer, got 0"),
])
def test_bad_study_options_are_one_line_exit_2(tmp_path, capsys, bad, message):
    argv = ["study", "sentiment", "--out", str(tmp_path / "s"), "--budget", "smoke", *bad]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "s" / "runs").exists()
