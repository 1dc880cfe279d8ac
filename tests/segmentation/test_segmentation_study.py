"""The segmentation study: its plan, its bad inputs through the CLI (one line, exit 2), and a
tiny run end to end on the real horses (budget smoke) whose results are checked against the
runs' own saved predictions."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from cnnlab.cli import main
from cnnlab.data.segmentation import find_segmentation_source
from cnnlab.errors import DataError
from cnnlab.studies.segmentation import BUDGETS, plan_runs, run_study


def test_plan_has_the_noise_seeds_and_every_loss_and_encoder():
    runs = plan_runs(BUDGETS["quick"])
    by = {(r.model, r.loss, r.encoder): [] for r in runs}
    for r in runs:
        by[(r.model, r.loss, r.encoder)].append(r.seed)
    assert by[("unet_mobilenet_v2", "bce", "pretrained-frozen")] == [0, 1, 2]
    assert by[("unet_mobilenet_v2", "iou", "pretrained-frozen")] == [0, 1, 2]
    assert {loss for _, loss, _ in by} == {"bce", "iou", "dice", "bce_dice"}
    assert {e for m, _, e in by if m == "unet_mobilenet_v2"} == {
        "pretrained-frozen", "pretrained-trainable", "random-frozen", "random-trainable"}
    assert ("unet", "bce", "-") in by
    assert len({r.key for r in runs}) == len(runs)


def _payload(budget: str, best_iou: float) -> dict:
    """Results of BCE and IoU on the course's setting (2 seeds each) and one trainable run."""
    def row(config, loss, encoder, seed, iou):
        return {"config": config, "loss": loss, "encoder": encoder, "seed": seed,
                "model": "unet_mobilenet_v2", "test_iou": iou,
                "test_dice": 2 * iou / (1 + iou),
                "test_precision": 0.8, "test_recall": 0.7, "test_pixel_error": 0.1,
                "train_seconds": 10.0}
    ref = "unet_mobilenet_v2, pretrained-frozen, "
    runs = [row(ref + "bce", "bce", "pretrained-frozen", 0, 0.60),
            row(ref + "bce", "bce", "pretrained-frozen", 1, 0.62),
            row(ref + "iou", "iou", "pretrained-frozen", 0, 0.61),
            row(ref + "iou", "iou", "pretrained-frozen", 1, 0.63),
            row("unet_mobilenet_v2, random-trainable, bce", "bce", "random-trainable", 0, best_iou)]
    return {"dataset": "horse", "runs": runs, "budget": {"name": budget, "unet_base": 8},
            "costs": {}, "split": {"num_test": 66}}


@pytest.mark.parametrize("budget, best, words", [
    ("standard", 0.85, "is reached, by +0.050"),
    ("standard", 0.78, "is missed, by 0.020"),
    ("gpu", 0.81, "is reached, by +0.010"),
    ("quick", 0.85, "set for the standard budget and is reached already here"),
    ("quick", 0.70, "neither met nor refuted"),
])
def test_the_goal_is_judged_at_the_budgets_it_is_set_for(budget, best, words):
    from cnnlab.studies._segmentation_findings import findings

    summary = [f for f in findings(_payload(budget, best)) if f.section == "summary"]
    assert len(summary) == 1
    claim = summary[0].claim
    assert claim.startswith("Best configuration: unet_mobilenet_v2, random-trainable, bce, "
                            f"test IoU {best:.3f}")
    assert words in claim, claim
    # the noise it states is the pooled std of the two 2-seed configurations (hand: both 0.01414)
    if budget != "quick":
        assert "among 3 configurations; the one-run noise is s = 0.014." in claim


def _png(a):
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _fake_isbi(root: Path, *, mismatch=False, grey=False) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("image", "label"):
        (root / "isbi2012-membrane" / sub).mkdir(parents=True)
    for i in range(6):
        img = rng.integers(0, 256, (64, 64), dtype=np.uint8)
        lab = np.where(rng.random((64, 64)) < 0.2, 0, 255).astype(np.uint8)
        if grey and i == 3:
            lab = img
        if mismatch and i == 2:
            lab = lab[:48]
        (root / "isbi2012-membrane" / "image" / f"{i}.png").write_bytes(_png(img))
        (root / "isbi2012-membrane" / "label" / f"{i}.png").write_bytes(_png(lab))
    return root


def _cli(capsys, tmp_path, data, *extra):
    code = main(["study", "segmentation", "--dataset", "isbi2012", "--data-dir", str(data),
                 "--budget", "smoke", "--device", "cpu", "--quiet", "--out",
                 str(tmp_path / "out"), *extra])
    out, err = capsys.readouterr()
    return code, err


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))


def test_image_mask_size_mismatch_exits_2(tmp_path, capsys, cache):
    code, err = _cli(capsys, tmp_path, _fake_isbi(tmp_path / "d", mismatch=True))
    assert code == 2 and err.count("\n") == 1
    assert "2.png is 64x64 pixels but its mask" in err and "same size" in err


def test_non_binary_mask_exits_2(tmp_path, capsys, cache):
    code, err = _cli(capsys, tmp_path, _fake_isbi(tmp_path / "d", grey=True))
    assert code == 2 and err.count("\n") == 1 and "3.png is not a binary mask" in err


def test_size_not_divisible_by_32_exits_2(tmp_path, capsys, cache):
    code, err = _cli(capsys, tmp_path, _fake_isbi(tmp_path / "d"), "--size", "100")
    assert code == 2 and err.count("\n") == 1
    assert "image size 100x100 is not divisible by 32" in err


def test_encoder_weights_of_another_model_exit_2(tmp_path, capsys, cache):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pt")
    code, err = _cli(capsys, tmp_path, _fake_isbi(tmp_path / "d"), "--encoder-weights",
                     str(tmp_path / "resnet18.pt"))
    assert code == 2 and err.count("\n") == 1
    assert "resnet18.pt is not a MobileNetV2" in err
    assert not list((tmp_path / "out").glob("runs/mnv2-*"))  # refused before any training


def _horses():
    try:
        return find_segmentation_source("horse")
    except DataError:
        pytest.skip("weizmann-horse.tar.gz not found (set CNNLAB_DATA)")


@pytest.mark.slow
def test_tiny_study_end_to_end_on_real_horses(tmp_path, monkeypatch):
    src = _horses()
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    # a (random) cnnlab mobilenet_v2 weights file as the "pretrained" encoder: skips the CIFAR
    # pretraining run, which the committed quick reports exercise
    from cnnlab import models

    torch.save(models.create("mobilenet_v2", width=0.35).state_dict(), tmp_path / "enc.pt")
    try:
        payload = run_study(tmp_path / "study", dataset="horse", data_dir=str(src),
                            budget="smoke", device="cpu", encoder_weights=str(tmp_path / "enc.pt"),
                            log=lambda line: None)
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "study"
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["runs"]) == len(plan_runs(BUDGETS["smoke"]))
    assert [r["key"] for r in payload["runs"]] == [r["key"] for r in saved["runs"]]
    for r in saved["runs"]:
        for key in ("dataset", "model", "loss", "encoder", "seed", "test_iou", "test_dice",
                    "train_seconds"):
            assert key in r, key
        # the test IoU equals the one recomputed here from the run's saved test predictions
        with np.load(Path(r["run_dir"]) / "test_predictions.npz") as z:
            pred, truth = z["predicted"].astype(bool), z["masks"].astype(bool)
            prob = z["probabilities"].astype(np.float32)
            clear = np.abs(prob - 0.5) > 1e-3  # float16 steps are 2.4e-4 near 0.5
            assert np.array_equal(pred[clear], prob[clear] > 0.5)
        iou = (pred & truth).sum() / max((pred | truth).sum(), 1)
        assert r["test_iou"] == pytest.approx(iou, abs=1e-9)
        assert 0 <= r["test_iou"] <= 1 and r["train_seconds"] > 0
    assert saved["split"]["num_test"] == 66 and len(saved["split"]["test_names"]) == 66
    assert saved["pretraining"]["source"] == "file"
    assert any(f["headline"] and "IoU loss vs BCE" in f["claim"] for f in saved["findings"])
    assert (out / "plots" / "overlays_best.png").is_file()
    assert (out / "plots" / "overlays_worst.png").is_file()
    md = (out / "report.md").read_text()
    assert "What this budget can and cannot tell apart" in md and "Predicted masks" in md
    # a second invocation reuses every run
    again = run_study(out, dataset="horse", data_dir=str(src), budget="smoke", device="cpu",
                      encoder_weights=str(tmp_path / "enc.pt"), log=lambda line: None)
    assert again["runs_trained"] == 0 and again["runs_reused"] == len(saved["runs"])
    assert os.path.isfile(out / "report.html")
