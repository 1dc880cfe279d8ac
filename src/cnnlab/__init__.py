"""cnnlab: compute, train, measure and explain convolutional networks.

Subpackages (one concept each):

- ``cnnlab.numpy_ref``  hand-checkable NumPy reference engine (numpy + matplotlib only)
- ``cnnlab.cli``        the ``cnnlab`` command line, one module per command
"""

__version__ = "0.1.0"
