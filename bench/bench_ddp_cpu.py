"""Data-parallel training on the CPU: 2 processes x 1 thread against 1 process x 2 threads.

The same ``cnnlab train`` run (same model, data, global batch, epochs) in three shapes, started
one after the other as fresh processes, the shapes interleaved over ``--repeats`` rounds:

- ``1x1``: one process, ``--threads 1`` (the unit of the efficiencies below);
- ``1x2``: one process, ``--threads 2`` (intra-op threads: OpenMP inside each op);
- ``2x1``: ``--nproc-per-node 2 --threads 1`` (torchrun, gloo; each process trains on half of
  every global batch and DistributedDataParallel averages the gradients).

images/s is the engine's own measure (training steps only, no start-up, data loading or
evaluation) of the epochs after the first, median over the rounds; the launch column is the
whole command's wall time (Python and torch start-up, torchrun's rendezvous, evaluation, plots).
Scaling efficiency = images/s / (2 x images/s of 1x1): 100% means two cores did twice the work
of one. On a machine shared with other work the numbers are noisy: say so when quoting them.

Run from the repository root (Fashion-MNIST from /usr/share/datasets or --data-dir)::

    python bench/bench_ddp_cpu.py                     # compact_cnn, 12,000 images, 3 epochs
    python bench/bench_ddp_cpu.py --smoke             # seconds of training: checks the path
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"  # this checkout's cnnlab
SHAPES = {"1x1": (1, 1), "1x2": (1, 2), "2x1": (2, 1)}  # processes, threads per process


def run_shape(shape: str, args, out: Path) -> dict:
    procs, threads = SHAPES[shape]
    cmd = [sys.executable, "-m", "cnnlab", "train", "--model", args.model, "--dataset",
           "fashion-mnist", "--subset", str(args.subset), "--epochs", str(args.epochs),
           "--batch-size", str(args.batch_size), "--lr", "0.1", "--augment", "flip",
           "--val-fraction", "0", "--device", "cpu", "--quiet", "--threads", str(threads),
           "--out", str(out), *(["--amp", "--channels-last"] if args.amp else [])]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    if procs > 1:
        cmd += ["--nproc-per-node", str(procs)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{shape} failed ({done.returncode}): {done.stderr[-2000:]}")
    history = json.loads((out / "metrics.json").read_text())["history"]
    timed = history[1:] or history  # the first epoch pays warm-up (allocator, oneDNN kernels)
    images = sum(r["images_per_s"] * r["train_time_s"] for r in timed)
    return {"images_per_s": images / sum(r["train_time_s"] for r in timed), "launch_s": wall,
            "test_accuracy": json.loads((out / "metrics.json").read_text())["test_accuracy"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="compact_cnn")
    p.add_argument("--subset", type=int, default=12000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128, help="global batch (default 128)")
    p.add_argument("--repeats", type=int, default=2, help="rounds over the shapes")
    p.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated subset of "
                                                              f"{list(SHAPES)}")
    p.add_argument("--no-amp", dest="amp", action="store_false",
                   help="float32 NCHW instead of bf16 autocast + channels_last")
    p.add_argument("--data-dir")
    p.add_argument("--smoke", action="store_true", help="1,024 images, 2 epochs, 1 round")
    p.add_argument("--out", type=Path, help="write a JSON record here")
    args = p.parse_args()
    if args.smoke:
        args.subset, args.epochs, args.repeats = 1024, 2, 1
    shapes = args.shapes.split(",")
    unknown = sorted(set(shapes) - set(SHAPES))
    if unknown:
        raise SystemExit(f"unknown shapes {unknown}; choose from {list(SHAPES)}")

    runs: dict[str, list[dict]] = {s: [] for s in shapes}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for shape in shapes if r % 2 == 0 else shapes[::-1]:  # interleaved against drift
                runs[shape].append(run_shape(shape, args, Path(tmp) / f"{shape}-{r}"))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    ips = {s: statistics.median(x["images_per_s"] for x in v) for s, v in runs.items()}
    print(f"{args.model}, {args.subset} Fashion-MNIST images, global batch {args.batch_size}, "
          f"{args.epochs} epochs, {'bf16 + channels_last' if args.amp else 'fp32'}, "
          f"{args.repeats} round(s); load average after: {load:.1f}")
    print(f"{'shape':<6} {'images/s':>9} {'efficiency':>11} {'launch s':>9}  test acc.")
    for s in shapes:
        eff = (f"{ips[s] / (SHAPES[s][0] * SHAPES[s][1] * ips['1x1']):.0%}" if "1x1" in ips
               else "-")
        launch = statistics.median(x["launch_s"] for x in runs[s])
        print(f"{s:<6} {ips[s]:>9,.0f} {eff:>11} {launch:>9.1f}  {runs[s][-1]['test_accuracy']:.4f}")
    if "2x1" in ips and "1x2" in ips:
        print(f"ratio 2 processes x 1 thread / 1 process x 2 threads: {ips['2x1'] / ips['1x2']:.2f}")
    if args.out:
        from cnnlab.provenance import environment

        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                        "runs": runs, "images_per_s": ips, "load_average": load,
                                        "environment": environment()}, indent=2))


if __name__ == "__main__":
    main()
