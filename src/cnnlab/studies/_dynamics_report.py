"""Findings, tables and plots of the dynamics study, all computed from the measurements.

:func:`findings` turns the results payload into sentences with numbers, choosing the wording
from what was measured (an expectation that did not hold is reported as such);
:func:`write_report` lays out the report; :func:`result_rows` gives the CSV rows.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.report import Report, fmt_num
from cnnlab.studies._dynamics_measure import INIT_SCHEMES
from cnnlab.studies._dynamics_runs import plural

_COLORS = {"zero": "#777777", "constant": "#9467bd", "normal": "#d62728", "xavier": "#ff7f0e",
           "he": "#1f77b4", "default": "#1f77b4"}
# training-error difference below which two depths are not told apart: in our quick-budget
# trials (3 seeds, 5 epochs), one model's final training error varied by up to 0.04 between seeds
_NOISE = 0.02
_IDENTICAL = 1e-6  # relative filter distance below which filters count as identical (rounding)
_SECTIONS = ("init", "symmetry", "flow", "degradation", "batchnorm")


def _f(x: float | None) -> str:
    return fmt_num(x, 3)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ratio_words(r: float) -> str:
    """``x0.70`` style factor, with 'exactly 0' / 'undefined' for degenerate values."""
    if r is None or (isinstance(r, float) and math.isnan(r)):
        return "undefined"
    return f"x{_f(r)}"


def _div(a: float, b: float) -> float:
    return a / b if b else math.nan


# ------------------------------------------------------------------------------ accessors
def _init_cfg(payload: dict, norm: str, init: str) -> dict:
    return next(c for c in payload["init"]["configs"] if c["norm"] == norm and c["init"] == init)


def _runs(payload: dict, section: str) -> list[dict]:
    return [r for r in payload["runs"] if r["spec"]["section"] == section]


def _final_train_error(run: dict) -> float:
    return 1.0 - run["metrics"]["history"][-1]["train_accuracy"]


def _test_error(run: dict) -> float:
    return 1.0 - run["metrics"]["test_accuracy"]


def _label(spec: dict) -> str:
    family = "ResNet" if spec["model"] == "resnet_cifar" else "plain"
    return f"{family}-{spec['depth']}"


def _rms(run: dict) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(steps (S,), rms (S, L), layer names)``: RMS gradient per weight, every layer."""
    g = run["grad_norms"]
    norms = np.asarray(g["norms"], dtype=np.float64)  # (S, L)
    return np.asarray(g["steps"]), norms / np.sqrt(np.asarray(g["numel"], dtype=np.float64)), \
        g["layers"]


def _conv_columns(run: dict) -> list[int]:
    """Indices of the conv layers (not the classifier) in the gradient logs."""
    return [i for i, name in enumerate(run["grad_norms"]["layers"]) if not name.startswith(
        "classifier")]


def flow_summary(run: dict) -> dict[str, float]:
    """First-conv / last-conv RMS gradient ratio at the first step and its median over training."""
    _, rms, _ = _rms(run)
    convs = _conv_columns(run)
    first, last = rms[:, convs[0]], rms[:, convs[-1]]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(last > 0, first / last, np.nan)
    finite = ratio[np.isfinite(ratio)]
    return {"first_rms_step0": float(first[0]), "last_rms_step0": float(last[0]),
            "ratio_step0": float(ratio[0]),
            "ratio_median": float(np.median(finite)) if len(finite) else math.nan,
            "max_conv_grad_norm": float(np.max(np.asarray(run["grad_norms"]["norms"])[:, convs]))}


def symmetry_summary(run: dict) -> dict[str, Any]:
    """Filter distances at init and at the end, filter norms, gradient and accuracy."""
    rec = run["filters"]["records"]
    start, end = rec[0]["layers"], rec[-1]["layers"]
    return {
        "rel_start_min": min(d["relative"] for d in start),
        "rel_start_max": max(d["relative"] for d in start),
        "rel_end_min": min(d["relative"] for d in end),
        "rel_end_max": max(d["relative"] for d in end),
        "norm_start": statistics.fmean(d["mean_norm"] for d in start),
        "norm_end": statistics.fmean(d["mean_norm"] for d in end),
        "change_max": max(d["change"] for d in end),
        "change_min": min(d["change"] for d in end),
        "max_conv_grad_norm": flow_summary(run)["max_conv_grad_norm"],
        "test_accuracy": run["metrics"]["test_accuracy"],
        "final_train_error": _final_train_error(run),
    }


def degradation_table(payload: dict) -> list[dict[str, Any]]:
    """One row per (family, depth): final training/test error, mean and spread over seeds."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in _runs(payload, "degradation"):
        groups.setdefault((r["spec"]["model"], r["spec"]["depth"]), []).append(r)
    rows = []
    for (model, depth), runs in sorted(groups.items()):
        tr = [_final_train_error(r) for r in runs]
        te = [_test_error(r) for r in runs]
        rows.append({"model": model, "family": "ResNet" if model == "resnet_cifar" else "plain",
                     "depth": depth, "seeds": len(runs), "train_error": statistics.fmean(tr),
                     "train_error_spread": max(tr) - min(tr), "test_error": statistics.fmean(te),
                     "test_error_spread": max(te) - min(te),
                     "params": runs[0]["metrics"].get("parameters")})
    return rows


# ------------------------------------------------------------------------------- findings
class _Notes(list):
    """Sentences of one section; headline ones also go to the report's summary."""

    def add(self, text: str, headline: bool = False) -> None:
        self.append({"text": text, "headline": headline})

    def key(self, text: str) -> None:
        """A key finding: also listed in the report's summary."""
        self.add(text, headline=True)


def _init_findings(payload: dict) -> list[str]:
    init = payload["init"]
    depth = init["settings"]["depth"]
    out = _Notes()
    stds = {s: _init_cfg(payload, "none", s) for s in ("zero", "normal", "xavier", "he")}
    parts = []
    for s, c in stds.items():
        v = c["act_std"][-1]
        parts.append(f"{INIT_SCHEMES[s]} {'exactly 0' if c['act_zero'][-1] else _f(v)}")
    out.add(f"Without batch norm, the activation std at layer {depth} (layer 1 -> "
            f"{depth}): " + "; ".join(
            f"{p} (layer 1: {_f(stds[s]['act_std'][0])})" for p, s in zip(parts, stds))
               + ".")
    # per-layer factor, measured (geometric mean over layers 2..L) against theory
    factors = []
    for s in ("normal", "xavier", "he"):
        c = stds[s]
        a0, aL = c["act_std"][0], c["act_std"][-1]
        meas = (aL / a0) ** (1 / (depth - 1)) if a0 > 0 and aL > 0 else 0.0
        th = c["theory_act_std"]
        theo = (th[-1] / th[0]) ** (1 / (depth - 1)) if th[0] > 0 else 0.0
        factors.append(f"{INIT_SCHEMES[s]} {_f(meas)} (theory {_f(theo)})")
    out.add("Per layer, the activation std is multiplied by (geometric mean over layers 2 to "
            f"{depth}): " + "; ".join(factors) + ". He et al. (2015): with ReLU, Var[y_l] = "
            "n_l Var[w_l] Var[y_(l-1)] / 2, so the std factor is sqrt(n Var[w] / 2): 1 for He "
            "(Var[w] = 2/n), sqrt(1/2) = 0.707 for Xavier with equal fan-in and fan-out "
            "(Var[w] = 1/n).")
    he, xa = stds["he"], stds["xavier"]
    he_r = _div(he["act_std"][-1], he["act_std"][0])
    xa_r = _div(xa["act_std"][-1], xa["act_std"][0])
    k = he["networks"]
    he_nets = [_div(n[-1], n[0]) for n in he["act_std_nets"]]
    typical = (f"a typical network (geometric mean over {k} networks; individual networks "
               f"{_ratio_words(min(he_nets))} to {_ratio_words(max(he_nets))})")
    if 0.5 <= he_r <= 2:
        out.key(f"As expected, He init keeps the activation scale within "
                f"2x over {depth} layers: layer {depth} / layer 1 = {_ratio_words(he_r)} for "
                f"{typical}.")
    else:
        out.key(f"Contrary to the expectation, He init did NOT keep the "
                f"activation scale within 2x over {depth} layers: layer {depth} / layer 1 = "
                f"{_ratio_words(he_r)} for {typical}.")
    if xa_r < 0.1:
        out.key(f"As expected, Xavier init with ReLU shrinks the "
                f"activations: {_ratio_words(xa_r)} over {depth} layers (theory "
                f"{_ratio_words(_div(xa['theory_act_std'][-1], xa['theory_act_std'][0]))}).")
    else:
        out.key(f"Contrary to the expectation, Xavier init with ReLU did "
                f"not shrink the activations by more than 10x: {_ratio_words(xa_r)} over {depth} "
                f"layers.")
    # theory vs measurement at the last layer
    def vs_theory(c: dict, key: str) -> str:
        return _f(_div(c["act_std"][-1], c[key][-1]))

    out.add(f"Measured / theory at layer {depth}: He {vs_theory(he, 'theory_act_std')} (theory "
            f"with the zero padding's border loss: {vs_theory(he, 'theory_padded_act_std')}), "
            f"Xavier {vs_theory(xa, 'theory_act_std')} (with padding "
            f"{vs_theory(xa, 'theory_padded_act_std')}). The recursion "
            f"gives the expected variance over random weights. The per-layer gains of one "
            f"finite-width network fluctuate around it and their product over depth is "
            f"roughly log-normal, so a typical network falls below the expectation, more so "
            f"the deeper and narrower the net (Hanin & Rolnick 2018; the spread between "
            f"networks above is this effect). The textbook version also ignores that border "
            f"pixels of a zero-padded 3x3 conv have fewer than 9 inputs; the padded theory "
            f"counts them.")
    # gradients
    g = []
    for s in ("normal", "xavier", "he"):
        c = stds[s]
        g.append(f"{INIT_SCHEMES[s]} {_f(c['grad_std'][0])} vs {_f(c['grad_std'][-1])} "
                 f"({_ratio_words(_div(c['grad_std'][0], c['grad_std'][-1]))})")
    out.add(f"Gradient std with respect to layer 1's vs layer {depth}'s output: " + "; ".join(g)
               + ". He et al.'s backward recursion predicts a factor sqrt(n' Var[w] / 2) per layer "
            "toward the input (n' = fan-out): constant for He, shrinking for Xavier and "
            "normal(0, 0.01): vanishing gradients.")
    z = stds["zero"]
    if all(z["act_zero"]) and all(z["grad_zero"]):
        out.key("Zero init: every activation and every gradient of every layer was exactly 0 "
                "(W x = 0 for every layer, and the gradient reaching each layer is multiplied "
                "by the zero weights above it): nothing can learn except the biases.")
    else:
        nz = sum(not a for a in z["act_zero"])
        out.key(f"Unexpected: with zero init, {nz} layers had non-zero activations.")
    return out


def _symmetry_findings(payload: dict) -> list[str]:
    runs = {r["spec"]["init"]: r for r in _runs(payload, "symmetry")}
    if not runs:
        return []
    s = {k: symmetry_summary(r) for k, r in runs.items()}
    any_run = next(iter(runs.values()))
    out = _Notes()
    accs = ", ".join(f"{INIT_SCHEMES[k]} {_pct(v['test_accuracy'])}" for k, v in s.items())
    out.add(f"{_label(any_run['spec'])} with batch norm, "
            f"{plural(any_run['spec']['epochs'], 'epoch')}, after training: test accuracy {accs}"
           + f" (chance: {_pct(1 / payload['num_classes'])}).")
    if "zero" in s:
        z = s["zero"]
        if z["max_conv_grad_norm"] == 0 and z["norm_end"] == 0 and z["change_max"] == 0:
            out.key(f"Zero init is a dead network, not a symmetric one: the gradient of every "
                    f"conv layer was exactly 0 at every recorded step, so the filters stayed "
                    f"exactly 0 (mean filter norm {_f(z['norm_end'])} after training; their "
                    f"pairwise distance is trivially 0). Only the classifier's biases "
                    f"learned, so the network predicts from the class frequencies alone "
                    f"(test accuracy {_pct(z['test_accuracy'])}).")
        else:
            out.key(f"Unexpected: with zero init the conv gradients were not all zero (max "
                    f"norm {_f(z['max_conv_grad_norm'])}); final filter norm "
                    f"{_f(z['norm_end'])}, relative filter distance up to "
                    f"{_f(z['rel_end_max'])}.")
    if "constant" in s:
        c = s["constant"]
        dist = "exactly 0" if c["rel_end_max"] == 0 else f"at most {_f(c['rel_end_max'])}"
        if c["rel_end_max"] <= _IDENTICAL and c["max_conv_grad_norm"] > 0:
            out.key(f"Constant init is the symmetric case: gradients were non-zero (max conv "
                    f"gradient norm {_f(c['max_conv_grad_norm'])}) and the filters "
                    f"{'moved' if c['change_min'] > 0 else 'did not all move'} (change "
                    f"||W - W_0|| per layer {_f(c['change_min'])}-{_f(c['change_max'])}; "
                    f"mean filter norm {_f(c['norm_start'])} -> {_f(c['norm_end'])}), yet "
                    f"every filter of a layer received the same gradient and they stayed "
                    f"identical: relative pairwise distance {dist} after training (0 at "
                    f"init). Each layer acts as one filter copied many times, so the network "
                    f"learns only what a one-channel network can (test accuracy "
                    f"{_pct(c['test_accuracy'])}).")
        else:
            out.key(f"Constant init: the filters did not stay identical: relative pairwise "
                    f"distance up to {_f(c['rel_end_max'])} after training (threshold "
                    f"{_IDENTICAL:g}); floating-point rounding or a non-symmetric layer broke "
                    f"the symmetry (max conv gradient norm {_f(c['max_conv_grad_norm'])}; "
                    f"test accuracy {_pct(c['test_accuracy'])}).")
    if "he" in s:
        h = s["he"]
        out.add(f"Random (He) init: relative pairwise filter distance "
                f"{_f(h['rel_start_min'])}-{_f(h['rel_start_max'])} at init (sqrt(2) = 1.41 "
                f"for independent random filters), {_f(h['rel_end_min'])}-"
                f"{_f(h['rel_end_max'])} after training; test accuracy "
                f"{_pct(h['test_accuracy'])}.")
    return out


def _flow_pair_text(a: dict, b: dict, what: str) -> str:
    sa, sb = flow_summary(a), flow_summary(b)
    return (f"{what}: RMS gradient of the first conv layer / last conv layer at the first step: "
            f"{_label(a['spec'])} {a['spec']['act']}{'' if a['spec']['norm'] == 'bn' else ' no BN'}"
            f" {_f(sa['ratio_step0'])}, {_label(b['spec'])} {b['spec']['act']}"
            f"{'' if b['spec']['norm'] == 'bn' else ' no BN'} {_f(sb['ratio_step0'])}; median "
            f"over training {_f(sa['ratio_median'])} vs {_f(sb['ratio_median'])}. Final training "
            f"error {_f(_final_train_error(a))} vs {_f(_final_train_error(b))}.")


def _flow_pairs(payload: dict) -> list[tuple[dict, dict, str]]:
    flow = {r["spec"]["act"]: r for r in _runs(payload, "flow")}
    pairs = []
    if "relu" in flow and "sigmoid" in flow:
        pairs.append((flow["sigmoid"], flow["relu"], "Sigmoid vs ReLU, no batch norm"))
    deepest = max(payload["budget"]["depths"])
    deg = {r["spec"]["model"]: r for r in _runs(payload, "degradation")
           if r["spec"]["depth"] == deepest and r["spec"]["seed"] == 0}
    if len(deg) == 2:
        pairs.append((deg["plain_cnn"], deg["resnet_cifar"],
                      f"Plain vs residual, {deepest} layers, batch norm"))
    return pairs


def _flow_findings(payload: dict) -> list[dict[str, Any]]:
    out = _Notes()
    for a, b, what in _flow_pairs(payload):
        out.add(_flow_pair_text(a, b, what))
        ra, rb = flow_summary(a)["ratio_median"], flow_summary(b)["ratio_median"]
        gain = _div(rb, ra)
        if a["spec"]["act"] == "sigmoid":
            if ra < rb:
                out.key(f"The sigmoid net's gradient vanishes toward the "
                        f"input: its first conv layer gets {_f(ra)} of its last conv layer's RMS "
                        f"gradient (median over training), the ReLU net's {_f(rb)}: "
                        f"{_f(gain)}x more, relative to the top, with ReLU (sigmoid' <= 1/4, so "
                        f"every sigmoid layer scales the backward signal down).")
            else:
                out.key(f"Unexpected: the sigmoid net's first/last gradient "
                        f"ratio ({_f(ra)}) is not below the ReLU net's ({_f(rb)}).")
        else:
            if rb > ra:
                out.key(f"The shortcuts carry more gradient to the early layers: first/last "
                        f"conv RMS gradient ratio {_f(rb)} in the residual net vs {_f(ra)} in "
                        f"the plain net ({_f(gain)}x; median over training).")
            else:
                out.key(f"Unexpected: the residual net's first/last gradient ratio ({_f(rb)}) "
                        f"is not above the plain net's ({_f(ra)}) in this run (median over "
                        f"training).")
            a0, b0 = flow_summary(a)["ratio_step0"], flow_summary(b)["ratio_step0"]
            if (b0 > a0) != (rb > ra):
                out.add(f"At the first step the order is reversed: {_f(a0)} in the plain net "
                        f"vs {_f(b0)} in the residual net. At initialisation the deep plain net "
                        f"with batch norm sends a gradient that grows toward the input (section "
                        f"1 measures this on a conv stack); training changes the picture.")
    if out:
        out.add("Both nets of a pair have identical layers, so their ratios compare like with "
                "like; within one net the layers differ in channels and map size (a weight "
                "gradient sums over every position), so one net's ratio alone says little.")
    return out


def _degradation_findings(payload: dict) -> list[str]:
    rows = degradation_table(payload)
    if not rows:
        return []
    epochs = payload["budget"]["epochs"]
    by = {(r["family"], r["depth"]): r for r in rows}
    depths = sorted({r["depth"] for r in rows})
    seeds = rows[0]["seeds"]
    mean = " (mean of %d seeds)" % seeds if seeds > 1 else ""
    out = _Notes()
    out.add(f"Training error after {epochs} epochs{mean}: " + "; ".join(
            f"{fam} " + ", ".join(f"{d} layers {_f(by[(fam, d)]['train_error'])}" for d in depths)
        for fam in ("plain", "ResNet")) + ". Test error: " + "; ".join(
            f"{fam} " + ", ".join(f"{d} layers {_f(by[(fam, d)]['test_error'])}" for d in depths)
        for fam in ("plain", "ResNet")) + ".")
    lo, hi = depths[0], depths[-1]
    p_lo, p_hi = by[("plain", lo)]["train_error"], by[("plain", hi)]["train_error"]
    r_lo, r_hi = by[("ResNet", lo)]["train_error"], by[("ResNet", hi)]["train_error"]
    p_seq = [by[("plain", d)]["train_error"] for d in depths]
    monotone = len(depths) > 2 and all(b > a for a, b in zip(p_seq, p_seq[1:], strict=False))
    # differences smaller than this are not called an effect: the spread between seeds, and at
    # least _NOISE (run-to-run noise of one seed on a few thousand images)
    margin = max([_NOISE] + [r["train_error_spread"] for r in rows])
    noise = (f"differences below {_f(margin)} (the largest spread between seeds, at least "
             f"{_f(_NOISE)}) are treated as noise" if seeds > 1 else
             f"one seed: differences below {_f(margin)} are treated as noise")
    if p_hi - p_lo > margin:
        out.key(f"Degradation appeared: the {hi}-layer plain net has a "
                f"higher *training* error than the {lo}-layer one ({_f(p_hi)} vs {_f(p_lo)}"
                f"{', rising with every added depth' if monotone else ''}; {noise}). The deeper "
                f"net could represent the shallower one (extra layers as identities), so this "
                f"is an optimisation difficulty, not overfitting.")
    else:
        out.key(f"Degradation did NOT appear in this budget: the {hi}-layer "
                f"plain net's training error ({_f(p_hi)}) is not above the {lo}-layer one's "
                f"({_f(p_lo)}) by more than {_f(margin)} ({noise}). It needs more training "
                f"(budget standard) to show.")
    if r_hi - r_lo <= margin:
        out.key(f"The residual nets do not degrade: ResNet-{hi} "
                f"{_f(r_hi)} vs ResNet-{lo} {_f(r_lo)} training error (within {_f(margin)} or "
                f"lower); ResNet-{hi} is {_f(p_hi - r_hi)} below plain-{hi}.")
    else:
        out.key(f"The residual nets also degrade in this budget: ResNet-"
                f"{hi} {_f(r_hi)} vs ResNet-{lo} {_f(r_lo)} training error"
                f"{f', though {_f(p_hi - r_hi)} below plain-{hi}' if r_hi < p_hi else ''}.")
    return out


def _batchnorm_findings(payload: dict) -> list[str]:
    depth = payload["init"]["settings"]["depth"]
    out = _Notes()
    bn = [_init_cfg(payload, "bn", s) for s in ("normal", "xavier", "he")]
    lo = min(min(c["act_std"]) for c in bn)
    hi = max(max(c["act_std"]) for c in bn)
    zero_bn = all(_init_cfg(payload, "bn", "zero")["act_zero"])
    out.key(f"At initialisation, batch norm resets every layer's pre-activation std to "
            f"{_f(lo)}-{_f(hi)} (all {depth} layers, normal(0, 0.01), Xavier and He alike), "
            f"so the forward signal no longer depends on the init scale; zero init stays "
            f"exactly 0 with batch norm too ({'confirmed' if zero_bn else 'NOT confirmed'}).")
    he_bn = _init_cfg(payload, "bn", "he")
    he = _init_cfg(payload, "none", "he")
    r_bn = _div(he_bn["grad_std"][0], he_bn["grad_std"][-1])
    r = _div(he["grad_std"][0], he["grad_std"][-1])
    trend = ("grows toward the input" if r_bn > 2 else "shrinks toward the input" if r_bn < 0.5
             else "stays within 2x")
    out.key(f"Backward, batch norm does not make the gradients uniform in this deep plain "
            f"net: with He init and batch norm the gradient std {trend} (layer 1 / layer "
            f"{depth}: {_ratio_words(r_bn)}; without batch norm {_ratio_words(r)})."
               if trend != "stays within 2x" else
            f"With He init and batch norm the gradient std stays within 2x across the "
            f"{depth} layers ({_ratio_words(r_bn)}; without batch norm {_ratio_words(r)}).")
    flow = {r["spec"]["act"]: r for r in _runs(payload, "flow")}
    fd = payload["budget"]["flow_depth"]
    bn_twin = next((r for r in _runs(payload, "degradation") if r["spec"]["model"] == "plain_cnn"
                    and r["spec"]["depth"] == fd and r["spec"]["seed"] == 0), None)
    if "relu" in flow and bn_twin is not None:
        a, b = flow["relu"], bn_twin
        out.add(f"Training the {fd}-layer plain ReLU net: without batch norm (lr "
                f"{a['spec']['lr']}, He init) the final training error is "
                f"{_f(_final_train_error(a))} after {a['spec']['epochs']} epochs; with batch "
                f"norm (lr {b['spec']['lr']}) {_f(_final_train_error(b))} after "
                f"{b['spec']['epochs']} epochs (different learning rates and budgets: not a "
                f"controlled comparison; the trials behind the no-BN learning rate are in "
                f"section 3).")
    return out


def findings(payload: dict) -> dict[str, list[dict[str, Any]]]:
    """The report's sentences per section, ``{"text", "headline"}`` each, from the payload."""
    return {"init": _init_findings(payload), "symmetry": _symmetry_findings(payload),
            "flow": _flow_findings(payload), "degradation": _degradation_findings(payload),
            "batchnorm": _batchnorm_findings(payload)}


# ---------------------------------------------------------------------------------- plots
def _fig(w: float, h: float, ncols: int = 1, nrows: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _init_figure(payload: dict, norm: str):
    depth = payload["init"]["settings"]["depth"]
    fig, axes = _fig(11, 4.2, ncols=2)
    layers = np.arange(1, depth + 1)
    notes = []
    for ax, what in zip(axes[0], ("act", "grad"), strict=True):
        for s in ("zero", "normal", "xavier", "he"):
            c = _init_cfg(payload, norm, s)
            vals = np.asarray(c[f"{what}_std"])
            if not (vals > 0).any():
                if what == "act":
                    notes.append(f"{INIT_SCHEMES[s]}: exactly 0 at every layer")
                continue
            vals = np.where(vals > 0, vals, np.nan)
            for net in c[f"{what}_std_nets"]:
                net = np.asarray(net)
                ax.plot(layers, np.where(net > 0, net, np.nan), "-", lw=0.6, alpha=0.35,
                        color=_COLORS[s])
            ax.plot(layers, vals, "o-", ms=3, color=_COLORS[s],
                    label=f"{INIT_SCHEMES[s]} (geometric mean; thin: each network)")
            if f"theory_{what}_std" in c:
                ax.plot(layers, c[f"theory_{what}_std"], "--", color=_COLORS[s], lw=1,
                        label=f"{INIT_SCHEMES[s]}, theory")
        ax.set_yscale("log")
        lo, hi = ax.get_ylim()
        if hi / lo < 100:  # at least two decades: +-1% must not look like a cliff
            mid = math.sqrt(lo * hi)
            ax.set_ylim(mid / 10, mid * 10)
        ax.set_xlabel("layer")
        ax.set_ylabel("std of the pre-activation y_l" if what == "act"
                      else "std of dL/dy_l")
        ax.grid(True, which="major", alpha=0.3)
    title = "no batch norm" if norm == "none" else "with batch norm"
    axes[0][0].set_title(f"activations, {title}")
    axes[0][1].set_title(f"gradients, {title}")
    axes[0][0].legend(fontsize=7, title="; ".join(notes) or None, title_fontsize=7)
    return fig


def _symmetry_figure(payload: dict):
    runs = _runs(payload, "symmetry")
    fig, axes = _fig(11, 4, ncols=2)
    ax = axes[0][0]
    for r in runs:
        rec = r["filters"]["records"]
        steps = [x["step"] for x in rec]
        rel = np.array([[d["relative"] for d in x["layers"]] for x in rec])  # (S, layers)
        init = r["spec"]["init"]
        # zero and constant init both sit at 0: a thick dashed line keeps zero visible
        style = {"ls": "--", "lw": 3} if init == "zero" else {"ls": "-", "lw": 1.5}
        ax.plot(steps, rel.mean(1), color=_COLORS[init], label=INIT_SCHEMES[init], **style)
        ax.fill_between(steps, rel.min(1), rel.max(1), color=_COLORS[init], alpha=0.2)
    ax.set_xlabel("training step")
    ax.set_ylabel("mean pairwise filter distance / mean filter norm")
    ax.set_title("how different the filters of a layer are (band: min-max over layers)")
    ax.legend(fontsize=8)
    ax = axes[0][1]
    names = [INIT_SCHEMES[r["spec"]["init"]] for r in runs]
    acc = [100 * r["metrics"]["test_accuracy"] for r in runs]
    ax.bar(names, acc, color=[_COLORS[r["spec"]["init"]] for r in runs])
    ax.axhline(10, color="k", ls=":", lw=1, label="chance (10 classes)")
    for i, a in enumerate(acc):
        ax.text(i, a + 1, f"{a:.1f}%", ha="center", fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("after the same training")
    ax.legend(fontsize=8)
    return fig


def _flow_heatmaps(payload: dict):
    pairs = _flow_pairs(payload)
    fig, axes = _fig(11, 3.6 * max(1, len(pairs)), ncols=2, nrows=max(1, len(pairs)))
    for row, (a, b, _what) in zip(axes, pairs, strict=False):
        logs = [np.log10(np.where(_rms(r)[1] > 0, _rms(r)[1], np.nan)) for r in (a, b)]
        finite = np.concatenate([v[np.isfinite(v)] for v in logs])
        vmin, vmax = np.percentile(finite, 1), np.percentile(finite, 99)  # shared by the pair
        for ax, r, lg in zip(row, (a, b), logs, strict=True):
            steps = _rms(r)[0]
            im = ax.imshow(lg.T, aspect="auto", origin="lower", cmap="viridis", vmin=vmin,
                           vmax=vmax, extent=(steps[0], steps[-1] + 1, 0.5, lg.shape[1] + 0.5),
                           interpolation="nearest")
            s = r["spec"]
            ax.set_title(f"{_label(s)}, {s['act']}, {'BN' if s['norm'] == 'bn' else 'no BN'}",
                         fontsize=9)
            ax.set_xlabel("training step")
            ax.set_ylabel("layer (1 = input side)")
        fig.colorbar(im, ax=list(row), label="log10 RMS gradient per weight", shrink=0.9)
    return fig


def _flow_lines(payload: dict):
    pairs = _flow_pairs(payload)
    fig, axes = _fig(11, 4, ncols=max(1, len(pairs)))
    for ax, (a, b, what) in zip(axes[0], pairs, strict=False):
        for r, ls in ((a, "-"), (b, "--")):
            steps, rms, _ = _rms(r)
            convs = _conv_columns(r)
            picks = {"first": convs[0], "middle": convs[len(convs) // 2], "last": convs[-1]}
            s = r["spec"]
            for (name, col), color in zip(picks.items(), ("#d62728", "#2ca02c", "#1f77b4"),
                                          strict=True):
                vals = np.where(rms[:, col] > 0, rms[:, col], np.nan)
                ax.plot(steps, vals, ls, color=color, lw=1.2,
                        label=f"{_label(s)} {s['act']}: {name} conv (layer {col + 1})")
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("RMS gradient per weight")
        ax.set_title(what, fontsize=10)
        ax.legend(fontsize=7)
    return fig


def _degradation_figure(payload: dict):
    runs = [r for r in _runs(payload, "degradation") if r["spec"]["seed"] == 0]
    depths = sorted({r["spec"]["depth"] for r in runs})
    cmap = {d: c for d, c in zip(depths, ("#2ca02c", "#1f77b4", "#ff7f0e", "#d62728",
                                          "#9467bd", "#8c564b", "#e377c2"), strict=False)}
    fig, axes = _fig(11, 4.2, ncols=2)
    for ax, model, title in ((axes[0][0], "plain_cnn", "plain"),
                             (axes[0][1], "resnet_cifar", "ResNet")):
        for r in runs:
            if r["spec"]["model"] != model:
                continue
            d = r["spec"]["depth"]
            hist = r["metrics"]["history"]
            ax.plot([h["epoch"] for h in hist], [100 * (1 - h["train_accuracy"]) for h in hist],
                    "-", color=cmap[d], label=f"{title}-{d} train")
            tc = r["test_curve"]
            ax.plot([t["epoch"] for t in tc], [100 * t["test_error"] for t in tc], "--",
                    color=cmap[d], lw=1, label=f"{title}-{d} test")
        ax.set_xlabel("epoch")
        ax.set_ylabel("error (%)")
        ax.set_title(f"{title} nets (seed 0): training (solid) and test (dashed) error")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    # the same y range on both panels, as in He et al.'s Fig. 6
    lo = min(a.get_ylim()[0] for a in axes[0])
    hi = max(a.get_ylim()[1] for a in axes[0])
    for a in axes[0]:
        a.set_ylim(lo, hi)
    return fig


def _depth_figure(payload: dict):
    rows = degradation_table(payload)
    fig, axes = _fig(5.5, 4)
    ax = axes[0][0]
    for fam, color in (("plain", "#d62728"), ("ResNet", "#1f77b4")):
        rr = [r for r in rows if r["family"] == fam]
        ax.errorbar([r["depth"] for r in rr], [100 * r["train_error"] for r in rr],
                    yerr=[50 * r["train_error_spread"] for r in rr], fmt="o-", color=color,
                    label=f"{fam}, training")
        ax.plot([r["depth"] for r in rr], [100 * r["test_error"] for r in rr], "s--",
                color=color, lw=1, label=f"{fam}, test")
    ax.set_xlabel("depth (weighted layers)")
    ax.set_ylabel("final error (%)")
    ax.set_title("final error vs depth")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


# --------------------------------------------------------------------------------- report
def _init_table(payload: dict) -> list[dict[str, Any]]:
    rows = []
    for c in payload["init"]["configs"]:
        rows.append({
            "norm": "BN" if c["norm"] == "bn" else "none", "init": INIT_SCHEMES[c["init"]],
            "act_1": 0.0 if c["act_zero"][0] else c["act_std"][0],
            "act_L": 0.0 if c["act_zero"][-1] else c["act_std"][-1],
            "theory_L": c.get("theory_act_std", [None])[-1],
            "theory_pad_L": c.get("theory_padded_act_std", [None])[-1],
            "grad_1": 0.0 if c["grad_zero"][0] else c["grad_std"][0],
            "grad_L": 0.0 if c["grad_zero"][-1] else c["grad_std"][-1],
            "theory_grad_1": c.get("theory_grad_std", [None])[0],
        })
    return rows


def result_rows(payload: dict) -> list[dict[str, Any]]:
    """``results.csv``: one row per section-1 configuration and one per training run."""
    rows = []
    for c in payload["init"]["configs"]:
        rows.append({"section": "init", "key": f"init-{c['norm']}-{c['init']}",
                     "model": "conv_stack", "depth": payload["init"]["settings"]["depth"],
                     "norm": c["norm"], "act": "relu", "init": c["init"],
                     "act_std_first": c["act_std"][0], "act_std_last": c["act_std"][-1],
                     "theory_act_std_last": c.get("theory_act_std", [None])[-1],
                     "grad_std_first": c["grad_std"][0], "grad_std_last": c["grad_std"][-1]})
    for r in payload["runs"]:
        s, m = r["spec"], r["metrics"]
        fs = flow_summary(r)
        rows.append({"section": s["section"], "key": s["key"], "model": s["model"],
                     "depth": s["depth"], "norm": s["norm"], "act": s["act"], "init": s["init"],
                     "seed": s["seed"], "epochs": s["epochs"], "lr": s["lr"],
                     "final_train_error": _final_train_error(r), "test_error": _test_error(r),
                     "grad_ratio_first_last_step0": fs["ratio_step0"],
                     "grad_ratio_first_last_median": fs["ratio_median"],
                     "parameters": m.get("parameters"), "wall_time_s": m.get("wall_time_s"),
                     "reused": r["reused"]})
    return rows


def write_report(out: Path, payload: dict) -> tuple[Path, Path]:
    """Write ``report.md``, ``report.html`` and ``plots/`` for a finished payload."""
    b = payload["budget"]
    f = payload["findings"]
    rep = Report(out, payload["title"])
    env = payload["environment"]
    rep.text(f"Data: **{payload['dataset']}** ({payload['data_source']}); budget "
             f"**{b['name']}**; device {env['device']}; wall time "
             f"{payload['wall_time_s']:.0f} s ({payload['runs_trained']} runs trained, "
             f"{payload['runs_reused']} reused from an earlier invocation). Every number in this "
             f"report was measured by this invocation (or the earlier one whose runs it reused).")
    if b["name"] == "smoke":
        rep.text("**Budget smoke checks the pipeline only: its training runs are far too short "
                 "for sections 2 to 4 to mean anything.** Section 1 (no training) is meaningful.")
    rep.section("Findings")
    rep.bullets([n["text"] for k in _SECTIONS for n in f[k] if n["headline"]])

    s = payload["init"]["settings"]
    rep.section("1. Initialisation at depth")
    rep.text(f"A plain stack of {s['depth']} 3x3 conv layers with {s['width']} channels each "
             f"(stride 1, zero padding, {s['image_size'][0]}x{s['image_size'][1]} maps, then "
             f"global average pooling and a linear classifier), in float64, at initialisation; "
             f"{s['networks']} networks with different random weights per init (one for zero "
             f"init), their per-layer geometric mean reported. "
             f"One forward and backward pass of the cross-entropy loss on {s['batch']} real "
             f"training images (stratified); std of every layer's pre-activation y_l (the conv "
             f"output, after batch norm when present) and of dL/dy_l. Biases 0. Dashed: He et "
             f"al. (2015)'s recursion (forward from the measured input, backward from the "
             f"measured last layer).")
    rep.bullets(n["text"] for n in f["init"])
    rep.table(_init_table(payload), [
        ("norm", "norm", None), ("init", "init", None),
        ("act_1", "act std, layer 1", None), ("act_L", f"act std, layer {s['depth']}", None),
        ("theory_L", "theory", None), ("theory_pad_L", "theory, zero padding", None),
        ("grad_1", "grad std, layer 1", None), ("grad_L", f"grad std, layer {s['depth']}", None),
        ("theory_grad_1", "theory, layer 1", None)],
        caption="Per-layer std at initialisation (0 = exactly zero everywhere).")
    rep.figure(_init_figure(payload, "none"), "init_std_no_bn",
               "Std of activations and gradients per layer at initialisation, no batch norm "
               "(log scale; dashed: theory).")
    rep.figure(_init_figure(payload, "bn"), "init_std_bn",
               "The same with batch norm after every conv.")

    sym = _runs(payload, "symmetry")
    if sym:
        sp = sym[0]["spec"]
        rep.section("2. Symmetry: zero and constant initialisation")
        rep.text(f"{_label(sp)} (plain CNN, batch norm, ReLU) trained for "
                 f"{plural(sp['epochs'], 'epoch')} on {_subset_words(payload)} from three "
                 f"initialisations of every conv and linear weight: zero, constant (every "
                 f"weight 1/fan_in: all filters of a layer equal) and He. Filter distance: mean "
                 f"L2 distance between all pairs of filters of a layer, divided by the mean "
                 f"filter norm.")
        rep.bullets(n["text"] for n in f["symmetry"])
        rep.table([{"init": INIT_SCHEMES[r["spec"]["init"]], **symmetry_summary(r)} for r in sym], [
            ("init", "init", None), ("rel_start_max", "filter distance at init (max)", None),
            ("rel_end_min", "after training (min)", None),
            ("rel_end_max", "after training (max)", None),
            ("norm_start", "filter norm at init", None), ("norm_end", "after", None),
            ("change_max", "max ||W - W_0||", None),
            ("max_conv_grad_norm", "max conv grad norm", None),
            ("final_train_error", "final training error", None),
            ("test_accuracy", "test accuracy", _pct)])
        rep.figure(_symmetry_figure(payload), "symmetry",
                   "Left: relative pairwise filter distance during training. Right: test "
                   "accuracy after the same training.")

    rep.section("3. Vanishing gradients: gradient flow during training")
    fl = _runs(payload, "flow")
    if fl:
        rep.text(f"Gradient norm of every conv and linear weight, logged by a training callback "
                 f"every {_every_words(fl[0]['grad_norms']['every'])}, shown as the RMS "
                 f"gradient per "
                 f"weight (norm / sqrt(number of weights)) so that layers of different sizes "
                 f"compare. Sigmoid vs ReLU: {fl[0]['spec']['depth']}-layer plain nets without "
                 f"batch norm, He init, lr {fl[0]['spec']['lr']} (a design choice: while "
                 f"building this study, larger rates left the 20-layer plain ReLU net without "
                 f"batch norm at chance), {plural(fl[0]['spec']['epochs'], 'epoch')}. "
                 f"Plain vs residual: the deepest pair of section 4 (batch norm).")
    rep.bullets(n["text"] for n in f["flow"])
    rep.table([{"run": f"{_label(r['spec'])} {r['spec']['act']}"
                       f"{'' if r['spec']['norm'] == 'bn' else ' no BN'}", **flow_summary(r),
                "train_error": _final_train_error(r)}
               for a, b, _ in _flow_pairs(payload) for r in (a, b)], [
        ("run", "run", None), ("first_rms_step0", "first conv RMS grad, step 0", None),
        ("last_rms_step0", "last conv, step 0", None),
        ("ratio_step0", "first / last, step 0", None),
        ("ratio_median", "first / last, median over training", None),
        ("train_error", "final training error", None)])
    rep.figure(_flow_heatmaps(payload), "gradient_flow_heatmaps",
               "RMS gradient per weight, layer x training step (log colour scale shared within "
               "each pair).")
    rep.figure(_flow_lines(payload), "gradient_flow_lines",
               "First, middle and last conv layer's RMS gradient during training.")

    rep.section("4. Degradation: plain vs residual networks at several depths")
    rep.text(f"He et al. (2016)'s CIFAR networks (3x3 convs, 16/32/64 channels in three stages, "
             f"batch norm, option-A shortcuts for the ResNets; a plain net is the same without "
             f"the shortcut sums), model-default He (fan-out) init, trained on "
             f"{_subset_words(payload)} for {b['epochs']} epochs: SGD (Nesterov momentum 0.9), "
             f"lr {_runs(payload, 'degradation')[0]['spec']['lr']} (He et al. 2016), weight "
             f"decay 1e-4, batch {b['batch_size']}, cosine schedule after a 10% warm-up, "
             f"no augmentation. Training error: the running error over each epoch (training "
             f"mode); test error measured after every epoch.")
    rep.bullets(n["text"] for n in f["degradation"])
    rep.table(degradation_table(payload), [
        ("family", "net", None), ("depth", "depth", None), ("params", "parameters", None),
        ("seeds", "seeds", None), ("train_error", "final training error", None),
        ("train_error_spread", "spread over seeds", None), ("test_error", "test error", None)])
    rep.figure(_degradation_figure(payload), "degradation_curves",
               "Training (solid) and test (dashed) error per epoch (He et al. 2016, Fig. 6, "
               "at small scale).")
    rep.figure(_depth_figure(payload), "degradation_vs_depth",
               "Final training and test error against depth (bars: spread over seeds).")

    rep.section("5. Batch norm on/off")
    rep.bullets(n["text"] for n in f["batchnorm"])

    rep.section("Settings and provenance")
    rep.table([{"run": r["spec"]["key"], "what": _label(r["spec"]),
                "norm": r["spec"]["norm"], "act": r["spec"]["act"],
                "init": INIT_SCHEMES[r["spec"]["init"]], "lr": r["spec"]["lr"],
                "epochs": r["spec"]["epochs"], "time_s": r["metrics"].get("wall_time_s"),
                "reused": r["reused"]} for r in payload["runs"]],
              caption="Training runs (folders under runs/).")
    rep.code("\n".join(f"{k}: {v}" for k, v in {**b, **env}.items()))
    return rep.write()




def _every_words(every: int) -> str:
    return "step" if every == 1 else f"{every} steps"


def _subset_words(payload: dict) -> str:
    b = payload["budget"]
    n = "the whole training set" if b["subset"] is None else f"{b['subset']:,} training images"
    res = "" if b["resolution"] == 1 else f" at resolution x{b['resolution']:g}"
    return n + res
