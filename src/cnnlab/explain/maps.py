"""Upsampling and normalisation of saliency maps (the documented procedure every method uses).

1. **Upsample** a map ``(N, h, w)`` to the input size ``(H, W)`` by bilinear interpolation with
   ``align_corners=False`` (pixel centres, as ``torch.nn.functional.interpolate`` and OpenCV's
   ``INTER_LINEAR`` do).
2. **Normalise** each image's map on its own to [0, 1] by min-max:
   ``(m - min(m)) / (max(m) - min(m))``. A constant map (``max == min``, for example the all-zero
   map Grad-CAM gives when no channel has positive evidence) carries no location information and
   becomes all zeros: never NaN, and an all-zero map stays zero.

Upsampling comes first so that the normalised map spans exactly [0, 1] at the input resolution
(bilinear interpolation rarely lands on the coarse map's extreme cells).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cnnlab.errors import UserError


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling (``align_corners=False``) of maps ``(N, h, w)`` to ``(N, H, W)``."""
    if maps.ndim != 3:
        raise UserError(f"maps must have shape (N, h, w), got {tuple(maps.shape)}")
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def normalize(maps: Tensor) -> Tensor:
    """Per-image min-max normalisation of maps ``(N, ...)`` to [0, 1]; constant maps become 0."""
    if maps.ndim < 2:
        raise UserError(f"maps must have a batch dimension (N, ...), got {tuple(maps.shape)}")
    flat = maps.reshape(maps.shape[0], -1)  # (N, H*W)
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low
    # A constant map has span 0: dividing by 1 instead leaves (m - min) = 0, never NaN.
    out = (flat - low) / torch.where(span > 0, span, torch.ones_like(span))
    return out.reshape(maps.shape)
