"""cnnlab._json: strict JSON from NaN/inf, NumPy and torch values, written atomically."""

import json
import math
from pathlib import Path

import numpy as np
import torch

from cnnlab._json import json_safe, write_json


def test_json_safe_converts_what_json_cannot_hold():
    value = {1: math.nan, "inf": [math.inf, -math.inf, 1.5], "np": np.float32(0.25),
             "arr": np.arange(3), "t": torch.tensor([[1, 2]]), "scalar": torch.tensor(2.5),
             "path": Path("/a/b"), "nested": ({"x": np.int64(7)},)}
    assert json_safe(value) == {"1": None, "inf": [None, None, 1.5], "np": 0.25, "arr": [0, 1, 2],
                                "t": [[1, 2]], "scalar": 2.5, "path": "/a/b",
                                "nested": [{"x": 7}]}


def test_write_json_is_strict_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"acc": np.float64("nan"), "ok": 1})
    assert json.loads(path.read_text(), parse_constant=lambda c: 1 / 0) == {"acc": None, "ok": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]
