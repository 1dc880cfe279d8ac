"""Both studies give the same per-run metrics as before the port to the study framework.

The pre-port code (commit fbf34fc) is extracted with ``git archive`` into a temporary folder and
the same tiny plan runs with it and with the current code, each in its own process with one torch
thread, on the same machine. Where the plan is unchanged (the framework's extra reference seeds are
switched off) every run's metrics must agree: the same code path on the same machine and thread
count is bit-identical in practice; the tolerance 1e-6 only allows for nothing else.
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

PRE_PORT = "fbf34fc"
REPO = Path(__file__).resolve().parents[2]
FMNIST = Path("/usr/share/datasets/fashion-mnist")
TOL = 1e-6

_MOBILENET = """
import dataclasses, json, sys, torch
torch.set_num_threads(1)
from cnnlab.studies.mobilenet import StudyConfig, run_study
kw = dict(out=sys.argv[1], subset=100, epochs=1, roles=("v1", "v2"), alphas=(1.0, 0.5),
          rhos=(1.0,), measure_speed=False, quiet=True, device="cpu")
if "reference_seeds" in {f.name for f in dataclasses.fields(StudyConfig)}:
    kw["reference_seeds"] = 1  # the pre-port plan
run_study(StudyConfig(**kw))
"""

_DYNAMICS = """
import dataclasses, sys, torch
torch.set_num_threads(1)
from cnnlab.studies.dynamics import BUDGETS, run_study
tiny = dict(init_depth=4, init_nets=1, init_batch=2, subset=200, sym_depth=8, flow_depth=8,
            depths=(8,), epochs=1, log_points=5)
if "noise_seeds" in {f.name for f in dataclasses.fields(BUDGETS["smoke"])}:
    tiny["noise_seeds"] = 1  # the pre-port plan
run_study(sys.argv[1], data_dir=sys.argv[2], budget=dataclasses.replace(BUDGETS["smoke"], **tiny),
          device="cpu", log=lambda line: None)
"""


@pytest.fixture(scope="module")
def pre_port_src(tmp_path_factory):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("git history unavailable: cannot extract the pre-port code")
    tar = tmp_path_factory.mktemp("preport") / "src.tar"
    done = subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(tar), PRE_PORT, "src"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"commit {PRE_PORT} unavailable in this checkout: {done.stderr.strip()}")
    with tarfile.open(tar) as t:
        t.extractall(tar.parent, filter="data")
    return tar.parent / "src"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One decoded-data cache for all four processes (decoding is most of a tiny run)."""
    return tmp_path_factory.mktemp("cache")


def _run(script: str, src: Path, out: Path, cache: Path) -> dict[str, dict]:
    env = {**os.environ, "PYTHONPATH": str(src), "CNNLAB_CACHE": str(cache)}
    subprocess.run([sys.executable, "-c", script, str(out), str(FMNIST)], env=env, check=True,
                   capture_output=True, text=True)
    return {p.parent.name: json.loads(p.read_text()) for p in out.glob("runs/*/metrics.json")}


def _numbers(metrics: dict) -> dict[str, float]:
    out = {"test_accuracy": metrics["test_accuracy"], "test_loss": metrics.get("test_loss")}
    for h in metrics["history"]:
        for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            out[f"epoch{h['epoch']}_{k}"] = h.get(k)
    return out


@pytest.mark.slow
@pytest.mark.skipif(not FMNIST.is_dir(), reason="needs the Debian package dataset-fashion-mnist")
@pytest.mark.parametrize("script", [_MOBILENET, _DYNAMICS], ids=["mobilenet", "dynamics"])
def test_per_run_metrics_unchanged_by_the_port(pre_port_src, cache, tmp_path, script):
    old = _run(script, pre_port_src, tmp_path / "old", cache)
    new = _run(script, REPO / "src", tmp_path / "new", cache)
    assert old and set(new) == set(old)  # the same plan
    for key in old:
        a, b = _numbers(old[key]), _numbers(new[key])
        assert a.keys() == b.keys(), key
        for k in a:
            if a[k] is None:
                assert b[k] is None, (key, k)
            else:
                assert b[k] == pytest.approx(a[k], abs=TOL), (key, k)
