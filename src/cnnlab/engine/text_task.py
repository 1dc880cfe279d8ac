"""Sentence classification (SST-5) as an engine task: token batches bucketed by length.

``cnnlab train --model kim_cnn --dataset sst5 --task-kw train_on=phrases`` trains through the
same loop as the image models (:mod:`cnnlab.engine.tasks` says how a task plugs in):

- **Data**: :func:`cnnlab.data.sst.load_sst`; the vocabulary comes from the training sentences
  only (:class:`~cnnlab.data.sst.Vocabulary`, ``min_freq``). Validation is the official dev split
  (1,101 sentences) whenever ``val_fraction`` > 0 (its value is not used: SST has its own dev
  split), none with ``val_fraction`` 0; test is always the 2,210 test sentences. ``subset`` keeps
  that many training examples (stratified, ``split_seed``); dev and test stay whole.
- **Batches**: bucketed by length as in Kim 2014's and most SST code: the epoch's seeded
  permutation is cut into chunks of 50 batches, each chunk is sorted by length and cut into
  batches, and the full batches are shuffled; so a batch pads only to its own longest sentence,
  and the order is a pure function of (seed, epoch).
- **Model inputs**: ``model(tokens (B, L) int64, lengths (B,) int64)`` (the text models of
  :mod:`cnnlab.models.text`); the lengths stay on the CPU, where packing needs them.
- **Early stopping** (Kim 2014): with a validation split, the weights of the best dev epoch are
  the ones tested and saved as ``model.pt`` (``metrics.json``'s ``tested_epoch``).
- **Options** (``--task-kw``): ``train_on`` = ``sentences`` (default) or ``phrases`` (every
  labelled phrase of the training trees, as Socher et al. 2013 and Kim 2014), ``min_freq``
  (default 1: words seen fewer times are ``<unk>``), ``max_norm`` (default 0 = off: Kim's
  l2-norm constraint ``s`` on each row of the last layer's weights, applied after every step),
  ``prior`` (below).
- **Class prior** (``--task-kw prior=sentences``): the ~157,000 phrases are not distributed like
  the sentences that are tested (of the phrases 4.6% are very negative and 51% neutral; of the
  training sentences 12.8% and 19.0%), so a network trained on phrases predicts the extreme
  classes far more rarely than they occur in sentences. ``prior=sentences`` trains with the
  logit-adjusted loss of Menon et al. 2021 (also the label-shift correction of Saerens et al.
  2002): cross-entropy of ``logits + log pi_train - log pi_sentences``, with both priors counted
  from the training data (the training examples, and the training trees' whole sentences; +1
  per class), so that the network's own logits, the saved model's included, are those of the
  sentence prior. Default ``train``: plain cross-entropy (Kim 2014). With ``train_on=sentences``
  the two priors are the same and the option changes nothing.

The run folder also holds ``vocab.txt`` (one word per line, line ``i`` is id ``i``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab import _io
from cnnlab.engine import outputs
from cnnlab.engine.metrics import EvalResult, evaluate_logits
from cnnlab.engine.tasks import Task, one_of, task_options
from cnnlab.errors import UserError

CHUNK_BATCHES = 50  # batches per length-sorted chunk (bench/sst_recipes.py's value)
TRAIN_ON = ("sentences", "phrases")
VOCAB_FILE = "vocab.txt"


def _min_freq(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("must be an integer >= 1")
    return value


def _max_norm(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 \
            or value == float("inf"):
        raise ValueError("must be a finite number >= 0 (0 = off)")
    return float(value)


PRIORS = ("train", "sentences")
OPTIONS = {"train_on": one_of(TRAIN_ON), "min_freq": _min_freq, "max_norm": _max_norm,
           "prior": one_of(PRIORS)}


def prior_shift(train_labels: np.ndarray, target_labels: np.ndarray, classes: int) -> np.ndarray:
    """``log pi_train - log pi_target`` per class (counts + 1): what the logit-adjusted loss adds
    to the logits during training so that the logits themselves fit the target prior."""
    train = np.bincount(train_labels, minlength=classes) + 1.0
    target = np.bincount(target_labels, minlength=classes) + 1.0
    return np.log(train / train.sum()) - np.log(target / target.sum())


def bucketed_order(lengths: np.ndarray, batch_size: int, seed: int,
                   chunk_batches: int = CHUNK_BATCHES) -> np.ndarray:
    """A permutation of ``range(len(lengths))`` whose consecutive ``batch_size`` slices are
    batches of similar length, in random order (see the module docstring).

    The full batches come first (shuffled); the remainder, fewer than ``batch_size`` examples,
    comes last (the trainer drops it).
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    chunk = batch_size * chunk_batches
    full, rest = [], []
    for c in range(0, len(order), chunk):
        part = order[c:c + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        for i in range(0, len(part), batch_size):
            (full if len(part) - i >= batch_size else rest).append(part[i:i + batch_size])
    shuffled = [full[j] for j in rng.permutation(len(full))]
    return np.concatenate(shuffled + rest) if shuffled or rest else np.zeros(0, np.int64)


class TextClassification(Task):
    """SST-5 sentences (or phrases) -> 5 sentiment classes.

    Attributes:
        data: the :class:`cnnlab.data.sst.SSTData`.
        vocab: the :class:`cnnlab.data.sst.Vocabulary` (from the training sentences).
        options: the resolved ``--task-kw`` options.
    """

    name = "text_classification"
    examples = "sentences"

    @classmethod
    def check_config(cls, config) -> None:
        task_options(config, OPTIONS)
        if config.augment not in ("default", "none"):
            raise UserError(f"--augment {config.augment!r}: sentences have no augmentation; "
                            "leave it at default (none for sst5)")
        if config.resolution != 1.0:
            raise UserError("--resolution applies to images; sst5 is text: leave it at 1")
        if config.tta:
            raise UserError("--tta (mirror-image test-time augmentation) applies to images, "
                            "not to sst5")

    def __init__(self, config, device: torch.device, data: Any = None) -> None:
        from cnnlab.data.sst import SSTData, Vocabulary, encode_split, load_sst

        self.config, self.device = config, device
        self.options = {"train_on": "sentences", "min_freq": 1, "max_norm": 0.0,
                        "prior": "train", **task_options(config, OPTIONS)}
        phrases = self.options["train_on"] == "phrases"
        if data is None:
            data = load_sst(config.data_dir, phrases=phrases)
        elif not isinstance(data, SSTData) or data.train_on != self.options["train_on"]:
            given = (f"SST-5 with train_on={data.train_on}" if isinstance(data, SSTData)
                     else repr(getattr(data, "name", type(data).__name__)))
            raise UserError(f"config.dataset is 'sst5' with train_on="
                            f"{self.options['train_on']} but the data given is {given}")
        self.data = data
        self.classes = tuple(data.classes)
        self.vocab = Vocabulary.build(data.train_sentences.tokens,
                                      min_freq=self.options["min_freq"])
        train = data.train
        if config.subset is not None:
            from cnnlab.data.splits import stratified_indices

            if config.subset > len(train):
                raise UserError(f"subset must be in [1, {len(train)}] for sst5 "
                                f"({self.options['train_on']}), not {config.subset}")
            keep = stratified_indices(train.labels, config.subset, config.split_seed)
            train = type(train)(tuple(train.tokens[i] for i in keep), train.labels[keep])
        self._splits = {"train": encode_split(train, self.vocab),
                        "test": encode_split(data.test, self.vocab)}
        if config.val_fraction > 0:
            self._splits["val"] = encode_split(data.dev, self.vocab)
        self._train_lengths = self._splits["train"].lengths.numpy()
        self.restore_best = "val" in self._splits
        self._criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        shift = np.zeros(len(self.classes))
        if self.options["prior"] == "sentences":
            shift = prior_shift(train.labels, data.train_sentences.labels, len(self.classes))
        self._shift = torch.as_tensor(shift, dtype=torch.float32, device=device)

    def split_size(self, split: str) -> int:
        b = self._splits.get(split)
        return 0 if b is None else len(b.lengths)

    def model_kwargs(self) -> dict[str, Any]:
        return {"num_classes": len(self.classes), "in_chans": 1, "vocab_size": len(self.vocab)}

    def epoch_order(self, seed: int, batch_size: int) -> torch.Tensor:
        return torch.from_numpy(bucketed_order(self._train_lengths, batch_size, seed))

    def batch(self, idx, generator):
        b = self._splits["train"]
        lengths = b.lengths[idx]
        tokens = b.tokens[idx, :int(lengths.max())]
        return (tokens.to(self.device), lengths), b.labels[idx].to(self.device)

    def loss(self, outputs, targets):
        return self._criterion(outputs.float() + self._shift, targets)

    def step_stats(self, outputs, targets):
        return (outputs.argmax(1) == targets).sum().to(torch.float64).reshape(1)

    def after_step(self, model: nn.Module) -> None:
        s = self.options["max_norm"]
        if not s:
            return
        head = getattr(model, "classifier", None)
        w = getattr(head[-1] if isinstance(head, nn.Sequential) else head, "weight", None)
        if not isinstance(w, torch.Tensor):
            raise UserError("--task-kw max_norm needs a model whose last layer is "
                            "model.classifier[-1] (the text models of cnnlab.models.text)")
        with torch.no_grad():  # Kim 2014: rescale each row w to norm s when ||w|| > s
            w.mul_(torch.clamp(s / w.norm(dim=1, keepdim=True).clamp_min(1e-12), max=1.0))

    @torch.no_grad()
    def evaluate(self, model, split, *, batch_size, amp, channels_last) -> EvalResult:
        b = self._splits[split]
        order = torch.argsort(b.lengths, stable=True)  # little padding per batch
        logits = torch.empty(len(order), len(self.classes), device=self.device)
        was_training = model.training
        model.eval()
        try:
            for s in range(0, len(order), batch_size):
                idx = order[s:s + batch_size]
                lengths = b.lengths[idx]
                tokens = b.tokens[idx, :int(lengths.max())].to(self.device)
                with (torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
                      if amp else contextlib.nullcontext()):
                    logits[idx.to(self.device)] = model(tokens, lengths).float()
        finally:
            model.train(was_training)
        return evaluate_logits(logits, b.labels.to(self.device), len(self.classes))

    def write_predictions(self, path: Path, result: EvalResult) -> None:
        outputs.write_predictions(path, self._splits["test"].labels, result.logits)

    def write_files(self, out: Path) -> None:
        _io.atomic_write(out / VOCAB_FILE, "\n".join(self.vocab.words) + "\n")

    def data_info(self) -> dict[str, Any]:
        return {"name": "sst5", "task": self.name, "classes": list(self.classes),
                "in_chans": 1, "builder": {"vocab_size": len(self.vocab)},
                "train_on": self.options["train_on"], "min_freq": self.options["min_freq"],
                "max_norm": self.options["max_norm"], "prior": self.options["prior"],
                "prior_shift": [round(float(v), 6) for v in self._shift.tolist()],
                "vocab_file": VOCAB_FILE,
                "num_train": self.split_size("train"), "num_val": self.split_size("val"),
                "num_test": self.split_size("test"), "source": self.data.source}
