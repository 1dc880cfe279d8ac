"""CIFAR ResNets (He et al. 2016) and their "plain" counterparts without shortcuts.

``resnet20/32/44/56/110`` follow Sec. 4.2 of the paper: a 3x3 conv with 16 filters, then three
stages of ``n`` basic blocks (2n layers each) with 16, 32 and 64 filters on 32x32, 16x16 and 8x8
maps (the first conv of stages 2 and 3 has stride 2), global average pooling and a Linear layer:
6n+2 weighted layers. Shortcuts are option A, as in the paper's CIFAR experiments: identity,
with a stride-2 subsample and zero-padded extra channels where the shape changes, so a ResNet has
exactly the parameters of its plain counterpart (``shortcut="B"`` uses 1x1 projections instead).

``resnet18`` is the CIFAR port of the ImageNet ResNet-18 (as in kuangliu/pytorch-cifar): a 3x3
stride-1 stem with 64 filters and no max-pool, then four stages of two basic blocks with
64/128/256/512 filters and strides 1/2/2/2, and option-B (projection) shortcuts. ``plain18`` has
the same layers without any shortcut, so it lacks the three 1x1 projections; build
``resnet18`` with ``shortcut="A"`` for a pair with identical parameter counts.

``plainN`` is ``resnetN`` with the shortcut sum removed and nothing else changed (the
degradation experiment, He et al. 2016, Fig. 6). ``resnet_cifar`` and ``plain_cnn`` take any
``depth=6n+2`` (8, 14, 20, ...), a norm layer (``norm_layer="none"`` removes BatchNorm) and an
activation (``act_layer="sigmoid"`` ...) for the training-dynamics study.

Strides (all variants are CIFAR-size, 32x32 input)::

    stage      resnet20..110 / plainN      resnet18 / plain18
    stem       3x3, 16, s1                 3x3, 64, s1 (no max-pool)
    stage 1    n blocks, 16, s1            2 blocks, 64, s1
    stage 2    n blocks, 32, s2            2 blocks, 128, s2
    stage 3    n blocks, 64, s2            2 blocks, 256, s2
    stage 4    -                           2 blocks, 512, s2
    total stride        4                          8
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from cnnlab.errors import UserError
from cnnlab.models._base import ConvClassifier
from cnnlab.models._layers import (
    ActSpec,
    BasicBlock,
    ConvNormAct,
    NormSpec,
    make_divisible,
    resolve_act,
    resolve_norm,
)
from cnnlab.models._registry import register_model

# He et al. 2016, Sec. 4.2: stem 16 filters; stages of n blocks.
_HE_STEM = 16
_HE_STAGES = [
    # channels, stride
    (16, 1),
    (32, 2),
    (64, 2),
]
# ResNet-18 (He et al. 2016, Table 1, "18-layer") with the CIFAR stem.
_R18_STEM = 64
_R18_STAGES = [
    # channels, blocks, stride
    (64, 2, 1),
    (128, 2, 2),
    (256, 2, 2),
    (512, 2, 2),
]
_PAPER_DEPTHS = (20, 32, 44, 56, 110)  # Table 6


class ResNetCifar(ConvClassifier):
    """A ResNet (or plain net) of basic blocks: ``features`` = stem, then one Sequential per stage.

    ``features[0]`` is the stem ``ConvNormAct``; ``features[i]`` (i >= 1) is stage i, an
    ``nn.Sequential`` of :class:`~cnnlab.models._layers.BasicBlock`.
    Shapes: ``(N, in_chans, H, W) -> (N, num_classes)``.

    Args:
        stem_channels: filters of the first 3x3 conv (stride 1).
        stages: ``(channels, blocks, stride)`` per stage.
        num_classes: classifier outputs.
        in_chans: input channels.
        width: multiplies every layer's channels (rounded by ``make_divisible``); 1.0 is the paper.
        skip: False for the plain counterpart (no shortcuts).
        shortcut: ``"A"`` (zero-padding identity) or ``"B"`` (1x1 projection) where shapes change.
        norm_layer: ``None``/``"bn"`` (BatchNorm), ``"none"``, or a factory.
        act_layer: activation name or factory.
        dropout: before the Linear layer (none in the paper).
        name: the model name in error messages.
    """

    def __init__(self, *, stem_channels: int, stages: Sequence[tuple[int, int, int]],
                 num_classes: int = 10, in_chans: int = 3, width: float = 1.0, skip: bool = True,
                 shortcut: str = "A", norm_layer: NormSpec = None,
                 act_layer: ActSpec = "relu", dropout: float = 0.0,
                 name: str = "resnet_cifar") -> None:
        if shortcut not in ("A", "B"):  # checked here too: stride-1 blocks never look at it
            raise UserError(
                f"shortcut must be 'A' (zero-padding) or 'B' (projection), got {shortcut!r}"
            )
        norm, act = resolve_norm(norm_layer), resolve_act(act_layer)
        channels = make_divisible(stem_channels * width)
        layers: list[nn.Module] = [ConvNormAct(in_chans, channels, 3, 1, norm=norm, act=act)]
        for out, blocks, stride in stages:
            out = make_divisible(out * width)
            stage = []
            for i in range(blocks):
                stage.append(BasicBlock(channels, out, stride if i == 0 else 1, skip=skip,
                                        shortcut=shortcut, norm=norm, act=act))
                channels = out
            layers.append(nn.Sequential(*stage))
        total = math.prod(s for _, _, s in stages)
        super().__init__(name=name, features=nn.Sequential(*layers), feature_channels=channels,
                         num_classes=num_classes, in_chans=in_chans, min_input=(total, total),
                         dropout=dropout)


def _he_stages(depth: int) -> list[tuple[int, int, int]]:
    """Stages of the 6n+2-layer CIFAR ResNet: ``n = (depth - 2) / 6`` blocks per stage."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise UserError(
            f"depth must be 6n+2 with n >= 1 (8, 14, 20, 26, 32, ...: 2 layers per block, 3 "
            f"stages, plus the stem and the classifier), got {depth!r}"
        )
    n = (depth - 2) // 6
    return [(c, n, s) for c, s in _HE_STAGES]


def _he_resnet(name: str, depth: int, skip: bool, **kw) -> ResNetCifar:
    return ResNetCifar(stem_channels=_HE_STEM, stages=_he_stages(depth), skip=skip, name=name, **kw)


_HE = "He et al. 2016, Sec. 4.2"
_CIFAR_IN = {"family": "resnet_cifar", "default_input": (3, 32, 32), "min_input": (4, 4)}
_PLAIN_IN = {**_CIFAR_IN, "family": "plain_cifar"}
_OPTIONS = ("norm_layer", "act_layer", "dropout")  # forwarded to ResNetCifar (defaults there)
_RES_OPTIONS = ("shortcut", *_OPTIONS)


def _register_paper_depth(depth: int) -> None:
    """Register ``resnet<depth>`` and ``plain<depth>`` (one Table 6 row each)."""

    @register_model(name=f"resnet{depth}", **_CIFAR_IN, options=_RES_OPTIONS,
                    description=f"ResNet-{depth}, {_HE} and Table 6; option A")
    def resnet(*, num_classes: int, in_chans: int, width: float = 1.0, **options) -> ResNetCifar:
        return _he_resnet(f"resnet{depth}", depth, True, num_classes=num_classes,
                          in_chans=in_chans, width=width, **options)

    @register_model(name=f"plain{depth}", **_PLAIN_IN, options=_OPTIONS,
                    description=f"ResNet-{depth} without shortcuts, He et al. 2016, Fig. 6")
    def plain(*, num_classes: int, in_chans: int, width: float = 1.0, **options) -> ResNetCifar:
        return _he_resnet(f"plain{depth}", depth, False, num_classes=num_classes,
                          in_chans=in_chans, width=width, **options)


for _depth in _PAPER_DEPTHS:
    _register_paper_depth(_depth)


@register_model(**_CIFAR_IN, options=_RES_OPTIONS,
                description=f"ResNet of depth=6n+2 (default 20), {_HE}")
def resnet_cifar(*, num_classes: int, in_chans: int, width: float = 1.0, depth: int = 20,
                 **options) -> ResNetCifar:
    return _he_resnet(f"resnet_cifar(depth={depth})", depth, True, num_classes=num_classes,
                      in_chans=in_chans, width=width, **options)


@register_model(**_PLAIN_IN, options=_OPTIONS,
                description="resnet_cifar without shortcuts, depth=6n+2, He et al. 2016, Fig. 6")
def plain_cnn(*, num_classes: int, in_chans: int, width: float = 1.0, depth: int = 20,
              **options) -> ResNetCifar:
    return _he_resnet(f"plain_cnn(depth={depth})", depth, False, num_classes=num_classes,
                      in_chans=in_chans, width=width, **options)


_R18 = "ResNet-18, He et al. 2016, Table 1, CIFAR stem"


@register_model(family="resnet_cifar", default_input=(3, 32, 32), min_input=(8, 8),
                options=_OPTIONS, description=f"{_R18}; option B")
def resnet18(*, num_classes: int, in_chans: int, width: float = 1.0, shortcut: str = "B",
             **options) -> ResNetCifar:
    return ResNetCifar(stem_channels=_R18_STEM, stages=_R18_STAGES, num_classes=num_classes,
                       in_chans=in_chans, width=width, shortcut=shortcut, name="resnet18",
                       **options)


@register_model(family="plain_cifar", default_input=(3, 32, 32), min_input=(8, 8),
                options=_OPTIONS, description=f"{_R18}; no shortcuts")
def plain18(*, num_classes: int, in_chans: int, width: float = 1.0, **options) -> ResNetCifar:
    return ResNetCifar(stem_channels=_R18_STEM, stages=_R18_STAGES, num_classes=num_classes,
                       in_chans=in_chans, width=width, skip=False, name="plain18", **options)
