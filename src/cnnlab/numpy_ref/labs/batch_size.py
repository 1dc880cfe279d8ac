"""SGD vs mini-batch vs full batch, measured on a least-squares problem with a known answer.

The mini-batch gradient is the mean of B per-sample gradients drawn without replacement from N,
so ``E||g_B - G||^2 = sigma^2 / B * (N - B) / (N - 1)`` with ``sigma^2`` the per-sample
gradients' variance (summed over the coordinates): about 1/B while B << N, exactly 0 for the full
batch. An epoch costs N per-sample gradients at every B, in ``ceil(N / B)`` updates.
"""

from __future__ import annotations

import time

import numpy as np

from cnnlab.errors import UserError
from cnnlab.numpy_ref.labs._result import LabResult, num, paren, table


def variance_sentence(within: bool, max_z: float, sizes: list[int], ratio: np.ndarray) -> str:
    how = "followed" if within else "departed from"
    return (f"the mini-batch gradient's variance {how} sigma^2/B * (N-B)/(N-1) "
            f"(largest gap {max_z:.1f} standard errors; measured/formula "
            f"{ratio.min():.3f} to {ratio.max():.3f} for B = {sizes[0]} ... {sizes[-1]})")


def noise_words(first: float, last: float) -> str:
    def show(v: float) -> str:
        return f"{v:.3g}" if v > 1e-12 else "0"

    how = "fell" if last < first else "rose" if last > first else "stayed"
    return f"{how} from {show(first)} to {show(last)}"


def per_sample_gradients(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Gradients of ``0.5 * (x_i . w - y_i)^2`` w.r.t. ``w``, one row per sample: ``(N, D)``."""
    return (x @ w - y)[:, None] * x


def batch_size_lab(
    n: int = 512,
    dim: int = 4,
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    curve_batch_sizes: tuple[int, ...] = (1, 32, 512),
    draws: int = 1000,
    epochs: int = 3,
    lr: float = 0.02,
    noise: float = 0.5,
    seed: int = 0,
    gradients: np.ndarray | None = None,
    source: str = "",
) -> LabResult:
    """Measure the variance of the mini-batch gradient at ``w = 0`` over ``draws`` random
    batches per size, and train SGD for ``epochs`` at each of ``curve_batch_sizes``.

    The data: ``x ~ N(0, 1)^(n x dim)``, ``y = x @ w_true + noise * N(0, 1)``, loss
    ``mean 0.5 (x . w - y)^2``. With ``gradients`` (``(N, D)`` per-sample gradients of a real
    model, described by ``source``) the variance is measured on those instead, ``n`` is N,
    batch sizes above N are left out and no training curves are run.

    Raises:
        UserError: a batch size outside [1, n], draws < 2, epochs < 1, lr <= 0.
    """
    if gradients is not None:
        gradients = np.asarray(gradients, dtype=np.float64)
        if gradients.ndim != 2 or len(gradients) < 2:
            raise UserError(f"walkthrough batch-size: gradients must be (N >= 2, D), got "
                            f"{gradients.shape}")
        n, dim = gradients.shape
        batch_sizes = tuple(b for b in batch_sizes if b <= n) or (1, n)
        curve_batch_sizes = ()
    if n < 2 or dim < 1:
        raise UserError(f"walkthrough batch-size: need n >= 2 and dim >= 1, got {n}, {dim}")
    for b in (*batch_sizes, *curve_batch_sizes):
        if isinstance(b, bool) or int(b) != b or not 1 <= b <= n:
            raise UserError(f"walkthrough batch-size: batch size {b} is not in [1, {n}]")
    if draws < 2 or epochs < 1 or not lr > 0:
        raise UserError("walkthrough batch-size: need draws >= 2, epochs >= 1 and lr > 0, got "
                        f"{draws}, {epochs}, {lr}")
    sizes = sorted({int(b) for b in batch_sizes})
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim))
    w_true = rng.uniform(-2, 2, dim)
    y = x @ w_true + noise * rng.standard_normal(n)
    w0 = np.zeros(dim)
    g = per_sample_gradients(x, y, w0) if gradients is None else gradients  # (N, D)
    full = g.mean(axis=0)
    sigma2 = float(((g - full) ** 2).sum(axis=1).mean())
    measured, stderr, formula = [], [], []
    for b in sizes:
        idx = np.array([rng.choice(n, b, replace=False) for _ in range(draws)])  # (draws, B)
        chunk = max(1, 4_000_000 // (b * dim))  # bound the (chunk, B, D) gather's memory
        dev = np.concatenate([((g[idx[k:k + chunk]].mean(axis=1) - full) ** 2).sum(axis=1)
                              for k in range(0, draws, chunk)])  # (draws,)
        measured.append(dev.mean())
        stderr.append(dev.std(ddof=1) / np.sqrt(draws))
        formula.append(sigma2 / b * (n - b) / (n - 1))
    measured, stderr, formula = map(np.array, (measured, stderr, formula))
    partial = formula > 0  # the full batch has no variance at all
    z = np.abs(measured - formula)[partial] / np.maximum(stderr[partial], 1e-300)
    max_z = float(z.max()) if z.size else 0.0
    ratio = measured[partial] / formula[partial]
    within = max_z <= 4

    curves, noise_rms, updates, seconds = {}, {}, {}, {}
    for b in sorted({int(b) for b in curve_batch_sizes}):
        w = w0.copy()
        rec, gaps = [], []
        start = time.perf_counter()
        for _ in range(epochs):
            for chunk in np.array_split(rng.permutation(n), -(-n // b)):
                r = x[chunk] @ w - y[chunk]
                batch_loss = 0.5 * float((r * r).mean())
                rf = x @ w - y
                full_loss = 0.5 * float((rf * rf).mean())
                gaps.append((batch_loss - full_loss) / full_loss)  # relative: levels differ
                rec.append(batch_loss)
                w = w - lr * (r[:, None] * x[chunk]).mean(axis=0)
        seconds[b] = (time.perf_counter() - start) / epochs
        curves[b] = np.array(rec)
        noise_rms[b] = float(np.sqrt(np.mean(np.square(gaps))))
        updates[b] = -(-n // b)

    if not curves:
        return _variance_only(sizes, measured, stderr, formula, sigma2, max_z, within, ratio,
                              partial, n, dim, draws, seed, source)
    i4 = sizes.index(4) if 4 in sizes else 0
    b4 = sizes[i4]
    g0 = g[0]
    terms = " + ".join(f"{paren(v)}*{paren(t)}" for v, t in zip(x[0], w0, strict=True))
    worked = [
        f"per-sample gradient of sample 0 at w = 0: (x_0 . w - y_0) * x_0 = ({terms} - "
        f"{num(y[0])}) * x_0 = {num(-y[0])} * [{', '.join(num(v) for v in x[0])}] = "
        f"[{', '.join(num(v) for v in g0)}]",
        f"sigma^2 = mean_i ||g_i - G||^2 = {num(sigma2)};  B = {b4}: sigma^2 / B * (N - B) / (N - 1)"
        f" = {num(sigma2)} / {b4} * {n - b4} / {n - 1} = {num(formula[i4])}  (measured "
        f"{num(measured[i4])} +- {num(stderr[i4])})",
    ]
    bmin, bmax = min(curves), max(curves)
    part_sizes = [b for b, f in zip(sizes, formula, strict=True) if f > 0]
    conclusion = (
        f"{variance_sentence(within, max_z, part_sizes, ratio)}; the loss curve's noise "
        f"(RMS of (batch loss - full loss) / full loss) {noise_words(noise_rms[bmin], noise_rms[bmax])}"
        f" from B = {bmin} to B = {bmax}; an epoch costs {n} per-sample gradients at every "
        f"B, in {updates[bmin]} update(s) at B = {bmin} and {updates[bmax]} at B = {bmax}."
    )
    sections = [
        (f"variance of the mini-batch gradient at w = 0 ({draws} batches per size, N = {n})",
         table(["B", "measured", "std error", "formula", "measured*B", "ratio"],
               [[str(b), m, s, f, m * b, (m / f if f > 0 else float("nan"))]
                for b, m, s, f in zip(sizes, measured, stderr, formula, strict=True)])),
        (f"SGD for {epochs} epochs at lr {num(lr)}; noise = RMS of (batch loss - full loss) / "
         "full loss over the updates",
         table(["B", "updates/epoch", "grads/epoch", "noise RMS", "final loss", "s/epoch"],
               [[str(b), str(updates[b]), str(n), noise_rms[b], curves[b][-1], seconds[b]]
                for b in curves])
         + "\n(s/epoch: NumPy wall time on this machine, for scale only)"),
    ]
    values = {
        "n": n, "sigma2": sigma2, "batch_sizes": sizes, "variance": measured,
        "variance_stderr": stderr, "variance_formula": formula, "max_abs_z": max_z,
        "curves": {str(b): {"updates_per_epoch": updates[b], "grads_per_epoch": n,
                            "noise_rms": noise_rms[b], "final_loss": float(curves[b][-1]),
                            "seconds_per_epoch": seconds[b], "loss": curves[b]}
                   for b in curves},
    }

    def draw(fig):
        a1, a2 = fig.subplots(1, 2)
        part = np.array(sizes)[partial]
        a1.errorbar(part, measured[partial], yerr=2 * stderr[partial], fmt="o",
                    label="measured +- 2 SE")
        a1.plot(part, formula[partial], "k-", lw=1, label="sigma^2/B (N-B)/(N-1)")
        a1.plot(part, sigma2 / part, "--", color="0.5", lw=1, label="sigma^2/B")
        a1.set(xscale="log", yscale="log", xlabel="batch size B",
               ylabel="E||g_B - G||^2", title="gradient variance ~ 1/B")
        a1.legend(fontsize=7)
        for b, c in curves.items():
            a2.plot(np.arange(len(c)) / updates[b], c, lw=0.8, label=f"B = {b}")
        a2.set(yscale="log", xlabel="epoch", ylabel="mini-batch loss",
               title="loss curves: noise shrinks with B")
        a2.legend(fontsize=7)

    return LabResult(
        "batch-size", "SGD vs mini-batch vs full batch: gradient variance, loss noise, cost",
        f"N {n}, D {dim}, least squares at w = 0, label noise {num(noise)}, {draws} draws, "
        f"{epochs} epochs at lr {num(lr)}, seed {seed}",
        sections, worked, conclusion, values, draw, figsize=(11.0, 4.2))


def _variance_only(sizes, measured, stderr, formula, sigma2, max_z, within, ratio, partial, n,
                   dim, draws, seed, source) -> LabResult:
    """The result for given per-sample gradients: the variance measurement alone."""
    part_sizes = [b for b, f in zip(sizes, formula, strict=True) if f > 0]
    k = 1 if len(sizes) > 1 else 0
    worked = [
        f"sigma^2 = mean_i ||g_i - G||^2 = {num(sigma2)} (over {dim} gradient coordinates);  "
        f"B = {sizes[k]}: sigma^2 / B * (N - B) / (N - 1) = {num(sigma2)} / {sizes[k]} * "
        f"{n - sizes[k]} / {n - 1} = {num(formula[k])}  (measured {num(measured[k])} +- "
        f"{num(stderr[k])})",
    ]
    conclusion = (f"on {source or 'the given gradients'}, "
                  f"{variance_sentence(within, max_z, part_sizes, ratio)}; an epoch costs {n} "
                  f"per-sample gradients at every B, in ceil({n}/B) updates.")
    sections = [
        (f"variance of the mini-batch gradient ({draws} batches per size, N = {n})",
         table(["B", "measured", "std error", "formula", "measured*B", "updates/epoch"],
               [[str(b), m, s, f, m * b, str(-(-n // b))]
                for b, m, s, f in zip(sizes, measured, stderr, formula, strict=True)])),
    ]
    values = {"n": n, "dim": dim, "sigma2": sigma2, "batch_sizes": sizes, "variance": measured,
              "variance_stderr": stderr, "variance_formula": formula, "max_abs_z": max_z,
              "source": source}

    def draw(fig):
        ax = fig.subplots(1, 1)
        part = np.array(sizes)[partial]
        ax.errorbar(part, measured[partial], yerr=2 * stderr[partial], fmt="o",
                    label="measured +- 2 SE")
        ax.plot(part, formula[partial], "k-", lw=1, label="sigma^2/B (N-B)/(N-1)")
        ax.set(xscale="log", yscale="log", xlabel="batch size B", ylabel="E||g_B - G||^2",
               title=f"gradient variance ~ 1/B: {source}")
        ax.legend(fontsize=7)

    return LabResult(
        "batch-size", "Mini-batch gradient variance against the batch size, on a real model",
        f"{source}; N {n}, {dim} parameters, {draws} draws, seed {seed}", sections, worked,
        conclusion, values, draw, figsize=(6.5, 4.5))
