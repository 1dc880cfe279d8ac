"""Encoder weights for ``unet_mobilenet_v2``: from a cnnlab run, a cnnlab weights file, or a
torchvision MobileNetV2 state dict.

Every MobileNetV2 in cnnlab uses torchvision's module names (``features.0`` ... ``features.18``),
and the U-Net's encoder is ``encoder.features.0`` ... ``encoder.features.17``; so the encoder's
weights are the ``features.*`` entries of any of:

* a cnnlab run folder (its ``model.pt``) or a ``model.pt`` / ``best.pt`` of ``mobilenet_v2`` or
  ``mobilenet_v2_cifar`` (strides do not change weights: CIFAR-pretrained weights load too);
* a cnnlab ``checkpoint.pt`` (its ``model`` entry);
* a cnnlab ``unet_mobilenet_v2`` weights file (its ``encoder.features.*`` entries);
* ``torchvision.models.mobilenet_v2().state_dict()`` saved with ``torch.save``.

It lives in the engine because files are read with the one loader,
:mod:`cnnlab.engine.checkpoint` (tensors only: nothing is
unpickled as code). The entries the encoder does not have (the classifier, ``features.18``,
the last block's BatchNorm, a U-Net's decoder) are ignored; every encoder entry must be present
with the encoder's shape, except that a 3-channel stem loads into a 1-channel encoder by summing
its weights over the colour channels, which is exactly the network fed a grey image as R = G = B.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.engine import checkpoint as ckpt_io
from cnnlab.errors import DataError, UserError

_STEM = "features.0.0.weight"


def read_encoder_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``features.*`` tensors of a MobileNetV2 weights file, checkpoint or run folder.

    Raises:
        DataNotFoundError / DataError: unreadable file (one line, from the checkpoint loader).
        UserError: the file holds no MobileNetV2 (``features.*``) weights.
    """
    path = Path(path)
    if path.is_dir():
        path = path / ckpt_io.FINAL
    state: dict[str, Any] = ckpt_io.load_weights(path)
    if state.get("format") == ckpt_io.FORMAT and "model" in state:  # a training checkpoint
        state = ckpt_io.load_checkpoint(path)["model"]
    prefix = "encoder." if any(k.startswith("encoder.features.") for k in state) else ""
    found = {k[len(prefix):]: v for k, v in state.items()
             if k.startswith(prefix + "features.") and isinstance(v, torch.Tensor)}
    if _STEM not in found:
        keys = ", ".join(list(state)[:4])
        raise UserError(f"encoder weights file {path} is not a MobileNetV2 (no {prefix}{_STEM}; "
                        f"its first entries: {keys or 'none'}); give weights of mobilenet_v2, "
                        "mobilenet_v2_cifar, unet_mobilenet_v2 or torchvision's mobilenet_v2")
    return found


def load_encoder_weights(model: nn.Module, path: str | Path) -> str:
    """Load MobileNetV2 weights from ``path`` into ``model.encoder`` (a ``unet_mobilenet_v2``).

    Returns:
        One line saying what was loaded (for logs and reports).

    Raises:
        UserError: not a MobileNetV2, another width, or another architecture's entries.
    """
    encoder = getattr(model, "encoder", None)
    if encoder is None or not hasattr(encoder, "features"):
        raise UserError(f"{type(model).__name__} has no MobileNetV2 encoder to load weights into")
    found = read_encoder_state(path)
    own = {f"features.{k}": v for k, v in encoder.features.state_dict().items()}
    missing = [k for k in own if k not in found]
    if missing:
        raise UserError(f"encoder weights file {path} lacks {len(missing)} MobileNetV2 "
                        f"entries, e.g. {missing[0]}: it was saved from another model")
    new, note = {}, ""
    for k, mine in own.items():
        theirs = found[k].detach().to(mine.dtype)
        if k == _STEM and theirs.shape[1] == 3 and mine.shape[1] == 1 \
                and theirs.shape[0] == mine.shape[0]:
            theirs, note = theirs.sum(1, keepdim=True), "; RGB stem summed to 1 channel"
        if theirs.shape != mine.shape:
            raise UserError(f"encoder weights file {path}: {k} has shape {tuple(theirs.shape)}, "
                            f"the encoder's is {tuple(mine.shape)} (another width multiplier "
                            "or input channels?)")
        new[k[len("features."):]] = theirs
    try:
        encoder.features.load_state_dict(new)
    except RuntimeError as exc:  # pragma: no cover - shapes and keys were checked above
        raise DataError(f"encoder weights file {path} does not fit: {exc}") from None
    return f"encoder weights from {path} ({len(new)} tensors{note})"
