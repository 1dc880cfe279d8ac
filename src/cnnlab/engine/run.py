"""Reading a finished (or interrupted) run folder back: the model, its config and data settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab import _io
from cnnlab._io import one_line
from cnnlab.data import Splits
from cnnlab.engine import checkpoint as ckpt_io
from cnnlab.engine.config import TrainConfig, read_run_file
from cnnlab.engine.metrics import predict
from cnnlab.errors import DataError, DataNotFoundError, UserError

WEIGHTS = ("final", "best", "checkpoint")


@dataclass
class LoadedRun:
    """A run folder read back by :func:`load_run`.

    Attributes:
        model: the network in eval mode on the requested device.
        config: the run's :class:`TrainConfig`.
        data: the data settings the model expects: ``classes``, ``mean``/``std`` (per channel,
            [0, 1] units), ``image_size`` ``(H, W)`` after the resolution multiplier,
            ``in_chans``, ``name``.
        metrics: the contents of ``metrics.json`` (None if the run did not finish).
        weights: which weights were loaded ("final", "best" or "checkpoint").
        path: the run folder.
    """

    model: nn.Module
    config: TrainConfig
    data: dict[str, Any]
    metrics: dict[str, Any] | None
    weights: str
    path: Path

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.data["classes"])

    def splits(self, device: str | torch.device = "cpu") -> Splits:
        """The same train/val/test tensors the run used (subset, split and resolution applied)."""
        from cnnlab.data import load_dataset, make_splits

        c = self.config
        ds = load_dataset(c.dataset, data_dir=c.data_dir, cache_dir=c.cache_dir)
        return make_splits(ds, val_fraction=c.val_fraction, subset=c.subset,
                           split_seed=c.split_seed, resolution=c.resolution, device=device)

    def predict(self, images: torch.Tensor, **kw) -> torch.Tensor:
        """Logits ``(N, K)`` for uint8 images ``(N, C, H, W)`` at ``data["image_size"]``."""
        return predict(self.model, images, mean=self.data["mean"], std=self.data["std"], **kw)


def load_run(run_dir: str | Path, device: str | torch.device = "cpu", *, weights: str = "final",
             model: nn.Module | None = None) -> LoadedRun:
    """Load a trained model and its settings from a ``cnnlab train`` output folder.

    Args:
        run_dir: the ``--out`` folder.
        device: where to put the model.
        weights: "final" (default): the weights at the end of training, i.e. those that
            ``metrics.json``'s ``test_accuracy`` was measured with (EMA weights when the run used
            ``--ema``); "best": the epoch with the best validation accuracy (``best.pt``, only
            when the run had a validation split); "checkpoint": the latest checkpoint of an
            unfinished run (raw, non-EMA weights).
        model: a module to load the weights into, for runs trained on a model given to
            ``train(..., model=...)`` rather than built from the registry.

    Returns:
        A :class:`LoadedRun` with the model in eval mode.

    Raises:
        DataNotFoundError: the folder or the requested weights file does not exist.
        UserError: an unknown ``weights`` choice, or weights that do not fit the model.
    """
    path = Path(run_dir)
    if weights not in WEIGHTS:
        raise UserError(f"weights must be one of {list(WEIGHTS)}, not {weights!r}")
    if path.is_file():
        raise UserError(f"{path} is a file; give the run folder (a 'cnnlab train --out' folder)")
    if not (path / "config.json").is_file():
        raise DataNotFoundError(f"{path} is not a cnnlab run folder (no config.json)")
    config, data = read_run_config(path)
    file = {"final": ckpt_io.FINAL, "best": ckpt_io.BEST, "checkpoint": ckpt_io.CHECKPOINT}[weights]
    if not (path / file).is_file():
        hint = {"final": "the run has not finished; use weights='checkpoint'",
                "best": "the run had no validation split",
                "checkpoint": "the run saved no checkpoint"}[weights]
        raise DataNotFoundError(f"{path / file} does not exist ({hint})")
    if weights == "checkpoint":
        state = ckpt_io.load_checkpoint(path / file, device)["model"]
        bad = ckpt_io.non_finite(state)
        if bad is not None:
            raise DataError(f"{path / file} holds NaN/inf in {bad}: the run diverged")
    else:
        state = ckpt_io.load_weights(path / file, device)
    if model is None:
        # "outputs": a task whose model has another output width than its class count
        # (binary segmentation: one logit per pixel, two classes in the pixel confusion)
        model = create_model(config, num_classes=data.get("outputs", len(data["classes"])),
                             in_chans=data["in_chans"],
                             **data.get("builder", {}))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # missing/unexpected keys or shape mismatches
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise UserError(f"{path / file} does not fit the {config.model!r} model as cnnlab defines "
                        f"it now (trained with another version of the model?): "
                        f"{one_line(first, 200)}") from exc
    metrics_file = path / "metrics.json"
    metrics = _io.read_json(metrics_file, "metrics file") if metrics_file.is_file() else None
    return LoadedRun(model=model.to(device).eval(), config=config, data=data, metrics=metrics,
                     weights=weights, path=path)


def read_run_config(run_dir: str | Path) -> tuple[TrainConfig, dict[str, Any]]:
    """A run folder's validated :class:`TrainConfig` and its data settings (``config.json``).

    Raises:
        DataNotFoundError: no ``config.json``.
        DataError: ``config.json`` is damaged (not JSON, missing entries, bad values).
    """
    file = Path(run_dir) / "config.json"
    saved = read_run_file(file)
    config = TrainConfig.from_dict(saved["config"], source=file)
    data = saved.get("data")
    need: dict[str, type] = {"classes": list, "in_chans": int}
    if not isinstance(data, dict) or data.get("task", "image_classification") == \
            "image_classification":  # runs from before tasks name none: images
        need.update({"mean": list, "std": list, "image_size": list})
    else:
        need["builder"] = dict  # the data set's builder arguments, e.g. vocab_size
    if not isinstance(data, dict) or any(not isinstance(data.get(k), t) for k, t in need.items()):
        raise DataError(f"{file}: the 'data' entry is missing or damaged (it needs "
                        f"{', '.join(need)}); the file is not one a run wrote")
    return config, data


def create_model(config: TrainConfig, *, num_classes: int, in_chans: int, **data_kwargs: Any
                 ) -> nn.Module:
    """The registry model ``config`` describes (name, width, ``--model-kw`` options).

    ``data_kwargs`` are further builder arguments the data set fixes (``vocab_size`` for text).

    Raises:
        UserError: an unknown model, a ``--model-kw`` that repeats an argument cnnlab sets, or
            one the model rejects (one line naming it).
    """
    from cnnlab import models

    info = models.model_info(config.model)
    kwargs = dict(config.model_kwargs)
    reserved = sorted(set(kwargs) & ({"num_classes", "in_chans", "width"} | set(data_kwargs)))
    if reserved:
        raise UserError(f"--model-kw {', '.join(reserved)}: set by cnnlab from the data set and "
                        "--width; remove it")
    kwargs.update(data_kwargs)
    if info.supports_width:
        kwargs["width"] = config.width
    elif config.width != 1.0:
        raise UserError(f"{config.model} has no width multiplier; leave --width at 1")
    try:
        return models.create(config.model, num_classes=num_classes, in_chans=in_chans, **kwargs)
    except UserError:
        raise
    except (TypeError, ValueError) as exc:
        given = ", ".join(f"{k}={v!r}" for k, v in config.model_kwargs.items())
        raise UserError(f"--model-kw {given}: {config.model} cannot be built with it "
                        f"({one_line(exc, 160)})") from None
