"""The shape every image classifier in the zoo shares: ``features -> pool -> classifier``.

``model.features`` is an ``nn.Sequential`` of convolutional stages (``model.features[-1]``, named
by ``model.target_layer``, is the last conv block: the usual Grad-CAM target),
``model.pool`` is global average pooling (adaptive average pooling to ``pool_size x pool_size``
for ``compact_cnn``) and ``model.classifier`` is
``Sequential(Dropout or Identity, Linear)`` (``model.classifier[-1]`` is the final Linear, named
``classifier.1`` as in torchvision's MobileNetV2).

``forward`` first checks the input's shape. The check reads shapes only (it works on meta
tensors and under ``torch.compile``); it is registered with ``torch.fx.wrap`` so that
``torch.fx.symbolic_trace`` records it as one call node instead of failing on a data-dependent
``if`` over a traced shape.
"""

from __future__ import annotations

import torch
import torch.fx
from torch import Tensor, nn

from cnnlab.errors import UserError
from cnnlab.models._layers import init_weights


def check_image_input(x: Tensor, name: str, in_chans: int, min_input: tuple[int, int]) -> None:
    """Raise a :class:`UserError` unless ``x`` is ``(N, in_chans, H, W)``, ``H, W >= min_input``.

    Shapes only, no data: safe on meta tensors and under tracing.
    """
    if x.dim() != 4:
        raise UserError(
            f"{name} expects a batch of images (N, C, H, W), got a tensor of shape {tuple(x.shape)}"
        )
    if x.shape[1] != in_chans:
        raise UserError(
            f"{name} was built for in_chans={in_chans}, got an input with {x.shape[1]} channels "
            f"(shape {tuple(x.shape)}); build it with in_chans={x.shape[1]}"
        )
    h, w = x.shape[-2], x.shape[-1]
    if h < min_input[0] or w < min_input[1]:
        raise UserError(
            f"{name} needs inputs of at least {min_input[0]}x{min_input[1]} pixels (its total "
            f"downsampling factor), got {h}x{w}"
        )


torch.fx.wrap("check_image_input")  # a leaf call in fx graphs (must be at module top level)


def variant_stride(variant: str, imagenet: int, cifar: int) -> int:
    """The stride of a layer in the ``"imagenet"`` or the ``"cifar"`` variant of a network."""
    if variant not in ("imagenet", "cifar"):
        raise UserError(f"variant must be 'imagenet' or 'cifar', got {variant!r}")
    return cifar if variant == "cifar" else imagenet


class ConvClassifier(nn.Module):
    """Base class: check the input, ``features``, average pool, ``classifier``.

    Subclasses build ``features`` and call ``super().__init__``; weights are initialised here
    (:func:`~cnnlab.models._layers.init_weights`, torchvision's MobileNetV2 scheme).

    Args:
        name: the model name used in error messages.
        features: the convolutional part, ``(N, in_chans, H, W) -> (N, feature_channels, h, w)``.
        feature_channels: channels of the last feature map.
        num_classes: classifier outputs.
        in_chans: expected input channels.
        min_input: smallest accepted ``(H, W)``; the product of the strides in ``features``.
        dropout: dropout probability before the Linear layer (``nn.Identity`` when 0).
        pool_size: the pooled map is ``pool_size x pool_size`` (1: global average pooling); the
            Linear layer then sees ``feature_channels * pool_size**2`` inputs, keeping coarse
            positions (which small 28x28 images, e.g. Fashion-MNIST, benefit from).
    """

    def __init__(self, *, name: str, features: nn.Sequential, feature_channels: int,
                 num_classes: int, in_chans: int, min_input: tuple[int, int],
                 dropout: float = 0.0, pool_size: int = 1) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise UserError(f"dropout must be in [0, 1), got {dropout!r}")
        self.model_name = name
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.min_input = tuple(min_input)
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout) if dropout > 0 else nn.Identity(),
            nn.Linear(feature_channels * pool_size**2, num_classes),
        )
        init_weights(self)

    @property
    def target_layer(self) -> str:
        """Dotted name of the last conv block (``model.get_submodule(model.target_layer)``).

        A trailing max-pool is skipped: Grad-CAM wants the finest map of the last conv layer.
        """
        last = max(i for i, m in enumerate(self.features)
                   if not isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)))
        return f"features.{last}"

    def forward_features(self, x: Tensor) -> Tensor:
        """``(N, C, H, W) -> (N, feature_channels, h, w)``, after the input check."""
        check_image_input(x, self.model_name, self.in_chans, self.min_input)
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_chans, H, W)`` images -> ``(N, num_classes)`` logits."""
        x = self.forward_features(x)  # (N, C', h, w)
        x = self.pool(x)  # (N, C', p, p)
        x = torch.flatten(x, 1)  # (N, C' * p * p)
        return self.classifier(x)  # (N, num_classes)
