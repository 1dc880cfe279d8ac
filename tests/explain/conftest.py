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
    return torch.randn(
        4, 3, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )


@pytest.fixture(scope="session")
def net_factory():
    """The SmallNet builder (a pure function, so it may be shared by hypothesis examples)."""
    return make_net


# -- a small CNN trained on real Fashion-MNIST (shared by the sanity and faithfulness tests) -----

FMNIST = "/usr/share/datasets/fashion-mnist"


def _read_idx(path):
    """An IDX file (the MNIST format: magic, dims, big-endian uint8 data), read by hand."""
    import gzip

    import numpy as np

    with gzip.open(path) as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fmnist_available():
    import os

    return os.path.exists(f"{FMNIST}/train-images-idx3-ubyte.gz")


@pytest.fixture(scope="session")
def trained_fmnist():
    """(model, test images (N, 1, 28, 28), test labels, test accuracy) after ~2 s of training.

    The seed-0 model of :func:`train_fmnist`. Its weights differ in the last digits from CPU to
    CPU (oneDNN/OpenBLAS kernels round differently), so every claim the tests make about it has a
    margin measured over seeds 0-4 (``tests/explain/measure_margins.py``).
    """
    if not fmnist_available():
        pytest.skip("Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")
    return train_fmnist(0)


def train_fmnist(seed):
    """A conv-BN-ReLU x3 network with global average pooling (the usual CAM setting), 2,000
    training images, 3 epochs of Adam from ``torch.manual_seed(seed)``: about 70% test accuracy
    (chance: 10%), enough for a model whose explanations depend on what it learned."""
    mean, std = 0.2860, 0.3530  # Fashion-MNIST pixel statistics (train set)

    def load(prefix, n):
        x = torch.tensor(
            _read_idx(f"{FMNIST}/{prefix}-images-idx3-ubyte.gz")[:n], dtype=torch.float32
        )
        y = torch.tensor(_read_idx(f"{FMNIST}/{prefix}-labels-idx1-ubyte.gz")[:n]).long()
        return ((x / 255 - mean) / std)[:, None], y

    x, y = load("train", 2000)
    x_test, y_test = load("t10k", 500)
    threads = torch.get_num_threads()
    import os

    # a model this small trains fastest on one thread; CNNLAB_TEST_THREADS overrides
    torch.set_num_threads(int(os.environ.get("CNNLAB_TEST_THREADS") or 1))
    try:
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, 10),
        )
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        for _ in range(3):
            perm = torch.randperm(len(x))
            for i in range(0, len(x), 50):
                batch = perm[i : i + 50]
                loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    finally:
        torch.set_num_threads(threads)
    return model, x_test, y_test, accuracy
