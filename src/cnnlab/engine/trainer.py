"""The training loop: GPU-resident data, batched augmentation, checkpoints that resume exactly.

What is trained on comes from a :class:`cnnlab.engine.tasks.Task`, chosen by the data set: the
data, each step's batch, the loss, the per-step statistics and the evaluation (image
classification for CIFAR-10 and Fashion-MNIST, text classification for SST-5; see
:mod:`cnnlab.engine.tasks` for how to add one). This loop is the same for every task.

Design (why it is fast on a GPU and exact on the CPU):

- Image tasks: the whole (subset of the) data set lives on the training device as uint8
  ``(N, C, H, W)``; each step gathers a batch by index and augments + normalises it with a few
  tensor ops on that device (:class:`cnnlab.data.Augment`). No DataLoader, no host-to-device
  copies per step.
- Running loss/accuracy sums and per-step losses stay on the device; the host reads them only
  every ``log_every_s`` seconds and at the end of an epoch (each read waits for the GPU). On the
  CPU reading is free, so the loss is checked for NaN/inf after every step.
- Every random stream is re-seeded at the start of each epoch from ``(seed, epoch)``: the shuffle
  order, the augmentation generator and torch's global generator (dropout). A checkpoint at the
  end of an epoch therefore needs no RNG state; a checkpoint in the middle of an epoch (Ctrl-C)
  stores the generators' states and the step index. Resuming from either reaches bit-identical
  weights on the CPU with the same number of torch threads (a different thread count splits
  reductions differently, which changes the last bits); on CUDA, cuDNN's autotuned kernels make
  runs differ in the last bits.
- Ctrl-C is deferred to the next step boundary, where the model, optimiser and BatchNorm
  statistics are consistent, and saved there; a second Ctrl-C interrupts at once.
- Under torchrun (several processes) the same loop runs on every rank; the calls into
  :mod:`cnnlab.engine.distributed` shard each global batch, reduce the epoch sums, and keep
  evaluation and every file to rank 0 (they do nothing in a single process).
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab import _io
from cnnlab.analysis.params import count_parameters
from cnnlab.data import Dataset, Splits
from cnnlab.engine import checkpoint as ckpt_io
from cnnlab.engine import distributed
from cnnlab.engine import outputs
from cnnlab.engine import tasks as task_registry
from cnnlab.engine.callbacks import Callback, EpochLogger, Event, ProgressBar, TensorBoardLogger
from cnnlab.engine.config import TrainConfig
from cnnlab.engine.metrics import EvalResult
from cnnlab.engine.optim import EMA, lr_factor, make_optimizer
from cnnlab.engine.run import create_model
from cnnlab.errors import TrainingDiverged, UserError


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or a ``KeyboardInterrupt`` from a callback) stopped training.

    Attributes:
        message: what was saved and how to resume, one line.
        checkpoint: the checkpoint a resume will start from (None without an output folder).
    """

    def __init__(self, message: str, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.message = message
        self.checkpoint = checkpoint


@dataclass
class RunResult:
    """What a training run produced.

    Attributes:
        config: the resolved configuration.
        model: the trained model in eval mode (the EMA weights when ``config.ema`` > 0): the
            weights ``test_accuracy`` was measured with.
        test_accuracy, test_loss: on the test split (plain cross-entropy).
        best_val_accuracy, best_epoch: the validation accuracy of the best epoch (the task's
            ``score``: the accuracy for classification) and that epoch (1-based); None without
            a validation split.
        history: one dict per epoch (columns of ``history.csv``).
        images_per_s: training examples (images, sentences) per second of pure training
            time.
        train_time_s: time in the training steps (augmentation, forward, backward, optimiser),
            without evaluation, checkpoints or data loading.
        wall_time_s: the whole run, including data loading, evaluation and checkpoints (summed
            over resumed sessions).
        confusion: ``(K, K)`` test confusion matrix, rows = true class.
        per_class: per-class precision, recall, F1 and support on the test split.
        classes: class names.
        out: the run folder, or None.
    """

    config: TrainConfig
    model: nn.Module
    test_accuracy: float
    test_loss: float
    best_val_accuracy: float | None
    best_epoch: int | None
    history: list[dict]
    images_per_s: float
    train_time_s: float
    wall_time_s: float
    confusion: np.ndarray
    per_class: list[dict]
    classes: tuple[str, ...]
    out: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        """The contents of ``metrics.json`` (without the environment)."""
        f1 = [c["f1"] for c in self.per_class]
        return {
            "test_accuracy": self.test_accuracy,
            "test_loss": self.test_loss,
            "best_val_accuracy": self.best_val_accuracy,
            "best_epoch": self.best_epoch,
            "final_val_accuracy": self.history[-1].get("val_accuracy") if self.history else None,
            "test_macro_f1": float(np.mean(f1)) if f1 else None,
            "epochs_completed": len(self.history),
            "images_per_s": self.images_per_s,
            "train_time_s": self.train_time_s,
            "wall_time_s": self.wall_time_s,
            **self.extra,
            "history": self.history,
        }


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available here; use "
                        "--device cpu or auto")
    return torch.device(name)


class Trainer:
    """Runs one training configuration; the object callbacks receive as ``run``.

    Attributes (read them in callbacks):
        config: the :class:`TrainConfig`.
        device: the training device.
        model: the network being trained (not compiled, not averaged).
        eval_model: what evaluation uses: the EMA copy when enabled, else ``model``.
        optimizer: the torch optimiser.
        task: the :class:`cnnlab.engine.tasks.Task` (data, batches, loss, metrics).
        splits, augment, dataset: the image tasks' data tensors (:class:`cnnlab.data.Splits`)
            on ``device``, augmentation recipe and data set.
        epoch: the current epoch, 0-based (the number of completed epochs).
        step_in_epoch: steps completed in the current epoch.
        step: steps completed in the whole run.
        steps_per_epoch, total_steps, batch_size: the loop's extent.
        batch: ``(input, targets)`` of the current step: for images ``(images (B, C, H, W)
            float32, labels (B,))``; a model with several inputs gets the tuple
            (``(tokens, lengths)`` for text). ``inputs`` is always the tuple.
        logits, loss: the model's outputs and the loss of the current step (device tensors;
            ``loss.item()`` waits for the GPU).
        lr: the learning rate of the current step.
        history: one dict per completed epoch.
        val: the last validation :class:`EvalResult` (None without validation).
        should_stop: set True to end training after this epoch.
        result: the :class:`RunResult`, once training has finished.
        out: the run folder or None.
    """

    def __init__(self, config: TrainConfig, callbacks: Sequence[Callback] = (), *,
                 model: nn.Module | None = None, dataset: Dataset | Any = None,
                 log: bool = True) -> None:
        self.config = config.validate()
        self._wall_start = time.perf_counter()
        task_cls = task_registry.task_class(config.dataset)
        task_cls.check_config(config)  # bad settings fail before the data
        if config.encoder_weights and not config.resume:  # a resume has them saved
            if not Path(config.encoder_weights).exists():
                raise UserError(f"--encoder-weights {config.encoder_weights} does not exist")
            if model is not None:
                raise UserError("encoder_weights is set and a model was given: the Trainer "
                                "loads them only into the model it builds; load them into "
                                "yours with cnnlab.engine.encoder_weights.load_encoder_weights")
        if model is None:
            from cnnlab import models

            models.model_info(config.model)  # an unknown name fails before anything is written
        self.device = distributed.local_device(resolve_device(config.device))
        cuda = self.device.type == "cuda"
        self.amp = cuda if config.amp is None else config.amp
        self.channels_last = cuda if config.channels_last is None else config.channels_last
        self.out = Path(config.out) if config.out is not None else None
        self._check_out_dir()
        if config.threads is not None:
            torch.set_num_threads(config.threads)

        # data: the task loads (images: decoded once, cached), splits and places it
        t0 = time.perf_counter()
        self.task: task_registry.Task = task_cls(config, self.device, dataset)
        self.data_time_s = time.perf_counter() - t0
        n_train = self.task.num_train
        if n_train == 0:
            raise UserError(f"no training {self.task.examples} left after the subset and "
                            "validation split")
        self.batch_size = distributed.global_batch(config.batch_size, n_train)  # all ranks
        self.steps_per_epoch = n_train // self.batch_size
        self.total_steps = self.steps_per_epoch * config.epochs

        # model, optimiser, EMA
        if model is None:
            model = self._create_model()
        self.model = distributed.prepare_model(model.to(self.device), config.sync_bn, self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.model, config, self.device)
        self.ema = EMA(self.model, config.ema) if config.ema > 0 else None
        ddp = distributed.wrap(self.model, self.device)  # the module itself otherwise
        self._forward = torch.compile(ddp, mode=config.compile) if config.compile else ddp

        # loop state (all of it is in the checkpoint)
        self.epoch = 0
        self.step_in_epoch = 0
        self.step = 0
        self.history: list[dict] = []
        self.best_val_accuracy: float | None = None
        self.best_val_score: float | None = None  # the task's score of the best epoch
        self.best_epoch: int | None = None
        self._best_state: dict[str, torch.Tensor] | None = None  # for task.restore_best
        self.should_stop = False
        self.batch: tuple[Any, torch.Tensor] | None = None
        self.inputs: tuple[torch.Tensor, ...] | None = None
        self.logits: torch.Tensor | None = None
        self.loss: torch.Tensor | None = None
        self.lr = 0.0
        self.val: EvalResult | None = None
        self.result: RunResult | None = None
        self._prior_wall_s = 0.0  # wall time of earlier sessions of a resumed run
        self._aug_gen = torch.Generator(device=self.device)
        self._new_epoch_accumulators()
        self._interrupt_requested = False
        self._at_boundary = True

        self.callbacks: list[Callback] = list(callbacks)
        if log and distributed.is_main():
            self.callbacks.append(EpochLogger() if config.quiet else ProgressBar())
        if config.tensorboard:
            if self.out is None:
                raise UserError("--tensorboard needs an output directory (--out)")
            if distributed.is_main():
                self.callbacks.append(TensorBoardLogger(str(self.out / "tensorboard")))
        if config.resume:
            self._resume()

    # ------------------------------------------------------------------------------ set-up
    def _check_out_dir(self) -> None:
        if self.out is None:
            return
        _io.check_output_dir(self.out, "--out")
        if (self.out / ckpt_io.CHECKPOINT).exists() and not self.config.resume:
            raise UserError(f"{self.out} already holds a run ({ckpt_io.CHECKPOINT}); add --resume "
                            "to continue it, or choose another --out")

    def _create_model(self) -> nn.Module:
        from cnnlab import models

        self.task.check_model(self.config.model, models.model_info(self.config.model))
        torch.manual_seed(ckpt_io.derive_seed(self.config.seed, "init"))
        model = create_model(self.config, **self.task.model_kwargs())
        if self.config.encoder_weights and not self.config.resume:  # a resume has them saved
            from cnnlab.engine.encoder_weights import load_encoder_weights

            if not hasattr(getattr(model, "encoder", None), "features"):
                raise UserError(f"--encoder-weights: {self.config.model} has no MobileNetV2 "
                                "encoder to load them into (unet_mobilenet_v2 has)")
            load_encoder_weights(model, self.config.encoder_weights)
        return model

    # the image tasks' data, under the names callbacks and studies have always used
    @property
    def splits(self) -> Splits:
        return self._image_task().splits

    @property
    def augment(self):
        return self._image_task().augment

    @property
    def dataset(self) -> Dataset:
        return self._image_task().data

    def _image_task(self) -> task_registry.ImageClassification:
        if not isinstance(self.task, task_registry.ImageClassification):
            raise AttributeError(f"the {self.task.name} task has no image splits")
        return self.task

    def _open_out(self) -> None:
        """Create and lock the run folder; under the lock, check again that it is ours to use
        (a run started a moment earlier may have written its checkpoint since)."""
        _io.output_dir(self.out, "--out", lock=True)
        try:
            self._check_out_dir()
        except BaseException:
            _io.release_dir(self.out)
            raise

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _new_epoch_accumulators(self) -> None:
        dev = self.device
        self._loss_sum = torch.zeros((), dtype=torch.float32, device=dev)
        self._stats = torch.zeros(len(self.task.stat_names), dtype=torch.float64, device=dev)
        self._seen = 0
        self._step_losses = torch.full((self.steps_per_epoch,), math.nan, device=dev)
        self._checked = 0  # steps of this epoch already checked for NaN/inf
        self._epoch_train_s = 0.0  # training-loop time of this epoch, excluding the open loop
        self._loop_start: float | None = None  # when the running training loop started
        self._session_seen = 0
        self._session_start = time.perf_counter()
        self._last_check = time.perf_counter()

    # --------------------------------------------------------------------------- the loop
    def fit(self) -> RunResult:
        """Train until ``config.epochs`` are done (or a callback stops it), then test and save.

        Raises:
            TrainingDiverged: the loss became NaN or infinite (the last checkpoint is kept).
            TrainingInterrupted: Ctrl-C; a checkpoint was saved (see its message).
        """
        if self.out is not None and distributed.is_main():  # only now: bad settings leave none
            self._open_out()
        try:
            with self._determinism(), self._deferred_sigint():
                if self.out is not None and distributed.is_main():
                    self._write_config()
                self._fire(Event.TRAIN_BEGIN)
                try:
                    while self.epoch < self.config.epochs and not self.should_stop:
                        self._train_epoch()
                        self._end_epoch()
                except KeyboardInterrupt as exc:
                    raise self._on_interrupt() from exc
                self.result = self._finish() if distributed.is_main() else None
                self._fire(Event.TRAIN_END)
        except BaseException as exc:
            for cb in self.callbacks:
                cb.on_exception(self, exc)
            raise
        finally:
            if self.out is not None and distributed.is_main():
                _io.release_dir(self.out)
        return self.result

    def _fire(self, event: Event) -> None:
        stop = False
        for cb in self.callbacks:
            try:
                getattr(cb, event.value)(self)
            except KeyboardInterrupt:
                # a callback asking to stop acts like Ctrl-C at this event: the callbacks after
                # it still see the event, so the states saved in the checkpoint agree
                stop = True
        if stop:
            raise KeyboardInterrupt

    def _train_epoch(self) -> None:
        cfg, dev, task = self.config, self.device, self.task
        e, bs = self.epoch, self.batch_size
        if self.step_in_epoch == 0:
            # fresh streams for this epoch (a mid-epoch resume restored their states instead)
            torch.manual_seed(distributed.rank_seed(ckpt_io.derive_seed(cfg.seed, e, "global")))
            self._aug_gen.manual_seed(distributed.rank_seed(ckpt_io.derive_seed(cfg.seed, e,
                                                                                "augment")))
            self._new_epoch_accumulators()
            self._fire(Event.EPOCH_BEGIN)
        perm = self.task.epoch_order(ckpt_io.derive_seed(cfg.seed, e, "shuffle"), bs)
        self.model.train()
        self._session_start = time.perf_counter()
        self._session_seen = 0
        self._loop_start = t0 = time.perf_counter()
        for k in range(self.step_in_epoch, self.steps_per_epoch):
            self._check_interrupt()
            idx = distributed.shard(perm[k * bs:(k + 1) * bs])  # this rank's part
            inputs, y = task.batch(idx, self._aug_gen)
            if self.channels_last:
                inputs = tuple(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4
                               else x for x in inputs)
            self.inputs = inputs
            self.batch = (inputs[0] if len(inputs) == 1 else inputs, y)
            self._fire(Event.BATCH_BEGIN)

            self._at_boundary = False  # from here until the step is committed
            self.lr = cfg.lr * lr_factor(self.step, self.total_steps, cfg.schedule, cfg.warmup)
            for group in self.optimizer.param_groups:  # lr_scale: config.lr_scales
                group["lr"] = self.lr * group.get("lr_scale", 1.0)
            with self._autocast():
                logits = self._forward(*inputs)
            loss = task.loss(logits, y)
            self.logits, self.loss = logits, loss
            loss.backward()
            self._fire(Event.AFTER_BACKWARD)
            self.optimizer.step()
            task.after_step(self.model)
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.update(self.model)
            with torch.no_grad():
                self._loss_sum += loss.detach() * len(y)
                self._stats += task.step_stats(logits, y)
                self._step_losses[k] = loss.detach()
            self._seen += len(y)
            self._session_seen += len(y)
            self.step_in_epoch, self.step = k + 1, self.step + 1
            self._at_boundary = True

            now = time.perf_counter()
            if dev.type == "cpu" or now - self._last_check >= cfg.log_every_s:
                self._last_check = now
                self._check_finite()
            self._fire(Event.BATCH_END)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        self._epoch_train_s += time.perf_counter() - t0
        self._loop_start = None
        self._check_finite()
        self._check_state_finite()

    def _end_epoch(self) -> None:
        self._check_interrupt()
        t0 = time.perf_counter()
        self.val = None
        if self.task.split_size("val") and distributed.is_main():
            self.val = self.evaluate_split("val")
        self._fire(Event.VALIDATION_END)
        stats = distributed.all_sum(torch.cat([
            self._loss_sum.double().reshape(1), self._stats,
            torch.full((1,), self._seen, dtype=torch.float64, device=self.device)])).cpu()
        seen = float(stats[-1])  # over all ranks
        val_metrics = {f"val_{k}": v for k, v in self.val.metrics.items()} if self.val else {}
        row = {
            "epoch": self.epoch + 1,
            "train_loss": float(stats[0]) / seen,
            **self.task.train_metrics(stats[1:-1], seen),
            "val_loss": self.val.loss if self.val else None,
            "val_accuracy": self.val.accuracy if self.val else None,
            **val_metrics,
            "lr": self.lr,
            "epoch_time_s": self._epoch_train_s + time.perf_counter() - t0,  # train + validation
            "train_time_s": self._epoch_train_s,
            "images_per_s": seen / max(self._epoch_train_s, 1e-9),
        }
        self.history.append(row)
        score = self.task.score(self.val) if self.val is not None else None
        if score is not None and (self.best_val_score is None or score > self.best_val_score):
            self.best_val_score, self.best_epoch = score, self.epoch + 1
            self.best_val_accuracy = self.val.accuracy
            if self.task.restore_best:
                self._best_state = {k: v.detach().clone()
                                    for k, v in self.eval_model.state_dict().items()}
            if self.out is not None:
                ckpt_io.atomic_save(self.eval_model.state_dict(), self.out / ckpt_io.BEST)
        self.epoch += 1
        self.step_in_epoch = 0
        self._fire(Event.EPOCH_END)
        self.should_stop = distributed.any_rank(self.should_stop)  # rank 0's val decides
        if self.out is not None and distributed.is_main():
            ckpt_io.atomic_save(self._state(), self.out / ckpt_io.CHECKPOINT)
            outputs.write_csv(self.out / "history.csv", self.history, self._history_columns)

    @property
    def _history_columns(self) -> tuple[str, ...]:
        return outputs.HISTORY_COLUMNS + tuple(self.task.history_columns)

    def evaluate_split(self, split: str) -> EvalResult:
        """The task's evaluation of the current weights (EMA when on) on ``split`` ("val" or
        "test"), exactly as the run evaluates them."""
        return self.task.evaluate(self.eval_model, split, batch_size=self.config.eval_batch_size,
                                  amp=self.amp, channels_last=self.channels_last)

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor) -> EvalResult:
        """Image tasks: loss and accuracy of the current weights (EMA when on) on uint8
        ``(N, C, H, W)`` images, exactly as the run evaluates its validation and test splits
        (callbacks may call it, e.g. for a test-error curve)."""
        return self._image_task().evaluate_images(
            self.eval_model, images, labels, batch_size=self.config.eval_batch_size,
            amp=self.amp, channels_last=self.channels_last)

    def running_stats(self) -> dict[str, float]:
        """The current epoch's mean loss, accuracy (and the task's other training metrics,
        without ``train_``) and examples/s so far (waits for the GPU)."""
        stats = torch.cat([self._loss_sum.double().reshape(1), self._stats]).cpu()
        seen = max(self._seen, 1)
        elapsed = max(time.perf_counter() - self._session_start, 1e-9)
        metrics = {k.removeprefix("train_"): v
                   for k, v in self.task.train_metrics(stats[1:], seen).items()}
        return {"loss": float(stats[0]) / seen, **metrics,
                "images_per_s": self._session_seen * distributed.world_size() / elapsed}

    def _check_finite(self) -> None:
        """Raise TrainingDiverged at the first non-finite loss not yet checked (one sync)."""
        upto = self.step_in_epoch
        if upto <= self._checked:
            return
        window = self._step_losses[self._checked:upto]
        bad = (~torch.isfinite(window)).nonzero()
        if len(bad):
            k = self._checked + int(bad[0, 0])
            value = float(self._step_losses[k])
            last = self._last_good()
            raise TrainingDiverged(
                f"the training loss became {value} at epoch {self.epoch + 1} step "
                f"{k + 1}/{self.steps_per_epoch} (global step "
                f"{self.epoch * self.steps_per_epoch + k + 1}); training stopped and {last}; "
                f"try a lower --lr (now {self.config.lr}) or a longer warm-up")
        self._checked = upto

    def _last_good(self) -> str:
        return (f"the last checkpoint {self.out / ckpt_io.CHECKPOINT} (end of epoch "
                f"{self.epoch}) is unchanged" if self.out is not None and self.epoch > 0
                else "no checkpoint was written")

    def _check_state_finite(self) -> None:
        """Raise TrainingDiverged if any weight or buffer (BatchNorm statistics, EMA copy) is
        NaN or infinite: a finite loss does not prove finite weights, and no such state may
        be saved as a checkpoint, ``best.pt`` or ``model.pt``."""
        states = {"model": self.model.state_dict()}
        if self.ema is not None:
            states["ema"] = self.ema.module.state_dict()
        bad = ckpt_io.non_finite(states)
        if bad is not None:
            raise TrainingDiverged(
                f"the model's state became NaN/inf ({bad}) in epoch {self.epoch + 1} (global "
                f"step {self.step}); training stopped and {self._last_good()}; try a lower --lr "
                f"(now {self.config.lr}) or a longer warm-up")

    # ------------------------------------------------------------------ finishing, outputs
    def _finish(self) -> RunResult:
        task = self.task
        extra: dict[str, Any] = {}
        if task.restore_best and self.best_epoch is not None:
            # early stopping: the best validation epoch's weights are tested and saved
            best = self._best_state
            if best is None:  # resumed after that epoch: its weights are in best.pt
                best = ckpt_io.load_weights(self.out / ckpt_io.BEST, self.device)
            self.eval_model.load_state_dict(best)
            extra["tested_epoch"] = self.best_epoch
        test = self.evaluate_split("test")
        train_time = sum(r["train_time_s"] for r in self.history)
        images = sum(r["images_per_s"] * r["train_time_s"] for r in self.history)
        wall = self._prior_wall_s + time.perf_counter() - self._wall_start
        result = RunResult(
            config=self.config, model=self.eval_model.eval(), test_accuracy=test.accuracy,
            test_loss=test.loss, best_val_accuracy=self.best_val_accuracy,
            best_epoch=self.best_epoch, history=list(self.history),
            images_per_s=images / max(train_time, 1e-9), train_time_s=train_time,
            wall_time_s=wall, confusion=test.confusion.numpy(),
            per_class=task.per_class(test), classes=tuple(task.classes), out=self.out,
            extra={"data_time_s": self.data_time_s, "num_train": task.split_size("train"),
                   "num_val": task.split_size("val"), "num_test": task.split_size("test"),
                   "parameters": count_parameters(self.model).total,
                   "device": str(self.device), "amp": self.amp,
                   "channels_last": self.channels_last,
                   **{f"test_{k}": v for k, v in test.metrics.items()}, **extra})
        if self.out is not None:
            self._write_outputs(result)
            task.write_predictions(self.out / "test_predictions.npz", test)
        return result

    def data_info(self) -> dict[str, Any]:
        """What ``load_run`` needs to rebuild inputs (the task's: classes, normalisation, image
        size for images; vocabulary size for text)."""
        return self.task.data_info()

    def _write_config(self) -> None:
        from cnnlab.provenance import environment

        self.task.write_files(self.out)
        outputs.write_json(self.out / "config.json", {
            "config": self.config.to_dict(), "data": self.data_info(),
            "resolved": {"device": str(self.device), "amp": self.amp,
                         "channels_last": self.channels_last, "batch_size": self.batch_size,
                         "steps_per_epoch": self.steps_per_epoch,
                         "threads": torch.get_num_threads(),
                         "processes": distributed.world_size()},
            "environment": environment(self.device)})

    def _write_outputs(self, result: RunResult) -> None:
        from cnnlab.provenance import environment

        out = self.out
        ckpt_io.atomic_save(result.model.state_dict(), out / ckpt_io.FINAL)
        outputs.write_json(out / "metrics.json", {**result.metrics(),
                                                  "environment": environment(self.device)})
        outputs.write_csv(out / "history.csv", result.history, self._history_columns)
        outputs.write_json(out / "per_class.json", result.per_class)
        outputs.write_csv(out / "per_class.csv", result.per_class,
                          ("class", "precision", "recall", "f1", "support"))
        outputs.plot_curves(result.history, out)
        outputs.plot_confusion(result.confusion, result.classes, out / "confusion_matrix.png")

    # ------------------------------------------------------------- checkpoint and resume
    def _state(self, mid_epoch: bool = False) -> dict[str, Any]:
        state = {
            "format": ckpt_io.FORMAT,
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "step": self.step,
            "stopped": self.should_stop,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "callbacks": {self._cb_key(i): cb.state_dict() for i, cb in enumerate(self.callbacks)},
            "history": self.history,
            "best_val_accuracy": self.best_val_accuracy,
            "best_val_score": self.best_val_score,
            "best_epoch": self.best_epoch,
            "wall_time_s": self._prior_wall_s + time.perf_counter() - self._wall_start,
            "threads": torch.get_num_threads(),  # an exact resume needs the same number
            "world_size": distributed.world_size(),
        }
        if mid_epoch:
            state["mid_epoch"] = distributed.gather({  # every rank's streams, on rank 0
                "loss_sum": self._loss_sum, "stats": self._stats, "seen": self._seen,
                "step_losses": self._step_losses, "checked": self._checked,
                "epoch_train_s": self._epoch_train_s + (
                    0.0 if self._loop_start is None else time.perf_counter() - self._loop_start),
                "lr": self.lr,
                "aug_rng": self._aug_gen.get_state(),
                "cpu_rng": torch.get_rng_state(),
                "cuda_rng": (torch.cuda.get_rng_state(self.device) if self.device.type == "cuda"
                             else None),
            })
        return state

    def _cb_key(self, i: int) -> str:
        cb = self.callbacks[i]
        return ckpt_io.callback_key(type(cb), sum(type(c) is type(cb) for c in self.callbacks[:i]))

    def _resume(self) -> None:
        path = self.out / ckpt_io.CHECKPOINT
        if not path.exists():
            if distributed.is_main():
                print(f"cnnlab: no checkpoint in {self.out}; starting from scratch", flush=True)
            return
        state = ckpt_io.load_checkpoint(path, self.device)
        diff = self.config.differences(state["config"])
        if diff:
            listed = "; ".join(f"{k}: saved {old!r}, now {new!r}"
                               for k, (new, old) in diff.items())
            raise UserError(f"cannot resume {self.out}: the settings differ from the saved run "
                            f"({listed}); use the saved settings or another --out")
        # the process count first: no option resumes across it, while --threads can
        distributed.check_resume(state.get("world_size", 1), self.out)
        self._check_resume_threads(state.get("threads"))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        saved = state["callbacks"]
        for i, cb in enumerate(self.callbacks):
            if self._cb_key(i) in saved:
                cb.load_state_dict(saved[self._cb_key(i)])
        self.epoch, self.step = state["epoch"], state["step"]
        self.step_in_epoch = state["step_in_epoch"]
        self.should_stop = state["stopped"]
        self.history = list(state["history"])
        self.best_val_accuracy, self.best_epoch = state["best_val_accuracy"], state["best_epoch"]
        # checkpoints from before tasks existed: the score was the accuracy
        self.best_val_score = state.get("best_val_score", self.best_val_accuracy)
        self._prior_wall_s = state["wall_time_s"]
        mid = distributed.own(state.get("mid_epoch"))
        if mid is not None:
            self._loss_sum = mid["loss_sum"]
            # before tasks, the one statistic was the correct count ("correct", int64)
            self._stats = (mid["stats"] if "stats" in mid
                           else mid["correct"].to(torch.float64).reshape(1))
            self._seen, self._checked = mid["seen"], mid["checked"]
            self._step_losses = mid["step_losses"]
            self._epoch_train_s, self.lr = mid["epoch_train_s"], mid["lr"]
            self._aug_gen.set_state(mid["aug_rng"].cpu())
            torch.set_rng_state(mid["cpu_rng"].cpu())
            if mid["cuda_rng"] is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(mid["cuda_rng"].cpu(), self.device)

    def _check_resume_threads(self, saved: int | None) -> None:
        """The thread count splits reductions, so only the run's own count resumes exactly."""
        now = torch.get_num_threads()
        if saved is None or saved == now:
            return
        if self.config.threads is None:
            raise UserError(f"cannot resume {self.out} exactly: it ran with {saved} torch "
                            f"threads, this process has {now}; add --threads {saved} (or "
                            f"--threads {now} to continue without bit-identity)")
        warnings.warn(f"resuming {self.out} with {now} torch threads, not the run's {saved}: "
                      "the result will not be bit-identical to an uninterrupted run",
                      stacklevel=2)

    def _on_interrupt(self) -> TrainingInterrupted:
        """Save what can be resumed exactly and describe it."""
        if self.out is None:
            return TrainingInterrupted("interrupted; nothing saved (no output directory)", None)
        path = self.out / ckpt_io.CHECKPOINT
        resume = f"resume with the same command plus --resume (--out {self.out})"
        if self._at_boundary:
            self._check_finite()  # never save diverged weights
            self._check_state_finite()
            state = self._state(mid_epoch=self.step_in_epoch > 0)  # on every rank (gathers)
            if distributed.is_main():
                ckpt_io.atomic_save(state, path)
            where = (f"epoch {self.epoch + 1} step {self.step_in_epoch}/{self.steps_per_epoch}"
                     if self.step_in_epoch else f"the end of epoch {self.epoch}")
            return TrainingInterrupted(f"interrupted; saved a checkpoint at {where} in {path}; "
                                       f"{resume}", path)
        # inside a step the weights or BatchNorm statistics may be half-updated: keep the last
        # checkpoint (end of an epoch, or an earlier interruption)
        if path.exists():
            return TrainingInterrupted(f"interrupted inside a step; kept the last checkpoint "
                                       f"{path}; {resume}", path)
        return TrainingInterrupted("interrupted inside the first epoch; no checkpoint yet", None)

    # ---------------------------------------------------------------- process-wide settings
    def _check_interrupt(self) -> None:
        if distributed.any_rank(self._interrupt_requested):  # all ranks stop at the same step
            self._interrupt_requested = False
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def _deferred_sigint(self) -> Iterator[None]:
        """The first Ctrl-C sets a flag checked at step boundaries; a second one interrupts now."""
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be installed from the main thread
            return

        def handler(signum, frame):
            if self._interrupt_requested:
                raise KeyboardInterrupt
            self._interrupt_requested = True

        previous = signal.signal(signal.SIGINT, handler)
        # a Ctrl-C the process-group session recorded before this trainer took over
        self._interrupt_requested = self._interrupt_requested or distributed.take_interrupt()
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    @contextlib.contextmanager
    def _determinism(self) -> Iterator[None]:
        """Deterministic kernels on the CPU (cheap there); autotuned cuDNN kernels on CUDA.

        Deterministic mode would also fill every new tensor with NaN (a debugging aid that cost
        15% of a CPU step here); that part is switched off.
        """
        import torch.utils.deterministic as tud

        det = torch.are_deterministic_algorithms_enabled()
        warn = torch.is_deterministic_algorithms_warn_only_enabled()
        fill = tud.fill_uninitialized_memory
        bench = torch.backends.cudnn.benchmark
        if self.device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
            tud.fill_uninitialized_memory = False
        else:
            torch.backends.cudnn.benchmark = True
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(det, warn_only=warn)
            tud.fill_uninitialized_memory = fill
            torch.backends.cudnn.benchmark = bench

    def _autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)


def train(config: TrainConfig, callbacks: Sequence[Callback] = (), *,
          model: nn.Module | None = None, dataset: Dataset | None = None,
          log: bool = True) -> RunResult:
    """Train a model as ``config`` says; the Python form of ``cnnlab train``.

    Args:
        config: the run's :class:`TrainConfig`.
        callbacks: extra :class:`Callback` objects, fired in order before the built-in ones.
        model: train this module instead of ``cnnlab.models.create(config.model, ...)``
            (``config.model`` is then only a label, and ``load_run`` needs the module too).
        dataset: use this already loaded :class:`cnnlab.data.Dataset` (its name must equal
            ``config.dataset``); studies load once and train many runs.
        log: False prints nothing (no progress bar, no epoch lines).

    Returns:
        The :class:`RunResult`; with ``config.out`` set, the run folder holds checkpoints,
        metrics, tables and plots. Under torchrun (inside ``distributed.session()``): the
        result on rank 0, None on the other ranks.

    Raises:
        TrainingDiverged: NaN/inf loss (the message names the epoch and step).
        TrainingInterrupted: Ctrl-C (a ``KeyboardInterrupt``); a checkpoint was saved.
        UserError: bad settings, or ``--resume`` with settings that differ from the saved run.
    """
    return Trainer(config, callbacks, model=model, dataset=dataset, log=log).fit()
