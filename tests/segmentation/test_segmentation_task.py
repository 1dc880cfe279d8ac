"""Binary segmentation through the engine (cnnlab.engine.segmentation_task): the run learns,
its reported IoU equals one recomputed from its saved predictions, an interrupted run resumes
bit-identically, a diverging run stops with one line, the folder loads back, the CLI trains it,
and settings that mean nothing here are one-line errors."""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.cli import main
from cnnlab.engine import TrainConfig, Trainer, load_run
from cnnlab.errors import TrainingDiverged, UserError
from cnnlab.segmentation import confusion_counts, summarize


def _png(a):
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def membranes(tmp_path_factory):
    """A learnable fake ISBI stack: 20 slices of 64x64 whose mask is 'pixel brighter than 128'
    (foreground = label 0 = the bright pixels), smoothed so that neighbours agree."""
    root = tmp_path_factory.mktemp("isbi")
    rng = np.random.default_rng(0)
    for sub in ("image", "label"):
        (root / "isbi2012-membrane" / sub).mkdir(parents=True)
    for i in range(20):
        blobs = rng.random((8, 8))
        img = np.kron(blobs, np.ones((8, 8)))  # 8x8 blocks
        img = (255 * img).astype(np.uint8)
        label = np.where(img > 128, 0, 255).astype(np.uint8)
        (root / "isbi2012-membrane" / "image" / f"{i}.png").write_bytes(_png(img))
        (root / "isbi2012-membrane" / "label" / f"{i}.png").write_bytes(_png(label))
    return root


@pytest.fixture
def config(membranes, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    return TrainConfig(model="unet", dataset="isbi2012", data_dir=str(membranes),
                       model_kwargs={"base": 4, "norm_layer": "bn"},
                       task_kwargs={"loss": "bce_dice", "size": 32}, val_fraction=2, epochs=4,
                       batch_size=4, lr=0.01, optimizer="adamw", weight_decay=0.0,
                       label_smoothing=0.0, seed=0, device="cpu", threads=1,
                       out=str(tmp_path / "run"), quiet=True)


def test_run_learns_and_its_iou_is_its_predictions(config):
    result = Trainer(dataclasses.replace(config, epochs=16), log=False).fit()
    m = result.metrics()
    # a 4-channel U-Net learns "bright block" in 16 epochs of 14 slices: measured test IoU
    # 0.885-0.919 over seeds 0-2 (pixel accuracy 0.941-0.958); predicting everything as
    # foreground scores about 0.5 (half the blocks are bright), 8 epochs 0.77-0.79
    assert m["test_iou"] > 0.8 and m["test_pixel_accuracy"] > 0.9
    saved = np.load(Path(config.out) / "test_predictions.npz")
    assert list(saved["names"]) == ["16", "17", "18", "19"]  # the last slices (contiguous)
    pred, truth = saved["predicted"].astype(bool), saved["masks"].astype(bool)
    assert m["test_iou"] == pytest.approx((pred & truth).sum() / (pred | truth).sum())
    assert {"train_iou", "val_iou", "val_dice"} <= set(result.history[-1])
    assert result.best_epoch is not None and m["num_val"] == 2 and m["num_train"] == 14
    # the 2x2 pixel confusion (background / foreground) sums to every test pixel
    assert result.confusion.sum() == 4 * 32 * 32 and result.classes == ("background",
                                                                        "foreground")


def test_run_folder_loads_back_and_reproduces_its_test_metrics(config):
    Trainer(config, log=False).fit()
    run = load_run(config.out)
    saved = np.load(Path(config.out) / "test_predictions.npz")
    from cnnlab.data import load_segmentation, normalize, segmentation_splits

    ds = load_segmentation("isbi2012", data_dir=config.data_dir)
    sp = segmentation_splits(ds, size=(32, 32), val=2)
    with torch.no_grad():
        logits = run.model(normalize(sp.test_images, run.data["mean"], run.data["std"]))
    np.testing.assert_array_equal((logits[:, 0] > 0).numpy(), saved["predicted"].astype(bool))
    assert summarize(confusion_counts(logits, sp.test_masks.float()))["iou"] == pytest.approx(
        run.metrics["test_iou"])
    assert run.data["split"]["test_names"] == ["16", "17", "18", "19"]


@pytest.mark.parametrize("model, kwargs", [
    ("unet", {"base": 4, "norm_layer": "bn"}),
    ("unet_mobilenet_v2", {"decoder_width": 0.25, "freeze_encoder": True}),
])
def test_interrupted_run_resumes_bit_identically(config, tmp_path, model, kwargs,
                                                 resumes_bit_identically):
    cfg = dataclasses.replace(config, model=model, model_kwargs=kwargs,
                              width=0.35 if model != "unet" else 1.0, epochs=3,
                              task_kwargs={"loss": "iou", "size": 32})
    ref, second = resumes_bit_identically(cfg, tmp_path / "straight", epoch=2, step=2)
    assert second.result.extra["test_iou"] == ref.result.extra["test_iou"]


def test_divergence_stops_with_one_line(config):
    cfg = dataclasses.replace(config, lr=1e12, optimizer="sgd", momentum=0.0, epochs=2)
    with pytest.raises(TrainingDiverged, match="NaN|inf"):
        Trainer(cfg, log=False).fit()


def test_cli_trains_a_segmentation_run(config, capsys):
    code = main(["train", "--model", "unet", "--dataset", "isbi2012", "--data-dir",
                 config.data_dir, "--model-kw", "base=4", "--task-kw", "loss=dice",
                 "--task-kw", "size=32", "--label-smoothing", "0", "--epochs", "1",
                 "--batch-size", "4", "--optimizer", "adamw", "--lr", "0.01", "--threads", "1",
                 "--device", "cpu", "--quiet", "--out", config.out])
    assert code == 0, capsys.readouterr().err
    assert (Path(config.out) / "test_predictions.npz").is_file()


def test_cli_starts_the_encoder_from_torchvision_weights_and_smooths_no_labels(
        config, tmp_path, capsys):
    """``--encoder-weights`` with torchvision's MobileNetV2 state dict and a frozen encoder: the
    saved model's encoder is torchvision's (RGB stem summed to the 1 membrane channel), bit for
    bit after training; no ``--label-smoothing`` given: the segmentation default 0 applies."""
    import torchvision

    torch.manual_seed(3)
    tv = torchvision.models.mobilenet_v2()
    torch.save(tv.state_dict(), tmp_path / "tv.pt")
    code = main(["train", "--model", "unet_mobilenet_v2", "--dataset", "isbi2012", "--data-dir",
                 config.data_dir, "--model-kw", "freeze_encoder=true", "--encoder-weights",
                 str(tmp_path / "tv.pt"), "--task-kw", "size=32", "--epochs", "1",
                 "--batch-size", "4", "--optimizer", "adamw", "--lr", "0.01", "--threads", "1",
                 "--device", "cpu", "--quiet", "--out", config.out])
    assert code == 0, capsys.readouterr().err
    run = load_run(config.out)
    assert run.config.encoder_weights == str(tmp_path / "tv.pt")
    assert run.config.label_smoothing == 0.0
    mine = run.model.encoder.features.state_dict()
    theirs = tv.features.state_dict()
    assert torch.equal(mine["0.0.weight"], theirs["0.0.weight"].sum(1, keepdim=True))
    for key in ("1.conv.0.0.weight", "17.conv.2.weight", "16.conv.3.running_var"):
        assert torch.equal(mine[key], theirs[key]), key


@pytest.mark.parametrize("model, weights, message", [
    ("unet_mobilenet_v2", "missing.pt", "--encoder-weights .*missing.pt does not exist"),
    ("unet", "tv.pt", "--encoder-weights: unet has no MobileNetV2 encoder"),
])
def test_bad_encoder_weights_are_one_line(config, tmp_path, capsys, model, weights, message):
    torch.save({"features.0.0.weight": torch.zeros(32, 3, 3, 3)}, tmp_path / "tv.pt")
    code = main(["train", "--model", model, "--dataset", "isbi2012", "--data-dir",
                 config.data_dir, "--encoder-weights", str(tmp_path / weights), "--task-kw",
                 "size=32", "--epochs", "1", "--device", "cpu", "--quiet", "--out", config.out])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert re.search(message, err), err


@pytest.mark.parametrize("changes, message", [
    ({"task_kwargs": {"loss": "focal"}}, "--task-kw loss='focal': must be one of bce, iou"),
    ({"task_kwargs": {"size": 100}}, "image size 100x100 is not divisible by 32"),
    ({"resolution": 0.5}, "--resolution does not apply to segmentation"),
    ({"label_smoothing": 0.1}, "add --label-smoothing 0"),
    ({"augment": "flip"}, "segmentation uses the data set's joint image\\+mask flips"),
    ({"model": "resnet20", "model_kwargs": {}}, "resnet20 is an image classification model"),
])
def test_bad_segmentation_settings_are_one_line_errors(config, changes, message):
    with pytest.raises(UserError, match=message):
        Trainer(dataclasses.replace(config, **changes), log=False)


def test_encoder_weights_with_a_given_model_is_an_error_not_ignored(config, tmp_path):
    from cnnlab import models

    torch.save({}, tmp_path / "w.pt")
    cfg = dataclasses.replace(config, model="unet_mobilenet_v2", model_kwargs={},
                              encoder_weights=str(tmp_path / "w.pt"))
    net = models.create("unet_mobilenet_v2", num_classes=1, in_chans=1, width=0.35)
    with pytest.raises(UserError, match="encoder_weights is set and a model was given"):
        Trainer(cfg, model=net, log=False)
