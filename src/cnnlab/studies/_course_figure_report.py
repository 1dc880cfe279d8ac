"""The course-figure study's figures and report sections."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cnnlab.report import Report
from cnnlab.studies.findings import Finding

COLUMNS = [("method", "method", None), ("asked", "asked class", None), ("n", "canvases", None),
           ("pointing", "pointing game", lambda v: f"{100 * v:.1f}%"),
           ("pointing_ci", "95% Wilson CI", None),
           ("energy", "energy share", lambda v: f"{100 * v:.1f}%"),
           ("energy_ci", "95% bootstrap CI", None),
           ("rho", "rho(left map, right map)", lambda v: f"{v:.3f}"),
           ("rho_ci", "95% bootstrap CI", None)]


def draw_figures(x, shown, maps, probs, data, classes, cat: int, dog: int) -> list[tuple[Any, str]]:
    """One course figure per shown canvas: ``[(Figure, caption)]``."""
    from cnnlab.explain.overlay import course_figure, to_display

    out = []
    for i, c in enumerate(shown):
        fig = course_figure(
            to_display(x[i].cpu(), data["mean"], data["std"]),
            [maps["guided"][0][i], maps["guided"][1][i]],
            [maps["cams"][0][i], maps["cams"][1][i]],
            [classes[cat], classes[dog]], [float(probs[i, cat]), float(probs[i, dog])],
            predicted=classes[int(probs[i].argmax())])
        where = "left" if c.class_left == cat else "right"
        out.append((fig, f"canvas {c.left}|{c.right} of the test set: the cat is on the {where}"))
    return out


def _rows(table: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**t, "pointing_ci": f"{100 * t['pointing_low']:.1f}-{100 * t['pointing_high']:.1f}%",
             "energy_ci": f"{100 * t['energy_low']:.1f}-{100 * t['energy_high']:.1f}%",
             "rho_ci": f"{t['rho_low']:.3f}-{t['rho_high']:.3f}"} for t in table]


def layout(rep: Report, payload: dict[str, Any], figures: Sequence[tuple[Any, str]],
           findings: Sequence[Finding]) -> None:
    m = payload["model"]
    rep.section("The model")
    acc = m["test_accuracy"]
    rep.text(f"{m['model']} from `{m['run']}` ("
             + ("trained by this study" if m["trained_here"] else "given with --checkpoint")
             + f"; {m['subset'] or 'all'} training images, {m['epochs']} epochs; test accuracy "
             + (f"{100 * acc:.1f}%" if acc is not None else "not recorded")
             + f"). Maps at layer `{payload['layer']}`, canvas {payload['canvas'][1]}x"
             f"{payload['canvas'][2]}.")
    rep.section("The course figure")
    rep.text("original | Guided Backprop 'cat' | Grad-CAM 'cat' | Guided Backprop 'dog' | "
             "Grad-CAM 'dog'; p is the model's softmax probability of the class on the canvas.")
    for i, (fig, caption) in enumerate(figures):
        rep.figure(fig, f"course-figure-{i}", caption)
    rep.section("Localisation, all class pairs")
    rep.table(_rows(payload["summary"]), COLUMNS)
    if payload["summary_cat_dog"]:
        rep.section("Localisation, cat/dog canvases only")
        rep.table(_rows(payload["summary_cat_dog"]), COLUMNS)
    rep.section("All findings")
    rep.bullets(f"[{f.section}; {f.verdict}] {f.claim}" for f in findings)
    rep.section("Method")
    rep.bullets([
        ("Canvas: two CIFAR-10 test images side by side (32x64), pixels copied unchanged; half the "
        "canvases a cat and a dog, half two other distinct classes; sides and images drawn with "
        f"seed {payload['seed']}."),
        ("Each method is asked once for the left half's true class and once for the right's. "
        "Grad-CAM / Grad-CAM++: the raw map ReLU(sum_k w_k A^k), bilinearly upsampled, not "
        "normalised. Guided Backprop / Guided Grad-CAM: sum over channels of |gradient|."),
        ("Pointing game: a hit when the largest value inside the asked half is strictly larger "
        "than the largest outside it (an all-zero map is a miss). Energy share: the map's mass "
        "inside the asked half over its total (undefined for an all-zero map, left out). "
        "Chance is 50% for both."),
        ("rho: Spearman's rank correlation over pixels between the method's map for the left "
        "class and its map for the right class of the same canvas (1: the same ordering)."),
        ("Intervals: 95% Wilson score for rates; 95% percentile bootstrap (2000 resamples) for "
        "means and for the paired difference Guided Backprop rho minus Grad-CAM rho."),
    ])
