"""The transfer study's report sections, figures and ``results.csv`` rows (findings:
:mod:`~cnnlab.studies._transfer_findings`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from cnnlab.report import Report
from cnnlab.studies._transfer_findings import aug_summary, transfer_summary
from cnnlab.studies.findings import Finding

CSV_COLUMNS = ("part", "key", "backbone", "strategy", "labels_per_class", "augment", "recipe",
               "seed", "test_accuracy", "trainable_params", "train_seconds",
               "final_logged_train_accuracy", "final_clean_train_accuracy",
               "final_val_accuracy", "diagnosis", "diagnosis_rule")
_COLORS = {"scratch": "#777777", "linear": "#1f77b4", "partial": "#ff7f0e",
           "finetune": "#2ca02c"}


def result_rows(payload: dict) -> list[dict[str, Any]]:
    """``results.csv``: one row per run of both parts."""
    return [{k: r.get(k) for k in CSV_COLUMNS} for r in payload["runs"]]


def budget_notes(budget: Any, opts: Any, pretrain_runs: Sequence[dict], s: Any) -> list[str]:
    """The resolution's lines about what the budget's sizes cannot show."""
    out = []
    side = round(32 * s.resolution)
    if opts.weights:
        out.append(f"Transfer starts from the user's torchvision weights ({opts.weights}) at "
                   f"{side}x{side} px; no pretraining of ours is involved.")
    for r in pretrain_runs:
        sp, m = r["spec"], r["metrics"]
        out.append(f"Pretraining is ours and small: {sp['backbone']} at {side}x{side} px on "
                   f"{m['num_train']:,} images of {len(sp['classes'])} source classes for "
                   f"{sp['epochs']} epochs (source test accuracy {100 * m['test_accuracy']:.1f}%"
                   f"). How much a backbone this weak helps says nothing about ImageNet "
                   f"weights; budgets standard and full (GPU) pretrain ResNet-18 and "
                   f"MobileNetV2 on the whole source half, --weights uses real ones.")
    out.append("Training times are single measurements per run (the budget's cost says under "
               "what load they were taken): they show orders of magnitude (a frozen backbone "
               "needs no backward pass), not small differences.")
    return out


# ----------------------------------------------------------------------------------- figures
def _fig(w: float, h: float, ncols: int = 1, nrows: int = 1, integer_x: bool = True):
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(w, h), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    if integer_x:  # epochs
        for ax in axes.flat:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, axes


def aug_curves_figure(runs: Sequence[dict]):
    """Per setting: accuracies (logged train, clean train, validation) and losses per epoch,
    mean over seeds (thin lines: each seed)."""
    names = list(dict.fromkeys(r["augment"] for r in runs))
    fig, axes = _fig(4.2 * len(names), 6.4, ncols=len(names), nrows=2)
    series = (("train_accuracy", "train (logged: augmented, dropout on)", "#d62728", "--"),
              ("clean_train_accuracy", "train (clean: eval mode, no augmentation)", "#d62728",
               "-"),
              ("val_accuracy", "validation", "#1f77b4", "-"))
    for j, name in enumerate(names):
        rs = [r for r in runs if r["augment"] == name]
        epochs = [h["epoch"] for h in rs[0]["history"]]
        ax = axes[0][j]
        for key, label, color, style in series:
            vals = np.array([[h[key] for h in r["history"]] for r in rs])
            for v in vals:
                ax.plot(epochs, v, style, color=color, lw=0.5, alpha=0.35)
            ax.plot(epochs, vals.mean(0), style, color=color, lw=1.8, label=label)
        ax.set_title(f"{name} ({rs[0]['recipe']})", fontsize=9)
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax = axes[1][j]
        for key, label, color, style in (("train_loss", "train (logged)", "#d62728", "--"),
                                         ("val_loss", "validation", "#1f77b4", "-")):
            vals = np.array([[h[key] for h in r["history"]] for r in rs])
            for v in vals:
                ax.plot(epochs, v, style, color=color, lw=0.5, alpha=0.35)
            ax.plot(epochs, vals.mean(0), style, color=color, lw=1.8, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("cross-entropy")
    axes[0][0].legend(fontsize=7, loc="lower right")
    axes[1][0].legend(fontsize=7)
    return fig


def accuracy_vs_labels_figure(rows: Sequence[dict], chance: float):
    """Target test accuracy against labels per class, one line per strategy (mean +- std)."""
    backbones = list(dict.fromkeys(r["backbone"] for r in rows))
    fig, axes = _fig(5.2 * len(backbones), 4.0, ncols=len(backbones), integer_x=False)
    for ax, b in zip(axes[0], backbones, strict=True):
        for s in dict.fromkeys(r["strategy"] for r in rows):
            rs = sorted((r for r in rows if r["backbone"] == b and r["strategy"] == s),
                        key=lambda r: r["labels_per_class"])
            ax.errorbar([r["labels_per_class"] for r in rs], [r["test_accuracy"] for r in rs],
                        yerr=[r["test_accuracy_sd"] for r in rs], marker="o", capsize=3,
                        color=_COLORS.get(s), label=s)
        ax.axhline(chance, color="k", lw=0.6, ls=":", label="chance")
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        labels = sorted({r["labels_per_class"] for r in rows})
        ax.set_xticks(labels, [str(n) for n in labels])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("labelled images per target class")
        ax.set_ylabel("target test accuracy")
        ax.set_title(b, fontsize=9)
        ax.legend(fontsize=7)
    return fig


def transfer_curves_figure(runs: Sequence[dict]):
    """Training loss per epoch and the test accuracy where measured, per label budget (seed 0)."""
    budgets = sorted({(r["backbone"], r["labels_per_class"]) for r in runs})
    fig, axes = _fig(4.2 * len(budgets), 6.2, ncols=len(budgets), nrows=2)
    for j, (b, n) in enumerate(budgets):
        for r in runs:
            if (r["backbone"], r["labels_per_class"]) != (b, n) or r["seed"] != 0:
                continue
            h = r["history"]
            c = _COLORS.get(r["strategy"])
            axes[0][j].plot([x["epoch"] for x in h], [x["train_loss"] for x in h], "-",
                            color=c, label=r["strategy"])
            pts = [(x["epoch"], x["test_accuracy"]) for x in h
                   if x.get("test_accuracy") is not None]
            axes[1][j].plot(*zip(*pts, strict=True), "o-", color=c, label=r["strategy"])
        axes[0][j].set_title(f"{b}, {n} labels per class (seed 0)", fontsize=9)
        axes[0][j].set_ylabel("training loss (augmented batches)")
        axes[1][j].set_ylabel("target test accuracy")
        axes[1][j].set_xlabel("epoch")
    axes[0][0].legend(fontsize=7)
    return fig


# ------------------------------------------------------------------------------------ report
def _pct(x: float | None) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _strategy_row(name: str, strategy: dict, run: dict) -> dict[str, Any]:
    blocks = run["trainable_blocks"]
    trainable = {"all": "all", "none": "none"}.get(strategy["trainable"], ", ".join(blocks))
    scale = run["lr_scales"].get("backbone", 1.0)
    return {"strategy": name, "what": strategy["label"], "pretrained": strategy["pretrained"],
            "trainable": trainable, "params": run["trainable_params"],
            "lr": f"head x1, backbone x{scale:g}" if blocks else "head x1 (backbone frozen)"}


def layout(rep: Report, payload: dict, findings: Sequence[Finding]) -> None:
    aug = [r for r in payload["runs"] if r["part"] == "augmentation"]
    tr = [r for r in payload["runs"] if r["part"] == "transfer"]
    if aug:
        _aug_section(rep, payload, aug, [f for f in findings if f.section == "augmentation"])
    if tr:
        _transfer_section(rep, payload, tr, [f for f in findings if f.section == "transfer"])


def _aug_section(rep: Report, payload: dict, runs: list[dict], findings: list[Finding]) -> None:
    s = payload["settings"]
    rep.section("1. Augmentation and overfitting")
    rep.text(f"`{s['aug_model']}` (width x{s['aug_width']:g}, dropout {s['aug_dropout']} before "
             f"the classifier) trained on "
             f"{s['aug_subset'] - s['aug_val']:,} CIFAR-10 training images ({s['aug_val']:,} more "
             f"held out for validation, the same for every run) for {s['aug_epochs']} epochs, "
             f"{s['aug_optimizer']} at lr {s['aug_lr']:g} ({s['aug_schedule']} schedule after a "
             f"short warm-up), no label smoothing. Every setting uses the same seeds. The "
             f"*logged* training accuracy is the engine's running mean over the epoch's "
             f"augmented batches with dropout on; the *clean* training accuracy is measured "
             f"after the epoch on the same training images in eval mode without augmentation, "
             f"exactly as validation is.")
    rep.text(f"Diagnosis rule: {payload['rule_words']}.")
    rep.table(aug_summary(runs), [
        ("augment", "setting", None), ("recipe", "--augment", None), ("seeds", "seeds", None),
        ("logged_train", "train acc (logged)", _pct), ("clean_train", "train acc (clean)", _pct),
        ("val", "val acc", _pct), ("gap", "gap clean - val", _pct),
        ("test", "test acc", _pct), ("verdicts", "diagnosis per seed", ", ".join)],
        caption="Final epoch, mean over seeds.")
    rep.table(runs, [("key", "run", None), ("diagnosis", "diagnosis", None),
                     ("diagnosis_rule", "the rule on this run's numbers", None)])
    rep.figure(aug_curves_figure(runs), "augmentation_curves",
               "Per setting: accuracies (top) and losses (bottom) per epoch; thick: mean over "
               "seeds, thin: each seed. Dashed red is what the training log shows, solid red "
               "the clean training accuracy.")
    rep.bullets(f.claim for f in findings)


def _transfer_section(rep: Report, payload: dict, runs: list[dict],
                      findings: list[Finding]) -> None:
    s = payload["settings"]
    side = round(32 * s["resolution"])
    rows = transfer_summary(runs)
    rep.section("2. Transfer: from scratch, linear probe, partial unfreeze, fine-tuning")
    src = ", ".join(payload["source_classes"])
    tgt = ", ".join(payload["target_classes"])
    if payload["weights"]:
        how = f"the torchvision weights in `{payload['weights']}`"
    else:
        how = f"our own pretraining on the source classes ({src})"
        for p in payload["pretrain"]:
            rep.text(f"Pretraining: `{p['backbone']}` on {p['num_train']:,} images of {src} at "
                     f"{side}x{side} px, {p['epochs']} epochs: source test accuracy "
                     f"{_pct(p['test_accuracy'])} ({p['train_seconds']:.0f} s of training).")
    rep.text(f"Backbone from {how}, a new head (global average pooling + Linear) for the "
             f"target classes ({tgt}); labelled images per class drawn with each seed (every "
             f"strategy of a seed gets the same ones); tested on the same held-out target "
             f"test images in every run. "
             f"Same epochs, batch size, seeds and head learning rate ({s['lr']}) for every "
             f"strategy at one label budget; flip + translate augmentation.")
    first = {r["strategy"]: r for r in runs}
    rep.table([_strategy_row(k, v, first[k]) for k, v in payload["strategies"].items()
               if k in first],
              [("strategy", "strategy", None), ("what", "what", None),
               ("pretrained", "pretrained", str), ("trainable", "trainable backbone blocks", None),
               ("lr", "learning rates", None),
               ("params", "trainable parameters", lambda v: f"{v:,}")])
    rep.table(rows, [("backbone", "backbone", None), ("labels_per_class", "labels/class", str),
                     ("strategy", "strategy", None),
                     ("test_accuracy", "test acc (mean)", _pct),
                     ("test_accuracy_sd", "std over seeds", _pct), ("seeds", "seeds", str),
                     ("trainable_params", "trainable params", lambda v: f"{v:,}"),
                     ("train_seconds", "train s / run", lambda v: f"{v:.1f}")])
    chance = 1 / len(payload["target_classes"])
    rep.figure(accuracy_vs_labels_figure(rows, chance), "accuracy_vs_labels",
               "Target test accuracy against labelled images per class, mean +- std over seeds.")
    rep.figure(transfer_curves_figure(runs), "transfer_curves",
               "Training loss per epoch and target test accuracy where measured (seed 0).")
    rep.bullets(f.claim for f in findings)
