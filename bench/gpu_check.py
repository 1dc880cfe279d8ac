"""The prepared GPU check: every GPU goal of cnnlab, measured in one command within 8 minutes.

GPU time is rare and short here (about 15 minutes a session, at most 10 minutes one command), so
this is the one script whoever next has a GPU runs, once, and commits what it wrote. Stages, each
a subprocess with its own time limit (a stage that overruns is killed and recorded as such; the
stages after it still run):

1. ``environment``: GPU name, driver, torch/CUDA versions (``cnnlab.provenance.environment``).
2. ``throughput``: ``bench/bench_train_throughput.py`` (engine vs a plain PyTorch loop on
   MobileNetV2-CIFAR) at several batch sizes and precisions. Goal: cnnlab >= 2x the plain loop.
3. ``accuracy``: the 30-second MobileNetV2 recipe on CIFAR-10. Goal: >= 90% in <= 30 s.
4. ``study``: a reduced CIFAR-10 MobileNet study (``cnnlab study mobilenet``), the whole training
   set for 3 epochs, one seed (three on the reference runs); run again into the same folder,
   it reuses finished runs.

Everything lands in ``OUT``, flat, so that the device tool brings it back (at most 8 files):
``summary.json`` (each stage's command, exit status, seconds, and the goals' numbers),
``gpu_check.log`` (every stage's output), ``throughput.json``, ``accuracy.json``,
``study-results.json`` and ``study-report.md``.

Usage, from the repository root::

    bench/gpu_check.sh OUT                  # on a GPU machine (CIFAR-10 found by cnnlab's search
                                            # order, or --data-dir DIR)
    bench/gpu_check.sh OUT --smoke          # the same code paths on the CPU in seconds (tested)

``--smoke`` runs every stage on the CPU with tiny synthetic or Fashion-MNIST data; its numbers
mean nothing, but every code path, file and summary field is exercised.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "bench_train_throughput.py"

#: (batch size, precision) pairs of the throughput stage; bf16 is the engine's default on CUDA.
THROUGHPUT_CONFIGS = [(512, "bf16"), (1024, "bf16"), (512, "fp32")]
#: Seconds each stage may take on the GPU (throughput: each of its 3 configurations):
#: 25 + 3 x 60 + 75 + 190 = 470 s, inside the 8-minute goal.
LIMITS_S = {"environment": 25, "throughput": 60, "accuracy": 75, "study": 190}
#: The 30-second recipe (bench_train_throughput's documented accuracy settings).
ACCURACY_ARGS = ["--mode", "accuracy", "--epochs", "20", "--lr", "0.4", "--tta"]
#: The reduced study: the whole CIFAR-10 training set, 3 epochs per run, one seed.
STUDY_ARGS = ["--dataset", "cifar10", "--budget", "standard", "--epochs", "3", "--seeds", "1",
              "--device", "cuda"]


def _run(name: str, cmd: list[str], limit_s: float, log, env: dict[str, str]) -> dict:
    """Runs one stage, appends its output to the log, returns its record (never raises)."""
    log.write(f"\n===== {name}: {' '.join(cmd)} (limit {limit_s:.0f} s)\n")
    log.flush()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                              timeout=limit_s)
        rc, timed_out = proc.returncode, False
    except subprocess.TimeoutExpired:
        rc, timed_out = None, True
    seconds = time.perf_counter() - t0
    log.write(f"===== {name}: exit {rc}{' (timed out)' if timed_out else ''}, {seconds:.1f} s\n")
    log.flush()
    return {"command": cmd, "exit": rc, "timed_out": timed_out, "seconds": round(seconds, 1)}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _throughput(summary: dict, py: str, data: list[str], smoke: list[str], tmp: Path, out: Path,
                limit_s: float, log, env: dict[str, str]) -> None:
    """Engine vs plain loop at each of THROUGHPUT_CONFIGS -> throughput.json and the ratios."""
    runs = []
    for batch, precision in THROUGHPUT_CONFIGS:
        name = f"throughput_b{batch}_{precision}"
        record = tmp / f"{name}.json"
        record.unlink(missing_ok=True)  # never report an earlier check's numbers
        cmd = [py, str(BENCH), "--mode", "throughput", "--batch-size", str(batch),
               "--out", str(record), *data, *smoke]
        if precision == "fp32":
            cmd.append("--no-amp")
        summary["stages"][name] = _run(name, cmd, limit_s, log, env)
        rec = _read_json(record)
        if rec is not None:
            # the asked configuration; the record's own batch_size is what ran (--smoke shrinks it)
            runs.append({**rec, "config": f"b{batch}_{precision}"})
    (out / "throughput.json").write_text(json.dumps(runs, indent=2, default=str))
    summary["goals"]["throughput_ratio_vs_plain_loop"] = {
        "goal": ">= 2", "measured": {r["config"]: r["throughput"]["ratio"]
                                     for r in runs if "throughput" in r}}


def _accuracy(summary: dict, py: str, data: list[str], smoke: list[str], out: Path,
              limit_s: float, log, env: dict[str, str]) -> None:
    """The 30-second MobileNetV2 recipe -> accuracy.json and its goal."""
    record = out / "accuracy.json"
    record.unlink(missing_ok=True)
    summary["stages"]["accuracy"] = _run(
        "accuracy", [py, str(BENCH), *ACCURACY_ARGS, "--out", str(record), *data, *smoke],
        limit_s, log, env)
    acc = (_read_json(record) or {}).get("accuracy", {})
    summary["goals"]["mobilenet_v2_cifar10_accuracy_in_time"] = {
        "goal": ">= 0.90 test accuracy in <= 30 s of training",
        "test_accuracy": acc.get("test_accuracy"), "train_time_s": acc.get("train_time_s")}


def _study(summary: dict, smoke: bool, py: str, data: list[str], tmp: Path, out: Path,
           limit_s: float, log, env: dict[str, str]) -> None:
    """The reduced CIFAR-10 MobileNet study -> study-results.json, study-report.md."""
    study_dir = tmp / "study"
    study_args = (["--dataset", "fashion-mnist", "--budget", "quick", "--subset", "128",
                   "--epochs", "1", "--seeds", "1", "--device", "cpu", "--no-speed",
                   "--threads", "1"] if smoke else STUDY_ARGS)
    stage = summary["stages"]["study"] = _run(
        "study", [py, "-m", "cnnlab", "study", "mobilenet", *study_args, *data, "--quiet",
                  "--out", str(study_dir)],
        limit_s, log, env)
    for src, dst in (("results.json", "study-results.json"), ("report.md", "study-report.md")):
        if (study_dir / src).is_file():
            shutil.copyfile(study_dir / src, out / dst)
    summary["goals"]["cifar10_study_minutes"] = {
        "goal": "the whole CIFAR-10 study in <= 10 min (this is a reduced one: 3 epochs; a "
                "stage that timed out resumes from its finished runs when run again)",
        "seconds": stage["seconds"], "finished": stage["exit"] == 0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="folder for summary.json, the log and the JSON records")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny data, seconds")
    p.add_argument("--data-dir", help="where CIFAR-10 is (default: cnnlab's search order)")
    p.add_argument("--only", default="environment,throughput,accuracy,study",
                   help="comma-separated stages to run (default: all four)")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "cnnlab-gpu-check",
                   help="scratch folder for the per-stage records and the study's run folders "
                        "(kept out of OUT, which the device tool brings back only 8 files of)")
    args = p.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(LIMITS_S)
    if unknown or not only:
        p.error(f"--only: unknown stage(s) {', '.join(sorted(unknown)) or '(none given)'}; "
                f"choose from {', '.join(LIMITS_S)}")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    py = sys.executable
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    smoke = ["--smoke"] if args.smoke else []
    # On the CPU the limits only guard against a hang; the smoke stages take seconds.
    limit = (lambda name: 300.0) if args.smoke else LIMITS_S.__getitem__
    summary: dict = {"smoke": args.smoke, "stages": {}, "goals": {}}
    started = time.perf_counter()
    tmp = args.work
    tmp.mkdir(parents=True, exist_ok=True)
    with open(out / "gpu_check.log", "w") as log:
        stages = summary["stages"]
        if "environment" in only:
            stages["environment"] = _run(
                "environment",
                [py, "-c", "import json, torch; from cnnlab.provenance import environment; "
                 "print(json.dumps(environment(torch.device('cuda' if torch.cuda.is_available()"
                 " else 'cpu')), default=str))"],
                limit("environment"), log, env)
        if "throughput" in only:
            _throughput(summary, py, data, smoke, tmp, out, limit("throughput"), log, env)
        if "accuracy" in only:
            _accuracy(summary, py, data, smoke, out, limit("accuracy"), log, env)
        if "study" in only:
            _study(summary, args.smoke, py, data, tmp, out, limit("study"), log, env)
        summary["total_seconds"] = round(time.perf_counter() - started, 1)

    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    failed = [name for name, s in summary["stages"].items() if s["exit"] != 0]
    print(f"gpu check: {len(summary['stages']) - len(failed)} of {len(summary['stages'])} stages "
          f"ran in {summary['total_seconds']:.0f} s; summary in {out / 'summary.json'}"
          + (f"; failed or timed out: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
