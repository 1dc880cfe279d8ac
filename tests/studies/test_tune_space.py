"""The space file: layers it builds, conditional parameters, malformed files (no training)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from cnnlab import models
from cnnlab.analysis import analyze
from cnnlab.cli import main
from cnnlab.studies._tune_hyperband import bracket_of, brackets
from cnnlab.studies._tune_space import load_space, parse_space

COURSE = Path(__file__).resolve().parents[2] / "examples" / "tune" / "course_space.yaml"
optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_course_space_builds_exactly_the_layers_it_says():
    space = load_space(COURSE)
    flat = {"conv_layers": 3, "filters_1": 32, "filters_2": 64, "filters_3": 96,
            "kernel_1": 3, "kernel_2": 5, "kernel_3": 3, "units_layers": 2, "units_1": 64,
            "units_2": 32, "dropout": 0.2, "lr": 0.001}
    values = space.fixed_from_params(flat)
    train, model_kw = space.split(values)
    assert train["lr"] == 0.001 and train["optimizer"] == "adamw"
    assert "conv_layers" not in model_kw and "units_layers" not in model_kw
    net = models.create(space.model, num_classes=10, in_chans=1, **model_kw)
    # by hand: conv (k*k*c_in + 1) * c_out, valid padding: 28 -2 -4 -2 = 20, pool -> 10x10
    conv = (9 * 1 + 1) * 32 + (25 * 32 + 1) * 64 + (9 * 64 + 1) * 96  # 320 + 51,264 + 55,392
    dense = (96 * 10 * 10 + 1) * 64 + (64 + 1) * 32 + (32 + 1) * 10  # 614,464 + 2,080 + 330
    assert sum(p.numel() for p in net.parameters()) == conv + dense == 723_850
    a = analyze(net, (1, 28, 28))
    assert a.totals["total_params"] == 723_850
    n_conv = sum(isinstance(m, __import__("torch").nn.Conv2d) for m in net.modules())
    n_linear = sum(isinstance(m, __import__("torch").nn.Linear) for m in net.modules())
    assert (n_conv, n_linear) == (3, 3)  # 2 hidden dense layers + the output layer
    # MACs by hand: each conv's output pixels x k*k*c_in x c_out, plus the Linear weights
    macs = 26 * 26 * 9 * 32 + 22 * 22 * 25 * 32 * 64 + 20 * 20 * 9 * 64 * 96 \
        + 9600 * 64 + 64 * 32 + 32 * 10
    assert a.totals["total_macs"] == macs


def test_inactive_parameters_never_appear_in_a_trial():
    space = load_space(COURSE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen_counts = set()
    for _ in range(60):
        trial = study.ask()
        values = space.suggest(trial)
        n, m = values["conv_layers"], values["units_layers"]
        seen_counts.add((n, m))
        want = {"conv_layers", "units_layers", "dropout", "lr"}
        want |= {f"{p}_{i}" for p in ("filters", "kernel") for i in range(1, n + 1)}
        want |= {f"units_{i}" for i in range(1, m + 1)}
        assert set(trial.params) == want
        assert len(values["filters"]) == len(values["kernel"]) == n and len(values["units"]) == m
        study.tell(trial, 0.5)
    assert len(seen_counts) >= 8  # many (conv, dense) layer counts were exercised


def test_when_condition_and_zero_layers():
    space = parse_space({"model": "stacked_cnn", "params": {
        "optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
        "momentum": {"type": "float", "low": 0.8, "high": 0.95, "when": {"optimizer": ["sgd"]}},
        "units_layers": {"type": "int", "low": 0, "high": 1},
        "units": {"type": "int", "low": 8, "high": 16, "per_layer": "units_layers"}}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    kinds = set()
    for _ in range(30):
        t = study.ask()
        v = space.suggest(t)
        assert ("momentum" in t.params) == (v["optimizer"] == "sgd")
        assert v["units"] == [] if v["units_layers"] == 0 else len(v["units"]) == 1
        kinds.add((v["optimizer"], v["units_layers"]))
        study.tell(t, 0.0)
    assert len(kinds) == 4


def test_hyperband_brackets_follow_optunas_formula():
    # the course: max_epochs=7, factor 3 -> floor(log3 7) + 1 = 2 brackets; bracket 0 may stop
    # at epochs 1 and 3, bracket 1 at 3; shares ceil(2 * 3**1 / 2) = 3 and ceil(2 * 1 / 1) = 2
    b = brackets(7, 3)
    assert [(x.index, x.rungs, x.share) for x in b] == [(0, (1, 3), 3), (1, (3,), 2)]
    # Li et al.'s R = 81, eta = 3 example: 5 brackets, rungs 1, 3, 9, 27 for the most aggressive
    b = brackets(81, 3)
    assert len(b) == 5 and b[0].rungs == (1, 3, 9, 27) and b[4].rungs == ()
    assert [x.share for x in b] == [81, 34, 15, 8, 5]  # ceil(5 * 3**s / (s + 1)), s = 4..0
    assert brackets(10, 2, min_epochs=2)[0].rungs == (2, 4, 8)
    # and Optuna's pruner agrees (its bracket count, allocation and bracket choice)
    for max_epochs, eta in ((7, 3), (81, 3), (27, 3), (16, 2)):
        pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs,
                                                reduction_factor=eta)
        study = optuna.create_study(direction="maximize", pruner=pruner)
        trial = study.ask()
        trial.report(0.5, 1)
        trial.should_prune()  # initialises the pruner
        mine = brackets(max_epochs, eta)
        assert pruner._n_brackets == len(mine)
        assert pruner._trial_allocation_budgets == [x.share for x in mine]
        frozen = study.get_trials()[0]
        assert 0 <= bracket_of(pruner, study, frozen) < len(mine)


def test_bracket_of_is_the_bracket_the_pruner_acts_on():
    """Behaviour, not internals: after 12 good trials, every losing trial stops at an epoch at
    which the bracket ``bracket_of`` names may stop it (bracket s of max 27, eta 3: 3^(s + k);
    Optuna checks the rung at 27 too, after the last epoch), and most stop at its first rung."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=27, reduction_factor=3)
    # the bracket is a hash of the study name and trial number: a fixed name, a fixed assignment
    study = optuna.create_study(study_name="bracket-check", direction="maximize", pruner=pruner,
                                sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial):
        good = trial.number < 12
        for epoch in range(1, 28):
            trial.report(1.0 + epoch if good else 0.0, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return 1.0 + 27 if good else 0.0

    study.optimize(objective, n_trials=60)
    first_rung, seen = 0, set()
    for t in study.get_trials()[12:]:
        b = bracket_of(pruner, study, t)
        seen.add(b)
        stopped = max(t.intermediate_values)
        assert stopped in {3 ** (b + k) for k in range(4)}, (t.number, b, stopped)
        first_rung += stopped == 3 ** b
    # of the 48 losing trials, most stop at once (the rest still had too few rivals at that rung)
    assert len(seen) >= 3 and first_rung >= 30, (seen, first_rung)  # measured: 4 brackets, 34


@pytest.mark.parametrize("body, needle", [
    ("conv_layers: {type: integer, low: 1, high: 2}", "unknown type 'integer'"),
    ("conv_layers: {type: int, low: 5, high: 2}", "low 5 > high 2"),
    ("lr: {type: categorical, choices: []}", "non-empty list of choices"),
    ("filters: {type: int, low: 4, high: 8, per_layer: layers}", "per_layer of 'layers'"),
    ("lr: {type: float, low: 0.1, high: 0.2, when: {optimiser: [sgd]}}",
     "conditional on 'optimiser'"),
    ("bogus: {type: int, low: 1, high: 2}", "'bogus' is neither a training setting"),
])
def test_malformed_space_is_one_line_exit_2(tmp_path, capsys, body, needle):
    space = tmp_path / "bad.yaml"
    space.write_text(f"model: stacked_cnn\nparams:\n  {body}\n")
    code = main(["tune", "--space", str(space), "--trials", "1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err


@pytest.mark.parametrize("extra, needle", [
    (["--workers", "0"], "--workers must be at least 1, got 0"),
    (["--storage", "postgresql://nobody@127.0.0.1:1/none"], "cannot use storage postgresql://"),
    (["--storage", "notadb://x"], "cannot use storage"),
    (["--random-seed", "-1"], "--random-seed must be between 0 and 4294967231, got -1"),
    (["--seed", str(2**32)], f"--seed must be between 0 and 4294967231, got {2**32}"),
])
def test_bad_options_are_one_line_exit_2(tmp_path, capsys, extra, needle):
    space = tmp_path / "s.yaml"
    space.write_text("model: stacked_cnn\nparams:\n  lr: {type: float, low: 0.001, high: 0.01}\n")
    code = main(["tune", "--space", str(space), "--trials", "1", "--out", str(tmp_path / "o"),
                 *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err


def test_a_rerun_with_other_settings_is_refused(tmp_path):
    from cnnlab.errors import UserError
    from cnnlab.studies.tune import TuneConfig, _open_study

    cfg = TuneConfig(space=str(COURSE), out=str(tmp_path), trials=1)
    space = load_space(COURSE)
    _open_study(cfg, space, cfg.study_name, "tpe", "hyperband")
    _open_study(cfg, space, cfg.study_name, "tpe", "hyperband")  # the same settings: fine
    cfg.max_epochs = 9
    with pytest.raises(UserError, match="was started with other settings"):
        _open_study(cfg, space, cfg.study_name, "tpe", "hyperband")
