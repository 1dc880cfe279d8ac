"""The dynamics study end to end on real Fashion-MNIST (budget smoke), its re-run, its CLI, and
the generated findings' wording on measurements that do and do not meet the expectation."""

import copy
import dataclasses
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.cli import main
from cnnlab.studies import _dynamics_findings as rep
from cnnlab.studies import _dynamics_summary as summary
from cnnlab.studies.dynamics import BUDGETS, plan_runs, run_study

FMNIST = Path("/usr/share/datasets/fashion-mnist")
pytestmark = pytest.mark.skipif(not FMNIST.is_dir(), reason="needs the Debian package "
                                "dataset-fashion-mnist (installed by the CI script)")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The smoke study, run once: (out dir, payload, seconds)."""
    old_cache, old_threads = os.environ.get("CNNLAB_CACHE"), torch.get_num_threads()
    os.environ["CNNLAB_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    torch.set_num_threads(1)  # small models: one thread is faster on a loaded 2-core machine
    out = tmp_path_factory.mktemp("dynamics")
    try:
        t0 = time.perf_counter()
        payload = run_study(out, data_dir=str(FMNIST), budget="smoke", device="cpu",
                            log=lambda line: None)
        yield out, payload, time.perf_counter() - t0
    finally:
        torch.set_num_threads(old_threads)
        if old_cache is None:
            os.environ.pop("CNNLAB_CACHE", None)
        else:
            os.environ["CNNLAB_CACHE"] = old_cache


def _strict_json(path):
    def no_constant(name):
        raise ValueError(f"{path} holds {name}, not strict JSON")

    return json.loads(path.read_text(), parse_constant=no_constant)


def test_report_files_are_complete_and_self_contained(study):
    out, payload, _ = study
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert len(pngs) == 7
    # every figure is embedded in the HTML; no image is fetched from elsewhere
    assert html.count('src="data:image/png;base64,') == len(pngs)
    assert not re.search(r'<img[^>]+src="(?!data:)', html)
    for name in pngs:
        assert f"plots/{name}" in md
    for title in ("1. Initialisation at depth", "2. Symmetry", "3. Vanishing gradients",
                  "4. Degradation", "5. Batch norm"):
        assert title in md and title in html
    saved = _strict_json(out / "results.json")
    assert saved["budget"]["name"] == "smoke" and saved["environment"]["torch"]
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 8 + len(plan_runs(BUDGETS["smoke"]))  # header, init configs, runs
    # every run folder is a complete engine run
    for spec in plan_runs(BUDGETS["smoke"]):
        assert (out / "runs" / spec.key / "metrics.json").is_file()


def test_initialisation_orderings(study):
    _, payload, _ = study
    cfg = {(c["norm"], c["init"]): c for c in payload["init"]["configs"]}
    depth = payload["init"]["settings"]["depth"]
    assert depth >= 20
    he, xa = cfg[("none", "he")], cfg[("none", "xavier")]
    he_ratio = he["act_std"][-1] / he["act_std"][0]  # typical network over `depth` layers
    xa_ratio = xa["act_std"][-1] / xa["act_std"][0]
    assert 0.5 <= he_ratio <= 2, he_ratio
    assert xa_ratio < 0.1, xa_ratio
    # normal(0, 0.01) shrinks by ~sqrt(9 * 64 * 1e-4 / 2) = 0.12 per layer
    normal = cfg[("none", "normal")]
    assert normal["act_std"][-1] / normal["act_std"][0] < 1e-10
    for norm in ("none", "bn"):
        assert all(cfg[(norm, "zero")]["act_zero"]) and all(cfg[(norm, "zero")]["grad_zero"])
    # batch norm: unit-variance pre-activations whatever the random init's scale
    for init in ("normal", "xavier", "he"):
        assert np.allclose(cfg[("bn", init)]["act_std"], 1.0, atol=0.05)
    # the numbers in the text are the measured ones
    text = " ".join(n["claim"] for n in payload["findings"] if n["section"] == "init")
    assert summary._f(he["act_std"][-1]) in text and summary._f(xa["act_std"][-1]) in text


def test_zero_init_filters_identical_and_dead_constant_init_identical_but_moving(study):
    _, payload, _ = study
    runs = {r["spec"]["init"]: r for r in payload["runs"] if r["spec"]["section"] == "symmetry"}
    zero, const, he = (summary.symmetry_summary(runs[k]) for k in ("zero", "constant", "he"))
    assert zero["rel_end_max"] == 0 and zero["change_max"] == 0 and zero["norm_end"] == 0
    assert zero["max_conv_grad_norm"] == 0
    assert const["rel_end_max"] < 1e-6 and const["change_min"] > 0
    assert const["max_conv_grad_norm"] > 0
    assert he["rel_start_min"] > 1.2 and he["rel_end_min"] > 1.0  # ~sqrt(2): distinct filters
    assert runs["zero"]["metrics"]["test_accuracy"] == pytest.approx(0.1, abs=0.02)
    text = " ".join(n["claim"] for n in payload["findings"] if n["section"] == "symmetry")
    assert "dead network" in text and "stayed identical" in text


def test_gradient_logs_cover_every_layer_and_step(study):
    _, payload, _ = study
    for r in payload["runs"]:
        g = r["grad_norms"]
        depth = r["spec"]["depth"]
        assert len(g["layers"]) == depth  # 6n+2 weighted layers: every conv and the classifier
        assert all(len(row) == depth for row in g["norms"])
        assert g["steps"][0] == 0 and g["steps"] == sorted(g["steps"])
        assert [t["epoch"] for t in r["test_curve"]] == list(range(1, r["spec"]["epochs"] + 1))
    sig = next(r for r in payload["runs"] if r["spec"]["act"] == "sigmoid")
    relu = next(r for r in payload["runs"] if r["spec"]["section"] == "flow"
                and r["spec"]["act"] == "relu")
    assert summary.flow_summary(sig)["ratio_median"] < 0.1 * summary.flow_summary(relu)["ratio_median"]


def test_rerun_reuses_every_run_without_training(study, capsys):
    out, first, _ = study
    files = sorted((out / "runs").glob("*/*.pt")) + sorted((out / "runs").glob("*/metrics.json"))
    stamps = {p: p.stat().st_mtime_ns for p in files}
    code = main(["study", "dynamics", "--budget", "smoke", "--out", str(out), "--device", "cpu",
                 "--data-dir", str(FMNIST), "--threads", "1"])
    assert code == 0
    log = capsys.readouterr().err
    assert ": training " not in log and log.count("finished earlier, reused") == len(first["runs"])
    assert "init-at-depth: measured earlier, reused" in log
    assert {p: p.stat().st_mtime_ns for p in files} == stamps
    again = _strict_json(out / "results.json")
    assert again["runs_trained"] == 0 and again["runs_reused"] == len(first["runs"])
    assert [r["metrics"]["test_accuracy"] for r in again["runs"]] == \
        [r["metrics"]["test_accuracy"] for r in first["runs"]]


def test_other_settings_in_the_same_folder_are_refused(study):
    out, _, _ = study
    longer = dataclasses.replace(BUDGETS["smoke"], epochs=2)
    with pytest.raises(ValueError, match="holds a run .*epochs"):
        run_study(out, data_dir=str(FMNIST), budget=longer, device="cpu", log=lambda s: None)


def test_cli_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["study", "dynamics", "--out", str(tmp_path / "file"), "--budget", "smoke",
                 "--data-dir", str(FMNIST)]) == 2
    assert capsys.readouterr().err.startswith("cnnlab: error: --out")
    for bad in (["--threads", "0"], ["--budget", "huge"]):  # argparse's own errors: exit 2
        with pytest.raises(SystemExit) as exc:
            main(["study", "dynamics", "--out", str(tmp_path / "y"), *bad])
        assert exc.value.code == 2
    assert "--threads: must be at least 1, got 0" in capsys.readouterr().err


# ------------------------------------------------------------ wording follows the measurement
def test_findings_say_so_when_the_measurement_contradicts_the_expectation(study):
    _, payload, _ = study
    bad = copy.deepcopy(payload)
    cfg = {(c["norm"], c["init"]): c for c in bad["init"]["configs"]}
    cfg[("none", "he")]["act_std"][-1] = 5 * cfg[("none", "he")]["act_std"][0]
    cfg[("none", "xavier")]["act_std"][-1] = 0.5 * cfg[("none", "xavier")]["act_std"][0]
    text = " ".join(n.claim for n in rep.findings(bad)["init"])
    assert "He init did NOT keep" in text and "x5" in text
    assert "did not shrink the activations by more than 10x" in text

    good = rep.findings(payload)["init"]
    assert any("As expected, He init keeps" in n.claim for n in good)


def _set_train_error(runs, err):
    """Every seed of a (model, depth) at ``err``, the extra seeds 0.005 either side."""
    for r in runs:
        offset = {0: 0.0, 1: 0.005, 2: -0.005}.get(r["spec"]["seed"], 0.0)
        r["metrics"]["history"][-1]["train_accuracy"] = 1 - err - offset


def test_degradation_wording_both_ways(study):
    _, payload, _ = study
    p = copy.deepcopy(payload)
    deg = {}
    for r in p["runs"]:
        if r["spec"]["section"] == "degradation":
            deg.setdefault((r["spec"]["model"], r["spec"]["depth"]), []).append(r)
    lo, hi = sorted({d for _, d in deg})
    for (model, depth), err in {("plain_cnn", lo): 0.20, ("plain_cnn", hi): 0.30,
                                ("resnet_cifar", lo): 0.20, ("resnet_cifar", hi): 0.18}.items():
        _set_train_error(deg[(model, depth)], err)
    text = " ".join(n.claim for n in rep.findings(p)["degradation"])
    assert "Degradation appeared" in text and "0.3 vs 0.2" in text
    assert "The residual nets do not degrade" in text

    for (model, depth), err in {("plain_cnn", lo): 0.20, ("plain_cnn", hi): 0.205,
                                ("resnet_cifar", lo): 0.20, ("resnet_cifar", hi): 0.25}.items():
        _set_train_error(deg[(model, depth)], err)
    text = " ".join(n.claim for n in rep.findings(p)["degradation"])
    assert "Degradation did NOT appear" in text
    assert "The residual nets also degrade" in text


def test_symmetry_wording_when_symmetry_breaks(study):
    _, payload, _ = study
    p = copy.deepcopy(payload)
    const = next(r for r in p["runs"] if r["spec"]["key"] == "symmetry-constant")
    for layer in const["filters"]["records"][-1]["layers"]:
        layer["relative"] = 0.3
    text = " ".join(n.claim for n in rep.findings(p)["symmetry"])
    assert "did not stay identical" in text and "0.3" in text
