"""How long the full-scale tune goals would take here: times training steps (batch 32, random
inputs, Adam) of random course-space models and scales them to a 54,000-image epoch.

    PYTHONPATH=src python bench/tune_full_estimate.py [--configs 10] [--threads 2]

An estimate, not a goal: it prints seconds per epoch for each configuration and their median and
mean; multiply by the epochs a search spends (``docs/tune-goals-mid-epyc/README.md``).
"""
from __future__ import annotations

import argparse
import statistics
import time

import optuna
import torch

from cnnlab import models
from cnnlab.studies._tune_space import load_space


def seconds_per_step(model: torch.nn.Module, batch: int, steps: int) -> float:
    """Mean wall seconds of one training step (forward, backward, Adam) after 3 warm-up steps."""
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="examples/tune/course_space.yaml")
    ap.add_argument("--configs", type=int, default=10)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=54000, help="training images per epoch")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(args.space)
    batch = int(space.fixed.get("batch_size", 32))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=args.seed))
    per_epoch = []
    for i in range(args.configs):
        _, model_kw = space.split(space.suggest(study.ask()))
        model = models.create(space.model, num_classes=10, in_chans=1, **model_kw)
        s = seconds_per_step(model, batch, args.steps)
        per_epoch.append(s * args.images / batch)
        print(f"{i} filters {model_kw.get('filters')} kernel {model_kw.get('kernel')} "
              f"units {model_kw.get('units')}: {s * 1000:.1f} ms/step, "
              f"{per_epoch[-1]:.0f} s/epoch", flush=True)
    print(f"s/epoch over {len(per_epoch)} configurations: "
          f"median {statistics.median(per_epoch):.0f}, mean {statistics.mean(per_epoch):.0f}, "
          f"range {min(per_epoch):.0f}-{max(per_epoch):.0f}")


if __name__ == "__main__":
    main()
