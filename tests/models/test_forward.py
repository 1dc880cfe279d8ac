"""Every registered model: forward at several resolutions, backward, hooks, meta tensors, tracing,
and one-line UserErrors for inputs of the wrong shape (naming the value and the limit).

CPU only, offline, random weights. Checks are on shapes, finiteness and the documented limits;
numerical equality is checked where a second implementation exists (fx-traced and compiled
graphs against eager).
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from cnnlab.errors import UserError
from cnnlab.models import create, list_models, model_info

# image classifiers (N, C, H, W) -> (N, K); other tasks registered later have their own tests
NAMES = [n for n in list_models() if model_info(n).task == "image_classification"]
RHO = (1.0, 0.875, 0.75, 0.5)  # resolution multipliers (MobileNetV1 Sec. 3.3)
NUM_CLASSES = 7  # not a default anywhere, so a wrong head shows


def sizes(name):
    c, h, w = model_info(name).default_input
    return [(int(h * rho), int(w * rho)) for rho in RHO]


@pytest.mark.parametrize("name", NAMES)
def test_forward_at_several_resolutions(name):
    torch.manual_seed(0)
    model = create(name, num_classes=NUM_CLASSES).eval()
    for h, w in sizes(name):
        with torch.no_grad():
            out = model(torch.randn(1, 3, h, w))
        assert out.shape == (1, NUM_CLASSES), (h, w)
        assert torch.isfinite(out).all(), (h, w)


@pytest.mark.parametrize("name", NAMES)
def test_backward_grayscale(name):
    """Training mode, in_chans=1 (Fashion-MNIST), every parameter gets a finite gradient.

    At twice the minimum size (final maps 2x2), to keep the ImageNet-size models cheap.
    """
    torch.manual_seed(0)
    model = create(name, num_classes=NUM_CLASSES, in_chans=1).train()
    h, w = (2 * m for m in model_info(name).min_input)
    out = model(torch.randn(2, 1, h, w))
    assert out.shape == (2, NUM_CLASSES)
    out.logsumexp(1).sum().backward()
    for k, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), k
    assert model.classifier[-1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise_user_error_with_the_limit(name):
    info = model_info(name)
    mh, mw = info.min_input
    with torch.device("meta"):  # shape checks need no data: meta tensors, no compute
        model = create(name, in_chans=3).eval()
    with pytest.raises(UserError, match=rf"{name}(\(depth=20\))? needs inputs of at least "
                                        rf"{mh}x{mw} pixels.*got {mh - 1}x{mw}"):
        model(torch.empty(1, 3, mh - 1, mw, device="meta"))
    with pytest.raises(UserError, match=rf"got {mh}x{mw - 1}"):
        model(torch.empty(1, 3, mh, mw - 1, device="meta"))
    with pytest.raises(UserError, match=r"built for in_chans=3, got an input with 1 channels"):
        model(torch.empty(1, 1, *info.default_input[1:], device="meta"))
    with pytest.raises(UserError, match=r"expects a batch of images \(N, C, H, W\).*\(3, 32, 32\)"):
        model(torch.empty(3, 32, 32, device="meta"))
    out = model(torch.empty(1, 3, mh, mw, device="meta"))  # exactly the minimum is accepted
    assert out.shape == (1, 10) and out.device.type == "meta"


@pytest.mark.parametrize("name", ["mobilenet_v2_cifar", "mobilenet_v1_cifar", "simple_cnn",
                                  "resnet20"])
def test_minimum_input_runs_for_real(name):
    mh, mw = model_info(name).min_input
    model = create(name).eval()
    with torch.no_grad():
        feat = model.forward_features(torch.randn(1, 3, mh, mw))
    assert feat.shape[-2:] == (1, 1)  # min_input is the total downsampling factor


@pytest.mark.parametrize("name", NAMES)
def test_fx_trace_keeps_the_check_and_the_function(name):
    torch.manual_seed(0)
    model = create(name, num_classes=NUM_CLASSES).eval()
    traced = torch.fx.symbolic_trace(model)
    assert any(n.op == "call_function" and n.target.__name__ == "check_image_input"
               for n in traced.graph.nodes)
    h, w = model_info(name).min_input
    x = torch.randn(1, 3, 2 * h, 2 * w)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)
    with pytest.raises(UserError, match="needs inputs of at least"):
        traced(torch.randn(1, 3, h - 1, w))


@pytest.mark.parametrize("name,kw", [("resnet_cifar", {"depth": 8}), ("simple_cnn", {})])
def test_torch_compile_traces_the_check(name, kw):
    """Dynamo (backend "eager": tracing only, no code generation, fast on CPU). Small models:
    dynamo's tracing time grows with the number of modules, and the check is the same in all."""
    torch._dynamo.reset()
    model = create(name, **kw).eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))
        h, w = model_info(name).min_input
        with pytest.raises(UserError, match=f"got {h - 1}x{w - 1}"):
            torch.compile(model, backend="eager")(torch.randn(2, 3, h - 1, w - 1))


@pytest.mark.parametrize("name", NAMES)
def test_no_inplace_ops_and_hooks_work(name):
    """Full backward hooks on every activation (what Guided Backprop / Captum do) must not fail,
    which they do on in-place modules; features, classifier and target_layer are in place."""
    model = create(name, num_classes=NUM_CLASSES).train()
    assert not any(getattr(m, "inplace", False) for m in model.modules())
    seen = []
    acts = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    handles = [m.register_full_backward_hook(lambda m, gi, go: seen.append(1)) for m in acts]
    target = model.get_submodule(model.target_layer)
    handles.append(target.register_forward_hook(lambda m, a, out: seen.append(out.shape)))
    h, w = (2 * m for m in model_info(name).min_input)
    model(torch.randn(2, 3, h, w)).sum().backward()
    for handle in handles:
        handle.remove()
    assert len(seen) == len(acts) + 1
    assert isinstance(model.features, nn.Sequential) and isinstance(model.classifier[-1], nn.Linear)
    assert not isinstance(target, nn.MaxPool2d)


@settings(max_examples=20)
@given(
    name=st.sampled_from(["simple_cnn", "mobilenet_v2_cifar", "resnet20", "mobilenet_v1_cifar"]),
    width=st.sampled_from([0.25, 0.5, 1.0]),
    in_chans=st.integers(1, 4),
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    batch=st.integers(1, 3),
)
def test_random_shapes(name, width, in_chans, h, w, batch):
    """Any H, W >= min_input works (odd sizes included); anything smaller is a UserError."""
    model = create(name, num_classes=5, in_chans=in_chans, width=width).eval()
    x = torch.randn(batch, in_chans, h, w)
    mh, mw = model_info(name).min_input
    if h >= mh and w >= mw:
        with torch.no_grad():
            out = model(x)
        assert out.shape == (batch, 5) and torch.isfinite(out).all()
    else:
        with pytest.raises(UserError, match=f"at least {mh}x{mw} pixels.*got {h}x{w}"):
            model(x)
