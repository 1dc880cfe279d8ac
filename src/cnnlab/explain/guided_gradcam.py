"""Guided Grad-CAM (Selvaraju et al. 2017): Guided Backprop times the upsampled Grad-CAM."""

from __future__ import annotations

from torch import Tensor, nn

from cnnlab.explain._common import Explainer, Targets
from cnnlab.explain.gradcam import GradCAM
from cnnlab.explain.guided_backprop import GuidedBackprop


class GuidedGradCAM(Explainer):
    """Guided Grad-CAM: ``GuidedBackprop(x)`` ``(N, C, H, W)`` times ``upsample(GradCAM(x))``.

    The Grad-CAM factor is the raw map ``ReLU(sum_k alpha_k^c A^k)`` bilinearly upsampled to the
    input size and *not* normalised, so the result is an exact product (as Captum's
    ``GuidedGradCam`` with ``interpolate_mode="bilinear"``); normalise it for display.

    Args:
        model: a classifier returning logits ``(N, num_classes)``.
        target_layer: the Grad-CAM layer (module, dotted name, or None for the default).
    """

    def __init__(self, model: nn.Module, target_layer: nn.Module | str | None = None) -> None:
        super().__init__(model)
        self.gradcam = GradCAM(model, target_layer)
        self.guided = GuidedBackprop(model)

    @property
    def layer_name(self) -> str | None:
        return self.gradcam.layer_name

    def compute(self, x: Tensor, targets: Targets = None) -> Tensor:
        """Guided Grad-CAM ``(N, C, H, W)`` for each image's target (None: predicted class)."""
        cam = self.gradcam.compute(x, targets, upsample=True, normalize=False)  # (N, H, W)
        # The same classes for both factors, resolved once by the Grad-CAM pass.
        guided = self.guided.compute(x, self.gradcam.targets)  # (N, C, H, W)
        self.logits, self.targets = self.gradcam.logits, self.gradcam.targets
        return guided * cam[:, None]

    def close(self) -> None:
        super().close()
        self.gradcam.close()
        self.guided.close()
