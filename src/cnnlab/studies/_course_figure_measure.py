"""The course-figure study's measurement: plan the two-class composites, explain both classes.

:func:`plan_composites` draws (seeded) which test images share a canvas and which one goes left;
:func:`measure` runs the four methods for the left and for the right class of every canvas and
returns one row per canvas (JSON values, cached by the run store); :func:`figure_maps` gives the
maps of the course figure for a few cat/dog canvases.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from cnnlab.explain import GradCAM, GradCAMPlusPlus, GuidedBackprop, GuidedGradCAM
from cnnlab.explain.composite import compose_pairs, half_masks
from cnnlab.explain.localization import (
    energy_share,
    pixel_saliency,
    pointing_game,
    rank_correlation,
)

# method key -> name in the report; each is measured for the left and the right class
METHODS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "guided": "Guided Backprop",
           "guided-gradcam": "Guided Grad-CAM"}
COURSE_PAIR = ("cat", "dog")


@dataclass(frozen=True)
class Composite:
    """One canvas: test image ``left`` (class ``class_left``) beside ``right`` (``class_right``)."""

    left: int
    right: int
    class_left: int
    class_right: int
    course_pair: bool  # cat and dog (either side)


def plan_composites(labels: np.ndarray, classes: Sequence[str], pairs: int, seed: int
                    ) -> list[Composite]:
    """``pairs`` canvases: half cat/dog (the course's pair), half two other distinct classes
    drawn uniformly; the side of each class and the images are random (seeded). Images are drawn
    without replacement within a class until it runs out."""
    rng = np.random.default_rng(seed)
    names = [c.lower() for c in classes]
    course = tuple(names.index(c) for c in COURSE_PAIR) if all(
        c in names for c in COURSE_PAIR) else None
    pools = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in range(len(classes))}

    def draw(c: int) -> int:
        if not pools[c]:
            pools[c] = list(rng.permutation(np.flatnonzero(labels == c)))
        return int(pools[c].pop())

    plan = []
    for i in range(pairs):
        if course is not None and i % 2 == 0:
            a, b = course
        else:
            a, b = (int(c) for c in rng.choice(len(classes), size=2, replace=False))
        if rng.random() < 0.5:
            a, b = b, a
        plan.append(Composite(draw(a), draw(b), a, b, course is not None and {a, b} == set(course)))
    return plan


def _maps(model, layer: str, method: str, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Non-negative maps ``(N, H, W)`` of one method for one class per canvas."""
    if method in ("gradcam", "gradcam++"):
        cls = GradCAM if method == "gradcam" else GradCAMPlusPlus
        with cls(model, layer) as cam:  # raw upsampled CAM: min-max would shift the mass
            return cam.compute(x, targets, upsample=True, normalize=False)
    explainer = GuidedBackprop(model) if method == "guided" else GuidedGradCAM(model, layer)
    with explainer:
        return pixel_saliency(explainer.compute(x, targets))


def canvases(images: np.ndarray, plan: Sequence[Composite]) -> torch.Tensor:
    """uint8 canvases ``(N, C, H, 2W)`` of a plan (``images``: the test set ``(M, H, W, C)``)."""
    t = torch.from_numpy(images).permute(0, 3, 1, 2)
    left = t[[c.left for c in plan]].contiguous()
    right = t[[c.right for c in plan]].contiguous()
    return compose_pairs(left, right)


def measure(model, layer: str, images: np.ndarray, plan: Sequence[Composite],
            prepare: Callable[[torch.Tensor], torch.Tensor], batch: int = 50,
            log: Callable[[str], None] = lambda s: None) -> list[dict[str, Any]]:
    """One row per canvas: the classes, softmax probabilities of both, each half's prediction
    on its own, and per method the pointing-game hit and energy share for the left and the right
    class and Spearman's rho between the two maps.

    Args:
        prepare: uint8 images ``(N, C, H, W)`` -> the model's normalised float input.
    """
    rows: list[dict[str, Any]] = []
    for start in range(0, len(plan), batch):
        part = plan[start:start + batch]
        raw = canvases(images, part)
        x = prepare(raw)
        left_mask, right_mask = half_masks(*x.shape[-2:])
        tl = torch.tensor([c.class_left for c in part])
        tr = torch.tensor([c.class_right for c in part])
        with torch.no_grad():
            probs = torch.softmax(model(x).double(), dim=1).cpu()
            w = raw.shape[-1] // 2
            alone_l = model(prepare(raw[..., :w].contiguous())).argmax(1).cpu()
            alone_r = model(prepare(raw[..., w:].contiguous())).argmax(1).cpu()
        out = [{**asdict(c), "index": start + i, "p_left": float(probs[i, c.class_left]),
                "p_right": float(probs[i, c.class_right]),
                "predicted": int(probs[i].argmax()),
                "left_alone_correct": bool(alone_l[i] == c.class_left),
                "right_alone_correct": bool(alone_r[i] == c.class_right)}
               for i, c in enumerate(part)]
        for method in METHODS:
            ml, mr = _maps(model, layer, method, x, tl).cpu(), _maps(model, layer, method, x, tr).cpu()
            values = {"hit_left": pointing_game(ml, left_mask), "hit_right": pointing_game(mr, right_mask),
                      "energy_left": energy_share(ml, left_mask),
                      "energy_right": energy_share(mr, right_mask)}
            rho = rank_correlation(ml, mr)
            for i, row in enumerate(out):
                for k, v in values.items():
                    item = v[i].item()
                    row[f"{method}:{k}"] = None if isinstance(item, float) and np.isnan(item) else item
                row[f"{method}:rho"] = None if np.isnan(rho[i]) else float(rho[i])
        rows += out
        log(f"explained {len(rows)}/{len(plan)} canvases")
    return rows


def figure_maps(model, layer: str, x: torch.Tensor, cat: int, dog: int
                ) -> dict[str, list[torch.Tensor]]:
    """Guided Backprop ``(C, H, W)`` and min-max normalised Grad-CAM ``(H, W)`` for 'cat' and
    'dog' of canvases ``x`` ``(N, C, H, 2W)``: ``{"guided": [cat, dog], "cams": [cat, dog]}``
    per canvas (lists of N-batched tensors)."""
    with GuidedBackprop(model) as gb:
        guided = [gb.compute(x, c).cpu() for c in (cat, dog)]
    with GradCAM(model, layer) as cam:
        cams = [cam.compute(x, c).cpu() for c in (cat, dog)]
    return {"guided": guided, "cams": cams}
