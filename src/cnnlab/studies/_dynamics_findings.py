"""The dynamics study's findings: sentences with numbers, worded from what was measured (an
expectation that did not hold is reported as such), each a
:class:`~cnnlab.studies.findings.Finding`.

Degradation (section 4) compares training errors against the seed-to-seed spread measured in the
same invocation on the reference depth (the smallest), trained with ``budget.noise_seeds`` seeds.
"""

from __future__ import annotations

from typing import Any

from cnnlab.studies._dynamics_measure import INIT_SCHEMES
from cnnlab.studies._dynamics_runs import plural
from cnnlab.studies._dynamics_summary import (
    _div,
    _f,
    _final_train_error,
    _flow_pairs,
    _init_cfg,
    _label,
    _pct,
    _ratio_words,
    _runs,
    degradation_table,
    flow_summary,
    symmetry_summary,
)
from cnnlab.studies.findings import NOT_DISTINGUISHABLE, Finding

_IDENTICAL = 1e-6  # relative filter distance below which filters count as identical (rounding)
SECTIONS = ("init", "symmetry", "flow", "degradation", "batchnorm")


# ------------------------------------------------------------------------------- findings
class _Notes(list):
    """The findings of one section, in order; ``key`` ones also head the report."""

    def __init__(self, section: str) -> None:
        super().__init__()
        self.section = section

    def add(self, text: str, headline: bool = False, **judged: Any) -> None:
        """``judged``: ``verdict``, ``numbers``, ``noise`` of :class:`Finding`."""
        self.append(Finding(text, section=self.section, headline=headline, **judged))

    def key(self, text: str, **judged: Any) -> None:
        """A key finding: also listed in the report's summary."""
        self.add(text, headline=True, **judged)


def _init_findings(payload: dict) -> list[Finding]:
    init = payload["init"]
    depth = init["settings"]["depth"]
    out = _Notes("init")
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


def _symmetry_findings(payload: dict) -> list[Finding]:
    runs = {r["spec"]["init"]: r for r in _runs(payload, "symmetry")}
    if not runs:
        return []
    s = {k: symmetry_summary(r) for k, r in runs.items()}
    any_run = next(iter(runs.values()))
    out = _Notes("symmetry")
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


def _flow_findings(payload: dict) -> list[Finding]:
    out = _Notes("flow")
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


def _degradation_findings(payload: dict) -> list[Finding]:
    rows = degradation_table(payload)
    if not rows:
        return []
    epochs = payload["budget"]["epochs"]
    by = {(r["family"], r["depth"]): r for r in rows}
    depths = sorted({r["depth"] for r in rows})
    seeds = rows[0]["seeds"]
    mean = " (mean of %d seeds)" % seeds if seeds > 1 else ""
    out = _Notes("degradation")
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
    # the noise: the largest seed-to-seed range of the final training error, measured on the
    # reference depth (budget.noise_seeds seeds) and wherever else several seeds were trained
    spreads = [r["train_error_spread"] for r in rows if r["seeds"] > 1]
    margin = max(spreads) if spreads else float("inf")
    ref = [f"{r['family']}-{r['depth']}" for r in rows if r["seeds"] > 1]
    noise = (f"differences up to {_f(margin)}, the largest range between the seeds of "
             f"{', '.join(ref)}, are {NOT_DISTINGUISHABLE}" if spreads else
             "one seed everywhere: no difference is distinguishable at this budget")
    judged = {"noise": noise, "numbers": {"plain_lo": p_lo, "plain_hi": p_hi, "resnet_lo": r_lo,
                                          "resnet_hi": r_hi, "margin": margin}}
    if p_hi - p_lo > margin:
        out.key(verdict="higher", **judged,
                text=f"Degradation appeared: the {hi}-layer plain net has a "
                f"higher *training* error than the {lo}-layer one ({_f(p_hi)} vs {_f(p_lo)}"
                f"{', rising with every added depth' if monotone else ''}; {noise}). The deeper "
                f"net could represent the shallower one (extra layers as identities), so this "
                f"is an optimisation difficulty, not overfitting.")
    else:
        out.key(verdict=NOT_DISTINGUISHABLE, **judged,
                text=f"Degradation did NOT appear in this budget: the {hi}-layer "
                f"plain net's training error ({_f(p_hi)}) is not above the {lo}-layer one's "
                f"({_f(p_lo)}) by more than the noise ({noise}). It needs more training "
                f"(budget standard) to show.")
    if r_hi - r_lo <= margin:
        out.key(verdict=NOT_DISTINGUISHABLE, **judged,
                text=f"The residual nets do not degrade: ResNet-{hi} "
                f"{_f(r_hi)} vs ResNet-{lo} {_f(r_lo)} training error (within the noise, "
                f"{_f(margin)}, or lower); ResNet-{hi} is {_f(p_hi - r_hi)} below plain-{hi}.")
    else:
        out.key(verdict="higher", **judged,
                text=f"The residual nets also degrade in this budget: ResNet-"
                f"{hi} {_f(r_hi)} vs ResNet-{lo} {_f(r_lo)} training error"
                f"{f', though {_f(p_hi - r_hi)} below plain-{hi}' if r_hi < p_hi else ''}.")
    return out


def _batchnorm_findings(payload: dict) -> list[Finding]:
    depth = payload["init"]["settings"]["depth"]
    out = _Notes("batchnorm")
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


def findings(payload: dict) -> dict[str, list[Finding]]:
    """The report's findings per section (:data:`SECTIONS`), from the payload."""
    return {"init": _init_findings(payload), "symmetry": _symmetry_findings(payload),
            "flow": _flow_findings(payload), "degradation": _degradation_findings(payload),
            "batchnorm": _batchnorm_findings(payload)}


def resolution(payload: dict) -> list[str]:
    """The report's first lines: what this budget can and cannot tell apart."""
    rows = degradation_table(payload)
    ref = [r for r in rows if r["seeds"] > 1]
    out = []
    if ref:
        margin = max(r["train_error_spread"] for r in ref)
        names = ", ".join(f"{r['family']}-{r['depth']}" for r in ref)
        out.append(f"Final training error: the seeds of {names} ({ref[0]['seeds']} each) spread "
                   f"over up to {_f(margin)}; differences in training error up to {_f(margin)} "
                   f"are {NOT_DISTINGUISHABLE} (sections 3 and 4).")
    else:
        out.append("Final training error: every net was trained with one seed, so no difference "
                   "in training error is distinguishable at this budget.")
    s = payload["init"]["settings"]
    out.append(f"Initialisation (section 1) involves no training: every per-layer std is shown "
               f"for each of {s['networks']} random networks beside their geometric mean, so "
               "the spread between networks is visible; the textbook orderings it tests "
               "(x0.7 per layer for Xavier vs x1 for He over many layers) are far outside it.")
    out.append("Symmetry and gradient-flow runs (sections 2, 3) are one seed each: their "
               "claims rest on exact zeros and on ratios orders of magnitude apart, not on "
               "small differences.")
    return out
