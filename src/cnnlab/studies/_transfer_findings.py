"""The transfer study's judgements: the overfitting diagnosis rule, the findings, the resolution.

**The diagnosis** (:func:`diagnose`) is a rule on one run's per-epoch curves, printed beside
every verdict with the numbers it used (:data:`RULE` holds its thresholds):

- *overfitting*: the clean training accuracy (eval mode, no augmentation) ends more than
  ``gap`` above the validation accuracy **and** the validation loss (a moving average over
  ``smooth`` epochs) ends more than ``rise`` (relative) above its minimum, reached earlier: the
  model fits its training images better and better while getting worse on new ones;
- *underfitting*: the clean training accuracy ends below ``low`` **and** within ``gap`` of the
  validation accuracy: both low and close, the model has not even fitted its training images;
- *fine*: neither.

The rule uses the *clean* training accuracy, never the accuracy logged during training: that one
is measured on augmented images with dropout on, while the weights were still moving, so it can
sit below the validation accuracy without any sign of a problem (the common misreading that
"validation above training" means something is wrong, or that augmentation "made overfitting
worse").

Comparisons between settings and strategies are judged against the seed-to-seed spread
measured in the same invocation (:mod:`cnnlab.studies.findings`).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from cnnlab.studies.findings import (
    NOT_DISTINGUISHABLE,
    Finding,
    Spread,
    compare,
    compare_ratio,
    pooled_std,
    relative_spread,
)


@dataclass(frozen=True)
class DiagnosisRule:
    """The thresholds of :func:`diagnose` (accuracies as fractions, ``rise`` relative).

    The validation loss is smoothed over ``smooth`` epochs first: with Adam at a constant
    learning rate on 500 validation images it moved by a median 6% from one epoch to the next
    (the quick report's runs, last 8 epochs), and the mean of 3 epochs divides that by about
    sqrt(3), to 3.5%; a rise of more than 5% of the smoothed curve is above that fluctuation.
    """

    gap: float = 0.10  # clean train accuracy - validation accuracy
    rise: float = 0.05  # smoothed final validation loss / its smoothed minimum - 1
    low: float = 0.60  # clean train accuracy below this is "low"
    smooth: int = 3  # epochs in the validation loss's moving average

    def words(self) -> str:
        return (f"overfitting if clean train acc - val acc > {self.gap:.2f} and the val loss "
                f"(mean of {self.smooth} epochs) ends > {1 + self.rise:.2f} x its minimum, "
                f"reached earlier; underfitting if clean train acc < {self.low:.2f} and the "
                f"gap <= {self.gap:.2f}; else fine")


RULE = DiagnosisRule()


@dataclass(frozen=True)
class Diagnosis:
    """The verdict on one run and the numbers the rule used.

    Attributes:
        verdict: ``"overfitting"``, ``"underfitting"`` or ``"fine"``.
        because: the rule applied to this run's numbers, in words.
        gap: final clean training accuracy - final validation accuracy.
        clean_train, val: the final accuracies.
        val_loss_min, val_loss_min_epochs, val_loss_final: the smoothed validation loss's
            minimum, the (first, last) epochs (1-based) of the window it was reached in, and
            its last value (the mean of the last ``smooth`` epochs).
    """

    verdict: str
    because: str
    gap: float
    clean_train: float
    val: float
    val_loss_min: float
    val_loss_min_epochs: tuple[int, int]
    val_loss_final: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def diagnose(history: Sequence[dict[str, Any]], rule: DiagnosisRule = RULE) -> Diagnosis:
    """Apply the rule (module docstring) to one run's history rows.

    Args:
        history: per-epoch rows with ``clean_train_accuracy``, ``val_accuracy`` and
            ``val_loss`` (the engine's history plus :class:`~cnnlab.engine.SplitEvaluator`).
        rule: the thresholds.
    """
    last = history[-1]
    tr, va = float(last["clean_train_accuracy"]), float(last["val_accuracy"])
    losses = [float(r["val_loss"]) for r in history]
    w = max(1, min(rule.smooth, len(losses)))
    smoothed = [statistics.fmean(losses[i:i + w]) for i in range(len(losses) - w + 1)]
    k = min(range(len(smoothed)), key=smoothed.__getitem__)
    lo, end = smoothed[k], smoothed[-1]
    gap = tr - va
    rise = end / lo - 1 if lo > 0 else 0.0
    rising = k < len(smoothed) - 1 and rise > rule.rise
    window = f"epochs {k + 1}-{k + w}" if w > 1 else f"epoch {k + 1}"
    nums = (f"clean train {tr:.3f} - val {va:.3f} = gap {gap:+.3f}; val loss (mean of {w} "
            f"epochs) {end:.3f} at the end vs minimum {lo:.3f} ({window}), {rise:+.1%}")
    if gap > rule.gap and rising:
        verdict = "overfitting"
        because = (f"{nums}: gap > {rule.gap:.2f} and the val loss rose more than "
                   f"{rule.rise:.0%} above its minimum")
    elif tr < rule.low and gap <= rule.gap:
        verdict = "underfitting"
        because = f"{nums}: clean train < {rule.low:.2f} and gap <= {rule.gap:.2f}"
    else:
        verdict = "fine"
        why = []
        if gap > rule.gap:
            why.append(f"gap > {rule.gap:.2f} but the val loss has not risen more than "
                       f"{rule.rise:.0%} above its minimum")
        else:
            why.append(f"gap <= {rule.gap:.2f}")
        if tr >= rule.low:
            why.append(f"clean train >= {rule.low:.2f}")
        because = f"{nums}: " + ", ".join(why)
    return Diagnosis(verdict, because, gap, tr, va, lo, (k + 1, k + w), end)


# ---------------------------------------------------------------------------- summaries
def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _pts(x: float) -> str:
    return f"{100 * x:+.1f} points"


def _mean(xs: Sequence[float]) -> float:
    return statistics.fmean(xs)


def _sd(xs: Sequence[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def aug_summary(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per augmentation setting (in plan order): means over its seeds."""
    names = list(dict.fromkeys(r["augment"] for r in runs))
    out = []
    for name in names:
        rs = [r for r in runs if r["augment"] == name]
        last = [r["history"][-1] for r in rs]
        out.append({
            "augment": name, "recipe": rs[0]["recipe"], "seeds": len(rs),
            "logged_train": _mean([h["train_accuracy"] for h in last]),
            "clean_train": _mean([r["final_clean_train_accuracy"] for r in rs]),
            "val": _mean([r["final_val_accuracy"] for r in rs]),
            "val_sd": _sd([r["final_val_accuracy"] for r in rs]),
            "gap": _mean([r["gap"] for r in rs]),
            "gap_sd": _sd([r["gap"] for r in rs]),
            "test": _mean([r["test_accuracy"] for r in rs]),
            "verdicts": [r["diagnosis"] for r in rs],
            "train_seconds": _mean([r["train_seconds"] for r in rs]),
        })
    return out


def transfer_summary(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (backbone, labels per class, strategy): means over seeds."""
    keys = list(dict.fromkeys((r["backbone"], r["labels_per_class"], r["strategy"]) for r in runs))
    out = []
    for b, n, s in keys:
        rs = [r for r in runs if (r["backbone"], r["labels_per_class"], r["strategy"]) == (b, n, s)]
        acc = [r["test_accuracy"] for r in rs]
        out.append({"backbone": b, "labels_per_class": n, "strategy": s, "seeds": len(rs),
                    "test_accuracy": _mean(acc), "test_accuracy_sd": _sd(acc), "accs": acc,
                    "trainable_params": rs[0]["trainable_params"],
                    "total_params": rs[0]["total_params"],
                    "train_seconds": _mean([r["train_seconds"] for r in rs])})
    return out


# ----------------------------------------------------------------------------- findings
def _aug_spread(runs: Sequence[dict[str, Any]], key: str) -> Spread:
    groups = [[r[key] for r in runs if r["augment"] == a]
              for a in dict.fromkeys(r["augment"] for r in runs)]
    n = max((len(g) for g in groups), default=0)
    return Spread(pooled_std(groups), f"pooled std over {n} seeds of each of {len(groups)} "
                                      "augmentation settings")


def aug_findings(runs: Sequence[dict[str, Any]], rule: DiagnosisRule = RULE) -> list[Finding]:
    """Part 1: diagnosis per setting, gap and validation accuracy against the noise, the
    logged-vs-clean training accuracy illusion."""
    if not runs:
        return []
    rows = aug_summary(runs)
    out: list[Finding] = []
    sec = "augmentation"
    for row in rows:
        counts = {v: row["verdicts"].count(v) for v in dict.fromkeys(row["verdicts"])}
        verdicts = ", ".join(f"{v} in {c} of {row['seeds']} seeds" for v, c in counts.items())
        out.append(Finding(
            f"{row['augment']} ({row['recipe']}): diagnosed {verdicts} (rule: {rule.words()}). "
            f"Final clean training accuracy {_pct(row['clean_train'])}, validation "
            f"{_pct(row['val'])}, gap {_pts(row['gap'])}; the accuracy logged during training "
            f"was {_pct(row['logged_train'])}.", verdict="measured", section=sec, headline=True,
            numbers={"clean_train": row["clean_train"], "val": row["val"], "gap": row["gap"]}))
    gap_spread = _aug_spread(runs, "gap")
    val_spread = _aug_spread(runs, "final_val_accuracy")
    base, others = rows[0], rows[1:]
    for row in others:
        n_a, n_b = row["seeds"], base["seeds"]
        v = compare(row["gap"], base["gap"], gap_spread, n_a, n_b)
        noise = gap_spread.words(100, " points")
        if v == NOT_DISTINGUISHABLE:
            text = (f"{row['augment']} vs {base['augment']}: the generalisation gap (clean train "
                    f"- val) {_pts(row['gap'])} vs {_pts(base['gap'])} is {NOT_DISTINGUISHABLE} "
                    f"({noise}).")
        else:
            text = (f"{row['augment']} {'narrowed' if v == 'lower' else 'widened'} the "
                    f"generalisation gap (clean train - val): {_pts(row['gap'])} vs "
                    f"{_pts(base['gap'])} without augmentation ({noise}).")
        out.append(Finding(text, verdict=v, noise=noise, section=sec, headline=True,
                           numbers={"gap": row["gap"], "gap_none": base["gap"]}))
        v = compare(row["val"], base["val"], val_spread, n_a, n_b)
        noise = val_spread.words(100, " points")
        text = (f"Validation accuracy with {row['augment']}: {_pct(row['val'])} vs "
                f"{_pct(base['val'])} without augmentation: "
                + (f"{v} ({noise})." if v != NOT_DISTINGUISHABLE else
                   f"{NOT_DISTINGUISHABLE} ({noise})."))
        out.append(Finding(text, verdict=v, noise=noise, section=sec,
                           numbers={"val": row["val"], "val_none": base["val"]}))
    out += _illusion(runs, sec)
    return out


def _illusion(runs: Sequence[dict[str, Any]], sec: str) -> list[Finding]:
    """Epochs where validation accuracy beat the logged training accuracy, and what the clean
    training accuracy said at those epochs."""
    above = clean_above = total = 0
    for r in runs:
        if r["recipe"] == "none":
            continue
        for h in r["history"]:
            total += 1
            if h["val_accuracy"] > h["train_accuracy"]:
                above += 1
                clean_above += h["clean_train_accuracy"] >= h["val_accuracy"]
    if not total:
        return []
    logged = [r["history"][-1]["train_accuracy"] for r in runs if r["recipe"] != "none"]
    clean = [r["final_clean_train_accuracy"] for r in runs if r["recipe"] != "none"]
    text = (f"The illusion: in {above} of {total} epochs of the augmented runs the validation "
            f"accuracy was above the training accuracy logged during training; at "
            f"{clean_above} of those {above} epochs the clean training accuracy (same weights, "
            f"eval mode, no augmentation) was at or above the validation accuracy. The logged "
            f"number is measured on augmented images with dropout on while the weights still "
            f"move (final epoch: {_pct(_mean(logged))} logged vs {_pct(_mean(clean))} clean, "
            f"mean over the augmented runs), so it understates how well the model fits its "
            f"training images: validation above the logged training accuracy is not a sign of "
            f"a problem, and a gap measured against the logged number cannot show whether "
            f"augmentation made overfitting better or worse.")
    return [Finding(text, verdict="measured", section=sec, headline=True,
                    numbers={"epochs": total, "val_above_logged": above,
                             "clean_at_or_above_val": clean_above})]


def transfer_spread(runs: Sequence[dict[str, Any]]) -> Spread:
    rows = transfer_summary(runs)
    groups = [r["accs"] for r in rows]
    multi = [r for r in rows if r["seeds"] > 1]
    n = max((r["seeds"] for r in rows), default=0)
    return Spread(pooled_std(groups), f"pooled std of test accuracy over {n} seeds of each of "
                                      f"{len(multi)} (backbone, labels, strategy) settings")


def transfer_findings(runs: Sequence[dict[str, Any]], labels: dict[str, str],
                      chance: float) -> list[Finding]:
    """Part 2: per backbone and label budget, every strategy against from-scratch and
    fine-tuning against the linear probe, against the seed-to-seed spread; the frozen
    backbones' bit-for-bit check; what a frozen backbone that 'does not learn' is."""
    if not runs:
        return []
    sec = "transfer"
    rows = transfer_summary(runs)
    spread = transfer_spread(runs)
    noise = spread.words(100, " points")
    by = {(r["backbone"], r["labels_per_class"], r["strategy"]): r for r in rows}
    out: list[Finding] = []
    for b, n in dict.fromkeys((r["backbone"], r["labels_per_class"]) for r in rows):
        here = [r for r in rows if (r["backbone"], r["labels_per_class"]) == (b, n)]
        out.append(Finding(
            f"{b}, {n} labels per class: test accuracy " + "; ".join(
                f"{labels[r['strategy']]} {_pct(r['test_accuracy'])} +- "
                f"{100 * r['test_accuracy_sd']:.1f}" for r in here)
            + f" (mean +- std over {here[0]['seeds']} seeds; chance {_pct(chance)}).",
            section=sec, numbers={r["strategy"]: r["test_accuracy"] for r in here}))
        pairs = [(s, "scratch") for s in ("linear", "partial", "finetune")]
        pairs += [("finetune", "linear"), ("partial", "linear"), ("finetune", "partial")]
        for a, c in pairs:
            ra, rc = by.get((b, n, a)), by.get((b, n, c))
            if ra is None or rc is None:
                continue
            v = compare(ra["test_accuracy"], rc["test_accuracy"], spread, ra["seeds"],
                        rc["seeds"])
            diff = ra["test_accuracy"] - rc["test_accuracy"]
            said = NOT_DISTINGUISHABLE if v == NOT_DISTINGUISHABLE else \
                f"{v} by {100 * abs(diff):.1f} points"
            out.append(Finding(
                f"{b}, {n} labels per class: {labels[a]} vs {labels[c]}: "
                f"{_pct(ra['test_accuracy'])} vs {_pct(rc['test_accuracy'])}, {said} "
                f"({noise}).", verdict=v, noise=noise, section=sec,
                headline=c == "scratch" or (a, c) == ("finetune", "linear"),
                numbers={a: ra["test_accuracy"], c: rc["test_accuracy"]}))
    out += _timing(runs)
    checks = [r for r in runs if r.get("frozen")]
    if checks:
        tensors = sum(r["frozen"]["tensors"] for r in checks)
        same = sum(r["frozen"]["identical"] for r in checks)
        ok = tensors == same
        changed = next((r["frozen"]["changed"] for r in checks if r["frozen"]["changed"]), [])
        out.append(Finding(
            (f"Frozen means frozen: in all {len(checks)} linear-probe and partial-unfreeze "
             f"runs, every frozen backbone tensor ({tensors} compared, parameters and "
             f"batch-norm running statistics alike) is bit-identical to the pretrained one "
             f"after training: the frozen part ran in eval mode inside the training model.")
            if ok else
            (f"NOT frozen: {tensors - same} of {tensors} frozen backbone tensors changed "
             f"during training (first: {', '.join(changed)})."),
            verdict="as expected" if ok else "contrary to the expectation", section=sec,
            headline=True, numbers={"tensors": tensors, "identical": same}))
        lin = [r for r in rows if r["strategy"] == "linear"]
        if lin:
            best = max(lin, key=lambda r: r["test_accuracy"])
            out.append(Finding(
                f"A frozen backbone that 'does not learn' is not a case of vanishing gradients: "
                f"its parameters get no gradient at all (requires_grad is off, so the optimiser "
                f"never sees them; {lin[0]['trainable_params']:,} of "
                f"{lin[0]['total_params']:,} parameters train, the new head), by design. What "
                f"the linear probe can reach is bounded by how well the frozen features separate "
                f"the new classes: here up to {_pct(best['test_accuracy'])} "
                f"({best['labels_per_class']} labels per class; chance {_pct(chance)}).",
                section=sec, numbers={"trainable": lin[0]["trainable_params"],
                                      "total": lin[0]["total_params"]}))
    return out


def _median_iqr(xs: Sequence[float]) -> tuple[float, float | None]:
    if len(xs) < 2:
        return statistics.median(xs), None
    q = statistics.quantiles(xs, n=4)
    return statistics.median(xs), q[2] - q[0]


def _timing(runs: Sequence[dict[str, Any]]) -> list[Finding]:
    """Training time of fine-tuning vs the linear probe, judged against the spread over seeds."""
    out = []
    for b, n in dict.fromkeys((r["backbone"], r["labels_per_class"]) for r in runs):
        t = {s: [r["train_seconds"] for r in runs if (r["backbone"], r["labels_per_class"],
                                                      r["strategy"]) == (b, n, s)]
             for s in ("finetune", "linear")}
        if not t["finetune"] or not t["linear"]:
            continue
        (ma, ia), (mb, ib) = _median_iqr(t["finetune"]), _median_iqr(t["linear"])
        ra, rb = relative_spread(ma, ia), relative_spread(mb, ib)
        ratio = ma / mb
        v = compare_ratio(ratio, ra, rb)
        spreads = " and ".join("n/a" if r is None else f"{r:.0%}" for r in (ra, rb))
        noise = f"relative half-IQR over {len(t['finetune'])} seeds: {spreads}, timed under load"
        said = NOT_DISTINGUISHABLE if v == NOT_DISTINGUISHABLE else f"{ratio:.1f}x {v}"
        out.append(Finding(
            f"{b}, {n} labels per class: full fine-tuning took {ma:.1f} s of training per run, "
            f"the linear probe {mb:.1f} s (median over seeds): {said} ({noise}). The frozen "
            f"backbone needs no backward pass and no update, only the forward one.",
            verdict=v, noise=noise, section="transfer",
            numbers={"finetune_s": ma, "linear_s": mb, "ratio": ratio}))
    return out


def resolution(aug_runs: Sequence[dict[str, Any]], transfer_runs: Sequence[dict[str, Any]],
               notes: Sequence[str]) -> list[str]:
    """The report's first lines: what this budget can and cannot tell apart."""
    out = []
    if aug_runs:
        sv = _aug_spread(aug_runs, "final_val_accuracy")
        sg = _aug_spread(aug_runs, "gap")
        n = aug_summary(aug_runs)[0]["seeds"]
        if sv.value is None:
            out.append("Augmentation: one seed per setting, so no difference between settings "
                       "is distinguishable at this budget.")
        else:
            out.append(f"Augmentation: final validation accuracy varies by "
                       f"{sv.words(100, ' points')}; the gap (clean train - val) by "
                       f"{sg.words(100, ' points')}. Two settings' means over {n} seeds differ "
                       f"only beyond {100 * sv.threshold(n, n):.1f} points (validation "
                       f"accuracy) and {100 * sg.threshold(n, n):.1f} points (gap); smaller "
                       f"differences are {NOT_DISTINGUISHABLE}.")
    if transfer_runs:
        sp = transfer_spread(transfer_runs)
        n = transfer_summary(transfer_runs)[0]["seeds"]
        if sp.value is None:
            out.append("Transfer: one seed per setting, so no difference between strategies is "
                       "distinguishable at this budget.")
        else:
            out.append(f"Transfer: test accuracy varies by {sp.words(100, ' points')}; each seed "
                       f"draws its own labelled images, so this spread includes which few images "
                       f"were labelled. Two strategies' means over {n} seeds differ only beyond "
                       f"{100 * sp.threshold(n, n):.1f} points.")
    return out + list(notes)
