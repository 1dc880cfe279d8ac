"""Binary segmentation as an engine task: images and 0/1 masks, BCE/IoU/Dice losses, IoU metrics.

``cnnlab train --model unet_mobilenet_v2 --dataset horse --task-kw loss=iou --task-kw size=128``
(``--encoder-weights PATH`` starts the encoder from MobileNetV2 weights) trains through the same
loop as the classifiers (:mod:`cnnlab.engine.tasks` says how a task plugs in), so checkpoints,
exact resumption, progress, ``history.csv``, curves and the NaN/inf checks are the engine's:

- **Data**: :func:`cnnlab.data.segmentation.load_segmentation` (decoded once, cached) and
  :func:`~cnnlab.data.segmentation.segmentation_splits`: test split first (horses: seeded by
  ``split_seed``; membranes: the last slices), then ``val_fraction`` of the rest for validation
  (a fraction, or a count when >= 1), ``subset`` keeps the first N of the remaining training
  images. Everything is resized once to ``size`` x ``size`` (masks stay binary) and kept on the
  training device as uint8.
- **Batches**: the images and masks of a batch get the same random flips
  (:func:`~cnnlab.data.segmentation.augment_pair`, the data set's recipe: ``hflip`` for horses,
  ``dihedral`` for membranes; ``--augment none`` turns it off), drawn from the engine's
  per-epoch generator, so resuming stays bit-identical.
- **Model**: a registry model of task ``segmentation`` (``unet_mobilenet_v2``, ``unet``) with
  one output channel: the logit of "foreground" per pixel.
- **Loss** (``--task-kw loss=``): ``bce`` (default), ``iou`` (the course's soft IoU loss),
  ``dice``, ``bce_dice`` (:mod:`cnnlab.segmentation.losses`).
- **Metrics**: ``train_accuracy`` is the pixel accuracy of the thresholded training outputs and
  ``train_iou`` their IoU (pooled over the epoch); validation and test report
  :func:`cnnlab.segmentation.metrics.summarize` (``val_iou``, ``test_iou``, ``test_dice``, ...:
  data-set IoU/Dice with pooled pixel counts, and ``*_per_image`` means). The best epoch is the
  one with the best validation IoU. The confusion matrix is the 2x2 pixel confusion
  (background / foreground), ``accuracy`` the pixel accuracy, ``loss`` the training loss.
- ``test_predictions.npz``: ``masks`` (N, H, W) uint8 (truth), ``predicted`` (N, H, W) uint8
  (``logit > 0``: what the metrics scored), ``probabilities`` (N, H, W) float16 and ``names`` of
  the test images.

Settings that mean nothing here are refused in one line: ``--resolution`` (use
``--task-kw size=``), label smoothing (this task's default is 0, :attr:`config_defaults`),
``--tta``, an augmentation other than default/none.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab._io import atomic_write
from cnnlab.engine.metrics import EvalResult
from cnnlab.engine.tasks import Task, one_of, task_options
from cnnlab.errors import UserError
from cnnlab.segmentation import metrics as seg_metrics
from cnnlab.segmentation.losses import LOSSES, segmentation_loss

TASK = "segmentation"


def _size(value: Any) -> int:
    from cnnlab.data.segmentation import check_size

    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer (the side of the square input, divisible by 32)")
    return check_size((value, value))[0]


def _fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError("must be a number in (0, 1)")
    return float(value)


OPTIONS = {"loss": one_of(LOSSES), "size": _size, "test_fraction": _fraction}
DEFAULTS = {"loss": "bce", "size": 128, "test_fraction": 0.2}


class BinarySegmentation(Task):
    """Horse / membrane images -> one foreground logit per pixel.

    Attributes:
        data: the :class:`cnnlab.data.segmentation.SegmentationDataset`.
        splits: its tensors on the device (:class:`~cnnlab.data.segmentation.SegmentationSplits`).
        options: the resolved ``--task-kw`` options.
        recipe: the joint augmentation (``"hflip"``, ``"dihedral"`` or ``"none"``).
    """

    name = TASK
    classes = ("background", "foreground")
    examples = "images"
    stat_names = ("pixel_accuracy", "intersection", "union")
    history_columns = ("train_iou", "val_iou", "val_dice")
    config_defaults = {"label_smoothing": 0.0}  # binary masks: nothing to smooth

    @classmethod
    def check_config(cls, config) -> None:
        task_options(config, OPTIONS)
        if config.augment not in ("default", "none"):
            raise UserError(f"--augment {config.augment!r}: segmentation uses the data set's "
                            "joint image+mask flips; give default or none")
        if config.resolution != 1.0:
            raise UserError("--resolution does not apply to segmentation: the images are resized "
                            "to one size; use --task-kw size=N (N divisible by 32)")
        if config.label_smoothing:
            raise UserError(f"--label-smoothing {config.label_smoothing}: segmentation losses "
                            "take binary masks; add --label-smoothing 0")
        if config.tta:
            raise UserError("--tta is not available for segmentation")

    def __init__(self, config, device: torch.device, data: Any = None) -> None:
        from cnnlab.data.segmentation import (
            SegmentationDataset,
            load_segmentation,
            segmentation_splits,
        )

        self.config, self.device = config, device
        self.options = {**DEFAULTS, **task_options(config, OPTIONS)}
        if data is None:
            data = load_segmentation(config.dataset, data_dir=config.data_dir,
                                     cache_dir=config.cache_dir)
        elif not isinstance(data, SegmentationDataset) or data.name != config.dataset:
            raise UserError(f"config.dataset is {config.dataset!r} but the dataset given is "
                            f"{getattr(data, 'name', type(data).__name__)!r}")
        self.data = data
        n_rest = len(data) - max(1, int(np.ceil(self.options["test_fraction"] * len(data))))
        v = config.val_fraction
        n_val = int(round(v * n_rest)) if v < 1 else int(v)
        size = (self.options["size"], self.options["size"])
        self.splits = segmentation_splits(data, size=size,
                                          test_fraction=self.options["test_fraction"],
                                          val=n_val, split_seed=config.split_seed, device=device)
        if config.subset is not None:
            sp = self.splits
            if not 0 < config.subset <= len(sp.train_images):
                raise UserError(f"subset must be in [1, {len(sp.train_images)}] for "
                                f"{data.name}, not {config.subset}")
            sp.train_images = sp.train_images[:config.subset]
            sp.train_masks = sp.train_masks[:config.subset]
            sp.names["train"] = sp.names["train"][:config.subset]
            sp.split["num_train"] = config.subset
        self.recipe = "none" if config.augment == "none" else data.augment
        self._loss = segmentation_loss(self.options["loss"])

    def split_size(self, split: str) -> int:
        return len(getattr(self.splits, f"{split}_images"))

    def model_kwargs(self) -> dict[str, Any]:
        return {"num_classes": 1, "in_chans": self.splits.in_chans}

    def batch(self, idx, generator):
        from cnnlab.data import augment_pair, normalize

        sp = self.splits
        x, m = augment_pair(sp.train_images[idx], sp.train_masks[idx], self.recipe, generator)
        return (normalize(x, sp.mean, sp.std),), m.float()

    def loss(self, outputs, targets):
        return self._loss(outputs.float(), targets, check=False)  # masks checked when loaded

    def step_stats(self, outputs, targets):
        with torch.no_grad():
            p, g = outputs > 0, targets > 0.5
            pixels = p[0].numel()
            return torch.stack([(p == g).sum(dtype=torch.float64) / pixels,
                                (p & g).sum(dtype=torch.float64),
                                (p | g).sum(dtype=torch.float64)])

    def train_metrics(self, sums, seen):
        union = float(sums[2])
        return {"train_accuracy": float(sums[0]) / seen,
                "train_iou": float(sums[1]) / union if union else 1.0}

    @torch.no_grad()
    def predict(self, model, images: torch.Tensor, *, batch_size: int, amp: bool = False,
                channels_last: bool = False) -> torch.Tensor:
        """``(N, 1, H, W)`` float32 logits for uint8 images of this data set."""
        from cnnlab.data import normalize

        sp = self.splits
        was_training = model.training
        model.eval()
        outs = []
        try:
            for s in range(0, len(images), batch_size):
                x = normalize(images[s:s + batch_size], sp.mean, sp.std)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with (torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
                      if amp else contextlib.nullcontext()):
                    outs.append(model(x).float())
        finally:
            model.train(was_training)
        return torch.cat(outs)

    def evaluate(self, model, split, *, batch_size, amp, channels_last) -> EvalResult:
        sp = self.splits
        images, masks = getattr(sp, f"{split}_images"), getattr(sp, f"{split}_masks")
        if len(images) == 0:
            raise UserError(f"cannot evaluate on an empty {split} split")
        logits = self.predict(model, images, batch_size=min(batch_size, 64), amp=amp,
                              channels_last=channels_last)
        target = masks.to(logits.dtype)
        counts = seg_metrics.confusion_counts(logits, target)
        summary = seg_metrics.summarize(counts)
        total = counts.total()
        confusion = torch.tensor([[int(total.tn[0]), int(total.fp[0])],
                                  [int(total.fn[0]), int(total.tp[0])]], dtype=torch.int64)
        metrics = {k: v for k, v in summary.items() if k != "images"}
        return EvalResult(loss=float(self._loss(logits, target, check=False)),
                          accuracy=summary["pixel_accuracy"], confusion=confusion,
                          logits=logits, metrics=metrics)

    def score(self, result: EvalResult) -> float:
        return result.metrics["iou"]

    def write_predictions(self, path: Path, result: EvalResult) -> None:
        logits = result.logits[:, 0]
        probs = torch.sigmoid(logits).cpu().numpy().astype(np.float16)
        predicted = (logits > 0).to(torch.uint8).cpu().numpy()  # exactly what was scored
        masks = self.splits.test_masks[:, 0].cpu().numpy()
        buf = io.BytesIO()
        np.savez_compressed(buf, masks=masks, predicted=predicted, probabilities=probs,
                            names=np.array(self.splits.names["test"]))
        atomic_write(path, buf.getvalue())

    def data_info(self) -> dict[str, Any]:
        sp, ds = self.splits, self.data
        return {"name": ds.name, "task": self.name, "classes": list(self.classes),
                "outputs": 1, "in_chans": sp.in_chans, "builder": {}, "mean": list(sp.mean),
                "std": list(sp.std), "image_size": list(sp.image_size),
                "foreground": ds.foreground, "augment": self.recipe, **self.options,
                "split": sp.split, "num_train": self.split_size("train"),
                "num_val": self.split_size("val"), "num_test": self.split_size("test"),
                "source": ds.source}
