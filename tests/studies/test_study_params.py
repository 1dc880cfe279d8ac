"""The MobileNet study's parameter column is the analyzer's parameter count (PyTorch's
convention: ``model.parameters()``, batch-norm running statistics are buffers, not parameters),
so the study's table, ``cnnlab analyze``, ``cnnlab models`` and the README agree."""

import pytest
import torch

from cnnlab import models
from cnnlab.analysis import analyze
from cnnlab.studies import _mobilenet_theory


@pytest.mark.parametrize("name,width", [("mobilenet_v2_cifar", 1.0), ("mobilenet_v1_cifar", 0.5),
                                        ("conv_mobilenet_v1_cifar", 1.0)])
def test_study_table_params_equal_the_analyzers(name, width):
    with torch.device("meta"):
        model = models.create(name, num_classes=10, in_chans=1, width=width)
    counts = _mobilenet_theory.count(model, (1, 28, 28))  # what the study's table shows
    totals = analyze(model, (1, 28, 28)).totals
    assert counts["params"] == totals["total_params"] == sum(p.numel() for p in model.parameters())
    assert counts["trainable_params"] == totals["trainable_params"]
    assert totals["buffers"] == sum(b.numel() for b in model.buffers()) > 0  # apart, not added


def test_mobilenet_v2_10_classes_is_the_readmes_2_24m():
    # README: "2.24M (10)"; the issue: sum(p.numel()) = 2,236,682 (running statistics apart)
    with torch.device("meta"):
        model = models.create("mobilenet_v2_cifar", num_classes=10)
    assert _mobilenet_theory.count(model, (3, 32, 32))["params"] == 2_236_682
