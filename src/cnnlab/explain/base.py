"""The template every class-activation-map (CAM) method shares: capture A and dy_c/dA, weigh, ReLU.

A CAM method only says how to turn the target layer's activations ``A`` ``(N, K, h, w)`` and the
gradients ``dy_c/dA`` of each image's target logit into channel weights ``(N, K)``; this base class
does the rest:

- **Hooks exist only inside** :meth:`BaseCAM.compute` (a forward hook on the target layer, removed
  in a ``finally``), so no hook outlives a call, whether it returns or raises. The class is also a
  context manager (``with GradCAM(model, layer) as cam:``) whose exit drops the captured tensors.
- **In-place safe**: the hook keeps its own copy of the layer's output as ``A`` and hands the rest
  of the network a clone, so a later ``ReLU(inplace=True)`` cannot overwrite the activations that
  the map is made of (pytorch-grad-cam's CPU fault).
- **Gradients by** ``torch.autograd.grad`` with respect to ``A`` only: parameters' ``.grad`` are
  never touched, the backward pass stops at the target layer, and the graph is freed on return.
  The layers below the target run without recording a graph at all.
- **Eval mode** for the computation (see :func:`cnnlab.explain._common.eval_mode`), each module's
  train/eval flag restored afterwards; BatchNorm running statistics are never updated.
- **One backward pass for the batch**: the sum of each image's target logit (pre-softmax).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cnnlab.errors import UserError
from cnnlab.explain import maps as _maps
from cnnlab.explain._common import (
    Explainer,
    Targets,
    check_logits,
    eval_mode,
    prepare_images,
    resolve_targets,
    selected_score,
)
from cnnlab.explain.layers import default_target_layer, resolve_layer


class BaseCAM(Explainer):
    """Template for CAM methods over one target layer with a spatial output ``(N, K, h, w)``.

    Args:
        model: a classifier returning logits ``(N, num_classes)``.
        target_layer: a submodule, its dotted name (``"features.18"``), or None for the default
            (:func:`cnnlab.explain.layers.default_target_layer`, resolved on the first call).

    After each :meth:`compute`, ``logits`` ``(N, num_classes)`` and ``targets`` ``(N,)`` hold the
    model's outputs and the classes that were explained (detached).
    """

    def __init__(self, model: nn.Module, target_layer: nn.Module | str | None = None) -> None:
        super().__init__(model)
        self.layer_name: str | None = None
        self.layer: nn.Module | None = None
        if target_layer is not None:
            self.layer_name, self.layer = resolve_layer(model, target_layer)

    # -- what a method defines ------------------------------------------------------------------
    def _channel_weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        """Channel weights ``(N, K)`` from ``A`` and ``dy_c/dA``, both ``(N, K, h, w)``."""
        raise NotImplementedError

    # -- the template -------------------------------------------------------------------------
    def compute(
        self, x: Tensor, targets: Targets = None, *, upsample: bool = True, normalize: bool = True
    ) -> Tensor:
        """The class activation maps of a batch.

        Args:
            x: images ``(N, C, H, W)`` (moved to the model's device).
            targets: None for each image's predicted class, an int for the same class for all
                images, or one class index per image (length N).
            upsample: bilinear-upsample the maps to ``(H, W)``
                (:func:`cnnlab.explain.maps.upsample`).
            normalize: per-image min-max to [0, 1], constant maps to 0
                (:func:`cnnlab.explain.maps.normalize`).

        Returns:
            Maps ``(N, H, W)``, or ``(N, h, w)`` at the layer's resolution when ``upsample=False``.
            With ``upsample=False, normalize=False``: the raw map ``ReLU(sum_k w_k^c A^k)``.

        Raises:
            UserError: bad images or targets, a layer that does not run exactly once per forward
                pass, that has no spatial output, or that does not influence the logits.
        """
        x = prepare_images(self.model, x)
        if self.layer is None:
            self.layer_name, self.layer = resolve_layer(
                self.model, default_target_layer(self.model, x)
            )
        activations, gradients = self._activations_and_gradients(x, targets)
        weights = self._channel_weights(activations, gradients)  # (N, K)
        cam = torch.relu((weights[:, :, None, None] * activations).sum(dim=1))  # (N, h, w)
        if upsample:
            cam = _maps.upsample(cam, tuple(x.shape[-2:]))
        if normalize:
            cam = _maps.normalize(cam)
        return cam

    def _activations_and_gradients(self, x: Tensor, targets: Targets) -> tuple[Tensor, Tensor]:
        """``A`` and ``d(sum_n y_{n, c_n}) / dA``, both ``(N, K, h, w)`` and detached."""
        captured: list[Tensor] = []

        def keep_output(module: nn.Module, inputs: object, output: object) -> Tensor:
            if not isinstance(output, Tensor) or output.ndim != 4:
                shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
                raise UserError(
                    f"layer {self.layer_name!r} outputs {shape}; a CAM needs a layer with a "
                    "spatial output (N, C, H, W), for example a conv layer or block"
                )
            if captured:
                raise UserError(
                    f"layer {self.layer_name!r} runs more than once per forward pass (a shared "
                    "module); choose a layer that runs once"
                )
            # Record the graph from here on only: the layers below need no gradients.
            torch.set_grad_enabled(True)
            # Our own copy is A; the network continues on a clone, so in-place ops downstream
            # (ReLU(inplace=True)) modify the clone and never the activations of the map.
            activation = output.detach().clone().requires_grad_(True)
            captured.append(activation)
            return activation.clone()

        handle = self.layer.register_forward_hook(keep_output)
        try:
            with torch.inference_mode(False), eval_mode(self.model):
                with torch.no_grad():  # its exit also restores the grad mode the hook switched on
                    logits = check_logits(self.model(x))
                if not captured:
                    raise UserError(f"layer {self.layer_name!r} did not run in the forward pass")
                target = resolve_targets(targets, logits)
                if not logits.requires_grad:
                    raise UserError(f"the logits do not depend on layer {self.layer_name!r}")
                (gradients,) = torch.autograd.grad(
                    selected_score(logits, target), captured[0], allow_unused=True
                )
            if gradients is None:
                raise UserError(f"the logits do not depend on layer {self.layer_name!r}")
            self.logits, self.targets = logits.detach(), target
            return captured[0].detach(), gradients
        finally:
            handle.remove()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={type(self.model).__name__}, layer={self.layer_name!r})"
        )
