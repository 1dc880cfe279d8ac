"""The prepared GPU check runs its stages on the CPU (``--smoke``) and writes what it promises.

Its numbers mean nothing on the CPU; what is checked is that every stage runs, that the summary
holds each goal's fields, and that nothing lands in OUT beyond the files the device tool brings
back (at most 8, flat). The study stage is the ``cnnlab study mobilenet`` command that
tests/studies covers; it is left out here to keep the suite short (it trains 24 runs).
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_runs_every_stage_and_summarises(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), str(out), "--smoke",
         "--only", "environment,throughput,accuracy", "--work", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["smoke"] is True
    assert set(summary["stages"]) == {"environment", "throughput_b512_bf16",
                                      "throughput_b1024_bf16", "throughput_b512_fp32", "accuracy"}
    assert all(s["exit"] == 0 and not s["timed_out"] for s in summary["stages"].values())
    ratios = summary["goals"]["throughput_ratio_vs_plain_loop"]["measured"]
    assert set(ratios) == {"b512_bf16", "b1024_bf16", "b512_fp32"}
    assert all(r > 0 for r in ratios.values())
    acc = summary["goals"]["mobilenet_v2_cifar10_accuracy_in_time"]
    assert 0 <= acc["test_accuracy"] <= 1 and acc["train_time_s"] > 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["accuracy.json", "gpu_check.log", "summary.json", "throughput.json"]
    assert "===== accuracy: exit 0" in (out / "gpu_check.log").read_text()


def test_gpu_check_refuses_an_unknown_stage(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), str(tmp_path),
                           "--only", "warp"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown stage(s) warp" in proc.stderr
