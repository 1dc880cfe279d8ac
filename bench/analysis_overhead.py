"""How long ``cnnlab.analysis.analyze`` takes on torchvision models, against torch's own
``FlopCounterMode`` on the same fake-tensor forward pass (the reference, measured in the same run).

    python bench/analysis_overhead.py [--models resnet18,mobilenet_v2,...] [--repeat 3]

Prints one line per model: median seconds of each, their ratio, and whether the conv/linear MACs
agree. Both run on ``meta``-device models under ``FakeTensorMode``: nothing is computed, so the
times are pure Python/dispatcher overhead (CPU only). Saves nothing; the numbers are noisy on a
shared machine, the ratio less so.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torchvision
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.analysis import analyze
from cnnlab.provenance import environment

DEFAULT = "resnet18,mobilenet_v2,mobilenet_v3_small,googlenet,densenet121,efficientnet_b0,convnext_tiny"


def _flop_counter(model: torch.nn.Module, shape: tuple[int, ...]) -> int:
    with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
        x = torch.empty((1, *shape), device="meta")
        with FlopCounterMode(display=False) as counter:
            model(x)
    return counter.get_total_flops() // 2


def _median_time(fn, repeat: int) -> tuple[float, object]:  # noqa: ANN001
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=DEFAULT)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    env = environment()
    print(f"# {env['device']}; torch {env['torch']}; commit {env['git_commit']}")
    print(f"{'model':22s} {'analyze s':>10s} {'FlopCounter s':>14s} {'ratio':>6s}  MACs agree")
    for name in args.models.split(","):
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore", FutureWarning)
            model = torchvision.models.get_model(name, weights=None).eval()
        shape = (3, 299, 299) if name == "inception_v3" else (3, 224, 224)
        t_ours, result = _median_time(lambda: analyze(model, shape), args.repeat)
        t_ref, macs = _median_time(lambda: _flop_counter(model, shape), args.repeat)
        agree = result.totals["total_macs"] == macs
        print(f"{name:22s} {t_ours:10.3f} {t_ref:14.3f} {t_ours / t_ref:6.2f}  {agree}")


if __name__ == "__main__":
    main()
