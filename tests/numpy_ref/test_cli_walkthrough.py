"""``cnnlab walkthrough``: JSON output, the figure, matrix files, and one-line errors (exit 2)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab.cli import main


def run(capsys, *argv):
    code = main(["walkthrough", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def plain_numbers(v):
    """True for nested lists of ints/floats only (no NumPy scalars, no strings)."""
    if isinstance(v, list):
        return all(plain_numbers(e) for e in v)
    return type(v) in (int, float)


def test_residual_json_is_plain_and_matches_torch(capsys):
    code, out, err = run(capsys, "residual", "--json", "--no-figure")
    assert code == 0 and err == ""
    got = json.loads(out)
    assert list(got) == ["conv", "relu", "residual", "maxpool", "gap"]
    assert all(plain_numbers(v) for v in got.values()) and type(got["gap"]) is float
    x = torch.tensor(
        [
            [100, 150, 200, 50, 30],
            [80, 120, 180, 255, 90],
            [40, 70, 110, 230, 200],
            [30, 60, 100, 150, 120],
            [20, 50, 80, 100, 90],
        ],
        dtype=torch.float64,
    )[None, None]
    k = torch.tensor([[0.1, -0.2, 0.1], [-0.1, 0.4, 0.1], [0.2, -0.1, 0.1]], dtype=torch.float64)[
        None, None
    ]
    mp = F.max_pool2d(F.relu(F.relu(F.conv2d(x, k, padding=1)) + x), 2, 2)
    np.testing.assert_allclose(got["maxpool"], mp[0, 0].numpy(), rtol=1e-10)
    assert got["gap"] == pytest.approx(mp.mean().item(), rel=1e-10)


def test_conv_backward_from_files_matches_torch(capsys, tmp_path):
    rng = np.random.default_rng(11)
    x, w, dy = rng.standard_normal((5, 5)), rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    (tmp_path / "x.json").write_text(json.dumps(x.tolist()))
    (tmp_path / "w.csv").write_text("\n".join(",".join(repr(float(v)) for v in row) for row in w))
    np.save(tmp_path / "dy.npy", dy)
    code, out, _ = run(
        capsys,
        "conv-backward",
        "--x",
        str(tmp_path / "x.json"),
        "--w",
        str(tmp_path / "w.csv"),
        "--dy",
        str(tmp_path / "dy.npy"),
        "--json",
        "--no-figure",
    )
    assert code == 0
    got = json.loads(out)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    y = F.conv2d(xt[None, None], wt[None, None])
    y.backward(torch.tensor(dy)[None, None])
    np.testing.assert_allclose(got["y"], y[0, 0].detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["dW"], wt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["dX"], xt.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_residual_text_and_figure(capsys, tmp_path):
    code, out, _ = run(capsys, "residual", "--out", str(tmp_path))
    assert code == 0
    assert "conv[0,0] = " in out and f"figure: {tmp_path / 'residual.png'}" in out
    png = (tmp_path / "residual.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000


@pytest.mark.parametrize(
    "files,argv,message",
    [
        ({"r.json": "[[1, 2], [3]]"}, ["residual", "--input", "r.json"], "ragged matrix"),
        (
            {"k.csv": "1,2\nx,3\n"},
            ["residual", "--kernel", "k.csv"],
            "line 2, column 1 is 'x', not a number",
        ),
        ({"v.json": "[1, 2, 3]"}, ["residual", "--input", "v.json"], "expected a 2-D matrix"),
        ({}, ["residual", "--kernel", "missing.npy"], "missing.npy does not exist"),
        (
            {},
            ["residual", "--stride", "2"],
            r"conv.* output is 3x3 but the input \(the skip\) is 5x5",
        ),
        ({}, ["residual", "--padding", "0"], r"output is 3x3 but the input \(the skip\) is 5x5"),
        (
            {},
            ["residual", "--padding", "wide"],
            "--padding must be an int, PH,PW, 'same' or 'valid', got 'wide'",
        ),
        ({}, ["residual", "--padding", "-1"], "padding must be >= 0, got -1"),
        ({}, ["residual", "--pool", "0"], "kernel_size must be >= 1, got 0"),
        (
            {"dy.json": "[[1, 2, 3]]"},
            ["conv-backward", "--dy", "dy.json"],
            "dL/dY must have the shape of Y",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch, files, argv, message):
    monkeypatch.chdir(tmp_path)
    for name, content in files.items():
        Path(name).write_text(content)
    code, out, err = run(capsys, *argv, "--no-figure")
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("cnnlab: error: ")
    assert re.search(message, err), err


def test_unwritable_out_dir_is_one_line(capsys, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    code, _, err = run(capsys, "conv-backward", "--out", str(tmp_path / "file"))
    assert code == 2
    assert err.splitlines() == [f"cnnlab: error: --out {tmp_path / 'file'} is a file, not a folder"]


def test_console_script(tmp_path):
    script = Path(sys.executable).with_name("cnnlab")
    assert script.exists(), "the cnnlab console script is not installed next to this Python"
    ok = subprocess.run(
        [str(script), "walkthrough", "conv-backward", "--json", "--no-figure"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["dW"] == [[-2.0, 0.0, 2.0], [0.0, 3.0, -2.0], [2.0, -1.0, 0.0]]
    bad = subprocess.run(
        [str(script), "walkthrough", "residual", "--input", str(tmp_path / "no.csv")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        f"cnnlab: error: input file {tmp_path / 'no.csv'} does not exist"
    ]
