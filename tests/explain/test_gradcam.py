"""Grad-CAM and Grad-CAM++ against Captum, pytorch-grad-cam and the formulas written out here."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from cnnlab.errors import UserError
from cnnlab.explain import GradCAM, GradCAMPlusPlus, default_target_layer

TOL = 1e-6  # float64 throughout unless stated


def _layer_output_and_head(net, x):
    """A = conv3(features(x)) and the function A -> logits, by hand from SmallNet's layers."""
    a = net.conv3(net.features(x))

    def head(a):
        return net.classifier(torch.relu(a).mean(dim=(2, 3)))

    return a, head


def _per_image_gradients(net, x, targets):
    """dy_{c_n} / dA for each image on its own (no batching), (N, K, h, w)."""
    grads, acts = [], []
    for n, c in enumerate(targets):
        a, head = _layer_output_and_head(net, x[n : n + 1])
        a = a.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(head(a)[0, c], a)
        grads.append(g)
        acts.append(a.detach())
    return torch.cat(acts), torch.cat(grads)


def _gradcam_by_hand(net, x, targets):
    acts, grads = _per_image_gradients(net, x, targets)
    alpha = grads.mean(dim=(2, 3), keepdim=True)  # (N, K, 1, 1)
    return torch.relu((alpha * acts).sum(dim=1))  # (N, h, w)


def _gradcam_pp_by_hand(net, x, targets):
    acts, g = _per_image_gradients(net, x, targets)
    num = g**2
    den = 2 * g**2 + acts.sum(dim=(2, 3), keepdim=True) * g**3
    alpha = torch.where(den != 0, num / torch.where(den != 0, den, 1.0), 0.0)
    w = (alpha * torch.relu(g)).sum(dim=(2, 3), keepdim=True)
    return torch.relu((w * acts).sum(dim=1))


@settings(max_examples=20)
@given(
    n=st.integers(1, 4),
    size=st.integers(5, 17),
    width=st.integers(2, 8),
    seed=st.integers(0, 10_000),
    layer=st.sampled_from(["conv3", "features.3", "features.5", "relu3", "features"]),
)
def test_raw_gradcam_equals_captum(net_factory, n, size, width, seed, layer):
    net = net_factory(seed=seed, width=width)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, dtype=torch.float64, generator=g)
    targets = torch.randint(0, 5, (n,), generator=g)
    with GradCAM(net, layer) as cam:
        ours = cam.compute(x, targets, upsample=False, normalize=False)
    module = net.get_submodule(layer)
    ref = LayerGradCam(net, module).attribute(x, targets.tolist(), relu_attributions=True)[:, 0]
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref.detach(), rtol=0, atol=TOL)


def test_raw_gradcam_equals_the_formula(net, images):
    targets = [0, 3, 3, 1]
    ours = GradCAM(net, "conv3").compute(images, targets, upsample=False, normalize=False)
    torch.testing.assert_close(ours, _gradcam_by_hand(net, images, targets), rtol=0, atol=TOL)
    assert ours.shape == (4, 6, 6)
    assert ours.max() > 0  # a map that is not trivially zero


def test_torchvision_resnet_matches_captum():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18(num_classes=10).double().eval()
    for m in model.modules():  # Captum's own hooks need out-of-place ReLUs
        if isinstance(m, nn.ReLU):
            m.inplace = False
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    for layer in ("layer4", "layer3.1.conv2"):
        ours = GradCAM(model, layer).compute(x, [7, 2], upsample=False, normalize=False)
        ref = LayerGradCam(model, model.get_submodule(layer)).attribute(
            x, [7, 2], relu_attributions=True
        )[:, 0]
        torch.testing.assert_close(ours, ref.detach(), rtol=0, atol=TOL)


def test_gradcam_plusplus_equals_the_formula(net, images):
    targets = [4, 0, 2, 2]
    ours = GradCAMPlusPlus(net, "conv3").compute(images, targets, upsample=False, normalize=False)
    torch.testing.assert_close(ours, _gradcam_pp_by_hand(net, images, targets), rtol=0, atol=TOL)
    assert ours.max() > 0


def test_gradcam_plusplus_matches_pytorch_grad_cam(net_factory):
    from pytorch_grad_cam import GradCAMPlusPlus as ReferenceCAMPP
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net = net_factory(seed=3)
    # pytorch-grad-cam adds eps = 1e-6 to the denominator 2 g^2 + sum(A) g^3 (we do not). Scaling
    # the last layer by 1e4 makes |g| large enough that this eps no longer shows at float32
    # precision (unscaled, the maps differ by up to 0.36).
    with torch.no_grad():
        net.classifier.weight.mul_(1e4)
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    targets = [1, 4, 0]
    for layer in ("relu3", "features.5"):
        ours = GradCAMPlusPlus(net, layer).compute(x, targets)  # upsampled and normalised
        with ReferenceCAMPP(net, [net.get_submodule(layer)]) as ref_cam:
            ref = ref_cam(x, [ClassifierOutputTarget(t) for t in targets])
        # Their maps pass float32 through cv2.resize: compare at float32 precision.
        np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-5)
        assert ours.max() == 1.0


def test_gradcam_matches_pytorch_grad_cam_after_scaling(net, images):
    from pytorch_grad_cam import GradCAM as ReferenceCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = [0, 1, 2, 3]
    ours = GradCAM(net, "relu3").compute(images, targets)
    with ReferenceCAM(net, [net.relu3]) as ref_cam:
        ref = ref_cam(images, [ClassifierOutputTarget(t) for t in targets])
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-5)  # float32 cv2.resize


# -- upsampling and normalisation: the documented procedure, written out with loops -----------


def _bilinear_by_hand(m, out_h, out_w):
    """align_corners=False bilinear: output pixel i samples input coordinate (i + 0.5) * s - 0.5."""
    in_h, in_w = m.shape
    out = np.zeros((out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            y = max((i + 0.5) * in_h / out_h - 0.5, 0.0)
            x = max((j + 0.5) * in_w / out_w - 0.5, 0.0)
            y0, x0 = min(int(y), in_h - 1), min(int(x), in_w - 1)
            y1, x1 = min(y0 + 1, in_h - 1), min(x0 + 1, in_w - 1)
            dy, dx = y - y0, x - x0
            out[i, j] = (
                m[y0, x0] * (1 - dy) * (1 - dx)
                + m[y0, x1] * (1 - dy) * dx
                + m[y1, x0] * dy * (1 - dx)
                + m[y1, x1] * dy * dx
            )
    return out


def test_upsampled_normalised_maps_follow_the_documented_procedure(net, images):
    targets = [2, 2, 0, 1]
    with GradCAM(net, "conv3") as cam:
        raw = cam.compute(images, targets, upsample=False, normalize=False).numpy()
        up = cam.compute(images, targets, upsample=True, normalize=False).numpy()
        final = cam.compute(images, targets).numpy()
    import cv2  # a second, independent bilinear implementation (installed with grad-cam)

    for n in range(len(images)):
        by_hand = _bilinear_by_hand(raw[n], 12, 12)
        np.testing.assert_allclose(up[n], by_hand, rtol=0, atol=TOL)
        np.testing.assert_allclose(cv2.resize(raw[n], (12, 12)), by_hand, rtol=0, atol=TOL)
        minmax = (by_hand - by_hand.min()) / (by_hand.max() - by_hand.min())
        np.testing.assert_allclose(final[n], minmax, rtol=0, atol=TOL)
    assert final.min() == 0.0 and final.max() == 1.0


def test_constant_maps_normalise_to_zero_without_nan():
    from cnnlab.explain import normalize, upsample

    maps = torch.stack([torch.zeros(3, 3), torch.full((3, 3), 2.5), torch.arange(9.0).view(3, 3)])
    out = normalize(upsample(maps, (7, 5)))
    assert out.shape == (3, 7, 5) and not out.isnan().any()
    assert (out[0] == 0).all() and (out[1] == 0).all()
    assert out[2].min() == 0 and out[2].max() == 1


def test_all_zero_cam_stays_zero(net_factory):
    net = net_factory()
    with torch.no_grad():
        net.classifier.weight.fill_(-1.0)  # every channel has negative evidence: alpha < 0 ...
        net.conv3.weight.zero_()
        net.conv3.bias.fill_(1.0)  # ... on positive activations: the ReLU map is all zero
    maps = GradCAM(net, "conv3").compute(torch.randn(2, 3, 8, 8, dtype=torch.float64), 0)
    assert (maps == 0).all()


# -- in-place ReLU, batching, targets -----------------------------------------------------------


def test_inplace_relu_after_the_layer_gives_the_same_maps(net_factory, images):
    plain, inplace = net_factory(seed=5), net_factory(seed=5, inplace=True)
    targets = [1, 0, 4, 2]
    for layer in ("conv3", "features.3", "features.0"):
        for cls in (GradCAM, GradCAMPlusPlus):
            a = cls(plain, layer).compute(images, targets, upsample=False, normalize=False)
            b = cls(inplace, layer).compute(images, targets, upsample=False, normalize=False)
            torch.testing.assert_close(a, b, rtol=0, atol=TOL)


def test_naive_capture_is_corrupted_by_the_inplace_relu(net_factory, images):
    """Shows the in-place test above can fail: keeping the layer output by reference is wrong."""
    net = net_factory(seed=5, inplace=True)
    kept = []
    handle = net.conv3.register_forward_hook(lambda m, i, o: kept.append(o))
    with torch.no_grad():
        net(images)
    handle.remove()
    true_a = net.conv3(net.features(images)).detach()
    assert (kept[0] >= 0).all() and (true_a < 0).any()  # the ReLU overwrote the captured A


def test_mixed_batch_equals_each_image_alone(net, images):
    targets = [3, 0, 0, 4]
    for cls in (GradCAM, GradCAMPlusPlus):
        batch = cls(net, "conv3").compute(images, targets)
        alone = torch.cat(
            [cls(net, "conv3").compute(images[n : n + 1], [t]) for n, t in enumerate(targets)]
        )
        torch.testing.assert_close(batch, alone, rtol=0, atol=TOL)


def test_targets_none_is_the_predicted_class_and_int_is_broadcast(net, images):
    cam = GradCAM(net, "conv3")
    predicted = net(images).argmax(1)
    torch.testing.assert_close(cam.compute(images), cam.compute(images, predicted), rtol=0, atol=0)
    assert torch.equal(cam.targets, predicted)
    torch.testing.assert_close(cam.compute(images, 2), cam.compute(images, [2] * 4), rtol=0, atol=0)
    torch.testing.assert_close(cam.logits, net(images).detach(), rtol=0, atol=TOL)


@pytest.mark.parametrize(
    "targets, message",
    [
        ([0, 1], "got 2 targets for 4 images"),
        ([0, 1, 2, 3, 4], "got 5 targets for 4 images"),
        ([0, 1, 5, 2], "out of range"),
        (-1, "out of range"),
        ([0.5, 1, 2, 3], "integer"),
    ],
)
def test_bad_targets_raise_user_error(net, images, targets, message):
    cam = GradCAM(net, "conv3")
    with pytest.raises(UserError, match=message):
        cam.compute(images, targets)
    assert not net.conv3._forward_hooks


def test_bad_layers_raise_user_error(net, images):
    with pytest.raises(UserError, match="closest names: conv3"):
        GradCAM(net, "conv_3")
    with pytest.raises(UserError, match="not a submodule"):
        GradCAM(net, nn.Conv2d(1, 1, 1))
    with pytest.raises(UserError, match="spatial output"):
        GradCAM(net, "classifier").compute(images)
    with pytest.raises(UserError, match=r"\(N, C, H, W\)"):
        GradCAM(net, "conv3").compute(images[0])
    with pytest.raises(
        UserError, match="images are torch.float32 but the model's parameters are torch.float64"
    ):
        GradCAM(net, "conv3").compute(images.float())


def test_a_layer_that_runs_twice_is_refused(images):
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(self.conv(self.conv(x)).mean(dim=(2, 3)))

    model = Twice().double()
    with pytest.raises(UserError, match="more than once"):
        GradCAM(model, "conv").compute(images)
    assert not model.conv._forward_hooks


# -- the model is left as it was ----------------------------------------------------------------


def _state(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_model_mode_grads_and_buffers_are_untouched(net, images):
    net.train()
    net.features[1].eval()  # a mixed state must come back exactly
    modes = {name: m.training for name, m in net.named_modules()}
    for p in net.features.parameters():
        p.grad = torch.randn_like(p)  # non-None .grad ...
    grads = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
    before = _state(net)  # BatchNorm running stats included

    with GradCAM(net, "conv3") as cam:
        train_mode_maps = cam.compute(images, [0, 1, 2, 3])

    assert {name: m.training for name, m in net.named_modules()} == modes
    for name, p in net.named_parameters():
        if name in grads:
            assert torch.equal(p.grad, grads[name]), name
        else:
            assert p.grad is None, name  # ... and None .grad stay as they were
    after = _state(net)
    assert all(torch.equal(before[k], after[k]) for k in before)
    # Documented choice: the computation itself runs in eval mode.
    net.eval()
    torch.testing.assert_close(
        train_mode_maps, GradCAM(net, "conv3").compute(images, [0, 1, 2, 3]), rtol=0, atol=0
    )


def test_hooks_are_released_after_the_block_and_after_an_exception(net, images):
    with GradCAM(net, "conv3") as cam:
        cam.compute(images)
    assert not any(m._forward_hooks or m._backward_hooks for m in net.modules())

    with pytest.raises(UserError):  # the context manager does not swallow the error
        with GradCAMPlusPlus(net, "conv3") as cam:
            cam.compute(images, [0])
    assert not any(m._forward_hooks or m._backward_hooks for m in net.modules())
    assert torch.is_grad_enabled()

    class Boom(RuntimeError):
        pass

    def explode(module, inputs, output):
        raise Boom

    handle = net.classifier.register_forward_hook(explode)
    with pytest.raises(Boom):
        GradCAM(net, "conv3").compute(images)
    handle.remove()
    assert not any(m._forward_hooks for m in net.modules())
    assert torch.is_grad_enabled() and not net.training


def test_results_hold_no_graph(net, images):
    with GradCAM(net, "conv3") as cam:
        maps = cam.compute(images)
        assert maps.grad_fn is None and not maps.requires_grad
        assert not cam.logits.requires_grad
    assert cam.logits is None


def test_works_under_no_grad_and_inference_mode(net, images):
    ref = GradCAM(net, "conv3").compute(images)
    with torch.no_grad():
        torch.testing.assert_close(GradCAM(net, "conv3").compute(images), ref, rtol=0, atol=0)
    with torch.inference_mode():
        x = images.clone()
        torch.testing.assert_close(GradCAM(net, "conv3").compute(x), ref, rtol=0, atol=0)
    assert torch.is_grad_enabled()


def test_frozen_parameters(net, images):
    ref = GradCAM(net, "conv3").compute(images)
    for p in net.parameters():
        p.requires_grad_(False)
    torch.testing.assert_close(GradCAM(net, "conv3").compute(images), ref, rtol=0, atol=0)


# -- the default layer ----------------------------------------------------------------------


def test_default_layer_is_the_last_conv_block():
    from torchvision.models import mobilenet_v2, resnet18

    x = torch.randn(1, 3, 64, 64)
    # The layers pytorch-grad-cam's README recommends: model.layer4[-1], model.features[-1].
    assert default_target_layer(resnet18(num_classes=3), x) == "layer4.1"
    assert default_target_layer(mobilenet_v2(num_classes=3), x) == "features.18"
    # A VGG-style stack ending in max-pooling: the ReLU of the last conv (pre-pooling map).
    vgg = nn.Sequential(
        nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 4, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ),
        nn.Flatten(),
        nn.Linear(4 * 16 * 16, 3),
    )
    assert default_target_layer(vgg, x) == "0.4"
    cam = GradCAM(vgg)  # resolved on the first call
    assert cam.compute(x).shape == (1, 64, 64) and cam.layer_name == "0.4"
    with pytest.raises(UserError, match="no nn.Conv2d"):
        default_target_layer(nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 2)), x)


def test_float32_gpu_style_inputs_match_float64(net_factory):
    """float32 maps agree with float64 ones to float32 precision (the dtype used in practice)."""
    net64 = net_factory(seed=9)
    net32 = net_factory(seed=9, dtype=torch.float32)
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    a = GradCAM(net64, "conv3").compute(x, [0, 1, 2])
    b = GradCAM(net32, "conv3").compute(x.float(), [0, 1, 2])
    np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=0, atol=1e-4)
    assert F.mse_loss(b.double(), a) < 1e-10


def test_no_graph_outlives_compute(net, images):
    """Every tensor autograd saved during compute is released when compute returns."""
    import gc
    import weakref

    class Saved:  # wraps each saved tensor, so that its lifetime can be watched
        def __init__(self, tensor):
            self.tensor = tensor

    watched = []

    def pack(tensor):
        saved = Saved(tensor)
        watched.append(weakref.ref(saved))
        return saved

    for cls in (GradCAM, GradCAMPlusPlus):
        with cls(net, "conv3") as cam:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda saved: saved.tensor):
                cam.compute(images)
            gc.collect()
            # Freed although the CAM object (with its logits and targets) is still alive.
            assert watched and all(ref() is None for ref in watched)
