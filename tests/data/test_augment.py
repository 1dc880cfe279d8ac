"""Batched augmentation ops against torch/torchvision references and their defining properties."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnlab.data import AUGMENT_RECIPES, Augment, cutout, hflip, normalize, rotate, translate
from cnnlab.errors import UserError

shapes = st.tuples(st.integers(1, 5), st.integers(1, 3), st.integers(3, 12), st.integers(3, 12))


def images(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)


@settings(max_examples=30)
@given(shape=shapes, seed=st.integers(0, 1000))
def test_flip_twice_is_identity_and_matches_torch_flip(shape, seed):
    x = images(shape, seed)
    mask = torch.rand(shape[0], generator=torch.Generator().manual_seed(seed)) < 0.5
    once = hflip(x, mask)
    assert torch.equal(hflip(once, mask), x)
    for n in range(shape[0]):
        assert torch.equal(once[n], x[n].flip(-1) if mask[n] else x[n])


@settings(max_examples=40)
@given(shape=shapes, seed=st.integers(0, 1000), mode=st.sampled_from(["reflect", "zero"]),
       data=st.data())
def test_translate_is_pad_then_crop(shape, seed, mode, data):
    n, c, h, w = shape
    pad = data.draw(st.integers(0, min(h, w) - 1))
    g = torch.Generator().manual_seed(seed)
    x = images(shape, seed)
    dx = torch.randint(-pad, pad + 1, (n,), generator=g)
    dy = torch.randint(-pad, pad + 1, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    padded = F.pad(x.double(), (pad,) * 4, mode="reflect" if mode == "reflect" else "constant")
    ref = torch.stack([padded[i, :, pad + dy[i]:pad + dy[i] + h, pad + dx[i]:pad + dx[i] + w]
                       for i in range(n)])
    out = translate(x, dx, dy, pad_mode=mode)
    assert out.dtype == torch.uint8 and torch.equal(out.double(), ref)
    # the fused flip equals flipping afterwards
    assert torch.equal(translate(x, dx, dy, pad_mode=mode, flip=flip), hflip(out, flip))


@pytest.mark.parametrize("mode", ["zero", "reflect"])
def test_translate_matches_torchvision_v2(mode):
    """Zero padding: torchvision's affine with a pure (integer) translation, which moves the
    content by +t, i.e. samples x[i - t]; ours samples x[i + d], so d = -t. Reflect padding:
    torchvision's pad(padding_mode="reflect") then crop at the shifted offset."""
    n, pad = 6, 3
    g = torch.Generator().manual_seed(4)
    x = images((n, 3, 9, 11), seed=4)
    dx = torch.randint(-pad, pad + 1, (n,), generator=g)
    dy = torch.randint(-pad, pad + 1, (n,), generator=g)
    out = translate(x, dx, dy, pad_mode=mode)
    for i in range(n):
        if mode == "zero":
            ref = TF.affine(x[i], angle=0.0, translate=[-int(dx[i]), -int(dy[i])], scale=1.0,
                            shear=[0.0, 0.0], interpolation=TF.InterpolationMode.NEAREST, fill=0)
        else:
            padded = TF.pad(x[i], [pad] * 4, padding_mode="reflect")
            ref = TF.crop(padded, pad + int(dy[i]), pad + int(dx[i]), 9, 11)
        assert torch.equal(out[i], ref), i


def test_flip_matches_torchvision_v2():
    x = images((3, 2, 5, 7))
    mask = torch.tensor([True, False, True])
    out = hflip(x, mask)
    for i in range(3):
        assert torch.equal(out[i], TF.horizontal_flip(x[i]) if mask[i] else x[i])


def test_cutout_matches_torchvision_v2_erase():
    """Cutout is torchvision's erase (value 0) of the square clipped to the image."""
    x = torch.rand(5, 3, 10, 8, generator=torch.Generator().manual_seed(2)) + 1
    cy, cx, size = torch.tensor([0, 4, 9, 5, 2]), torch.tensor([0, 3, 7, 7, 4]), 4
    out = cutout(x, cy, cx, size)
    for i in range(5):
        t, lft = int(cy[i]) - size // 2, int(cx[i]) - size // 2
        top, left, bottom, right = max(t, 0), max(lft, 0), min(t + size, 10), min(lft + size, 8)
        ref = TF.erase(x[i], top, left, bottom - top, right - left, torch.tensor(0.0))
        assert torch.equal(out[i], ref), i


def test_translate_by_zero_is_identity():
    x = images((3, 2, 7, 5))
    z = torch.zeros(3, dtype=torch.long)
    assert torch.equal(translate(x, z, z, pad_mode="zero"), x)


@pytest.mark.parametrize("size", [(9, 9), (6, 10)])
@pytest.mark.parametrize("mode", ["zero", "reflect"])
def test_rotate_matches_torchvision(size, mode):
    """Counter-clockwise degrees like torchvision's rotate (which pads with zeros)."""
    x = torch.rand(4, 3, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    angles = torch.tensor([0.0, 10.0, -35.0, 90.0], dtype=torch.float64)
    out = rotate(x, angles, pad_mode=mode)
    assert out.dtype == torch.float64 and out.shape == x.shape
    torch.testing.assert_close(out[0], x[0], atol=1e-6, rtol=0)
    if mode == "zero":
        for i in range(4):
            ref = TF.rotate(x[i], float(angles[i]), interpolation=TF.InterpolationMode.BILINEAR)
            torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)


@settings(max_examples=30)
@given(shape=shapes, size=st.integers(1, 6), seed=st.integers(0, 1000))
def test_cutout_zeroes_the_clipped_square(shape, size, seed):
    n, c, h, w = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g) + 1  # no zeros before cutout
    cy, cx = torch.randint(0, h, (n,), generator=g), torch.randint(0, w, (n,), generator=g)
    out = cutout(x, cy, cx, size)
    for i in range(n):
        ref = x[i].clone()
        top, left = int(cy[i]) - size // 2, int(cx[i]) - size // 2
        ref[:, max(top, 0):max(top + size, 0), max(left, 0):max(left + size, 0)] = 0
        assert torch.equal(out[i], ref)


def test_normalize_matches_torchvision():
    x = images((2, 3, 5, 5))
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    ref = TF.normalize(x.double() / 255, mean, std)
    torch.testing.assert_close(normalize(x, mean, std).double(), ref, atol=1e-5, rtol=0)


def test_augment_is_reproducible_from_the_generator_seed():
    aug = Augment(flip=True, translate=2, pad_mode="reflect", rotate=10, cutout=3)
    x = images((16, 3, 12, 12))
    a = aug(x, (0.5,) * 3, (0.25,) * 3, torch.Generator().manual_seed(7))
    b = aug(x, (0.5,) * 3, (0.25,) * 3, torch.Generator().manual_seed(7))
    c = aug(x, (0.5,) * 3, (0.25,) * 3, torch.Generator().manual_seed(8))
    assert a.dtype == torch.float32 and a.shape == x.shape
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_augment_without_ops_only_normalizes():
    x = images((4, 1, 6, 6))
    out = Augment()(x, (0.5,), (0.25,), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, (x.float() / 255 - 0.5) / 0.25)


def test_augment_flip_only_flips_about_half():
    x = torch.arange(2000 * 4, dtype=torch.float32).reshape(2000, 1, 1, 4).to(torch.uint8)
    out = Augment(flip=True)(x, (0.0,), (1 / 255,), torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, 0] == x[:, 0, 0, 3].float()) & (x[:, 0, 0, 0] != x[:, 0, 0, 3])
    assert 0.45 < flipped.float().mean() < 0.55  # binomial(2000, 1/2): 4.5 sigma either side


def test_augment_parse_and_scale():
    assert Augment.parse("none") == Augment()
    assert Augment.parse("default", "cifar10") == AUGMENT_RECIPES["cifar10"]
    assert Augment.parse("default,cutout=8", "fashion-mnist") == Augment(
        flip=True, translate=2, pad_mode="zero", cutout=8)
    assert Augment.parse("flip,translate=4,pad=zero,rotate=7.5") == Augment(
        flip=True, translate=4, pad_mode="zero", rotate=7.5)
    spec = Augment(flip=True, translate=3, rotate=5, cutout=2)
    assert Augment.parse(spec.describe()) == spec
    assert Augment(translate=4, cutout=8, rotate=10).scaled(0.5) == Augment(
        translate=2, cutout=4, rotate=10)
    for bad, message in [("blur=3", "unknown augmentation 'blur'"),
                         ("translate=x", "not a number"), ("pad=wrap", "pad mode"),
                         ("rotate=-3", r"in \[0, 180\]"), ("rotate=nan", "finite number, not nan"),
                         ("rotate=inf", "finite number, not inf"), ("cutout=-1", ">= 0")]:
        with pytest.raises(UserError, match=message):
            Augment.parse(bad)
    # amounts that would blank the image are refused once the image size is known
    assert Augment.parse("cutout=28,translate=27").check_fits((28, 28))
    for bad, message in [("cutout=1000", r"cutout must be in \[0, 28\], not 1000 \(the images "
                                         r"are 28x28 pixels\)"),
                         ("translate=28", r"translate must be in \[0, 27\]")]:
        with pytest.raises(UserError, match=message):
            Augment.parse(bad).check_fits((28, 28))


def test_default_recipes_cover_the_datasets():
    from cnnlab.data import DATASETS

    assert set(AUGMENT_RECIPES) == set(DATASETS)
    assert np.all([r.flip for r in AUGMENT_RECIPES.values()])
