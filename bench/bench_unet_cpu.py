"""Training speed of cnnlab's ``unet_mobilenet_v2`` beside smp's ``Unet("mobilenet_v2")``.

Both models are trained with the same plain loop, in one process, on the same random input
(batch ``--batch`` of ``--channels`` x ``--size`` x ``--size`` images, binary targets), with
AdamW and BCE-with-logits: ``--warmup`` steps first (allocator, first-touch costs), then
``--repeats`` rounds of ``--steps`` timed steps, the two models alternating round by round so
that a change of load on a shared machine hits both alike. Reported per model: training
images/s (median over rounds, and the relative half-IQR as its spread), parameters, and the
multiply-accumulates of one forward pass of one image counted by cnnlab's analyzer
(:func:`cnnlab.analysis.analyze`, the graph each model really executes).

The two networks differ in design, which the MACs show: cnnlab's is the course's (TF pix2pix
tutorial) U-Net -- MobileNetV2 tapped at five layers, decoder of ConvTranspose2d(k=3, s=2) +
BN + ReLU at widths 512/256/128/64 and a final transposed conv; smp's decodes from MobileNetV2's
last 1x1 conv with nearest-neighbour upsampling and two 3x3 conv-BN-ReLU per stage at widths
256/128/64/32/16. ``--width``/``--decoder-width`` thin cnnlab's model (smp's stays at its
default) for a CPU.

Run from the repository root (single-threaded on the shared 2-core machine)::

    python bench/bench_unet_cpu.py --threads 1 --out bench/results/unet_cpu_1thread.json
    python bench/bench_unet_cpu.py --smoke      # seconds: the code path, numbers meaningless
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def build(name: str, args) -> torch.nn.Module:
    if name == "cnnlab":
        from cnnlab import models

        return models.create("unet_mobilenet_v2", num_classes=1, in_chans=args.channels,
                             width=args.width, decoder_width=args.decoder_width)
    import segmentation_models_pytorch as smp

    return smp.Unet("mobilenet_v2", encoder_weights=None, in_channels=args.channels, classes=1)


def macs(model: torch.nn.Module, args) -> dict:
    from cnnlab.analysis import analyze

    a = analyze(model, (args.channels, args.size, args.size))
    return {"macs": int(a.totals["total_macs"]), "params": int(a.totals["total_params"])}


def _quantiles(xs: list[float]) -> tuple[float, float]:
    xs = sorted(xs)
    if len(xs) < 2:
        return xs[0], 0.0
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return statistics.median(xs), q[2] - q[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="timed steps per round")
    p.add_argument("--repeats", type=int, default=5, help="rounds per model")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--decoder-width", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for the tests")
    p.add_argument("--out", default=None, help="save the results as JSON here")
    args = p.parse_args()
    if args.smoke:
        args.size, args.batch, args.steps, args.repeats, args.warmup = 64, 2, 1, 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.channels, args.size, args.size, generator=g)
    y = (torch.rand(args.batch, 1, args.size, args.size, generator=g) < 0.3).float()
    names = ("cnnlab", "smp")
    nets = {n: build(n, args).train() for n in names}
    opts = {n: torch.optim.AdamW(nets[n].parameters(), lr=1e-3) for n in names}

    def step(n: str) -> None:
        loss = F.binary_cross_entropy_with_logits(nets[n](x), y)
        opts[n].zero_grad(set_to_none=True)
        loss.backward()
        opts[n].step()

    for n in names:
        for _ in range(args.warmup):
            step(n)
    rates: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.repeats):
        for n in names:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(n)
            rates[n].append(args.steps * args.batch / (time.perf_counter() - t0))
    rows = {}
    for n in names:
        med, iqr = _quantiles(rates[n])
        rows[n] = {"images_per_s": med, "rel_half_iqr": iqr / (2 * med), "rates": rates[n],
                   **macs(nets[n], args)}
    from cnnlab.provenance import environment

    record = {"input": [args.batch, args.channels, args.size, args.size],
              "settings": vars(args), "torch_threads": torch.get_num_threads(),
              "models": rows, "ratio_cnnlab_over_smp":
                  rows["cnnlab"]["images_per_s"] / rows["smp"]["images_per_s"],
              "environment": environment("cpu")}
    print(f"training images/s on {args.batch}x{args.channels}x{args.size}x{args.size}, "
          f"{torch.get_num_threads()} torch thread(s), median of {args.repeats} rounds:")
    for n in names:
        r = rows[n]
        label = "cnnlab unet_mobilenet_v2" if n == "cnnlab" else "smp Unet('mobilenet_v2')"
        print(f"  {label:28s} {r['images_per_s']:8.2f} img/s (+-{r['rel_half_iqr']:.0%})  "
              f"{r['params']:>11,} params  {r['macs'] / 1e6:9.1f} MMACs/image")
    print(f"ratio cnnlab / smp: {record['ratio_cnnlab_over_smp']:.2f}")
    if args.out:
        from cnnlab._io import atomic_write

        atomic_write(Path(args.out), json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
