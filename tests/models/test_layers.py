"""The shared building blocks against independent references (torchvision, hand-written torch)."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torchvision.models._utils import _make_divisible as tv_make_divisible

from cnnlab.errors import UserError
from cnnlab.models import create, make_divisible, resolve_act, resolve_norm
from cnnlab.models._layers import BasicBlock, InvertedResidual


@given(v=st.floats(0.5, 5000, allow_nan=False), divisor=st.sampled_from([1, 2, 4, 8, 16]))
def test_make_divisible_equals_torchvision(v, divisor):
    got = make_divisible(v, divisor)
    assert got == tv_make_divisible(v, divisor)
    assert got % divisor == 0 and got >= divisor and got >= 0.9 * v


def test_make_divisible_examples():
    # MobileNetV2 at alpha 0.35: 32 * 0.35 = 11.2 -> 16 (8 would lose 29%); 16 * 0.35 = 5.6 -> 8
    assert make_divisible(32 * 0.35) == 16 and make_divisible(16 * 0.35) == 8
    assert make_divisible(24 * 0.75) == 24  # 18 -> 16 would lose 11% -> 24


def zero_last_norm(block: BasicBlock) -> BasicBlock:
    """Make the residual branch output exactly 0 (BN of conv2: weight 0, bias 0)."""
    bn = block.conv2[1]
    nn.init.zeros_(bn.weight)
    nn.init.zeros_(bn.bias)
    return block.eval()


@pytest.mark.parametrize("stride,cin,cout", [(1, 16, 16), (2, 16, 32), (2, 5, 12)])
def test_option_a_shortcut_is_subsample_and_zero_padding(stride, cin, cout):
    """He et al. 2016 option A: identity, subsampled, extra channels zero; written out by hand."""
    block = zero_last_norm(BasicBlock(cin, cout, stride, shortcut="A"))
    x = torch.randn(2, cin, 9, 9, dtype=torch.float64)
    block.double()
    sub = x[:, :, ::stride, ::stride]
    before = (cout - cin) // 2
    want = torch.zeros(2, cout, *sub.shape[-2:], dtype=torch.float64)
    want[:, before:before + cin] = sub
    with torch.no_grad():
        torch.testing.assert_close(block(x), F.relu(want), rtol=0, atol=0)
    assert sum(p.numel() for p in block.shortcut.parameters()) == 0


def test_option_b_and_plain_blocks():
    x = torch.randn(2, 16, 8, 8)
    b = zero_last_norm(BasicBlock(16, 32, 2, shortcut="B"))
    proj = b.shortcut
    with torch.no_grad():
        want = F.relu(proj[1](F.conv2d(x, proj[0].weight, stride=2)))
        torch.testing.assert_close(b(x), want)
    plain = zero_last_norm(BasicBlock(16, 16, 1, skip=False))
    with torch.no_grad():
        assert torch.equal(plain(x), torch.zeros(2, 16, 8, 8))  # nothing but the zeroed branch
    assert not list(plain.shortcut.parameters())


def test_inverted_residual_rule_and_linear_bottleneck():
    """Residual only for stride 1 and equal channels; no activation after the projection."""
    x = torch.randn(2, 16, 8, 8)
    for cin, cout, stride, res in [(16, 16, 1, True), (16, 24, 1, False), (16, 16, 2, False)]:
        block = InvertedResidual(cin, cout, stride, 6, nn.BatchNorm2d, nn.ReLU6).eval()
        assert block.use_res_connect is res
        nn.init.zeros_(block.conv[-1].weight)
        nn.init.zeros_(block.conv[-1].bias)
        with torch.no_grad():
            out = block(x[:, :cin])
        torch.testing.assert_close(out, x if res else torch.zeros_like(out))
    # linear bottleneck: negative outputs survive (no ReLU6 after the projection BN)
    block = InvertedResidual(16, 24, 1, 6, nn.BatchNorm2d, nn.ReLU6).eval()
    with torch.no_grad():
        assert (block(x) < 0).any()
    assert not isinstance(block.conv[-1], (nn.ReLU, nn.ReLU6))


def test_v2_residual_count_follows_table2():
    """Table 2: a residual in every repeated block (n - 1 per row), plus none where c changes."""
    model = create("mobilenet_v2")
    t2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
          (6, 320, 1, 1)]
    blocks = [m for m in model.modules() if isinstance(m, InvertedResidual)]
    assert len(blocks) == sum(n for *_, n, _ in t2)
    assert sum(b.use_res_connect for b in blocks) == sum(n - 1 for *_, n, _ in t2)


def test_init_follows_torchvision_scheme():
    torch.manual_seed(0)
    model = create("vgg_small")
    conv = model.features[-1][0]  # 256 -> 256, 3x3: fan_out = 256 * 9
    assert abs(conv.weight.std().item() / math.sqrt(2 / (256 * 9)) - 1) < 0.02
    fc = model.classifier[-1]
    assert abs(fc.weight.std().item() / 0.01 - 1) < 0.1 and not fc.bias.any()
    bn = model.features[0][1]
    assert torch.equal(bn.weight, torch.ones(64)) and not bn.bias.any()


def test_resolve_helpers():
    assert resolve_act("ReLU6") is nn.ReLU6 and resolve_act("identity") is nn.Identity
    assert resolve_act(None) is nn.ReLU and resolve_act(None, default="relu6") is nn.ReLU6
    assert resolve_norm(None) is nn.BatchNorm2d and resolve_norm("none") is None
    custom = lambda c: nn.GroupNorm(4, c)  # noqa: E731
    assert resolve_norm(custom) is custom
    model = create("resnet20", norm_layer=custom, act_layer=nn.GELU)
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    assert any(isinstance(m, nn.GELU) for m in model.modules())
    with pytest.raises(UserError, match="unknown act_layer 'rel'"):
        resolve_act("rel")
