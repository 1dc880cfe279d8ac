"""Measure, over several seeds, the trained-model outcomes the suite asserts on (not a test).

The suite's thresholds on trained models carry margins taken from these numbers (each test's
comment quotes them). Rerun after changing a trained fixture:

    PYTHONPATH=src python tests/measure_margins.py [--seeds 0,1,2,3,4,5]

Each seed retrains the model; the explanation metrics use the same images and settings as the
tests. Prints one line per seed and a min/max line per quantity.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def explain_outcomes(seed: int) -> dict[str, float]:
    from cnnlab.explain import GradCAM
    from cnnlab.explain.faithfulness import deletion_insertion
    from cnnlab.explain.sanity import cascading_randomization

    conf = _load(HERE / "explain" / "conftest.py", "explain_conftest")
    model, x, _, accuracy = conf.train_fmnist(seed)
    out = {"fmnist_accuracy": accuracy}
    xs = x[:64]
    res = deletion_insertion(model, xs, {"gradcam": GradCAM(model).compute(xs)}, steps=16)
    d_del = np.array(res.auc["deletion"]["random"]) - np.array(res.auc["deletion"]["gradcam"])
    d_ins = np.array(res.auc["insertion"]["gradcam"]) - np.array(res.auc["insertion"]["random"])
    for key, d in (("deletion_gain", d_del), ("insertion_gain", d_ins)):
        out[f"{key}_mean"] = float(d.mean())
        out[f"{key}_t"] = float(d.mean() / (d.std(ddof=1) / np.sqrt(len(d))))
    cascade = cascading_randomization(model, x[:16], seed=0)
    gradcam = np.array(cascade.mean("gradcam", "abs"))
    guided = np.array(cascade.mean("guided", "abs"))
    signed = np.array(cascade.mean("guided", "signed"))
    ssim_g = np.array(cascade.mean("gradcam", "abs", "ssim"))
    ssim_b = np.array(cascade.mean("guided", "abs", "ssim"))
    out.update(
        sanity_spearman_gap=float(guided[1:].mean() - gradcam[1:].mean()),
        sanity_signed_gap=float(signed[1:].mean() - gradcam[1:].mean()),
        sanity_ssim_gap=float(ssim_b[1:].mean() - ssim_g[1:].mean()),
        sanity_gradcam_max_abs=float(abs(gradcam[1:]).max()),
        sanity_guided_first=float(guided[1]),
    )
    return out


def engine_outcomes(seed: int) -> dict[str, float]:
    from cnnlab.data import load_dataset
    from cnnlab.engine import TrainConfig, train

    conf = _load(HERE / "engine" / "conftest.py", "engine_conftest")
    base = TrainConfig(model="tinynet", dataset="fashion-mnist", epochs=4, batch_size=32, lr=0.1,
                       augment="none", ema=0.0, val_fraction=0.2, device="cpu", quiet=True,
                       seed=seed)
    toy = train(base, model=conf.tiny_model(seed), dataset=conf.toy_dataset(), log=False)
    out = {"toy_accuracy": toy.test_accuracy}
    cfg = TrainConfig(model="simple_cnn", dataset="fashion-mnist", width=0.5, subset=2000,
                      epochs=2, batch_size=64, lr=0.1, device="cpu", quiet=True, seed=seed)
    real = train(cfg, dataset=load_dataset("fashion-mnist", cache_dir="/tmp/i11_margins"),
                 log=False)
    out["real_fmnist_accuracy"] = real.test_accuracy
    out["real_fmnist_loss_drop"] = real.history[0]["train_loss"] - real.history[-1]["train_loss"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2,3,4,5")
    p.add_argument("--only", choices=("explain", "engine"), default=None)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: dict[int, dict[str, float]] = {}
    for seed in seeds:
        row: dict[str, float] = {}
        if args.only in (None, "explain"):
            row.update(explain_outcomes(seed))
        if args.only in (None, "engine"):
            row.update(engine_outcomes(seed))
        rows[seed] = row
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
    for key in rows[seeds[0]]:
        values = [rows[s][key] for s in seeds]
        print(f"{key}: min {min(values):.4f} max {max(values):.4f} "
              f"mean {np.mean(values):.4f} over seeds {args.seeds}")


if __name__ == "__main__":
    main()
