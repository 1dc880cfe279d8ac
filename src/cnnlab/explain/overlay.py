"""Pictures of explanations: heatmap overlays, Guided Backprop as an image, the course's figure.

Everything here takes NumPy arrays or tensors of one image and returns arrays in [0, 1] or a
matplotlib ``Figure`` (built without pyplot, so it works headless and leaks no global figures).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from cnnlab.errors import UserError


def _numpy(a: object) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def to_display(
    image: object, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> np.ndarray:
    """A model input ``(C, H, W)`` as a displayable image ``(H, W, 3)`` or ``(H, W)`` in [0, 1].

    With ``mean``/``std`` (the dataset normalisation) the input is un-normalised and clipped;
    without, it is min-max scaled.
    """
    x = _numpy(image)
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise UserError(f"image must have shape (C, H, W) with C = 1 or 3, got {x.shape}")
    if mean is not None and std is not None:
        x = x * np.asarray(std, dtype=np.float64)[:, None, None] + np.asarray(mean)[:, None, None]
        x = np.clip(x, 0.0, 1.0)
    else:
        span = x.max() - x.min()
        x = (x - x.min()) / span if span > 0 else np.zeros_like(x)
    return x[0] if x.shape[0] == 1 else x.transpose(1, 2, 0)


def guided_to_image(gradients: object) -> np.ndarray:
    """Guided Backprop gradients ``(C, H, W)`` as an image ``(H, W, 3)`` or ``(H, W)`` in [0, 1].

    The usual rendering (Springenberg et al.; Keras and pytorch-grad-cam's ``deprocess_image``):
    centre on the mean, scale to standard deviation 0.1, shift to 0.5 and clip, so zero gradient is
    mid-grey and the sign shows as brighter / darker. A zero map is uniform grey.
    """
    g = _numpy(gradients)
    if g.ndim != 3:
        raise UserError(f"gradients must have shape (C, H, W), got {g.shape}")
    std = g.std()
    g = (g - g.mean()) / std * 0.1 if std > 0 else np.zeros_like(g)
    g = np.clip(g + 0.5, 0.0, 1.0)
    return g[0] if g.shape[0] == 1 else g.transpose(1, 2, 0)


def overlay(image: object, heatmap: object, *, cmap: str = "jet", alpha: float = 0.5) -> np.ndarray:
    """Blend a heatmap over an image: ``(1 - alpha) * image + alpha * cmap(heatmap)``.

    Args:
        image: ``(H, W, 3)`` or ``(H, W)`` in [0, 1] (see :func:`to_display`).
        heatmap: ``(H, W)`` in [0, 1] (a normalised CAM).
        cmap: a matplotlib colormap name.
        alpha: weight of the heatmap, in [0, 1].

    Returns:
        ``(H, W, 3)`` in [0, 1].
    """
    img, heat = _numpy(image), _numpy(heatmap)
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"alpha must be in [0, 1], got {alpha}")
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3 or heat.shape != img.shape[:2]:
        raise UserError(f"heatmap {heat.shape} must be (H, W) of the image {img.shape}")
    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError:
        raise UserError(f"unknown colormap {cmap!r}; try jet, viridis, inferno, turbo") from None
    colored = colormap(np.clip(heat, 0.0, 1.0))[..., :3]
    return (1 - alpha) * img + alpha * colored


def _show(ax, picture: np.ndarray, title: str) -> None:
    ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def course_figure(
    image: object,
    guided: Sequence[object],
    cams: Sequence[object],
    class_names: Sequence[str],
    probabilities: Sequence[float],
    *,
    predicted: str | None = None,
    cmap: str = "jet",
    alpha: float = 0.5,
) -> Figure:
    """The course's layout: original | Guided Backprop | Grad-CAM for each class, side by side.

    Args:
        image: the original ``(H, W, 3)`` or ``(H, W)`` in [0, 1].
        guided: Guided Backprop gradients ``(C, H, W)``, one per class.
        cams: normalised Grad-CAMs ``(H, W)``, one per class.
        class_names: the explained classes' names (in titles).
        probabilities: the model's softmax probability of each explained class.
        predicted: the predicted class name shown over the original.

    Returns:
        A figure with ``1 + 2 * len(class_names)`` panels in one row.
    """
    k = len(class_names)
    if not (len(guided) == len(cams) == len(probabilities) == k) or k == 0:
        raise UserError("course_figure needs one guided map, one CAM and one probability per class")
    img = _numpy(image)
    fig = Figure(figsize=(2.2 * (1 + 2 * k), 2.9), layout="constrained")  # 3-line titles
    axes = fig.subplots(1, 1 + 2 * k)
    _show(axes[0], img, "original" + (f"\npredicted: {predicted}" if predicted else ""))
    for i, (name, p) in enumerate(zip(class_names, probabilities, strict=True)):
        label = f"{name} (p={p:.2f})"
        _show(axes[1 + 2 * i], guided_to_image(guided[i]), f"Guided Backprop\n{label}")
        _show(axes[2 + 2 * i], overlay(img, cams[i], cmap=cmap, alpha=alpha), f"Grad-CAM\n{label}")
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write a figure (PNG or any format matplotlib knows from the suffix); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
