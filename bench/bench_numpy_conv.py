"""Speed of cnnlab.numpy_ref's vectorized conv2d (forward + backward) against PyTorch CPU float64.

Both run on the same float64 inputs with the same number of threads (torch.set_num_threads and
threadpoolctl for NumPy's BLAS). Each configuration is timed best-of-``--repeats``, the two
implementations alternating so that load from other processes hits both alike; the ratio
ours/torch is what counts (< 1 means we are faster). Results are checked against each other
before timing, so a fast wrong answer cannot pass.

Goal (issue 2): ratio <= 1 for 3x3 stride 1, <= 2 for the others, at N=16, C=K=32, 32x32.

    python bench/bench_numpy_conv.py                 # the sweep, all cores
    python bench/bench_numpy_conv.py --threads 1 --repeats 10 --json runs/bench-conv.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

from cnnlab.numpy_ref import conv2d_backward, conv2d_forward
from cnnlab.provenance import environment

# name, kernel, stride, padding, dilation, groups (None: depthwise, groups = C)
SWEEP = [
    ("3x3 stride 1", 3, 1, 1, 1, 1),
    ("3x3 stride 2", 3, 2, 1, 1, 1),
    ("3x3 dilation 2", 3, 1, 2, 2, 1),
    ("depthwise 3x3", 3, 1, 1, 1, None),
    ("1x1", 1, 1, 0, 1, 1),
]


def _best_of_interleaved(ours, theirs, repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` seconds for each, alternating the two so that a change in machine
    load during the run hits both alike."""
    ours(), theirs()  # warm-up: allocations, BLAS and OpenMP thread start-up
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for i, fn in enumerate((ours, theirs)):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best[0], best[1]


def _pair(x, w, b, dout, stride, padding, dilation, groups):
    """The two forward+backward passes to time, on the same float64 inputs."""
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    doutt = torch.tensor(dout)

    def ours():
        out, cache = conv2d_forward(x, w, b, stride, padding, dilation, groups)
        return (out, *conv2d_backward(dout, cache))

    def theirs():
        xt.grad = wt.grad = bt.grad = None
        out = F.conv2d(xt, wt, bt, stride, padding, dilation, groups)
        out.backward(doutt)
        return (out, xt.grad, wt.grad, bt.grad)

    return ours, theirs


def run(n: int, c: int, size: int, repeats: int, threads: int) -> list[dict]:
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    rows = []
    for name, k, stride, padding, dilation, groups in SWEEP:
        groups = c if groups is None else groups
        x = rng.standard_normal((n, c, size, size))
        w = rng.standard_normal((c, c // groups, k, k))
        b = rng.standard_normal(c)
        out, _ = conv2d_forward(x, w, b, stride, padding, dilation, groups)
        dout = rng.standard_normal(out.shape)
        ours, theirs = _pair(x, w, b, dout, stride, padding, dilation, groups)
        with threadpool_limits(limits=threads):
            for a, ref in zip(ours(), theirs(), strict=True):
                np.testing.assert_allclose(a, ref.detach().numpy(), rtol=1e-9, atol=1e-9)
            t_ours, t_torch = _best_of_interleaved(ours, theirs, repeats)
        rows.append(
            {
                "config": name,
                "ours_ms": t_ours * 1e3,
                "torch_ms": t_torch * 1e3,
                "ratio": t_ours / t_torch,
            }
        )
        print(
            f"{name:16s} ours {t_ours * 1e3:8.2f} ms   torch {t_torch * 1e3:8.2f} ms   "
            f"ours/torch {t_ours / t_torch:5.2f}",
            flush=True,
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=16, help="batch size")
    p.add_argument("--channels", type=int, default=32, help="C = K")
    p.add_argument("--size", type=int, default=32, help="H = W")
    p.add_argument("--repeats", type=int, default=7, help="best of this many timed runs")
    p.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="threads for both torch and NumPy's BLAS",
    )
    p.add_argument("--json", type=Path, help="also save the results with their provenance here")
    a = p.parse_args()
    print(
        f"N={a.n}, C=K={a.channels}, {a.size}x{a.size}, float64, forward+backward, "
        f"{a.threads} threads, best of {a.repeats}; load average {os.getloadavg()[0]:.2f}"
    )
    rows = run(a.n, a.channels, a.size, a.repeats, a.threads)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(a).items()},
                    "results": rows,
                    "environment": environment(),
                },
                indent=2,
            )
        )
        print(f"saved {a.json}")


if __name__ == "__main__":
    main()
