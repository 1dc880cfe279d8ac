"""Does a map point at the asked object? Pointing game, energy share, and map-to-map rank correlation.

All three take maps ``(N, H, W)`` that are non-negative (a CAM, or a pixel map made
non-negative by :func:`pixel_saliency`) and a boolean region mask ``(H, W)`` (or ``(N, H, W)``):

- **Pointing game** (Zhang et al. 2016, "Top-down neural attention by excitation backprop"): a hit
  when the map's maximum lies inside the region. Here a hit needs the largest value inside the
  region to be strictly larger than the largest value outside it, so an all-zero map (no
  evidence anywhere, which Grad-CAM gives when no channel has positive weight) or a tie across the
  border is a miss rather than a hit by raster order.
- **Energy share** (the energy-based pointing game of Wang et al. 2020, Score-CAM): the fraction
  of the map's total mass inside the region, ``sum(m * region) / sum(m)``; NaN for an all-zero
  map (no mass to share out), which callers count separately.
- **Rank correlation** between two maps of the same image (Spearman's rho of their pixels,
  average ranks for ties, as :func:`scipy.stats.spearmanr`): near 1 when the two maps order the
  pixels alike whatever class they were computed for; NaN when a map is constant.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor

from cnnlab.errors import UserError


def pixel_saliency(gradients: Tensor) -> Tensor:
    """A pixel-space explanation ``(N, C, H, W)`` as a non-negative map ``(N, H, W)``: the sum of
    ``|g|`` over channels (the magnitude Guided Backprop / Guided Grad-CAM show per pixel)."""
    if gradients.ndim != 4:
        raise UserError(f"pixel maps must have shape (N, C, H, W), got {tuple(gradients.shape)}")
    return gradients.abs().sum(dim=1)


def _check(maps: Tensor, region: Tensor) -> Tensor:
    if maps.ndim != 3:
        raise UserError(f"maps must have shape (N, H, W), got {tuple(maps.shape)}")
    if region.dtype != torch.bool:
        raise UserError(f"the region must be a boolean mask, got {region.dtype}")
    region = region.to(maps.device)
    if region.ndim == 2:
        region = region.expand_as(maps)
    if region.shape != maps.shape:
        raise UserError(f"region {tuple(region.shape)} does not match maps {tuple(maps.shape)}")
    if bool((maps < 0).any()):
        raise UserError("maps must be non-negative (a CAM, or pixel_saliency of a pixel map)")
    return region


def pointing_game(maps: Tensor, region: Tensor) -> Tensor:
    """Hits ``(N,)`` bool: the largest value inside ``region`` beats the largest outside it."""
    region = _check(maps, region)
    low = torch.tensor(-torch.inf, dtype=maps.dtype, device=maps.device)
    inside = torch.where(region, maps, low).flatten(1).max(dim=1).values
    outside = torch.where(~region, maps, low).flatten(1).max(dim=1).values
    return inside > outside


def energy_share(maps: Tensor, region: Tensor) -> Tensor:
    """Share ``(N,)`` float64 of each map's total inside ``region``; NaN for an all-zero map."""
    region = _check(maps, region)
    m = maps.to(torch.float64)
    total = m.flatten(1).sum(dim=1)
    inside = (m * region).flatten(1).sum(dim=1)
    return torch.where(total > 0, inside / torch.where(total > 0, total, 1.0),
                       torch.full_like(total, torch.nan))


def rank_correlation(a: Tensor, b: Tensor) -> np.ndarray:
    """Spearman's rho ``(N,)`` between ``a[n]`` and ``b[n]`` over pixels (maps ``(N, H, W)``)."""
    if a.shape != b.shape or a.ndim != 3:
        raise UserError(f"two map batches (N, H, W) of one shape needed, got {tuple(a.shape)} "
                        f"and {tuple(b.shape)}")
    ra = rankdata(a.detach().cpu().double().flatten(1).numpy(), axis=1)
    rb = rankdata(b.detach().cpu().double().flatten(1).numpy(), axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    num = (ra * rb).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
