"""GPU goals of the training engine, measured side by side in one run.

1. Throughput (``--mode throughput``, the default): a plain training loop against cnnlab's engine,
   same model size, batch, precision and augmentation, same epochs, in one process:

   - plain loop: torchvision ``mobilenet_v2`` with CIFAR strides (``features[0][0].stride = 1``
     and the first downsampling stage, ``features[2]``, at stride 1), bf16 autocast,
     channels_last, batch 512, SGD Nesterov + one-cycle. The data stays on the host as uint8;
     every step gathers a batch there, augments it there (random translate 4 px + flip, the same
     batched ops cnnlab uses, run on CPU tensors as a DataLoader would), copies it to the GPU,
     and reads ``loss.item()`` / the accuracy for logging, as textbook loops do.
   - cnnlab: ``cnnlab.engine.train`` on ``mobilenet_v2_cifar`` (the same architecture), data
     resident on the GPU as uint8, augmentation on the GPU, no per-step host syncs.

   Prints images/s of each (mean over the epochs after the first, which pays cuDNN autotuning
   and compilation) and the ratio. Goal: cnnlab >= 2x the plain loop.

2. Accuracy in time (``--mode accuracy``): cnnlab trains ``mobilenet_v2_cifar`` on the CIFAR-10
   archive with a fast recipe and reports test accuracy and pure training time. Goal: >= 90% in
   <= 30 s of training on one H100 (``../shared/data/cifar10-jpg.tar.gz``).

Run on a GPU machine from the repository root::

    python bench/bench_train_throughput.py                           # throughput, 3 epochs each
    python bench/bench_train_throughput.py --compile max-autotune-no-cudagraphs
    python bench/bench_train_throughput.py --mode accuracy --epochs 20 --lr 0.4 --tta
    python bench/bench_train_throughput.py --smoke                   # CPU, seconds, synthetic data

``--smoke`` runs both modes on the CPU with tiny random CIFAR-shaped data (no files needed), so
the script is tested offline; its numbers mean nothing. Results are printed and, with ``--out``,
saved as JSON with ``cnnlab.provenance.environment``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from cnnlab.data import CIFAR10_CLASSES, Augment, Dataset, load_dataset, make_splits
from cnnlab.engine import TrainConfig, lr_factor, train
from cnnlab.provenance import environment


def torchvision_mobilenet_v2_cifar(num_classes: int = 10, width: float = 1.0) -> torch.nn.Module:
    """torchvision's MobileNetV2 with the usual CIFAR strides (32x32 inputs)."""
    model = torchvision.models.mobilenet_v2(num_classes=num_classes, width_mult=width)
    model.features[0][0].stride = (1, 1)  # stem
    model.features[2].conv[1][0].stride = (1, 1)  # depthwise conv of the first stride-2 block
    return model


def synthetic_cifar(n_train: int = 128, n_test: int = 64) -> Dataset:
    """Random CIFAR-shaped data for --smoke (the code path, not the numbers)."""
    rng = np.random.default_rng(0)
    return Dataset(name="cifar10", classes=CIFAR10_CLASSES,
                   train_images=rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
                   train_labels=np.arange(n_train) % 10,
                   test_images=rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
                   test_labels=np.arange(n_test) % 10, mean=(0.49, 0.48, 0.45),
                   std=(0.25, 0.24, 0.26), source="synthetic")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(ds: Dataset, device: torch.device, epochs: int, batch: int, lr: float,
               amp: bool, width: float = 1.0, resolution: float = 1.0) -> dict:
    """The textbook baseline: host-resident data and augmentation, per-step .item() logging."""
    torch.manual_seed(0)
    # host tensors (N, C, H, W) uint8
    splits = make_splits(ds, val_fraction=0, resolution=resolution, device="cpu")
    x_host, y_host = splits.train_images, splits.train_labels
    aug = Augment.parse("default", "cifar10")
    model = torchvision_mobilenet_v2_cifar(width=width).to(device,
                                                     memory_format=torch.channels_last)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=lr, momentum=0.9, nesterov=True)
    steps = len(y_host) // batch
    total = steps * epochs
    gen = torch.Generator().manual_seed(0)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if amp
                else contextlib.nullcontext())
    epoch_rates = []
    step = 0
    for _ in range(epochs):
        model.train()
        _sync(device)
        t0 = time.perf_counter()
        perm = torch.randperm(len(y_host), generator=gen)
        running_loss, correct = 0.0, 0
        for k in range(steps):
            idx = perm[k * batch:(k + 1) * batch]
            x = aug(x_host[idx], splits.mean, splits.std, gen)  # on the CPU
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            y = y_host[idx].to(device)
            for g in opt.param_groups:
                g["lr"] = lr * lr_factor(step, total, "onecycle", 0.2)
            with autocast:
                out = model(x)
            loss = F.cross_entropy(out.float(), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running_loss += loss.item()  # the per-step logging that syncs host and GPU
            correct += (out.argmax(1) == y).sum().item()
            step += 1
        _sync(device)
        epoch_rates.append(steps * batch / (time.perf_counter() - t0))
    return {"name": "plain loop (torchvision mobilenet_v2, host data)",
            "epoch_images_per_s": epoch_rates,
            "train_accuracy_last_epoch": correct / (steps * batch)}


def engine_run(ds: Dataset, device: torch.device, args, *, epochs: int) -> dict:
    cfg = TrainConfig(model="mobilenet_v2_cifar", dataset="cifar10", epochs=epochs,
                      width=args.width, resolution=args.resolution, batch_size=args.batch_size,
                      lr=args.lr, label_smoothing=args.label_smoothing,
                      weight_decay=args.weight_decay, val_fraction=0, ema=args.ema, tta=args.tta,
                      compile=args.compile or "", device=str(device), amp=args.amp,
                      channels_last=args.amp, seed=args.seed, quiet=True)
    result = train(cfg, dataset=ds, log=not args.smoke)
    rates = [r["images_per_s"] for r in result.history]
    return {"name": "cnnlab engine (mobilenet_v2_cifar, GPU-resident data)"
                    + (f", compile={args.compile}" if args.compile else ""),
            "epoch_images_per_s": rates, "test_accuracy": result.test_accuracy,
            "train_time_s": result.train_time_s, "wall_time_s": result.wall_time_s,
            "config": cfg.to_dict()}


def _steady(rates: list[float]) -> float:
    """Mean images/s over the epochs after the first (warm-up) one."""
    tail = rates[1:] or rates
    return float(np.mean(tail))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("throughput", "accuracy", "both"), default="throughput")
    p.add_argument("--epochs", type=int, help="default: 3 (throughput), 20 (accuracy)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--width", type=float, default=1.0, help="MobileNetV2 width multiplier")
    p.add_argument("--resolution", type=float, default=1.0, help="resolution multiplier rho")
    p.add_argument("--lr", type=float, default=0.4, help="peak one-cycle lr (SGD Nesterov)")
    p.add_argument("--label-smoothing", type=float, default=0.2)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--ema", type=float, default=0.0)
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation (accuracy)")
    p.add_argument("--compile", default="", help="torch.compile mode for cnnlab's model")
    p.add_argument("--no-amp", dest="amp", action="store_false")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="CIFAR-10 location (default: cnnlab's search order)")
    p.add_argument("--device", default="auto")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny synthetic data, seconds")
    p.add_argument("--out", type=Path, help="write a JSON record here")
    args = p.parse_args()

    if args.smoke:
        device = torch.device("cpu")
        ds = synthetic_cifar()
        args.batch_size, args.width, args.resolution, args.amp = 32, 0.25, 0.5, False
        torch.set_num_threads(1)
    else:
        from cnnlab.engine import resolve_device

        device = resolve_device(args.device)
        ds = load_dataset("cifar10", data_dir=args.data_dir)
    record: dict = {"device": environment(device)["device"], "batch_size": args.batch_size}
    if args.mode in ("throughput", "both"):
        epochs = 2 if args.smoke else (args.epochs or 3)
        plain = plain_loop(ds, device, epochs, args.batch_size, args.lr, args.amp, args.width,
                           args.resolution)
        ours = engine_run(ds, device, args, epochs=epochs)
        ratio = _steady(ours["epoch_images_per_s"]) / _steady(plain["epoch_images_per_s"])
        record["throughput"] = {"plain": plain, "cnnlab": ours, "ratio": ratio}
        print(f"\ntraining throughput, batch {args.batch_size}, {record['device']}:")
        for r in (plain, ours):
            print(f"  {r['name']:62s} {_steady(r['epoch_images_per_s']):10,.0f} images/s")
        print(f"  ratio cnnlab / plain: {ratio:.2f}x (goal >= 2x)")
    if args.mode in ("accuracy", "both"):
        epochs = 1 if args.smoke else (args.epochs or 20)
        ours = engine_run(ds, device, args, epochs=epochs)
        record["accuracy"] = ours
        ok = ours["test_accuracy"] >= 0.90 and ours["train_time_s"] <= 30
        print(f"\nCIFAR-10 accuracy in time ({epochs} epochs, {record['device']}): test accuracy "
              f"{100 * ours['test_accuracy']:.2f}% after {ours['train_time_s']:.1f} s of training "
              f"({ours['wall_time_s']:.1f} s wall); goal >= 90% in <= 30 s"
              f"{': met' if ok else ''}")
    record["environment"] = environment(device)
    if args.out:
        args.out.write_text(json.dumps(record, indent=2, default=str))
    assert math.isfinite(record.get("throughput", {}).get("ratio", 1.0))


if __name__ == "__main__":
    main()
