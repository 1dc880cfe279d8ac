"""Two-image canvases, their half masks, and the localisation metrics on hand-made maps."""

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from cnnlab.errors import UserError
from cnnlab.explain.composite import check_accepts_canvas, compose_pairs, half_masks
from cnnlab.explain.localization import (
    energy_share,
    pixel_saliency,
    pointing_game,
    rank_correlation,
)


def test_composition_keeps_every_source_pixel():
    g = torch.Generator().manual_seed(0)
    left = torch.randint(0, 256, (4, 3, 32, 32), generator=g, dtype=torch.uint8)
    right = torch.randint(0, 256, (4, 3, 32, 32), generator=g, dtype=torch.uint8)
    canvas = compose_pairs(left, right)
    assert canvas.shape == (4, 3, 32, 64) and canvas.dtype == torch.uint8
    assert torch.equal(canvas[..., :32], left) and torch.equal(canvas[..., 32:], right)


def test_half_masks_match_the_composition():
    left_mask, right_mask = half_masks(32, 64)
    assert left_mask.shape == (32, 64) and not (left_mask & right_mask).any()
    assert (left_mask | right_mask).all()
    # an image of ones on the left and zeros on the right: the masks pick exactly those pixels
    canvas = compose_pairs(torch.ones(1, 1, 32, 32), torch.zeros(1, 1, 32, 32))[0, 0]
    assert torch.equal(canvas.bool(), left_mask) and torch.equal(~canvas.bool(), right_mask)
    with pytest.raises(UserError):
        half_masks(32, 63)


def test_pointing_game_on_hand_made_maps():
    left, _ = half_masks(2, 4)
    maps = torch.tensor([
        [[0, 0, 0, 0], [0, 5, 0, 0]],   # max in the left half -> hit
        [[0, 0, 0, 9], [1, 0, 0, 0]],   # max in the right half -> miss
        [[0, 0, 0, 0], [0, 0, 0, 0]],   # all zero: no point -> miss
        [[3, 0, 3, 0], [0, 0, 0, 0]],   # tie across the border -> miss
    ], dtype=torch.float32)
    assert pointing_game(maps, left).tolist() == [True, False, False, False]
    assert pointing_game(maps, ~left).tolist() == [False, True, False, False]


def test_energy_share_on_hand_made_maps():
    left, _ = half_masks(2, 4)
    maps = torch.tensor([
        [[1, 1, 0, 0], [1, 1, 0, 0]],   # all mass left
        [[1, 0, 0, 3], [0, 0, 0, 0]],   # 1 of 4 left
        [[0, 0, 0, 0], [0, 0, 0, 0]],   # no mass: NaN
    ], dtype=torch.float32)
    share = energy_share(maps, left)
    assert share[:2].tolist() == [1.0, 0.25] and torch.isnan(share[2])
    assert energy_share(maps, ~left)[1].item() == 0.75
    with pytest.raises(UserError, match="non-negative"):
        energy_share(-maps[:1] - 1, left)


def test_pixel_saliency_sums_absolute_gradients():
    g = torch.tensor([[[[1.0, -2.0]], [[-3.0, 0.5]]]])  # (1, 2, 1, 2)
    assert pixel_saliency(g).tolist() == [[[4.0, 2.5]]]


def test_rank_correlation_matches_scipy():
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(3, 5, 6, generator=gen, dtype=torch.float64)
    b = a + 0.3 * torch.rand(3, 5, 6, generator=gen, dtype=torch.float64)
    b[2] = torch.relu(b[2] - 0.9)  # many tied zeros: average ranks, as scipy does
    rho = rank_correlation(a, b)
    for n in range(3):
        ref = spearmanr(a[n].flatten().numpy(), b[n].flatten().numpy()).statistic
        assert rho[n] == pytest.approx(ref, abs=1e-12)
    assert np.isnan(rank_correlation(a[:1], torch.zeros(1, 5, 6, dtype=torch.float64))[0])


class _FlattenNet(nn.Module):
    """A fixed-size Linear after flatten: takes 32x32 only."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 32 * 32, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_fully_convolutional_model_accepts_the_wide_canvas():
    from cnnlab.models import create

    model = create("resnet20", num_classes=10, in_chans=3)
    assert check_accepts_canvas(model, (3, 32, 64)) == 10
    assert model.training  # the train flag is restored


def test_flatten_model_gets_one_line_why():
    with pytest.raises(UserError) as err:
        check_accepts_canvas(_FlattenNet(), (3, 32, 64), "model flatnet")
    msg = str(err.value)
    assert "\n" not in msg and "32x64" in msg and "fully convolutional" in msg
