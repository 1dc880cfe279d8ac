"""Weight-decay groups, lr schedules (against torch's schedulers) and the EMA (closed form)."""

import math

import pytest
import torch
from torch import nn

from cnnlab.engine import EMA, TrainConfig, lr_factor, param_groups
from cnnlab.engine.optim import make_optimizer
from cnnlab.errors import UserError


def test_no_weight_decay_on_norm_and_bias():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(2, 3, 5, 5))
    decay, no_decay = param_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(decay["params"]) == ids([model[0].weight, model[3].weight])
    assert ids(no_decay["params"]) == ids([model[0].bias, model[1].weight, model[1].bias,
                                           model[3].bias])
    # with zero gradients, one SGD step shrinks decayed weights only
    opt = make_optimizer(model, TrainConfig(lr=0.1, weight_decay=0.5, momentum=0.0),
                         torch.device("cpu"))
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for p, b in zip(model.parameters(), before):
        expected = b * (1 - 0.1 * 0.5) if p.ndim > 1 else b
        torch.testing.assert_close(p.detach(), expected)


def test_lr_scales_group_parameters_by_the_longest_module_prefix():
    model = nn.Sequential()
    model.add_module("backbone", nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1)))
    model.add_module("backbones", nn.Linear(2, 2))  # a prefix of the name, not a module above
    model.add_module("head", nn.Linear(4, 2))
    model.backbone[0].requires_grad_(False)  # frozen: in no group at all
    groups = param_groups(model, 5e-4, {"backbone": 0.1, "backbone.1": 0.5})
    by_id = {id(p): (g["lr_scale"], g["weight_decay"]) for g in groups for p in g["params"]}
    want = {model.backbone[1].weight: (0.5, 5e-4), model.backbone[1].bias: (0.5, 0.0),
            model.backbones.weight: (1.0, 5e-4), model.backbones.bias: (1.0, 0.0),
            model.head.weight: (1.0, 5e-4), model.head.bias: (1.0, 0.0)}
    assert by_id == {id(p): v for p, v in want.items()}
    assert sum(len(g["params"]) for g in groups) == 6
    with pytest.raises(UserError, match="'backbone.0' matches no trainable parameter"):
        param_groups(model, 5e-4, {"backbone.0": 0.1})
    model.requires_grad_(False)
    with pytest.raises(UserError, match="no trainable parameter"):
        make_optimizer(model, TrainConfig(), torch.device("cpu"))
    for bad in ({"backbone": 0}, {"backbone": float("nan")}, {"": 0.1}, ["backbone"]):
        with pytest.raises(UserError, match="(learning-rate scale|lr scales)"):
            TrainConfig(lr_scales=bad).validate()


def _torch_lrs(scheduler_factory, total):
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = scheduler_factory(opt)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_cosine_matches_torch_cosine_annealing():
    total = 50
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total), total)
    ours = [lr_factor(s, total, "cosine", 0.0) for s in range(total)]
    assert ours == pytest.approx(ref, abs=1e-12)


def test_onecycle_and_warmup_match_torch_linear_schedulers():
    total, warm = 100, 0.2
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.SequentialLR(o, [
        torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=20),
        torch.optim.lr_scheduler.LinearLR(o, start_factor=1.0, end_factor=0.0, total_iters=80),
    ], milestones=[20]), total)
    ours = [lr_factor(s, total, "onecycle", warm) for s in range(total)]
    assert ours == pytest.approx(ref, abs=1e-12)
    assert max(ours) == 1.0 and ours[-1] == pytest.approx(1 / 80)
    assert [lr_factor(s, 10, "constant", 0.0) for s in range(10)] == [1.0] * 10
    assert lr_factor(0, 10, "constant", 0.5) == 0.1


def test_ema_matches_the_closed_form():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.9)
    expected = {k: v.double().clone() for k, v in model.state_dict().items()}
    for n in range(1, 30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model(torch.randn(4, 3))  # moves the BN running statistics
        ema.update(model)
        d = min(0.9, (1 + n) / (10 + n))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                expected[k] = d * expected[k] + (1 - d) * v.double()
            else:
                expected[k] = v.double()
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(v.double(), expected[k], atol=1e-5, rtol=1e-5)
    clone = EMA(model, decay=0.5)
    clone.load_state_dict(ema.state_dict())
    assert clone.updates == 29 and clone.decay == 0.9
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert math.isclose(ema.decay, 0.9)
