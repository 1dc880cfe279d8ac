"""The course-figure study end to end on a tiny fake CIFAR-10 (random pixels, 100 training and
20 test images): it trains, reuses, measures, writes the report; bad models get one line."""

import json

import numpy as np
import pytest

from cnnlab.cli import main
from cnnlab.studies import get_study
from cnnlab.studies.course_figure import Budget
from cnnlab.studies.runner import run

# training resnet20 on 100 images plus four study invocations: about 1 min of CPU time, 3.5 min
# wall measured under load from other helpers (2 cores)
pytestmark = pytest.mark.slow

TINY = Budget("tiny", subset=None, epochs=1, batch_size=20, pairs=6, figures=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, write_cifar):
    tmp = tmp_path_factory.mktemp("course-figure")
    data = tmp / "cifar-10-batches-py"
    write_cifar(data, np.random.default_rng(0))
    study = get_study("course-figure")
    options = study.make_options(data_dir=str(data), budget=TINY, device="cpu",
                                 out=str(tmp / "out"), quiet=True)
    outcome, files = run(study, options)
    # read now: a later test re-runs the study into the same folder (tests run shuffled)
    return {"tmp": tmp, "data": data, "study": study, "outcome": outcome, "files": files,
            "payload": json.loads(files["json"].read_text()),
            "markdown": files["markdown"].read_text()}


def test_tiny_run_trains_measures_and_reports(tiny):
    payload = tiny["payload"]
    assert payload["runs_trained"] == 1 and payload["pairs"] == 6
    assert payload["canvas"] == [3, 32, 64]
    rows = tiny["outcome"].rows
    assert len(rows) == 6 and sum(r["course_pair"] for r in rows) == 3  # every other is cat/dog
    for r in rows:
        assert r["class_left"] != r["class_right"]
        assert 0 <= r["p_left"] <= 1 and 0 <= r["p_right"] <= 1
        for m in ("gradcam", "gradcam++", "guided", "guided-gradcam"):
            assert isinstance(r[f"{m}:hit_left"], bool)
            assert r[f"{m}:energy_left"] is None or 0 <= r[f"{m}:energy_left"] <= 1
    # the summary's rates are the rows' counts
    table = {(t["key"], t["asked"]): t for t in payload["summary"]}
    for (m, side), t in table.items():
        assert t["pointing"] == sum(r[f"{m}:hit_{side}"] for r in rows) / 6
        assert t["pointing_low"] <= t["pointing"] <= t["pointing_high"]
    # the headline findings: one per method and the rank-correlation comparison
    assert sum(f["headline"] for f in payload["findings"]) == 5
    md = tiny["markdown"]
    assert "course-figure-0.png" in md and (tiny["tmp"] / "out" / "plots").is_dir()


def test_second_invocation_reuses_the_model_and_the_measurement(tiny):
    study = tiny["study"]
    options = study.make_options(data_dir=str(tiny["data"]), budget=TINY, device="cpu",
                                 out=str(tiny["tmp"] / "out"), quiet=True)
    outcome, files = run(study, options)
    payload = json.loads(files["json"].read_text())
    assert payload["runs_trained"] == 0 and payload["runs_reused"] == 1
    assert outcome.rows == tiny["outcome"].rows


def test_cli_with_checkpoint_and_pairs(tiny, capsys):
    run_dir = tiny["tmp"] / "out" / "runs" / "resnet20-cifar10"
    out = tiny["tmp"] / "cli"
    status = main(["explain", "course-figure", "--checkpoint", str(run_dir), "--pairs", "2",
                   "--data-dir", str(tiny["data"]), "--out", str(out)])
    assert status == 0
    payload = json.loads((out / "results.json").read_text())
    assert payload["pairs"] == 2 and payload["runs_trained"] == 0
    assert not payload["model"]["trained_here"]


def test_bad_pairs_and_non_cifar_run_are_one_line(tiny, tmp_path, capsys):
    assert main(["explain", "course-figure", "--pairs", "0", "--data-dir", str(tiny["data"]),
                 "--out", str(tmp_path / "a")]) == 2
    assert "--pairs must be" in capsys.readouterr().err
    assert main(["explain", "course-figure", "--checkpoint", str(tmp_path / "nothing"),
                 "--data-dir", str(tiny["data"]), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "not a cnnlab run folder" in err and err.count("\n") == 1
    assert main(["explain", "--images", "1", "--out", str(tmp_path / "c")]) == 2
    assert "--checkpoint is required" in capsys.readouterr().err
