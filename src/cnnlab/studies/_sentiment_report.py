"""The sentiment study's report sections, figures and ``results.csv`` rows (findings:
:mod:`~cnnlab.studies._sentiment_findings`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cnnlab.data.sst import SST_CLASSES
from cnnlab.report import Report
from cnnlab.studies._sentiment_findings import LABELS, best, config_name, pct, pts


def result_rows(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``results.csv``: one row per run."""
    rows = []
    for r in runs:
        row = {k: r[k] for k in ("key", "model", "train_on", "seed", "test_accuracy",
                                 "dev_accuracy", "best_epoch", "epochs", "within_one_accuracy",
                                 "train_seconds", "wall_seconds", "num_train", "parameters",
                                 "sentences_per_s", "reused")}
        for b in r["accuracy_by_length"]:
            row[f"accuracy_{b['words']}_words"] = b["accuracy"]
        rows.append(row)
    return rows


def _accuracy_figure(summary, published):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.2), layout="constrained")
    ax = fig.add_subplot()
    models = list(dict.fromkeys(r["model"] for r in summary))
    train_on = list(dict.fromkeys(r["train_on"] for r in summary))
    by = {(r["model"], r["train_on"]): r for r in summary}
    width = 0.8 / max(len(train_on), 1)
    for j, t in enumerate(train_on):
        xs, ys, es = [], [], []
        for i, m in enumerate(models):
            r = by.get((m, t))
            if r is None:
                continue
            xs.append(i + (j - (len(train_on) - 1) / 2) * width)
            ys.append(100 * r["test_accuracy"])
            es.append(100 * (r["test_accuracy_std"] or 0))
        ax.bar(xs, ys, width, yerr=es, capsize=3, label=f"trained on {t}")
    for p in published:
        if p["model"] in models:
            i = models.index(p["model"])
            ax.plot([i - 0.45, i + 0.45], [100 * p["accuracy"]] * 2, "k--", lw=1)
            ax.annotate(f"{p['name']} {100 * p['accuracy']:.1f}"
                        f"{' (GloVe)' if p['pretrained'] else ''}",
                        (i, 100 * p["accuracy"]), textcoords="offset points", xytext=(0, 3),
                        ha="center", fontsize=7)
    ax.axhline(20, color="#999", lw=0.8, ls=":")
    ax.set_xticks(range(len(models)), [LABELS.get(m, m) for m in models], fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("SST-5 test accuracy, mean +- std over seeds (dashed: published; dotted: "
                 "chance 20%)", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def _confusion_figure(confusion, title):
    from matplotlib.figure import Figure

    cm = np.asarray(confusion, dtype=float)
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(5):
        for j in range(5):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(5), SST_CLASSES, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(5), SST_CLASSES, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return fig


def layout(rep: Report, payload: dict[str, Any], summary: Sequence[dict[str, Any]],
           findings: Sequence[Any], budget: Any) -> None:
    by_section: dict[str, list] = {}
    for f in findings:
        by_section.setdefault(f.section, []).append(f)

    rep.section("Models and training sets")
    rep.text(f"Each model classifies a whole sentence into 5 classes (very negative ... very "
             f"positive): one softmax after reading the sentence (many-to-one). Trained on the "
             f"{payload['num_sentences']:,} training sentences, or on the "
             f"{payload['num_phrases']:,} distinct labelled phrases of the training trees "
             f"(sentences included) as Socher et al. 2013 and Kim 2014 do; validated on the "
             f"1,101 dev sentences, tested on the 2,210 test sentences. Word vectors are learned "
             f"from scratch (no pretrained vectors exist here).")
    rep.bullets(f.claim for f in by_section.get("models", []))
    rep.table([{**r, "std": r["test_accuracy_std"],
                "best_epochs": ", ".join(map(str, r["best_epochs"]))} for r in summary], [
        ("label", "configuration", None), ("seeds", "seeds", None),
        ("test_accuracy", "test acc", pct), ("std", "std", pts),
        ("test_accuracy_min", "min", pct), ("test_accuracy_max", "max", pct),
        ("dev_accuracy", "dev acc", pct), ("within_one_accuracy", "within one", pct),
        ("best_epochs", "best epoch(s)", None), ("epochs", "epochs", None),
        ("num_train", "training examples", None), ("parameters", "parameters", None),
        ("train_seconds", "train s", lambda v: f"{v:.0f}")],
        caption="Test accuracy at the best dev epoch, mean over seeds; training seconds (mean "
                "per run, training only) on this report's device and torch threads; the budget's "
                "cost says under what load it was measured.")
    rep.figure(_accuracy_figure(summary, payload["published"]), "accuracy",
               "Test accuracy per model and training set, with the published numbers.")

    rep.section("Sentences only vs with phrases")
    rep.bullets(f.claim for f in by_section.get("phrases", []))

    rep.section("The published numbers")
    rep.text("Published test accuracies on this test set (fine-grained, whole sentences). The "
             "LSTM and Bi-LSTM numbers used pretrained GloVe vectors, which do not exist here, "
             "so they are not the same recipe; the RNTN is a tree model, not trained here.")
    rep.table([{**p, "measured": _measured(summary, p["model"]),
                "pretrained": "GloVe" if p["pretrained"] else "none"}
               for p in payload["published"]], [
        ("name", "model", None), ("source", "source", None),
        ("accuracy", "published", pct), ("pretrained", "word vectors", None),
        ("measured", "measured here (best mean)", pct)])
    rep.bullets(f.claim for f in by_section.get("published", []))

    top = best(summary)
    rep.section("Errors: confusion, ordinal error, sentence length")
    rep.bullets(f.claim for f in by_section.get("errors", []))
    rep.figure(_confusion_figure(top["confusion"], f"{top['label']}: test confusion (summed "
                                 f"over {top['seeds']} seed{'s' if top['seeds'] > 1 else ''})"),
               "confusion_best", f"Confusion matrix of {top['label']} on the test sentences "
               "(counts; colour: share of the true class).")
    rep.table([{"true": c, **{p: top["confusion"][i][j] for j, p in enumerate(SST_CLASSES)}}
               for i, c in enumerate(SST_CLASSES)],
              [("true", "true \\ predicted", None)] + [(c, c, None) for c in SST_CLASSES],
              caption=f"{top['label']}: counts summed over its seeds.")
    rep.table([{"label": r["label"], **{b["words"]: b["accuracy"]
                                        for b in r["accuracy_by_length"]}} for r in summary],
              [("label", "configuration", None)] + [
                  (b["words"], f"{b['words']} words ({b['sentences']})", pct)
                  for b in top["accuracy_by_length"]],
              caption="Test accuracy by sentence length (test sentences per bin in brackets).")

    rep.section("Runs")
    rep.table(result_rows(payload["runs"]), [
        ("key", "run", None), ("test_accuracy", "test acc", pct),
        ("dev_accuracy", "dev acc", pct), ("best_epoch", "best epoch", None),
        ("train_seconds", "train s", lambda v: f"{v:.0f}"),
        ("sentences_per_s", "examples/s", lambda v: f"{v:.0f}"),
        ("reused", "reused", None)])
    prior = f" --task-kw prior={budget.prior}" if budget.prior != "train" else ""
    rep.text(f"Reproduce: `cnnlab study sentiment --budget {budget.name} --out DIR` (re-running "
             "reuses finished runs); one run alone: `cnnlab train --model kim_cnn --dataset "
             f"sst5 --task-kw train_on=phrases{prior} --optimizer adamw --weight-decay 0 "
             f"--lr {budget.lr:g} --batch-size {budget.batch_size} --schedule constant "
             "--warmup 0 --label-smoothing 0 ...` (the settings of each run are in "
             "runs/<run>/config.json).")


def _measured(summary, model):
    rs = [r["test_accuracy"] for r in summary if r["model"] == model]
    return max(rs) if rs else None


__all__ = ["config_name", "layout", "result_rows"]
