"""Issue 12: every bad input of the hostile-user sweep is one error line and exit status 2,
nothing is silently wrong, and no file on disk is lost or changed.

Each test is the issue's reproduction run through ``cnnlab.cli.main`` in-process on a tiny
Fashion-MNIST written here in the real IDX format (one epoch of ``simple_cnn`` at width 0.25
trains in about a second).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.cli import main

SYS = Path("/sys/cnnlab-reliability-test")  # a place nobody, root included, can create


def _idx(array):
    return (struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
            + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes())


def _write_fmnist(folder, n_train=100, n_test=12):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 80, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 * c + 2: 2 * c + 5, 4:24] = 220
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(labels)))


def _tree(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``folder`` (the lock file aside)."""
    if not folder.exists():
        return {}
    if folder.is_file():
        return {folder.name: hashlib.sha256(folder.read_bytes()).hexdigest()}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".cnnlab.lock"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A data folder, a cache folder and one finished run (with best.pt) to attack."""
    tmp = tmp_path_factory.mktemp("reliability")
    _write_fmnist(tmp / "fm")
    data = ["--data-dir", str(tmp / "fm"), "--cache-dir", str(tmp / "cache")]
    base = ["train", "--model", "simple_cnn", "--dataset", "fashion-mnist", "--width", "0.25",
            *data, "--epochs", "1", "--batch-size", "16", "--val-fraction", "0.2",
            "--device", "cpu", "--threads", "1", "--quiet"]
    assert main([*base, "--out", str(tmp / "run")]) == 0
    return {"tmp": tmp, "base": base, "data": data, "run": tmp / "run"}


def fails(capsys, argv, *needles, watch=()):
    """Run ``cnnlab ARGV``: exit status 2, exactly one line on stderr that contains every
    needle, and every path in ``watch`` unchanged on disk. Returns the line."""
    capsys.readouterr()
    before = {str(p): _tree(Path(p)) for p in watch}
    status = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1 and lines[0].startswith("cnnlab: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    for p in watch:
        assert _tree(Path(p)) == before[str(p)], f"{p} changed"
    return lines[0]


@pytest.fixture
def run_copy(env, tmp_path):
    """A copy of the finished run, free to damage."""
    return Path(shutil.copytree(env["run"], tmp_path / "run"))


def _explain(run_dir, out, *extra):
    """``explain [sanity] --checkpoint RUN_DIR --out OUT EXTRA...``"""
    action = list(extra[:1]) if extra[:1] == ("sanity",) else []
    return ["explain", *action, "--checkpoint", run_dir, "--out", out, *extra[len(action):]]


# ----------------------------------------------------------------------------------- analyze

def test_analyze_random_bytes_spec(capsys, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(bytes(range(128, 256)) * 3)
    fails(capsys, ["analyze", spec], str(spec), "not UTF-8 text", watch=[spec])


@pytest.mark.parametrize("target, needle", [
    ("json:loads", "TypeError"),  # a callable that cannot be called without arguments
    ("sys:exit", "SystemExit"),  # used to exit 0 and print nothing
])
def test_analyze_callable_that_builds_no_module(capsys, target, needle):
    fails(capsys, ["analyze", target, "--input", "3,32,32"], target, needle, "nn.Module")


# ------------------------------------------------------------------------------ output folders

@pytest.mark.parametrize("kind", ["file", "sys"])
def test_train_out_unusable(capsys, env, tmp_path, kind):
    out = tmp_path / "afile" if kind == "file" else SYS
    if kind == "file":
        out.write_text("keep me")
    fails(capsys, [*env["base"], "--out", out], f"--out {out}",
          "not a folder" if kind == "file" else "cannot create or write the folder",
          watch=[tmp_path])
    assert not SYS.exists()


def test_train_cache_dir_is_a_file(capsys, env, tmp_path):
    cache = tmp_path / "cache-file"
    cache.write_text("keep me")
    argv = [a if a != str(env["tmp"] / "cache") else str(cache) for a in env["base"]]
    fails(capsys, [*argv, "--out", tmp_path / "out"], f"--cache-dir {cache}", "not a folder",
          watch=[tmp_path])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("sanity", [False, True])
@pytest.mark.parametrize("kind", ["file", "sys"])
def test_explain_out_unusable(capsys, env, tmp_path, kind, sanity):
    out = tmp_path / "afile" if kind == "file" else SYS
    if kind == "file":
        out.write_text("keep me")
    extra = ["sanity", "--images", "test:0-1", "--steps", "4"] if sanity else ["--images", "0"]
    fails(capsys, _explain(env["run"], out, *extra), f"--out {out}",
          watch=[tmp_path, env["run"]])


@pytest.mark.parametrize("study", ["mobilenet", "dynamics"])
@pytest.mark.parametrize("kind", ["file", "sys"])
def test_study_out_unusable(capsys, tmp_path, study, kind):
    out = tmp_path / "afile" if kind == "file" else SYS
    if kind == "file":
        out.write_text("keep me")
    fails(capsys, ["study", study, "--out", out], f"--out {out}", watch=[tmp_path])


# ------------------------------------------------------------------------ checkpoints, configs

@pytest.mark.parametrize("damage, needle", [
    (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "truncated or corrupt"),
    (lambda p: p.write_bytes(b""), "is empty"),
    (lambda p: p.write_bytes(os.urandom(500)), "truncated or corrupt"),
])
@pytest.mark.parametrize("sanity", [False, True])
def test_explain_damaged_model_pt(capsys, run_copy, tmp_path, damage, needle, sanity):
    damage(run_copy / "model.pt")
    extra = ["sanity", "--images", "test:0-1", "--steps", "4"] if sanity else ["--images", "0"]
    fails(capsys, _explain(run_copy, tmp_path / "x", *extra), str(run_copy / "model.pt"), needle,
          watch=[run_copy])
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("weights", ["final", "best"])
def test_explain_refuses_diverged_weights(capsys, run_copy, tmp_path, weights):
    """A model.pt with inf BatchNorm variances (what `--lr 1e6` used to save) explained as
    p=1.00 and sanity tables of nan; now it is refused."""
    file = run_copy / ("model.pt" if weights == "final" else "best.pt")
    state = torch.load(file, weights_only=True)
    key = next(k for k in state if k.endswith("running_var"))
    state[key][0] = float("inf")
    torch.save(state, file)
    fails(capsys, _explain(run_copy, tmp_path / "x", "--images", "0", "--weights", weights),
          str(file), f"NaN/inf in {key}", "diverged", watch=[run_copy])


def test_explain_malicious_pickle_is_refused_unrun(capsys, run_copy, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"w": Evil()}, run_copy / "model.pt")
    fails(capsys, _explain(run_copy, tmp_path / "x", "--images", "0"),
          "objects other than tensors", "refused unread", watch=[run_copy])
    assert not marker.exists()


@pytest.mark.parametrize("garbage", [b"{not json", b"\xff\xfe\x00garbage", b"[1, 2]",
                                     b'{"config": {"epochs": "many"}, "data": {}}'])
@pytest.mark.parametrize("command", ["resume", "explain"])
def test_garbage_config_json(capsys, env, run_copy, tmp_path, garbage, command):
    (run_copy / "config.json").write_bytes(garbage)
    if command == "resume":
        argv = ["train", "--out", run_copy, "--resume", *env["data"], "--quiet"]
    else:
        argv = _explain(run_copy, tmp_path / "x", "--images", "0")
    fails(capsys, argv, "config.json", watch=[run_copy])


# ------------------------------------------------------------------------------ numeric options

@pytest.mark.parametrize("option, needle", [
    (["--model-kw", "dropout=abc"], "--model-kw dropout='abc'"),
    (["--model-kw", "in_chans=3"], "--model-kw in_chans: set by cnnlab"),
    (["--split-seed", "-1"], "--split-seed must be >= 0, not -1"),
    (["--augment", "rotate=nan"], "rotate must be a finite number, not nan"),
    (["--augment", "cutout=1000"], "cutout must be in [0, 28], not 1000 (the images are 28x28"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--val-fraction", "inf"], "--val-fraction must be a finite number"),
])
def test_train_bad_numbers(capsys, env, tmp_path, option, needle):
    fails(capsys, [*env["base"], *option, "--out", tmp_path / "out"], needle, watch=[tmp_path])
    assert not (tmp_path / "out").exists()


def test_explain_sanity_steps_beyond_the_pixel_count(capsys, env, tmp_path):
    fails(capsys, _explain(env["run"], tmp_path / "x", "sanity", "--images", "test:0",
                           "--steps", "100000"),
          "--steps must be in [1, 784], not 100000", "28x28 = 784 pixels", watch=[env["run"]])
    assert not (tmp_path / "x").exists()


def test_explain_alpha_nan(capsys, env, tmp_path):
    fails(capsys, _explain(env["run"], tmp_path / "x", "--images", "0", "--alpha", "nan"),
          "--alpha must be a finite number")


def test_walkthrough_overflow(capsys, tmp_path):
    big = tmp_path / "big.json"
    big.write_text(json.dumps([[1e308] * 5] * 5))
    fails(capsys, ["walkthrough", "residual", "--input", big, "--out", tmp_path / "fig"],
          "too large for float64", watch=[tmp_path])


# ----------------------------------------------------------------------------- divergence

def test_huge_lr_saves_nothing_non_finite(capsys, env, tmp_path):
    """`--lr 1e6`: used to exit 0 with inf BatchNorm variances in model.pt."""
    out = tmp_path / "out"
    line = fails(capsys, [*env["base"], "--lr", "1e6", "--out", out], "--lr")
    assert "NaN/inf" in line or "loss became" in line
    for name in ("model.pt", "best.pt"):
        assert not (out / name).exists()  # epoch 1 diverged: there is no good epoch to keep


# ------------------------------------------------------------------------------ image files

def test_16_bit_png_is_scaled_not_clipped(capsys, env, tmp_path):
    ramp = (np.arange(28 * 28).reshape(28, 28) * 83).astype(np.uint16)  # 0 .. 65 000
    png = tmp_path / "deep.png"
    Image.fromarray(ramp).save(png)
    assert Image.open(png).mode == "I;16"
    out = tmp_path / "x"
    assert main([str(a) for a in _explain(env["run"], out, "--images", png)]) == 0
    assert "scaled linearly" in capsys.readouterr().out
    record = json.loads((out / "explain.json").read_text())["images"][0]
    assert "16-bit" in record["conversion"] and "not clipped" in record["conversion"]
    # the pixels the model saw: independent of cnnlab's code, 65535 -> 255 linearly
    from cnnlab.data import read_image

    arr, _ = read_image(png.read_bytes(), "deep.png", 1)
    np.testing.assert_array_equal(arr[..., 0], np.rint(ramp / 65535 * 255).astype(np.uint8))
    assert (arr == 255).mean() < 0.01  # Pillow's own conversion made 99.5% of them 255


def test_explain_image_that_is_a_folder_or_garbage(capsys, env, tmp_path):
    (tmp_path / "dir.png").mkdir()
    fails(capsys, _explain(env["run"], tmp_path / "x", "--images", tmp_path / "dir.png"),
          "dir.png is a folder")
    (tmp_path / "junk.png").write_bytes(os.urandom(300))
    fails(capsys, _explain(env["run"], tmp_path / "x", "--images", tmp_path / "junk.png"),
          "cannot decode", "junk.png")


# ------------------------------------------------------------------------------ the run lock

_HOLD = textwrap.dedent("""
    import sys, time
    from cnnlab._io import output_dir
    output_dir(sys.argv[1], lock=True)
    print("locked", flush=True)
    time.sleep(60)
""")


def _holder(folder):
    child = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert child.stdout.readline().strip() == b"locked"
    return child


def test_second_run_on_a_locked_folder_is_refused(capsys, env, tmp_path):
    out = tmp_path / "out"
    child = _holder(out)
    try:
        line = fails(capsys, [*env["base"], "--out", out], f"--out {out} is in use",
                     f"process {child.pid}", watch=[out])
        assert _tree(out) == {}  # the refused run wrote nothing
    finally:
        child.kill()
        child.wait()
    assert "wait for it" in line


def test_lock_of_a_killed_run_does_not_block(capsys, env, tmp_path):
    out = tmp_path / "out"
    child = _holder(out)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert (out / ".cnnlab.lock").exists()  # the file stays; the kernel dropped the lock
    assert main([*env["base"], "--out", str(out)]) == 0
    assert (out / "model.pt").exists()


def test_lock_is_reentrant_and_released(tmp_path):
    from cnnlab import _io

    _io.output_dir(tmp_path / "a", lock=True)
    _io.output_dir(tmp_path / "a", lock=True)  # a study holding its folder may train in it
    _io.release_dir(tmp_path / "a")
    _io.release_dir(tmp_path / "a")
    child = _holder(tmp_path / "a")  # another process can take it now
    child.kill()
    child.wait()


# ------------------------------------------------------------------------- archives, matrices

CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _cifar_tree_tar() -> bytes:
    """An uncompressed tar of a CIFAR-10 image tree: one 32x32 PNG per split and class."""
    import io
    import tarfile

    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w") as tar:
        for split in ("train", "test"):
            for c in CIFAR10:
                png = io.BytesIO()
                Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(png, format="PNG")
                info = tarfile.TarInfo(f"cifar10/{split}/{c}/0.png")
                info.size = len(png.getvalue())
                tar.addfile(info, io.BytesIO(png.getvalue()))
    return b.getvalue()


@pytest.mark.parametrize("damage, needle", [
    # a damaged member header half-way: tarfile stopped there silently ("class folders missing")
    (lambda t: t[: len(t) // 2 // 512 * 512] + b"\x01garbage" * 64 + t[len(t) // 2 // 512 * 512
                                                                       + 512:], "the archive is corrupt"),
    (lambda t: os.urandom(5000), "cannot read the archive"),  # 5 lines of error before
])
def test_corrupt_cifar_archive(capsys, env, tmp_path, damage, needle):
    tar = _cifar_tree_tar()
    archive = tmp_path / "cifar10-jpg.tar.gz"
    archive.write_bytes(gzip.compress(damage(tar)))
    argv = ["train", "--model", "simple_cnn", "--dataset", "cifar10", "--data-dir", archive,
            "--cache-dir", tmp_path / "cache", "--epochs", "1", "--quiet", "--out",
            tmp_path / "out"]
    fails(capsys, argv, str(archive), needle, watch=[archive])
    assert not (tmp_path / "out").exists()
    # the intact archive is read (so the damage is what the error is about)
    archive.write_bytes(gzip.compress(tar))
    from cnnlab.data import load_dataset

    assert load_dataset("cifar10", data_dir=archive, use_cache=False).train_images.shape == (
        10, 32, 32, 3)


@pytest.mark.parametrize("make, needle", [
    (lambda p: p.mkdir(), "is a folder"),  # said "unsupported file type '(none)'"
    (lambda p: p.with_suffix(".npy").write_bytes(os.urandom(200)), "not a .npy file"),
    (lambda p: np.save(p.with_suffix(".npy"), np.array([1, "a"], dtype=object)),  # NumPy
     "pickled Python objects"),  # advised loading it with allow_pickle
])
def test_walkthrough_bad_matrix_files(capsys, tmp_path, make, needle):
    path = tmp_path / "m"
    make(path)
    path = path if path.exists() else path.with_suffix(".npy")
    line = fails(capsys, ["walkthrough", "residual", "--input", path, "--no-figure"], str(path),
                 needle)
    assert "allow_pickle" not in line
