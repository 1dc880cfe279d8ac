"""Real searches on a Fashion-MNIST subset with SQLite: end to end, NaN trials, resume after
SIGINT."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from cnnlab.studies._tune_hyperband import brackets
from cnnlab.studies._tune_report import (
    _reached_text,
    configuration_text,
    shared_configurations,
    value_text,
)
from cnnlab.studies._tune_space import load_space
from cnnlab.studies.tune import DB_NAME, TuneConfig, tune

from ._tune_helpers import expected_keys, need_fashion_mnist, open_at_once, write_space

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _cfg(tmp_path: Path, space: Path | None = None, **over) -> TuneConfig:
    base = dict(space=str(space or write_space(tmp_path)), out=str(tmp_path / "out"), subset=600,
                max_epochs=3, reduction_factor=3, trials=6, threads=1, device="cpu", seed=0)
    return TuneConfig(**{**base, **over})


def test_tiny_search_end_to_end_sqlite(tmp_path):
    need_fashion_mnist()
    cfg = _cfg(tmp_path, trials=7)
    result = tune(cfg)
    out = Path(cfg.out)
    assert (out / DB_NAME).is_file() and (out / "report.html").is_file()
    study = optuna.load_study(study_name=cfg.study_name, storage=cfg.storage_url)
    trials = study.get_trials()
    assert len(trials) == len(result.trials) == 7
    rungs = {b.index: b.rungs for b in brackets(3, 3)}  # {0: (1,), 1: ()}
    for t, row in zip(trials, result.trials):
        assert set(t.params) == expected_keys(t.params)
        assert row["model_params"] > 0 and row["macs"] > 0
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert sorted(t.intermediate_values) == [1, 2, 3]
            assert t.value == t.intermediate_values[3]
        elif t.state == optuna.trial.TrialState.PRUNED:
            # a pruned trial stopped exactly at one of its bracket's rungs
            assert row["epochs"] in rungs[row["bracket"]] and "pruned after epoch" in row["reason"]
    # the best configuration, retrained on train+validation with its active parameters only
    final = json.loads((out / "final" / "config.json").read_text())["config"]
    assert final["val_fraction"] == 0 and final["epochs"] == 3
    assert final["model_kwargs"]["filters"] == result.best["values"]["filters"]
    assert result.final["num_train"] == 600 and 0 <= result.final["test_accuracy"] <= 1
    md = (out / "report.md").read_text()
    for heading in ("Hyperband brackets", "Trials", "Best so far", "What mattered"):
        assert f"## {heading}" in md
    saved = json.loads((out / "results.json").read_text())
    assert [t["number"] for t in saved["trials"]] == list(range(7))


def test_nan_trial_is_failed_with_reason_and_the_search_goes_on(tmp_path):
    need_fashion_mnist()
    text = write_space(tmp_path).read_text().replace("choices: [0.001, 0.003]",
                                                     "choices: [0.001, 1.0e+30]")
    space = write_space(tmp_path, text)
    nan = {"conv_layers": 1, "filters_1": 4, "kernel_1": 3, "units_layers": 0, "lr": 1e30}
    ok = {**nan, "lr": 0.001}
    cfg = _cfg(tmp_path, space, trials=3, sampler="random", enqueue=[nan, ok], retrain=False)
    result = tune(cfg)
    first = result.trials[0]
    assert first["state"] == "fail" and "training loss became" in first["reason"]
    assert result.trials[1]["state"] == "complete"
    assert len(result.trials) == 3  # the failed trial counts; the search went on to trial 2
    assert result.best["number"] != 0


def test_compare_random_spends_the_same_epochs_without_pruning_and_says_what_it_shares(tmp_path):
    need_fashion_mnist()
    cfg = _cfg(tmp_path, trials=5, compare_random=True, retrain=False)
    result = tune(cfg)
    budget = sum(r["epochs"] for r in result.trials)
    rr = result.random_trials
    # random search never prunes: every trial trains all epochs, until the search's budget is met
    assert all(r["state"] == "complete" and r["epochs"] == cfg.max_epochs for r in rr)
    assert sum(r["epochs"] for r in rr) >= budget > sum(r["epochs"] for r in rr[:-1])
    # all 5 TPE trials are start-up draws of RandomSampler(seed 0), so the random search with
    # seed 0 draws the same configurations in the same order, and the report says so
    n = min(len(rr), len(result.trials))
    assert [r["params"] for r in rr[:n]] == [r["params"] for r in result.trials[:n]]
    md = (Path(cfg.out) / "report.md").read_text()
    assert (f"{n} of the random search's {len(rr)} trials tried a configuration this search "
            "also tried") in md


def test_random_seed_gives_the_comparison_independent_draws_in_a_study_of_its_own(tmp_path):
    need_fashion_mnist()
    cfg = _cfg(tmp_path, trials=4, compare_random=True, retrain=False, random_seed=7)
    result = tune(cfg)
    # the reference: what Optuna's RandomSampler(seed 7) draws from the same space, in order
    reference = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=7))
    expected = []
    for _ in result.random_trials:
        trial = reference.ask()
        load_space(cfg.space).suggest(trial)
        expected.append(dict(trial.params))
        reference.tell(trial, 0.0)
    assert [r["params"] for r in result.random_trials] == expected
    md = (Path(cfg.out) / "report.md").read_text()
    assert "random search seeded 7, this search 0: independent draws" in md
    # the paired comparison afterwards: the finished search is continued (no new trial) and a
    # second random study is added beside the first, which is kept
    paired = tune(dataclasses.replace(cfg, random_seed=None))
    assert [r["params"] for r in paired.trials] == [r["params"] for r in result.trials]
    names = {s.study_name for s in optuna.get_all_study_summaries(cfg.storage_url)}
    assert names == {"cnnlab-tune", "cnnlab-tune-random-7", "cnnlab-tune-random"}
    n = min(len(paired.random_trials), len(result.trials))
    assert [r["params"] for r in paired.random_trials[:n]] == [r["params"]
                                                               for r in result.trials[:n]]
    md = (Path(cfg.out) / "report.md").read_text()
    assert "both seeded 0: TPE's random start-up trials" in md
    # both comparisons are summarised, each from its own study's trials, and tabled
    by_study = {c["study"]: c for c in paired.random_searches}
    assert set(by_study) == {"cnnlab-tune-random", "cnnlab-tune-random-7"}
    for name, seed, rr in (("cnnlab-tune-random-7", 7, result.random_trials),
                           ("cnnlab-tune-random", 0, paired.random_trials)):
        c = by_study[name]
        best = max(r["value"] for r in rr if r["state"] == "complete")
        assert (c["random_seed"], c["random_trials"], c["random_best_val"]) == (seed, len(rr), best)
        assert c["random_epochs"] == cfg.max_epochs * len(rr)  # no pruning
    assert "Every random-search comparison of this search" in md
    assert "| cnnlab-tune-random-7 | 7 |" in md


def test_the_report_says_how_far_a_search_that_never_reached_random_search_falls_short():
    rows = [{"state": "complete", "value": 0.87, "epochs": 7},
            {"state": "pruned", "value": 0.88, "epochs": 1}]  # a pruned trial's value is no best
    assert _reached_text(rows, 0.8758333, None, 84) == (
        "The search never reached that accuracy: its best is 87.00%, 0.58 points below.")
    assert _reached_text(rows, 0.87, 7, 84) == (
        "The search reached that accuracy after 7 epochs (0.08 x the random search's epochs).")


def test_shared_configurations_counts_equal_parameter_sets_whatever_their_order():
    rows = [{"params": {"a": 1, "b": 0.30000000000000004}}, {"params": {"a": 2}}]
    other = [{"params": {"b": 0.30000000000000004, "a": 1}}, {"params": {"a": 1, "b": 0.3}},
             {"params": {"a": 2}}, {"params": {"a": 3}}]
    assert shared_configurations(rows, other) == 2


def test_configuration_text_shows_stepped_floats_as_written_and_keeps_real_digits():
    # Optuna's step grid gives low + 3 * 0.1 = 0.30000000000000004 for dropout 0.3
    assert 0.1 * 3 != 0.3
    params = {"conv_layers": 2, "dropout": 0.1 * 3, "lr": 5e-4, "w": 0.123456789}
    assert configuration_text(params) == "conv_layers=2, dropout=0.3, lr=0.0005, w=0.123456789"
    # per-layer values (lists), as the best configuration's block prints them
    assert value_text([0.1 * 3, 0.5]) == "[0.3, 0.5]"
    assert value_text([8, 32, 24]) == str([8, 32, 24])


@pytest.mark.slow
def test_resume_after_sigint_loses_no_finished_trial(tmp_path):
    # 6 trials: after the second, four trials' later epochs are windows for the interruption
    # (with 4 trials on an idle machine, 0.5 s polls once missed both windows)
    n_trials = 6
    need_fashion_mnist()
    space = write_space(tmp_path)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cnnlab", "tune", "--space", str(space), "--out", str(out),
           "--subset", "1500", "--max-epochs", "3", "--trials", str(n_trials), "--threads", "1",
           "--device", "cpu", "--pruner", "none", "--no-retrain"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    url = f"sqlite:///{out / DB_NAME}"
    deadline = time.time() + 240
    before = []
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
        if not (out / DB_NAME).exists():
            continue
        try:
            trials = optuna.load_study(study_name="cnnlab-tune", storage=url).get_trials()
        except (KeyError, Exception):  # the study is still being created
            continue
        done = [t for t in trials if t.state.is_finished()]
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        if len(done) >= 2 and running and running[0].intermediate_values:
            before = done
            proc.send_signal(signal.SIGINT)  # in the middle of a trial's second epoch or later
            break
    out1, _ = proc.communicate(timeout=120)
    assert before, f"the search never got two trials done: {out1}"
    assert proc.returncode == 130, out1
    study = optuna.load_study(study_name="cnnlab-tune", storage=url)
    after = {t.number: t for t in study.get_trials()}
    for t in before:  # nothing finished was lost or changed
        assert after[t.number].state == t.state and after[t.number].value == t.value
    cut = [t for t in after.values() if t.state == optuna.trial.TrialState.FAIL]
    assert cut and all("interrupted" in t.user_attrs["fail_reason"] for t in cut)
    assert not [t for t in after.values() if t.state == optuna.trial.TrialState.RUNNING]

    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "queued again" in res.stdout
    final = {t.number: t for t in
             optuna.load_study(study_name="cnnlab-tune", storage=url).get_trials()}
    for t in before:
        assert final[t.number].value == t.value
    complete = [t for t in final.values() if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == n_trials  # --trials reached; the interrupted trial did not count
    retried = [t for t in complete if "retry_of" in t.user_attrs]
    assert {t.user_attrs["retry_of"] for t in retried} == {t.number for t in cut}
    for t in retried:  # the retry trained the same configuration
        assert t.params == final[t.user_attrs["retry_of"]].params


@pytest.mark.slow
def test_workers_starting_at_once_on_a_new_sqlite_file_all_get_it(tmp_path):
    """Optuna creates a new database's tables after checking they are missing: processes that
    start together lose that race (measured: 2-4 of 6 failed in each of 3 tries without the
    retry, on a 2-core Intel Xeon); cnnlab retries, and every one gets the storage."""
    url = f"sqlite:///{tmp_path / 'new.db'}"
    said = open_at_once(url, n=6)
    assert said == ["ok"] * 6, said
