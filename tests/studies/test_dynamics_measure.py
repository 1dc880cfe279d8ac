"""The dynamics study's measurements against analytic formulas, autograd and SciPy.

References: the weight variances of Glorot & Bengio (2010) and He et al. (2015) written out
here; the variance of a conv output computed from the input's patch matrix; He et al.'s
recursion in closed form; ``torch.autograd.grad`` on a hand-written forward pass; SciPy's
``pdist``. Tolerances are derived from the sample sizes (5 standard deviations).
"""

import copy
import dataclasses
import math
import os
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import pdist
from torch import nn

from cnnlab.engine import Callback, TrainConfig, train
from cnnlab.studies.dynamics import (
    ConvStack,
    FilterRecorder,
    GradNormRecorder,
    TestErrorRecorder,
    filter_distance,
    init_variance,
    layer_stats,
    reinit_,
    theory_std,
)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models: threads gain nothing, and on a loaded 2-core machine they cost a lot."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------- initialisation
# the formulas of the papers, written out independently of the code under test
_FORMULA = {
    "normal": lambda fi, fo: 0.01 ** 2,
    "xavier": lambda fi, fo: 2.0 / (fi + fo),  # Glorot & Bengio 2010, Eq. 16 (normal form)
    "he": lambda fi, fo: 2.0 / fi,  # He et al. 2015, Eq. 10
}


@pytest.mark.parametrize("scheme", ["normal", "xavier", "he"])
@pytest.mark.parametrize("layer, fans", [
    (lambda: nn.Conv2d(96, 160, 3), (96 * 9, 160 * 9)),
    (lambda: nn.Linear(700, 300), (700, 300)),
])
def test_random_inits_have_the_papers_weight_variance(scheme, layer, fans):
    torch.manual_seed(123)
    net = nn.Sequential(layer())
    before = torch.get_rng_state()
    reinit_(net, scheme, seed=7)
    assert torch.equal(torch.get_rng_state(), before), "the global RNG must be left alone"
    w = net[0].weight.detach().double()
    want = _FORMULA[scheme](*fans)
    assert init_variance(scheme, *fans) == pytest.approx(want, rel=1e-12)
    # the sample variance of n iid normals has relative standard deviation sqrt(2 / (n - 1))
    tol = 5 * math.sqrt(2 / (w.numel() - 1))
    assert abs(w.var().item() / want - 1) < tol
    assert abs(w.mean().item()) < 5 * math.sqrt(want / w.numel())
    assert (net[0].bias == 0).all()
    # seeded: the same weights again
    again = reinit_(copy.deepcopy(net), scheme, seed=7)
    assert torch.equal(again[0].weight, net[0].weight)


def test_zero_and_constant_inits_are_exact():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8, 4))
    with torch.no_grad():
        net[1].weight.fill_(3.0)
    reinit_(net, "zero")
    assert all((p == 0).all() for n, p in net.named_parameters() if n != "1.weight")
    assert (net[1].weight == 1).all()  # norm layers: weight 1, bias 0
    reinit_(net, "constant")
    assert (net[0].weight == 1 / 27).all() and (net[3].weight == 1 / 8).all()
    assert (net[0].bias == 0).all()


def test_default_init_leaves_the_model_alone_and_unknown_schemes_fail():
    net = nn.Linear(4, 3)
    w = net.weight.detach().clone()
    reinit_(net, "default")
    assert torch.equal(net.weight, w)
    with pytest.raises(ValueError, match="unknown init 'orthogonal'"):
        reinit_(net, "orthogonal")
    with pytest.raises(ValueError, match="no analytic weight variance"):
        init_variance("default", 3, 3)


@pytest.mark.parametrize("scheme, relu_input", [("he", True), ("xavier", True), ("he", False)])
def test_wide_conv_output_variance_matches_n_var_w_E_x2(scheme, relu_input):
    """Var[y] = n Var[w] E[x^2] (He et al. 2015, Eq. 7) on a wide layer (n = 2304).

    E[x^2] is taken from the input's own patches, so the remaining randomness is the weights':
    for one output channel, mean_p y^2 = w^T S w with S the patches' second-moment matrix, whose
    standard deviation over Gaussian w is Var[w] sqrt(2 tr(S^2)); averaged over C_out channels.
    """
    g = torch.Generator().manual_seed(0)
    c_in, c_out, k = 256, 256, 3
    z = torch.randn(16, c_in, 10, 10, generator=g, dtype=torch.float64)
    x = F.relu(z) if relu_input else z  # E[x^2] = 1/2 or 1
    conv = nn.Conv2d(c_in, c_out, k, bias=False).double()  # no padding: every tap present
    reinit_(conv, scheme, seed=1)
    y = conv(x)  # (16, 256, 8, 8)
    patches = F.unfold(x, k).transpose(1, 2).reshape(-1, c_in * k * k)  # (M, n)
    m, n = patches.shape
    tr_s = patches.pow(2).sum() / m  # tr(S) = n * E[x^2] over the patches
    tr_s2 = (patches @ patches.T).pow(2).sum() / m ** 2  # tr(S^2) = ||P P^T||_F^2 / M^2
    var_w = _FORMULA[scheme](n, c_out * k * k)
    want = var_w * tr_s  # = n Var[w] E[x^2]
    got = y.pow(2).mean()
    rel_sd = math.sqrt(2 * tr_s2) / tr_s / math.sqrt(c_out)
    assert abs(got / want - 1) < 5 * rel_sd, (got, want, rel_sd)
    # the textbook values after a ReLU input (E[x^2] = 1/2): He n (2/n) / 2 = 1, Xavier 1/2
    if relu_input:
        textbook = {"he": 1.0, "xavier": 0.5}[scheme]
        assert abs(got.item() - textbook) < 5 * textbook * (rel_sd + math.sqrt(2 / m))


# --------------------------------------------------------------------------------- theory
def test_theory_std_closed_forms():
    n, depth = 9 * 16, 6
    he = [(n, n, 2 / n)] * depth
    xa = [(n, n, 1 / n)] * depth
    act, grad = theory_std(he, input_sq=1.0, top_grad_std=0.3)
    assert act == pytest.approx([math.sqrt(2)] * depth, rel=1e-12)
    assert grad == pytest.approx([0.3] * depth, rel=1e-12)
    act, grad = theory_std(xa, input_sq=1.0, top_grad_std=0.3)
    assert act == pytest.approx([2 ** (-(l - 1) / 2) for l in range(1, depth + 1)], rel=1e-12)
    assert grad == pytest.approx([0.3 * 2 ** (-(depth - l) / 2) for l in range(1, depth + 1)],
                                 rel=1e-12)


def test_theory_std_with_zero_padding_counts_the_taps():
    # 1x1 maps: only the centre tap of a 3x3 kernel exists, so each layer keeps 1/9
    act, _ = theory_std([(9, 9, 1 / 9)] * 2, input_sq=torch.ones(1, 1), top_grad_std=1.0)
    assert act[0] == pytest.approx(math.sqrt(1 / 9))  # 9 * (1/9) * 1 / 9
    assert act[1] == pytest.approx(math.sqrt(1 / 9 * (1 / 9) / 2))
    # 3x3 maps: corners sum 4 taps, edges 6, the centre 9 -> mean (4*4 + 4*6 + 9) / 9 = 49 / 9
    act, _ = theory_std([(9, 9, 1.0)], input_sq=torch.ones(3, 3), top_grad_std=1.0)
    assert act[0] ** 2 == pytest.approx(9 * 1.0 / 9 * 49 / 9)
    # large maps: close to the textbook value, always below it
    act_map, grad_map = theory_std([(9, 9, 2 / 9)] * 5, torch.ones(64, 64), 1.0)
    act_txt, grad_txt = theory_std([(9, 9, 2 / 9)] * 5, 1.0, 1.0)
    for a, b in zip(act_map + grad_map[:-1], act_txt + grad_txt[:-1], strict=True):
        assert 0.95 * b < a < b


# ------------------------------------------------------------------------------- layer stats
@pytest.mark.parametrize("norm", ["none", "bn"])
def test_layer_stats_against_a_hand_written_forward_and_autograd(norm):
    torch.manual_seed(0)
    net = reinit_(ConvStack(depth=3, width=4, in_chans=2, num_classes=5, norm_layer=norm),
                  "he").double()
    x = torch.randn(6, 2, 7, 7, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    net.eval()  # layer_stats must use training mode (batch statistics) and restore this
    got = layer_stats(net, net.preactivations, x, y)
    assert not net.training

    ref = copy.deepcopy(net).train()
    h, pre = x, []
    for block in ref.blocks:
        p = block[1](block[0](h))  # conv -> norm: the pre-activation
        pre.append(p)
        h = block[2](p)
    loss = F.cross_entropy(ref.classifier(h.mean(dim=(2, 3))), y)
    grads = torch.autograd.grad(loss, pre)
    assert got.act_std == pytest.approx([p.std().item() for p in pre], rel=1e-10)
    assert got.grad_std == pytest.approx([g.std().item() for g in grads], rel=1e-10)
    assert got.input_sq == pytest.approx(x.pow(2).mean().item(), rel=1e-12)
    assert all(p.grad is None for p in net.parameters()), "parameters' .grad must stay untouched"


def test_layer_stats_zero_init_is_exactly_zero():
    net = reinit_(ConvStack(depth=4, width=3, in_chans=1), "zero").double()
    st_ = layer_stats(net, net.preactivations, torch.randn(4, 1, 6, 6, dtype=torch.float64),
                      torch.tensor([1, 2, 3, 4]))
    assert all(st_.act_zero) and all(st_.grad_zero)


# --------------------------------------------------------------------------------- filters
def test_filter_distance_known_values_and_scipy():
    eye = torch.eye(2)  # two orthonormal filters: distance sqrt(2), norm 1
    d = filter_distance(eye)
    assert d["mean_distance"] == pytest.approx(math.sqrt(2)) and d["relative"] == pytest.approx(
        math.sqrt(2))
    same = torch.ones(5, 3, 3, 3) * 0.7
    assert filter_distance(same)["relative"] == 0.0
    assert filter_distance(torch.zeros(4, 2, 3, 3)) == {"mean_distance": 0.0, "max_distance": 0.0,
                                                        "mean_norm": 0.0, "relative": 0.0}
    with pytest.raises(ValueError, match="at least 2 filters"):
        filter_distance(torch.ones(1, 3, 3, 3))


@settings(max_examples=20)
@given(c_out=st.integers(2, 12), fan=st.integers(1, 30), seed=st.integers(0, 2 ** 16))
def test_filter_distance_equals_scipy_pdist(c_out, fan, seed):
    w = np.random.default_rng(seed).normal(size=(c_out, fan))
    d = filter_distance(torch.from_numpy(w))
    ref = pdist(w)
    assert d["mean_distance"] == pytest.approx(ref.mean(), rel=1e-10)
    assert d["max_distance"] == pytest.approx(ref.max(), rel=1e-10)
    assert d["mean_norm"] == pytest.approx(np.linalg.norm(w, axis=1).mean(), rel=1e-10)


# ------------------------------------------------------------------------------- callbacks
def _toy(n_train=96, n_test=30, size=12):
    """Fashion-MNIST-shaped toy data: class c has a bright row c (learnable in a few steps)."""
    from cnnlab.data import FASHION_MNIST_CLASSES, Dataset

    rng = np.random.default_rng(0)

    def make(n):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, (n, size, size, 1), dtype=np.uint8)
        images[np.arange(n), labels + 1, 2:-2, 0] = 230
        return images, labels.astype(np.int64)

    (xtr, ytr), (xte, yte) = make(n_train), make(n_test)
    return Dataset(name="fashion-mnist", classes=FASHION_MNIST_CLASSES, train_images=xtr,
                   train_labels=ytr, test_images=xte, test_labels=yte, mean=(0.2,), std=(0.3,),
                   source="toy")


class _AutogradReference(Callback):
    """At every step, the weight-gradient norms from a fresh autograd pass on a copy."""

    def __init__(self):
        self.norms = []

    def on_after_backward(self, run):
        model = copy.deepcopy(run.model)  # BN in training mode: the same batch statistics
        x, y = run.batch
        weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), weights)
        self.norms.append([g.double().norm().item() for g in grads])


@pytest.mark.parametrize("every", [1, 3])
def test_grad_norm_recorder_matches_autograd(every, tmp_path):
    from cnnlab import models

    torch.manual_seed(0)
    model = models.create("plain_cnn", num_classes=10, in_chans=1, depth=8)
    rec, ref = GradNormRecorder(every), _AutogradReference()
    cfg = TrainConfig(model="plain_cnn", dataset="fashion-mnist", epochs=2, batch_size=16,
                      lr=0.05, val_fraction=0, label_smoothing=0.0, augment="none", device="cpu",
                      quiet=True)
    train(cfg, [rec, ref], model=model, dataset=_toy(), log=False)
    steps = 2 * (96 // 16)
    assert rec.steps == list(range(0, steps, every))
    assert rec.layers[0] == "features.0.0" and rec.layers[-1] == "classifier.1"
    assert len(rec.layers) == 8  # 7 convs + the classifier: "depth" counts weighted layers
    want = [ref.norms[s] for s in rec.steps]
    assert np.allclose(rec.norms, want, rtol=1e-5, atol=1e-9)
    assert rec.numel == [m.weight.numel() for m in model.modules()
                         if isinstance(m, (nn.Conv2d, nn.Linear))]


def test_filter_and_test_error_recorders(tmp_path):
    from cnnlab import models
    from cnnlab.engine import evaluate

    torch.manual_seed(0)
    model = reinit_(models.create("plain_cnn", num_classes=10, in_chans=1, depth=8), "constant")
    filt, test = FilterRecorder(every=4), TestErrorRecorder()
    cfg = TrainConfig(model="plain_cnn", dataset="fashion-mnist", epochs=2, batch_size=16,
                      lr=0.05, val_fraction=0, label_smoothing=0.0, augment="none", device="cpu",
                      quiet=True)
    result = train(cfg, [filt, test], model=model, dataset=_toy(), log=False)
    assert [r["step"] for r in filt.records] == [0, 4, 6, 8, 12]  # every 4 + epoch ends (6, 12)
    assert len(filt.layers) == 7
    last = filt.records[-1]["layers"]
    # constant init: all filters of a layer received the same gradients and stayed equal
    assert max(d["relative"] for d in last) < 1e-6
    assert min(d["change"] for d in last) > 0  # ... while they did move
    assert [r["epoch"] for r in test.rows] == [1, 2]
    # the last row is the final model on the test split (what metrics.json reports)
    assert test.rows[-1]["test_error"] == pytest.approx(1 - result.test_accuracy, abs=1e-12)
    ds = _toy()
    x = torch.from_numpy(ds.test_images).permute(0, 3, 1, 2)
    ref = evaluate(result.model, x, torch.from_numpy(ds.test_labels), mean=ds.mean, std=ds.std)
    assert test.rows[-1]["test_loss"] == pytest.approx(ref.loss, rel=1e-6)


# ------------------------------------------------------------------ runs: reuse and resume
def test_interrupted_run_resumes_to_the_same_logs_and_weights(tmp_path, monkeypatch):
    """Ctrl-C in the middle of epoch 2, then the same call again: the run resumes from the
    engine's checkpoint and ends with the logs and weights of an uninterrupted run (CPU)."""
    from cnnlab.engine import TrainingInterrupted
    from cnnlab.studies._dynamics_runs import RunSpec, TrainSettings, execute
    from cnnlab.studies.store import RunStore

    ds = _toy()
    spec = RunSpec(key="r", section="symmetry", model="plain_cnn", depth=8, norm="bn",
                   act="relu", init="he", lr=0.05, epochs=2, filters=True)
    settings = TrainSettings(dataset="fashion-mnist", data_dir=None, subset=None,
                             resolution=1.0, batch_size=16, log_points=100, device="cpu")
    whole = execute(spec, settings, ds, RunStore(tmp_path / "whole"), log=lambda s: None)
    assert not whole["reused"]

    def interrupt(self, run):  # a real Ctrl-C after step 9 of 12 (epoch 2, step 3 of 6)
        if run.step == 9:
            os.kill(os.getpid(), signal.SIGINT)  # the engine stops at the next step boundary

    monkeypatch.setattr(GradNormRecorder, "on_batch_end", interrupt, raising=False)
    with pytest.raises(TrainingInterrupted):
        execute(spec, settings, ds, RunStore(tmp_path / "cut"), log=lambda s: None)
    monkeypatch.undo()
    assert not (tmp_path / "cut" / "runs" / "r" / "metrics.json").exists()
    lines = []
    resumed = execute(spec, settings, ds, RunStore(tmp_path / "cut"), log=lines.append)
    assert lines[0].startswith("r: resuming")
    for key in ("grad_norms", "test_curve", "filters"):
        assert resumed[key] == whole[key], key
    assert resumed["metrics"]["test_accuracy"] == whole["metrics"]["test_accuracy"]
    a = torch.load(tmp_path / "whole" / "runs" / "r" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "runs" / "r" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)

    # a third call trains nothing; another spec in the same folder is refused
    again = execute(spec, settings, ds, RunStore(tmp_path / "cut"), log=lambda s: None)
    assert again["reused"] and again["grad_norms"] == whole["grad_norms"]
    other = dataclasses.replace(spec, init="xavier")
    with pytest.raises(ValueError, match="init: 'he' there, 'xavier' now"):
        execute(other, settings, ds, RunStore(tmp_path / "cut"), log=lambda s: None)
