"""Small single-concept building blocks shared by every model in the zoo.

Each block is one idea from one paper, written so that its module names (and therefore its
state-dict keys) stay stable:

* :class:`ConvNormAct` -- conv -> norm -> activation, an ``nn.Sequential`` named ``0, 1, 2`` like
  torchvision's ``Conv2dNormActivation`` (so torchvision weights load without a key mapping).
* :class:`DepthwiseSeparable` -- MobileNetV1's 3x3 depthwise + 1x1 pointwise (Howard et al. 2017,
  Fig. 3).
* :class:`InvertedResidual` -- MobileNetV2's expand 1x1 -> depthwise 3x3 -> linear 1x1 projection,
  residual only when the stride is 1 and the channel counts match (Sandler et al. 2018, Table 1).
* :class:`BasicBlock` -- ResNet's two 3x3 convolutions with an identity (option A) or projection
  (option B) shortcut, or no shortcut at all for the "plain" counterpart (He et al. 2016).

Norm and activation layers are chosen by name through :func:`resolve_norm` / :func:`resolve_act`.
No layer is built in-place: in-place ReLU breaks full backward hooks (Captum's Guided Backprop,
Grad-CAM on CPU), and the memory it saves is small for these networks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from cnnlab.errors import UserError

LayerFactory = Callable[[int], nn.Module]
ActFactory = Callable[[], nn.Module]
NormSpec = str | LayerFactory | None  # what a user may pass as norm_layer=
ActSpec = str | ActFactory | None  # what a user may pass as act_layer=

# name -> activation class. Built without arguments: no inplace (see the module docstring).
_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "hardswish": nn.Hardswish,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "identity": nn.Identity,
}

_NORMS: dict[str, LayerFactory | None] = {
    "bn": nn.BatchNorm2d,
    "batchnorm": nn.BatchNorm2d,
    "none": None,
    "identity": None,
}


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to the nearest multiple of ``divisor`` without losing more than 10%.

    The rule of the TensorFlow MobileNet code, identical to torchvision's ``_make_divisible``:
    round to the nearest multiple (never below ``min_value``, default ``divisor``), then add one
    more ``divisor`` if rounding down removed more than 10% of ``v``.

    Args:
        v: the unrounded channel count, e.g. ``32 * width``.
        divisor: the multiple to round to (8 in both MobileNet papers).
        min_value: the smallest result allowed; defaults to ``divisor``.

    Returns:
        The rounded channel count.
    """
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:  # rounding down must not remove more than 10%
        new_v += divisor
    return new_v


def _resolve(kind: str, value: object, table: dict, default: str, callable_hint: str):
    """Look ``value`` up in ``table`` by lower-case name; ``None`` means ``default``."""
    if value is None:
        value = default
    if callable(value):
        return value
    key = str(value).lower()
    if key not in table:
        raise UserError(
            f"unknown {kind} {value!r}; expected one of {', '.join(sorted(table))} or a callable"
            f" {callable_hint}"
        )
    return table[key]


def resolve_act(act_layer: ActSpec, default: str = "relu") -> ActFactory:
    """Turn an activation name (``"relu"``, ``"relu6"``, ``"sigmoid"``, ...) into a factory.

    Args:
        act_layer: a name from ``_ACTIVATIONS`` (``"identity"`` for none), a callable taking no
            argument and returning an ``nn.Module``, or ``None`` for ``default``.
        default: the model's own activation.

    Raises:
        UserError: for an unknown name.
    """
    return _resolve("act_layer", act_layer, _ACTIVATIONS, default, "() -> nn.Module")


def resolve_norm(norm_layer: NormSpec, default: str = "bn") -> LayerFactory | None:
    """Turn a norm name into a factory ``(num_channels) -> nn.Module``, or ``None`` for no norm.

    ``None`` means the default, BatchNorm (as in torchvision); ``"none"`` means no normalisation,
    in which case convolutions get a bias (nothing else would shift their output).

    Raises:
        UserError: for an unknown name.
    """
    return _resolve("norm_layer", norm_layer, _NORMS, default, "(num_channels) -> nn.Module")


class ConvNormAct(nn.Sequential):
    """``Conv2d -> norm -> activation``; missing parts are ``nn.Identity`` so indices stay 0, 1, 2.

    Shapes: ``(N, in_ch, H, W) -> (N, out_ch, ceil(H / stride), ceil(W / stride))`` for odd
    kernels ("same" padding ``k // 2``).

    Args:
        in_ch: input channels.
        out_ch: output channels.
        kernel_size: square kernel size (odd).
        stride: 1 or 2.
        groups: ``in_ch`` for a depthwise convolution.
        norm: factory ``(channels) -> module`` or ``None`` for no norm (the conv then has a bias).
        act: factory ``() -> module``; ``nn.Identity`` for a linear layer.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        norm: LayerFactory | None = nn.BatchNorm2d,
        act: ActFactory = nn.ReLU,
    ) -> None:
        if stride not in (1, 2):
            raise ValueError(f"stride should be 1 or 2 instead of {stride}")
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, groups=groups,
                      bias=norm is None),
            norm(out_ch) if norm is not None else nn.Identity(),
            act(),
        )
        self.out_channels = out_ch


class DepthwiseSeparable(nn.Sequential):
    """MobileNetV1's block: 3x3 depthwise conv-BN-ReLU, then 1x1 pointwise conv-BN-ReLU.

    Children are named ``dw`` and ``pw``. Shapes: ``(N, in_ch, H, W) -> (N, out_ch, H/s, W/s)``.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: LayerFactory | None,
                 act: ActFactory) -> None:
        super().__init__(OrderedDict(
            dw=ConvNormAct(in_ch, in_ch, 3, stride, groups=in_ch, norm=norm, act=act),
            pw=ConvNormAct(in_ch, out_ch, 1, norm=norm, act=act),
        ))
        self.out_channels = out_ch


class InvertedResidual(nn.Module):
    """MobileNetV2's bottleneck: expand 1x1 -> depthwise 3x3 (stride s) -> linear 1x1 project.

    Module names mirror torchvision's ``InvertedResidual`` (``conv.0`` ... ``conv.3``; the expand
    layer is absent when ``expand_ratio == 1``) so that torchvision state dicts load unchanged.
    The projection has no activation: the "linear bottleneck" of Sandler et al. (Sec. 3.2).
    Shapes: ``(N, in_ch, H, W) -> (N, out_ch, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int,
                 norm: LayerFactory | None, act: ActFactory) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride should be 1 or 2 instead of {stride}")
        hidden = int(round(in_ch * expand_ratio))
        # The paper's rule: add the input back only where shapes match (Table 2 footnote).
        self.use_res_connect = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvNormAct(in_ch, hidden, 1, norm=norm, act=act))
        layers += [
            ConvNormAct(hidden, hidden, 3, stride, groups=hidden, norm=norm, act=act),
            nn.Conv2d(hidden, out_ch, 1, bias=norm is None),  # linear projection
            norm(out_ch) if norm is not None else nn.Identity(),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_ch

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class PadShortcut(nn.Module):
    """ResNet option-A shortcut: subsample by ``stride`` and zero-pad the extra channels.

    Parameter-free, so a residual net has exactly the parameters of its plain counterpart (He et
    al. 2016, Sec. 4.2). Shapes: ``(N, in_ch, H, W) -> (N, out_ch, ceil(H/s), ceil(W/s))``; the
    new channels are split evenly before and after the old ones, as in the common CIFAR ports.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        if out_ch < in_ch:
            raise ValueError(f"option-A shortcut cannot shrink channels ({in_ch} -> {out_ch})")
        self.stride = stride
        self.pad_before = (out_ch - in_ch) // 2
        self.pad_after = out_ch - in_ch - self.pad_before

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]  # (N, in_ch, ceil(H/s), ceil(W/s))
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))  # (N, out_ch, ...)


class BasicBlock(nn.Module):
    """ResNet basic block: ``act(conv2(conv1(x)) + shortcut(x))``, or without the sum if plain.

    ``conv1`` is 3x3 conv-norm-act with the block's stride, ``conv2`` is 3x3 conv-norm (no
    activation before the sum). ``shortcut="A"`` is :class:`PadShortcut` when shapes change,
    ``"B"`` a 1x1 conv-norm projection when shapes change; identity otherwise. With
    ``skip=False`` the block is the "plain" counterpart: identical layers, no shortcut.
    Shapes: ``(N, in_ch, H, W) -> (N, out_ch, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, *, skip: bool = True,
                 shortcut: str = "A", norm: LayerFactory | None = nn.BatchNorm2d,
                 act: ActFactory = nn.ReLU) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_ch, out_ch, 3, stride, norm=norm, act=act)
        self.conv2 = ConvNormAct(out_ch, out_ch, 3, 1, norm=norm, act=nn.Identity)
        self.skip = skip
        if not skip or (stride == 1 and in_ch == out_ch):
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            self.shortcut = PadShortcut(in_ch, out_ch, stride)
        elif shortcut == "B":
            self.shortcut = ConvNormAct(in_ch, out_ch, 1, stride, norm=norm, act=nn.Identity)
        else:
            raise UserError(
                f"shortcut must be 'A' (zero-padding) or 'B' (projection), got {shortcut!r}"
            )
        self.act = act()
        self.out_channels = out_ch

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        if self.skip:
            out = out + self.shortcut(x)
        return self.act(out)


def init_weights(model: nn.Module) -> None:
    """Initialise like torchvision's MobileNetV2 (and, for convs, its ResNet).

    Conv: Kaiming-normal, fan_out (He et al. 2015); norm: weight 1, bias 0; Linear: N(0, 0.01),
    bias 0.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
