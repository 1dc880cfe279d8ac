"""The dynamics study's report sections and ``results.csv`` rows (findings:
:mod:`~cnnlab.studies._dynamics_findings`; figures: :mod:`~cnnlab.studies._dynamics_plots`)."""

from __future__ import annotations

from typing import Any

from cnnlab.report import Report
from cnnlab.studies import _dynamics_plots as plots
from cnnlab.studies._dynamics_measure import INIT_SCHEMES
from cnnlab.studies._dynamics_runs import plural
from cnnlab.studies._dynamics_summary import (
    _final_train_error,
    _flow_pairs,
    _label,
    _pct,
    _runs,
    _test_error,
    degradation_table,
    flow_summary,
    symmetry_summary,
)


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


def layout(rep: Report, payload: dict, f: dict) -> None:
    """The study's sections of the report, with ``f`` its findings per section."""
    b = payload["budget"]
    if b["name"] == "smoke":
        rep.text("**Budget smoke checks the pipeline only: its training runs are far too short "
                 "for sections 2 to 4 to mean anything.** Section 1 (no training) is meaningful.")
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
    rep.bullets(n.claim for n in f["init"])
    rep.table(_init_table(payload), [
        ("norm", "norm", None), ("init", "init", None),
        ("act_1", "act std, layer 1", None), ("act_L", f"act std, layer {s['depth']}", None),
        ("theory_L", "theory", None), ("theory_pad_L", "theory, zero padding", None),
        ("grad_1", "grad std, layer 1", None), ("grad_L", f"grad std, layer {s['depth']}", None),
        ("theory_grad_1", "theory, layer 1", None)],
        caption="Per-layer std at initialisation (0 = exactly zero everywhere).")
    rep.figure(plots.init_figure(payload, "none"), "init_std_no_bn",
               "Std of activations and gradients per layer at initialisation, no batch norm "
               "(log scale; dashed: theory).")
    rep.figure(plots.init_figure(payload, "bn"), "init_std_bn",
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
        rep.bullets(n.claim for n in f["symmetry"])
        rep.table([{"init": INIT_SCHEMES[r["spec"]["init"]], **symmetry_summary(r)} for r in sym], [
            ("init", "init", None), ("rel_start_max", "filter distance at init (max)", None),
            ("rel_end_min", "after training (min)", None),
            ("rel_end_max", "after training (max)", None),
            ("norm_start", "filter norm at init", None), ("norm_end", "after", None),
            ("change_max", "max ||W - W_0||", None),
            ("max_conv_grad_norm", "max conv grad norm", None),
            ("final_train_error", "final training error", None),
            ("test_accuracy", "test accuracy", _pct)])
        rep.figure(plots.symmetry_figure(payload), "symmetry",
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
    rep.bullets(n.claim for n in f["flow"])
    rep.table([{"run": f"{_label(r['spec'])} {r['spec']['act']}"
                       f"{'' if r['spec']['norm'] == 'bn' else ' no BN'}", **flow_summary(r),
                "train_error": _final_train_error(r)}
               for a, b, _ in _flow_pairs(payload) for r in (a, b)], [
        ("run", "run", None), ("first_rms_step0", "first conv RMS grad, step 0", None),
        ("last_rms_step0", "last conv, step 0", None),
        ("ratio_step0", "first / last, step 0", None),
        ("ratio_median", "first / last, median over training", None),
        ("train_error", "final training error", None)])
    rep.figure(plots.flow_heatmaps(payload), "gradient_flow_heatmaps",
               "RMS gradient per weight, layer x training step (log colour scale shared within "
               "each pair).")
    rep.figure(plots.flow_lines(payload), "gradient_flow_lines",
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
    rep.bullets(n.claim for n in f["degradation"])
    rep.table(degradation_table(payload), [
        ("family", "net", None), ("depth", "depth", None), ("params", "parameters", None),
        ("seeds", "seeds", None), ("train_error", "final training error", None),
        ("train_error_spread", "spread over seeds", None), ("test_error", "test error", None)])
    rep.figure(plots.degradation_figure(payload), "degradation_curves",
               "Training (solid) and test (dashed) error per epoch (He et al. 2016, Fig. 6, "
               "at small scale).")
    rep.figure(plots.depth_figure(payload), "degradation_vs_depth",
               "Final training and test error against depth (bars: spread over seeds).")

    rep.section("5. Batch norm on/off")
    rep.bullets(n.claim for n in f["batchnorm"])

    rep.section("Settings and provenance")
    rep.table([{"run": r["spec"]["key"], "what": _label(r["spec"]),
                "norm": r["spec"]["norm"], "act": r["spec"]["act"],
                "init": INIT_SCHEMES[r["spec"]["init"]], "lr": r["spec"]["lr"],
                "epochs": r["spec"]["epochs"], "time_s": r["metrics"].get("wall_time_s"),
                "reused": r["reused"]} for r in payload["runs"]],
              caption="Training runs (folders under runs/).")


def _every_words(every: int) -> str:
    return "step" if every == 1 else f"{every} steps"


def _subset_words(payload: dict) -> str:
    b = payload["budget"]
    n = "the whole training set" if b["subset"] is None else f"{b['subset']:,} training images"
    res = "" if b["resolution"] == 1 else f" at resolution x{b['resolution']:g}"
    return n + res
