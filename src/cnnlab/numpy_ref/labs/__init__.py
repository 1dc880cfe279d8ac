"""Course labs: small, exact experiments that settle claims about training by measuring them.

Each ``*_lab(...)`` function runs one experiment on a fixed, hand-checkable default example and
returns a :class:`LabResult`: the numbers (``values``, also ``to_json()``), one step's arithmetic
written out, a conclusion sentence generated from the numbers, and a figure (``save_figure``).

- :func:`adam_lab`: ``E[S_t] = E[g^2] (1 - beta^t)``, bias correction in the first steps, the
  spread of ``m / sqrt(S)`` for a lower beta1.
- :func:`batch_size_lab`: variance of the mini-batch gradient against B, loss-curve noise, cost
  per epoch.
- :func:`regularization_lab`: L1 vs L2 loss with outliers, L1 vs L2 penalty (exact zeros).
- :func:`batchnorm_lab`, :func:`dropout_lab`: training vs evaluation mode.
- :func:`linear_collapse_lab`: stacked linear layers are one linear map.
- :func:`metrics_lab`: precision/recall/F1, ROC and PR curves, the cheapest threshold,
  calibration.

NumPy only (matplotlib when a figure is drawn).
"""

from cnnlab.numpy_ref.labs._result import LabResult
from cnnlab.numpy_ref.labs.adam import adam_lab
from cnnlab.numpy_ref.labs.batch_size import batch_size_lab
from cnnlab.numpy_ref.labs.linear_collapse import linear_collapse_lab
from cnnlab.numpy_ref.labs.metrics import metrics_lab
from cnnlab.numpy_ref.labs.normalization import batchnorm_lab, dropout_lab
from cnnlab.numpy_ref.labs.regularization import regularization_lab

__all__ = [
    "LabResult",
    "adam_lab",
    "batch_size_lab",
    "batchnorm_lab",
    "dropout_lab",
    "linear_collapse_lab",
    "metrics_lab",
    "regularization_lab",
]
