"""Receptive field, jump and start checked against a gradient-based measurement.

The reference: backpropagate 1 from one central output unit of a float64 network with positive
weights and a positive input; the input pixels with non-zero gradient span the receptive field
(its extent per axis), and the centre of that span is ``start + index * jump``. The analyzer's
numbers come from its formulas on the captured graph (PyTorch modules) or on the spec file;
the measurement comes from PyTorch's autograd on the real computation.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from cnnlab.analysis import AnalysisError, analyze


def _check(a, measured):
    extent, centre, (i, j) = measured
    out = a.output_layer
    assert out.receptive_field == extent
    assert (out.start[0] + i * out.jump[0], out.start[1] + j * out.jump[1]) == centre


# ----------------------------------------------------------------------------- PyTorch modules


def test_sequential_strided_padded(measure_rf):
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(),
        nn.Conv2d(2, 2, 5, stride=2), nn.ReLU(),
        nn.AvgPool2d(3, stride=2, padding=1),
        nn.Conv2d(2, 2, (3, 1), stride=(1, 2)),  # different geometry per axis
    )
    shape = (1, 64, 64)
    a = analyze(net, shape)
    # h: 3 -> 3+4 = 7 (j 2) -> 7+2*2 = 11 (j 4) -> 11+2*4 = 19; w: ... -> 11 (k 1), j 8
    assert a.output_layer.receptive_field == (19, 11)
    _check(a, measure_rf(net, shape))


def test_dilated(measure_rf):
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3, dilation=2, padding=2), nn.ReLU(),
        nn.Conv2d(2, 2, 3, dilation=4, stride=2),
        nn.Conv2d(2, 1, 5, dilation=3, padding=1),
    )
    shape = (1, 96, 96)
    a = analyze(net, shape)
    # k_eff 5, 9, 13: rf 5 -> 5 + 8 = 13 (j 2) -> 13 + 12*2 = 37
    assert a.output_layer.receptive_field == (37, 37)
    _check(a, measure_rf(net, shape))


class _Branches(nn.Module):
    """Inception-style: 1x1 | 3x3 | 3x3-3x3 | pool-1x1, concatenated, plus a residual add."""

    def __init__(self):
        super().__init__()
        self.b0 = nn.Conv2d(1, 2, 1)
        self.b1 = nn.Conv2d(1, 2, 3, padding=1)
        self.b2 = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1))
        self.b3 = nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1), nn.Conv2d(1, 2, 1))
        self.project = nn.Conv2d(8, 1, 1)

    def forward(self, x):
        y = torch.cat([self.b0(x), self.b1(x), self.b2(x), self.b3(x)], dim=1)
        return F.relu(self.project(y) + x)


def test_branching_takes_the_largest_aligned_path(measure_rf):
    shape = (1, 32, 32)
    net = _Branches()
    a = analyze(net, shape)
    assert a.output_layer.receptive_field == (5, 5)
    assert not a.warnings
    _check(a, measure_rf(net, shape))


class _Misaligned(nn.Module):
    """Two paths whose units are centred differently: the union is wider than either path."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 1, 3)  # after padding 2 on top/left only: unit i sees [i-2, i]
        self.b = nn.Conv2d(1, 1, 3, padding=1)  # unit i sees [i-1, i+1]

    def forward(self, x):
        return self.a(F.pad(x, (2, 0, 2, 0))) + self.b(x)


def test_misaligned_branches_give_the_hull_and_a_warning(measure_rf):
    shape = (1, 24, 24)
    net = _Misaligned()
    a = analyze(net, shape)
    # [i-2, i] U [i-1, i+1] = [i-2, i+1]: 4 pixels, centred at i - 0.5
    assert a.output_layer.receptive_field == (4, 4)
    assert a.output_layer.start == (-0.5, -0.5)
    assert any("misaligned" in w for w in a.warnings)
    _check(a, measure_rf(net, shape))


class _StridedBranches(nn.Module):
    """Downsampling branches: a stride-2 3x3 conv and a 2x2 average pool (centred half a pixel
    off) added together, as in a ResNet-D shortcut."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, stride=2, padding=1)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x):
        return self.conv(x) + self.pool(x)


def test_strided_branches(measure_rf):
    shape = (1, 32, 32)
    a = analyze(_StridedBranches(), shape)
    assert a.output_layer.receptive_field == (3, 3)
    assert any("misaligned along h" in w for w in a.warnings)
    _check(a, measure_rf(_StridedBranches(), shape))


def test_flatten_linear_sees_every_position(measure_rf):
    net = nn.Sequential(nn.Conv2d(1, 2, 5), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    shape = (1, 16, 16)
    a = analyze(net, shape)
    # conv 5 valid: 12, rf 5; pool 2: 6, rf 6, j 2; linear over 6 positions: 6 + 5*2 = 16
    assert a.output_layer.receptive_field == (16, 16)
    extent, centre, _ = measure_rf(net, shape)
    assert extent == (16, 16) and centre == (7.5, 7.5) == a.output_layer.start


def test_squeeze_excitation_makes_the_field_global(measure_rf):
    class SE(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            return y * torch.sigmoid(y.mean((2, 3), keepdim=True))

    shape = (1, 20, 20)
    a = analyze(SE(), shape)
    extent, _, _ = measure_rf(SE(), shape)
    assert extent == (20, 20)  # the gradient reaches the whole image
    # the analyzer's field covers at least the whole image (3 + 19 = 22: it counts padding)
    assert a.output_layer.receptive_field == (22, 22)


def test_maxpool_geometry_equals_avgpool():
    shape = (1, 33, 33)
    rf = [analyze(nn.Sequential(nn.Conv2d(1, 1, 3), pool(3, 2, 1)), shape).output_layer
          for pool in (nn.MaxPool2d, nn.AvgPool2d)]
    assert (rf[0].receptive_field, rf[0].jump, rf[0].start) == (rf[1].receptive_field, rf[1].jump, rf[1].start)


# ----------------------------------------------------------------------------- spec files


class _SpecNet(nn.Module):
    """A spec executed by PyTorch: 'same' as explicit TensorFlow padding (extra bottom/right),
    pooling as average pooling (same geometry, a gradient to every tap)."""

    def __init__(self, spec):
        super().__init__()
        self.layers = spec["layers"]
        self.mods = nn.ModuleList()
        for layer in self.layers:
            kind = layer["type"]
            if kind == "Conv2D":
                self.mods.append(nn.LazyConv2d(layer["filters"], layer["kernel_size"],
                                               stride=layer.get("strides", 1),
                                               dilation=layer.get("dilation_rate", 1), bias=False))
            elif kind == "Dense":
                self.mods.append(nn.LazyLinear(layer["units"]))
            else:
                self.mods.append(nn.Identity())

    def forward(self, x):
        outs, prev = {"input": x}, x
        for i, (layer, mod) in enumerate(zip(self.layers, self.mods)):
            kind = layer["type"]
            xs = [outs[n] for n in layer["inputs"]] if "inputs" in layer else [prev]
            x = xs[0]
            if kind in ("Conv2D", "MaxPooling2D", "AveragePooling2D"):
                conv = kind == "Conv2D"
                k = layer["kernel_size"] if conv else layer.get("pool_size", 2)
                s = layer.get("strides", 1 if conv else k) or k
                d = layer.get("dilation_rate", 1) if conv else 1
                padding = layer.get("padding", "valid")
                if padding == "same":
                    h = x.shape[-1]
                    total = max((math.ceil(h / s) - 1) * s + d * (k - 1) + 1 - h, 0)
                    x = F.pad(x, (total // 2, total - total // 2) * 2)
                elif isinstance(padding, int):
                    x = F.pad(x, (padding,) * 4)
                x = mod(x) if conv else F.avg_pool2d(x, k, s)
            elif kind == "Concatenate":
                x = torch.cat(xs, 1)
            elif kind == "Add":
                x = sum(xs)
            elif kind == "Flatten":
                x = x.flatten(1)
            elif kind == "Dense":
                x = mod(x)
            else:
                raise AssertionError(kind)
            outs[layer.get("name", f"#{i}")] = prev = x
        return x


def _measure_spec(spec, measure_rf):
    net = _SpecNet(spec)
    net(torch.zeros(1, *spec["input"]))  # materialise the lazy layers
    return measure_rf(net, tuple(spec["input"]))


@pytest.mark.parametrize("exercise", ["grayscale_128", "inception_resnet_a", "two_conv_layers"])
def test_exercises_against_the_gradient(exercise, exercises, measure_rf):
    import yaml

    spec = yaml.safe_load((exercises / f"{exercise}.yaml").read_text())
    _check(analyze(spec), _measure_spec(spec, measure_rf))


def test_dilated_stack_up_to_the_impossible_layer(exercises, measure_rf):
    import yaml

    spec = yaml.safe_load((exercises / "dilated_stack.yaml").read_text())
    spec["layers"] = spec["layers"][:7]  # the 8th layer cannot exist
    spec["input"] = [1, 256, 256]  # one channel is enough for the geometry
    _check(analyze(spec), _measure_spec(spec, measure_rf))


_layer = st.one_of(
    st.fixed_dictionaries({
        "type": st.just("Conv2D"), "filters": st.just(2), "kernel_size": st.integers(1, 5),
        "strides": st.integers(1, 2), "dilation_rate": st.integers(1, 3),
        "padding": st.sampled_from(["valid", "same", 0, 1, 2]),
    }),
    st.fixed_dictionaries({
        "type": st.sampled_from(["MaxPooling2D", "AveragePooling2D"]), "pool_size": st.integers(1, 3),
        "strides": st.integers(1, 3), "padding": st.sampled_from(["valid", "same"]),
    }),
)


@settings(max_examples=40)
@given(layers=st.lists(_layer, min_size=1, max_size=4), size=st.integers(40, 72))
def test_random_stacks_against_the_gradient(layers, size, measure_rf):
    spec = {"input": [1, size, size], "layers": layers}
    try:
        a = analyze(spec)
    except AnalysisError:
        assume(False)  # a kernel larger than its input: covered by the bad-input tests
    out = a.output_layer
    h = out.output_shape[1]
    i = h // 2
    centre = out.start[0] + i * out.jump[0]
    # compare only where the field lies inside the image (the gradient cannot see padding)
    assume(centre - (out.receptive_field[0] - 1) / 2 >= 0)
    assume(centre + (out.receptive_field[0] - 1) / 2 <= size - 1)
    _check(a, _measure_spec(spec, measure_rf))
