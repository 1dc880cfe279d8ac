"""Sanity check by cascading model randomisation (Adebayo et al., NeurIPS 2018, arXiv:1810.03292).

If a saliency method explains *the model*, its maps must change when the model's learned weights
are destroyed. The cascade re-initialises the layers one at a time from the top (the logits) down,
cumulatively, and compares each method's maps on the randomised model with its maps on the trained
model:

- **Layers**: every ``Conv2d`` / ``Linear`` that runs in the forward pass, latest first. Each is
  re-initialised with PyTorch's default initialisation (``reset_parameters()``: Kaiming-uniform
  weights and uniform biases), drawn on the CPU from a generator seeded with ``seed + i`` for the
  i-th layer, so the cascade is reproducible on any device. Normalisation layers keep their
  learned affine parameters and running statistics. The model passed in is never changed: the
  cascade runs on a deep copy.
- **Maps**: Grad-CAM, upsampled to the input size and not normalised (non-negative, so its
  "absolute" and "signed" variants coincide); Guided Backprop summed over colour channels, as
  ``sum_c |g_c|`` (absolute) and ``sum_c g_c`` (signed), the two variants of the paper.
  The classes explained are fixed for the whole cascade: the trained model's predictions (or the
  targets given).
- **Similarity** between each image's original and randomised map:
  Spearman rank correlation (``scipy.stats.spearmanr`` over the pixels) and SSIM
  (``skimage.metrics.structural_similarity`` of both maps min-max normalised to [0, 1] by
  :func:`cnnlab.explain.maps.normalize`, ``data_range=1.0``, window 7 or the largest odd size
  that fits). A randomised map that is constant (a Grad-CAM that became all zero) has no ranking
  and scores 0 rank correlation; images whose *original* map is constant are left out of that
  method's scores and counted in ``excluded``.

Reading the result: a method that passes the check falls towards 0 as more layers are randomised.
A curve that stays high means the map mostly reflects the input image (edges), not what the model
learned: the paper's finding for Guided Backprop.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from torch import Tensor, nn

from cnnlab.errors import UserError
from cnnlab.explain._common import Targets, eval_mode, prepare_images, resolve_targets
from cnnlab.explain.gradcam import GradCAM
from cnnlab.explain.guided_backprop import GuidedBackprop
from cnnlab.explain.layers import _trace_calls, default_target_layer, resolve_layer
from cnnlab.explain.maps import normalize

# (method, variant) pairs compared, as in the paper's figures.
VARIANTS: tuple[tuple[str, str], ...] = (
    ("gradcam", "abs"),
    ("guided", "abs"),
    ("guided", "signed"),
)
_RANDOMISED = (nn.Conv2d, nn.Linear)


def cascade_layers(model: nn.Module, example: Tensor) -> list[str]:
    """Names of the ``Conv2d`` / ``Linear`` layers with parameters, latest-running first."""
    calls, _ = _trace_calls(model, prepare_images(model, example)[:1])
    order: list[str] = []
    for call in calls:
        if isinstance(call.module, _RANDOMISED) and call.name not in order:
            if any(True for _ in call.module.parameters(recurse=False)):
                order.append(call.name)
    return order[::-1]


def _reinitialise(module: nn.Module, seed: int) -> None:
    """Default PyTorch initialisation drawn on the CPU from ``seed``, copied into ``module``."""
    fresh = copy.deepcopy(module).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh.reset_parameters()
    with torch.no_grad():
        for p, q in zip(
            module.parameters(recurse=False), fresh.parameters(recurse=False), strict=True
        ):
            p.copy_(q)


def _maps(
    model: nn.Module, x: Tensor, targets: Tensor, layer: str
) -> dict[tuple[str, str], np.ndarray]:
    """The compared maps ``(N, H, W)`` of one model, by (method, variant)."""
    cam = GradCAM(model, layer).compute(x, targets, upsample=True, normalize=False)
    guided = GuidedBackprop(model).compute(x, targets)  # (N, C, H, W)
    out = {
        ("gradcam", "abs"): cam,
        ("guided", "abs"): guided.abs().sum(dim=1),
        ("guided", "signed"): guided.sum(dim=1),
    }
    # Kept in the model's dtype, so that "constant" allows for that dtype's rounding.
    return {key: value.detach().cpu().numpy() for key, value in out.items()}


def _is_constant(m: np.ndarray) -> bool:
    return bool(normalize(torch.from_numpy(m[None])).max() == 0)


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    if _is_constant(b):
        return 0.0
    return float(spearmanr(a.ravel().astype(np.float64), b.ravel().astype(np.float64)).statistic)


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    pair = normalize(torch.from_numpy(np.stack([a, b]))).numpy().astype(np.float64)
    win = min(7, *(s if s % 2 else s - 1 for s in a.shape))
    return float(structural_similarity(pair[0], pair[1], data_range=1.0, win_size=win))


@dataclass
class SanityResult:
    """Scores of a cascading randomisation.

    ``stages[0]`` is ``"original"`` (the trained model compared with itself: 1.0), then the layer
    randomised at each stage, top first (stage i has layers ``stages[1..i]`` randomised).
    ``scores[method][variant][metric]`` has per-stage ``mean`` and ``std`` over images and the
    per-image values ``per_image[stage][image]``.
    """

    stages: list[str]
    cam_layer: str
    targets: list[int]
    seed: int
    scores: dict[str, dict[str, dict[str, dict[str, Any]]]] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)
    # The first image's maps (H, W) at every stage, by "method/variant" (for pictures; not JSON).
    examples: dict[str, list[np.ndarray]] = field(default_factory=dict, repr=False)

    def mean(self, method: str, variant: str, metric: str = "spearman") -> list[float]:
        return self.scores[method][variant][metric]["mean"]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        del out["examples"]
        return out


def cascading_randomization(
    model: nn.Module,
    x: Tensor,
    targets: Targets = None,
    *,
    layer: nn.Module | str | None = None,
    seed: int = 0,
) -> SanityResult:
    """Adebayo et al.'s cascading randomisation for Grad-CAM and Guided Backprop.

    Args:
        model: the trained classifier (left unchanged).
        x: images ``(N, C, H, W)``.
        targets: classes to explain (None: the trained model's predictions), fixed for the cascade.
        layer: the Grad-CAM layer (None: :func:`cnnlab.explain.layers.default_target_layer`).
        seed: the cascade's randomisation seed.

    Returns:
        The per-stage scores (see :class:`SanityResult` and the module docstring).
    """
    x = prepare_images(model, x)
    layer_name = default_target_layer(model, x) if layer is None else resolve_layer(model, layer)[0]
    with torch.no_grad(), eval_mode(model):
        fixed = resolve_targets(targets, model(x))
    names = cascade_layers(model, x)
    if not names:
        raise UserError(f"{type(model).__name__} has no Conv2d or Linear layer to randomise")

    original = _maps(model, x, fixed, layer_name)
    usable = {
        key: [n for n in range(len(x)) if not _is_constant(m[n])] for key, m in original.items()
    }
    per_stage: dict[tuple[str, str], dict[str, list[list[float]]]] = {
        key: {"spearman": [], "ssim": []} for key in VARIANTS
    }

    examples: dict[str, list[np.ndarray]] = {f"{m}/{v}": [] for m, v in VARIANTS}

    def score(maps: dict[tuple[str, str], np.ndarray]) -> None:
        for key in VARIANTS:
            examples[f"{key[0]}/{key[1]}"].append(maps[key][0])
            a, b = original[key], maps[key]
            per_stage[key]["spearman"].append([_rank_correlation(a[n], b[n]) for n in usable[key]])
            per_stage[key]["ssim"].append([_ssim(a[n], b[n]) for n in usable[key]])

    score(original)
    randomised = copy.deepcopy(model)
    for i, name in enumerate(names):
        _reinitialise(randomised.get_submodule(name), seed + i)
        score(_maps(randomised, x, fixed, layer_name))

    result = SanityResult(["original", *names], layer_name, fixed.tolist(), seed, examples=examples)
    for (method, variant), metrics in per_stage.items():
        result.excluded[f"{method}/{variant}"] = len(x) - len(usable[(method, variant)])
        entry = result.scores.setdefault(method, {}).setdefault(variant, {})
        for metric, stages in metrics.items():
            values = np.array(stages, dtype=np.float64)  # (stages, images)
            empty = values.shape[1] == 0
            entry[metric] = {
                "mean": [float("nan")] * len(stages) if empty else values.mean(axis=1).tolist(),
                "std": [float("nan")] * len(stages) if empty else values.std(axis=1).tolist(),
                "per_image": values.tolist(),
            }
    return result


_LABELS = {
    ("gradcam", "abs"): "Grad-CAM",
    ("guided", "abs"): "Guided Backprop (absolute)",
    ("guided", "signed"): "Guided Backprop (signed)",
}


def plot_cascade(result: SanityResult) -> Figure:
    """Spearman rank correlation and SSIM per randomised layer (mean +- std over images)."""
    fig = Figure(figsize=(max(7.0, 0.45 * len(result.stages) + 3), 6.4), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    stages = np.arange(len(result.stages))
    for ax, metric, label in zip(
        axes, ("spearman", "ssim"), ("Spearman rank correlation", "SSIM"), strict=True
    ):
        for key in VARIANTS:
            entry = result.scores[key[0]][key[1]][metric]
            mean, std = np.array(entry["mean"]), np.array(entry["std"])
            ax.plot(stages, mean, marker="o", ms=3, label=_LABELS[key])
            ax.fill_between(stages, mean - std, mean + std, alpha=0.15)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_ylabel(label)
        ax.set_ylim(-0.3, 1.05)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[0].set_title(
        "Cascading randomisation from the logits down (Adebayo et al. 2018)\n"
        "a map that explains the model falls towards 0; one that stays high ignores the weights",
        fontsize=9,
    )
    axes[1].set_xticks(stages, result.stages, rotation=60, ha="right", fontsize=7)
    axes[1].set_xlabel("layers randomised cumulatively, top first")
    return fig


def plot_cascade_maps(result: SanityResult, image: np.ndarray | None = None) -> Figure:
    """The first image's maps at every stage (rows: methods; columns: stages), each min-max scaled.

    Args:
        result: a cascade result.
        image: the first image for display ``(H, W, 3)`` or ``(H, W)`` in [0, 1], shown first.
    """
    stages = result.stages
    extra = image is not None
    fig = Figure(
        figsize=(1.3 * (len(stages) + extra), 1.5 * len(VARIANTS) + 0.6), layout="constrained"
    )
    axes = fig.subplots(len(VARIANTS), len(stages) + extra, squeeze=False)
    for row, key in enumerate(VARIANTS):
        maps = result.examples[f"{key[0]}/{key[1]}"]
        if extra:
            axes[row, 0].imshow(image, cmap="gray" if image.ndim == 2 else None)
            axes[row, 0].set_ylabel(_LABELS[key], fontsize=7)
        for col, (stage, m) in enumerate(zip(stages, maps, strict=True)):
            ax = axes[row, col + extra]
            ax.imshow(normalize(torch.from_numpy(m[None]))[0].numpy(), cmap="gray", vmin=0, vmax=1)
            if row == 0:
                ax.set_title(stage, fontsize=7)
            if col + extra == 0:
                ax.set_ylabel(_LABELS[key], fontsize=7)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(
        "maps as layers are randomised (left to right); a trustworthy map degrades", fontsize=9
    )
    return fig
