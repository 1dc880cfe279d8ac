"""``analyze`` against torchvision's own published metadata, for every classification model it
ships: ``get_model_weights(name).DEFAULT.meta["num_params"]`` exactly and ``meta["_ops"]`` (GFLOPS
in torchvision's sense = G-MACs, printed with 3 decimals) within 1 %, at the weights' crop size.
Models are built on the ``meta`` device and analysed on fake tensors (no weights allocated).

A representative subset (one model per kind of op: plain conv, depthwise + SE, Inception with aux
heads, RegNet, Swin's cosine attention; ViT-B/32 in its own test) runs by default; the whole set (~80 models, a few
minutes on 2 loaded cores) is marked ``slow``.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from torchvision.models import get_model, get_model_weights, list_models, regnet

from cnnlab.analysis import analyze

ALL = list_models(module=torchvision.models)
SUBSET = ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "googlenet", "regnet_x_400mf",
          "swin_v2_t"]  # vit_b_32: the name-vs-instance test below
# torchvision's published googlenet weights are the model without its two auxiliary heads
# (aux_logits=False once loaded); num_params counts that model. The analyzer reports the heads
# as unused (the eval forward never runs them), so params minus the unused heads must match.
# inception_v3's published num_params does include AuxLogits (27,161,264).
WITHOUT_UNUSED = {"googlenet"}


def _build(name, monkeypatch):
    weights = get_model_weights(name).DEFAULT
    crop = weights.transforms.keywords["crop_size"]
    kwargs = {"image_size": crop} if name.startswith("vit_") else {}  # ViTs: one image size
    original = regnet.BlockParams.from_init_params.__func__

    def on_cpu(cls, *args, **kw):  # RegNet computes its widths with tensors at build time
        with torch.device("cpu"):
            return original(cls, *args, **kw)

    monkeypatch.setattr(regnet.BlockParams, "from_init_params", classmethod(on_cpu))
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore", FutureWarning)
        model = get_model(name, weights=None, num_classes=len(weights.meta["categories"]), **kwargs)
    return model, weights.meta, crop


def _check(name, monkeypatch):
    model, meta, crop = _build(name, monkeypatch)
    a = analyze(model, (3, crop, crop))
    t = a.totals
    params = t["total_params"]
    if name in WITHOUT_UNUSED:
        params -= sum(u.trainable + u.non_trainable for u in a.unused)
        assert {u.name for u in a.unused} == {"aux1", "aux2"}
    assert params == meta["num_params"], name
    gmacs, published = t["total_macs"] / 1e9, meta["_ops"]
    # within 1 %, or within the 0.0005 G that printing 3 decimals may round away (e.g.
    # mobilenet_v3_small: 0.05653 G counted, published 0.057)
    assert abs(gmacs - published) <= max(0.01 * published, 0.0005 + 1e-9), (name, gmacs, published)
    assert a.not_counted == {}, (name, a.not_counted)


@pytest.mark.parametrize("name", SUBSET)
def test_representative_models_match_torchvision_metadata(name, monkeypatch):
    _check(name, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in ALL if n not in SUBSET])
def test_every_classification_model_matches_torchvision_metadata(name, monkeypatch):
    _check(name, monkeypatch)


def test_vit_from_a_name_and_from_an_instance_count_the_same():
    """A name is built on ``meta`` (attention runs the math backend: bmm + softmax); an instance
    with real CPU weights dispatches to the fused CPU flash kernel. Same totals, every op kind."""
    by_name = analyze("torchvision:vit_b_32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        instance = analyze(torchvision.models.vit_b_32(), (3, 224, 224))
    assert by_name.totals == instance.totals
    assert by_name.not_counted == instance.not_counted == {}
    assert [(r.name, r.ops) for r in by_name.layers if r.ops.macs] == [
        (r.name, r.ops) for r in instance.layers if r.ops.macs]
    published = get_model_weights("vit_b_32").DEFAULT.meta["_ops"]  # 4.409 G
    assert abs(by_name.totals["total_macs"] / 1e9 - published) <= 0.01 * published
