"""A configurable plain CNN, Keras ``Sequential`` style: conv layers, one 2x2 max-pool, dense layers.

The network the course tunes with KerasTuner (``cnnlab tune``, ``examples/tune/course_space.yaml``)::

    [Conv2d(k_i x k_i, "valid" or "same") -> ReLU] x len(filters)
    MaxPool2d(2)
    Flatten
    [Linear(units_j) -> ReLU -> Dropout(dropout)] x len(units)
    Linear(num_classes)

Architecture as data: ``filters`` and ``kernel`` list the conv layers (one entry each), ``units``
the hidden dense layers; a tuner passes exactly the layers that exist, so a value for a layer that
does not exist cannot be given. ``Flatten`` is written as adaptive average pooling to the last
map's own side (the identity at ``input_size``, as in ``compact_cnn``), so the model still has
the zoo's ``features -> pool -> classifier`` shape and accepts larger inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from cnnlab.errors import UserError
from cnnlab.models._base import ConvClassifier
from cnnlab.models._registry import register_model

PADDINGS = ("valid", "same")


def _positive_ints(what: str, values: Sequence[int]) -> list[int]:
    out = list(values)
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in out):
        raise UserError(f"{what} must be positive integers, got {out!r}")
    return out


class StackedCNN(ConvClassifier):
    """Conv stack, one max-pool, dense stack.

    Shapes: ``(N, in_chans, H, W) -> (N, num_classes)``; with ``"valid"`` padding the last map is
    ``(N, filters[-1], (H - sum(k_i - 1)) // 2, ...)``.

    Args:
        filters: output channels of each conv layer (at least one layer).
        kernel: kernel side of each conv layer (odd with ``"same"``), as many as ``filters``.
        units: width of each hidden dense layer (may be empty).
        dropout: after every hidden dense layer, in [0, 1).
        padding: ``"valid"`` (Keras' default: no padding) or ``"same"``.
        input_size: the image side the head is laid out for (28 for Fashion-MNIST).
    """

    def __init__(self, *, filters: Sequence[int], kernel: Sequence[int], units: Sequence[int],
                 num_classes: int = 10, in_chans: int = 3, dropout: float = 0.0,
                 padding: str = "valid", input_size: int = 28, name: str = "stacked_cnn") -> None:
        filters = _positive_ints("filters", filters)
        kernel = _positive_ints("kernel", kernel)
        units = _positive_ints("units", units)
        if not filters:
            raise UserError("stacked_cnn needs at least one conv layer (filters is empty)")
        if len(kernel) != len(filters):
            raise UserError(f"stacked_cnn: {len(filters)} conv layers (filters) but "
                            f"{len(kernel)} kernel sizes")
        if padding not in PADDINGS:
            raise UserError(f"padding must be one of {list(PADDINGS)}, got {padding!r}")
        if padding == "same" and any(k % 2 == 0 for k in kernel):
            raise UserError(f"'same' padding needs odd kernels, got {kernel}")
        if not 0.0 <= dropout < 1.0:
            raise UserError(f"dropout must be in [0, 1), got {dropout!r}")
        shrink = 0 if padding == "same" else sum(k - 1 for k in kernel)
        side = (input_size - shrink) // 2
        if side < 1:
            raise UserError(f"stacked_cnn: {len(filters)} conv layers with kernels {kernel} "
                            f"('valid' padding) and a 2x2 pool leave nothing of a "
                            f"{input_size}x{input_size} input")
        layers: list[nn.Module] = []
        channels = in_chans
        for f, k in zip(filters, kernel):
            layers += [nn.Conv2d(channels, f, k, padding=k // 2 if padding == "same" else 0),
                       nn.ReLU()]
            channels = f
        layers.append(nn.MaxPool2d(2))
        super().__init__(name=name, features=nn.Sequential(*layers), feature_channels=channels,
                         num_classes=num_classes, in_chans=in_chans,
                         min_input=(shrink + 2, shrink + 2), pool_size=side)
        hidden: list[nn.Module] = []
        width = channels * side * side  # Flatten of (C, side, side)
        for u in units:
            hidden += [nn.Linear(width, u), nn.ReLU(),
                       nn.Dropout(dropout) if dropout > 0 else nn.Identity()]
            width = u
        # classifier[-1] stays the final Linear, as everywhere in the zoo
        self.classifier = nn.Sequential(*hidden, nn.Linear(width, num_classes))
        # Keras' defaults (Glorot-uniform weights, zero biases), as in the course: the zoo's
        # N(0, 0.01) for Linear layers shrinks the signal ~6x per 256-wide dense layer, which a
        # stack of five dense layers without normalisation does not recover from quickly
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)


@register_model(family="stacked_cnn", default_input=(3, 32, 32), min_input=(6, 6),
                description="Keras-style conv stack + 2x2 max-pool + dense stack (the course's "
                            "tuned CNN; layers as lists)")
def stacked_cnn(*, num_classes: int, in_chans: int, filters: Sequence[int] = (32, 64),
                kernel: Sequence[int] = (3, 3), units: Sequence[int] = (128,),
                dropout: float = 0.0, padding: str = "valid",
                input_size: int = 32) -> StackedCNN:
    return StackedCNN(filters=filters, kernel=kernel, units=units, num_classes=num_classes,
                      in_chans=in_chans, dropout=dropout, padding=padding,
                      input_size=input_size)
