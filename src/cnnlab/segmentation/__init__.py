"""Binary segmentation losses and metrics (plain torch: the layer of models and data).

- :mod:`.losses` -- BCE with logits, the course's soft IoU loss, soft Dice, BCE + Dice
  (:func:`segmentation_loss` by name), with their empty-mask cases.
- :mod:`.metrics` -- IoU, Dice, pixel accuracy, precision, recall on thresholded masks, per
  image and over a data set (:func:`confusion_counts`, :func:`summarize`).

The rest of segmentation lives where its layer is: the models in the registry
(``unet_mobilenet_v2``, ``unet``; :mod:`cnnlab.models.unet`), the data sets in
:mod:`cnnlab.data.segmentation` (``horse``, ``isbi2012``), the training task in
:mod:`cnnlab.engine.segmentation_task`, MobileNetV2 encoder weights from cnnlab runs or torchvision
state dicts in :mod:`cnnlab.engine.encoder_weights`, the study in
:mod:`cnnlab.studies.segmentation`.
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

__all__ = [
    "LOSSES", "METRICS", "Counts", "bce_dice_loss", "bce_loss", "confusion_counts", "dice_loss",
    "iou_loss", "scores", "segmentation_loss", "summarize",
]
