"""The training benchmarks still run (``--smoke``: CPU, seconds); their numbers are not checked."""

import json
import runpy
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def run_script(name, args, monkeypatch):
    monkeypatch.setattr(sys, "argv", [name, *args])
    runpy.run_path(str(BENCH / name), run_name="__main__")


def test_throughput_bench_smoke(tmp_path, monkeypatch, capsys):
    out = tmp_path / "t.json"
    run_script("bench_train_throughput.py", ["--smoke", "--mode", "both", "--out", str(out)],
               monkeypatch)
    printed = capsys.readouterr().out
    assert "ratio cnnlab / plain" in printed and "CIFAR-10 accuracy in time" in printed
    record = json.loads(out.read_text())
    assert record["throughput"]["ratio"] > 0 and "environment" in record


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="dataset-fashion-mnist not installed")
def test_fashion_cpu_bench_smoke(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    run_script("bench_fashion_cpu.py", ["--smoke", "--threads", "1", "--recipe", "compact_cnn"],
               monkeypatch)
    assert "compact_cnn" in capsys.readouterr().out


def test_unet_cpu_bench_smoke(tmp_path, monkeypatch, capsys):
    out = tmp_path / "u.json"
    run_script("bench_unet_cpu.py", ["--smoke", "--threads", "1", "--out", str(out)], monkeypatch)
    assert "ratio cnnlab / smp" in capsys.readouterr().out
    record = json.loads(out.read_text())
    assert set(record["models"]) == {"cnnlab", "smp"}
    assert all(m["macs"] > 0 and m["images_per_s"] > 0 for m in record["models"].values())
