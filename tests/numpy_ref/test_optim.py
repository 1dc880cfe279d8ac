"""The NumPy optimisers against ``torch.optim`` in float64: 100 steps with random gradients,
every parameter to 1e-12 (absolute and relative); bias correction off against the written formula;
the ``E[S_t] = E[g^2] (1 - beta^t)`` identity by simulation within its standard error."""

import numpy as np
import pytest
import torch

from cnnlab.errors import UserError
from cnnlab.numpy_ref.optim import SGD, Adam, AdamW, RMSprop

STEPS = 100


def run_both(make_np, make_torch, seed=0, shape=(3, 4)):
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(shape)
    grads = rng.standard_normal((STEPS, *shape)) * rng.uniform(0.01, 3.0, (STEPS, 1, 1))
    opt = make_np(p0)
    pt = torch.tensor(p0, requires_grad=True)
    topt = make_torch([pt])
    for g in grads:
        opt.step(g)
        pt.grad = torch.tensor(g)
        topt.step()
        np.testing.assert_allclose(opt.param, pt.detach().numpy(), rtol=1e-12, atol=1e-12)
    return opt


CASES = {
    "sgd": (lambda p: SGD(p, lr=0.05), lambda ps: torch.optim.SGD(ps, lr=0.05)),
    "sgd-momentum-wd": (
        lambda p: SGD(p, lr=0.03, momentum=0.9, dampening=0.1, weight_decay=1e-2),
        lambda ps: torch.optim.SGD(ps, lr=0.03, momentum=0.9, dampening=0.1, weight_decay=1e-2),
    ),
    "sgd-nesterov": (
        lambda p: SGD(p, lr=0.03, momentum=0.8, nesterov=True, weight_decay=5e-3),
        lambda ps: torch.optim.SGD(ps, lr=0.03, momentum=0.8, nesterov=True, weight_decay=5e-3),
    ),
    "rmsprop": (lambda p: RMSprop(p, lr=0.01), lambda ps: torch.optim.RMSprop(ps, lr=0.01)),
    "rmsprop-centered-momentum": (
        lambda p: RMSprop(p, lr=0.005, alpha=0.9, momentum=0.5, centered=True, weight_decay=1e-3),
        lambda ps: torch.optim.RMSprop(
            ps, lr=0.005, alpha=0.9, momentum=0.5, centered=True, weight_decay=1e-3
        ),
    ),
    "adam": (lambda p: Adam(p, lr=0.01), lambda ps: torch.optim.Adam(ps, lr=0.01)),
    "adam-wd": (
        lambda p: Adam(p, lr=0.01, beta1=0.5, beta2=0.99, eps=1e-6, weight_decay=0.1),
        lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.5, 0.99), eps=1e-6, weight_decay=0.1),
    ),
    "adamw": (lambda p: AdamW(p, lr=0.01), lambda ps: torch.optim.AdamW(ps, lr=0.01)),
    "adamw-wd": (
        lambda p: AdamW(p, lr=0.02, beta1=0.8, weight_decay=0.3),
        lambda ps: torch.optim.AdamW(ps, lr=0.02, betas=(0.8, 0.999), weight_decay=0.3),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch_optim_float64_over_100_steps(name):
    make_np, make_torch = CASES[name]
    opt = run_both(make_np, make_torch, seed=len(name))
    assert opt.t == STEPS and len(opt.history) == STEPS


def test_adam_without_bias_correction_is_the_written_formula():
    rng = np.random.default_rng(5)
    p = rng.standard_normal(6)
    opt = Adam(p, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, bias_correction=False)
    m = np.zeros(6)
    s = np.zeros(6)
    for _ in range(STEPS):
        g = rng.standard_normal(6)
        opt.step(g)
        m = 0.9 * m + 0.1 * g
        s = 0.999 * s + 0.001 * g**2
        p = p - 0.01 * m / (np.sqrt(s) + 1e-8)
        np.testing.assert_allclose(opt.param, p, rtol=1e-12, atol=1e-12)
    # and the record's values are the formula's
    rec = opt.history[-1]
    np.testing.assert_allclose(rec.values["m"], m, rtol=1e-12)
    np.testing.assert_allclose(rec.values["v_hat"], s, rtol=1e-12)


def test_first_step_uncorrected_is_about_3_2_times_corrected():
    g = np.array([0.3, -2.0, 5.0])
    on = Adam(np.zeros(3), lr=1.0, eps=0.0).step(g).values["update"]
    off = Adam(np.zeros(3), lr=1.0, eps=0.0, bias_correction=False).step(g).values["update"]
    # (1 - b1) g / sqrt((1 - b2) g^2) = 0.1 / sqrt(0.001) = 3.1623 times sign(g)
    np.testing.assert_allclose(off / on, 0.1 / np.sqrt(0.001), rtol=1e-12)


@pytest.mark.parametrize("beta", [0.9, 0.999])
def test_expected_second_moment_identity_by_simulation(beta):
    """E[S_t] = E[g^2] (1 - beta^t) for i.i.d. gradients, measured over 4000 runs; each step's
    mean must be within 4 standard errors (the standard error measured from the runs)."""
    rng = np.random.default_rng(123)
    runs, steps = 4000, 30
    g = rng.normal(0.5, 2.0, (steps, runs))  # E[g^2] = 0.25 + 4 = 4.25
    opt = Adam(np.zeros(runs), beta2=beta)
    s = np.array([opt.step(gt).values["v"] for gt in g])  # (steps, runs)
    t = np.arange(1, steps + 1)
    expected = 4.25 * (1 - beta**t)
    se = s.std(axis=1, ddof=1) / np.sqrt(runs)
    assert np.all(np.abs(s.mean(axis=1) - expected) < 4 * se)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: Adam(np.zeros(2), beta1=1.0), r"beta1 must be in \[0, 1\), got 1.0"),
        (lambda: Adam(np.zeros(2), beta2=-0.1), r"beta2 must be in \[0, 1\), got -0.1"),
        (lambda: SGD(np.zeros(2), lr=-1), "lr must be >= 0"),
        (lambda: SGD(np.zeros(2), nesterov=True), "Nesterov momentum needs momentum > 0"),
        (lambda: RMSprop(np.zeros(2), alpha=1.5), r"alpha must be in \[0, 1\)"),
        (lambda: Adam(np.zeros(2)).step(np.zeros(3)), r"grad must have the parameters' shape"),
    ],
)
def test_bad_settings_raise_user_error(make, message):
    with pytest.raises(UserError, match=message):
        make()
