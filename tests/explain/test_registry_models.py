"""Explanations on cnnlab's own registered models, against Captum and the models' declared layer."""

import pytest
import torch
from captum.attr import GuidedBackprop as CaptumGuidedBackprop
from captum.attr import LayerGradCam
from torch import nn

from cnnlab.explain import GradCAM, GuidedBackprop, default_target_layer
from cnnlab.models import create

MODELS = ["simple_cnn", "resnet20", "mobilenet_v2_cifar", "mobilenet_v1_cifar", "vgg_small"]


# float64 depthwise convolutions are ~10x slower than float32 on the CPU: the MobileNets run in
# float32 and are compared at float32 precision (relative 1e-5 of the map's scale).
FLOAT32 = {"mobilenet_v2_cifar", "mobilenet_v1_cifar"}


def _model(name):
    torch.manual_seed(0)
    dtype = torch.float32 if name in FLOAT32 else torch.float64
    model = create(name, num_classes=10, width=0.25).to(dtype).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("name", MODELS)
def test_default_layer_gives_the_models_declared_gradcam(name):
    model = _model(name)
    x = torch.randn(10, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = x.to(next(model.parameters()).dtype)
    targets = list(range(10))  # every class once: some maps of an untrained model are all zero
    layer = default_target_layer(model, x)
    declared = model.target_layer
    # Same tensor: the declared stage or its last block (e.g. features.3 vs features.3.2).
    assert layer == declared or layer.startswith(declared + ".")
    ours = GradCAM(model).compute(x, targets, upsample=False, normalize=False)
    ref = (
        LayerGradCam(model, model.get_submodule(declared))
        .attribute(x, targets, relu_attributions=True)[:, 0]
        .detach()
    )
    atol = 1e-5 * float(ref.abs().max()) if name in FLOAT32 else 1e-6
    torch.testing.assert_close(ours, ref, rtol=0, atol=atol)
    assert ref.abs().max() > 0


@pytest.mark.parametrize("name", ["simple_cnn", "resnet20"])
def test_guided_backprop_on_relu_models_equals_captum(name):
    model = _model(name)
    assert not any(isinstance(m, nn.ReLU6) for m in model.modules())
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours = GuidedBackprop(model).compute(x, [0, 9])
    ref = CaptumGuidedBackprop(model).attribute(x.clone().requires_grad_(True), [0, 9]).detach()
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
