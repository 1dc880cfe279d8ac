"""Batch norm and dropout in training vs evaluation mode, measured on small fixed batches.

Batch norm in training mode normalises with the batch's own mean and (biased) variance, so one
sample's output depends on the rest of its batch; evaluation mode uses the running statistics,
which move towards the batch statistics by ``momentum`` per step (PyTorch's convention). A batch
of one has no variance to normalise by. Dropout divides the kept values by ``1 - p`` in training
so that evaluation can be the identity.
"""

from __future__ import annotations

import numpy as np

from cnnlab.errors import UserError
from cnnlab.numpy_ref.batchnorm import batchnorm2d_forward
from cnnlab.numpy_ref.dropout import check_drop_probability, dropout_forward
from cnnlab.numpy_ref.labs._result import LabResult, num, table
from cnnlab.numpy_ref.views import format_matrix

# Two batches of 4 samples x 3 features; sample 0 is the same in both.
BATCH_A = [[2.0, 10.0, -1.0], [4.0, 14.0, 0.0], [6.0, 12.0, 1.0], [8.0, 16.0, 4.0]]
BATCH_B = [[2.0, 10.0, -1.0], [0.0, 20.0, 3.0], [1.0, 18.0, 5.0], [3.0, 24.0, 2.0]]
DROPOUT_X = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]


def _bn(x: np.ndarray, rm: np.ndarray, rv: np.ndarray, training: bool, momentum: float,
        eps: float):
    c = x.shape[1]
    out, _, running = batchnorm2d_forward(x[:, :, None, None], np.ones(c), np.zeros(c), rm, rv,
                                          training, momentum, eps)
    return out[:, :, 0, 0], running


def eval_mode_sentence(same_train: bool, delta: float, eval_same: bool) -> str:
    train = ("gave the same output in both batches" if same_train else
             f"gave different outputs in the two batches (largest difference {delta:.3f})")
    ev = "it gave the same output in both" if eval_same else "its outputs still differed"
    return f"in training mode the same sample {train}; in evaluation mode {ev}"


def batchnorm_lab(
    batch_a: object = None,
    batch_b: object = None,
    momentum: float = 0.1,
    eps: float = 1e-5,
    steps: int = 50,
) -> LabResult:
    """Batch norm (``gamma = 1``, ``beta = 0``) on two ``(N, C)`` batches that share sample 0.

    Runs one training step on ``batch_a`` (running statistics from mean 0, variance 1), then
    ``steps`` steps, and compares training and evaluation outputs of the shared sample.

    Raises:
        UserError: batches that are not ``(N >= 2, C)`` with the same C, momentum outside [0, 1],
            steps < 1.
    """
    a = np.asarray(BATCH_A if batch_a is None else batch_a, dtype=np.float64)
    b = np.asarray(BATCH_B if batch_b is None else batch_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise UserError(f"walkthrough batchnorm: batches must be (N >= 2, C) with the same C, "
                        f"got {a.shape} and {b.shape}")
    if steps < 1:
        raise UserError(f"walkthrough batchnorm: steps must be >= 1, got {steps}")
    c = a.shape[1]
    rm0, rv0 = np.zeros(c), np.ones(c)
    out_a, (rm1, rv1) = _bn(a, rm0, rv0, True, momentum, eps)
    out_b, _ = _bn(b, rm0, rv0, True, momentum, eps)
    rm, rv = rm1, rv1
    for _ in range(steps - 1):
        _, (rm, rv) = _bn(a, rm, rv, True, momentum, eps)
    eval_a, _ = _bn(a, rm, rv, False, momentum, eps)
    eval_b, _ = _bn(b, rm, rv, False, momentum, eps)
    eval_1, _ = _bn(a, rm1, rv1, False, momentum, eps)
    delta_train = float(np.abs(out_a[0] - out_b[0]).max())
    delta_eval = float(np.abs(eval_a[0] - eval_b[0]).max())
    mean, var = a.mean(axis=0), a.var(axis=0)
    m = len(a)
    try:
        _bn(a[:1], rm0, rv0, True, momentum, eps)
        single = "a batch of 1 was accepted"
    except UserError as exc:
        single = str(exc)
    share = 1 - (1 - momentum) ** steps  # how far the running mean has moved towards the batch's
    col = a[:, 0]
    worked = [
        f"feature 0 of batch A: mean = ({' + '.join(num(v) for v in col)}) / {m} = {num(mean[0])};"
        f"  var = mean((x - {num(mean[0])})^2) = {num(var[0])} (biased, divides by {m})",
        f"sample 0: x_hat = ({num(col[0])} - {num(mean[0])}) / sqrt({num(var[0])} + {eps:g}) = "
        f"{num(out_a[0, 0])}",
        f"running mean <- (1 - {num(momentum)}) * {num(rm0[0])} + {num(momentum)} * "
        f"{num(mean[0])} = {num(rm1[0])};  running var <- (1 - {num(momentum)}) * {num(rv0[0])} "
        f"+ {num(momentum)} * {num(var[0])} * {m}/{m - 1} = {num(rv1[0])} (unbiased)",
    ]
    conclusion = (
        f"{eval_mode_sentence(delta_train == 0, delta_train, delta_eval < 1e-12)}; after 1 step "
        f"the running mean has moved {momentum:.0%} of the way to the batch mean, after {steps} "
        f"steps {share:.1%} (1 - (1 - momentum)^steps), so a model evaluated in training mode "
        f"(a forgotten model.eval()) depends on its batch; a batch of 1 in training mode: "
        f"{'refused' if 'more than one value' in single else 'accepted'}."
    )
    sections = [
        ("batch A and batch B (rows = samples, sample 0 shared)",
         "A:\n" + format_matrix(a) + "\nB:\n" + format_matrix(b)),
        ("training mode: each batch normalised with its own statistics",
         f"batch A mean [{', '.join(num(v) for v in mean)}], variance (biased) "
         f"[{', '.join(num(v) for v in var)}]\n"
         + table(["", *[f"feature {k}" for k in range(c)]],
                 [["sample 0 in A", *out_a[0]], ["sample 0 in B", *out_b[0]]])),
        (f"running statistics (momentum {num(momentum)}) and evaluation mode",
         table(["after", *[f"mean {k}" for k in range(c)], *[f"var {k}" for k in range(c)]],
               [["1 step", *rm1, *rv1], [f"{steps} steps", *rm, *rv],
                ["batch A itself", *mean, *(var * m / (m - 1))]])
         + "\n" + table(["evaluation mode", *[f"feature {k}" for k in range(c)]],
                        [["sample 0, after 1 step", *eval_1[0]],
                         [f"sample 0 in A, after {steps}", *eval_a[0]],
                         [f"sample 0 in B, after {steps}", *eval_b[0]]])),
        ("a batch of 1 in training mode", single),
    ]
    values = {
        "train": {"sample0_in_a": out_a[0], "sample0_in_b": out_b[0], "max_difference":
                  delta_train, "batch_a_mean": mean, "batch_a_var": var},
        "running": {"after_1": {"mean": rm1, "var": rv1}, f"after_{steps}": {"mean": rm,
                                                                           "var": rv}},
        "eval": {"sample0_after_1": eval_1[0], "sample0_in_a": eval_a[0],
                 "sample0_in_b": eval_b[0], "max_difference": delta_eval},
        "batch_of_one": single,
    }

    def draw(fig):
        a1, a2 = fig.subplots(1, 2)
        k = np.arange(c)
        for i, (vals, label) in enumerate(((out_a[0], "train, in batch A"),
                                           (out_b[0], "train, in batch B"),
                                           (eval_a[0], f"eval, {steps} steps"))):
            a1.bar(k + (i - 1) * 0.27, vals, 0.27, label=label)
        a1.set(xticks=k, xlabel="feature", ylabel="output for sample 0",
               title="the same sample, two batches")
        a1.legend(fontsize=7)
        t = np.arange(0, steps + 1)
        a2.plot(t, 1 - (1 - momentum) ** t, "o-", ms=3)
        a2.set(xlabel="training steps", ylabel="share of the way to the batch mean",
               title=f"running statistics, momentum {num(momentum)}")

    return LabResult(
        "batchnorm", "Batch norm: training mode (batch statistics) vs evaluation (running)",
        f"gamma 1, beta 0, momentum {num(momentum)}, eps {eps:g}, running stats from mean 0 "
        f"var 1, {steps} steps on batch A", sections, worked, conclusion, values, draw,
        figsize=(10.0, 4.0))


def scaling_sentence(max_z: float, masks: int, p: float) -> str:
    how = (f"was within {max_z:.1f} standard errors of" if max_z <= 4
           else f"missed by up to {max_z:.1f} standard errors")
    return (f"the mean training output over {masks} masks {how} the evaluation output (the "
            f"input itself); without the 1/(1 - p) scaling it would be {1 - p:.2g} times the "
            "input, so evaluation would have to rescale")


def dropout_lab(x: object = None, p: float = 0.5, masks: int = 10000, seed: int = 0
                ) -> LabResult:
    """Inverted dropout on the vector ``x`` (default ``DROPOUT_X``): one mask written out, then
    the mean over ``masks`` masks against evaluation mode.

    Raises:
        UserError: p outside [0, 1) (p = 1 drops everything, leaving nothing to average), masks < 2.
    """
    p = check_drop_probability(p, "walkthrough dropout")
    if p == 1.0:
        raise UserError("walkthrough dropout: p = 1 drops every value; use p in [0, 1)")
    if masks < 2:
        raise UserError(f"walkthrough dropout: masks must be >= 2, got {masks}")
    v = np.asarray(DROPOUT_X if x is None else x, dtype=np.float64).ravel()
    rng = np.random.default_rng(seed)
    one, scale = dropout_forward(v, p, training=True, rng=rng)
    kept = scale > 0
    many = np.array([dropout_forward(v, p, training=True, rng=rng)[0] for _ in range(masks)])
    mean = many.mean(axis=0)
    se = many.std(axis=0, ddof=1) / np.sqrt(masks)
    z = np.abs(mean - v) / np.where(se > 0, se, 1.0)
    max_z = float(z.max())
    ev, _ = dropout_forward(v, p, training=False)
    i = int(np.argmax(kept)) if kept.any() else 0
    j = int(np.argmin(kept)) if not kept.all() else i
    worked = [
        f"mask (1 = kept): {[int(k) for k in kept]};  kept values are divided by 1 - p = "
        f"{num(1 - p)}",
        f"out[{i}] = x[{i}] * {int(kept[i])} / {num(1 - p)} = {num(v[i])} / {num(1 - p)} = "
        f"{num(one[i])};  out[{j}] = {num(v[j])} * {int(kept[j])} / {num(1 - p)} = {num(one[j])}",
        "E[out_i] = (1 - p) * x_i / (1 - p) + p * 0 = x_i = the evaluation output",
    ]
    conclusion = scaling_sentence(max_z, masks, p) + "."
    sections = [
        ("one training step", table(["", *[str(k) for k in range(v.size)]],
                                    [["x", *v], ["kept", *kept.astype(float)], ["out", *one]])),
        (f"mean over {masks} masks vs evaluation mode",
         table(["", *[str(k) for k in range(v.size)]],
               [["eval out", *ev], ["train mean", *mean], ["std error", *se], ["|z|", *z],
                ["no scaling", *(mean * (1 - p))]])),
    ]
    values = {"p": p, "x": v, "mask": kept.astype(int), "train_out": one, "eval_out": ev,
              "train_mean": mean, "train_stderr": se, "max_abs_z": max_z}

    def draw(fig):
        a1, a2 = fig.subplots(1, 2)
        k = np.arange(v.size)
        a1.bar(k - 0.2, v, 0.4, label="eval (identity)")
        a1.bar(k + 0.2, one, 0.4, label="train, one mask")
        a1.set(xlabel="unit", ylabel="output", title=f"inverted dropout, p = {num(p)}")
        a1.legend(fontsize=7)
        a2.errorbar(k, mean, yerr=2 * se, fmt="o", label="train mean +- 2 SE")
        a2.plot(k, v, "k_", ms=14, label="eval output")
        a2.plot(k, mean * (1 - p), "x", color="C3", label="without 1/(1-p)")
        a2.set(xlabel="unit", ylabel="output", title=f"mean over {masks} masks")
        a2.legend(fontsize=7)

    return LabResult(
        "dropout", "Dropout: training (drop and rescale) vs evaluation (identity)",
        f"p {num(p)}, {v.size} values, {masks} masks, seed {seed}", sections, worked,
        conclusion, values, draw, figsize=(10.0, 4.0))
