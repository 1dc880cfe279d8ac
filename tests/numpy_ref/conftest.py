"""Shared references for the numpy_ref tests: PyTorch float64 values and autograd gradients."""

import numpy as np
import pytest
import torch


def _torch_reference(fn, *arrays, dout):
    """``fn`` applied to float64 tensors made from ``arrays`` (None passes through), then
    back-propagated from ``dout``. Returns NumPy ``(out, grads)``, one grad (or None) per array."""
    tensors = [
        None if a is None else torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)
        for a in arrays
    ]
    out = fn(*tensors)
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), [None if t is None else t.grad.numpy() for t in tensors]


def _assert_close(actual, expected, rtol=1e-10, atol=1e-12):
    """float64 agreement; None must match None (an absent bias has no gradient)."""
    if expected is None or actual is None:
        assert actual is None and expected is None
        return
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


@pytest.fixture(scope="session")  # stateless, so hypothesis tests may use them
def torch_ref():
    return _torch_reference


@pytest.fixture(scope="session")  # stateless, so hypothesis tests may use them
def assert_close():
    return _assert_close


def _central_differences(loss, arrays, eps=1e-6):
    """d loss / d array for each array, by central differences, perturbing the arrays in place
    (and restoring them). ``loss()`` must read the arrays' current values."""
    grads = []
    for arr in arrays:
        num = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            plus = loss()
            arr[idx] = old - eps
            minus = loss()
            arr[idx] = old
            num[idx] = (plus - minus) / (2 * eps)
        grads.append(num)
    return grads


@pytest.fixture(scope="session")
def central_differences():
    return _central_differences
