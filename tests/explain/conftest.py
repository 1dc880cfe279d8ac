"""Small CNNs for the explanation tests (CPU, a few milliseconds each)."""

import pytest
import torch
from torch import nn


class SmallNet(nn.Module):
    """conv-BN-ReLU x2 -> conv (the usual target) -> ReLU -> global average pool -> linear.

    ``inplace`` picks ``nn.ReLU(inplace=True)`` everywhere, including right after ``conv3``;
    ``functional`` uses ``torch.relu`` calls instead of ReLU modules.
    """

    def __init__(self, in_chans=3, num_classes=5, width=8, inplace=False, functional=False):
        super().__init__()
        self.functional = functional
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=inplace),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=inplace),
        )
        self.conv3 = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.relu3 = nn.ReLU(inplace=inplace)
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        if self.functional:
            x = self.features[1](self.features[0](x)).relu()
            x = torch.relu_(self.features[4](self.features[3](x)))
            x = nn.functional.relu(self.conv3(x))
        else:
            x = self.relu3(self.conv3(self.features(x)))
        return self.classifier(x.mean(dim=(2, 3)))


def make_net(seed=0, dtype=torch.float64, **kw):
    """A SmallNet with seeded weights and non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    net = SmallNet(**kw)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.to(dtype).eval()


@pytest.fixture
def net():
    return make_net()


@pytest.fixture
def images():
    return torch.randn(4, 3, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="session")
def net_factory():
    """The SmallNet builder (a pure function, so it may be shared by hypothesis examples)."""
    return make_net
