"""Adam's second moment and bias correction, measured.

``S_t = (1 - beta2) sum_i beta2^(t-i) g_i^2``, so for i.i.d. gradients
``E[S_t] = E[g^2] (1 - beta2^t)``: biased towards 0 in the first steps. Bias correction divides
``m`` by ``1 - beta1^t`` and ``S`` by ``1 - beta2^t``; for a constant gradient the uncorrected
step is ``(1 - beta1^t) / sqrt(1 - beta2^t)`` times the corrected one (3.16x at t = 1 with the
defaults: larger, not smaller).
"""

from __future__ import annotations

import numpy as np

from cnnlab.errors import UserError
from cnnlab.numpy_ref.labs._result import LabResult, num, table
from cnnlab.numpy_ref.optim import Adam, check_beta


def uncorrected_factor(t: np.ndarray, beta1: float, beta2: float) -> np.ndarray:
    """``(1 - beta1^t) / sqrt(1 - beta2^t)``: uncorrected / corrected step size for a constant
    gradient (eps neglected)."""
    return (1 - beta1**t) / np.sqrt(1 - beta2**t)


def first_step_sentence(factor: float, beta1: float, beta2: float) -> str:
    """The first-step comparison in words, from the factor."""
    how = "larger" if factor > 1 else "smaller" if factor < 1 else "the same size"
    return (f"with beta1 = {num(beta1)} and beta2 = {num(beta2)} the uncorrected first step is "
            f"{factor:.2f}x the corrected one ({how}, not {'smaller' if factor > 1 else 'larger'})")


def spread_sentence(beta1: float, low_beta1: float, std: float, low_std: float) -> str:
    how = "widened" if low_std > std else "narrowed" if low_std < std else "left unchanged"
    return (f"lowering beta1 from {num(beta1)} to {num(low_beta1)} {how} the spread (std) of "
            f"m_hat / sqrt(S_hat) from {std:.3f} to {low_std:.3f}")


def adam_lab(
    beta1: float = 0.9,
    beta2: float = 0.999,
    low_beta1: float = 0.5,
    eps: float = 1e-8,
    grad_mean: float = 0.5,
    grad_std: float = 1.0,
    first_grad: float = 2.0,
    steps: int = 50,
    runs: int = 2000,
    seed: int = 0,
) -> LabResult:
    """Measure ``E[S_t]`` over ``runs`` simulated runs of i.i.d. gradients ``N(grad_mean,
    grad_std^2)`` against ``E[g^2] (1 - beta2^t)``; write out the first step with and without
    bias correction for the gradient ``first_grad``; compare the spread of the update direction
    ``m_hat / (sqrt(S_hat) + eps)`` after ``steps`` steps for ``beta1`` and ``low_beta1``.

    Raises:
        UserError: a beta outside [0, 1), steps or runs < 2, grad_std < 0, first_grad = 0.
    """
    for name, v in (("beta1", beta1), ("beta2", beta2), ("low_beta1", low_beta1)):
        check_beta(v, name, "walkthrough adam")
    if steps < 2 or runs < 2:
        raise UserError(f"walkthrough adam: steps and runs must be >= 2, got {steps}, {runs}")
    if grad_std < 0:
        raise UserError(f"walkthrough adam: grad_std must be >= 0, got {grad_std}")
    if first_grad == 0:
        raise UserError("walkthrough adam: first_grad must not be 0 (its step is 0 either way)")
    rng = np.random.default_rng(seed)
    g = rng.normal(grad_mean, grad_std, (steps, runs))  # (T, runs)
    e_g2 = grad_mean**2 + grad_std**2
    opts = {b: Adam(np.zeros(runs), beta1=b, beta2=beta2, eps=eps) for b in (beta1, low_beta1)}
    for gt in g:
        for opt in opts.values():
            opt.step(gt)
    s = np.array([r.values["v"] for r in opts[beta1].history])  # (T, runs)
    t = np.arange(1, steps + 1)
    expected = e_g2 * (1 - beta2**t)
    mean = s.mean(axis=1)
    se = s.std(axis=1, ddof=1) / np.sqrt(runs)
    z = (mean - expected) / np.where(se > 0, se, 1.0)
    shown = sorted({1, 2, 5, 10, steps} & set(t.tolist()))
    rows = [[str(k), mean[k - 1], se[k - 1], expected[k - 1], expected[k - 1] / e_g2]
            for k in shown]

    # first step, with and without bias correction
    on = Adam(np.zeros(1), lr=1.0, beta1=beta1, beta2=beta2, eps=eps).step([first_grad])
    off = Adam(np.zeros(1), lr=1.0, beta1=beta1, beta2=beta2, eps=eps,
               bias_correction=False).step([first_grad])
    step_on, step_off = float(on.values["update"][0]), float(off.values["update"][0])
    factor = step_off / step_on
    ts = np.unique(np.r_[1, 2, 5, 10, 100, 1000, 10000])
    factors = uncorrected_factor(ts, beta1, beta2)

    # the update direction after `steps` steps, across runs
    ratio = {b: r.history[-1].values["m_hat"] / (np.sqrt(r.history[-1].values["v_hat"]) + eps)
             for b, r in opts.items()}
    spread = {b: (float(v.mean()), float(v.std(ddof=1)), *np.percentile(v, [5, 95]).tolist())
              for b, v in ratio.items()}

    m1, v1 = float(on.values["m"][0]), float(on.values["v"][0])
    worked = [
        f"step 1, g = {num(first_grad)}: m = (1 - {num(beta1)}) * {num(first_grad)} = {num(m1)};"
        f"  S = (1 - {num(beta2)}) * {num(first_grad)}^2 = {num(v1)}",
        f"corrected:   m_hat = {num(m1)} / (1 - {num(beta1)}^1) = {num(on.values['m_hat'][0])};"
        f"  S_hat = {num(v1)} / (1 - {num(beta2)}^1) = {num(on.values['v_hat'][0])};"
        f"  step = lr * {num(on.values['m_hat'][0])} / (sqrt({num(on.values['v_hat'][0])}) + eps)"
        f" = {num(step_on)} * lr",
        f"uncorrected: step = lr * {num(m1)} / (sqrt({num(v1)}) + eps) = {num(step_off)} * lr"
        f"  ->  {num(step_off)} / {num(step_on)} = {factor:.4f}"
        f" = (1 - {num(beta1)}) / sqrt(1 - {num(beta2)})",
    ]
    max_z = float(np.abs(z).max())
    k10 = min(10, steps)
    held = (f"held within {max_z:.1f} standard errors at every one of {steps} steps"
            if max_z <= 4 else f"missed by up to {max_z:.1f} standard errors over {steps} steps")
    conclusion = (
        f"E[S_t] = E[g^2](1 - beta2^t) {held} (E[S_{k10}] is "
        f"{expected[k10 - 1] / e_g2:.2%} of E[g^2], biased towards 0); {first_step_sentence(factor, beta1, beta2)}; "
        f"{spread_sentence(beta1, low_beta1, spread[beta1][1], spread[low_beta1][1])}."
    )
    sections = [
        (f"E[S_t] measured over {runs} runs vs E[g^2](1 - beta2^t), E[g^2] = {num(e_g2)}",
         table(["t", "mean S_t", "std error", "E[g^2](1-b2^t)", "(1-b2^t)"], rows)
         + f"\nlargest |measured - formula| / std error over all {steps} steps: {max_z:.2f}"),
        ("uncorrected / corrected step for a constant gradient: (1 - b1^t) / sqrt(1 - b2^t)",
         table(["t", "factor"], [[str(k), f] for k, f in zip(ts.tolist(), factors, strict=True)])),
        (f"m_hat / (sqrt(S_hat) + eps) across runs after {steps} steps",
         table(["beta1", "mean", "std", "5%", "95%"],
               [[num(b), *spread[b]] for b in (beta1, low_beta1)])),
    ]
    values = {
        "t": t, "mean_S": mean, "stderr_S": se, "expected_S": expected, "E_g2": e_g2,
        "max_abs_z": max_z, "first_step": {"corrected": step_on, "uncorrected": step_off,
                                           "factor": factor},
        "factor_t": ts, "factor": factors,
        "direction": {str(b): dict(zip(("mean", "std", "p5", "p95"), spread[b], strict=True))
                      for b in (beta1, low_beta1)},
    }

    def draw(fig):
        a1, a2, a3 = fig.subplots(1, 3)
        a1.fill_between(t, mean - 2 * se, mean + 2 * se, alpha=0.3, label="measured +- 2 SE")
        a1.plot(t, mean, ".", label="mean S_t")
        a1.plot(t, expected, "k-", lw=1, label="E[g^2](1 - beta2^t)")
        a1.axhline(e_g2, color="0.5", ls="--", lw=1, label="E[g^2]")
        a1.set(xlabel="step t", ylabel="S_t", title="second moment: biased towards 0")
        a1.legend(fontsize=7)
        a2.semilogx(ts, factors, "o-")
        a2.axhline(1, color="0.5", ls="--", lw=1)
        a2.set(xlabel="step t", ylabel="uncorrected / corrected step",
               title="what bias correction changes")
        for b in (beta1, low_beta1):
            a3.hist(ratio[b], bins=40, alpha=0.6, label=f"beta1 = {num(b)}")
        a3.set(xlabel="m_hat / sqrt(S_hat)", ylabel="runs", title=f"update direction at t = {steps}")
        a3.legend(fontsize=7)

    return LabResult(
        "adam", "Adam: the second moment S_t, bias correction, and beta1",
        f"beta1 {num(beta1)}, beta2 {num(beta2)}, low beta1 {num(low_beta1)}, eps {eps:g}, "
        f"g ~ N({num(grad_mean)}, {num(grad_std)}^2), {steps} steps x {runs} runs, seed {seed}",
        sections, worked, conclusion, values, draw)
