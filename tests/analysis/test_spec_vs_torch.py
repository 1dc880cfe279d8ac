"""A spec file and the equivalent hand-written nn.Module give identical tables; spec output
shapes equal what PyTorch and the NumPy engine produce."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from cnnlab.analysis import AnalysisError, analyze
from cnnlab.numpy_ref import conv2d_forward, maxpool2d_forward

SPEC = yaml.safe_load("""
input: [3, 32, 32]
layers:
  - {name: stem, type: Conv2D, filters: 16, kernel_size: 3, padding: same, use_bias: false}
  - {name: bn, type: BatchNormalization}
  - {name: relu, type: ReLU}
  - {name: pool, type: MaxPooling2D, pool_size: 2}
  - {name: b1, type: Conv2D, filters: 8, kernel_size: 1, inputs: [pool]}
  - {name: b2, type: Conv2D, filters: 8, kernel_size: 3, padding: 1, inputs: [pool]}
  - {name: b3, type: DepthwiseConv2D, kernel_size: 3, padding: same, inputs: [pool]}
  - {name: cat, type: Concatenate, inputs: [b1, b2, b3]}
  - {name: res, type: Conv2D, filters: 32, kernel_size: 1, inputs: [pool]}
  - {name: add, type: Add, inputs: [cat, res]}
  - {name: dil, type: Conv2D, filters: 32, kernel_size: 3, dilation_rate: 2}
  - {name: avg, type: AveragePooling2D, pool_size: 3, strides: 2}
  - {name: flatten, type: Flatten}
  - {name: drop, type: Dropout, rate: 0.2}
  - {name: fc, type: Dense, units: 10}
""")


class Hand(nn.Module):
    """SPEC written by hand in PyTorch ('same' 3x3 stride 1 = padding 1 on every side)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.b1 = nn.Conv2d(16, 8, 1)
        self.b2 = nn.Conv2d(16, 8, 3, padding=1)
        self.b3 = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.res = nn.Conv2d(16, 32, 1)
        self.dil = nn.Conv2d(32, 32, 3, dilation=2)
        self.avg = nn.AvgPool2d(3, stride=2)
        self.flatten = nn.Flatten()
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(32 * 5 * 5, 10)

    def forward(self, x):
        x = self.pool(self.relu(self.bn(self.stem(x))))
        y = torch.cat([self.b1(x), self.b2(x), self.b3(x)], dim=1)
        y = y + self.res(x)
        return self.fc(self.drop(self.flatten(self.avg(self.dil(y)))))


def _table(a):
    """Rows with parameters in Keras' convention: a module's batch-norm running statistics
    (buffers in PyTorch) are Keras' non-trainable weights."""
    return [(r.name, r.output_shape, r.trainable_params, r.non_trainable_params + r.buffers, r.ops,
             r.receptive_field, r.jump, r.start, r.memory_bytes, r.inputs) for r in a.layers]


_PARAM_KEYS = ("total_params", "non_trainable_params", "buffers")


@pytest.mark.parametrize("batch", [1, 3])
def test_spec_and_module_give_identical_tables(batch):
    from_spec = analyze(SPEC, batch=batch)
    from_torch = analyze(Hand(), (3, 32, 32), batch=batch)
    assert _table(from_spec) == _table(from_torch)
    spec_t, torch_t = from_spec.totals, from_torch.totals
    assert {k: v for k, v in spec_t.items() if k not in _PARAM_KEYS} == {
        k: v for k, v in torch_t.items() if k not in _PARAM_KEYS}
    # each ecosystem's own convention: Keras counts the moving mean/variance as non-trainable
    # weights; PyTorch's parameters are model.parameters() and the statistics are buffers
    model = Hand()
    stats = model.bn.running_mean.numel() + model.bn.running_var.numel()
    assert spec_t["trainable_params"] == torch_t["trainable_params"] == sum(
        p.numel() for p in model.parameters())
    assert (spec_t["non_trainable_params"], torch_t["non_trainable_params"]) == (stats, 0)
    assert spec_t["total_params"] == torch_t["total_params"] + stats
    assert (spec_t["buffers"], torch_t["buffers"]) == (0, stats + 1)  # + num_batches_tracked
    assert from_spec.to_dict()["params_convention"] == "keras"


def test_global_average_pooling_matches_mean():
    spec = {"input": [3, 9, 9], "layers": [
        {"type": "Conv2D", "filters": 4, "kernel_size": 3, "name": "conv"},
        {"type": "GlobalAveragePooling2D", "name": "mean"},
        {"type": "Dense", "units": 2, "name": "fc"}]}

    class Gap(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3)))

    assert _table(analyze(spec)) == _table(analyze(Gap(), (3, 9, 9)))


def test_spec_shapes_equal_a_real_pytorch_forward():
    model = Hand().eval()
    seen = {}

    def record(module, inputs, output):
        seen[names[module]] = tuple(output.shape[1:])

    names = {m: n for n, m in model.named_children()}
    hooks = [m.register_forward_hook(record) for m in names]
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    rows = {r.name: r.output_shape for r in analyze(SPEC).layers}
    assert len(seen) == 13
    for name, shape in seen.items():
        assert rows[name] == shape, name
    assert rows["fc"] == tuple(out.shape[1:])


@pytest.mark.parametrize("exercise", ["two_conv_layers", "grayscale_128", "dilated_stack"])
def test_spec_shapes_equal_the_numpy_engine(exercise, exercises):
    """Replay each conv/pool layer's geometry through cnnlab.numpy_ref on a 1-channel input
    (spatial sizes do not depend on channels; channels are the layer's filters)."""
    spec = yaml.safe_load((exercises / f"{exercise}.yaml").read_text())
    layers = spec["layers"]
    try:
        rows = analyze(spec).layers
    except AnalysisError as exc:  # dilated_stack: compare the layers before the impossible one
        rows = exc.partial.layers
    h = spec["input"][1]
    x = np.zeros((1, 1, h, h))
    for layer, row in zip(layers, rows):
        if layer["type"] == "Conv2D":
            k = layer["kernel_size"]
            x, _ = conv2d_forward(x, np.zeros((1, 1, k, k)), stride=layer.get("strides", 1),
                                  padding=layer.get("padding", "valid"),
                                  dilation=layer.get("dilation_rate", 1))
            assert row.output_shape == (layer["filters"], *x.shape[2:]), row.name
        elif layer["type"] == "MaxPooling2D":
            x, _ = maxpool2d_forward(x, layer["pool_size"], layer.get("strides"))
            assert row.output_shape[1:] == x.shape[2:], row.name
    assert len(rows) >= 2
