"""The prepared GPU check (bench/gpu_check.py) runs its stages and writes what it promises.

On the CPU its numbers mean nothing; what is checked is the driver: every stage runs as a
subprocess with its limit, the summary holds each goal's fields taken from the stage's own record,
a stage that fails is reported (exit 1) while the later stages still run, and nothing lands in
OUT beyond the flat files the device tool brings back (at most 8). The benchmark script itself is
covered on the CPU by tests/engine/test_bench.py (``--smoke``) and the study stage by
tests/studies; here a stand-in benchmark records what it was asked, to keep the suite short.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE_BENCH = """
import json, sys
args = sys.argv[1:]
out = args[args.index("--out") + 1]
import os
if "--no-amp" in args and os.path.exists(os.path.join(os.path.dirname(__file__), "fail_fp32")):
    sys.exit(3)
rec = {"asked": args, "throughput": {"ratio": 2.5 if "--no-amp" not in args else 1.5},
       "accuracy": {"test_accuracy": 0.91, "train_time_s": 28.0}}
json.dump(rec, open(out, "w"))
print("fake bench ran", args)
"""


@pytest.fixture
def gpu_check(monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fake(tmp_path, text=FAKE_BENCH):
    bench = tmp_path / "fake_bench.py"
    bench.write_text(text)
    return bench


def test_stages_and_summary_with_a_stand_in_benchmark(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "BENCH", _fake(tmp_path))
    out = tmp_path / "out"
    rc = gpu_check.main([str(out), "--only", "throughput,accuracy", "--work",
                         str(tmp_path / "work"), "--data-dir", "/data/cifar"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["stages"]) == {"throughput_b512_bf16", "throughput_b1024_bf16",
                                      "throughput_b512_fp32", "accuracy"}
    assert summary["goals"]["throughput_ratio_vs_plain_loop"]["measured"] == {
        "b512_bf16": 2.5, "b1024_bf16": 2.5, "b512_fp32": 1.5}
    acc = summary["goals"]["mobilenet_v2_cifar10_accuracy_in_time"]
    assert acc == {"goal": ">= 0.90 test accuracy in <= 30 s of training",
                   "test_accuracy": 0.91, "train_time_s": 28.0}
    runs = json.loads((out / "throughput.json").read_text())
    asked = {r["config"]: r["asked"] for r in runs}
    assert asked["b1024_bf16"][asked["b1024_bf16"].index("--batch-size") + 1] == "1024"
    assert "--no-amp" in asked["b512_fp32"] and "--no-amp" not in asked["b512_bf16"]
    assert all("/data/cifar" in a for a in asked.values())  # --data-dir reaches every stage
    assert sorted(p.name for p in out.iterdir()) == [
        "accuracy.json", "gpu_check.log", "summary.json", "throughput.json"]


def test_a_failing_stage_is_reported_and_the_rest_still_run(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "BENCH", _fake(tmp_path))
    (tmp_path / "fail_fp32").touch()
    out = tmp_path / "out"
    assert gpu_check.main([str(out), "--only", "throughput,accuracy", "--work",
                           str(tmp_path / "work")]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stages"]["throughput_b512_fp32"]["exit"] == 3
    assert summary["stages"]["accuracy"]["exit"] == 0  # ran after the failure
    assert "b512_fp32" not in summary["goals"]["throughput_ratio_vs_plain_loop"]["measured"]


def test_a_stage_past_its_limit_is_killed_and_recorded(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "BENCH", _fake(tmp_path, "import time; time.sleep(60)\n"))
    monkeypatch.setitem(gpu_check.LIMITS_S, "accuracy", 1)
    out = tmp_path / "out"
    assert gpu_check.main([str(out), "--only", "accuracy", "--work", str(tmp_path / "w")]) == 1
    stage = json.loads((out / "summary.json").read_text())["stages"]["accuracy"]
    assert stage["timed_out"] and stage["exit"] is None and stage["seconds"] < 30


def test_smoke_environment_stage_runs_for_real(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), str(out),
                           "--smoke", "--only", "environment", "--work", str(tmp_path / "w")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = (out / "gpu_check.log").read_text()
    assert '"torch"' in log and "===== environment: exit 0" in log


def test_gpu_check_refuses_an_unknown_stage(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), str(tmp_path),
                           "--only", "warp"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown stage(s) warp" in proc.stderr
