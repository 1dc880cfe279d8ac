"""The training engine: one loop with named events and callbacks, checkpoints that resume exactly.

- :class:`TrainConfig` holds every hyperparameter; :func:`train` runs it and returns a
  :class:`RunResult` (``cnnlab train`` is its command-line form).
- :class:`Callback` hooks into the loop's events (:class:`Event`); callbacks' state is saved in
  checkpoints.
- :func:`load_run` reads a run folder back (model, config, data settings) for the studies and the
  explanation tools; :func:`predict` / :func:`evaluate` run any classifier on uint8 images.
- Metrics are computed here (:func:`confusion_matrix`, :func:`per_class_metrics`).
- What is trained on is a task chosen by the data set (:mod:`cnnlab.engine.tasks`: image
  classification for CIFAR-10 and Fashion-MNIST, :mod:`cnnlab.engine.text_task` for SST-5);
  the module says how to add one.

Example::

    from cnnlab.engine import TrainConfig, train
    result = train(TrainConfig(model="simple_cnn", dataset="fashion-mnist", epochs=2,
                               subset=5000, out="runs/quick"))
    result.test_accuracy, result.history[-1]["val_accuracy"]
"""

from cnnlab.engine.callbacks import (
    Callback,
    EpochLogger,
    Event,
    ProgressBar,
    SplitEvaluator,
    TensorBoardLogger,
)
from cnnlab.engine.checkpoint import derive_seed
from cnnlab.engine.config import OPTIMIZERS, RESUME_IGNORED, SCHEDULES, TrainConfig
from cnnlab.engine.metrics import (
    EvalResult,
    confusion_matrix,
    evaluate,
    per_class_metrics,
    predict,
)
from cnnlab.engine.optim import EMA, lr_factor, param_groups
from cnnlab.engine.run import LoadedRun, load_run
from cnnlab.engine.trainer import RunResult, Trainer, TrainingInterrupted, resolve_device, train

__all__ = [
    "EMA", "OPTIMIZERS", "RESUME_IGNORED", "SCHEDULES", "Callback", "EpochLogger", "EvalResult",
    "Event", "LoadedRun", "ProgressBar", "RunResult", "SplitEvaluator", "TensorBoardLogger",
    "TrainConfig", "Trainer", "TrainingInterrupted", "confusion_matrix", "derive_seed", "evaluate",
    "load_run", "lr_factor", "param_groups", "per_class_metrics", "predict", "resolve_device",
    "train",
]
