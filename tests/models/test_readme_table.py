"""The README's model table states parameter counts; each one is the count of
``cnnlab.analysis.params.count_parameters`` (PyTorch's convention: ``model.parameters()``, buffers
apart) of the registry model, to the figure's printed precision. Parsed from README.md itself, so
an edit to either side that breaks the agreement fails here."""

import re
from pathlib import Path

import pytest
import torch

from cnnlab import models
from cnnlab.analysis.params import count_parameters

README = Path(__file__).resolve().parents[2] / "README.md"

# Which registry model (and class count) each figure of the table's "parameters" column means.
# The 1000-class figures use the ImageNet models, the "(10)" ones the CIFAR variants; the CIFAR
# ResNet range is resnet20 ... resnet110.
CELLS = {
    "`mobilenet_v1`, `mobilenet_v1_cifar`": [("mobilenet_v1", 1000), ("mobilenet_v1_cifar", 10)],
    "`conv_mobilenet_v1[_cifar]`": [("conv_mobilenet_v1", 1000)],
    "`mobilenet_v2`, `mobilenet_v2_cifar`": [("mobilenet_v2", 1000), ("mobilenet_v2_cifar", 10)],
    "`resnet20/32/44/56/110`, `resnet_cifar(depth=6n+2)`": [("resnet20", 10), ("resnet110", 10)],
    "`resnet18`, `plain18`": [("resnet18", 10), ("plain18", 10)],
    "`simple_cnn`, `compact_cnn`": [("simple_cnn", 10), ("compact_cnn", 10)],
    "`vgg_small`": [("vgg_small", 10)],
}
_FIGURE = re.compile(r"(\d+(?:\.\d+)?)([kM])")


def _table() -> dict[str, str]:
    rows = {}
    for line in README.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] in CELLS:
            rows[cells[0]] = cells[2]
    return rows


def _params(name: str, num_classes: int) -> int:
    with torch.device("meta"):
        model = models.create(name, num_classes=num_classes)
    return count_parameters(model).total


def test_every_row_of_the_readme_table_is_checked():
    assert set(_table()) == set(CELLS)


@pytest.mark.parametrize("row", sorted(CELLS))
def test_readme_parameter_figures_match_the_counter(row):
    cell = _table()[row]
    # a "(..., on 1-channel ...)" aside holds other figures (checked below), not this row's
    figures = _FIGURE.findall(cell.split(" (", 1)[0] if "1-channel" in cell else cell)
    assert len(figures) == len(CELLS[row]), (row, figures)
    for (value, unit), (name, classes) in zip(figures, CELLS[row]):
        scale = {"k": 1e3, "M": 1e6}[unit]
        decimals = len(value.split(".")[1]) if "." in value else 0
        exact = _params(name, classes)
        # the printed figure is the count rounded to its printed digits
        assert round(exact / scale, decimals) == float(value), (name, exact, value + unit)


def test_one_channel_figures_of_the_small_cnns():
    # "(94.2k, 104k on 1-channel Fashion-MNIST)": the first conv has 3 x 3 x 32 fewer weights
    cell = _table()["`simple_cnn`, `compact_cnn`"]
    one = _FIGURE.findall(cell.split("(", 1)[1])
    for (value, unit), name in zip(one, ("simple_cnn", "compact_cnn"), strict=True):
        with torch.device("meta"):
            model = models.create(name, num_classes=10, in_chans=1)
        decimals = len(value.split(".")[1]) if "." in value else 0
        assert round(count_parameters(model).total / 1e3, decimals) == float(value)


def test_plain_nets_have_identical_counts_to_their_resnets():
    # the table says "identical" for plain20/.../110: option A shortcuts have no parameters
    for depth in (20, 32, 44, 56, 110):
        assert _params(f"plain{depth}", 10) == _params(f"resnet{depth}", 10)
