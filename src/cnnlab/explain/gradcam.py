"""Grad-CAM (Selvaraju et al., ICCV 2017, arXiv:1610.02391)."""

from __future__ import annotations

from torch import Tensor

from cnnlab.explain.base import BaseCAM


class GradCAM(BaseCAM):
    """Grad-CAM: channel weights are the spatially averaged gradients of the class logit.

    For image n with target class c and activations ``A^k`` ``(h, w)`` of the target layer::

        alpha_k^c = 1 / (h * w) * sum_ij  d y_c / d A^k_ij        (y_c: the pre-softmax logit)
        L^c       = ReLU( sum_k alpha_k^c A^k )                    (h, w)

    Example::

        with GradCAM(model, "features.18") as cam:
            maps = cam.compute(images)          # (N, H, W) in [0, 1], predicted classes
            raw = cam.compute(images, [3, 5], upsample=False, normalize=False)  # (N, h, w)
    """

    def _channel_weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        return gradients.mean(dim=(2, 3))  # (N, K)
