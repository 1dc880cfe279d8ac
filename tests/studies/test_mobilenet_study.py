"""The MobileNet study end to end on real Fashion-MNIST (tiny budget), and its theory tables.

References are independent of the analyzer: channel counts read from the modules, output sizes
from a real forward pass with hooks, and the closed-form ratios of Howard et al. 2017.
"""

import base64
import json
import math
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnlab import models
from cnnlab.cli import main
from cnnlab.errors import UserError
from cnnlab.studies import _mobilenet_findings, runner
from cnnlab.studies.mobilenet import BUDGETS, STUDY, StudyConfig, plan_runs, run_study

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Two MobileNets at alpha 1 and 0.5 plus the timed-only Conv MobileNet: 4 short runs, and
    a second seed of each alpha = 1 run (the noise): 6."""
    if not FMNIST.exists():
        pytest.fail(f"{FMNIST} is missing: scripts/test installs the Debian package "
                    "dataset-fashion-mnist (apt-get install dataset-fashion-mnist)")
    out = tmp_path_factory.mktemp("study")
    torch.set_num_threads(1)
    cfg = StudyConfig(out=str(out), subset=120, epochs=1, roles=("v1", "v2", "conv_v1"),
                      alphas=(1.0, 0.5), rhos=(1.0,), speed_seconds=0.05, quiet=True,
                      device="cpu", reference_seeds=2)
    return cfg, run_study(cfg)


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.external = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag in ("script", "link", "iframe") and (a.get("src") or a.get("href")):
            self.external.append(a)


def test_report_is_complete_and_self_contained(study):
    cfg, result = study
    out = Path(cfg.out)
    for name in ("report.html", "report.md", "results.json", "results.csv"):
        assert (out / name).stat().st_size > 0, name
    page = _Page()
    page.feed((out / "report.html").read_text())
    assert page.external == []
    pngs = sorted((out / "plots").glob("*.png"))
    assert len(page.imgs) == len(pngs) >= 5
    for src in page.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG")
    data = json.loads((out / "results.json").read_text())  # strict JSON (no NaN)
    assert {r["arch_id"] for r in data["rows"]} == {
        "mobilenet_v1_cifar-a1-r1", "mobilenet_v1_cifar-a0.5-r1", "mobilenet_v2_cifar-a1-r1",
        "mobilenet_v2_cifar-a0.5-r1", "conv_mobilenet_v1_cifar-a1-r1"}
    trained = [r for r in data["rows"] if r["trained"]]
    assert len(trained) == 4 and all(0 <= r["test_accuracy"] <= 1 for r in trained)
    assert all(r["cpu_latency_ms"] > 0 and r["cpu_throughput"] > 0 for r in data["rows"])
    assert data["environment"]["torch"] == torch.__version__
    assert data["interpretation"] == result.interpretation and len(result.interpretation) >= 5
    md = (out / "report.md").read_text()
    assert all(f"plots/{p.name}" in md for p in pngs)


def _channel_factors(small: nn.Module, big: nn.Module) -> list[float]:
    """Per conv/linear layer, MACs(small)/MACs(big) from channel counts alone (same spatial
    sizes at equal resolution): (cin'/g' * cout') / (cin/g * cout)."""
    def macs_per_position(m):
        if isinstance(m, nn.Conv2d):
            return m.in_channels // m.groups * m.out_channels * m.kernel_size[0] * m.kernel_size[1]
        return m.in_features * m.out_features

    big_layers = {n: m for n, m in big.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    return [macs_per_position(m) / macs_per_position(big_layers[n])
            for n, m in small.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@pytest.mark.parametrize("role,model", [("v1", "mobilenet_v1_cifar"), ("v2", "mobilenet_v2_cifar")])
def test_macs_ratio_matches_alpha_squared_within_channel_rounding(study, role, model):
    _, result = study
    half = next(e for e in result.theory["alpha"][role] if e["width"] == 0.5)
    # The network's ratio is a MAC-weighted mean of per-layer channel factors, so it lies
    # between the smallest and the largest of them; the 1x1 layers are where alpha^2 holds.
    small = models.create(model, in_chans=1, width=0.5)
    big = models.create(model, in_chans=1, width=1.0)
    factors = _channel_factors(small, big)
    assert min(factors) <= half["macs_ratio"] <= max(factors)
    layers = [m for m in small.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    pw = [f for f, m in zip(factors, layers, strict=True)
          if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1]
    assert min(pw) <= half["pointwise_macs_ratio"] <= max(pw)
    if role == "v1":  # every V1 channel count x 0.5 is a multiple of 8: exactly alpha^2
        assert half["pointwise_macs_ratio"] == pytest.approx(0.25, abs=1e-12)
        assert 0.25 < half["macs_ratio"] < 0.27  # dw, stem and classifier scale with alpha
    else:  # V2 rounds to multiples of 8 (e.g. 24 x 0.5 = 12 -> 16): above alpha^2
        assert 0.25 < half["pointwise_macs_ratio"] < 0.35


def _pointwise_share_by_forward(model: nn.Module, shape) -> float:
    """1x1-conv share of conv + linear MACs, from output sizes seen in a real forward."""
    macs = {"pw": 0, "all": 0}

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            n = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1] * out.numel()
            macs["pw"] += n if (m.kernel_size == (1, 1) and m.groups == 1) else 0
        else:
            n = m.in_features * out.numel()
        macs["all"] += n

    hs = [m.register_forward_hook(hook) for m in model.modules()
          if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    for h in hs:
        h.remove()
    return macs["pw"] / macs["all"]


def test_one_by_one_share_and_separable_ratios(study):
    _, result = study
    for role, model in (("v1", "mobilenet_v1_cifar"), ("v2", "mobilenet_v2_cifar")):
        expected = _pointwise_share_by_forward(models.create(model, in_chans=1), (1, 28, 28))
        assert result.theory["share_1x1"][role]["macs"] == pytest.approx(expected, rel=1e-12)
    sep = result.theory["separable"]
    assert len(sep["layers"]) == 13  # Table 1: 13 depthwise separable layers
    for layer in sep["layers"]:  # Howard et al. 2017, Eq. 5, exact at equal padding/stride
        assert layer["ratio"] == pytest.approx(1 / layer["out_channels"] + 1 / 9, rel=1e-12)
    assert 0.05 < sep["network_macs_ratio"] < 0.2


def test_rerun_reuses_finished_runs(study):
    cfg, first = study
    ckpts = sorted(Path(cfg.out, "runs").glob("*/checkpoint.pt"))
    stamps = [p.stat().st_mtime_ns for p in ckpts]
    again = run_study(cfg)
    assert again.trained_now == 0 and again.reused == first.trained_now + first.reused == 6
    assert [p.stat().st_mtime_ns for p in ckpts] == stamps
    assert [r["test_accuracy"] for r in again.rows] == [r["test_accuracy"] for r in first.rows]


def test_folder_with_other_settings_is_refused(study):
    cfg, _ = study
    other = StudyConfig(**{**cfg.__dict__, "epochs": 2})
    with pytest.raises(UserError, match="other settings"):
        run_study(other)


def test_plan_covers_the_issue_runs():
    specs = plan_runs(BUDGETS["standard"], seeds=2)
    trained = {(s.role, s.width, s.resolution) for s in specs if s.seed is not None}
    assert {("conventional", 1, 1), ("v1", 1, 1), ("v2", 1, 1), ("resnet", 1, 1)} <= trained
    for role in ("v1", "v2"):
        assert {a for r, a, rho in trained if r == role and rho == 1} == {1, 0.75, 0.5, 0.25}
        assert {rho for r, a, rho in trained if r == role and a == 1} == {1, 0.875, 0.75, 0.5}
    # two seeds of everything, a third of the four reference runs (alpha = rho = 1)
    assert len([s for s in specs if s.seed is not None]) == 2 * len(trained) + 4
    assert len({s.run_id for s in specs if s.seed is not None}) == 2 * len(trained) + 4


def test_frontier_and_scaling_sentences():
    rows = [
        {"label": "A", "width": 1.0, "resolution": 1.0, "input": "1x28x28", "macs": 10,
         "test_accuracy": 0.8},
        {"label": "B", "width": 1.0, "resolution": 1.0, "input": "1x28x28", "macs": 20,
         "test_accuracy": 0.7},  # dominated: more MACs, less accurate
        {"label": "C", "width": 1.0, "resolution": 1.0, "input": "1x28x28", "macs": 40,
         "test_accuracy": 0.9},
    ]
    assert [r["label"] for r in _mobilenet_findings.frontier(rows, "macs")] == ["A", "C"]
    # latency spreads over repeats of 5% each: a latency/MACs ratio beyond
    # exp(2 * hypot(0.05, 0.05)) = 1.15 (or below 1/1.15) is outside the noise
    entry = {"width": 0.5, "macs_ratio": 0.26, "predicted_ratio": 0.25,
             "pointwise_macs_ratio": 0.25, "cpu_latency_ratio": 0.6,
             "cpu_latency_spreads": [0.05, 0.05], "cpu_throughput_time_ratio": 0.3}
    text = _mobilenet_findings._scaling_sentence(entry, "width", "MobileNetV1", "cpu")
    assert "0.260x the MACs" in text and "falls less than the MACs" in text
    assert "exactly alpha^2" in text and "rounded" not in text
    rounded = _mobilenet_findings._scaling_sentence({**entry, "pointwise_macs_ratio": 0.3},
                                                  "width", "MobileNetV2", "cpu")
    assert "rounded to multiples of 8" in rounded
    # 0.28 / 0.26 = 1.08: inside the noise at 5% spreads, outside it at 1%
    entry["cpu_latency_ratio"] = 0.28
    assert "not distinguishable" in _mobilenet_findings._scaling_sentence(
        entry, "width", "MobileNetV1", "cpu")
    entry["cpu_latency_spreads"] = [0.01, 0.01]
    assert "falls less than the MACs" in _mobilenet_findings._scaling_sentence(
        entry, "width", "MobileNetV1", "cpu")
    entry["cpu_latency_ratio"] = 0.2
    assert "falls faster than the MACs" in _mobilenet_findings._scaling_sentence(
        entry, "width", "MobileNetV1", "cpu")
    # no spread measured: nothing is distinguishable
    entry["cpu_latency_spreads"] = [None, 0.01]
    assert "not distinguishable" in _mobilenet_findings._scaling_sentence(
        entry, "width", "MobileNetV1", "cpu")


@pytest.mark.parametrize("argv,needle", [
    (["--seeds", "0"], "--seeds must be at least 1"),
    (["--subset", "5"], "--subset must be at least 20"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--data-dir", "/nonexistent/fmnist"], "/nonexistent/fmnist"),
])
def test_cli_bad_input_is_one_line(tmp_path, capsys, argv, needle):
    code = main(["study", "mobilenet", "--out", str(tmp_path / "s"), "--quiet", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and len(err.splitlines()) == 1, err


def test_budget_names_are_checked():
    with pytest.raises(UserError, match="unknown budget 'huge'"):
        runner.validate(STUDY, StudyConfig(budget="huge"))
    assert math.isclose(BUDGETS["quick"].alphas[-1], 0.25)
