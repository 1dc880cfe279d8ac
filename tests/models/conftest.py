"""Model-zoo tests run torch single-threaded.

The suite sets one thread per xdist worker; with ``-n 0`` on a busy 2-core machine torch's
default of 2 OpenMP threads makes deep nets (resnet110: 110 small convs) 10-100x slower because
the threads spin-wait on each other. One thread is also what CI uses.
"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
