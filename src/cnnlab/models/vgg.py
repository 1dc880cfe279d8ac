"""Small conventional (VGG-style) CNNs: stacks of 3x3 conv-BN-ReLU separated by 2x2 max-pools.

The conventional baseline against which depthwise separable networks are compared (as in
Howard et al. 2017, Table 4, on a small scale), in the style of VGG (Simonyan & Zisserman 2015):
every conv is 3x3, stride 1, "same" padding; every ``"M"`` halves the resolution; the head is
adaptive average pooling and one Linear layer (no large fully connected layers, so any input
size of at least ``2 ** pools`` pixels works).

* ``simple_cnn`` -- 3 conv layers, each followed by a 2x2 max-pool (32-M-64-M-128-M), global
  average pooling: the textbook small CNN, 94k parameters and 7.5M MACs on a 28x28
  Fashion-MNIST image (``in_chans=1``).
* ``compact_cnn`` -- the same convolutions with a head that keeps a 3x3 map (adaptive average
  pooling to 3x3, the identity at 28x28, then Linear(128 * 9)): the fast CPU baseline for
  Fashion-MNIST, 104k parameters. Keeping coarse positions helps on centred 28x28 items: the
  training engine measured 92.6% after 6 epochs against 92.2% with global pooling
  (``bench/NOTES-training.md``, section 3).
* ``vgg_small`` -- 6 conv layers (64-64-M-128-128-M-256-256), 1.15M parameters and 153M MACs at
  32x32: the conventional baseline for CIFAR-10 (MobileNetV2-CIFAR: 2.2M, 88M MACs).
"""

from __future__ import annotations

from torch import nn

from cnnlab.models._base import ConvClassifier
from cnnlab.models._layers import (
    ActSpec,
    ConvNormAct,
    NormSpec,
    make_divisible,
    resolve_act,
    resolve_norm,
)
from cnnlab.models._registry import register_model

# Conv output channels, "M" = 2x2 max-pool with stride 2.
_CFGS: dict[str, list[int | str]] = {
    "compact": [32, "M", 64, "M", 128, "M"],
    "vgg_small": [64, 64, "M", 128, 128, "M", 256, 256],
}


class VGGStyle(ConvClassifier):
    """``features`` = the config's conv-norm-act layers and max-pools; then pool and Linear.

    Shapes: ``(N, in_chans, H, W) -> (N, num_classes)``; the last feature map is
    ``(N, C_last, H / 2**pools, W / 2**pools)`` (rounded down, as max-pooling does).

    Args:
        cfg: conv output channels, ``"M"`` for a 2x2 max-pool.
        num_classes: classifier outputs.
        in_chans: input channels.
        width: multiplies every conv's channels (rounded by ``make_divisible``).
        norm_layer: ``None``/``"bn"`` (BatchNorm), ``"none"``, or a factory.
        act_layer: activation name or factory.
        dropout: before the Linear layer.
        pool_size: side of the average-pooled map fed to the Linear layer (1: global pooling).
        name: the model name in error messages.
    """

    def __init__(self, *, cfg: list[int | str], num_classes: int = 10, in_chans: int = 3,
                 width: float = 1.0, norm_layer: NormSpec = None,
                 act_layer: ActSpec = "relu", dropout: float = 0.0, pool_size: int = 1,
                 name: str = "vgg_style") -> None:
        norm, act = resolve_norm(norm_layer), resolve_act(act_layer)
        layers: list[nn.Module] = []
        channels, pools = in_chans, 0
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                pools += 1
            else:
                out = make_divisible(int(v) * width)
                layers.append(ConvNormAct(channels, out, 3, 1, norm=norm, act=act))
                channels = out
        super().__init__(name=name, features=nn.Sequential(*layers), feature_channels=channels,
                         num_classes=num_classes, in_chans=in_chans,
                         min_input=(2**pools, 2**pools), dropout=dropout, pool_size=pool_size)


_VGG = "VGG-style (Simonyan & Zisserman 2015)"
_OPTIONS = ("norm_layer", "act_layer", "dropout")  # forwarded to VGGStyle (defaults there)


@register_model(family="vgg", default_input=(3, 32, 32), min_input=(8, 8), options=_OPTIONS,
                description=f"{_VGG} 32-M-64-M-128-M, global average pool")
def simple_cnn(*, num_classes: int, in_chans: int, width: float = 1.0, **options) -> VGGStyle:
    return VGGStyle(cfg=_CFGS["compact"], num_classes=num_classes, in_chans=in_chans,
                    width=width, name="simple_cnn", **options)


@register_model(family="vgg", default_input=(3, 32, 32), min_input=(8, 8), options=_OPTIONS,
                description=f"{_VGG} 32-M-64-M-128-M, 3x3 head; fast CPU baseline")
def compact_cnn(*, num_classes: int, in_chans: int, width: float = 1.0, **options) -> VGGStyle:
    return VGGStyle(cfg=_CFGS["compact"], num_classes=num_classes, in_chans=in_chans,
                    width=width, pool_size=3, name="compact_cnn", **options)


@register_model(family="vgg", default_input=(3, 32, 32), min_input=(4, 4), options=_OPTIONS,
                description=f"{_VGG} 64-64-M-128-128-M-256-256, GAP")
def vgg_small(*, num_classes: int, in_chans: int, width: float = 1.0, **options) -> VGGStyle:
    return VGGStyle(cfg=_CFGS["vgg_small"], num_classes=num_classes, in_chans=in_chans,
                    width=width, name="vgg_small", **options)
