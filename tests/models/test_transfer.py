"""Transfer learning's mechanics: a frozen backbone stays bit-identical through the engine's real
training loop (parameters and batch-norm buffers), the optimiser sees only trainable parameters,
the learning-rate groups are the strategy's, a partial unfreeze trains exactly the named blocks,
and torchvision state dicts load (a mismatching one fails with one line).

References: hand-listed block names and parameter counts of the architectures (He et al. 2016's
CIFAR ResNet, Sandler et al. 2018's Table 2, torchvision's ResNet), torchvision's own models for
the loaded weights' outputs, and a control run without the freeze that does change the state.
"""

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from cnnlab.data import CIFAR10_CLASSES, Dataset
from cnnlab.engine import Callback, TrainConfig, Trainer
from cnnlab.engine.checkpoint import load_module_weights
from cnnlab.engine.optim import make_optimizer
from cnnlab.errors import DataError, UserError
from cnnlab.models.transfer import TransferNet, make_backbone
from cnnlab.studies._transfer_runs import STRATEGIES, apply_strategy, lr_scales


def toy_cifar(n_train=60, n_test=20, size=16, classes=5, seed=0) -> Dataset:
    """CIFAR-10-named toy data of ``classes`` classes: class c brightens channel c % 3."""
    rng = np.random.default_rng(seed)

    def make(n):
        labels = np.arange(n) % classes
        x = rng.integers(0, 120, (n, size, size, 3), dtype=np.uint8)
        for i, c in enumerate(labels):
            x[i, :, c:c + 3, c % 3] = 250
        return x, labels.astype(np.int64)

    (xtr, ytr), (xte, yte) = make(n_train), make(n_test)
    return Dataset(name="cifar10", classes=CIFAR10_CLASSES[:classes], train_images=xtr,
                   train_labels=ytr, test_images=xte, test_labels=yte, mean=(0.3,) * 3,
                   std=(0.2,) * 3, source="toy")


def randomise_bn(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics, so that any update of them shows."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def transfer_net(strategy: str, name: str = "resnet20", unfreeze=None):
    torch.manual_seed(0)
    backbone = make_backbone(name)
    randomise_bn(backbone.module)
    net = TransferNet(backbone, 5, seed=1)
    return apply_strategy(net, STRATEGIES[strategy], backbone, unfreeze), backbone


def config(strategy: str, epochs: int = 2) -> TrainConfig:
    return TrainConfig(model="transfer", dataset="cifar10", val_fraction=0, epochs=epochs,
                       batch_size=20, lr=0.05, lr_scales=lr_scales(STRATEGIES[strategy]),
                       augment="flip,translate=2", label_smoothing=0.0, device="cpu",
                       quiet=True, threads=1)


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def train(net, strategy, callbacks=()):
    Trainer(config(strategy), callbacks, model=net, dataset=toy_cifar(), log=False).fit()


# ------------------------------------------------------------------------------ freezing
def test_linear_probe_leaves_the_backbone_bit_identical_and_trains_the_head():
    net, _ = transfer_net("linear")
    before_backbone, before_head = snapshot(net.backbone), snapshot(net.head)
    train(net, "linear")  # the engine calls model.train() every epoch
    after = snapshot(net.backbone)
    assert after.keys() == before_backbone.keys()
    for k in before_backbone:  # weights, BN running mean/var and num_batches_tracked
        assert torch.equal(after[k], before_backbone[k]), k
    assert not torch.equal(net.head.weight, before_head["weight"])


def test_without_the_freeze_the_same_training_changes_the_backbone():
    """The control: the check above can fail (fine-tuning moves weights and BN statistics)."""
    net, _ = transfer_net("finetune")
    before = snapshot(net.backbone)
    train(net, "finetune")
    after = snapshot(net.backbone)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.endswith("running_mean") for k in changed)
    assert any(before[k].ndim == 4 for k in changed)  # conv weights moved


def test_frozen_batch_norm_stays_in_eval_mode_inside_a_training_model():
    net, _ = transfer_net("partial")
    net.train()
    for name, m in net.backbone.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.training == name.startswith("3."), name  # resnet20's last stage trains
    # the Keras trap, shown: requires_grad off alone does not stop BN from updating its
    # statistics once the module is in train mode
    nn.Module.train(net, True)  # bypasses TransferNet.train's re-freeze
    bn = net.backbone.get_submodule("0.1")
    before = bn.running_mean.clone()
    net(torch.randn(4, 3, 16, 16))
    assert not torch.equal(bn.running_mean, before)
    assert not bn.weight.requires_grad


def test_partial_unfreeze_trains_exactly_the_named_blocks():
    net, backbone = transfer_net("partial")
    # He et al. 2016: resnet20 = stem, then 3 stages of 3 basic blocks (16, 32, 64 filters)
    assert backbone.blocks == ("0", "1.0", "1.1", "1.2", "2.0", "2.1", "2.2", "3.0", "3.1",
                               "3.2")
    assert net.trainable_blocks == ("3.0", "3.1", "3.2")
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    expected = {f"backbone.{n}" for n, _ in net.backbone.named_parameters()
                if n.split(".")[:2] in (["3", "0"], ["3", "1"], ["3", "2"])}
    assert trainable == expected | {"head.weight", "head.bias"}
    # every trainable conv is in the 64-filter stage: 3 blocks x 2 convs (the first 32 -> 64)
    convs = [p for n, p in net.named_parameters() if p.requires_grad and p.ndim == 4]
    assert len(convs) == 6 and all(p.shape[0] == 64 for p in convs)
    last2, _ = transfer_net("partial", unfreeze=2)
    assert last2.trainable_blocks == ("3.1", "3.2")
    with pytest.raises(UserError, match="has 10 blocks; cannot unfreeze the last 11"):
        transfer_net("partial", unfreeze=11)
    with pytest.raises(UserError, match="has no block 'stage4'"):
        net.freeze(["stage4"])


@pytest.mark.parametrize("name, torchvision_arch, last_stage", [
    # Sandler et al. Table 2: features.14 is the first (stride-2) block of the 160-channel row;
    # 14-16 (160), 17 (320), 18 (the 1x1 conv to 1280)
    ("mobilenet_v2_cifar", False, ("14", "15", "16", "17", "18")),
    ("resnet18", False, ("4.0", "4.1")),
    ("resnet18", True, ("layer4.0", "layer4.1")),
    ("resnet50", True, ("layer4.0", "layer4.1", "layer4.2")),
    ("mobilenet_v2", True, ("14", "15", "16", "17", "18")),
])
def test_last_stage_of_each_backbone(name, torchvision_arch, last_stage):
    assert make_backbone(name, torchvision=torchvision_arch).last_stage == last_stage


def test_trainable_parameter_counts_by_hand():
    counts = {s: transfer_net(s)[0].trainable_parameters() for s in STRATEGIES}
    head = 64 * 5 + 5  # resnet20: 64 features -> 5 classes
    assert counts["linear"] == head
    # resnet20 has 0.27M parameters (He et al. 2016, Table 6) plus the new head
    assert abs(counts["scratch"] - 270_000) < 5_000 and counts["scratch"] == counts["finetune"]
    # stage 3: conv 32->64 + 5 convs 64->64 (3x3, no bias) + 6 BN (64 weights + 64 biases)
    stage3 = 32 * 64 * 9 + 5 * 64 * 64 * 9 + 6 * 2 * 64
    assert counts["partial"] == head + stage3


# ----------------------------------------------------------------------------- optimiser
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_the_optimiser_receives_only_trainable_parameters(strategy):
    net, _ = transfer_net(strategy)
    opt = make_optimizer(net, config(strategy), torch.device("cpu"))
    given = [p for g in opt.param_groups for p in g["params"]]
    assert len(given) == len({id(p) for p in given})  # no parameter twice
    assert {id(p) for p in given} == {id(p) for p in net.parameters() if p.requires_grad}


class LrRecorder(Callback):
    def __init__(self):
        self.rows = []

    def on_batch_end(self, run):
        self.rows.append((run.lr, [(g["lr"], {id(p) for p in g["params"]})
                                   for g in run.optimizer.param_groups]))


@pytest.mark.parametrize("strategy, backbone_lr", [("finetune", 0.1), ("partial", 0.1),
                                                   ("scratch", 1.0), ("linear", None)])
def test_learning_rate_groups_are_what_the_strategy_says(strategy, backbone_lr):
    net, _ = transfer_net(strategy)
    backbone = {id(p) for p in net.backbone.parameters() if p.requires_grad}
    head = {id(p) for p in net.head.parameters()}
    rec = LrRecorder()
    train(net, strategy, [rec])
    assert len(rec.rows) == 6  # 60 images / 20 per batch x 2 epochs
    for lr, groups in rec.rows:
        for group_lr, ids in groups:
            if ids & backbone and ids & head:  # one learning rate for all: no separate groups
                assert backbone_lr == 1.0 and group_lr == lr
            elif ids <= head:
                assert group_lr == lr
            else:
                assert ids <= backbone and group_lr == pytest.approx(lr * backbone_lr, rel=1e-12)
    covered = set().union(*(ids for _, ids in rec.rows[0][1]))
    assert covered == backbone | head
    assert (backbone_lr is None) == (not backbone)


# ---------------------------------------------------------------------------- weights
def _randomised(model: nn.Module) -> nn.Module:
    randomise_bn(model, seed=3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    return model.eval()


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2"])
def test_torchvision_state_dict_loads_into_the_matching_backbone(tmp_path, name):
    torch.manual_seed(0)
    ref = _randomised(getattr(torchvision.models, name)())
    path = tmp_path / f"{name}.pth"
    torch.save(ref.state_dict(), path)
    backbone = make_backbone(name, torchvision=True)
    load_module_weights(backbone.module, path, prefix=backbone.weights_prefix,
                        ignore=backbone.head_prefixes, arch=name)
    net = TransferNet(backbone, 5, seed=0).eval()
    # torchvision's network without its classifier gives the pooled features
    if name == "mobilenet_v2":
        ref.classifier = nn.Identity()
    else:
        ref.fc = nn.Identity()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = ref(x)
        got = net.pool(net.backbone(x)).flatten(1)
    assert want.abs().max() > 1e-3
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)  # same ops, float32
    assert net.head.out_features == 5 and backbone.input_size == 224


@pytest.mark.parametrize("file_arch, arch, first", [
    ("mobilenet_v2", "resnet50", r"it lacks conv1\.weight, which resnet50 needs"),
    ("resnet18", "resnet50", r"layer1\.0\.conv1\.weight has shape 64x64x3x3 in the file, "
                             r"64x64x1x1 in resnet50"),
    ("resnet50", "mobilenet_v2", r"it lacks features\.0\.0\.weight"),
])
def test_a_state_dict_of_another_architecture_fails_with_one_line(tmp_path, file_arch, arch,
                                                                   first):
    path = tmp_path / "w.pth"
    torch.save(getattr(torchvision.models, file_arch)().state_dict(), path)
    backbone = make_backbone(arch, torchvision=True)
    with pytest.raises(DataError, match=first) as info:
        load_module_weights(backbone.module, path, prefix=backbone.weights_prefix,
                            ignore=backbone.head_prefixes, arch=arch)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_extra_tensors_in_the_file_are_a_mismatch_too(tmp_path):
    state = torchvision.models.resnet18().state_dict()
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "w.pth")
    backbone = make_backbone("resnet18", torchvision=True)
    with pytest.raises(DataError, match=r"it holds layer5\.0\.conv1\.weight, which resnet18 does "
                                        r"not have"):
        load_module_weights(backbone.module, tmp_path / "w.pth", ignore=("fc.",), arch="resnet18")


def test_unknown_backbone_is_one_line():
    with pytest.raises(UserError, match=r"unknown backbone 'vgg16' \(CIFAR variants\); choose "
                                        r"from resnet20, resnet18, mobilenet_v2_cifar"):
        make_backbone("vgg16")
    with pytest.raises(UserError, match="for torchvision weights"):
        make_backbone("resnet20", torchvision=True)
