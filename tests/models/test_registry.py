"""The registry: names, ModelInfo, and one clear UserError for every bad argument."""

import dataclasses

import pytest
import torch
from torch import nn

import cnnlab.models._registry as registry
from cnnlab.errors import UserError
from cnnlab.models import ModelInfo, create, list_models, model_info, register_model

PAPER_NAMES = {
    "mobilenet_v1", "mobilenet_v2", "mobilenet_v1_cifar", "mobilenet_v2_cifar",
    "conv_mobilenet_v1", "conv_mobilenet_v1_cifar", "simple_cnn", "vgg_small",
    "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet18",
    "plain20", "plain32", "plain44", "plain56", "plain110", "plain18",
    "resnet_cifar", "plain_cnn",
}


def test_list_models_is_sorted_and_complete():
    names = list_models()
    assert names == sorted(names)
    assert PAPER_NAMES <= set(names)
    assert list_models("resnet*") == sorted(n for n in names if n.startswith("resnet"))
    assert list_models("nothing*") == []


@pytest.mark.parametrize("name", sorted(PAPER_NAMES))
def test_model_info_is_consistent_with_the_model(name):
    info = model_info(name)
    assert isinstance(info, ModelInfo) and info.name == name
    assert info.task == "image_classification"
    assert info.family and info.description and "\n" not in info.description
    assert "20" in info.description  # cites the paper's year (2015-2018)
    assert len(info.default_input) == 3 and info.default_input[0] == 3
    assert info.reference_classes in (10, 1000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.name = "x"
    with torch.device("meta"):
        model = create(name)
    assert model.min_input == info.min_input
    assert all(m >= 1 for m in info.min_input)
    assert all(d >= m for d, m in zip(info.default_input[1:], info.min_input))
    # the ImageNet-size models are the ones defined for 1000 classes at 224x224
    assert (info.reference_classes == 1000) == (info.default_input[1] == 224)


def test_unknown_name_lists_close_matches():
    with pytest.raises(UserError, match=r"unknown model 'mobilenetv2'.*mobilenet_v2") as err:
        create("mobilenetv2")
    assert isinstance(err.value, ValueError)  # the issue asks for ValueError: UserError is one
    with pytest.raises(UserError, match="resnet56"):
        model_info("resnet65")
    with pytest.raises(UserError, match="unknown model 'zzz'"):
        create("zzz")


def test_unknown_keyword_names_it_and_the_accepted_options():
    with pytest.raises(UserError, match=r"mobilenet_v2 got unknown keyword.*widht.*dropout"):
        create("mobilenet_v2", widht=0.5)
    with pytest.raises(UserError, match="depth"):
        create("resnet20", depth=32)  # depth is fixed by the name; resnet_cifar takes it


@pytest.mark.parametrize("width", [0, -0.5, float("nan"), float("inf"), True, "1"])
def test_bad_width(width):
    with pytest.raises(UserError, match=rf"width must be a finite number > 0, got {width!r}"):
        create("mobilenet_v1_cifar", width=width)


@pytest.mark.parametrize("what,value", [("num_classes", 0), ("num_classes", 2.0),
                                        ("in_chans", 0), ("in_chans", False)])
def test_bad_class_and_channel_counts(what, value):
    with pytest.raises(UserError, match=rf"{what} must be a positive integer, got {value!r}"):
        create("simple_cnn", **{what: value})


@pytest.mark.parametrize("kw,msg", [
    ({"act_layer": "swish"}, r"unknown act_layer 'swish'; expected one of .*relu6"),
    ({"norm_layer": "ln"}, r"unknown norm_layer 'ln'; expected one of .*bn"),
    ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
])
def test_bad_options(kw, msg):
    with pytest.raises(UserError, match=msg):
        create("mobilenet_v2_cifar", **kw)


@pytest.mark.parametrize("depth", [7, 19, 21, 2, 20.0])
def test_depth_must_be_6n_plus_2(depth):
    for name in ("resnet_cifar", "plain_cnn"):
        with pytest.raises(UserError, match=rf"depth must be 6n\+2.*got {depth!r}"):
            create(name, depth=depth)


def test_bad_shortcut():
    with pytest.raises(UserError, match="shortcut must be 'A'.*or 'B'.*got 'C'"):
        create("resnet20", shortcut="C")


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry, so test registrations do not leak into other tests."""
    monkeypatch.setattr(registry, "_builders", dict(registry._builders))
    monkeypatch.setattr(registry, "_infos", dict(registry._infos))


def test_width_for_a_model_without_width(scratch_registry):
    @register_model(family="toy", default_input=(3, 8, 8), min_input=(1, 1), description="toy 2024")
    def toy(*, num_classes: int, in_chans: int) -> nn.Module:
        return nn.Conv2d(in_chans, num_classes, 1)

    assert not model_info("toy").supports_width and model_info("toy").options == ()
    assert isinstance(create("toy", num_classes=4), nn.Conv2d)
    with pytest.raises(UserError, match=r"toy has no width multiplier; got width=0.5"):
        create("toy", width=0.5)
    with pytest.raises(UserError, match="accepted options: none"):
        create("toy", depth=3)


def test_registration_rules(scratch_registry):
    with pytest.raises(ValueError, match="'resnet20' is already registered"):
        register_model(name="resnet20", family="x", default_input=(3, 8, 8), min_input=(1, 1),
                       description="x")(lambda *, num_classes, in_chans: None)
    with pytest.raises(TypeError, match="declare options= exactly when it takes"):
        register_model(name="fw", family="x", default_input=(3, 8, 8), min_input=(1, 1),
                       description="x")(lambda *, num_classes, in_chans, **kw: None)
    with pytest.raises(TypeError, match="keyword-only"):
        register_model(name="pos", family="x", default_input=(3, 8, 8), min_input=(1, 1),
                       description="x")(lambda num_classes, in_chans: None)


# one valid value per option name
OPTION_VALUES = {"norm_layer": "bn", "act_layer": "relu6", "dropout": 0.1, "depth": 8,
                 "shortcut": "B"}


@pytest.mark.parametrize("name", sorted(PAPER_NAMES))
def test_every_listed_option_is_accepted(name):
    """The options a builder declares (and forwards) are the ones its model class takes."""
    opts = model_info(name).options
    assert set(opts) <= set(OPTION_VALUES) and {"norm_layer", "act_layer", "dropout"} <= set(opts)
    with torch.device("meta"):
        model = create(name, **{k: OPTION_VALUES[k] for k in opts})
    assert isinstance(model.classifier[0], nn.Dropout) and model.classifier[0].p == 0.1
    assert any(isinstance(m, nn.ReLU6) for m in model.modules())


def test_options_are_listed_and_applied():
    assert set(model_info("resnet_cifar").options) == {"depth", "shortcut", "norm_layer",
                                                        "act_layer", "dropout"}
    model = create("plain_cnn", depth=8, norm_layer="none", act_layer="sigmoid")
    mods = list(model.modules())
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.ReLU)) for m in mods)
    assert sum(isinstance(m, nn.Sigmoid) for m in mods) == 7  # one per conv layer
    convs = [m for m in mods if isinstance(m, nn.Conv2d)]
    assert len(convs) == 7 and all(c.bias is not None for c in convs)  # no norm -> conv bias
    bn_convs = [m for m in create("plain_cnn", depth=8).modules() if isinstance(m, nn.Conv2d)]
    assert all(c.bias is None for c in bn_convs)
