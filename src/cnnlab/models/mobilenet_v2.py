"""MobileNetV2 (Sandler et al. 2018), at ImageNet and CIFAR size.

The body is Table 2 of the paper as data, ``# t, c, n, s``: each row is ``n`` inverted residual
blocks with expansion ``t`` and ``c`` output channels, the first of them with stride ``s``. ReLU6
everywhere except after the 1x1 projection (the linear bottleneck); a residual connection only
where stride is 1 and input and output channels match. The width multiplier alpha scales every
layer rounded to a multiple of 8 (:func:`~cnnlab.models.make_divisible`), except the last 1x1 conv
(1280 channels), which is only scaled when alpha > 1 (paper Sec. 6.1; torchvision does the same).

Module names mirror torchvision's ``mobilenet_v2`` (``features.0`` ... ``features.18``,
``classifier.1``), so ``model.load_state_dict(torchvision.models.mobilenet_v2().state_dict())``
works unchanged and gives identical outputs.

Strides, ImageNet size (``mobilenet_v2``, 224x224 -> 7x7) beside CIFAR size
(``mobilenet_v2_cifar``, 32x32 -> 4x4, as in kuangliu/pytorch-cifar)::

    layer                 t    c   n   ImageNet s  CIFAR s
    stem conv 3x3         -   32   1       2         1     <- CIFAR: no stem downsampling
    bottleneck            1   16   1       1         1
    bottleneck            6   24   2       2         1     <- CIFAR: first downsampling stage
    bottleneck            6   32   3       2         2
    bottleneck            6   64   4       2         2
    bottleneck            6   96   3       1         1
    bottleneck            6  160   3       2         2
    bottleneck            6  320   1       1         1
    conv 1x1              -  1280  1       1         1
    total stride                          32         8
"""

from __future__ import annotations

import math

from torch import nn

from cnnlab.models._base import ConvClassifier, variant_stride
from cnnlab.models._layers import (
    ActSpec,
    ConvNormAct,
    InvertedResidual,
    NormSpec,
    make_divisible,
    resolve_act,
    resolve_norm,
)
from cnnlab.models._registry import register_model

_STEM_CHANNELS = 32
_LAST_CHANNELS = 1280

# Sandler et al. 2018, Table 2; the last column is the CIFAR variant's stride.
_TABLE: list[tuple[int, int, int, int, int]] = [
    # t, c, n, s, s_cifar
    (1, 16, 1, 1, 1),
    (6, 24, 2, 2, 1),  # CIFAR: the first downsampling stage keeps the resolution
    (6, 32, 3, 2, 2),
    (6, 64, 4, 2, 2),
    (6, 96, 3, 1, 1),
    (6, 160, 3, 2, 2),
    (6, 320, 1, 1, 1),
]


class MobileNetV2(ConvClassifier):
    """MobileNetV2: ``features`` = stem, 17 inverted residual blocks, 1x1 conv; pool; Linear.

    Shapes: ``(N, in_chans, H, W) -> (N, num_classes)``; the last feature map is
    ``(N, 1280, H/32, W/32)`` (ImageNet strides) or ``H/8`` (CIFAR strides), rounded up.

    Args:
        num_classes: classifier outputs.
        in_chans: input channels.
        width: width multiplier alpha > 0.
        variant: ``"imagenet"`` or ``"cifar"`` strides (module docstring).
        norm_layer: ``None``/``"bn"`` (BatchNorm), ``"none"``, or a factory.
        act_layer: activation name or factory; the paper uses ReLU6.
        dropout: before the Linear layer (0.2 as in torchvision).
        name: the model name in error messages.
    """

    def __init__(self, *, num_classes: int = 1000, in_chans: int = 3, width: float = 1.0,
                 variant: str = "imagenet", norm_layer: NormSpec = None,
                 act_layer: ActSpec = "relu6", dropout: float = 0.2,
                 name: str = "mobilenet_v2") -> None:
        norm, act = resolve_norm(norm_layer), resolve_act(act_layer, default="relu6")
        channels = make_divisible(_STEM_CHANNELS * width)
        strides = [variant_stride(variant, imagenet=2, cifar=1)]  # stem: no CIFAR downsampling
        layers: list[nn.Module] = [
            ConvNormAct(in_chans, channels, 3, strides[0], norm=norm, act=act)
        ]
        for t, c, n, s_imagenet, s_cifar in _TABLE:
            s = variant_stride(variant, s_imagenet, s_cifar)
            out = make_divisible(c * width)
            for i in range(n):
                stride = s if i == 0 else 1
                layers.append(InvertedResidual(channels, out, stride, t, norm, act))
                strides.append(stride)
                channels = out
        last = make_divisible(_LAST_CHANNELS * max(1.0, width))  # not thinned when alpha < 1
        layers.append(ConvNormAct(channels, last, 1, norm=norm, act=act))
        total = math.prod(strides)
        super().__init__(name=name, features=nn.Sequential(*layers), feature_channels=last,
                         num_classes=num_classes, in_chans=in_chans, min_input=(total, total),
                         dropout=dropout)


_V2 = "MobileNetV2, Sandler et al. 2018, Table 2"
_OPTIONS = ("norm_layer", "act_layer", "dropout")  # forwarded to MobileNetV2 (defaults there)


@register_model(family="mobilenet_v2", default_input=(3, 224, 224), min_input=(32, 32),
                reference_classes=1000, options=_OPTIONS,
                description=f"{_V2}; 224 -> 7x7; = torchvision's")
def mobilenet_v2(*, num_classes: int, in_chans: int, width: float = 1.0, **options) -> MobileNetV2:
    return MobileNetV2(num_classes=num_classes, in_chans=in_chans, width=width,
                       variant="imagenet", name="mobilenet_v2", **options)


@register_model(family="mobilenet_v2", default_input=(3, 32, 32), min_input=(8, 8),
                options=_OPTIONS, description=f"{_V2}; CIFAR strides, 32 -> 4x4")
def mobilenet_v2_cifar(*, num_classes: int, in_chans: int, width: float = 1.0,
                       **options) -> MobileNetV2:
    return MobileNetV2(num_classes=num_classes, in_chans=in_chans, width=width, variant="cifar",
                       name="mobilenet_v2_cifar", **options)
