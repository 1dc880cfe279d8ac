"""MobileNetV1 (Howard et al. 2017) and its "Conv MobileNet" baseline, at ImageNet and CIFAR size.

The network is a table of ``(stride, out_channels)`` rows after a 3x3 stem (Table 1 of the
paper). Each row is one depthwise separable layer (3x3 depthwise conv-BN-ReLU, then 1x1 pointwise
conv-BN-ReLU) or, for Conv MobileNet (Table 4), one full 3x3 conv-BN-ReLU with the same stride and
output channels. The width multiplier alpha scales every layer's channels, rounded to a multiple
of 8 by :func:`~cnnlab.models.make_divisible` (for the paper's alphas 1, 0.75, 0.5, 0.25 every
product is already a multiple of 8, so the rounding changes nothing there).

Table 1 has a well-known typo: its second-to-last "Conv dw / s2" at 7x7 would give a 4x4 map,
yet the next row and the 7x7 average pool are at 7x7. The layer has stride 1 (as in the
reference TensorFlow code), which is what ``_TABLE`` below says.

Strides, ImageNet size (``mobilenet_v1``, 224x224 -> 7x7) beside CIFAR size
(``mobilenet_v1_cifar``, 32x32 -> 4x4)::

    layer            out   ImageNet  CIFAR
    stem conv 3x3     32      2        1     <- CIFAR: no stem downsampling
    dw-sep 1          64      1        1
    dw-sep 2         128      2        1     <- CIFAR: first downsampling stage at stride 1
    dw-sep 3         128      1        1
    dw-sep 4         256      2        2
    dw-sep 5         256      1        1
    dw-sep 6         512      2        2
    dw-sep 7-11      512      1        1
    dw-sep 12       1024      2        2
    dw-sep 13       1024      1        1
    total stride              32       8

The CIFAR variant uses the same two changes as the V2 CIFAR port (stem and first downsampling
stage at stride 1), so both CIFAR MobileNets end on a 4x4 map at 32x32. Some V1 CIFAR ports
(e.g. kuangliu/pytorch-cifar) change only the stem and end on 2x2; the parameters are the same.
"""

from __future__ import annotations

import math

from torch import nn

from cnnlab.models._base import ConvClassifier, variant_stride
from cnnlab.models._layers import (
    ActSpec,
    ConvNormAct,
    DepthwiseSeparable,
    NormSpec,
    make_divisible,
    resolve_act,
    resolve_norm,
)
from cnnlab.models._registry import register_model

_STEM_CHANNELS = 32

# Howard et al. 2017, Table 1, after the stem: one row per depthwise separable layer.
# The last column is the CIFAR variant's stride.
_TABLE: list[tuple[int, int, int]] = [
    # stride, out, stride_cifar
    (1, 64, 1),
    (2, 128, 1),  # CIFAR: the first downsampling stage keeps the resolution
    (1, 128, 1),
    (2, 256, 2),
    (1, 256, 1),
    (2, 512, 2),
    (1, 512, 1),
    (1, 512, 1),
    (1, 512, 1),
    (1, 512, 1),
    (1, 512, 1),
    (2, 1024, 2),
    (1, 1024, 1),  # printed "s2" in Table 1: a typo, the map stays 7x7 (module docstring)
]


class MobileNetV1(ConvClassifier):
    """MobileNetV1: ``features`` = stem + 13 depthwise separable layers; then pool and Linear.

    ``features[0]`` is the stem ``ConvNormAct``; ``features[1..13]`` are
    :class:`~cnnlab.models._layers.DepthwiseSeparable` (children ``dw``, ``pw``) or, with
    ``separable=False``, full 3x3 ``ConvNormAct`` layers (Conv MobileNet).
    Shapes: ``(N, in_chans, H, W) -> (N, num_classes)``; last feature map ``H/32`` (ImageNet
    strides) or ``H/8`` (CIFAR strides).

    Args:
        num_classes: classifier outputs.
        in_chans: input channels.
        width: width multiplier alpha > 0.
        variant: ``"imagenet"`` or ``"cifar"`` strides (module docstring).
        separable: False for Conv MobileNet (full convolutions).
        norm_layer: ``None``/``"bn"`` (BatchNorm), ``"none"``, or a factory.
        act_layer: activation name or factory; the paper uses ReLU.
        dropout: before the Linear layer; the paper uses none.
        name: the model name in error messages.
    """

    def __init__(self, *, num_classes: int = 1000, in_chans: int = 3, width: float = 1.0,
                 variant: str = "imagenet", separable: bool = True,
                 norm_layer: NormSpec = None,
                 act_layer: ActSpec = "relu", dropout: float = 0.0,
                 name: str = "mobilenet_v1") -> None:
        norm, act = resolve_norm(norm_layer), resolve_act(act_layer, default="relu")
        channels = make_divisible(_STEM_CHANNELS * width)
        strides = [variant_stride(variant, imagenet=2, cifar=1)]  # stem: no CIFAR downsampling
        layers: list[nn.Module] = [
            ConvNormAct(in_chans, channels, 3, strides[0], norm=norm, act=act)
        ]
        for s_imagenet, out, s_cifar in _TABLE:
            stride = variant_stride(variant, s_imagenet, s_cifar)
            out = make_divisible(out * width)
            if separable:
                layers.append(DepthwiseSeparable(channels, out, stride, norm, act))
            else:
                layers.append(ConvNormAct(channels, out, 3, stride, norm=norm, act=act))
            strides.append(stride)
            channels = out
        total = math.prod(strides)
        super().__init__(name=name, features=nn.Sequential(*layers), feature_channels=channels,
                         num_classes=num_classes, in_chans=in_chans, min_input=(total, total),
                         dropout=dropout)


_V1 = "MobileNetV1, Howard et al. 2017, Table 1"
_CONV = "Conv MobileNet (full 3x3 convs), Howard et al. 2017, Table 4"
_OPTIONS = ("norm_layer", "act_layer", "dropout")  # forwarded to MobileNetV1 (defaults there)


@register_model(family="mobilenet_v1", default_input=(3, 224, 224), min_input=(32, 32),
                reference_classes=1000, options=_OPTIONS, description=f"{_V1}; 224 -> 7x7")
def mobilenet_v1(*, num_classes: int, in_chans: int, width: float = 1.0, **options) -> MobileNetV1:
    return MobileNetV1(num_classes=num_classes, in_chans=in_chans, width=width,
                       variant="imagenet", name="mobilenet_v1", **options)


@register_model(family="mobilenet_v1", default_input=(3, 32, 32), min_input=(8, 8),
                options=_OPTIONS, description=f"{_V1}; CIFAR strides, 32 -> 4x4")
def mobilenet_v1_cifar(*, num_classes: int, in_chans: int, width: float = 1.0,
                       **options) -> MobileNetV1:
    return MobileNetV1(num_classes=num_classes, in_chans=in_chans, width=width, variant="cifar",
                       name="mobilenet_v1_cifar", **options)


@register_model(family="conv_mobilenet_v1", default_input=(3, 224, 224), min_input=(32, 32),
                reference_classes=1000, options=_OPTIONS, description=f"{_CONV}; 224 -> 7x7")
def conv_mobilenet_v1(*, num_classes: int, in_chans: int, width: float = 1.0,
                      **options) -> MobileNetV1:
    return MobileNetV1(num_classes=num_classes, in_chans=in_chans, width=width,
                       variant="imagenet", separable=False, name="conv_mobilenet_v1", **options)


@register_model(family="conv_mobilenet_v1", default_input=(3, 32, 32), min_input=(8, 8),
                options=_OPTIONS, description=f"{_CONV}; CIFAR strides, 32 -> 4x4")
def conv_mobilenet_v1_cifar(*, num_classes: int, in_chans: int, width: float = 1.0,
                            **options) -> MobileNetV1:
    return MobileNetV1(num_classes=num_classes, in_chans=in_chans, width=width, variant="cifar",
                       separable=False, name="conv_mobilenet_v1_cifar", **options)
