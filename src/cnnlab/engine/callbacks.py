"""Named events of the training loop and the callback base class (fastai / Lightning style).

A callback overrides the hooks it needs; each receives the running :class:`~cnnlab.engine.Trainer`
(``run``), whose attributes are documented there (``run.model``, ``run.epoch``, ``run.step``,
``run.batch``, ``run.loss``, ``run.history``, ...). Order of events::

    on_train_begin
    for each epoch:
        on_epoch_begin                      (not repeated when resuming in the middle of an epoch)
        for each step:
            on_batch_begin                  run.batch = (images (B, C, H, W) float, labels (B,));
                                            text: ((tokens, lengths), labels); run.inputs
            on_after_backward               gradients are in the parameters; run.loss is set
            on_batch_end                    the optimiser has stepped; run.step counts it
        on_validation_end                   run.val is the EvalResult (None without validation)
        on_epoch_end                        run.history[-1] is this epoch's row
    on_train_end                            run.result is the RunResult
    on_exception                            instead, when training stops with an exception

A callback's ``state_dict()`` is saved in every checkpoint and handed back to
``load_state_dict()`` on ``--resume``, so stateful callbacks resume exactly. Setting
``run.should_stop = True`` ends training after the current epoch. Raising ``KeyboardInterrupt``
from ``on_batch_end`` behaves like Ctrl-C at that point (the other callbacks still receive that
``on_batch_end`` before the checkpoint is saved).
"""

from __future__ import annotations

import sys
import time
from enum import Enum
from typing import TYPE_CHECKING, Any

from cnnlab.errors import UserError

if TYPE_CHECKING:
    from cnnlab.engine.trainer import Trainer


class Event(str, Enum):
    """The hook names, in the order they fire."""

    TRAIN_BEGIN = "on_train_begin"
    EPOCH_BEGIN = "on_epoch_begin"
    BATCH_BEGIN = "on_batch_begin"
    AFTER_BACKWARD = "on_after_backward"
    BATCH_END = "on_batch_end"
    VALIDATION_END = "on_validation_end"
    EPOCH_END = "on_epoch_end"
    TRAIN_END = "on_train_end"
    EXCEPTION = "on_exception"


class Callback:
    """Base class: every hook does nothing; state is empty."""

    def on_train_begin(self, run: Trainer) -> None: ...

    def on_epoch_begin(self, run: Trainer) -> None: ...

    def on_batch_begin(self, run: Trainer) -> None: ...

    def on_after_backward(self, run: Trainer) -> None: ...

    def on_batch_end(self, run: Trainer) -> None: ...

    def on_validation_end(self, run: Trainer) -> None: ...

    def on_epoch_end(self, run: Trainer) -> None: ...

    def on_train_end(self, run: Trainer) -> None: ...

    def on_exception(self, run: Trainer, exc: BaseException) -> None:
        """Training stops with ``exc`` (Ctrl-C, divergence, a bug); release resources here."""

    def state_dict(self) -> dict[str, Any]:
        """What to save in checkpoints (tensors, numbers, lists, dicts)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def _epoch_line(run: Trainer, row: dict) -> str:
    parts = [f"epoch {row['epoch']:>{len(str(run.config.epochs))}}/{run.config.epochs}",
             f"train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.4f}"]
    if row.get("val_accuracy") is not None:
        parts.append(f"val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.4f}")
    parts.append(f"lr {row['lr']:.3g}")
    parts.append(f"{row['images_per_s']:,.0f} img/s")
    parts.append(f"{row['epoch_time_s']:.1f} s")
    return "  ".join(parts)


class EpochLogger(Callback):
    """Prints one line per epoch (what ``--quiet`` leaves), to stdout."""

    def __init__(self, file=None) -> None:
        self.file = file

    def on_epoch_end(self, run: Trainer) -> None:
        print(_epoch_line(run, run.history[-1]), file=self.file or sys.stdout, flush=True)


class ProgressBar(Callback):
    """A rich progress bar per epoch with the running loss, accuracy and images/s.

    It reads the running sums only every ``run.config.log_every_s`` seconds (each read waits for
    the GPU), and prints the epoch's summary line when the epoch ends.
    """

    def __init__(self) -> None:
        self._progress = None
        self._task = None
        self._last = 0.0

    def on_train_begin(self, run: Trainer) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._console = Console()
        self._progress = Progress(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(),
                                  MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                                  TimeRemainingColumn(), console=self._console, transient=True)
        self._progress.start()

    def on_epoch_begin(self, run: Trainer) -> None:
        self._start_task(run)

    def _start_task(self, run: Trainer) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task("train", total=run.steps_per_epoch,
                                             completed=run.step_in_epoch,
                                             epoch=f"{run.epoch + 1}/{run.config.epochs}",
                                             stats="")

    def on_batch_end(self, run: Trainer) -> None:
        if self._task is None:  # resumed in the middle of an epoch
            self._start_task(run)
        now = time.perf_counter()
        if now - self._last < run.config.log_every_s and run.step_in_epoch < run.steps_per_epoch:
            return
        self._last = now
        s = run.running_stats()
        stats = f"loss {s['loss']:.4f}  acc {s['accuracy']:.4f}  {s['images_per_s']:,.0f} img/s"
        self._progress.update(self._task, completed=run.step_in_epoch, stats=stats)

    def on_epoch_end(self, run: Trainer) -> None:
        self._progress.console.print(_epoch_line(run, run.history[-1]), soft_wrap=True,
                                     highlight=False)

    def on_train_end(self, run: Trainer) -> None:
        self.close()

    def on_exception(self, run: Trainer, exc: BaseException) -> None:
        self.close()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None


class TensorBoardLogger(Callback):
    """Writes per-epoch scalars (losses, accuracies, lr, images/s) to ``out/tensorboard``."""

    def __init__(self, log_dir: str) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # torch raises ImportError naming the missing package
            raise UserError("--tensorboard needs the tensorboard package: pip install "
                            "'cnnlab[tensorboard]' (or pip install tensorboard)") from exc
        self._writer = SummaryWriter(log_dir=log_dir)

    def on_epoch_end(self, run: Trainer) -> None:
        row = run.history[-1]
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self._writer.add_scalar(key, value, row["epoch"])
        self._writer.flush()

    def on_train_end(self, run: Trainer) -> None:
        self._writer.close()

    def on_exception(self, run: Trainer, exc: BaseException) -> None:
        self._writer.close()


class SplitEvaluator(Callback):
    """Adds the loss and accuracy on one of the run's splits, in eval mode and without
    augmentation, to every ``every``-th epoch's history row (and the last one's).

    The engine's ``train_loss`` / ``train_accuracy`` are what the optimiser saw: augmented
    batches, dropout on, BatchNorm on batch statistics, averaged while the weights moved. The
    clean training accuracy (``SplitEvaluator("train", "clean_train")``) measures the weights at
    the end of the epoch on the un-augmented training images exactly as validation is measured,
    so ``clean_train_accuracy - val_accuracy`` is the generalisation gap;
    ``SplitEvaluator("test")`` gives a test curve. The columns are ``<name>_loss`` and
    ``<name>_accuracy`` (None on the epochs skipped); they are saved with the history (in the
    checkpoint and ``metrics.json``), so this callback keeps no state of its own.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (of ``run.splits``).
        name: the column prefix (default: the split's name).
        every: evaluate after every ``every``-th epoch (and always after the last).
    """

    SPLITS = ("train", "val", "test")

    def __init__(self, split: str, name: str | None = None, every: int = 1) -> None:
        if split not in self.SPLITS:
            raise UserError(f"split must be one of {self.SPLITS}, not {split!r}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise UserError(f"every must be a positive whole number of epochs, not {every!r}")
        self.split, self.name, self.every = split, name or split, every

    def on_epoch_end(self, run: Trainer) -> None:
        row = run.history[-1]
        loss = acc = None
        if row["epoch"] % self.every == 0 or row["epoch"] == run.config.epochs:
            images = getattr(run.splits, f"{self.split}_images")
            labels = getattr(run.splits, f"{self.split}_labels")
            if len(labels):
                res = run.evaluate(images, labels)
                loss, acc = res.loss, res.accuracy
        row[f"{self.name}_loss"], row[f"{self.name}_accuracy"] = loss, acc
