"""Real-data inputs for the labs: per-sample gradients of a model on Fashion-MNIST.

Kept out of ``numpy_ref`` (which never imports ``cnnlab.data``): this module loads the data set
through ``cnnlab.data`` and hands plain arrays to the NumPy lab.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def fashion_mnist_gradients(n: int, seed: int, data_dir: Path | None = None
                            ) -> tuple[np.ndarray, str]:
    """Per-sample gradients ``(n, 7850)`` of softmax regression (784 normalised pixels -> 10
    classes, weights and biases) at a small random initialisation, on ``n`` random Fashion-MNIST
    training images; and a description of them.

    For softmax regression the gradient of one sample's cross-entropy is exact in closed form:
    ``dL/dW = (p - onehot(y)) x^T`` and ``dL/db = p - onehot(y)``.
    """
    from cnnlab.data import load_dataset
    from cnnlab.errors import UserError

    ds = load_dataset("fashion-mnist", data_dir=data_dir)
    if not 2 <= n <= len(ds.train_labels):
        raise UserError(f"--n must be in [2, {len(ds.train_labels)}] for Fashion-MNIST, got {n}")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(ds.train_labels), n, replace=False)
    x = ds.train_images[idx].reshape(n, -1).astype(np.float64) / 255.0
    x = (x - ds.mean[0]) / ds.std[0]  # (n, 784)
    y = ds.train_labels[idx]
    w = 0.01 * rng.standard_normal((ds.num_classes, x.shape[1]))
    g = softmax_regression_gradients(x, y, w, np.zeros(ds.num_classes))
    return g, f"Fashion-MNIST, softmax regression at init, {n} training images"


def softmax_regression_gradients(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: np.ndarray
                                 ) -> np.ndarray:
    """Per-sample gradients of ``cross_entropy(x @ w.T + b, y)``: ``(N, K * D + K)``, the
    weight gradient ``(p - onehot(y)) x^T`` flattened row by row, then the bias gradient.

    Args:
        x: ``(N, D)``; y: ``(N,)`` class indices; w: ``(K, D)``; b: ``(K,)``.
    """
    n = len(x)
    z = x @ w.T + b
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    d = p.copy()
    d[np.arange(n), y] -= 1.0  # (N, K)
    return np.concatenate([(d[:, :, None] * x[:, None, :]).reshape(n, -1), d], axis=1)
