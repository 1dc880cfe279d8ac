"""Binary segmentation: losses, metrics, encoder weights (and the engine task, :mod:`.task`).

- :mod:`.losses` -- BCE with logits, the course's soft IoU loss, soft Dice, BCE + Dice
  (:func:`segmentation_loss` by name), with their empty-mask cases.
- :mod:`.metrics` -- IoU, Dice, pixel accuracy, precision, recall on thresholded masks, per
  image and over a data set (:func:`confusion_counts`, :func:`summarize`).
- :mod:`.weights` -- MobileNetV2 encoder weights from a cnnlab run/checkpoint or a torchvision
  state dict (:func:`load_encoder_weights`).

The models are in the registry (``unet_mobilenet_v2``, ``unet``; :mod:`cnnlab.models.unet`), the
data sets in :mod:`cnnlab.data.segmentation` (``horse``, ``isbi2012``).
"""

from cnnlab.segmentation.losses import (
    LOSSES,
    bce_dice_loss,
    bce_loss,
    dice_loss,
    iou_loss,
    segmentation_loss,
)
from cnnlab.segmentation.metrics import METRICS, Counts, confusion_counts, scores, summarize
from cnnlab.segmentation.weights import load_encoder_weights, read_encoder_state

__all__ = [
    "LOSSES", "METRICS", "Counts", "bce_dice_loss", "bce_loss", "confusion_counts", "dice_loss",
    "iou_loss", "load_encoder_weights", "read_encoder_state", "scores", "segmentation_loss",
    "summarize",
]
