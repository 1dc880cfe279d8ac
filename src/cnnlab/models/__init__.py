"""The model zoo: MobileNetV1/V2, Conv MobileNet, VGG-style CNNs, CIFAR ResNets and plain nets,
sentence classifiers (RNN, GRU, LSTM, Bi-LSTM, Kim CNN, bag of embeddings; :mod:`.text`) and
segmentation U-Nets (``unet_mobilenet_v2``, ``unet``; :mod:`.unet`: ``(N, C, H, W)`` images to
``(N, K, H, W)`` per-pixel logits).

Build models by name::

    from cnnlab.models import create, list_models, model_info
    model = create("mobilenet_v2_cifar", num_classes=10, width=0.5)
    model_info("mobilenet_v2").default_input  # (3, 224, 224)

Every model maps ``(N, C, H, W)`` images to ``(N, num_classes)`` logits, checks its input shape
(channels and the minimum size ``model_info(name).min_input``) with a one-line
:class:`~cnnlab.errors.UserError`, and exposes ``model.features`` (the conv stages;
``model.target_layer`` names the last one for Grad-CAM), ``model.pool`` and ``model.classifier``
(``classifier[-1]`` is the final Linear). No layer is in-place, so module hooks are safe.
"""

from cnnlab.models import (  # noqa: F401  (registers)
    mobilenet_v1,
    mobilenet_v2,
    resnet_cifar,
    stacked_cnn,
    text,
    unet,
    vgg,
)
from cnnlab.models._layers import init_weights, make_divisible, resolve_act, resolve_norm
from cnnlab.models._registry import ModelInfo, create, list_models, model_info, register_model

__all__ = [
    "ModelInfo",
    "create",
    "init_weights",
    "list_models",
    "make_divisible",
    "model_info",
    "register_model",
    "resolve_act",
    "resolve_norm",
]
