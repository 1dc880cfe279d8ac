"""Grad-CAM++ (Chattopadhay, Sarkar, Howlader, Balasubramanian, WACV 2018, arXiv:1710.11063)."""

from __future__ import annotations

import torch
from torch import Tensor

from cnnlab.explain.base import BaseCAM


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++: gradient weights re-weighted pixel by pixel by closed-form coefficients.

    The paper (eq. 19) explains ``Y^c = exp(S^c)`` with ``S^c`` the class logit. For a network that
    is piecewise linear above the layer, the derivatives of ``Y^c`` with respect to ``A^k_ij`` are
    ``exp(S^c) g``, ``exp(S^c) g^2`` and ``exp(S^c) g^3`` with ``g = dS^c / dA^k_ij``, and::

        a_ij^kc = g^2 / (2 g^2 + sum_ab A^k_ab * g^3)       (0 where the denominator is 0)
        w_k^c   = exp(S^c) * sum_ij a_ij^kc * ReLU(g)
        L^c     = ReLU( sum_k w_k^c A^k )

    ``exp(S^c)`` cancels in ``a`` and only scales an image's map by a positive constant, which
    normalisation removes and which overflows for large logits, so it is left out, as in the
    common implementations (pytorch-grad-cam's ``GradCAMPlusPlus``, which also adds 1e-6 to the
    denominator; here a zero denominator gives ``a = 0`` as in the authors' code). The derivation
    assumes ``A >= 0``: use a layer after its ReLU (the default layer is).
    """

    def _channel_weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        g2 = gradients.pow(2)
        g3 = g2 * gradients
        sum_a = activations.sum(dim=(2, 3), keepdim=True)  # (N, K, 1, 1)
        denominator = 2 * g2 + sum_a * g3
        nonzero = denominator != 0
        alpha = torch.where(nonzero, g2 / torch.where(nonzero, denominator, torch.ones_like(g2)), 0)
        return (alpha * torch.relu(gradients)).sum(dim=(2, 3))  # (N, K)
