"""The study framework: noise-aware verdicts (hand-computed), the run store's refusals, and
`cnnlab study list`."""

import math
import statistics

import pytest

from cnnlab.cli import main
from cnnlab.errors import UserError
from cnnlab.studies import STUDIES, get_study
from cnnlab.studies.findings import (
    NOT_DISTINGUISHABLE,
    Spread,
    compare,
    compare_ratio,
    pooled_std,
    relative_spread,
)
from cnnlab.studies.store import RunStore, open_output_folder


def test_pooled_std_matches_statistics_and_skips_single_runs():
    a, b = [0.70, 0.72, 0.74], [0.60, 0.65]
    expected = math.sqrt((2 * statistics.variance(a) + 1 * statistics.variance(b)) / 3)
    assert pooled_std([a, b, [0.9]]) == pytest.approx(expected, rel=1e-12)
    assert pooled_std([[0.5], [0.6]]) is None


def test_a_difference_inside_the_noise_names_no_winner():
    s = Spread(0.01, "test")
    # one seed each: threshold 2 * 0.01 * sqrt(2) = 0.0283
    assert compare(0.75, 0.73, s) == NOT_DISTINGUISHABLE
    assert compare(0.76, 0.73, s) == "higher" and compare(0.70, 0.73, s) == "lower"
    # three seeds each: 2 * 0.01 * sqrt(2/3) = 0.0163
    assert compare(0.75, 0.73, s, 3, 3) == "higher"
    assert compare(0.9, 0.1, Spread(None, "one seed")) == NOT_DISTINGUISHABLE


def test_timing_ratios_are_judged_against_the_spread_over_repeats():
    rel = relative_spread(10.0, 1.0)  # IQR 1 ms at a 10 ms median: 5%
    assert rel == pytest.approx(0.05)
    # 2 * hypot(0.05, 0.05) = 0.141 on the log scale
    assert compare_ratio(1.10, rel, rel) == NOT_DISTINGUISHABLE
    assert compare_ratio(1.20, rel, rel) == "higher" and compare_ratio(0.8, rel, rel) == "lower"
    assert compare_ratio(5.0, None, rel) == NOT_DISTINGUISHABLE


def test_store_refuses_a_measurement_folder_file_and_remeasures_other_settings(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="--out .* is not a folder"):
        open_output_folder(tmp_path / "f")
    store = RunStore(open_output_folder(tmp_path / "s"))
    calls = []
    assert store.measured("m", {"n": 1}, lambda: calls.append(1) or {"v": 1}) == ({"v": 1}, False)
    assert store.measured("m", {"n": 1}, lambda: calls.append(1) or {"v": 2}) == ({"v": 1}, True)
    assert store.measured("m", {"n": 2}, lambda: calls.append(1) or {"v": 3}) == ({"v": 3}, False)
    assert len(calls) == 2
    store._check_spec(store.run_dir("r"), {"depth": 8})
    with pytest.raises(UserError, match="holds a run with other settings .*depth: 8 there, 20 now"):
        store._check_spec(store.run_dir("r"), {"depth": 20})


@pytest.mark.parametrize("log", [True, False])
def test_store_trains_quietly_for_quiet_studies(tmp_path, capsys, write_sst, rng, log):
    """``--quiet`` studies build their store with log=False: not even the engine's epoch lines."""
    from cnnlab.engine import TrainConfig

    data = write_sst(tmp_path / "sst", rng, sizes=(60, 20, 20))
    config = TrainConfig(model="bag_of_embeddings", dataset="sst5", data_dir=str(data),
                         model_kwargs={"embed_dim": 4}, epochs=1, batch_size=20,
                         optimizer="adamw", lr=1e-2, device="cpu", threads=1, quiet=True)
    RunStore(open_output_folder(tmp_path / "s"), log=log).train("r", config)
    out, err = capsys.readouterr()
    assert ("epoch 1/1" in out + err) is log, out + err


def test_study_list_prints_every_study_and_budget_with_its_cost(capsys):
    assert main(["study", "list"]) == 0
    out = capsys.readouterr().out
    for name in STUDIES:
        study = get_study(name)
        assert f"{name}: {study.summary}" in out
        for b in study.budgets.values():
            assert f"--budget {b.name}" in out and b.cost in out
