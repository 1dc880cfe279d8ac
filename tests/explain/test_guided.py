"""Guided Backprop and Guided Grad-CAM against Captum and a hand-written guided ReLU rule."""

import pytest
import torch
from captum.attr import GuidedBackprop as CaptumGuidedBackprop
from captum.attr import GuidedGradCam as CaptumGuidedGradCam
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from cnnlab.errors import UserError
from cnnlab.explain import GradCAM, GuidedBackprop, GuidedGradCAM

TOL = 1e-6  # float64


def _captum_guided(net, x, targets):
    return CaptumGuidedBackprop(net).attribute(x.clone().requires_grad_(True), targets).detach()


@settings(max_examples=15)
@given(
    n=st.integers(1, 4),
    size=st.integers(4, 16),
    width=st.integers(2, 6),
    seed=st.integers(0, 10_000),
)
def test_guided_backprop_equals_captum(net_factory, n, size, width, seed):
    net = net_factory(seed=seed, width=width)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, dtype=torch.float64, generator=g)
    targets = torch.randint(0, 5, (n,), generator=g).tolist()
    ours = GuidedBackprop(net).compute(x, targets)
    torch.testing.assert_close(ours, _captum_guided(net, x, targets), rtol=0, atol=TOL)


def test_guided_differs_from_the_plain_gradient(net, images):
    """Shows the Captum comparison can fail: the guided rule changes the gradient."""
    ours = GuidedBackprop(net).compute(images, [0, 1, 2, 3])
    x = images.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(net(x).gather(1, torch.tensor([[0], [1], [2], [3]])).sum(), x)
    assert (ours - plain).abs().max() > 0.1 * plain.abs().max()


def test_inplace_and_functional_relus_are_guided_like_modules(net_factory, images):
    targets = [4, 3, 2, 1]
    reference = _captum_guided(net_factory(seed=2), images, targets)  # nn.ReLU modules
    for kw in ({"inplace": True}, {"functional": True}):
        net = net_factory(seed=2, **kw)
        ours = GuidedBackprop(net).compute(images, targets)
        torch.testing.assert_close(ours, reference, rtol=0, atol=TOL)


class _GuidedClampByHand(nn.Module):
    """Guided ReLU6 written another way: rectify the incoming gradient with a tensor hook."""

    def forward(self, x):
        y = x.clamp(0, 6)
        if y.requires_grad:
            y.register_hook(lambda g: g.clamp(min=0))
        return y  # clamp's own backward then gates by 0 < x < 6


def _relu6_net(act):
    torch.manual_seed(4)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        act(),
        nn.Conv2d(6, 6, 3, padding=1),
        act(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 4),
    ).double()


def test_relu6_is_guided_with_gate_0_to_6():
    x = 4 * torch.randn(3, 3, 8, 8, dtype=torch.float64)  # large inputs: both clamps are active
    net = _relu6_net(lambda: nn.ReLU6(inplace=True))
    by_hand = _relu6_net(_GuidedClampByHand)
    ours = GuidedBackprop(net).compute(x, [0, 1, 3])
    x_ = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(by_hand(x_)[[0, 1, 2], [0, 1, 3]].sum(), x_)
    torch.testing.assert_close(ours, ref, rtol=0, atol=TOL)
    assert ours.abs().max() > 0


def test_model_is_unchanged_and_guidance_ends_even_after_an_exception(net, images):
    modules_before = list(net.modules())
    net.train()
    for p in net.parameters():
        p.grad = None
    net.classifier.weight.grad = torch.ones_like(net.classifier.weight)
    state = {k: v.clone() for k, v in net.state_dict().items()}

    class Boom(RuntimeError):
        pass

    def explode(module, inputs, output):
        raise Boom

    handle = net.classifier.register_forward_hook(explode)
    with pytest.raises(Boom), GuidedBackprop(net) as guided:
        guided.compute(images)
    handle.remove()
    GuidedBackprop(net).compute(images, [0, 0, 0, 0])

    assert list(net.modules()) == modules_before  # nothing swapped
    assert all(m.training for m in net.modules())
    assert torch.equal(net.classifier.weight.grad, torch.ones_like(net.classifier.weight))
    assert all(p.grad is None for n, p in net.named_parameters() if n != "classifier.weight")
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    # Outside compute, ReLU has its ordinary gradient again (the guided mode ended).
    x = torch.tensor([-1.0, 2.0], requires_grad=True)
    (g,) = torch.autograd.grad((torch.relu(x) * torch.tensor([3.0, -5.0])).sum(), x)
    assert g.tolist() == [0.0, -5.0]


def test_guided_backprop_bad_targets(net, images):
    with pytest.raises(UserError, match="got 3 targets for 4 images"):
        GuidedBackprop(net).compute(images, [1, 2, 3])


def test_guided_gradcam_equals_captum_bilinear(net, images):
    targets = [1, 1, 0, 3]
    with GuidedGradCAM(net, "conv3") as ggc:
        ours = ggc.compute(images, targets)
        assert torch.equal(ggc.targets, torch.tensor(targets))
    ref = (
        CaptumGuidedGradCam(net, net.conv3)
        .attribute(images.clone().requires_grad_(True), targets, interpolate_mode="bilinear")
        .detach()
    )
    torch.testing.assert_close(ours, ref, rtol=0, atol=TOL)
    # ... and is the product of the two parts as documented.
    cam = GradCAM(net, "conv3").compute(images, targets, normalize=False)
    torch.testing.assert_close(
        ours, GuidedBackprop(net).compute(images, targets) * cam[:, None], rtol=0, atol=TOL
    )


def test_guided_gradcam_predicted_classes(net, images):
    ggc = GuidedGradCAM(net, "conv3")
    out = ggc.compute(images)
    predicted = net(images).argmax(1)
    assert torch.equal(ggc.targets, predicted)
    torch.testing.assert_close(out, ggc.compute(images, predicted), rtol=0, atol=0)
