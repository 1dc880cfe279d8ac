"""What the PyTorch front end sees: functional ops, shared modules, tied weights, unusual ops.

Expected counts are worked out by hand from the layer definitions in each test.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.analysis import AnalysisError, analyze


class _Functional(nn.Module):
    """Everything outside leaf modules: F.conv2d with a raw parameter, x + y, torch.cat, @,
    F.relu, torch.flatten."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 3, 3, 3))  # a conv weight used through F.conv2d
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.proj = nn.Parameter(torch.randn(8 * 8 * 8, 5))

    def forward(self, x):
        a = F.conv2d(x, self.w, padding=1)  # (4, 8, 8)
        b = self.conv(x)  # (4, 8, 8)
        y = F.relu(a + b)
        y = torch.cat([y, b], dim=1)  # (8, 8, 8)
        return torch.flatten(y, 1) @ self.proj  # (5,)


def test_functional_ops_are_seen():
    a = analyze(_Functional(), (3, 8, 8))
    rows = {r.name: r for r in a.layers}
    assert list(rows) == ["conv2d", "conv", "add", "relu", "cat", "flatten", "matmul"]
    # F.conv2d: 64 positions * 4 filters * 27 taps = 6,912 MACs; its weight 108 params
    assert rows["conv2d"].macs == 6_912 and rows["conv2d"].trainable_params == 108
    assert rows["conv"].macs == 6_912
    assert rows["add"].ops.elementwise == 4 * 64 and rows["add"].inputs == ["conv2d", "conv"]
    assert rows["relu"].ops.act == 256
    assert rows["cat"].output_shape == (8, 8, 8) and rows["cat"].inputs == ["relu", "conv"]
    # @: (1, 512) x (512, 5): 2,560 MACs, and the 2,560-element matrix is a parameter
    assert rows["matmul"].macs == 2_560 and rows["matmul"].trainable_params == 2_560
    assert rows["matmul"].output_shape == (5,)
    assert a.totals["trainable_params"] == sum(p.numel() for p in _Functional().parameters())
    assert a.not_counted == {}


class _Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = self.block(self.block(x))  # the same module twice
        return self.head(x.mean((2, 3)))


def test_shared_module_counts_params_once_and_macs_per_call():
    a = analyze(_Shared(), (4, 6, 6))
    first, second = a.layer("block"), a.layer("block#2")
    # 4 * (4*9 + 1) = 148 params, once; each call 36 positions * 4 * 36 = 5,184 MACs
    assert (first.trainable_params, second.trainable_params) == (148, 0)
    assert first.macs == second.macs == 5_184
    assert second.notes == ["reuses weights counted in block"]
    assert second.inputs == ["block"]
    assert a.totals["trainable_params"] == 148 + 10 == sum(p.numel() for p in _Shared().parameters())
    assert a.totals["total_macs"] == 2 * 5_184 + 8
    # receptive field grows with each call: 3 then 5
    assert (first.receptive_field, second.receptive_field) == ((3, 3), (5, 5))


class _Tied(nn.Module):
    """Two layers sharing one weight Parameter (as tied embeddings / output layers do)."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.decoder = nn.Linear(4, 4)
        self.decoder.weight = self.encoder.weight  # the same Parameter object, own bias

    def forward(self, x):
        return self.decoder(torch.tanh(self.encoder(x)))


def test_tied_weights_are_counted_once():
    model = _Tied()
    a = analyze(model, (4,))
    assert sum(p.numel() for p in model.parameters()) == 16 + 4 + 4  # PyTorch deduplicates too
    assert a.totals["trainable_params"] == 24
    enc, dec = a.layer("encoder"), a.layer("decoder")
    assert (enc.trainable_params, dec.trainable_params) == (20, 4)  # weight counted once
    assert dec.notes == ["reuses weights counted in encoder"]
    assert enc.macs == dec.macs == 16
    assert a.layer("tanh").ops.act == 4
    assert a.totals["receptive_field"] is None  # a flat input
    assert not a.unused


def test_frozen_parameters_and_buffers_are_counted_apart():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    net[0].weight.requires_grad_(False)
    a = analyze(net, (3, 4, 4))
    conv, bn = a.layers
    # PyTorch's convention: frozen conv weight (12) is a frozen parameter, its bias (4)
    # trainable; BN: gamma, beta (8) trainable; running mean and var (8) are buffers the row
    # reads, not parameters; num_batches_tracked (1, never read in eval) is a buffer too
    assert (conv.trainable_params, conv.non_trainable_params, conv.buffers) == (4, 12, 0)
    assert (bn.trainable_params, bn.non_trainable_params, bn.buffers) == (8, 0, 8)
    t = a.totals
    assert (t["total_params"], t["trainable_params"], t["non_trainable_params"]) == (24, 12, 12)
    assert t["total_params"] == sum(p.numel() for p in net.parameters())
    assert t["buffers"] == 4 + 4 + 1 == sum(b.numel() for b in net.buffers())
    assert a.to_dict()["params_convention"] == "pytorch"
    assert "buffers, not parameters (running statistics, counters): 9" in a.summary_lines()[1]
    assert bn.ops.norm == 4 * 16


def test_count_parameters_is_pytorchs_count_with_tied_weights_once():
    from cnnlab.analysis.params import count_parameters

    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight  # tied: one tensor under two names
    net = nn.Sequential(emb, nn.BatchNorm1d(4), head)
    net[1].bias.requires_grad_(False)
    c = count_parameters(net)
    # by hand: embedding 40 (once), BN gamma 4 trainable + beta 4 frozen; buffers 4 + 4 + 1
    assert (c.trainable, c.frozen, c.buffers, c.total) == (44, 4, 9, 48)
    assert c.total == sum(p.numel() for p in net.parameters())


def test_unknown_ops_are_listed_not_silently_zero():
    class Odd(nn.Module):
        def forward(self, x):
            return torch.cumsum(x, dim=1)

    a = analyze(Odd(), (3, 4, 4))
    assert a.not_counted == {"aten.cumsum": 1}
    assert "not counted: aten.cumsum (1 call)" in a.to_markdown()
    # its geometry is unknown too, and the result says so instead of guessing
    assert a.output_layer.receptive_field is None
    assert any("aten.cumsum" in w for w in a.warnings)


def test_batch_scales_counts_and_memory():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    one, four = analyze(net, (3, 8, 8)), analyze(net, (3, 8, 8), batch=4)
    assert four.totals["total_macs"] == 4 * one.totals["total_macs"] == 4 * 36 * 4 * 27
    assert four.layers[1].memory_bytes == 4 * one.layers[1].memory_bytes == 4 * 4 * 36 * 4
    assert four.layers[0].output_shape == one.layers[0].output_shape == (4, 6, 6)
    assert four.totals["total_params"] == one.totals["total_params"]


def test_float64_model_memory_uses_its_dtype():
    a = analyze(nn.Conv2d(1, 2, 3).double(), (1, 5, 5))
    assert a.dtype == "float64" and a.layers[0].memory_bytes == 2 * 3 * 3 * 8


def test_errors_raised_by_model_code_become_one_line_with_the_rows_before():
    class Checked(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.inner = nn.Sequential(nn.ReLU())

        def forward(self, x):
            x = self.inner(self.conv(x))
            if x.shape[-1] != 30:
                raise ValueError(f"expected width 30,\n got {x.shape[-1]}")
            return x

    with pytest.raises(AnalysisError) as info:
        analyze(Checked(), (3, 8, 8))
    assert str(info.value) == ("Checked on input (3, 8, 8) failed in the model's forward: "
                               "ValueError: expected width 30, got 6")
    assert [r.name for r in info.value.partial.layers] == ["conv", "inner.0"]


def test_shape_errors_name_the_layer_and_its_input():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(10, 2))
    with pytest.raises(AnalysisError) as info:
        analyze(net, (3, 8, 8))
    assert str(info.value).startswith("layer '2' (Linear) on input (144,): ")
    assert "\n" not in str(info.value)
    assert [r.name for r in info.value.partial.layers] == ["0", "1"]
