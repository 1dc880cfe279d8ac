"""The U-Nets: the course's encoder taps (strides, channels, values against torchvision's own
MobileNetV2), a frozen encoder that stays bit-identical, encoder weights from a torchvision
state dict and from cnnlab files, the paper's U-Net parameter count, bad inputs."""

from __future__ import annotations

import pytest
import torch
import torchvision

from cnnlab import models
from cnnlab.engine import checkpoint as ckpt_io
from cnnlab.errors import UserError
from cnnlab.engine.encoder_weights import load_encoder_weights

# The TF pix2pix tutorial's taps of MobileNetV2 (alpha 1) on a 128x128 input: (H, W, C)
KERAS_TAPS = [(64, 64, 96), (32, 32, 144), (16, 16, 192), (8, 8, 576), (4, 4, 320)]


def test_registered_with_the_segmentation_task():
    for name in ("unet_mobilenet_v2", "unet"):
        info = models.model_info(name)
        assert info.task == "segmentation" and info.family == "unet"
    assert "freeze_encoder" in models.model_info("unet_mobilenet_v2").options
    assert "base" in models.model_info("unet").options


def test_encoder_taps_have_the_courses_strides_and_channels():
    m = models.create("unet_mobilenet_v2", num_classes=1, in_chans=3).eval()
    taps = m.encoder(torch.zeros(1, 3, 128, 128))
    assert [(t.shape[2], t.shape[3], t.shape[1]) for t in taps] == KERAS_TAPS
    half = models.create("unet_mobilenet_v2", num_classes=1, in_chans=3, width=0.5)
    # alpha 0.5: channels 8 * 6, 16 * 6, 16 * 6, 48 * 6 (make_divisible of 16/24/32/96 * 0.5), 160
    assert half.encoder.channels == (48, 96, 96, 288, 160)


def test_taps_equal_torchvision_mobilenet_v2_at_the_keras_layers():
    torch.manual_seed(0)
    tv = torchvision.models.mobilenet_v2().double().eval()
    m = models.create("unet_mobilenet_v2", num_classes=1, in_chans=3).double().eval()
    path_state = {k: v for k, v in tv.state_dict().items()}
    m.encoder.features.load_state_dict(
        {k[len("features."):]: v for k, v in path_state.items()
         if k.startswith("features.") and not k.startswith(("features.18", "features.17.conv.3"))})
    grabbed = {}
    hooks = [tv.features[i].conv[j].register_forward_hook(
        lambda mod, inp, out, key=(i, j): grabbed.__setitem__(key, out))
        for i, j in ((2, 0), (4, 0), (7, 0), (14, 0), (17, 2))]
    x = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    tv(x)
    for h in hooks:
        h.remove()
    ours = m.encoder(x)
    for got, key in zip(ours, ((2, 0), (4, 0), (7, 0), (14, 0), (17, 2)), strict=True):
        torch.testing.assert_close(got, grabbed[key], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size", [(64, 64), (64, 96)])
def test_output_is_one_logit_per_input_pixel(size):
    m = models.create("unet_mobilenet_v2", num_classes=1, in_chans=1, width=0.35,
                      decoder_width=0.25)
    assert m(torch.zeros(2, 1, *size)).shape == (2, 1, *size)
    u = models.create("unet", num_classes=1, in_chans=1, base=4)
    assert u(torch.zeros(2, 1, *size)).shape == (2, 1, *size)


def test_input_not_divisible_by_32_is_one_line():
    m = models.create("unet_mobilenet_v2", num_classes=1, in_chans=1, width=0.35)
    with pytest.raises(UserError, match="divisible by 32.*got 100x64; resize to e.g. 96x64"):
        m(torch.zeros(1, 1, 100, 64))
    with pytest.raises(UserError, match="built for in_chans=1"):
        m(torch.zeros(1, 3, 64, 64))


def test_frozen_encoder_stays_bit_identical():
    torch.manual_seed(0)
    m = models.create("unet_mobilenet_v2", num_classes=1, in_chans=1, width=0.35,
                      decoder_width=0.25, freeze_encoder=True)
    before = {k: v.clone() for k, v in m.encoder.state_dict().items()}
    decoder_before = {k: v.clone() for k, v in m.decoder.state_dict().items()}
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    m.train()
    for _ in range(3):
        x = torch.randn(4, 1, 64, 64)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            m(x), (x > 0).float())
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = m.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics included
    assert not all(torch.equal(decoder_before[k], v) for k, v in m.decoder.state_dict().items())
    assert not m.encoder.training and m.decoder.training
    m.set_encoder_frozen(False)
    assert all(p.requires_grad for p in m.encoder.parameters())


def test_torchvision_state_dict_loads_into_the_encoder(tmp_path):
    torch.manual_seed(1)
    tv = torchvision.models.mobilenet_v2().eval()
    torch.save(tv.state_dict(), tmp_path / "tv.pt")
    m = models.create("unet_mobilenet_v2", num_classes=1, in_chans=3).eval()
    assert "301 tensors" in load_encoder_weights(m, tmp_path / "tv.pt")
    x = torch.randn(1, 3, 64, 64)
    # the deepest tap is features.17.conv.2 of torchvision's network
    out = {}
    tv.features[17].conv[2].register_forward_hook(lambda mod, i, o: out.setdefault("t", o))
    tv(x)
    torch.testing.assert_close(m.encoder(x)[-1], out["t"])
    # one input channel: the RGB stem summed = the grey image fed as R = G = B
    g = models.create("unet_mobilenet_v2", num_classes=1, in_chans=1).eval()
    assert "summed" in load_encoder_weights(g, tmp_path / "tv.pt")
    grey = torch.randn(1, 1, 64, 64)
    torch.testing.assert_close(g.encoder(grey)[-1], m.encoder(grey.expand(1, 3, 64, 64))[-1],
                               rtol=1e-4, atol=1e-5)


def test_cnnlab_weights_and_checkpoints_load(tmp_path):
    torch.manual_seed(2)
    clf = models.create("mobilenet_v2_cifar", num_classes=10, in_chans=1, width=0.5)
    torch.save(clf.state_dict(), tmp_path / "model.pt")
    ckpt_io.atomic_save({"format": ckpt_io.FORMAT, "config": {}, "epoch": 1, "step_in_epoch": 0,
                         "step": 1, "model": clf.state_dict(), "optimizer": {},
                         "callbacks": {}, "history": []}, tmp_path / "checkpoint.pt")
    for file in ("model.pt", "checkpoint.pt", ""):  # "" = the run folder (its model.pt)
        m = models.create("unet_mobilenet_v2", num_classes=1, in_chans=1, width=0.5)
        load_encoder_weights(m, tmp_path / file)
        assert torch.equal(m.encoder.features[5].conv[1][0].weight,
                           clf.features[5].conv[1][0].weight)
    # a unet_mobilenet_v2 weights file gives its encoder to another one
    torch.save(m.state_dict(), tmp_path / "unet.pt")
    other = models.create("unet_mobilenet_v2", num_classes=1, in_chans=1, width=0.5)
    load_encoder_weights(other, tmp_path / "unet.pt")
    assert torch.equal(other.encoder.features[0][0].weight, clf.features[0][0].weight)


def test_weights_of_another_model_are_one_line(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet.pt")
    m = models.create("unet_mobilenet_v2", num_classes=1, in_chans=1, width=0.5)
    with pytest.raises(UserError, match="resnet.pt is not a MobileNetV2"):
        load_encoder_weights(m, tmp_path / "resnet.pt")
    torch.save(models.create("mobilenet_v2", width=1.0).state_dict(), tmp_path / "w1.pt")
    with pytest.raises(UserError, match="another width multiplier"):
        load_encoder_weights(m, tmp_path / "w1.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="junk.pt is truncated or corrupt"):
        load_encoder_weights(m, tmp_path / "junk.pt")


def _conv(cin, cout, k):
    return k * k * cin * cout + cout


def test_unet_has_the_papers_parameter_count():
    # Ronneberger et al. 2015, Fig. 1, layer by layer: 1 input channel, 2 classes, 64..1024
    # channels; 3x3 convs, 2x2 up-convs halving the channels, a final 1x1 conv
    c = [64, 128, 256, 512, 1024]
    down = sum(_conv(a, b, 3) + _conv(b, b, 3) for a, b in zip([1] + c[:-1], c))
    up = sum(_conv(b, a, 2) + _conv(2 * a, a, 3) + _conv(a, a, 3) for a, b in zip(c[:-1], c[1:]))
    expected = down + up + _conv(64, 2, 1)
    with torch.device("meta"):
        u = models.create("unet", num_classes=2, in_chans=1)
    assert sum(p.numel() for p in u.parameters()) == expected  # 31,030,658
