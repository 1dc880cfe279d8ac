"""Cascading randomisation (Adebayo et al. 2018): the paper's finding on a trained CNN, and the
metrics against scipy / scikit-image called directly."""

import json

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from torch import nn

from cnnlab.explain import GradCAM, GuidedBackprop
from cnnlab.explain.sanity import (
    cascade_layers,
    cascading_randomization,
    plot_cascade,
    plot_cascade_maps,
)

# Stated margin: averaged over the randomised stages, Grad-CAM's similarity to its original maps
# must be at least this far below Guided Backprop's. Measured over training seeds 0-5
# (tests/measure_margins.py, AMD EPYC): Spearman gap 0.432 / 0.360 / 0.256 / 0.382 / 0.346 /
# 0.331 (min 0.256); signed-Guided gap min 0.442 (max 0.604); SSIM gap min 0.303 (max 0.406).
MARGIN = 0.15


@pytest.fixture(scope="module")
def cascade(trained_fmnist):
    model, x, _, _ = trained_fmnist
    return cascading_randomization(model, x[:16], seed=0)


def test_gradcam_falls_well_below_guided_backprop(trained_fmnist, cascade):
    model, *_, accuracy = trained_fmnist
    # a trained model (chance: 0.1); seeds 0-5: 0.680 / 0.634 / 0.652 / 0.554 / 0.626 / 0.622
    assert accuracy > 0.45
    assert cascade.stages == ["original", "13", "8", "4", "0"]  # logits first, then conv3 .. conv1
    gradcam = np.array(cascade.mean("gradcam", "abs"))
    guided = np.array(cascade.mean("guided", "abs"))
    guided_signed = np.array(cascade.mean("guided", "signed"))
    assert gradcam[0] == pytest.approx(1.0) and guided[0] == pytest.approx(1.0)
    # The paper's finding: Guided Backprop barely notices that the model was destroyed ...
    assert guided[1:].mean() - gradcam[1:].mean() >= MARGIN
    assert guided_signed[1:].mean() - gradcam[1:].mean() >= MARGIN
    # ... while Grad-CAM loses its ranking as soon as the logits layer is randomised.
    # seeds 0-5: max |Spearman| of Grad-CAM after randomisation 0.070 / 0.573 / 0.350 / 0.174 /
    # 0.122 / 0.328 (max 0.573); Guided Backprop at the first stage 0.639 .. 0.823 (min 0.639)
    assert abs(gradcam[1:]).max() < 0.75
    assert guided[1] > 0.5
    ssim_gradcam = np.array(cascade.mean("gradcam", "abs", "ssim"))
    ssim_guided = np.array(cascade.mean("guided", "abs", "ssim"))
    assert ssim_guided[1:].mean() - ssim_gradcam[1:].mean() >= MARGIN


def test_model_is_left_unchanged(trained_fmnist):
    model, x, _, _ = trained_fmnist
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cascading_randomization(model, x[:2], seed=1)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not model.training


def test_scores_are_spearman_and_ssim_of_the_documented_maps(trained_fmnist, cascade):
    """Recompute stage 1 (logits randomised with seed 0) by hand and score with scipy/skimage."""
    import copy

    model, x, _, _ = trained_fmnist
    x = x[:16]
    randomised = copy.deepcopy(model)
    fresh = copy.deepcopy(randomised[13])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # seed + 0 for the first layer of the cascade
        fresh.reset_parameters()
    randomised[13] = fresh
    targets = torch.tensor(cascade.targets)
    assert torch.equal(targets, model(x).argmax(1))

    def maps(m):
        cam = GradCAM(m, cascade.cam_layer).compute(x, targets, normalize=False)
        g = GuidedBackprop(m).compute(x, targets)
        return {"gradcam": cam.numpy(), "guided": g.abs().sum(1).numpy()}

    a, b = maps(model), maps(randomised)

    def minmax(m):
        return (m - m.min()) / (m.max() - m.min()) if m.max() > m.min() else np.zeros_like(m)

    for method in ("gradcam", "guided"):
        rho = [
            0.0
            if b[method][n].max() == b[method][n].min()
            else spearmanr(a[method][n].ravel(), b[method][n].ravel()).statistic
            for n in range(16)
        ]
        ssim = [
            structural_similarity(minmax(a[method][n]), minmax(b[method][n]), data_range=1.0)
            for n in range(16)
        ]
        entry = cascade.scores[method]["abs"]
        np.testing.assert_allclose(entry["spearman"]["per_image"][1], rho, rtol=0, atol=1e-5)
        np.testing.assert_allclose(entry["ssim"]["per_image"][1], ssim, rtol=0, atol=1e-5)
        assert entry["spearman"]["mean"][1] == pytest.approx(np.mean(rho), abs=1e-5)


def test_cascade_is_reproducible_and_json_ready(trained_fmnist, cascade, tmp_path):
    model, x, _, _ = trained_fmnist
    again = cascading_randomization(model, x[:3], seed=0)  # images are independent in eval mode
    for method, variant in (("gradcam", "abs"), ("guided", "signed")):
        for metric in ("spearman", "ssim"):
            first3 = [stage[:3] for stage in cascade.scores[method][variant][metric]["per_image"]]
            np.testing.assert_allclose(
                again.scores[method][variant][metric]["per_image"], first3, rtol=0, atol=1e-6
            )
    other = cascading_randomization(model, x[:3], seed=5)
    assert other.mean("guided", "abs") != again.mean("guided", "abs")
    json.dumps(cascade.to_json(), allow_nan=False)
    fig = plot_cascade(cascade)
    fig.savefig(tmp_path / "cascade.png")
    assert (tmp_path / "cascade.png").stat().st_size > 10_000
    assert len(cascade.examples["guided/abs"]) == len(cascade.stages)
    np.testing.assert_allclose(
        cascade.examples["gradcam/abs"][0],
        GradCAM(model).compute(x[:1], cascade.targets[0], normalize=False)[0],
        rtol=0,
        atol=1e-6,
    )  # float32: batch of 16 vs one image
    plot_cascade_maps(cascade, x[0, 0].numpy()).savefig(tmp_path / "maps.png")
    assert (tmp_path / "maps.png").stat().st_size > 5_000


def test_cascade_layers_follow_execution_order():
    class Reordered(nn.Module):
        """Registration order differs from execution order: the cascade must use the latter."""

        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 3)
            self.conv_b = nn.Conv2d(4, 4, 3, padding=1)
            self.conv_a = nn.Conv2d(1, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            return self.head(self.conv_b(self.bn(self.conv_a(x))).mean(dim=(2, 3)))

    assert cascade_layers(Reordered(), torch.zeros(1, 1, 8, 8)) == ["head", "conv_b", "conv_a"]
