"""Overlays and the course figure: blending by hand with matplotlib's colormaps, titles, errors."""

import matplotlib
import numpy as np
import pytest
import torch

from cnnlab.errors import UserError
from cnnlab.explain.overlay import course_figure, guided_to_image, overlay, save_figure, to_display


def test_overlay_is_the_documented_blend(rng):
    image = rng.random((6, 5, 3))
    heat = rng.random((6, 5))
    for cmap, alpha in (("jet", 0.5), ("viridis", 0.3), ("inferno", 1.0)):
        colored = matplotlib.colormaps[cmap](heat)[..., :3]
        np.testing.assert_allclose(
            overlay(image, heat, cmap=cmap, alpha=alpha),
            (1 - alpha) * image + alpha * colored,
            rtol=0,
            atol=1e-12,
        )
    gray = rng.random((6, 5))
    np.testing.assert_allclose(overlay(gray, heat, alpha=0.0), np.repeat(gray[..., None], 3, 2))


def test_overlay_errors(rng):
    with pytest.raises(UserError, match="alpha"):
        overlay(rng.random((4, 4)), rng.random((4, 4)), alpha=1.5)
    with pytest.raises(UserError, match="unknown colormap 'jets'"):
        overlay(rng.random((4, 4)), rng.random((4, 4)), cmap="jets")
    with pytest.raises(UserError, match=r"\(H, W\)"):
        overlay(rng.random((4, 4)), rng.random((5, 4)))


def test_to_display_undoes_the_normalisation(rng):
    original = rng.random((3, 4, 4))
    mean, std = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
    x = torch.tensor((original - np.array(mean)[:, None, None]) / np.array(std)[:, None, None])
    np.testing.assert_allclose(to_display(x, mean, std), original.transpose(1, 2, 0), atol=1e-12)
    gray = to_display(torch.tensor([[[2.0, 4.0], [6.0, 10.0]]]))
    np.testing.assert_allclose(gray, [[0.0, 0.25], [0.5, 1.0]])


def test_guided_to_image_centres_grey_and_keeps_sign():
    g = torch.zeros(1, 4, 4)
    assert (guided_to_image(g) == 0.5).all()
    g[0, 0, 0], g[0, 3, 3] = 1.0, -1.0
    img = guided_to_image(g)
    assert img[0, 0] > 0.5 > img[3, 3] and img.min() >= 0 and img.max() <= 1
    assert guided_to_image(torch.randn(3, 5, 5)).shape == (5, 5, 3)


def test_course_figure_layout_and_titles(rng, tmp_path):
    fig = course_figure(
        rng.random((8, 8, 3)),
        [rng.standard_normal((3, 8, 8))] * 2,
        [rng.random((8, 8))] * 2,
        ["cat", "dog"],
        [0.83, 0.11],
        predicted="cat",
    )
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [
        "original\npredicted: cat",
        "Guided Backprop\ncat (p=0.83)",
        "Grad-CAM\ncat (p=0.83)",
        "Guided Backprop\ndog (p=0.11)",
        "Grad-CAM\ndog (p=0.11)",
    ]
    path = save_figure(fig, tmp_path / "sub" / "fig.png")
    assert path.stat().st_size > 5_000
    with pytest.raises(UserError, match="one guided map"):
        course_figure(rng.random((8, 8)), [rng.random((1, 8, 8))], [], ["a"], [0.5])
