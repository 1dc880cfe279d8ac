"""Explanations of CNN decisions: Grad-CAM, Grad-CAM++, Guided Backprop, Guided Grad-CAM.

- ``GradCAM`` / ``GradCAMPlusPlus`` (``gradcam.py``, ``gradcam_plusplus.py`` over ``base.py``):
  class activation maps ``(N, H, W)`` at any conv layer, by module or dotted name.
- ``GuidedBackprop`` / ``GuidedGradCAM``: pixel-level gradients ``(N, C, H, W)``.
- ``maps``: the upsampling and normalisation every method uses.
- ``overlay``: heatmap overlays and the course's figure layout (matplotlib).
- ``sanity``: Adebayo et al. (2018) cascading randomisation; ``faithfulness``: Petsiuk et al.
  (2018) deletion / insertion curves.

Every method computes in eval mode and leaves the model as it found it: train/eval flags, the
parameters' ``.grad``, no hooks left behind.
"""

from cnnlab.explain.gradcam import GradCAM
from cnnlab.explain.gradcam_plusplus import GradCAMPlusPlus
from cnnlab.explain.guided_backprop import GuidedBackprop
from cnnlab.explain.guided_gradcam import GuidedGradCAM
from cnnlab.explain.layers import default_target_layer, resolve_layer
from cnnlab.explain.maps import normalize, upsample

__all__ = [
    "GradCAM",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedGradCAM",
    "default_target_layer",
    "normalize",
    "resolve_layer",
    "upsample",
]
