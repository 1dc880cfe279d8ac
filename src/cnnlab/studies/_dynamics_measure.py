"""Measurements of the training-dynamics study: initialisation, per-layer statistics, filters.

* :func:`reinit_` re-initialises the weights of every conv and linear layer with one of the
  schemes of :data:`INIT_SCHEMES` (``torch.nn.init``), because the model zoo always builds with its
  own (torchvision's) initialisation.
* :class:`ConvStack` is the network of the "initialisation at depth" section: ``depth`` 3x3 conv
  layers of constant width at constant resolution, so that every layer has the same fan-in and
  fan-out and He et al.'s variance recursion applies to it as written.
* :func:`layer_stats` measures the standard deviation of each layer's output and of the loss
  gradient with respect to it, on a real batch; :func:`theory_std` is He et al.'s prediction.
* :func:`filter_distance` measures how different the filters of a layer are (symmetry).
* The callbacks :class:`GradNormRecorder`, :class:`FilterRecorder` and :class:`TestErrorRecorder`
  log these quantities during a :func:`cnnlab.engine.train` run; their state is saved in the
  engine's checkpoints, so an interrupted run resumes with its logs intact.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnlab.engine.callbacks import Callback
from cnnlab.errors import UserError
from cnnlab.models import resolve_act, resolve_norm

if TYPE_CHECKING:
    from cnnlab.engine.trainer import Trainer

# name -> what the report calls it. "default" leaves the model zoo's own initialisation.
INIT_SCHEMES: dict[str, str] = {
    "zero": "zero",
    "constant": "constant 1/fan_in",
    "normal": "normal(0, 0.01)",
    "xavier": "Xavier/Glorot",
    "he": "He/Kaiming",
    "default": "model default (He, fan_out)",
}

_WEIGHTED = (nn.Conv2d, nn.Linear)


def fans(weight: Tensor) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a conv ``(C_out, C_in / groups, kH, kW)`` or linear ``(out, in)``
    weight, with torch.nn.init's definition (the receptive field times the channels)."""
    receptive = math.prod(weight.shape[2:])
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def init_variance(scheme: str, fan_in: int, fan_out: int) -> float:
    """The variance of one weight under ``scheme`` (0 for zero and constant init).

    Xavier/Glorot (2010): ``2 / (fan_in + fan_out)``; He/Kaiming (2015, ReLU gain, fan-in mode):
    ``2 / fan_in``; normal: ``0.01 ** 2``.
    """
    table = {"zero": 0.0, "constant": 0.0, "normal": 0.01 ** 2,
             "xavier": 2.0 / (fan_in + fan_out), "he": 2.0 / fan_in}
    if scheme not in table:
        raise UserError(f"no analytic weight variance for init {scheme!r}; expected one of "
                        f"{', '.join(table)}")
    return table[scheme]


def weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The conv and linear layers of ``model``, in registration (= forward) order, with names."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, _WEIGHTED)]


@torch.no_grad()
def reinit_(model: nn.Module, scheme: str, *, seed: int = 0) -> nn.Module:
    """Re-initialise every conv and linear weight of ``model`` in place; biases become 0.

    Args:
        model: any module; norm layers get weight 1 and bias 0.
        scheme: a key of :data:`INIT_SCHEMES`: ``"zero"``, ``"constant"`` (every weight
            ``1 / fan_in``, so each filter averages its inputs and all filters of a layer are
            equal), ``"normal"`` (N(0, 0.01^2)), ``"xavier"`` (Glorot normal, gain 1),
            ``"he"`` (Kaiming normal, fan-in, ReLU gain) or ``"default"`` (leave the model's own).
        seed: seeds the random schemes (a private generator: the global RNG is untouched).

    Returns:
        ``model``.
    """
    if scheme not in INIT_SCHEMES:
        raise UserError(f"unknown init {scheme!r}; expected one of {', '.join(INIT_SCHEMES)}")
    if scheme == "default":
        return model
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for m in model.modules():
        if isinstance(m, _WEIGHTED):
            w = m.weight
            # draw on the CPU with the seeded generator, then copy: the same weights on any device
            cpu = torch.empty(w.shape, dtype=w.dtype)
            if scheme == "zero":
                cpu.zero_()
            elif scheme == "constant":
                cpu.fill_(1.0 / fans(w)[0])
            elif scheme == "normal":
                nn.init.normal_(cpu, 0.0, 0.01, generator=gen)
            elif scheme == "xavier":
                nn.init.xavier_normal_(cpu, generator=gen)
            else:
                nn.init.kaiming_normal_(cpu, mode="fan_in", nonlinearity="relu", generator=gen)
            w.copy_(cpu)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            m.weight.fill_(1.0)
            m.bias.zero_()
    return model


class ConvStack(nn.Module):
    """``depth`` blocks ``conv 3x3 -> norm -> act`` at constant width and resolution, then
    global average pooling and a Linear classifier.

    Every conv but the first maps ``width -> width`` channels with stride 1, so fan-in = fan-out
    = ``9 * width``: He et al.'s recursion holds with the same factor at every layer. ``blocks[i]``
    is ``Sequential(conv, norm, act)``; ``blocks[i][1]`` (the norm, ``nn.Identity`` without one)
    outputs the pre-activation ``y_i`` that :func:`layer_stats` measures.
    Shapes: ``(N, in_chans, H, W) -> (N, num_classes)``.

    Args:
        depth: number of conv layers (>= 1).
        width: channels of every conv layer.
        in_chans: input channels.
        num_classes: classifier outputs.
        norm_layer: ``"none"`` (convs get a bias) or ``"bn"``.
        act_layer: activation name, e.g. ``"relu"``, ``"sigmoid"``.
    """

    def __init__(self, depth: int, width: int, in_chans: int = 1, num_classes: int = 10,
                 norm_layer: str = "none", act_layer: str = "relu") -> None:
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise UserError(f"depth must be a positive integer, got {depth!r}")
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise UserError(f"width must be a positive integer, got {width!r}")
        norm, act = resolve_norm(norm_layer), resolve_act(act_layer)
        self.blocks = nn.Sequential(*(
            nn.Sequential(
                nn.Conv2d(in_chans if i == 0 else width, width, 3, 1, 1, bias=norm is None),
                norm(width) if norm is not None else nn.Identity(),
                act(),
            ) for i in range(depth)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, num_classes)

    @property
    def preactivations(self) -> list[nn.Module]:
        """The modules whose outputs are the pre-activations ``y_1 ... y_depth``."""
        return [b[1] for b in self.blocks]

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(x)  # (N, width, H, W)
        return self.classifier(torch.flatten(self.pool(x), 1))  # (N, num_classes)


@dataclass(frozen=True)
class LayerStats:
    """Per-layer standard deviations of one forward/backward pass.

    Attributes:
        act_std: std of each watched module's output (over batch, channels and positions).
        grad_std: std of the gradient of the (mean) loss with respect to that output.
        act_zero: whether the output was exactly zero everywhere.
        grad_zero: whether the gradient was exactly zero everywhere.
        input_sq: ``E[x^2]`` of the network input (the start of the forward recursion).
    """

    act_std: list[float]
    grad_std: list[float]
    act_zero: list[bool]
    grad_zero: list[bool]
    input_sq: float


@contextlib.contextmanager
def _capture_outputs(modules: Sequence[nn.Module]) -> Iterator[list[Tensor | None]]:
    """Forward hooks that keep each module's (last) output; removed on exit."""
    outputs: list[Tensor | None] = [None] * len(modules)
    handles = []
    for i, m in enumerate(modules):
        def hook(_module, _inputs, output, i=i):
            outputs[i] = output
        handles.append(m.register_forward_hook(hook))
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()


def layer_stats(model: nn.Module, modules: Sequence[nn.Module], images: Tensor,
                labels: Tensor) -> LayerStats:
    """Std of each module's output and of d(loss)/d(output), for one batch, in training mode.

    The loss is the mean cross-entropy of ``model(images)``; its gradients with respect to the
    captured outputs come from ``torch.autograd.grad``, so the parameters' ``.grad`` fields are
    left untouched. The model is put in training mode (BatchNorm uses the batch statistics, as
    in the first training step) and its mode is restored afterwards.

    Args:
        model: the network ``(N, C, H, W) -> (N, K)``.
        modules: submodules of ``model`` to watch, e.g. :attr:`ConvStack.preactivations`.
        images: ``(N, C, H, W)`` float, normalised, in the model's dtype and device.
        labels: ``(N,)`` int64.

    Returns:
        A :class:`LayerStats` with one entry per module.
    """
    was_training = model.training
    model.train()
    try:
        with _capture_outputs(modules) as outputs:
            loss = F.cross_entropy(model(images), labels)
        missing = [i for i, o in enumerate(outputs) if o is None]
        if missing:
            raise UserError(f"modules {missing} of the {len(modules)} to watch were not called "
                            "in the forward pass; pass submodules of the model")
        grads = torch.autograd.grad(loss, outputs, allow_unused=False)
    finally:
        model.train(was_training)
    with torch.no_grad():
        return LayerStats(
            act_std=[float(o.double().std()) for o in outputs],
            grad_std=[float(g.double().std()) for g in grads],
            act_zero=[bool((o == 0).all()) for o in outputs],
            grad_zero=[bool((g == 0).all()) for g in grads],
            input_sq=float(images.double().pow(2).mean()),
        )


def theory_std(layers: Sequence[tuple[int, int, float]], input_sq: float | Tensor,
               top_grad_std: float, kernel_size: int = 3) -> tuple[list[float], list[float]]:
    """He et al. (2015)'s prediction of the per-layer activation and gradient std of a ReLU net.

    Forward (their Eq. 7), for the pre-activations ``y_l``: ``Var[y_1] = n_1 Var[w_1] E[x_0^2]``
    and ``Var[y_l] = n_l Var[w_l] Var[y_{l-1}] / 2`` (the ReLU keeps half of a symmetric
    distribution's second moment), ``n_l`` the fan-in. Backward (their Eq. 10):
    ``Var[dL/dy_l] = n'_{l+1} Var[w_{l+1}] Var[dL/dy_{l+1}] / 2``, ``n'`` the fan-out, started
    from the measured gradient std of the last layer (the loss sets that scale). Assumes zero
    biases, weights independent of the activations and of each other, no normalisation.

    With ``input_sq`` a per-pixel map ``(H, W)`` of ``E[x_0^2]``, the same recursion is run per
    position for stride-1 "same" convolutions with zero padding (as in :class:`ConvStack`): a
    border pixel sums fewer than ``k * k`` taps, so the variance leaks out at the edges, which
    the textbook formula (a scalar ``input_sq``, every tap present) ignores.

    Args:
        layers: ``(fan_in, fan_out, Var[w])`` of each conv layer, input to output.
        input_sq: ``E[x_0^2]`` of the network input: a number, or an ``(H, W)`` map.
        top_grad_std: the gradient std measured at the last layer.
        kernel_size: ``k`` of the square kernels (used with a map only).

    Returns:
        ``(act_std, grad_std)``, one value per layer (the root of the mean variance over
        positions for a map).
    """
    if isinstance(input_sq, Tensor):
        box = torch.ones(1, 1, kernel_size, kernel_size, dtype=torch.float64)

        def spread(v: Tensor) -> Tensor:  # (1, 1, H, W): sum over the taps that exist
            return F.conv2d(v, box, padding=kernel_size // 2) / kernel_size ** 2

        first = input_sq.to(torch.float64)[None, None]  # (1, 1, H, W)
    else:
        def spread(v: Tensor) -> Tensor:  # every tap exists: the textbook recursion
            return v

        first = torch.tensor(float(input_sq), dtype=torch.float64)
    act_var: list[Tensor] = []
    for i, (fan_in, _, var_w) in enumerate(layers):
        prev = first if i == 0 else act_var[-1] / 2
        act_var.append(fan_in * var_w * spread(prev))
    grad_var = [torch.full_like(first, top_grad_std ** 2)]
    for _, fan_out, var_w in reversed(layers[1:]):
        grad_var.append(fan_out * var_w * spread(grad_var[-1]) / 2)
    grad_var.reverse()
    return ([math.sqrt(float(v.mean())) for v in act_var],
            [math.sqrt(float(v.mean())) for v in grad_var])


@torch.no_grad()
def filter_distance(weight: Tensor) -> dict[str, float]:
    """How different the filters (output channels) of one layer are.

    Args:
        weight: ``(C_out, ...)``: a conv ``(C_out, C_in, kH, kW)`` or linear ``(out, in)`` weight.

    Returns:
        ``mean_distance``: the mean L2 distance over all pairs of filters; ``mean_norm``: the
        mean L2 norm of a filter; ``relative``: their ratio (0 when every filter is 0; about
        ``sqrt(2)`` for independent random filters, 0 for identical ones); ``max_distance``.
    """
    flat = weight.detach().double().flatten(1)  # (C_out, fan_in)
    if flat.shape[0] < 2:
        raise UserError(f"filter distance needs at least 2 filters, got weight shape "
                        f"{tuple(weight.shape)}")
    d = torch.pdist(flat)  # (C_out * (C_out - 1) / 2,)
    mean_norm = float(flat.norm(dim=1).mean())
    mean_d = float(d.mean())
    return {"mean_distance": mean_d, "max_distance": float(d.max()), "mean_norm": mean_norm,
            "relative": mean_d / mean_norm if mean_norm > 0 else 0.0}


# ---------------------------------------------------------------------------------- callbacks
class GradNormRecorder(Callback):
    """L2 norm of the loss gradient of every conv/linear weight, every ``every`` steps.

    Read in ``on_after_backward`` (the gradients of the current step, before the optimiser uses
    them). Norms stay on the training device until the state is saved or read, so a GPU run
    does not wait for them. ``steps[i]`` is the 0-based global step of ``norms[i]``; a layer
    without a gradient (unused in the forward pass) records 0.

    Args:
        every: record one step in ``every`` (the first step is always recorded).
    """

    def __init__(self, every: int = 1) -> None:
        if every < 1:
            raise UserError(f"every must be >= 1, got {every}")
        self.every = every
        self.layers: list[str] = []
        self.numel: list[int] = []
        self.steps: list[int] = []
        self._host: list[list[float]] = []  # rows already read back
        self._pending: list[Tensor] = []  # rows still on the device, (layers,) each

    def on_train_begin(self, run: Trainer) -> None:
        layers = weighted_layers(run.model)
        self.layers = [name for name, _ in layers]
        self.numel = [m.weight.numel() for _, m in layers]

    def on_after_backward(self, run: Trainer) -> None:
        if run.step % self.every:
            return
        zero = torch.zeros((), device=run.device)
        grads = [m.weight.grad for _, m in weighted_layers(run.model)]
        self._pending.append(torch.stack([zero if g is None else g.detach().float().norm()
                                          for g in grads]))
        self.steps.append(run.step)

    @property
    def norms(self) -> list[list[float]]:
        """``[recorded step][layer]`` gradient norms (reads pending ones back from the device)."""
        if self._pending:
            self._host += torch.stack(self._pending).cpu().double().tolist()
            self._pending = []
        return self._host

    def state_dict(self) -> dict[str, Any]:
        return {"every": self.every, "layers": self.layers, "numel": self.numel,
                "steps": list(self.steps), "norms": [list(r) for r in self.norms]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.every, self.layers, self.numel = state["every"], state["layers"], state["numel"]
        self.steps = list(state["steps"])
        self._host, self._pending = [list(r) for r in state["norms"]], []


class FilterRecorder(Callback):
    """Per-layer filter distance (:func:`filter_distance`) and distance travelled from the
    initial weights, at the start, every ``every`` steps and at the end of every epoch.

    ``records[i]`` is ``{"step": s, "layers": [filter_distance(...) + {"change": ...} per conv
    layer]}`` where ``change`` is ``||W - W_0||`` (the L2 norm of the change since step 0); step
    0 is the initialisation, the last record the final weights (recorded at the end of the last
    epoch, so it is in the run's final checkpoint).
    """

    def __init__(self, every: int = 1) -> None:
        if every < 1:
            raise UserError(f"every must be >= 1, got {every}")
        self.every = every
        self.layers: list[str] = []
        self.records: list[dict[str, Any]] = []
        self._initial: list[Tensor] = []  # W_0 of every conv layer, on the CPU

    def _record(self, run: Trainer) -> None:
        if self.records and self.records[-1]["step"] == run.step:
            return
        convs = [(n, m) for n, m in weighted_layers(run.model) if isinstance(m, nn.Conv2d)]
        if not self._initial:
            self._initial = [m.weight.detach().double().cpu().clone() for _, m in convs]
        self.layers = [n for n, _ in convs]
        self.records.append({"step": run.step, "layers": [
            {**filter_distance(m.weight),
             "change": float((m.weight.detach().double().cpu() - w0).norm())}
            for (_, m), w0 in zip(convs, self._initial, strict=True)]})

    def on_train_begin(self, run: Trainer) -> None:
        if run.step == 0:
            self._record(run)

    def on_batch_end(self, run: Trainer) -> None:
        if run.step % self.every == 0:
            self._record(run)

    def on_epoch_end(self, run: Trainer) -> None:
        self._record(run)

    def state_dict(self) -> dict[str, Any]:
        return {"every": self.every, "layers": self.layers, "records": self.records,
                "initial": self._initial}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.every, self.layers = state["every"], state["layers"]
        self.records = list(state["records"])
        self._initial = list(state["initial"])


class TestErrorRecorder(Callback):
    """The test-set error and loss after every epoch (the engine tests only at the end).

    ``rows[i]`` is ``{"epoch": e, "test_error": ..., "test_loss": ...}`` for epoch ``e``
    (1-based), measured on the run's test split with the weights evaluation uses.
    """

    __test__ = False  # a name pytest would otherwise try to collect

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_epoch_end(self, run: Trainer) -> None:
        res = run.evaluate(run.splits.test_images, run.splits.test_labels)
        self.rows.append({"epoch": run.epoch, "test_error": 1.0 - res.accuracy,
                          "test_loss": res.loss})

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state["rows"])
