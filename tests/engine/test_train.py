"""The loop's events and hooks, the CLI end to end, load_run, and real Fashion-MNIST learning."""

import dataclasses
import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.engine import (
    Callback,
    Event,
    Trainer,
    TrainConfig,
    TrainingInterrupted,
    load_run,
    train,
)
from cnnlab.errors import DataNotFoundError, UserError

FMNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def __getattribute__(self, name):
        if name.startswith("on_") and name != "on_exception":
            events = object.__getattribute__(self, "events")
            return lambda run: events.append((name, run.epoch, run.step_in_epoch))
        return object.__getattribute__(self, name)


def test_events_fire_in_order(config, toy, make_model):
    rec = Recorder()
    cfg = dataclasses.replace(config, epochs=2, batch_size=96, out=None)  # 192 train -> 2 steps
    Trainer(cfg, [rec], model=make_model(), dataset=toy, log=False).fit()
    names = [e[0] for e in rec.events]
    epoch = ["on_epoch_begin"] + ["on_batch_begin", "on_after_backward", "on_batch_end"] * 2 + [
        "on_validation_end", "on_epoch_end"]
    assert names == ["on_train_begin"] + epoch * 2 + ["on_train_end"]
    assert [e.value for e in Event][:-1] == sorted(set(names), key=names.index)
    # run.epoch / run.step_in_epoch as each hook sees them
    assert rec.events[2:5] == [("on_batch_begin", 0, 0), ("on_after_backward", 0, 0),
                               ("on_batch_end", 0, 1)]


def test_after_backward_sees_the_gradients_the_optimizer_applies(config, toy, make_model):
    """Plain SGD (no momentum, no decay): w_new = w_old - lr * grad, as the hook saw grad."""

    class Check(Callback):
        checked = 0

        def on_after_backward(self, run):
            self.before = [(p.detach().clone(), p.grad.detach().clone())
                           for p in run.model.parameters()]
            self.norm = torch.linalg.vector_norm(torch.stack(
                [torch.linalg.vector_norm(g) for _, g in self.before]))  # a grad-norm hook

        def on_batch_end(self, run):
            assert self.norm > 0
            for p, (w, g) in zip(run.model.parameters(), self.before):
                torch.testing.assert_close(p.detach(), w - run.lr * g, atol=1e-7, rtol=1e-6)
            self.checked += 1

    check = Check()
    cfg = dataclasses.replace(config, epochs=1, momentum=0.0, weight_decay=0.0, ema=0.0, out=None)
    Trainer(cfg, [check], model=make_model(), dataset=toy, log=False).fit()
    assert check.checked == 6


def test_toy_run_learns_and_reports(config, toy, make_model):
    cfg = dataclasses.replace(config, epochs=4, augment="none", ema=0.0, out=None, lr=0.1)
    result = train(cfg, model=make_model(), dataset=toy, log=False)
    # bars at row c make the toy classes easy; seeds 0-5 (tests/measure_margins.py): 1.000 each
    assert result.test_accuracy > 0.8
    assert result.best_val_accuracy is not None and 1 <= result.best_epoch <= 4
    assert len(result.history) == 4 and result.images_per_s > 0
    assert result.confusion.sum() == 60 and len(result.per_class) == 10
    m = result.metrics()
    assert m["epochs_completed"] == 4 and m["num_train"] == 192 and m["num_val"] == 48


def test_bad_settings_are_one_line_errors(config, toy, make_model):
    for change, message in [({"optimizer": "adam"}, "optimizer must be one of"),
                            ({"lr": 0}, "--lr must be > 0"),
                            ({"dataset": "cifar10"}, "dataset given is 'fashion-mnist'"),
                            ({"augment": "warp"}, "unknown augmentation 'warp'"),
                            ({"device": "tpu"}, "device must be"),
                            ({"resume": True, "out": None}, "resume needs an output directory")]:
        with pytest.raises(UserError, match=message):
            Trainer(dataclasses.replace(config, **change), model=make_model(), dataset=toy,
                    log=False)
    with pytest.raises(UserError, match="unknown model 'resnet9000'"):
        Trainer(dataclasses.replace(config, model="resnet9000"), dataset=toy, log=False)
    assert not Path(config.out).exists()  # nothing written for a bad model name


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu(config, toy, make_model):
    with pytest.raises(UserError, match="CUDA is not available"):
        Trainer(dataclasses.replace(config, device="cuda"), model=make_model(), dataset=toy)


def test_tensorboard_missing_is_a_clear_error(config, toy, make_model, monkeypatch):
    # tensorboard is an optional extra: simulate a machine without it
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(UserError, match=r"pip install 'cnnlab\[tensorboard\]'"):
        Trainer(dataclasses.replace(config, tensorboard=True), model=make_model(), dataset=toy)


def test_tensorboard_logs_every_epoch(config, toy, make_model):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    t = Trainer(dataclasses.replace(config, tensorboard=True), model=make_model(), dataset=toy,
                log=False)
    t.fit()
    events = EventAccumulator(str(Path(config.out) / "tensorboard"))
    events.Reload()
    assert {"train_loss", "val_accuracy", "lr"} <= set(events.Tags()["scalars"])
    logged = [(e.step, e.value) for e in events.Scalars("val_accuracy")]
    expected = [(r["epoch"], r["val_accuracy"]) for r in t.history]
    assert [s for s, _ in logged] == [s for s, _ in expected] == [1, 2]
    assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)


# ------------------------------------------------------------------------------------- CLI

def write_idx_dir(folder: Path, n_train=400, n_test=100):
    """Tiny Fashion-MNIST IDX files (gz) whose class is a bright horizontal bar at row 2c+4."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 80, (n, 28, 28), dtype=np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 * c + 4, 4:24] = 250
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            header = bytes([0, 0, 8, arr.ndim]) + np.asarray(arr.shape, ">i4").tobytes()
            with gzip.open(folder / f"{prefix}-{kind}-ubyte.gz", "wb") as f:
                f.write(header + arr.tobytes())


OUTPUTS = ["metrics.json", "history.csv", "curves_loss.png", "curves_accuracy.png",
           "confusion_matrix.png", "per_class.json", "per_class.csv", "config.json", "model.pt",
           "best.pt", "checkpoint.pt", "test_predictions.npz"]


def test_cli_end_to_end_writes_every_output_and_load_run_reads_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # keep the suite's setting
    write_idx_dir(tmp_path / "fm")
    out = tmp_path / "run"
    args = ["train", "--model", "simple_cnn", "--dataset", "fashion-mnist", "--data-dir",
            str(tmp_path / "fm"), "--cache-dir", str(tmp_path / "cache"), "--epochs", "2",
            "--batch-size", "32", "--lr", "0.05", "--width", "0.25", "--subset", "300",
            "--out", str(out), "--quiet", "--threads", "1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "epoch 2/2" in printed and "test accuracy" in printed
    for name in OUTPUTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "best_val_accuracy", "history", "images_per_s", "wall_time_s",
                "train_time_s", "environment"):
        assert key in metrics, key
    assert metrics["environment"]["torch"] == torch.__version__
    assert "git_commit" in metrics["environment"]
    assert len(metrics["history"]) == 2 and metrics["num_test"] == 75  # ceil(300 * 100 / 400)
    history = (out / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr")
    assert len(history) == 3
    per_class = json.loads((out / "per_class.json").read_text())
    assert [r["class"] for r in per_class][:2] == ["T-shirt/top", "Trouser"]
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["width"] == 0.25 and saved["data"]["image_size"] == [28, 28]

    # load_run gives back the model whose test accuracy metrics.json reports
    run = load_run(out)
    sp = run.splits()
    logits = run.predict(sp.test_images)
    acc = (logits.argmax(1) == sp.test_labels).double().mean().item()
    assert acc == pytest.approx(metrics["test_accuracy"], abs=1e-12)
    assert run.classes[0] == "T-shirt/top" and not run.model.training
    assert load_run(out, weights="best").weights == "best"
    with pytest.raises(UserError, match="weights must be one of"):
        load_run(out, weights="worst")
    with pytest.raises(DataNotFoundError, match="not a cnnlab run folder"):
        load_run(tmp_path)
    # weights that no longer fit the model (here: the saved width edited) are one clear line
    other = tmp_path / "edited"
    other.mkdir()
    for name in ("config.json", "model.pt"):
        (other / name).write_bytes((out / name).read_bytes())
    edited = json.loads((other / "config.json").read_text())
    edited["config"]["width"] = 0.5
    (other / "config.json").write_text(json.dumps(edited))
    with pytest.raises(UserError, match="does not fit the 'simple_cnn' model.*size mismatch"):
        load_run(other)

    # --resume with only --out continues (here: a finished run is re-evaluated)
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0
    # a different setting is refused, naming it
    assert main(["train", "--out", str(out), "--resume", "--epochs", "3"]) == 2
    assert "epochs: saved 2, now 3" in capsys.readouterr().err


def test_cli_interrupt_exits_130_with_a_resume_line(tmp_path, capsys, monkeypatch):
    import cnnlab.engine

    def interrupted(config):
        raise TrainingInterrupted("interrupted; saved a checkpoint at epoch 1 step 3/9 in X; "
                                  "resume with the same command plus --resume", None)

    monkeypatch.setattr(cnnlab.engine, "train", interrupted)
    rc = main(["train", "--model", "simple_cnn", "--dataset", "fashion-mnist", "--out",
               str(tmp_path / "r")])
    assert rc == 130
    assert "cnnlab: interrupted; saved a checkpoint" in capsys.readouterr().err


def test_cli_missing_required(tmp_path, capsys):
    assert main(["train", "--dataset", "fashion-mnist", "--out", str(tmp_path / "r")]) == 2
    assert "--model required" in capsys.readouterr().err
    assert main(["train", "--model", "simple_cnn", "--dataset", "fashion-mnist"]) == 2
    assert "--out DIR is required" in capsys.readouterr().err


# --------------------------------------------------------------------------- real data

@pytest.mark.skipif(not FMNIST_SYSTEM.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_learns(tmp_path):
    """A few seconds on real data: 2,000 images, 2 epochs, far above chance (10%)."""
    ds = load_dataset("fashion-mnist", cache_dir=tmp_path / "cache")
    cfg = TrainConfig(model="simple_cnn", dataset="fashion-mnist", width=0.5, subset=2000,
                      epochs=2, batch_size=64, lr=0.1, device="cpu", quiet=True)
    result = train(cfg, dataset=ds, log=False)
    # seeds 0-5 (tests/measure_margins.py, AMD EPYC): 0.674 / 0.680 / 0.701 / 0.692 / 0.740 /
    # 0.683 (min 0.674); train-loss drop 0.486 .. 0.568 (min 0.486)
    assert result.test_accuracy > 0.6, result.history
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_progress_bar_through_an_interrupted_and_resumed_run(config, toy, make_model, capsys):
    """The rich progress bar (the default without --quiet) survives a mid-epoch resume."""

    class StopAt(Callback):
        def on_batch_end(self, run):
            if run.epoch == 1 and run.step_in_epoch == 2:
                raise KeyboardInterrupt

    cfg = dataclasses.replace(config, quiet=False, log_every_s=0.0)
    with pytest.raises(TrainingInterrupted):
        Trainer(cfg, [StopAt()], model=make_model(), dataset=toy).fit()
    Trainer(dataclasses.replace(cfg, resume=True), model=make_model(), dataset=toy).fit()
    printed = capsys.readouterr().out
    assert printed.count("epoch 1/2") == 1 and printed.count("epoch 2/2") == 1
    assert "img/s" in printed and "val loss" in printed
