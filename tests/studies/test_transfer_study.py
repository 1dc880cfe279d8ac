"""The transfer study: the diagnosis rule on hand-made curves, the bad inputs (one line, exit 2),
and a tiny study end to end on real CIFAR-10 (both parts, re-run reuses everything)."""

import json

import numpy as np
import pytest
import torch

from cnnlab.cli import main
from cnnlab.data import find_source
from cnnlab.engine.checkpoint import load_weights
from cnnlab.errors import DataNotFoundError
from cnnlab.studies import get_study
from cnnlab.studies._transfer_findings import RULE, DiagnosisRule, diagnose
from cnnlab.studies.runner import run
from cnnlab.studies.transfer import Budget


# ------------------------------------------------------------------------- the diagnosis
def curves(clean, val, val_loss):
    return [{"epoch": i + 1, "clean_train_accuracy": c, "val_accuracy": v, "val_loss": lo,
             "train_accuracy": c - 0.1} for i, (c, v, lo) in enumerate(zip(clean, val, val_loss))]


def test_diagnosis_overfitting_underfitting_fine_on_hand_made_curves():
    # overfitting: clean train climbs to 0.98, validation plateaus at 0.55, and the val loss's
    # 3-epoch mean falls to (1.3 + 1.2 + 1.25) / 3 = 1.25 (epochs 2-4), then ends at
    # (1.4 + 1.5 + 1.6) / 3 = 1.5: +20%
    over = diagnose(curves([0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98],
                           [0.45, 0.5, 0.55, 0.56, 0.55, 0.56, 0.55],
                           [1.5, 1.3, 1.2, 1.25, 1.4, 1.5, 1.6]))
    assert over.verdict == "overfitting"
    assert over.gap == pytest.approx(0.43) and over.val_loss_min_epochs == (2, 4)
    assert over.val_loss_min == pytest.approx(1.25) and over.val_loss_final == pytest.approx(1.5)
    assert "gap +0.430" in over.because and "+20.0%" in over.because
    # underfitting: both low and close
    under = diagnose(curves([0.3, 0.35, 0.4, 0.41], [0.3, 0.34, 0.38, 0.39],
                            [1.9, 1.8, 1.75, 1.74]))
    assert under.verdict == "underfitting" and "clean train < 0.60" in under.because
    # fine: high and close, val loss still falling
    fine = diagnose(curves([0.6, 0.7, 0.75, 0.77], [0.58, 0.69, 0.71, 0.72],
                           [1.1, 0.9, 0.85, 0.84]))
    assert fine.verdict == "fine" and "gap <= 0.10" in fine.because


def test_diagnosis_needs_both_overfitting_signs_and_smooths_the_loss():
    # a large gap while the val loss is still falling: not (yet) overfitting
    gap_only = diagnose(curves([0.7, 0.9, 0.99, 0.99], [0.5, 0.6, 0.62, 0.62],
                               [1.5, 1.2, 1.1, 1.05]))
    assert gap_only.verdict == "fine" and "has not risen" in gap_only.because
    # a rising val loss with a small gap: fine (both must hold)
    rise_only = diagnose(curves([0.7, 0.75, 0.76, 0.77, 0.77], [0.7, 0.72, 0.7, 0.7, 0.7],
                                [0.8, 0.7, 0.7, 0.9, 0.9]))
    assert rise_only.verdict == "fine"
    # one noisy last epoch (+25% on its own) is not a 10% rise once smoothed over 3 epochs:
    # (1.2 + 1.2 + 1.5) / 3 = 1.3 vs the smoothed minimum 1.2: +8.3%
    spike = curves([0.6, 0.8, 0.9, 0.95, 0.97, 0.98], [0.4, 0.45, 0.5, 0.5, 0.5, 0.5],
                   [1.4, 1.2, 1.2, 1.2, 1.2, 1.5])
    assert diagnose(spike, DiagnosisRule(rise=0.10)).verdict == "fine"
    assert diagnose(spike, DiagnosisRule(rise=0.10, smooth=1)).verdict == "overfitting"
    assert f"{RULE.gap:.2f}" in RULE.words() and f"{1 + RULE.rise:.2f}" in RULE.words()


# ------------------------------------------------------------------------------ bad input
@pytest.fixture(scope="module")
def fake_cifar(tmp_path_factory, write_cifar):
    """Random pixels, 10 training images per class."""
    folder = tmp_path_factory.mktemp("fake") / "cifar-10-batches-py"
    write_cifar(folder, np.random.default_rng(0))
    return folder


@pytest.mark.parametrize("args, message", [
    (["--strategies", "linear,freeze"], "unknown strategy 'freeze'; choose from scratch, linear, "
                                        "partial, finetune"),
    (["--backbone", "vgg16"], "unknown backbone 'vgg16' (CIFAR variants); choose from resnet20"),
    (["--labels-per-class", "25"], "--labels-per-class 25 is more than the data has: class 'dog' "
                                   "has 10 training images"),
    (["--labels-per-class", "0"], "--labels-per-class must be >= 1"),
    (["--source-classes", "cat,dog", "--target-classes", "dog,truck"],
     "source and target classes overlap (dog)"),
    (["--target-classes", "dog,unicorn"], "--target-classes: unknown class 'unicorn'"),
    (["--seeds", "0"], "--seeds must be a whole number >= 1"),
])
def test_bad_input_is_one_line_and_exit_2(fake_cifar, tmp_path, capsys, args, message):
    code = main(["study", "transfer", "--data-dir", str(fake_cifar), "--device", "cpu",
                 "--out", str(tmp_path / "out"), "--quiet", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("cnnlab: error: ") and message in err, err
    assert not (tmp_path / "out" / "runs").exists()  # nothing trained


def test_weights_of_another_architecture_is_one_line_and_exit_2(fake_cifar, tmp_path, capsys):
    import torchvision

    path = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v2().state_dict(), path)
    code = main(["study", "transfer", "--data-dir", str(fake_cifar), "--device", "cpu",
                 "--out", str(tmp_path / "out"), "--quiet", "--weights", str(path),
                 "--backbone", "resnet18", "--labels-per-class", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"weights file {path} does not fit torchvision resnet18: it lacks conv1.weight" in err
    code = main(["study", "transfer", "--data-dir", str(fake_cifar), "--out",
                 str(tmp_path / "out2"), "--quiet", "--weights", str(path), "--backbone",
                 "resnet20"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "unknown backbone 'resnet20' for torchvision weights (--weights)" in err
    code = main(["study", "transfer", "--data-dir", str(fake_cifar), "--out",
                 str(tmp_path / "out3"), "--quiet", "--weights", str(tmp_path / "missing.pth")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "missing.pth does not exist" in err


# ---------------------------------------------------------------------- tiny, real data
def _real_cifar():
    try:
        return find_source("cifar10")
    except DataNotFoundError:
        return None


TINY = Budget("tiny", aug_subset=400, aug_val=100, aug_epochs=4, backbones=("resnet20",),
              resolution=0.5, pretrain_per_class=60, pretrain_epochs=2, labels=(4,),
              transfer_images=100, test_per_class=20, seeds=2, aug_batch=50, batch_size=20,
              eval_points=2)


@pytest.mark.slow
@pytest.mark.skipif(_real_cifar() is None, reason="needs CIFAR-10 (../shared/data or "
                                                 "$CNNLAB_DATA)")
def test_tiny_real_study_end_to_end(tmp_path):
    """Both parts on real CIFAR-10 (a few hundred images): every run is in results.json with
    its fields, the frozen backbones equal the pretrained one bit for bit (checked here from
    the run folders' files, independently of the study's own check), the diagnosis is the rule
    applied to the saved history, and a second invocation trains nothing."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        study = get_study("transfer")
        options = study.make_options(budget=TINY, device="cpu", out=str(tmp_path / "out"),
                                     quiet=True)
        outcome, files = run(study, options)
        again, _ = run(study, options)
    finally:
        torch.set_num_threads(old)
    p = json.loads(files["json"].read_text())
    aug = [r for r in p["runs"] if r["part"] == "augmentation"]
    tr = [r for r in p["runs"] if r["part"] == "transfer"]
    assert len(aug) == 3 * 2 and len(tr) == 4 * 2  # 3 settings x 2 seeds; 4 strategies x 2
    for r in aug:
        for k in ("augment", "final_clean_train_accuracy", "final_val_accuracy", "diagnosis",
                  "seed", "test_accuracy", "train_seconds"):
            assert r[k] is not None, k
        assert r["diagnosis"] == diagnose(r["history"]).verdict
        assert len(r["history"]) == 4 and "clean_train_accuracy" in r["history"][0]
    out = tmp_path / "out" / "runs"
    pre = load_weights(out / "pretrain-resnet20" / "model.pt")
    for r in tr:
        for k in ("strategy", "labels_per_class", "seed", "test_accuracy", "trainable_params",
                  "train_seconds"):
            assert r[k] is not None, k
        metrics = json.loads((out / r["key"] / "metrics.json").read_text())
        assert r["test_accuracy"] == metrics["test_accuracy"]
        final = load_weights(out / r["key"] / "model.pt")
        backbone = {k[len("backbone."):]: v for k, v in final.items() if k.startswith("backbone.")}
        same = {k for k, v in backbone.items() if torch.equal(v, pre[f"features.{k}"])}
        if r["strategy"] == "linear":
            assert same == set(backbone) and r["trainable_params"] == 64 * 5 + 5
            assert r["frozen"]["identical"] == r["frozen"]["tensors"] == len(backbone)
        elif r["strategy"] == "partial":
            assert same == {k for k in backbone if not k.startswith("3.")}
        elif r["strategy"] in ("finetune", "scratch"):
            assert any(k.endswith("running_mean") for k in set(backbone) - same)
    headline = [f["claim"] for f in p["findings"] if f["headline"]]
    assert any("Frozen means frozen" in c for c in headline)
    assert any("rule:" in c for c in headline)
    md = files["markdown"].read_text()
    for title in ("1. Augmentation and overfitting", "2. Transfer", "Diagnosis rule"):
        assert title in md
    assert len(list((tmp_path / "out" / "plots").glob("*.png"))) == 3
    csv = files["csv"].read_text().splitlines()
    assert len(csv) == 1 + len(p["runs"])
    assert again.payload["runs_trained"] == 0 and again.payload["runs_reused"] == 6 + 1 + 8


@pytest.mark.slow
def test_torchvision_weights_end_to_end_at_224_px(fake_cifar, tmp_path):
    """--weights: a torchvision ResNet-18 state dict (random initialisation, no download) is the
    pretrained backbone; the images are resized to 224 px and normalised with ImageNet's
    statistics; the linear probe keeps every tensor of the file bit for bit."""
    import torchvision

    from cnnlab.models.transfer import IMAGENET_MEAN

    path = tmp_path / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    tiny = Budget("tiny224", aug_subset=40, aug_val=10, aug_epochs=1, backbones=("resnet18",),
                  resolution=0.5, pretrain_per_class=2, pretrain_epochs=1, labels=(2,),
                  transfer_images=20, test_per_class=2, seeds=1, batch_size=10, eval_points=1)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        study = get_study("transfer")
        options = study.make_options(data_dir=str(fake_cifar), budget=tiny, device="cpu",
                                     out=str(tmp_path / "out"), quiet=True, weights=str(path),
                                     backbone="resnet18", strategies="linear,finetune",
                                     augmentation=False)
        outcome, files = run(study, options)
    finally:
        torch.set_num_threads(old)
    p = outcome.payload
    assert p["pretrain"] == [] and {r["strategy"] for r in p["runs"]} == {"linear", "finetune"}
    run_dir = tmp_path / "out" / "runs" / "transfer-resnet18-2pc-linear-s0"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["data"]["image_size"] == [224, 224]
    assert config["data"]["mean"] == list(IMAGENET_MEAN)
    linear = next(r for r in p["runs"] if r["strategy"] == "linear")
    assert linear["trainable_params"] == 512 * 5 + 5
    final, ref = load_weights(run_dir / "model.pt"), load_weights(path)
    in_file = len([k for k in ref if not k.startswith("fc.")])  # every tensor but the old head
    assert linear["frozen"]["identical"] == linear["frozen"]["tensors"] == in_file
    for k, v in final.items():
        if k.startswith("backbone."):
            assert torch.equal(v, ref[k[len("backbone."):]]), k
