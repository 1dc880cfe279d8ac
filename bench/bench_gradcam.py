"""Speed of cnnlab's batched Grad-CAM against pytorch-grad-cam on torchvision ResNet-18, 224x224.

Both explain the same model (random weights, eval mode) on the same images and per-image target
classes at the same layer (``layer4``, the output of the last residual block: no in-place op
follows it, so pytorch-grad-cam's maps are not corrupted and the two must agree). Each call
returns upsampled, normalised maps ``(N, 224, 224)``. The maps are compared first (max absolute
difference printed; the run fails above 1e-4), then the two are timed alternately, median of
``--repeats`` after one warm-up each. The ratio ours/theirs is what counts (< 1: we are faster).

Why ours can be faster: pytorch-grad-cam calls ``loss.backward()``, a full backward pass to the
first layer that also fills every parameter's ``.grad``; cnnlab asks ``torch.autograd.grad`` for
the gradient at the target layer only, and records no graph below it.

Goal (issue 7): ratio <= 1 at batch 64 (``--batch 64``; the default 8 suits a 2-core CPU).

    python bench/bench_gradcam.py                       # batch 8, CPU
    python bench/bench_gradcam.py --batch 64 --device cuda --json runs/bench-gradcam.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from pytorch_grad_cam import GradCAM as ReferenceGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torchvision.models import resnet18

from cnnlab.explain import GradCAM
from cnnlab.provenance import environment


def _timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def run(batch: int, size: int, repeats: int, device: str, threads: int | None) -> dict:
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(0)
    model = resnet18(num_classes=1000).to(dev).eval()
    x = torch.randn(batch, 3, size, size, device=dev)
    targets = torch.randint(0, 1000, (batch,)).tolist()
    reference_targets = [ClassifierOutputTarget(t) for t in targets]

    ours_cam = GradCAM(model, "layer4")
    theirs_cam = ReferenceGradCAM(model, [model.layer4])

    def ours() -> np.ndarray:
        return ours_cam.compute(x, targets).cpu().numpy()

    def theirs() -> np.ndarray:
        return theirs_cam(x, reference_targets)

    diff = float(np.abs(ours() - theirs()).max())  # also the warm-up of both
    if diff > 1e-4:
        raise SystemExit(f"maps disagree: max |ours - pytorch-grad-cam| = {diff:.3g} > 1e-4")
    t_ours, t_theirs = [], []
    for _ in range(repeats):  # alternate, so that load changes hit both alike
        t_ours.append(_timed(ours, dev))
        t_theirs.append(_timed(theirs, dev))
    theirs_cam.activations_and_grads.release()
    ours_ms, theirs_ms = statistics.median(t_ours) * 1e3, statistics.median(t_theirs) * 1e3
    return {
        "model": "torchvision resnet18",
        "layer": "layer4",
        "batch": batch,
        "size": size,
        "repeats": repeats,
        "ours_ms": ours_ms,
        "pytorch_grad_cam_ms": theirs_ms,
        "ratio": ours_ms / theirs_ms,
        "max_abs_diff": diff,
        "ours_ms_all": [t * 1e3 for t in t_ours],
        "pytorch_grad_cam_ms_all": [t * 1e3 for t in t_theirs],
        "environment": environment(dev),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="images per call (issue goal: 64)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    r = run(args.batch, args.size, args.repeats, args.device, args.threads)
    print(
        f"Grad-CAM, {r['model']} at {r['layer']}, batch {r['batch']}, {r['size']}x{r['size']}, "
        f"{r['environment']['device']}"
    )
    print(f"  max |ours - pytorch-grad-cam| = {r['max_abs_diff']:.2e}")
    print(f"  cnnlab           {r['ours_ms']:9.1f} ms  (median of {r['repeats']})")
    print(f"  pytorch-grad-cam {r['pytorch_grad_cam_ms']:9.1f} ms")
    print(
        f"  ratio ours/theirs {r['ratio']:.3f}  "
        f"({'OK' if r['ratio'] <= 1 else 'SLOWER'}: goal <= 1)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
