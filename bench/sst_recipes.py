"""SST-5 training recipes, trained through the engine's text task (what the sentiment study runs).

    python bench/sst_recipes.py --model kim_cnn --train-on phrases --epochs 4 --seeds 0,1,2

For each seed: trains on the training sentences (or every training phrase) with
:func:`cnnlab.engine.train` (length-bucketed batches, Adam, early stopping on dev as Kim 2014:
the test accuracy is that of the best dev epoch) and prints one line of JSON per run (test and
dev accuracy, best epoch, pure training seconds, wall seconds, the per-epoch curve), then the
mean +- std. Single-threaded unless --threads says otherwise. Timings on a shared machine are
taken under load.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch

from cnnlab.data.sst import load_sst
from cnnlab.engine import TrainConfig, train

RECURRENT = ("rnn", "gru", "lstm", "bilstm")


def config(args: argparse.Namespace, seed: int) -> TrainConfig:
    kw = {"embed_dim": args.embed_dim, "dropout": args.dropout}
    if args.model in RECURRENT:
        kw["hidden_size"] = args.hidden
    if args.embed_scale:
        kw["embed_scale"] = args.embed_scale
    task = {"train_on": args.train_on, "min_freq": args.min_freq, "prior": args.prior}
    if args.max_norm:
        task["max_norm"] = args.max_norm
    return TrainConfig(model=args.model, dataset="sst5", model_kwargs=kw, task_kwargs=task,
                       subset=args.subset, epochs=args.epochs, batch_size=args.batch, lr=args.lr,
                       optimizer="adamw", weight_decay=args.wd, schedule=args.schedule,
                       warmup=0.0, label_smoothing=0.0, ema=args.ema, seed=seed, device="cpu",
                       quiet=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="kim_cnn")
    p.add_argument("--train-on", choices=("sentences", "phrases"), default="phrases")
    p.add_argument("--subset", type=int, default=None, help="training examples (stratified)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seeds", default="0")
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--wd", type=float, default=0.0)
    p.add_argument("--schedule", default="constant", choices=("constant", "cosine", "onecycle"))
    p.add_argument("--embed-dim", type=int, default=300)
    p.add_argument("--embed-scale", type=float, default=0.0,
                   help="word vectors drawn from U(-s, s) (0: the model's default init)")
    p.add_argument("--hidden", type=int, default=150)
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--max-norm", type=float, default=0.0)
    p.add_argument("--min-freq", type=int, default=1)
    p.add_argument("--prior", choices=("train", "sentences"), default="train",
                   help="sentences: the logit-adjusted loss for the sentences' class prior")
    p.add_argument("--ema", type=float, default=0.0,
                   help="evaluate an exponential moving average of the weights (decay per step)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sst = load_sst(phrases=args.train_on == "phrases")
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        t0 = time.perf_counter()
        r = train(config(args, seed), dataset=sst, log=True)  # quiet: one line per epoch
        curve = [(h["epoch"], round(h["val_accuracy"], 4), round(h["train_time_s"], 1))
                 for h in r.history]
        row = {"model": args.model, "train_on": args.train_on, "seed": seed,
               "test_accuracy": r.test_accuracy, "best_dev": r.best_val_accuracy,
               "best_epoch": r.best_epoch, "train_seconds": round(r.train_time_s, 1),
               "wall_seconds": round(time.perf_counter() - t0, 1), "curve": curve}
        results.append(row)
        print(json.dumps({**row, "config": dataclasses.asdict(config(args, seed))}), flush=True)
    accs = [r["test_accuracy"] for r in results]
    print(f"{args.model} {args.train_on}: test {100 * statistics.mean(accs):.2f} +- "
          f"{100 * (statistics.stdev(accs) if len(accs) > 1 else 0):.2f} over {len(accs)} seeds; "
          f"train {statistics.mean(r['train_seconds'] for r in results):.0f} s per run "
          "(under load)", flush=True)


if __name__ == "__main__":
    main()
