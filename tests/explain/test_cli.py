"""``cnnlab explain`` end to end on runs made by ``cnnlab train`` from small data sets written here
in the real formats (Fashion-MNIST IDX, CIFAR-10 pickles). Probabilities in the JSON are checked
against the run's model evaluated here; pictures are checked to exist and be PNGs."""

import gzip
import json
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.cli import main



def _idx(array):
    return (
        struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.astype(np.uint8).tobytes()
    )


def _write_fmnist(folder, rng, n_train=100, n_test=12):
    folder.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 80, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):  # learnable: class c is a bright bar at rows 2c..2c+2
            images[i, 2 * c + 2 : 2 * c + 5, 4:24] = 220
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(labels)))


def _train(tmp, dataset, data_dir, model):
    out = tmp / f"run-{dataset}"
    status = main(
        [
            "train",
            "--model",
            model,
            "--dataset",
            dataset,
            "--width",
            "0.25",
            "--data-dir",
            str(data_dir),
            "--cache-dir",
            str(tmp / "cache"),
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--val-fraction",
            "0",
            "--device",
            "cpu",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, write_cifar):
    tmp = tmp_path_factory.mktemp("explain-cli")
    rng = np.random.default_rng(0)
    _write_fmnist(tmp / "fmnist", rng)
    write_cifar(tmp / "cifar-10-batches-py", rng)
    return {
        "fmnist": (_train(tmp, "fashion-mnist", tmp / "fmnist", "simple_cnn"), tmp / "fmnist"),
        "cifar": (
            _train(tmp, "cifar10", tmp / "cifar-10-batches-py", "resnet20"),
            tmp / "cifar-10-batches-py",
        ),
        "tmp": tmp,
    }


def _expected_probabilities(run_dir, data_dir, dataset, indexes):
    from cnnlab.data import load_dataset, normalize
    from cnnlab.engine import load_run

    loaded = load_run(run_dir)
    ds = load_dataset(dataset, data_dir=data_dir, use_cache=False)
    x = normalize(torch.from_numpy(ds.test_images[indexes]).permute(0, 3, 1, 2), ds.mean, ds.std)
    with torch.no_grad():
        return torch.softmax(loaded.model(x), dim=1).numpy(), ds.test_labels[indexes]


def _explain(run_dir, out, *args):
    """``cnnlab explain [sanity] --checkpoint RUN_DIR --out OUT ARGS...``: the exit status."""
    action = ["sanity"] if args[:1] == ("sanity",) else []
    return main(
        ["explain", *action, "--checkpoint", str(run_dir), "--out", str(out), *args[len(action) :]]
    )


def _is_png(path):
    with Image.open(path) as img:
        return img.format == "PNG" and img.size[0] > 100


def test_explain_dataset_indexes(runs, capsys):
    run_dir, data_dir = runs["fmnist"]
    out = runs["tmp"] / "out-fm"
    assert _explain(run_dir, out, "--images", "test:0-2,5") == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "explain.json").read_text())
    assert f"layer: {report['layer']} (the last conv block, found automatically" in printed
    assert report["method"] == "gradcam" and not report["layer_given"]
    assert [r["source"] for r in report["images"]] == ["test:0", "test:1", "test:2", "test:5"]
    probs, labels = _expected_probabilities(run_dir, data_dir, "fashion-mnist", [0, 1, 2, 5])
    for r, p, label in zip(report["images"], probs, labels, strict=True):
        np.testing.assert_allclose(r["probabilities"], p, rtol=0, atol=2e-6)
        assert r["predicted"] == r["target"] == int(p.argmax())  # default: the prediction
        assert r["second_target"] == int(np.argsort(-p)[1])
        assert r["label"] == label and r["label_name"] == report["classes"][label]
        assert _is_png(out / r["files"]["method"]) and _is_png(out / r["files"]["figure"])
    assert report["environment"]["torch"] == torch.__version__


def test_image_files_class_names_and_options_on_cifar(runs, capsys):
    run_dir, _ = runs["cifar"]
    out = runs["tmp"] / "out-cifar"
    photo = runs["tmp"] / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 50, 3)).astype(np.uint8)).save(
        photo
    )
    options = "--method gradcam++ --target Cat --second-target 9 --layer features.2 --cmap viridis"
    assert (
        _explain(run_dir, out, "--images", "3", str(photo), *options.split(), "--alpha", "0.3") == 0
    )
    printed = capsys.readouterr().out
    assert f"note: resized {photo} from 50x40 to 32x32 (the model's input size)" in printed
    report = json.loads((out / "explain.json").read_text())
    assert report["layer"] == "features.2" and report["layer_given"]
    assert report["method"] == "gradcam++" and report["dataset"] == "cifar10"
    for r in report["images"]:
        assert (r["target"], r["target_name"], r["second_target"]) == (3, "cat", 9)
        assert r["target_probability"] == pytest.approx(r["probabilities"][3], abs=1e-6)
        assert _is_png(out / r["files"]["method"]) and _is_png(out / r["files"]["figure"])
    assert report["images"][1]["source"] == str(photo) and report["images"][1]["label"] is None


@pytest.mark.parametrize("method", ["gradcam", "guided", "guided-gradcam"])
def test_every_method_writes_its_picture(runs, method):
    run_dir, _ = runs["cifar"]
    out = runs["tmp"] / f"out-{method}"
    assert _explain(run_dir, out, "--images", "test:7", "--method", method) == 0
    report = json.loads((out / "explain.json").read_text())
    assert report["images"][0]["files"]["method"] == f"00_test7_{method}.png"
    assert _is_png(out / f"00_test7_{method}.png") and _is_png(out / "00_test7_figure.png")


def test_sanity_command(runs, capsys):
    run_dir, _ = runs["fmnist"]
    out = runs["tmp"] / "out-sanity"
    assert _explain(run_dir, out, "sanity", "--images", "test:0-3", "--steps", "4") == 0
    printed = capsys.readouterr().out
    assert "deletion AUC (lower is better)" in printed
    report = json.loads((out / "sanity.json").read_text(), parse_constant=pytest.fail)
    cascade = report["cascade"]
    from cnnlab.engine import load_run

    model = load_run(run_dir).model
    last_linear = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    assert cascade["stages"][0] == "original" and cascade["stages"][1] == last_linear
    assert report["layer"] == model.target_layer or report["layer"].startswith(
        model.target_layer + "."
    )
    assert cascade["scores"]["gradcam"]["abs"]["spearman"]["mean"][0] == pytest.approx(1.0)
    assert set(report["faithfulness"]["mean_auc"]["deletion"]) == {
        "gradcam",
        "gradcam++",
        "guided",
        "guided-gradcam",
        "random",
    }
    assert len(report["faithfulness"]["fractions"]) == 5
    for name in ("cascade.png", "cascade_maps.png", "deletion_insertion.png"):
        assert _is_png(out / name)


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--images", "test:12"],
            "index 12 is out of range: the fashion-mnist test set has 12 images",
        ),
        (
            ["--images", "0", "--target", "cat"],
            "--target 'cat' is not a class; choose an index or one of: T-shirt/top",
        ),
        (["--images", "0", "--target", "10"], "--target 10 is out of range"),
        (["--images", "nothere.png"], "image file nothere.png does not exist"),
        (["--images", "zero"], "'zero' is neither an image file nor a data-set index"),
        (["--images", "0", "--layer", "features.44"], "closest names: features.4"),
        (["--images", "0", "--alpha", "2"], "--alpha must be in [0, 1]"),
        ([], "--images is required"),
    ],
)
def test_user_errors_are_one_line(runs, argv, message, capsys):
    run_dir, _ = runs["fmnist"]
    status = _explain(run_dir, runs["tmp"] / "err", *argv)
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("cnnlab: error: ") and message in err and err.count("\n") == 1


def test_not_a_run_folder(tmp_path, capsys):
    assert _explain(tmp_path, tmp_path / "o", "--images", "0") == 2
    assert "not a cnnlab run folder" in capsys.readouterr().err
