"""SST-5 training recipes with a plain PyTorch loop (no cnnlab engine: it trains images only yet).

    python bench/sst_recipes.py --model kim_cnn --train-on phrases --epochs 4 --seeds 0,1,2

For each seed: trains on the training sentences (or every training phrase), evaluates on dev after
every epoch and reports the test accuracy at the best dev epoch (early stopping on dev, as
Kim 2014), the pure training seconds and the wall seconds. One line of JSON per run, then the
mean +- std. Batches are bucketed by length (sorted within chunks of 50 batches), so short phrases
are not padded to 56 words. Single-threaded unless --threads says otherwise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.data.sst import TokenBatch, Vocabulary, encode_split, load_sst, pad_sequences
from cnnlab.models import create


def _batches(ids: list[np.ndarray], labels: np.ndarray, batch: int, gen: np.random.Generator):
    order = gen.permutation(len(ids))
    chunk = batch * 50
    for c in range(0, len(order), chunk):
        part = order[c:c + chunk]
        part = part[np.argsort([len(ids[i]) for i in part], kind="stable")]
        groups = [part[i:i + batch] for i in range(0, len(part), batch)]
        for g in (groups[j] for j in gen.permutation(len(groups))):
            yield pad_sequences([ids[i] for i in g], labels[g])


@torch.no_grad()
def _accuracy(model: torch.nn.Module, b: TokenBatch) -> float:
    model.eval()
    correct = 0
    for s in range(0, len(b.lengths), 512):
        n = int(b.lengths[s:s + 512].max())
        logits = model(b.tokens[s:s + 512, :n], b.lengths[s:s + 512])
        correct += int((logits.argmax(1) == b.labels[s:s + 512]).sum())
    model.train()
    return correct / len(b.lengths)


def run(args: argparse.Namespace, seed: int, sst, vocab) -> dict:
    torch.manual_seed(seed)
    gen = np.random.default_rng(seed)
    kw = {"vocab_size": len(vocab), "embed_dim": args.embed_dim, "dropout": args.dropout}
    if args.model in ("rnn", "gru", "lstm", "bilstm"):
        kw["hidden_size"] = args.hidden
    model = create(args.model, num_classes=5, **kw)
    opt = {"adam": lambda p: torch.optim.Adam(p, lr=args.lr, weight_decay=args.wd),
           "adadelta": lambda p: torch.optim.Adadelta(p, lr=args.lr, rho=0.95, eps=1e-6)
           }[args.opt](model.parameters())
    train_ids = [vocab.encode(t) for t in sst.train.tokens]
    dev, test = encode_split(sst.dev, vocab), encode_split(sst.test, vocab)
    best = (-1.0, 0.0, 0)
    train_s, t0, curve = 0.0, time.perf_counter(), []
    for epoch in range(1, args.epochs + 1):
        ts = time.perf_counter()
        for b in _batches(train_ids, sst.train.labels, args.batch, gen):
            loss = F.cross_entropy(model(b.tokens, b.lengths), b.labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            opt.step()
            if args.max_norm and args.model == "kim_cnn":  # Kim's l2 constraint on the last layer
                with torch.no_grad():
                    w = model.classifier[-1].weight
                    w.mul_(torch.clamp(args.max_norm / w.norm(dim=1, keepdim=True), max=1.0))
        train_s += time.perf_counter() - ts
        d, t = _accuracy(model, dev), _accuracy(model, test)
        curve.append((epoch, round(d, 4), round(t, 4), round(train_s, 1)))
        if d > best[0]:
            best = (d, t, epoch)
    return {"model": args.model, "train_on": sst.train_on, "seed": seed, "best_dev": best[0],
            "test_accuracy": best[1], "best_epoch": best[2], "train_seconds": round(train_s, 1),
            "wall_seconds": round(time.perf_counter() - t0, 1), "curve": curve}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="kim_cnn")
    p.add_argument("--train-on", choices=("sentences", "phrases"), default="phrases")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seeds", default="0")
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--wd", type=float, default=0.0)
    p.add_argument("--opt", choices=("adam", "adadelta"), default="adam")
    p.add_argument("--embed-dim", type=int, default=300)
    p.add_argument("--hidden", type=int, default=150)
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--clip", type=float, default=0.0)
    p.add_argument("--max-norm", type=float, default=0.0)
    p.add_argument("--min-freq", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sst = load_sst(phrases=args.train_on == "phrases")
    vocab = Vocabulary.build(sst.train_sentences.tokens, min_freq=args.min_freq)
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        r = run(args, seed, sst, vocab)
        results.append(r)
        print(json.dumps({**r, "args": vars(args)}), flush=True)
    accs = [r["test_accuracy"] for r in results]
    print(f"{args.model} {sst.train_on}: test {100 * statistics.mean(accs):.2f} +- "
          f"{100 * (statistics.stdev(accs) if len(accs) > 1 else 0):.2f} over {len(accs)} seeds; "
          f"train {statistics.mean(r['train_seconds'] for r in results):.0f} s per run", flush=True)


if __name__ == "__main__":
    main()
