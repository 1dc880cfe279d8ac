"""SplitEvaluator: the clean training accuracy per epoch is the training split evaluated in eval
mode without augmentation, exactly as ``evaluate`` measures it; it is saved with the history."""

import json

import pytest
import torch

from cnnlab.engine import Callback, SplitEvaluator, Trainer, evaluate
from cnnlab.errors import UserError


class Reference(Callback):
    """After every epoch: the training split through ``cnnlab.engine.evaluate`` on a copy of the
    weights (the independent path: its own eval-mode switch and normalisation)."""

    def __init__(self):
        self.rows = []

    def on_epoch_end(self, run):
        import copy

        model = copy.deepcopy(run.eval_model)
        res = evaluate(model, run.splits.train_images, run.splits.train_labels,
                       mean=run.splits.mean, std=run.splits.std)
        self.rows.append((res.loss, res.accuracy))


def test_clean_train_accuracy_is_the_eval_mode_training_split(toy, make_model, config):
    ref = Reference()
    trainer = Trainer(config, [ref, SplitEvaluator("train", "clean_train"),
                               SplitEvaluator("test", every=2)],
                      model=make_model(), dataset=toy, log=False)
    result = trainer.fit()
    hist = result.history
    assert len(hist) == 2
    for row, (loss, acc) in zip(hist, ref.rows, strict=True):
        # same weights, same images, same kernels: bit-identical by construction
        assert row["clean_train_accuracy"] == acc
        assert row["clean_train_loss"] == pytest.approx(loss, rel=1e-6)
    # every=2: epoch 1 skipped, epoch 2 (also the last) measured, equal to the final test
    assert hist[0]["test_accuracy"] is None and hist[1]["test_accuracy"] == result.test_accuracy
    # the augmented, dropout-on running accuracy the engine logs is a different number
    assert any(r["train_accuracy"] != r["clean_train_accuracy"] for r in hist)
    saved = json.loads((result.out / "metrics.json").read_text())["history"]
    assert [r["clean_train_accuracy"] for r in saved] == [r["clean_train_accuracy"] for r in hist]
    assert torch.is_grad_enabled()


def test_bad_split_or_interval_is_one_line():
    with pytest.raises(UserError, match="split must be one of"):
        SplitEvaluator("training")
    with pytest.raises(UserError, match="every must be a positive whole number"):
        SplitEvaluator("train", every=0)
