"""NumPy reference engine: hand-checkable forward/backward pairs in ``(N, C, H, W)`` layout
(sequences: ``(N, T, D)``, batch first, as the RNN/LSTM of ``rnn``).

``optim`` holds the optimisers (``SGD``, ``RMSprop``, ``Adam``, ``AdamW``), ``classification`` the
metrics, and ``labs`` the course labs behind ``cnnlab walkthrough adam`` ... ``metrics``.

Every op is a pure pair ``*_forward(...) -> (out, cache)`` / ``*_backward(dout, cache)``, computes
in float64 and matches ``torch.nn.functional`` (tested against PyTorch float64). Imports NumPy
only; ``views`` imports matplotlib when it draws.

    >>> import numpy as np
    >>> from cnnlab.numpy_ref import conv2d_forward, conv2d_backward
    >>> out, cache = conv2d_forward(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)), padding="same")
    >>> dx, dw, db = conv2d_backward(np.ones_like(out), cache)
"""

from cnnlab.numpy_ref.batchnorm import RunningStats, batchnorm2d_backward, batchnorm2d_forward
from cnnlab.numpy_ref.conv import (
    ConvGeometry,
    conv2d_backward,
    conv2d_backward_naive,
    conv2d_forward,
    conv2d_forward_naive,
    conv2d_geometry,
    same_padding,
)
from cnnlab.numpy_ref.embedding import embedding_backward, embedding_forward
from cnnlab.numpy_ref.layers import (
    linear_backward,
    linear_forward,
    relu_backward,
    relu_forward,
    softmax_cross_entropy,
)
from cnnlab.numpy_ref.optim import SGD, Adam, AdamW, RMSprop, StepRecord
from cnnlab.numpy_ref.pool import (
    avgpool2d_backward,
    avgpool2d_forward,
    global_avgpool_backward,
    global_avgpool_forward,
    maxpool2d_backward,
    maxpool2d_forward,
    pool2d_geometry,
)
from cnnlab.numpy_ref.rnn import (
    lstm_backward,
    lstm_forward,
    lstm_step_backward,
    lstm_step_forward,
    rnn_backward,
    rnn_forward,
    rnn_step_backward,
    rnn_step_forward,
)
from cnnlab.numpy_ref.sequence_heads import (
    many_to_many_backward,
    many_to_many_forward,
    many_to_one_backward,
    many_to_one_forward,
    sequence_cross_entropy,
    softmax,
)
from cnnlab.numpy_ref.residual import residual_block_backward, residual_block_forward
from cnnlab.numpy_ref.walkthroughs import conv_backward_walkthrough, residual_walkthrough

__all__ = [
    "ConvGeometry",
    "RunningStats",
    "conv2d_forward",
    "conv2d_backward",
    "conv2d_forward_naive",
    "conv2d_backward_naive",
    "conv2d_geometry",
    "same_padding",
    "relu_forward",
    "relu_backward",
    "linear_forward",
    "linear_backward",
    "softmax_cross_entropy",
    "maxpool2d_forward",
    "maxpool2d_backward",
    "avgpool2d_forward",
    "avgpool2d_backward",
    "global_avgpool_forward",
    "global_avgpool_backward",
    "pool2d_geometry",
    "batchnorm2d_forward",
    "batchnorm2d_backward",
    "residual_block_forward",
    "residual_block_backward",
    "embedding_forward",
    "embedding_backward",
    "rnn_step_forward",
    "rnn_step_backward",
    "rnn_forward",
    "rnn_backward",
    "lstm_step_forward",
    "lstm_step_backward",
    "lstm_forward",
    "lstm_backward",
    "many_to_one_forward",
    "many_to_one_backward",
    "many_to_many_forward",
    "many_to_many_backward",
    "sequence_cross_entropy",
    "softmax",
    "residual_walkthrough",
    "conv_backward_walkthrough",
    "SGD",
    "RMSprop",
    "Adam",
    "AdamW",
    "StepRecord",
]
