"""Shared pieces of the tune tests: a tiny space and real Fashion-MNIST availability."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

# Tiny conv nets (4-8 filters, 'same' padding) so a trial on 600 images takes about a second.
TINY_SPACE = textwrap.dedent("""\
    model: stacked_cnn
    fixed: {optimizer: adamw, weight_decay: 0.0, schedule: constant, warmup: 0.0,
            label_smoothing: 0.0, augment: none, batch_size: 64, input_size: 28, padding: same}
    params:
      conv_layers: {type: int, low: 1, high: 2}
      filters: {type: int, low: 4, high: 8, step: 4, per_layer: conv_layers}
      kernel: {type: categorical, choices: [3, 5], per_layer: conv_layers}
      units_layers: {type: int, low: 0, high: 1}
      units: {type: int, low: 16, high: 32, step: 16, per_layer: units_layers}
      lr: {type: categorical, choices: [0.001, 0.003]}
    """)


def write_space(folder: Path, text: str = TINY_SPACE) -> Path:
    path = folder / "space.yaml"
    path.write_text(text)
    return path


def need_fashion_mnist() -> None:
    from cnnlab.data import load_dataset
    from cnnlab.errors import DataNotFoundError

    try:
        load_dataset("fashion-mnist")
    except DataNotFoundError as exc:
        pytest.skip(f"Fashion-MNIST is not installed: {exc}")


def expected_keys(params: dict) -> set[str]:
    """The parameter names that must exist for a configuration of TINY_SPACE / the course's."""
    keys = {"conv_layers", "units_layers", "lr"}
    keys |= {f"{p}_{i}" for p in ("filters", "kernel") for i in range(1, params["conv_layers"] + 1)}
    keys |= {f"units_{i}" for i in range(1, params["units_layers"] + 1)}
    return keys


def open_at_once(url: str, n: int = 6) -> list[str]:
    """What ``n`` processes print that open the storage ``url`` at the same moment."""
    start = time.time() + 3 + 0.5 * n  # after every process has imported optuna
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    opener = str(Path(__file__).parent / "_storage_opener.py")
    procs = [subprocess.Popen([sys.executable, opener, url, str(start)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(n)]
    return [p.communicate(timeout=120)[0].strip() for p in procs]
