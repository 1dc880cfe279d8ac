"""Two images side by side on one canvas, and the masks of their halves.

The course's Grad-CAM question shows one image holding a cat and a dog. CIFAR-10 has no such
image, so :func:`compose_pairs` places two test images of ``H x W`` next to each other on an
``H x 2W`` canvas (no resizing, no blending: every source pixel is copied exactly), and
:func:`half_masks` gives the boolean masks of the left and right halves a localisation metric
(:mod:`cnnlab.explain.localization`) is measured against. A fully convolutional network with global
pooling accepts the wider canvas; :func:`check_accepts_canvas` says in one line when a model does
not (e.g. a fixed-size ``Linear`` after ``flatten``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cnnlab.errors import UserError


def compose_pairs(left: Tensor, right: Tensor) -> Tensor:
    """Canvases ``(N, C, H, 2W)``: ``left[n]`` in columns ``[0, W)``, ``right[n]`` in ``[W, 2W)``.

    Args:
        left, right: images ``(N, C, H, W)`` of the same shape and dtype (uint8 or float).
    """
    if left.ndim != 4 or left.shape != right.shape:
        raise UserError(f"compose_pairs needs two image batches (N, C, H, W) of one shape, got "
                        f"{tuple(left.shape)} and {tuple(right.shape)}")
    if left.dtype != right.dtype:
        raise UserError(f"compose_pairs: images of two dtypes ({left.dtype}, {right.dtype})")
    return torch.cat([left, right], dim=3)


def half_masks(height: int, width: int) -> tuple[Tensor, Tensor]:
    """Boolean masks ``(height, width)`` of the left and right halves of a canvas (width even)."""
    if width % 2 or width <= 0 or height <= 0:
        raise UserError(f"a two-image canvas has an even width, got {height}x{width}")
    left = torch.zeros(height, width, dtype=torch.bool)
    left[:, : width // 2] = True
    return left, ~left


def check_accepts_canvas(model: nn.Module, shape: tuple[int, int, int], name: str = "the model"
                         ) -> int:
    """Run ``model`` on one zero canvas ``(C, H, 2W)``; return its number of classes.

    Raises:
        UserError: the model cannot take the wider canvas (a layer whose size is fixed, such as a
            ``Linear`` after ``flatten``), or does not return class scores ``(1, K)`` for it.
    """
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    x = torch.zeros(1, *shape, dtype=param.dtype if param is not None else torch.float32,
                    device=param.device if param is not None else "cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{name} does not accept a {shape[1]}x{shape[2]} two-image canvas ({first}); the "
            "course figure needs a fully convolutional network with global pooling before its "
            "classifier (e.g. resnet20), not a fixed-size Linear after flatten") from None
    finally:
        model.train(was_training)
    if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != 1:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise UserError(f"{name} returns {got} for a {shape[1]}x{shape[2]} canvas, not class "
                        "scores (1, num_classes); it needs global pooling before its classifier")
    return int(out.shape[1])
