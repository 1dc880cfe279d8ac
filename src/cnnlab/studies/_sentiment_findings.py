"""The sentiment study's summaries and findings, each judged against the measured seed spread."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from cnnlab.studies.findings import K, NOT_DISTINGUISHABLE, Finding, Spread, compare, pooled_std

LABELS = {"rnn": "RNN (tanh)", "gru": "GRU", "lstm": "LSTM", "bilstm": "Bi-LSTM",
          "kim_cnn": "Kim CNN", "bag_of_embeddings": "bag of embeddings"}


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def pts(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} points"


def config_name(model: str, train_on: str) -> str:
    return f"{LABELS.get(model, model)} on {train_on}"


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, training set): test accuracy mean/std/min/max over seeds, dev
    accuracy, within-one accuracy, accuracy by length and training seconds (means)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["model"], r["train_on"]), []).append(r)
    rows = []
    for (model, train_on), rs in groups.items():
        acc = [r["test_accuracy"] for r in rs]
        bins = []
        for i, b in enumerate(rs[0]["accuracy_by_length"]):
            vals = [r["accuracy_by_length"][i]["accuracy"] for r in rs]
            bins.append({"words": b["words"], "sentences": b["sentences"],
                         "accuracy": None if None in vals else statistics.fmean(vals)})
        rows.append({
            "model": model, "train_on": train_on, "label": config_name(model, train_on),
            "seeds": len(rs), "test_accuracy": statistics.fmean(acc),
            "test_accuracy_std": statistics.stdev(acc) if len(acc) > 1 else None,
            "test_accuracy_min": min(acc), "test_accuracy_max": max(acc),
            "dev_accuracy": statistics.fmean(r["dev_accuracy"] for r in rs),
            "within_one_accuracy": statistics.fmean(r["within_one_accuracy"] for r in rs),
            "train_seconds": statistics.fmean(r["train_seconds"] for r in rs),
            "best_epochs": [r["best_epoch"] for r in rs], "epochs": rs[0]["epochs"],
            "num_train": rs[0]["num_train"], "parameters": rs[0]["parameters"],
            "accuracy_by_length": bins,
            "confusion": [[sum(r["confusion"][i][j] for r in rs) for j in range(5)]
                          for i in range(5)],
        })
    return rows


def spread(runs: Sequence[dict[str, Any]], budget: Any) -> Spread:
    """The pooled one-run std of test accuracy over the seeds of every combination with >1."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        groups.setdefault((r["model"], r["train_on"]), []).append(r["test_accuracy"])
    multi = {k: v for k, v in groups.items() if len(v) > 1}
    names = ", ".join(f"{config_name(*k)} ({len(v)} seeds)" for k, v in multi.items())
    return Spread(pooled_std(multi.values()),
                  f"std of test accuracy over the seeds of {names or 'no configuration'}")


def best(summary: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The configuration with the highest mean test accuracy (the findings say which others
    are not distinguishable from it)."""
    return max(summary, key=lambda r: r["test_accuracy"])


def findings(payload: dict[str, Any], summary: Sequence[dict[str, Any]], s: Spread,
             budget: Any) -> list[Finding]:
    """Every finding, headline ones first within each section."""
    out: list[Finding] = []
    noise = s.words(100, " points")
    top = best(summary)
    multi = [r for r in summary if r["seeds"] >= 3]
    # 1. the best configuration and what is indistinguishable from it
    ties = [r for r in summary if r is not top and compare(
        top["test_accuracy"], r["test_accuracy"], s, top["seeds"], r["seeds"])
        == NOT_DISTINGUISHABLE]
    std = top["test_accuracy_std"]
    tie_words = (f"; not distinguishable from it at this budget: "
                 f"{', '.join(r['label'] + ' ' + pct(r['test_accuracy']) for r in ties)}"
                 if ties else "; every other configuration is lower by more than the noise")
    out.append(Finding(
        f"Highest mean test accuracy: {top['label']}, {pct(top['test_accuracy'])}"
        f"{' +- ' + pts(std) if std is not None else ''} over {top['seeds']} seed"
        f"{'s' if top['seeds'] > 1 else ''}{tie_words}.",
        verdict="highest" if not ties else NOT_DISTINGUISHABLE,
        numbers={"model": top["model"], "train_on": top["train_on"],
                 "test_accuracy": top["test_accuracy"], "std": std, "seeds": top["seeds"],
                 "ties": [r["label"] for r in ties]},
        noise=noise, section="models", headline=True))
    # 2. the goal: >= 45.0% (Kim's CNN-rand) as a mean over 3 seeds
    goal = payload["goal"]
    if multi:
        g = max(multi, key=lambda r: r["test_accuracy"])
        reached = g["test_accuracy"] >= goal
        margin = K * s.value / math.sqrt(g["seeds"]) if s.value is not None else None
        within = margin is not None and abs(g["test_accuracy"] - goal) <= margin
        out.append(Finding(
            f"Goal (>= {pct(goal)}, Kim 2014's CNN-rand, as a mean over 3 seeds): "
            f"{'reached' if reached else 'not reached'} by {g['label']}: "
            f"{pct(g['test_accuracy'])} +- {pts(g['test_accuracy_std'])} over {g['seeds']} "
            f"seeds ({'+' if reached else ''}{100 * (g['test_accuracy'] - goal):.1f} points; "
            f"{'within' if within else 'outside'} the noise of a {g['seeds']}-seed mean, "
            f"+-{pts(margin)}).",
            verdict="reached" if reached else "not reached",
            numbers={"goal": goal, "test_accuracy": g["test_accuracy"], "seeds": g["seeds"],
                     "margin": margin},
            noise=noise, section="models", headline=True))
    # 3. sentences vs phrases, per model
    by = {(r["model"], r["train_on"]): r for r in summary}
    for model in dict.fromkeys(r["model"] for r in summary):
        a, b = by.get((model, "phrases")), by.get((model, "sentences"))
        if a is None or b is None:
            continue
        v = compare(a["test_accuracy"], b["test_accuracy"], s, a["seeds"], b["seeds"])
        diff = a["test_accuracy"] - b["test_accuracy"]
        out.append(Finding(
            f"{LABELS.get(model, model)}: training on phrases gives {pct(a['test_accuracy'])} "
            f"vs {pct(b['test_accuracy'])} on sentences only ({diff * 100:+.1f} points): "
            f"{'higher' if v == 'higher' else 'lower' if v == 'lower' else v}.",
            verdict=v, numbers={"phrases": a["test_accuracy"], "sentences": b["test_accuracy"]},
            noise=noise, section="phrases", headline=model == top["model"]))
    # 4. word order: the bag of embeddings against the best model that reads word order
    boe = [r for r in summary if r["model"] == "bag_of_embeddings"]
    order = [r for r in summary if r["model"] != "bag_of_embeddings"]
    if boe and order:
        o = max(order, key=lambda r: r["test_accuracy"])
        bb = max(boe, key=lambda r: r["test_accuracy"])
        v = compare(o["test_accuracy"], bb["test_accuracy"], s, o["seeds"], bb["seeds"])
        out.append(Finding(
            f"Word order: the best model that reads it ({o['label']}, {pct(o['test_accuracy'])})"
            f" vs the best bag of embeddings ({bb['label']}, {pct(bb['test_accuracy'])}): "
            f"{'higher' if v == 'higher' else 'lower' if v == 'lower' else v}.",
            verdict=v, numbers={"word_order": o["test_accuracy"], "bag": bb["test_accuracy"]},
            noise=noise, section="models"))
    # 5. the published numbers
    for p in payload["published"]:
        if p["model"] is None:
            continue
        rs = [r for r in summary if r["model"] == p["model"]]
        if not rs:
            continue
        r = max(rs, key=lambda x: x["test_accuracy"])
        thr = s.threshold(r["seeds"], 10**9)
        diff = r["test_accuracy"] - p["accuracy"]
        v = NOT_DISTINGUISHABLE if abs(diff) <= thr else ("higher" if diff > 0 else "lower")
        glove = (" (theirs used pretrained GloVe vectors, which do not exist here: this is not "
                 "the same recipe)" if p["pretrained"] else "")
        out.append(Finding(
            f"{p['name']} ({p['source']}): {pct(p['accuracy'])} published; measured "
            f"{r['label']} {pct(r['test_accuracy'])} ({diff * 100:+.1f} points: "
            f"{_words(v, 'above', 'below')} the published number){glove}.",
            verdict=v, numbers={"published": p["accuracy"], "measured": r["test_accuracy"]},
            noise=noise, section="published"))
    # 6. ordinal error and sentence length, for the best configuration
    wrong = 1 - top["test_accuracy"]
    near = (top["within_one_accuracy"] - top["test_accuracy"]) / wrong if wrong > 0 else None
    out.append(Finding(
        f"Ordinal error: {top['label']} is within one class of the truth on "
        f"{pct(top['within_one_accuracy'])} of the test sentences (exact: "
        f"{pct(top['test_accuracy'])}); {pct(near)} of its errors are a neighbouring class.",
        numbers={"within_one": top["within_one_accuracy"], "errors_off_by_one": near},
        section="errors", headline=True))
    bins = [b for b in top["accuracy_by_length"] if b["accuracy"] is not None]
    if len(bins) >= 2:
        lo, hi = bins[0], bins[-1]
        # binomial standard error of each bin's accuracy (the test sentences are the sample)
        se = math.hypot(*(math.sqrt(b["accuracy"] * (1 - b["accuracy"]) / b["sentences"])
                          for b in (lo, hi)))
        diff = lo["accuracy"] - hi["accuracy"]
        v = NOT_DISTINGUISHABLE if abs(diff) <= K * se else ("higher" if diff > 0 else "lower")
        out.append(Finding(
            f"Sentence length: {top['label']} scores {pct(lo['accuracy'])} on sentences of "
            f"{lo['words']} words ({lo['sentences']}) and {pct(hi['accuracy'])} on "
            f"{hi['words']} words ({hi['sentences']}): {diff * 100:+.1f} points, "
            f"{_words(v, 'higher on short sentences', 'higher on long sentences')}.",
            verdict=v, numbers={"short": lo["accuracy"], "long": hi["accuracy"], "se": se},
            noise=f"binomial standard error of the difference {pts(se)} (test sentences per "
                  "bin)", section="errors"))
    return out


def _words(verdict: str, higher: str, lower: str) -> str:
    if verdict == "higher":
        return higher + " by more than the noise"
    if verdict == "lower":
        return lower + " by more than the noise"
    return verdict


def resolution(summary: Sequence[dict[str, Any]], s: Spread, budget: Any,
               payload: dict[str, Any]) -> list[str]:
    """The report's first lines: what this budget can and cannot tell apart."""
    out = []
    phr, sen = payload["class_percent"]["phrases"], payload["class_percent"]["sentences"]
    if s.value is None:
        out.append("No configuration was trained with more than one seed: no difference in "
                   "test accuracy is distinguishable at this budget.")
    else:
        out.append(f"Seed-to-seed spread of test accuracy: {s.words(100, ' points')}. Two "
                   f"one-seed results must differ by more than {pts(s.threshold(1, 1))} to "
                   f"be called different; a {budget.reference_seeds}-seed mean and a one-seed "
                   f"result by more than {pts(s.threshold(budget.reference_seeds, 1))}. "
                   "The spread is measured on the reference configuration only and assumed "
                   "for the others (recurrent nets often vary more between seeds).")
    phrases = ("every labelled phrase" if budget.phrases_subset is None
               else f"{budget.phrases_subset:,} of the labelled phrases (stratified)")
    others = ""
    if budget.other_epochs_phrases is not None:
        ref = ", ".join(m for m, t in budget.reference if t == "phrases")
        others = (f" ({ref}; the other models {budget.other_epochs_phrases}, which leaves them "
                  "less trained on phrases than on sentences)")
    out.append(f"Recipe: {budget.embed_dim}-dimensional word vectors learned from scratch, "
               f"{budget.epochs_sentences} epochs on the 8,544 sentences or "
               f"{budget.epochs_phrases} on {phrases}{others}, Adam (lr {budget.lr:g}, batch "
               f"{budget.batch_size}), dropout {budget.dropout:g}; the test accuracy is that of "
               "the best dev epoch (Kim 2014). The published numbers train longer, tune per "
               "model, and for the LSTMs start from GloVe vectors.")
    if budget.prior == "sentences" and "phrases" in budget.train_on:
        out.append("Phrase runs are trained for the sentences' class prior (the logit-adjusted "
                   "loss, Menon et al. 2021: cross-entropy of logits + log pi_phrases - log "
                   f"pi_sentences, both counted from the training trees): of the phrases "
                   f"{phr[2]:g}% are neutral and {phr[0]:g}% very negative, of the training "
                   f"sentences {sen[2]:g}% and {sen[0]:g}%, and plain cross-entropy on phrases "
                   "predicts the extreme classes far too rarely. Kim 2014 used plain "
                   "cross-entropy (a budget with prior 'train').")
    if budget.phrases_subset is not None and "phrases" in budget.train_on:
        out.append(f"Phrases: this budget trains on {budget.phrases_subset:,} of the "
                   f"{payload['num_phrases']:,} labelled phrases (of all phrases {phr[2]:g}% "
                   f"are neutral and half have at most {payload['median_phrase_words']:g} "
                   "words, counted from the trees), for fewer epochs than on the sentences: "
                   "its sentences-vs-phrases comparison is of that subset, not of every phrase "
                   "as Socher et al. 2013 and Kim 2014 train (the standard budget uses them "
                   "all).")
    out.append("Test accuracy is measured on the 2,210 test sentences: its sampling error alone "
               "is about +-1.1 points (binomial standard error at 45%), the same for every "
               "model, so it does not enter the comparisons between models on that test set.")
    return out
