"""Faithfulness by deletion and insertion curves (Petsiuk, Das, Saenko, BMVC 2018, 1806.07421).

A faithful saliency map ranks first the pixels the model needs. For each image and its target
class c, pixels are taken in order of decreasing saliency (ties: lower flat index first), in
``steps`` equal steps of ``H * W / steps`` pixels (all channels of a pixel together):

- **Deletion**: start from the image and replace the top-ranked pixels by a *baseline*; the model's
  softmax probability of class c should fall fast: a **low** area under the curve is good.
- **Insertion**: start from a baseline and put the top-ranked pixels back; the probability should
  rise fast: a **high** area under the curve is good.

Baselines, as in the paper's code: deletion uses ``"zeros"`` (zero in the model's input space,
which for mean/std-normalised inputs is the data set's mean colour) and insertion uses ``"blur"``
(a Gaussian blur of the image, kernel 11, sigma 5, so inserted pixels are not out-of-distribution
sharp edges on a flat image). ``"mean"`` (each channel's mean over the image) is also available.

The x-axis is the fraction of pixels changed, 0 to 1 in ``steps`` steps; the area under the curve
is the trapezoid rule on it (``numpy.trapezoid``), so AUC is in [0, 1]. Every curve is compared
with the same curves for a **random** pixel order (seeded): a map is only informative if its
deletion AUC is below and its insertion AUC above the random order's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from torchvision.transforms.functional import gaussian_blur

from cnnlab._numbers import check_number
from cnnlab.errors import UserError
from cnnlab.explain._common import Targets, eval_mode, prepare_images, resolve_targets

BASELINES = ("zeros", "blur", "mean")
_BLUR_KERNEL, _BLUR_SIGMA = 11, 5.0  # the paper's code (RISE, evaluation.py: klen=11, ksig=5)


def baseline_image(x: Tensor, kind: str) -> Tensor:
    """The baseline ``(N, C, H, W)`` for images ``x``: ``"zeros"``, ``"blur"`` or ``"mean"``."""
    if kind == "zeros":
        return torch.zeros_like(x)
    if kind == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    if kind == "blur":
        kernel = min(_BLUR_KERNEL, 2 * ((min(x.shape[-2:]) - 1) // 2) + 1)  # reflect pad < size
        return gaussian_blur(x, [kernel, kernel], [_BLUR_SIGMA, _BLUR_SIGMA])
    raise UserError(f"unknown baseline {kind!r}; choose one of {', '.join(BASELINES)}")


def _probability_curve(
    model: nn.Module,
    start: Tensor,
    end: Tensor,
    order: Tensor,
    target: int,
    steps: int,
    batch_size: int,
) -> np.ndarray:
    """p(target) as the pixels ``order`` of one image go from ``start`` to ``end``: (steps + 1,)."""
    _, h, w = start.shape
    counts = torch.round(torch.linspace(0, h * w, steps + 1)).long()  # pixels changed per step
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)  # rank of each pixel
    probs = []
    for s in range(0, steps + 1, batch_size):
        k = counts[s : s + batch_size].to(order.device)
        changed = (rank[None, :] < k[:, None]).view(-1, 1, h, w)  # (B, 1, H, W)
        batch = torch.where(changed, end[None], start[None])  # (B, C, H, W)
        probs.append(torch.softmax(model(batch), dim=1)[:, target].double().cpu())
    return torch.cat(probs).numpy()


@dataclass
class FaithfulnessResult:
    """Deletion and insertion curves ``(N, steps + 1)`` and AUCs ``(N,)`` per ordering.

    ``curves[kind][order]`` with kind ``"deletion"``/``"insertion"`` and order a method name or
    ``"random"``; ``auc[kind][order]`` likewise; ``fractions`` is the shared x-axis.
    """

    fractions: list[float]
    targets: list[int]
    baselines: dict[str, str]
    seed: int
    curves: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)
    auc: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def mean_auc(self, kind: str, order: str) -> float:
        return float(np.mean(self.auc[kind][order]))

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["mean_auc"] = {k: {o: self.mean_auc(k, o) for o in v} for k, v in self.auc.items()}
        return out


def deletion_insertion(
    model: nn.Module,
    x: Tensor,
    saliency: dict[str, Tensor],
    targets: Targets = None,
    *,
    steps: int = 32,
    deletion_baseline: str = "zeros",
    insertion_baseline: str = "blur",
    seed: int = 0,
    batch_size: int = 64,
) -> FaithfulnessResult:
    """Deletion and insertion curves of saliency maps, with a random pixel order for comparison.

    Args:
        model: the classifier (evaluated in eval mode; left unchanged).
        x: images ``(N, C, H, W)``.
        saliency: maps ``(N, H, W)`` by method name (higher = more important).
        targets: classes whose probability is tracked (None: the predicted classes).
        steps: number of steps from 0 to all pixels.
        deletion_baseline, insertion_baseline: ``"zeros"``, ``"blur"`` or ``"mean"``.
        seed: seed of the random order.
        batch_size: perturbed images per forward pass.
    """
    x = prepare_images(model, x)
    n, _, h, w = x.shape
    check_number(steps, "steps", low=1, high=h * w, integer=True,
                 why=f"(the images have {h}x{w} = {h * w} pixels)")
    for name, m in saliency.items():
        if tuple(m.shape) != (n, h, w):
            raise UserError(f"saliency {name!r} has shape {tuple(m.shape)}, expected {(n, h, w)}")
        if name == "random":
            raise UserError("'random' is the name of the reference order; rename the saliency map")
    generator = torch.Generator().manual_seed(seed)
    orders = {
        name: torch.argsort(-m.reshape(n, -1).to(x.device), dim=1, stable=True)
        for name, m in saliency.items()
    }
    orders["random"] = torch.stack([torch.randperm(h * w, generator=generator) for _ in range(n)])

    result = FaithfulnessResult(
        fractions=np.linspace(0.0, 1.0, steps + 1).tolist(),
        targets=[],
        baselines={"deletion": deletion_baseline, "insertion": insertion_baseline},
        seed=seed,
    )
    with torch.no_grad(), eval_mode(model):
        fixed = resolve_targets(targets, model(x))
        result.targets = fixed.tolist()
        deleted = baseline_image(x, deletion_baseline)  # what deleted pixels become
        empty = baseline_image(x, insertion_baseline)  # what insertion starts from
        for kind, start, end in (("deletion", x, deleted), ("insertion", empty, x)):
            for name, order in orders.items():
                curves = np.stack(
                    [
                        _probability_curve(
                            model,
                            start[i],
                            end[i],
                            order[i].to(x.device),
                            int(fixed[i]),
                            steps,
                            batch_size,
                        )
                        for i in range(n)
                    ]
                )
                result.curves.setdefault(kind, {})[name] = curves.tolist()
                auc = np.trapezoid(curves, dx=1.0 / steps, axis=1)
                result.auc.setdefault(kind, {})[name] = auc.tolist()
    return result


def plot_curves(result: FaithfulnessResult) -> Figure:
    """Mean deletion and insertion curves per ordering, with the mean AUC in the legend."""
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, kind, better in zip(axes, ("deletion", "insertion"), ("lower", "higher"), strict=True):
        for name, curves in result.curves[kind].items():
            style = {"color": "grey", "ls": "--"} if name == "random" else {}
            ax.plot(
                result.fractions,
                np.mean(curves, axis=0),
                **style,
                label=f"{name} (AUC {result.mean_auc(kind, name):.3f})",
            )
        ax.set_title(
            f"{kind} ({result.baselines[kind]} baseline): {better} AUC is better", fontsize=9
        )
        ax.set_xlabel("fraction of pixels " + ("removed" if kind == "deletion" else "inserted"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("probability of the explained class")
    return fig
