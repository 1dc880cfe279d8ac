"""Upsampling and normalisation of saliency maps (the documented procedure every method uses).

1. **Upsample** a map ``(N, h, w)`` to the input size ``(H, W)`` by bilinear interpolation with
   ``align_corners=False`` (pixel centres, as ``torch.nn.functional.interpolate`` and OpenCV's
   ``INTER_LINEAR`` do).
2. **Normalise** each image's map on its own to [0, 1] by min-max:
   ``(m - min(m)) / (max(m) - min(m))``. A constant map carries no location information and
   becomes all zeros (never NaN; an all-zero map, which Grad-CAM gives when no channel has
   positive evidence, stays zero). "Constant" allows for rounding: bilinear interpolation of a
   constant map is only constant to a few ulps, so a map whose span ``max - min`` is at most
   ``16 * eps * max|m|`` (``eps`` of the map's dtype: 1.9e-6 relative in float32, 3.6e-15 in
   float64) counts as constant instead of having its rounding noise stretched to [0, 1].

Upsampling comes first so that the normalised map spans exactly [0, 1] at the input resolution
(bilinear interpolation rarely lands on the coarse map's extreme cells).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cnnlab.errors import UserError

_CONSTANT_ULPS = 16  # see the module docstring: spans within rounding of a constant map


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling (``align_corners=False``) of maps ``(N, h, w)`` to ``(N, H, W)``."""
    if maps.ndim != 3:
        raise UserError(f"maps must have shape (N, h, w), got {tuple(maps.shape)}")
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[
        :, 0
    ]


def normalize(maps: Tensor) -> Tensor:
    """Per-image min-max normalisation of maps ``(N, ...)`` to [0, 1]; constant maps become 0."""
    if maps.ndim < 2:
        raise UserError(f"maps must have a batch dimension (N, ...), got {tuple(maps.shape)}")
    flat = maps.reshape(maps.shape[0], -1)  # (N, H*W)
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low
    tolerance = (
        _CONSTANT_ULPS * torch.finfo(flat.dtype).eps * flat.abs().max(dim=1, keepdim=True).values
    )
    constant = span <= tolerance
    out = (flat - low) / torch.where(constant, torch.ones_like(span), span)
    return torch.where(constant, torch.zeros_like(out), out).reshape(maps.shape)
