"""Every file reader, fed random bytes: a one-line UserError or a result, never another exception.

The bytes are either random or a valid file of that kind cut at a random point with random bytes
appended (which reaches past the magic numbers into the headers and payloads). Readers: spec
(YAML, JSON), matrix (JSON, CSV, .npy), image, IDX (raw, .gz), tar (image tree, CIFAR pickles),
checkpoint and weights, run config, data cache.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cnnlab.errors import UserError


def _png():
    b = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(b, format="PNG")
    return b.getvalue()


def _tar():
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w:gz") as tar:
        for split in ("train", "test"):
            info = tarfile.TarInfo(f"{split}/airplane/0.png")
            data = _png()
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return b.getvalue()


def _npy():
    b = io.BytesIO()
    np.save(b, np.eye(3))
    return b.getvalue()


def _torch(obj):
    b = io.BytesIO()
    torch.save(obj, b)
    return b.getvalue()


VALID = {
    "spec.yaml": b"input: [3, 8, 8]\nlayers:\n  - {type: conv, out: 4, kernel: 3}\n",
    "spec.json": b'{"input": [3, 8, 8], "layers": [{"type": "conv", "out": 4, "kernel": 3}]}',
    "m.json": b"[[1, 2], [3, 4]]",
    "m.csv": b"1,2\n3,4\n",
    "m.npy": _npy(),
    "image": _png(),
    "idx": b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02\x03",
    "idx.gz": gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02\x03"),
    "tree.tar.gz": _tar(),
    "cifar.tar.gz": _tar(),
    "checkpoint.pt": _torch({"format": 1, "config": {}, "epoch": 0, "step_in_epoch": 0,
                             "step": 0, "model": {}, "optimizer": {}, "callbacks": {},
                             "history": []}),
    "model.pt": _torch({"w": torch.ones(2)}),
    "config.json": json.dumps({"config": {"model": "simple_cnn"}, "data": {
        "classes": ["a"], "mean": [0.5], "std": [0.2], "image_size": [8, 8],
        "in_chans": 1}}).encode(),
    "cache.npz": b"PK\x03\x04" + bytes(100),
}


def _read(kind: str, path: Path):
    """Read ``path`` with the reader of ``kind``."""
    if kind.startswith("spec"):
        from cnnlab.analysis.spec import load_spec

        return load_spec(path)
    if kind.startswith("m."):
        from cnnlab.numpy_ref.matrix_io import load_matrix

        return load_matrix(path)
    if kind == "image":
        from cnnlab.data import read_image

        return read_image(path.read_bytes(), str(path), 3)
    if kind.startswith("idx"):
        from cnnlab.data._idx import read_idx

        return read_idx(path, ndim=1)
    if kind == "tree.tar.gz":
        from cnnlab.data._images import read_image_tree

        return read_image_tree(path, classes=None, size=(8, 8), channels=1)
    if kind == "cifar.tar.gz":
        from cnnlab.data._images import read_cifar_pickles

        return read_cifar_pickles(path, ["airplane"])
    if kind == "checkpoint.pt":
        from cnnlab.engine.checkpoint import load_checkpoint

        return load_checkpoint(path)
    if kind == "model.pt":
        from cnnlab.engine.checkpoint import load_weights

        return load_weights(path)
    if kind == "config.json":
        from cnnlab.engine.run import read_run_config

        return read_run_config(path.parent)
    if kind == "cache.npz":  # a damaged cache is never an error: it is rebuilt
        from cnnlab.data import datasets

        spec = datasets._SPECS["fashion-mnist"]
        result = datasets._read_cache(path, "fashion-mnist", spec, path, "digest")
        assert result is None
        return result
    raise AssertionError(kind)


def _name(kind: str) -> str:
    return {"image": "x.png", "idx": "x-idx1-ubyte", "idx.gz": "x-idx1-ubyte.gz"}.get(kind, kind)


def _contents(kind: str):
    valid = VALID[kind]
    return st.one_of(
        st.binary(max_size=600),
        st.tuples(st.integers(0, len(valid)), st.binary(max_size=40)).map(
            lambda t: valid[: t[0]] + t[1]),
        st.tuples(st.integers(0, max(len(valid) - 1, 0)), st.integers(1, 255)).map(
            lambda t: valid[: t[0]] + bytes([valid[t[0]] ^ t[1]]) + valid[t[0] + 1:]
            if valid else b""),
    )


@pytest.mark.parametrize("kind", sorted(VALID))
def test_random_bytes_give_one_line_user_error_or_success(kind, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / _name(kind)

    @settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(data=_contents(kind))
    def check(data):
        path.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                _read(kind, path)
            except UserError as exc:
                assert "\n" not in str(exc), str(exc)
                assert str(exc).strip()

    check()


def test_the_valid_samples_are_read(tmp_path):
    """The seeds of the strategies are real files of their kind (else the fuzzing is shallow)."""
    for kind in ("spec.yaml", "spec.json", "m.json", "m.csv", "m.npy", "image", "idx", "idx.gz",
                 "checkpoint.pt", "model.pt", "config.json"):
        path = tmp_path / _name(kind)
        path.write_bytes(VALID[kind])
        assert _read(kind, path) is not None, kind
    tree = tmp_path / "t.tar.gz"
    tree.write_bytes(VALID["tree.tar.gz"])
    splits, names = _read("tree.tar.gz", tree)
    assert names == ["airplane"] and splits["train"][0].shape == (1, 8, 8, 1)
    assert pickle  # the CIFAR reader's own unpickler is exercised through the tar reader
