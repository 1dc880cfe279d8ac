"""A tiny learnable data set and a tiny model for the engine tests (milliseconds per epoch)."""

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab.data import FASHION_MNIST_CLASSES, Dataset
from cnnlab.engine import TrainConfig


def toy_dataset(n_train=240, n_test=60, size=12, seed=0) -> Dataset:
    """Fashion-MNIST-shaped toy data: class c is a bright bar at row c plus noise (learnable)."""
    rng = np.random.default_rng(seed)

    def make(n):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, (n, size, size, 1), dtype=np.uint8)
        for i, c in enumerate(labels):
            images[i, c + 1, 2:-2, 0] = 230
        return images, labels.astype(np.int64)

    (xtr, ytr), (xte, yte) = make(n_train), make(n_test)
    return Dataset(name="fashion-mnist", classes=FASHION_MNIST_CLASSES, train_images=xtr,
                   train_labels=ytr, test_images=xte, test_labels=yte, mean=(0.2,), std=(0.3,),
                   source="toy")


class TinyNet(nn.Module):
    """conv-BN-ReLU -> max-pool -> dropout -> linear: BN statistics and dropout both matter for
    exact resumption (buffers and the global RNG)."""

    def __init__(self, in_chans=1, num_classes=10, width=6):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1),
                                      nn.BatchNorm2d(width), nn.ReLU(), nn.AdaptiveMaxPool2d(4))
        self.drop = nn.Dropout(0.2)
        self.classifier = nn.Linear(width * 16, num_classes)

    def forward(self, x):
        return self.classifier(self.drop(self.features(x).flatten(1)))


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return TinyNet()


@pytest.fixture
def toy():
    return toy_dataset()


@pytest.fixture
def make_model():
    """``make_model(seed=0)``: a fresh TinyNet with seeded initial weights."""
    return tiny_model


@pytest.fixture
def config(tmp_path):
    """A config that augments with every op, uses EMA and validation: all state that resumes."""
    return TrainConfig(model="tinynet", dataset="fashion-mnist", epochs=2, batch_size=32, lr=0.05,
                       augment="default,rotate=10,cutout=4", ema=0.9, val_fraction=0.2,
                       device="cpu", out=str(tmp_path / "run"), quiet=True)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These models are tiny: threads gain nothing, and on a loaded 2-core machine the OpenMP
    barriers made two threads 5-10x slower than one (measured while writing these tests)."""
    import os

    n = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("CNNLAB_TEST_THREADS") or 1))
    yield
    torch.set_num_threads(n)
