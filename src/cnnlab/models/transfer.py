"""Transfer learning: a backbone (a feature extractor, pretrained or not) under a new head.

:class:`TransferNet` is ``backbone -> global average pooling -> Linear``: the course's "reuse a
pretrained network, drop its classifier, add GlobalAveragePooling + a new Dense layer". Its
:meth:`~TransferNet.freeze` leaves some (or none, or all) of the backbone's blocks trainable:

- frozen parameters get ``requires_grad = False``, so autograd computes no gradient for them and
  the optimiser (:func:`cnnlab.engine.optim.param_groups`) never receives them;
- frozen modules stay in **eval mode** even while the model trains: :meth:`TransferNet.train`
  puts them back in eval mode every time the training loop calls ``model.train()``. BatchNorm in
  train mode would normalise with the batch's statistics and overwrite its running statistics
  from the new data, although no parameter of it is trained: the classic Keras trap
  (``base_model(x, training=False)``). A frozen backbone is therefore bit-for-bit the backbone it
  was given, buffers included.

Backbones (:func:`make_backbone`), each with its blocks in forward order:

=====================  =========================================  ===============  ==========
name                   what                                        input            weights
=====================  =========================================  ===============  ==========
``resnet20``           He et al. 2016 CIFAR ResNet (270k params)   32x32            ours
``resnet18``           ResNet-18, CIFAR stem (11M)                 32x32            ours
``mobilenet_v2_cifar`` MobileNetV2, CIFAR strides (2.2M)           32x32            ours
``resnet18`` (tv)      torchvision ResNet-18 (ImageNet)            224x224          torchvision
``resnet50`` (tv)      torchvision ResNet-50 (ImageNet)            224x224          torchvision
``mobilenet_v2`` (tv)  MobileNetV2 (ImageNet; = torchvision's)     224x224          torchvision
=====================  =========================================  ===============  ==========

The CIFAR variants come from the model zoo (``model.features`` of the registered network); the
ImageNet ones take torchvision state dicts (``torchvision=True``): torchvision's own ResNet
modules (their parameter names are the state dict's), and the zoo's ``mobilenet_v2``, whose names
are torchvision's. :attr:`Backbone.weights_prefix` and :attr:`Backbone.head_prefixes` say how a
whole network's state dict maps onto the backbone (and which of its tensors is the old head).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cnnlab.errors import UserError

CIFAR_BACKBONES = ("resnet20", "resnet18", "mobilenet_v2_cifar")
TORCHVISION_BACKBONES = ("resnet18", "resnet50", "mobilenet_v2")
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # what torchvision's ImageNet weights were trained with
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Backbone:
    """A feature extractor and what transfer learning needs to know about it.

    Attributes:
        name: e.g. ``"resnet20"``.
        module: ``(N, C, H, W) -> (N, channels, h, w)``.
        channels: channels of the last feature map (the new head's input).
        blocks: dotted names (under ``module``) of its blocks in forward order: the units that
            a partial unfreeze counts.
        input_size: the image side the architecture is meant for (32 or 224).
        weights_prefix: where the backbone sits in the whole network's state dict
            (``"features."`` for the zoo's networks, ``""`` for torchvision's ResNets).
        head_prefixes: the old classifier's names in that state dict (dropped on loading).
        torchvision: whether it takes torchvision (ImageNet) weights.
    """

    name: str
    module: nn.Module
    channels: int
    blocks: tuple[str, ...]
    input_size: int
    weights_prefix: str
    head_prefixes: tuple[str, ...]
    torchvision: bool = False

    @property
    def last_stage(self) -> tuple[str, ...]:
        """The blocks from the last downsampling one (a conv with stride > 1) to the end: the
        stage working on the smallest feature maps (ResNet ``layer4``, resnet20's stage 3)."""
        down = [i for i, b in enumerate(self.blocks) if _downsamples(self.module.get_submodule(b))]
        return self.blocks[down[-1] if down else 0:]

    def last_blocks(self, n: int) -> tuple[str, ...]:
        """The last ``n`` blocks (``0 <= n <= len(blocks)``)."""
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(self.blocks):
            raise UserError(f"{self.name} has {len(self.blocks)} blocks; cannot unfreeze the last "
                            f"{n!r}")
        return self.blocks[len(self.blocks) - n:]


def _downsamples(m: nn.Module) -> bool:
    return any(isinstance(c, nn.Conv2d) and max(c.stride) > 1 for c in m.modules())


def check_backbone(name: str, *, torchvision: bool = False) -> None:
    """Raise one UserError line unless ``name`` is a backbone (of that kind)."""
    choices = TORCHVISION_BACKBONES if torchvision else CIFAR_BACKBONES
    if name not in choices:
        what = "for torchvision weights (--weights)" if torchvision else "(CIFAR variants)"
        raise UserError(f"unknown backbone {name!r} {what}; choose from {', '.join(choices)}")


def make_backbone(name: str, *, torchvision: bool = False, in_chans: int = 3) -> Backbone:
    """A freshly initialised backbone (load weights with
    :func:`cnnlab.engine.checkpoint.load_module_weights`).

    Args:
        name: one of :data:`CIFAR_BACKBONES`, or with ``torchvision`` one of
            :data:`TORCHVISION_BACKBONES`.
        torchvision: the ImageNet architecture that takes torchvision's weights, at 224 px.
        in_chans: input channels (3 for torchvision weights).

    Raises:
        UserError: an unknown backbone name (one line, naming the choices).
    """
    from cnnlab import models

    check_backbone(name, torchvision=torchvision)
    if torchvision and name.startswith("resnet"):
        import torchvision as tv

        net = getattr(tv.models, name)()  # random init; the weights come from the user's file
        module = nn.Sequential(OrderedDict(
            (k, getattr(net, k)) for k in ("conv1", "bn1", "relu", "maxpool",
                                            "layer1", "layer2", "layer3", "layer4")))
        blocks = ("conv1", "bn1") + tuple(f"{layer}.{i}" for layer in ("layer1", "layer2",
                                                                        "layer3", "layer4")
                                          for i in range(len(getattr(net, layer))))
        return Backbone(name, module, net.fc.in_features, blocks, 224, "", ("fc.",), True)
    net = models.create(name, num_classes=1, in_chans=in_chans)
    features = net.features
    blocks: list[str] = []
    for i, m in enumerate(features):  # a stage (Sequential of blocks) counts its blocks
        if isinstance(m, nn.Sequential) and not any(isinstance(c, nn.Conv2d) for c in m.children()):
            blocks += [f"{i}.{j}" for j in range(len(m))]
        else:
            blocks.append(str(i))
    return Backbone(name, features, net.classifier[-1].in_features, tuple(blocks),
                    224 if torchvision else 32, "features.", ("classifier.",), torchvision)


class TransferNet(nn.Module):
    """``backbone -> global average pool -> Linear``, with some of the backbone frozen.

    Shapes: ``(N, C, H, W) -> (N, num_classes)``.

    Args:
        backbone: the :class:`Backbone` (its module becomes ``self.backbone``).
        num_classes: outputs of the new head.
        seed: seeds the head's initialisation (PyTorch's default for Linear).

    Attributes:
        blocks: the backbone's block names (under ``backbone.``).
        trainable_blocks: the backbone blocks :meth:`freeze` left trainable (all of them until
            it is called).
    """

    def __init__(self, backbone: Backbone, num_classes: int, *, seed: int | None = None) -> None:
        super().__init__()
        self.backbone_name = backbone.name
        self.backbone = backbone.module
        self.blocks = backbone.blocks
        self.pool = nn.AdaptiveAvgPool2d(1)
        if seed is not None:
            torch.manual_seed(seed)
        self.head = nn.Linear(backbone.channels, num_classes)
        self.trainable_blocks: tuple[str, ...] = backbone.blocks
        self._frozen = False

    def forward(self, x: Tensor) -> Tensor:
        x = self.backbone(x)  # (N, C', h, w)
        x = self.pool(x).flatten(1)  # (N, C')
        return self.head(x)  # (N, num_classes)

    def freeze(self, trainable: Iterable[str] = ()) -> TransferNet:
        """Freeze the backbone except the named blocks (the head always trains).

        ``freeze()`` is the linear probe (only the head trains), ``freeze(net.blocks)`` full
        fine-tuning, ``freeze(backbone.last_stage)`` a partial unfreeze.

        Raises:
            UserError: a name that is not one of :attr:`blocks`.
        """
        names = tuple(trainable)
        unknown = [b for b in names if b not in self.blocks]
        if unknown:
            raise UserError(f"{self.backbone_name} has no block {unknown[0]!r}; its blocks: "
                            f"{', '.join(self.blocks)}")
        self.backbone.requires_grad_(False)
        for b in names:
            self.backbone.get_submodule(b).requires_grad_(True)
        self.trainable_blocks = tuple(b for b in self.blocks if b in names)  # forward order
        self._frozen = True
        return self.train(self.training)

    def train(self, mode: bool = True) -> TransferNet:
        """Train/eval mode, with every frozen part of the backbone kept in eval mode."""
        super().train(mode)
        if mode and self._frozen and len(self.trainable_blocks) < len(self.blocks):
            self.backbone.eval()
            for b in self.trainable_blocks:
                self.backbone.get_submodule(b).train()
        return self

    def trainable_parameters(self) -> int:
        """The number of parameters the optimiser updates."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
