"""Does a zoo model reach the training engine's CPU goal on Fashion-MNIST?

Goal (issue of the training engine): >= 92% test accuracy in <= 3 minutes on 2 CPU cores. This
script trains a registered model with a minimal, self-contained fp32 loop (plain PyTorch, no
cnnlab engine, so it compares *models*; the engine's own recipe is ``bench/bench_fashion_cpu.py``)
and prints test accuracy and wall time after each epoch.

    python bench/models_fashion_mnist_baseline.py --model compact_cnn --epochs 6 --threads 2

Reads the four IDX files of the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist``). Writes a JSON record with ``cnnlab.provenance`` to
``--out`` when given.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.models import create
from cnnlab.provenance import environment

_DIR = Path("/usr/share/datasets/fashion-mnist")


def _idx(path: Path) -> np.ndarray:
    """Read one gzipped IDX file (big-endian header: magic, dims) into a uint8 array."""
    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _load(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = _idx(_DIR / f"{split}-images-idx3-ubyte.gz")
    y = _idx(_DIR / f"{split}-labels-idx1-ubyte.gz")
    x = torch.from_numpy(x.copy()).float().div_(255).sub_(0.2860).div_(0.3530)  # FMNIST mean/std
    return x[:, None], torch.from_numpy(y.astype(np.int64))  # (N, 1, 28, 28), (N,)


@torch.no_grad()
def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = sum((model(xb).argmax(1) == yb).sum().item()
                  for xb, yb in zip(x.split(1000), y.split(1000)))
    return correct / len(y)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="compact_cnn")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1, help="peak one-cycle SGD learning rate")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    xtr, ytr = _load("train")
    xte, yte = _load("t10k")
    model = create(a.model, num_classes=10, in_chans=1, width=a.width)
    steps = a.epochs * (len(ytr) // a.batch)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=steps, pct_start=0.25)
    t0 = time.perf_counter()
    log = []
    for epoch in range(a.epochs):
        model.train()
        perm = torch.randperm(len(ytr))
        for i in range(len(ytr) // a.batch):
            idx = perm[i * a.batch:(i + 1) * a.batch]
            xb = xtr[idx]
            flip = torch.rand(len(idx)) < 0.5  # horizontal flips: FMNIST classes are symmetric
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            loss = F.cross_entropy(model(xb), ytr[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = _accuracy(model, xte, yte)
        log.append({"epoch": epoch + 1, "test_acc": acc, "wall_s": time.perf_counter() - t0})
        print(f"epoch {epoch + 1}: test acc {acc:.4f}, {log[-1]['wall_s']:.1f} s", flush=True)
    if a.out:
        record = {"config": vars(a) | {"out": str(a.out)}, "log": log,
                  "params": sum(p.numel() for p in model.parameters()),
                  "environment": environment("cpu")}
        a.out.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
