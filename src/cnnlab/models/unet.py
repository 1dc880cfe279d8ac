"""Binary/multi-class segmentation networks: ``(N, C, H, W)`` images -> ``(N, K, H, W)`` logits.

Two U-Nets (an encoder that halves the resolution stage by stage, a decoder that doubles it back
and concatenates the encoder's map of the same resolution at every stage):

* ``unet_mobilenet_v2`` -- the course's design (TensorFlow's pix2pix segmentation tutorial): a
  MobileNetV2 encoder (Sandler et al. 2018, top removed) tapped at the five Keras layers below,
  and a decoder of pix2pix upsampling blocks (``ConvTranspose2d(k=3, s=2) -> BatchNorm -> ReLU``)
  with decoder widths 512/256/128/64, ending in a ``ConvTranspose2d(k=3, s=2)`` to the input
  resolution. The encoder's module names are torchvision's (``encoder.features.0`` ...
  ``encoder.features.17``), so torchvision and cnnlab MobileNetV2 weights load into it
  (:func:`cnnlab.engine.encoder_weights.load_encoder_weights`).

  ======================  ==============================  ==========  ================
  Keras layer             here                            stride      channels (alpha 1)
  ======================  ==============================  ==========  ================
  block_1_expand_relu     ``features.2.conv.0`` output    H/2         96
  block_3_expand_relu     ``features.4.conv.0`` output    H/4         144
  block_6_expand_relu     ``features.7.conv.0`` output    H/8         192
  block_13_expand_relu    ``features.14.conv.0`` output   H/16        576
  block_16_project        ``features.17.conv.2`` output   H/32        320
  ======================  ==============================  ==========  ================

  ``block_16_project`` is the 1x1 projection convolution *before* its BatchNorm (Keras names the
  BatchNorm ``block_16_project_BN``), so the encoder ends there: it has no
  ``features.17.conv.3`` and no final 1x1 conv (``features.18``).
  The width multiplier alpha thins the encoder as in MobileNetV2; ``decoder_width`` thins the
  decoder. ``freeze_encoder=True`` makes the encoder's parameters untrainable *and* keeps its
  BatchNorm layers in eval mode (as Keras' ``trainable = False`` does), so a frozen encoder stays
  bit-identical however long the decoder trains.

* ``unet`` -- Ronneberger et al. 2015, Fig. 1: four stages of two 3x3 convolutions + ReLU and a
  2x2 max-pool, a bottleneck of two 3x3 convolutions, four stages of a 2x2 up-convolution
  (``ConvTranspose2d(k=2, s=2)``, halving the channels), concatenation and two 3x3 convolutions,
  and a 1x1 convolution to the classes. Channels ``base, 2 base, ..., 16 base`` (``base=64`` in
  the paper; smaller ones fit a CPU). Two deliberate differences from the paper, both standard
  in re-implementations: the convolutions are zero-padded (output size = input size, no
  cropping of the skip connections), and ``norm_layer="bn"`` adds BatchNorm after every
  convolution (the paper has none; the default here is the paper's ``"none"``).

Both check their input's shape first (one :class:`~cnnlab.errors.UserError` line): 4-D, the
channels they were built for, and a height and width divisible by the total downsampling
factor (32 for ``unet_mobilenet_v2``, ``2 ** depth`` = 16 for ``unet``) so that every decoder
stage meets an encoder map of exactly its size.
"""

from __future__ import annotations

import torch
import torch.fx
from torch import Tensor, nn

from cnnlab.errors import UserError
from cnnlab.models._layers import NormSpec, init_weights, make_divisible, resolve_norm
from cnnlab.models._registry import register_model

TASK = "segmentation"

# (Keras layer name, index into encoder.features, tapped part): "expand" = after conv.0 (the
# expansion conv + BN + ReLU6), "project" = after conv.2 (the linear 1x1 projection, pre-BN)
ENCODER_TAPS: tuple[tuple[str, int, str], ...] = (
    ("block_1_expand_relu", 2, "expand"),
    ("block_3_expand_relu", 4, "expand"),
    ("block_6_expand_relu", 7, "expand"),
    ("block_13_expand_relu", 14, "expand"),
    ("block_16_project", 17, "project"),
)
DECODER_CHANNELS = (512, 256, 128, 64)  # the tutorial's up_stack


def check_segmentation_input(x: Tensor, name: str, in_chans: int, multiple: int) -> None:
    """Raise a :class:`UserError` unless ``x`` is ``(N, in_chans, H, W)`` with ``H`` and ``W``
    positive multiples of ``multiple``. Shapes only: safe on meta/fake tensors and in tracing."""
    if x.dim() != 4:
        raise UserError(f"{name} expects a batch of images (N, C, H, W), got a tensor of shape "
                        f"{tuple(x.shape)}")
    if x.shape[1] != in_chans:
        raise UserError(f"{name} was built for in_chans={in_chans}, got an input with "
                        f"{x.shape[1]} channels (shape {tuple(x.shape)})")
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h < multiple or w < multiple or h % multiple or w % multiple:
        raise UserError(f"{name} needs an input height and width divisible by {multiple} (its "
                        f"total downsampling factor), got {h}x{w}; resize to e.g. "
                        f"{max(multiple, round(h / multiple) * multiple)}x"
                        f"{max(multiple, round(w / multiple) * multiple)}")


torch.fx.wrap("check_segmentation_input")  # a leaf call in fx graphs


class MobileNetV2Encoder(nn.Module):
    """MobileNetV2's ``features.0`` ... ``features.17`` (torchvision names), returning the five
    course taps (module docstring), finest first.

    Shapes: ``(N, in_chans, H, W) -> [(N, c_i, H / 2^i, W / 2^i) for i = 1..5]``.
    """

    def __init__(self, *, in_chans: int = 3, width: float = 1.0,
                 norm_layer: NormSpec = None) -> None:
        super().__init__()
        from cnnlab.models.mobilenet_v2 import MobileNetV2

        body = MobileNetV2(num_classes=1, in_chans=in_chans, width=width, variant="imagenet",
                           norm_layer=norm_layer, dropout=0.0, name="unet_mobilenet_v2")
        layers = list(body.features)[:18]  # drop features.18, the last 1x1 conv
        layers[17].conv[3] = nn.Identity()  # block_16_project is tapped before its BatchNorm
        self.features = nn.Sequential(*layers)
        self.in_chans = in_chans
        self.channels = tuple(self._tap_channels(i, part) for _, i, part in ENCODER_TAPS)

    def _tap_channels(self, index: int, part: str) -> int:
        block = self.features[index]
        conv = block.conv[0][0] if part == "expand" else block.conv[2]
        return int(conv.out_channels)

    def forward(self, x: Tensor) -> list[Tensor]:
        taps: list[Tensor] = []
        tap_at = {i: part for _, i, part in ENCODER_TAPS}
        for i, block in enumerate(self.features):
            part = tap_at.get(i)
            if part is None:
                x = block(x)
            elif part == "expand":  # stride-2 blocks: no residual connection
                e = block.conv[0](x)
                taps.append(e)
                x = block.conv[1:](e)
            else:  # the last block's projection, pre-BatchNorm (conv.3 is Identity)
                x = block.conv(x)
                taps.append(x)
        return taps


def _up(in_ch: int, out_ch: int) -> nn.Sequential:
    """pix2pix ``upsample``: ConvTranspose2d(k=3, s=2, 'same') -> BatchNorm -> ReLU, x2 size."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_ch, out_ch, 3, stride=2, padding=1, output_padding=1, bias=False),
        nn.BatchNorm2d(out_ch), nn.ReLU())


class UNetMobileNetV2(nn.Module):
    """The course's U-Net: MobileNetV2 encoder taps -> pix2pix decoder -> per-pixel logits.

    Args:
        num_classes: output channels (1 for binary segmentation: one logit per pixel).
        in_chans: input channels (1 for grayscale).
        width: MobileNetV2's width multiplier alpha.
        decoder_width: multiplies the decoder widths 512/256/128/64 (rounded to multiples of 8).
        freeze_encoder: encoder parameters untrainable and its BatchNorm kept in eval mode.
        norm_layer: the encoder's norm (``None``/``"bn"``); the decoder always uses BatchNorm.
    """

    multiple = 32

    def __init__(self, *, num_classes: int = 1, in_chans: int = 3, width: float = 1.0,
                 decoder_width: float = 1.0, freeze_encoder: bool = False,
                 norm_layer: NormSpec = None) -> None:
        super().__init__()
        if not isinstance(decoder_width, (int, float)) or not decoder_width > 0:
            raise UserError(f"decoder_width must be a number > 0, got {decoder_width!r}")
        self.model_name = "unet_mobilenet_v2"
        self.in_chans, self.num_classes = in_chans, num_classes
        self.encoder = MobileNetV2Encoder(in_chans=in_chans, width=width, norm_layer=norm_layer)
        skips = self.encoder.channels[:-1][::-1]  # H/16, H/8, H/4, H/2
        widths = [make_divisible(c * decoder_width) for c in DECODER_CHANNELS]
        ups, ch = [], self.encoder.channels[-1]
        for out, skip in zip(widths, skips, strict=True):
            ups.append(_up(ch, out))
            ch = out + skip  # after concatenating the skip
        self.decoder = nn.ModuleList(ups)
        self.head = nn.ConvTranspose2d(ch, num_classes, 3, stride=2, padding=1, output_padding=1)
        init_weights(self)
        self.freeze_encoder = False
        self.set_encoder_frozen(bool(freeze_encoder))

    def set_encoder_frozen(self, frozen: bool) -> None:
        """Freeze (or unfreeze) the encoder: ``requires_grad`` off and BatchNorm in eval mode."""
        self.freeze_encoder = frozen
        for p in self.encoder.parameters():
            p.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> UNetMobileNetV2:
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()  # running statistics stay those the encoder came with
        return self

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_chans, H, W)`` -> ``(N, num_classes, H, W)`` logits; H, W divisible by 32."""
        check_segmentation_input(x, self.model_name, self.in_chans, self.multiple)
        *skips, x = self.encoder(x)
        for up, skip in zip(self.decoder, reversed(skips), strict=True):
            x = torch.cat([up(x), skip], dim=1)
        return self.head(x)


def _double_conv(in_ch: int, out_ch: int, norm) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c_in in (in_ch, out_ch):
        layers += [nn.Conv2d(c_in, out_ch, 3, padding=1, bias=norm is None),
                   norm(out_ch) if norm is not None else nn.Identity(), nn.ReLU()]
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """Ronneberger et al. 2015's U-Net (module docstring), with padded convolutions.

    Args:
        num_classes: output channels (1 for binary segmentation).
        in_chans: input channels.
        base: channels of the first stage (64 in the paper); stage i has ``base * 2**i``.
        depth: number of 2x2 max-pools (4 in the paper); inputs must be divisible by 2**depth.
        norm_layer: ``"none"`` (the paper) or ``"bn"``.
    """

    def __init__(self, *, num_classes: int = 1, in_chans: int = 1, base: int = 64,
                 depth: int = 4, norm_layer: NormSpec = "none") -> None:
        super().__init__()
        for what, v in (("base", base), ("depth", depth)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UserError(f"unet: {what} must be a positive integer, got {v!r}")
        norm = resolve_norm(norm_layer)
        self.model_name, self.in_chans, self.num_classes = "unet", in_chans, num_classes
        self.multiple = 2 ** depth
        chans = [base * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList([_double_conv(in_chans if i == 0 else chans[i - 1], chans[i],
                                                norm) for i in range(depth)])
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _double_conv(chans[-2], chans[-1], norm)
        self.upconv = nn.ModuleList([nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2)
                                     for i in reversed(range(depth))])
        self.up = nn.ModuleList([_double_conv(2 * chans[i], chans[i], norm)
                                 for i in reversed(range(depth))])
        self.head = nn.Conv2d(chans[0], num_classes, 1)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_chans, H, W)`` -> ``(N, num_classes, H, W)`` logits."""
        check_segmentation_input(x, self.model_name, self.in_chans, self.multiple)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for upconv, block, skip in zip(self.upconv, self.up, reversed(skips), strict=True):
            x = block(torch.cat([skip, upconv(x)], dim=1))
        return self.head(x)


@register_model(family="unet", default_input=(3, 224, 224), min_input=(32, 32),
                reference_classes=1, task=TASK,
                description="U-Net with a MobileNetV2 encoder (course / TF pix2pix tutorial); "
                            "inputs divisible by 32")
def unet_mobilenet_v2(*, num_classes: int, in_chans: int, width: float = 1.0,
                      decoder_width: float = 1.0, freeze_encoder: bool = False,
                      norm_layer: NormSpec = None) -> UNetMobileNetV2:
    return UNetMobileNetV2(num_classes=num_classes, in_chans=in_chans, width=width,
                           decoder_width=decoder_width, freeze_encoder=freeze_encoder,
                           norm_layer=norm_layer)


@register_model(family="unet", default_input=(3, 512, 512), min_input=(16, 16),
                reference_classes=2, task=TASK,
                description="U-Net, Ronneberger et al. 2015, Fig. 1 (padded convs); base width "
                            "configurable")
def unet(*, num_classes: int, in_chans: int, base: int = 64, depth: int = 4,
         norm_layer: NormSpec = "none") -> UNet:
    return UNet(num_classes=num_classes, in_chans=in_chans, base=base, depth=depth,
                norm_layer=norm_layer)
