"""``mobilenet_v2`` loads torchvision's ``mobilenet_v2`` state dict and computes the same function.

Reference: torchvision's model, randomly initialised with a fixed seed (no download). BatchNorm
affine parameters and running statistics are randomised too, so that a misplaced or missing norm
layer would change the output. Tolerance: 1e-6 absolute in float32 (the same ops in the same
order, so in practice bit-identical) and 1e-12 relative in float64.
"""

import pytest
import torch
import torchvision
from torch import nn

from cnnlab.models import create


def randomised_torchvision(width: float) -> nn.Module:
    torch.manual_seed(0)
    ref = torchvision.models.mobilenet_v2(width_mult=width)
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return ref.eval()


@pytest.mark.parametrize("width", [1.0, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_loads_torchvision_state_dict_and_matches_outputs(width, dtype):
    ref = randomised_torchvision(width).to(dtype)
    ours = create("mobilenet_v2", num_classes=1000, width=width).to(dtype)
    result = ours.load_state_dict(ref.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    ours.eval()
    x = torch.randn(2, 3, 224, 224, dtype=dtype, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = ref(x), ours(x)
    assert want.abs().max() > 1e-3  # not a degenerate all-zero comparison
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    else:
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_our_state_dict_loads_into_torchvision():
    ours = create("mobilenet_v2", num_classes=1000)
    ref = torchvision.models.mobilenet_v2()
    ref.load_state_dict(ours.state_dict(), strict=True)


def test_same_initialisation_statistics_as_torchvision():
    """Same init scheme: Kaiming-normal fan_out convs, N(0, 0.01) Linear, BN ones/zeros."""
    torch.manual_seed(0)
    ref = torchvision.models.mobilenet_v2()
    ours = create("mobilenet_v2", num_classes=1000)
    for (k, a), (_, b) in zip(ref.state_dict().items(), ours.state_dict().items()):
        if a.dim() <= 1:  # BN weight/bias/statistics, Linear bias: deterministic
            assert torch.equal(a, b), k
        elif a.numel() > 10_000:  # random weights: enough samples for a 10% check of the std
            assert abs(a.std() / b.std() - 1) < 0.1, k
