"""The task protocol: image runs unchanged by it, text runs train and resume exactly, bad inputs.

References: for images, the engine as it was before tasks existed (commit c056371, extracted with
``git archive`` and run in its own process on the same machine and thread count: the same
operations in the same order, so every metric must be bit-identical); for text, an uninterrupted
run of the same config in the same process (``torch.equal`` on every tensor), a fake SST-5 whose
labels follow a known rule, and the model run on each batch by hand.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.engine import Callback, TrainConfig, Trainer, load_run
from cnnlab.engine.text_task import bucketed_order
from cnnlab.errors import UserError

REPO = Path(__file__).resolve().parents[2]
PRE_TASKS = "c056371"  # the last commit before engine/tasks.py


# ------------------------------------------------------------------ images: unchanged by tasks
_IMAGE_RUN = """
import json, sys, numpy as np, torch
from torch import nn
torch.set_num_threads(1)
from cnnlab.data import FASHION_MNIST_CLASSES, Dataset
from cnnlab.engine import TrainConfig, Callback, train
rng = np.random.default_rng(0)
def make(n, size):
    labels = np.arange(n) % 10
    images = rng.integers(0, 60, (n, size, size, 1), dtype=np.uint8)
    for i, c in enumerate(labels):
        images[i, c + 1, 2:-2, 0] = 230
    return images, labels.astype(np.int64)
(xtr, ytr), (xte, yte) = make(240, 28), make(60, 28)
ds = Dataset(name="fashion-mnist", classes=FASHION_MNIST_CLASSES, train_images=xtr,
             train_labels=ytr, test_images=xte, test_labels=yte, mean=(0.2,), std=(0.3,),
             source="toy")
class Stop(Callback):  # Ctrl-C at epoch 2 step 3: the mid-epoch checkpoint and its resume
    def on_batch_end(self, run):
        if run.epoch == 1 and run.step_in_epoch == 3 and sys.argv[2] == "interrupt":
            raise KeyboardInterrupt
cfg = TrainConfig(model="simple_cnn", dataset="fashion-mnist", epochs=3, batch_size=32, lr=0.05,
                  augment="default,rotate=10,cutout=4", ema=0.9, val_fraction=0.2,
                  device="cpu", out=sys.argv[1], quiet=True, log_every_s=0)
try:
    train(cfg, [Stop()], dataset=ds, log=False)
except KeyboardInterrupt:
    import dataclasses
    train(dataclasses.replace(cfg, resume=True), dataset=ds, log=False)
"""


@pytest.fixture(scope="module")
def pre_tasks_src(tmp_path_factory):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("git history unavailable: cannot extract the engine before tasks")
    tar = tmp_path_factory.mktemp("pretasks") / "src.tar"
    done = subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(tar), PRE_TASKS, "src"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"commit {PRE_TASKS} unavailable in this checkout: {done.stderr.strip()}")
    with tarfile.open(tar) as t:
        t.extractall(tar.parent, filter="data")
    return tar.parent / "src"


def _image_metrics(src: Path, out: Path, mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    subprocess.run([sys.executable, "-c", _IMAGE_RUN, str(out), mode], env=env, check=True,
                   capture_output=True, text=True)
    metrics = json.loads((out / "metrics.json").read_text())
    drop = ("time", "per_s", "environment")
    return {"metrics": {k: v for k, v in metrics.items()
                        if not any(d in k for d in drop) and k != "history"},
            "history": [{k: v for k, v in r.items() if not any(d in k for d in drop)}
                        for r in metrics["history"]],
            "model": torch.load(out / "model.pt", weights_only=True)}


@pytest.mark.slow  # four tiny runs in their own processes: about 10 s each on 2 cores
@pytest.mark.parametrize("mode", ["straight", "interrupt"])
def test_image_runs_are_bit_identical_to_the_engine_before_tasks(pre_tasks_src, tmp_path, mode):
    before = _image_metrics(pre_tasks_src, tmp_path / "before", mode)
    now = _image_metrics(REPO / "src", tmp_path / "now", mode)
    # the same operations in the same order on the same machine and thread count: exact
    assert now["history"] == before["history"]
    assert now["metrics"] == before["metrics"]
    assert now["model"].keys() == before["model"].keys()
    for k, v in before["model"].items():
        assert torch.equal(now["model"][k], v), k


# ------------------------------------------------------------------------------------- text
@pytest.fixture(scope="module")
def sst_dir(tmp_path_factory, write_sst):
    return write_sst(tmp_path_factory.mktemp("sst") / "sst", np.random.default_rng(0))


@pytest.fixture
def text_config(sst_dir, tmp_path):
    return TrainConfig(model="bag_of_embeddings", dataset="sst5", data_dir=str(sst_dir),
                       model_kwargs={"embed_dim": 16, "dropout": 0.2}, epochs=3, batch_size=20,
                       lr=0.02, optimizer="adamw", weight_decay=0.0, schedule="constant",
                       warmup=0.0, label_smoothing=0.0, device="cpu", out=str(tmp_path / "run"),
                       quiet=True)


def test_text_run_learns_the_rule_and_tests_the_best_dev_epoch(text_config):
    cfg = dataclasses.replace(text_config, epochs=6, lr=0.05)
    t = Trainer(cfg, log=False)
    result = t.fit()
    assert t.task.name == "text_classification" and t.task.split_size("train") == 300
    # the rule is a linear function of word counts, which a mean of word vectors nearly
    # captures. Over seeds 0-4 this run reached 0.74-0.87 test accuracy (measured while writing
    # this test); the most frequent class is far below 0.6
    assert result.test_accuracy > 0.6
    labels = np.bincount(t.task.data.test.labels, minlength=5)
    assert labels.max() / labels.sum() < 0.5
    best = max(range(6), key=lambda e: result.history[e]["val_accuracy"])
    assert result.best_epoch == best + 1  # the first epoch of the best dev accuracy
    assert result.metrics()["tested_epoch"] == result.best_epoch
    # the tested weights are the best epoch's: best.pt == model.pt
    out = Path(text_config.out)
    best_w = torch.load(out / "best.pt", weights_only=True)
    final_w = torch.load(out / "model.pt", weights_only=True)
    assert all(torch.equal(best_w[k], final_w[k]) for k in best_w)
    assert (out / "vocab.txt").read_text().splitlines()[:2] == ["<pad>", "<unk>"]
    rows = (out / "history.csv").read_text().splitlines()
    assert len(rows) == 7 and rows[0].startswith("epoch,train_loss,train_accuracy")


def test_text_batches_are_training_examples_padded_to_their_own_longest(text_config):
    seen = []

    class Record(Callback):
        def on_batch_begin(self, run):
            (tokens, lengths), y = run.batch
            seen.append((tokens.clone(), lengths.clone(), y.clone()))

    cfg = dataclasses.replace(text_config, epochs=1, out=None)
    t = Trainer(cfg, [Record()], log=False)
    t.fit()
    train = {tuple(t.task.vocab.encode(w).tolist()): int(c)
             for w, c in zip(t.task.data.train.tokens, t.task.data.train.labels, strict=True)}
    assert len(seen) == 300 // 20
    rows = 0
    for tokens, lengths, y in seen:
        assert tokens.shape[1] == int(lengths.max())  # padded to its own longest sentence
        for row, n, label in zip(tokens, lengths, y, strict=True):
            assert (row[n:] == 0).all() and (row[:n] != 0).all()
            assert train[tuple(row[:n].tolist())] == int(label)  # a training sentence, its label
            rows += 1
    assert rows == 300


def test_bucketed_order_is_a_seeded_permutation_of_similar_lengths():
    lengths = np.random.default_rng(1).integers(1, 57, 2345)
    a, b = bucketed_order(lengths, 25, seed=7), bucketed_order(lengths, 25, seed=7)
    assert np.array_equal(a, b) and not np.array_equal(a, bucketed_order(lengths, 25, seed=8))
    assert sorted(a.tolist()) == list(range(2345))
    full = len(lengths) // 25
    spread = [np.ptp(lengths[a[k * 25:(k + 1) * 25]]) for k in range(full)]
    random = [np.ptp(lengths[k * 25:(k + 1) * 25]) for k in range(full)]
    # 1,250 sentences per chunk over 56 lengths: each batch spans at most 2 lengths
    assert max(spread) <= 2 and np.mean(random) > 40


@pytest.mark.parametrize("model, kwargs", [
    ("kim_cnn", {"embed_dim": 8, "maps": 4}),
    ("lstm", {"embed_dim": 8, "hidden_size": 6}),
])
def test_text_run_interrupted_mid_epoch_resumes_bit_identically(text_config, tmp_path, model,
                                                                kwargs, resumes_bit_identically):
    cfg = dataclasses.replace(text_config, model=model, model_kwargs=kwargs, ema=0.9,
                              task_kwargs={"train_on": "phrases", "max_norm": 0.5})
    ref, second = resumes_bit_identically(cfg, tmp_path / "straight", epoch=2, step=4)
    strip = [{k: v for k, v in r.items() if "time" not in k and "per_s" not in k}
             for r in ref.history]
    assert strip == [{k: v for k, v in r.items() if "time" not in k and "per_s" not in k}
                     for r in second.history]
    assert second.result.test_accuracy == ref.result.test_accuracy
    # phrases: every distinct labelled span of the training trees, more than the sentences
    assert ref.task.split_size("train") > 300
    # Kim's max-norm, set below the initial row norms so that it binds: every row of the last
    # layer ends at norm <= 0.5, and some at the bound
    norms = ref.model.classifier[-1].weight.detach().norm(dim=1)
    assert float(norms.max()) <= 0.5 + 1e-6 and float(norms.max()) > 0.5 - 1e-4


def test_text_run_folder_loads_back_and_predicts_its_test_logits(text_config):
    Trainer(text_config, log=False).fit()
    run = load_run(text_config.out)
    saved = np.load(Path(text_config.out) / "test_predictions.npz")
    from cnnlab.data.sst import Vocabulary, encode_split, load_sst

    words = (Path(text_config.out) / "vocab.txt").read_text().splitlines()
    test = encode_split(load_sst(text_config.data_dir).test, Vocabulary(tuple(words)))
    with torch.no_grad():
        probs = torch.softmax(run.model(test.tokens, test.lengths), 1).numpy()
    np.testing.assert_allclose(probs, saved["probs"], rtol=0, atol=1e-6)
    assert run.data["builder"]["vocab_size"] == len(words)


def test_cli_trains_kim_cnn_on_sst5(text_config, tmp_path, capsys):
    from cnnlab.cli import main

    out = tmp_path / "cli"
    code = main(["train", "--model", "kim_cnn", "--dataset", "sst5", "--data-dir",
                 text_config.data_dir, "--model-kw", "embed_dim=8", "--model-kw", "maps=4",
                 "--task-kw", "train_on=phrases", "--epochs", "1", "--batch-size", "50",
                 "--optimizer", "adamw", "--lr", "0.01", "--weight-decay", "0",
                 "--label-smoothing", "0", "--device", "cpu", "--quiet", "--out", str(out)])
    assert code == 0
    assert "test accuracy" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["task_kwargs"] == {"train_on": "phrases"}
    assert config["data"]["train_on"] == "phrases" and config["data"]["num_test"] == 100


def test_prior_sentences_trains_with_the_logit_adjusted_loss(text_config):
    """prior=sentences: the training loss is the cross-entropy of logits + log pi_phrases -
    log pi_sentences (counts + 1, recounted here), checked in float64; on sentences the shift
    is 0 and the option changes nothing."""
    from cnnlab.engine.text_task import prior_shift

    cfg = dataclasses.replace(text_config, task_kwargs={"train_on": "phrases",
                                                        "prior": "sentences"})
    t = Trainer(cfg, log=False)
    phrases = t.task._splits["train"].labels.numpy()
    sentences = t.task.data.train_sentences.labels
    p = (np.bincount(phrases, minlength=5) + 1) / (len(phrases) + 5)
    q = (np.bincount(sentences, minlength=5) + 1) / (len(sentences) + 5)
    np.testing.assert_allclose(prior_shift(phrases, sentences, 5), np.log(p / q), rtol=1e-12)
    assert np.ptp(np.log(p / q)) > 0.1  # the fake trees' phrases are more neutral too
    logits = torch.randn(7, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 4, 0, 4])
    want = torch.nn.functional.cross_entropy(logits + torch.from_numpy(np.log(p / q)), y)
    torch.testing.assert_close(t.task.loss(logits, y).double(), want, rtol=1e-6, atol=1e-6)
    assert t.task.data_info()["prior"] == "sentences"
    plain = Trainer(dataclasses.replace(cfg, task_kwargs={"prior": "sentences"}), log=False)
    assert not plain.task._shift.any()


@pytest.mark.parametrize("changes, message", [
    ({"model": "simple_cnn"}, "simple_cnn is an image classification model; data set 'sst5' is text classification"),
    ({"task_kwargs": {"train_on": "words"}}, "--task-kw train_on='words': must be one of"),
    ({"task_kwargs": {"vocab": 3}}, "--task-kw vocab: not an option of data set 'sst5'"),
    ({"task_kwargs": {"min_freq": 0}}, "--task-kw min_freq=0: must be an integer >= 1"),
    ({"task_kwargs": {"prior": "test"}}, "--task-kw prior='test': must be one of train, sentences"),
    ({"augment": "flip"}, "--augment 'flip': sentences have no augmentation"),
    ({"resolution": 0.5}, "--resolution applies to images"),
    ({"tta": True}, "--tta (mirror-image test-time augmentation) applies to images"),
    ({"subset": 301}, "subset must be in [1, 300] for sst5"),
    ({"dataset": "imdb"}, "unknown dataset 'imdb'; choose one of"),
])
def test_bad_text_settings_are_one_line_errors(text_config, changes, message):
    with pytest.raises(UserError) as err:
        Trainer(dataclasses.replace(text_config, **changes), log=False)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not Path(text_config.out).exists()  # nothing written


def test_image_data_refuses_text_models_and_task_options(toy):
    cfg = TrainConfig(model="kim_cnn", dataset="fashion-mnist", device="cpu", epochs=1)
    with pytest.raises(UserError, match="kim_cnn is a text classification model; data set "
                                        "'fashion-mnist' is image classification"):
        Trainer(cfg, dataset=toy, log=False)
    with pytest.raises(UserError, match="--task-kw train_on: not an option of data set "
                                        "'fashion-mnist' \\(its options: none\\)"):
        Trainer(dataclasses.replace(cfg, model="simple_cnn",
                                    task_kwargs={"train_on": "phrases"}), dataset=toy, log=False)
