"""The MobileNet study's findings, generated from the numbers and judged against its own noise.

Accuracy comparisons use the seed-to-seed spread measured on the reference configuration
(alpha = rho = 1) of every family, trained with several seeds in every budget
(:func:`accuracy_spread`); timing comparisons use each measurement's spread over repeats. A
difference inside the noise is reported as not distinguishable, never as a winner
(:mod:`cnnlab.studies.findings`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from cnnlab.report import fmt_num
from cnnlab.studies.findings import (
    K,
    NOT_DISTINGUISHABLE,
    Finding,
    Spread,
    compare,
    compare_ratio,
    relative_spread,
)

DEV_NAME = {"cpu": "CPU", "cuda": "GPU"}


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def mmacs(x: float | None) -> str:
    return "-" if x is None else f"{x / 1e6:.1f}M"


def name(row: Mapping[str, Any]) -> str:
    """E.g. "MobileNetV2 a=0.5" or "MobileNetV1 rho=0.75 (21 px)"."""
    label = row["label"]
    if row["width"] != 1.0:
        label += f" a={row['width']:g}"
    if row["resolution"] != 1.0:
        label += f" rho={row['resolution']:g} ({row['input'].split('x')[-1]} px)"
    return label


# ------------------------------------------------------------------------------------ noise
def accuracy_spread(rows: Sequence[Mapping[str, Any]]) -> Spread:
    """Pooled seed-to-seed std of test accuracy over every row trained with >= 2 seeds."""
    ref = [r for r in rows
           if r["trained"] and r["seeds"] > 1 and r["test_accuracy_std"] is not None]
    dof = sum(r["seeds"] - 1 for r in ref)
    if not dof:
        return Spread(None, "every configuration was trained with one seed")
    value = math.sqrt(sum((r["seeds"] - 1) * r["test_accuracy_std"] ** 2 for r in ref) / dof)
    seeds = sorted({r["seeds"] for r in ref})
    return Spread(value, f"pooled std of test accuracy over {'/'.join(map(str, seeds))} seeds of "
                         f"{len(ref)} reference configuration(s): "
                         + ", ".join(name(r) for r in ref))


def _acc_verdict(a: Mapping[str, Any], b: Mapping[str, Any], spread: Spread) -> str:
    return compare(a["test_accuracy"], b["test_accuracy"], spread, a["seeds"], b["seeds"])


def _latency_spread(row: Mapping[str, Any], dev: str) -> float | None:
    return relative_spread(row.get(f"{dev}_latency_ms"), row.get(f"{dev}_latency_iqr_ms"))


def resolution(rows: Sequence[Mapping[str, Any]], spread: Spread) -> list[str]:
    """The report's first lines: what this budget can and cannot tell apart."""
    out = []
    trained = [r for r in rows if r["trained"] and r["test_accuracy"] is not None]
    if spread.value is None:
        out.append("Test accuracy: no seed-to-seed spread was measured (one seed everywhere), so "
                   "no two configurations can be told apart by accuracy.")
    else:
        one = spread.threshold(1, 1)
        n = max(r["seeds"] for r in trained)
        out.append(f"Test accuracy: the seed-to-seed spread measured here is "
                   f"{100 * spread.value:.1f} points ({spread.what}). Two one-seed configurations "
                   f"differ only when more than {100 * one:.1f} points apart ({K:g} x sqrt(2) x "
                   f"s); {n}-seed means when more than {100 * spread.threshold(n, n):.1f} points "
                   "apart.")
        pairs = [(a, b) for i, a in enumerate(trained) for b in trained[i + 1:]]
        same = sum(_acc_verdict(a, b, spread) == NOT_DISTINGUISHABLE for a, b in pairs)
        out.append(f"Of the {len(pairs)} pairs of trained configurations, {same} are "
                   f"{NOT_DISTINGUISHABLE} by accuracy; a ranking among those says nothing.")
    for dev in ("cpu", "cuda"):
        rel = [v for r in rows if (v := _latency_spread(r, dev)) is not None]
        if rel:
            out.append(f"{DEV_NAME[dev]} batch-1 latency: spread over repeats (IQR / 2 median) "
                       f"{100 * min(rel):.1f}-{100 * max(rel):.1f}% per architecture; a latency "
                       f"ratio within {K:g} x the two spreads combined of 1 is "
                       f"{NOT_DISTINGUISHABLE}.")
    out.append("Parameter and MAC counts are exact (the analyzer), so every count comparison "
               "is distinguishable.")
    return out


# --------------------------------------------------------------------------------- accuracy
def _best(trained: Sequence[Mapping[str, Any]], spread: Spread) -> Finding:
    best = max(trained, key=lambda r: r["test_accuracy"])
    ties = [r for r in trained if r is not best and _acc_verdict(r, best, spread) ==
            NOT_DISTINGUISHABLE]
    std = f" +- {100 * best['test_accuracy_std']:.1f}" if best["seeds"] > 1 else ""
    claim = (f"Highest mean test accuracy: {name(best)}, {pct(best['test_accuracy'])}{std} "
             f"(over {best['seeds']} seed(s)), with {mmacs(best['macs'])} MACs and "
             f"{fmt_num(best['params'])} parameters")
    if ties:
        claim += (f"; {NOT_DISTINGUISHABLE} from {len(ties)} other(s): "
                  + ", ".join(f"{name(r)} ({pct(r['test_accuracy'])})" for r in ties)
                  + ", so no single winner")
    return Finding(claim + ".", verdict=NOT_DISTINGUISHABLE if ties else "highest",
                   numbers={"test_accuracy": best["test_accuracy"], "ties": len(ties)},
                   noise=spread.words(100, " points"), section="accuracy", headline=True)


def frontier(rows: Sequence[Mapping[str, Any]], cost: str,
             spread: Spread | None = None) -> list[Mapping[str, Any]]:
    """The Pareto front, cheapest first: each next point is more accurate than the last one by
    more than the noise (without ``spread``: by anything)."""
    front: list[Mapping[str, Any]] = []
    for r in sorted((r for r in rows if r.get(cost) is not None), key=lambda r: r[cost]):
        if not front:
            front.append(r)
        elif spread is None:
            if r["test_accuracy"] > front[-1]["test_accuracy"]:
                front.append(r)
        elif _acc_verdict(r, front[-1], spread) == "higher":
            front.append(r)
    return front


def _front_finding(rows, cost: str, unit: str, fmt, spread: Spread) -> list[Finding]:
    front = frontier(rows, cost, spread)
    if not front:
        return []
    parts = []
    for i, r in enumerate(front):
        upper = f"below {fmt(front[i + 1][cost])}" if i + 1 < len(front) else "and above"
        parts.append(f"{fmt(r[cost])} {upper}: {name(r)} ({pct(r['test_accuracy'])})")
    return [Finding(f"Best accuracy for a given {unit} (Pareto front, cheapest first; a step "
                    "counts only when the gain is outside the noise): " + "; ".join(parts) + ".",
                    verdict="measured", numbers={"front": [r["arch_id"] for r in front]},
                    noise=spread.words(100, " points"), section="accuracy", headline=True)]


# ----------------------------------------------------------------------------------- theory
def _scaling_sentence(entry: Mapping[str, Any], axis: str, role_label: str, dev: str) -> str | None:
    lat = entry.get(f"{dev}_latency_ratio")
    thr = entry.get(f"{dev}_throughput_time_ratio")
    macs = entry["macs_ratio"]
    if macs is None:
        return None
    sym = "alpha" if axis == "width" else "rho"
    text = (f"{role_label} at {sym}={entry[axis]:g}: the analyzer counts {macs:.3f}x the MACs of "
            f"{sym}=1 ({sym}^2 = {entry['predicted_ratio']:.3f}")
    if axis == "width":
        pw = entry.get("pointwise_macs_ratio")
        if pw is not None:
            rounded = abs(pw - entry["predicted_ratio"]) > 0.01 * entry["predicted_ratio"]
            text += (f"; the 1x1 layers alone {pw:.3f}x, above alpha^2 because channel counts "
                     "are rounded to multiples of 8" if rounded else
                     f"; the 1x1 layers alone {pw:.3f}x, exactly alpha^2")
        if macs > entry["predicted_ratio"] * 1.02:
            text += ("; the network as a whole is above alpha^2 because depthwise layers, the "
                     "stem and the classifier scale only with alpha")
    else:
        eff = entry.get("effective_rho2")
        if eff is not None and abs(eff - entry["predicted_ratio"]) > 1e-9:
            text += f"; with the input side rounded to {entry['input_side']} px, {eff:.3f}"
    text += ")"
    if lat is not None:
        text += f". Measured on the {DEV_NAME[dev]}: batch-1 latency {lat:.3f}x"
        if thr is not None:
            text += f", time per image at large batch {thr:.3f}x"
        verdict = _against_macs(lat, macs, entry.get(f"{dev}_latency_spreads"))
        if verdict == "higher":
            text += (". Latency falls less than the MACs, beyond the spread over repeats: each "
                     "layer has a fixed cost (operator dispatch, memory traffic of depthwise and "
                     "activation tensors) that does not shrink with the channel count or the "
                     "map size")
        elif verdict == "lower":
            text += (". Latency falls faster than the MACs, beyond the spread over repeats "
                     "(smaller tensors fit in cache)")
        else:
            text += (f". Latency and MACs ratios are {NOT_DISTINGUISHABLE} (within the spread "
                     "over repeats)")
    return text + "."


def _timing_noise(spreads, dev: str) -> str | None:
    if not spreads or None in spreads:
        return None
    return (f"{DEV_NAME[dev]} batch-1 latency spread over repeats (IQR / 2 median): "
            f"{100 * spreads[0]:.1f}% and {100 * spreads[1]:.1f}%")


def _against_macs(lat_ratio: float, macs_ratio: float, spreads) -> str:
    """Is the latency ratio above (``"higher"``) or below the MACs ratio beyond the latencies'
    spread over repeats? The MACs are exact, so only the two timings carry noise."""
    rel_a, rel_b = spreads or (None, None)
    return compare_ratio(lat_ratio / macs_ratio, rel_a, rel_b)


def _separable(sep: Mapping[str, Any]) -> Finding:
    worst = max(abs(t["ratio"] - t["predicted_ratio"]) for t in sep["layers"])
    text = (f"Depthwise separable vs full 3x3 convolutions, layer by layer: the counted cost "
            f"ratio equals 1/N + 1/Dk^2 within {worst:.1e} in all {len(sep['layers'])} "
            f"layers; the whole MobileNetV1 needs {sep['network_macs_ratio']:.3f}x the MACs of "
            f"Conv MobileNet (paper, 224x224: {sep['paper_224_macs_ratio']:.3f})")
    lat = sep.get("cpu_latency_ratio")
    if lat is not None:
        text += f" and measures {lat:.3f}x its CPU batch-1 latency"
        verdict = _against_macs(lat, sep["network_macs_ratio"], sep.get("cpu_latency_spreads"))
        if verdict == "higher":
            text += (f", {lat / sep['network_macs_ratio']:.1f}x the MACs ratio, a smaller saving "
                     "than the MACs promise (beyond the spread over repeats): depthwise "
                     "convolutions do little arithmetic per byte moved, so they run far below "
                     "the processor's peak")
        elif verdict == NOT_DISTINGUISHABLE:
            text += f" ({NOT_DISTINGUISHABLE} from the MACs ratio, within the spread over repeats)"
    cuda = sep.get("cuda_latency_ratio")
    if cuda is not None:
        text += f"; on the GPU {cuda:.3f}x"
    return Finding(text + ".", verdict="as expected" if worst < 1e-9 else "contrary to Eq. 5",
                   numbers={"max_error": worst, "network_macs_ratio": sep["network_macs_ratio"]},
                   noise=_timing_noise(sep.get("cpu_latency_spreads"), "cpu"),
                   section="theory", headline=True)


def _share(theory: Mapping[str, Any], role: str, label: str) -> Finding | None:
    share = theory["share_1x1"].get(role)
    if not (share and share["macs"] is not None):
        return None
    text = (f"{label}: {share['macs']:.1%} of the conv/linear MACs and "
            f"{share['params']:.1%} of their weights are in 1x1 convolutions")
    if role == "v1":
        text += (f" (paper, 224x224: {theory['paper_share_1x1']['macs']:.2%} of the "
                 f"Mult-Adds and {theory['paper_share_1x1']['params']:.2%} of the "
                 "parameters; its parameter share is lower because its 1000-class "
                 "fully connected layer holds a quarter of the weights, where ours has "
                 f"{theory['num_classes']} outputs)")
    return Finding(text + ".", numbers=dict(share), section="theory", headline=True)


def _v2_vs_resnet(vr: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> Finding:
    base = {r["role"]: r for r in rows if r["width"] == r["resolution"] == 1.0}
    text = f"ResNet-18 has {vr['macs_ratio']:.1f}x the MACs of MobileNetV2"
    noise = []
    for dev in ("cpu", "cuda"):
        lat = vr.get(f"{dev}_latency_ratio")
        if lat is None:
            continue
        ra, rb = (_latency_spread(base[k], dev) for k in ("resnet", "v2"))
        verdict = compare_ratio(lat, ra, rb)
        faster = {"higher": "MobileNetV2 is faster", "lower": "MobileNetV2 is slower",
                  NOT_DISTINGUISHABLE: f"their latencies are {NOT_DISTINGUISHABLE}"}[verdict]
        text += (f"; on the {DEV_NAME[dev]} its batch-1 latency is {lat:.2f}x MobileNetV2's "
                 f"({faster})")
        if ra is not None and rb is not None:
            noise.append(f"{DEV_NAME[dev]} spread over repeats {100 * ra:.1f}% and {100 * rb:.1f}%")
        thr = vr.get(f"{dev}_throughput_ratio")
        if thr is not None:
            text += f", and MobileNetV2's large-batch throughput is {thr:.2f}x ResNet-18's"
    if vr.get("cuda_latency_ratio") is not None and vr["cuda_latency_ratio"] < vr["macs_ratio"] / 2:
        text += (". On the GPU the MACs barely matter: dense 3x3 convolutions run near the "
                 "tensor cores' peak while depthwise layers are memory-bound, and at batch "
                 "1 kernel launches dominate")
    return Finding(text + ".", verdict="measured", numbers=dict(vr),
                   noise="; ".join(noise) or None, section="speed", headline=True)


def findings(rows: Sequence[Mapping[str, Any]], theory: Mapping[str, Any], device: str,
             spread: Spread) -> list[Finding]:
    """Every finding of the study, from its rows and theory tables."""
    trained = [r for r in rows if r["trained"] and r["test_accuracy"] is not None]
    out: list[Finding] = []
    if trained:
        out.append(_best(trained, spread))
        out += _front_finding(trained, "macs", "number of MACs", mmacs, spread)
        for dev in ("cpu", "cuda"):
            key = f"{dev}_latency_ms"
            if any(r[key] is not None for r in trained):
                out += _front_finding(trained, key, f"{DEV_NAME[dev]} batch-1 latency",
                                      lambda v: f"{v:.2f} ms", spread)
    for axis, key in (("width", "alpha"), ("resolution", "rho")):
        for role, label in (("v1", "MobileNetV1"), ("v2", "MobileNetV2")):
            line = theory[key].get(role) or []
            if len(line) > 1:
                for dev in (["cuda", "cpu"] if device == "cuda" else ["cpu"]):
                    s = _scaling_sentence(line[-1], axis, label, dev)
                    if s:
                        out.append(Finding(
                            s, numbers=dict(line[-1]), section="theory", headline=True,
                            noise=_timing_noise(line[-1].get(f"{dev}_latency_spreads"), dev)))
    sep = theory.get("separable")
    if sep and sep["layers"]:
        out.append(_separable(sep))
    for role, label in (("v1", "MobileNetV1"), ("v2", "MobileNetV2")):
        f = _share(theory, role, label)
        if f:
            out.append(f)
    vr = theory.get("v2_vs_resnet")
    if vr and vr["macs_ratio"]:
        out.append(_v2_vs_resnet(vr, rows))
    return out
