"""Real models: parameters against ``sum(p.numel())``, conv/linear MACs against torch's
``FlopCounterMode`` (which counts 2 FLOPs per multiply-accumulate), output shapes against a real
forward pass. Models are built on the ``meta`` device (no weights allocated) except where a real
forward is needed."""

from __future__ import annotations

import warnings
from collections import defaultdict

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.analysis import analyze

# (name, input): resnet (residual adds), mobilenets (depthwise, SE, hardswish), googlenet
# (Inception branches + unused auxiliary heads), shufflenet (split/shuffle), convnext (permute +
# LayerNorm + Linear on channels-last)
MODELS = [
    ("resnet18", (3, 224, 224)),
    ("mobilenet_v2", (3, 224, 224)),
    ("mobilenet_v3_small", (3, 224, 224)),
    ("googlenet", (3, 224, 224)),
    ("shufflenet_v2_x0_5", (3, 224, 224)),
    ("convnext_tiny", (3, 96, 96)),
]


def _meta_model(name):
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore", FutureWarning)
        return torchvision.models.get_model(name, weights=None)


def _flop_counter(model, shape):
    """torch's own count, per module (fully qualified with the class name prefix) and total."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    model.eval()
    with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
        x = torch.empty((1, *shape), device="meta")
        with FlopCounterMode(display=False) as counter:
            model(x)
    return counter


@pytest.mark.parametrize("name,shape", MODELS, ids=[m[0] for m in MODELS])
def test_params_and_macs_match_pytorch(name, shape):
    model = _meta_model(name)
    a = analyze(model, shape)
    t = a.totals
    # PyTorch's convention: params are sum(p.numel()), buffers (running statistics and
    # num_batches_tracked) a separate count
    assert t["total_params"] == t["trainable_params"] == sum(p.numel() for p in model.parameters())
    assert t["non_trainable_params"] == 0
    assert t["buffers"] == sum(b.numel() for b in model.buffers())
    # rows + parameters no forward pass reads (googlenet's aux heads in eval) = totals
    rows = sum(r.params for r in a.layers)
    assert rows + sum(u.trainable + u.non_trainable for u in a.unused) == t["total_params"]
    assert sum(r.buffers for r in a.layers) <= t["buffers"]  # rows: the buffers they read

    counter = _flop_counter(model, shape)
    reference = counter.get_total_flops() / 2
    assert abs(t["total_macs"] - reference) <= 0.005 * reference  # the 0.5 %
    # per leaf module as well (first call of each module; no module here is called twice
    # except parameter-free ones such as ResNet's ReLU)
    per_module = defaultdict(int)
    prefix = type(model).__name__ + "."
    for key, ops in counter.get_flop_counts().items():
        per_module[key.removeprefix(prefix)] += sum(ops.values())
    for row in a.layers:
        if row.macs and "#" not in row.name and ":" not in row.name:
            assert row.macs == per_module[row.name] // 2, row.name
    assert a.not_counted == {}


def test_googlenet_reports_its_unused_auxiliary_heads():
    model = _meta_model("googlenet")
    a = analyze(model, (3, 224, 224))
    aux = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("aux1.", "aux2.")))
    assert {u.name for u in a.unused} == {"aux1", "aux2"}
    assert sum(u.trainable for u in a.unused) == aux
    assert any("never used by the forward pass" in w for w in a.warnings)
    # Inception branches: the concatenation rows join four branches each
    cats = [r for r in a.layers if r.type == "cat"]
    assert len(cats) == 9 and all(len(r.inputs) == 4 for r in cats)


def test_output_shapes_match_a_real_forward():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    shape = (3, 64, 64)
    seen = {}
    names = {m: n for n, m in model.named_modules()}

    def record(module, inputs, output):
        seen.setdefault(names[module], tuple(output.shape[1:]))  # first call of each module

    hooks = [m.register_forward_hook(record) for m in model.modules() if next(m.children(), None) is None]
    with torch.no_grad():
        out = model(torch.randn(1, *shape))
    for h in hooks:
        h.remove()
    a = analyze(model, shape)
    checked = 0
    for row in a.layers:
        if row.name in seen:
            assert row.output_shape == seen[row.name], row.name
            checked += 1
    leaves = sum(1 for m in model.modules() if next(m.children(), None) is None)
    assert checked == len(seen) == leaves  # every leaf module ran and was compared
    assert a.output_layer.output_shape == tuple(out.shape[1:]) == (10,)
    # the analysis ran on fake tensors: the real model's weights are untouched and it is back
    # in eval mode as before
    assert not model.training and model.conv1.weight.device.type == "cpu"


def test_model_mode_is_restored():
    model = torchvision.models.resnet18(num_classes=10)
    model.train()
    analyze(model, (3, 32, 32))
    assert all(m.training for m in model.modules())
