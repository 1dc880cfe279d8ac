"""The goals of ``cnnlab tune`` (issue 16), measured in one run on Fashion-MNIST:

1. the tuned CNN against the README's ``compact_cnn`` recipe at the same training epochs (test
   accuracy, each trained on the same training images, tested once);
2. Hyperband against random search without pruning on the same epoch budget: the epochs
   Hyperband needed to reach the random search's final best validation accuracy (goal <= 0.5x);
3. trials per minute of 2 local workers against 1 on the same machine (goal >= 1.7x on 2 cores),
   both running the same configurations (drawn once by Optuna's random sampler and enqueued in
   both runs), with the work they trained (MAC-epochs per second) beside it.

    python bench/tune_goals.py --out runs/tune-goals [--space examples/tune/course_space.yaml]
        [--subset N] [--max-epochs 7] [--trials 30] [--speed-trials 8]
        [--speed-subset N] [--speed-epochs 2] [--only-workers | --no-workers]
        [--random-seeds 101,102,...]

Everything runs in this process's machine, one search after the other; the reference of each
ratio is measured in the same run. Prints one line per goal and writes ``goals.json`` in --out
(the tuned search's own report is in OUT/search/report.html; with several --random-seeds its
curve shows the last comparison and a table all of them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

from cnnlab.engine import TrainConfig, train
from cnnlab.provenance import environment
from cnnlab.studies._tune_space import load_space
from cnnlab.studies.tune import TuneConfig, tune


def _configurations(space_path: str, n: int, seed: int) -> list[dict]:
    """``n`` configurations of the space drawn by Optuna's random sampler (flat trial params),
    so that every speed run trains the same ones."""
    import optuna

    space = load_space(space_path)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs = []
    for _ in range(n):
        trial = study.ask()
        space.suggest(trial)
        configs.append(dict(trial.params))
        study.tell(trial, 0.0)
    return configs


def _throughput(args, workers: int, configs: list[dict]) -> dict:
    """Trials per minute (and MAC-epochs per second) of ``workers`` local workers sharing
    ``args.threads`` threads, all running the same enqueued ``configs`` for
    ``args.speed_epochs`` epochs each."""
    out = Path(args.out) / f"speed-{workers}w"
    subset = args.speed_subset or args.subset
    cfg = TuneConfig(space=args.space, out=str(out), subset=subset, max_epochs=args.speed_epochs,
                     trials=len(configs), workers=workers, threads=args.threads,
                     pruner="none", sampler="random", device="cpu", retrain=False,
                     seed=args.seed, enqueue=configs)
    t0 = time.perf_counter()
    r = tune(cfg)
    seconds = time.perf_counter() - t0
    done = [t for t in r.trials if t["state"] in ("complete", "pruned", "fail")]
    same = sorted(map(str, (t["params"] for t in done))) == sorted(map(str, configs))
    work = sum((t["macs"] or 0) * t["epochs"] for t in done)
    return {"workers": workers, "threads_per_worker": cfg.threads_per_worker(),
            "trials": len(done), "same_configurations": same, "seconds": seconds,
            "trials_per_min": len(done) / (seconds / 60), "mac_epochs": work,
            "mac_epochs_per_s": work / seconds,
            "per_trial": [{k: t[k] for k in ("params", "macs", "epochs", "duration_s", "worker")}
                          for t in done]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--space", default="examples/tune/course_space.yaml")
    p.add_argument("--subset", type=int, default=None)
    p.add_argument("--max-epochs", type=int, default=7)
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--speed-trials", type=int, default=8)
    p.add_argument("--speed-subset", type=int, default=None,
                   help="training images of the speed trials (default: --subset)")
    p.add_argument("--speed-epochs", type=int, default=2, help="epochs of each speed trial")
    p.add_argument("--only-workers", action="store_true",
                   help="measure goal 3 only (the worker speed), not the search")
    p.add_argument("--no-workers", action="store_true", help="measure goals 1 and 2 only")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--random-seeds", type=lambda t: [int(x) for x in t.split(",")],
                   help="comma-separated seeds of the random searches goal 2 compares with "
                   "(default: --seed, a paired comparison on the TPE start-up draws)")
    args = p.parse_args()
    out = Path(args.out)
    res: dict = {"args": vars(args), "environment": environment()}
    if not args.only_workers:
        _search_goals(args, res)
    if args.no_workers:
        _save(out, res)
        return
    # 3. trials per minute, 1 worker vs 2, on the same configurations
    configs = _configurations(args.space, args.speed_trials, args.seed + 1)
    one, two = _throughput(args, 1, configs), _throughput(args, 2, configs)
    res["workers"] = {"one": one, "two": two,
                      "ratio": two["trials_per_min"] / one["trials_per_min"],
                      "work_ratio": two["mac_epochs_per_s"] / one["mac_epochs_per_s"]}
    print(f"3. trials/min on the same {len(configs)} configurations: 1 worker x "
          f"{one['threads_per_worker']} threads {one['trials_per_min']:.2f}, 2 workers x "
          f"{two['threads_per_worker']} {two['trials_per_min']:.2f}, ratio "
          f"{res['workers']['ratio']:.2f} (goal >= 1.7); same configurations in both: "
          f"{one['same_configurations'] and two['same_configurations']}")
    _save(out, res)


def _save(out: Path, res: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "goals.json").write_text(json.dumps(res, indent=2, default=str))


def _search_goals(args, res: dict) -> None:
    """Goals 1 and 2: one Hyperband search, its comparison with random search (one per
    --random-seeds entry, each on the search's epoch budget) and the compact_cnn recipe on the
    same images."""
    out = Path(args.out)
    rseeds = args.random_seeds or [None]
    for rseed in rseeds:
        # the first call runs the search; later ones continue the finished study (no new
        # trial, the retrained winner's checkpoint is reused) and add one random search each
        cfg = TuneConfig(space=args.space, out=str(out / "search"), subset=args.subset,
                         max_epochs=args.max_epochs, trials=args.trials, threads=args.threads,
                         device="cpu", compare_random=True, seed=args.seed, random_seed=rseed)
        search = tune(cfg)
    names = [dataclasses.replace(cfg, random_seed=r).random_study_name for r in rseeds]
    comparisons = [c for name in names for c in search.random_searches if c["study"] == name]
    # 1. the README's compact_cnn recipe at the tuned model's epochs, on the same images
    base = train(TrainConfig(model="compact_cnn", dataset="fashion-mnist", epochs=args.max_epochs,
                             batch_size=128, lr=0.2, augment="flip", val_fraction=0,
                             subset=args.subset, split_seed=args.seed, seed=args.seed,
                             device="cpu", quiet=True), log=False)
    tuned = search.final["test_accuracy"] if search.final else None
    res["accuracy"] = {"tuned_test_accuracy": tuned, "compact_cnn_test_accuracy":
                       base.test_accuracy, "epochs": args.max_epochs}
    diff = None if tuned is None else tuned - base.test_accuracy
    print(f"1. tuned {tuned} vs compact_cnn {base.test_accuracy:.4f} test accuracy at "
          f"{args.max_epochs} epochs (difference {diff})")
    # 2. Hyperband vs random search on the same epoch budget (the first comparison keeps the
    # key of earlier goals.json files; all of them are under "random_searches")
    res["hyperband_vs_random"] = comparisons[0]
    res["random_searches"] = comparisons
    for c in comparisons:
        print(f"2. random search (seed {c['random_seed']}) best val {c['random_best_val']} after "
              f"{c['random_epochs']} epochs; Hyperband reached it after "
              f"{c['hyperband_epochs_to_reach']} epochs (ratio {c['ratio']}; goal <= 0.5); "
              f"{c['shared_configurations']} of its {c['random_trials']} trials shared")


if __name__ == "__main__":
    main()
