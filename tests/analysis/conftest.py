"""Shared helpers for the analyzer tests: exercise paths and a gradient-based receptive field."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

EXERCISES = Path(__file__).resolve().parents[2] / "examples" / "exercises"


@pytest.fixture(scope="session")
def exercises() -> Path:
    return EXERCISES


def make_positive(model: nn.Module) -> nn.Module:
    """float64, every weight and bias in [0.1, 1]: no cancellation, so every input pixel a unit
    depends on gets a non-zero gradient (ReLUs stay open on a positive input)."""
    gen = torch.Generator().manual_seed(0)
    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.1 + 0.9 * torch.rand(p.shape, generator=gen, dtype=torch.float64))
    return model


def gradient_rf(model: nn.Module, input_shape: tuple[int, int, int], index: tuple[int, int] | None = None
                ) -> tuple[tuple[int, int], tuple[float, float], tuple[int, int]]:
    """Measure the receptive field of one output unit by backpropagation.

    Backpropagates 1 from output position ``index`` (default: the central one) of a float64
    forward pass on a positive input and returns, per axis (h, w), the extent of input pixels
    with non-zero gradient (max - min + 1), the centre of that extent, and the index used.
    """
    x = (0.5 + torch.rand((1, *input_shape), dtype=torch.float64,
                          generator=torch.Generator().manual_seed(1))).requires_grad_(True)
    y = model(x)
    if y.dim() == 4:
        i, j = index if index is not None else (y.shape[2] // 2, y.shape[3] // 2)
        y[0, :, i, j].sum().backward()
    else:  # a flat output: every unit of the vector
        i, j = 0, 0
        y[0].sum().backward()
    grad = x.grad[0].abs().sum(0)  # (H, W)
    rows = torch.nonzero(grad.sum(1)).flatten()
    cols = torch.nonzero(grad.sum(0)).flatten()
    extent = (int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1))
    centre = (float(rows[0] + rows[-1]) / 2, float(cols[0] + cols[-1]) / 2)
    return extent, centre, (i, j)


@pytest.fixture(scope="session")
def measure_rf():
    """``measure_rf(model, (C, H, W), index=None)``: positive float64 weights, then gradient_rf."""
    def measure(model: nn.Module, input_shape: tuple[int, int, int], index: tuple[int, int] | None = None):
        return gradient_rf(make_positive(model), input_shape, index)
    return measure
