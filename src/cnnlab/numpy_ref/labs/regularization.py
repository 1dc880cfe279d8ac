"""L1 vs L2, as a loss and as a penalty, measured.

Loss: a line fitted by least squares (L2) follows outliers, the least absolute deviations fit
(L1) stays with the bulk. The L1 fit of a line passes through two of the data points (a vertex of
the linear programme), so it is found exactly by trying every pair.

Penalty: ``lam * ||w||_1`` solved by proximal gradient (soft thresholding) sets weights to exactly
0; ``lam / 2 * ||w||^2`` (ridge, solved in closed form) only shrinks them; plain subgradient SGD on
the L1 penalty jumps back and forth across 0 and hardly ever lands on it.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from cnnlab.errors import UserError
from cnnlab.numpy_ref.labs._result import LabResult, num, table
from cnnlab.numpy_ref.regularization import l1_penalty, soft_threshold

# The default data: y = 2 x + 1 with small fixed noise, then two points far above the line.
LINE_X = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 7.5, 8.5]
LINE_Y = [1.2, 2.9, 5.1, 6.8, 9.2, 10.9, 13.1, 15.0, 16.8, 19.1, 40.0, 45.0]
LINE_OUTLIERS = (10, 11)  # indices of the outliers above
LINE_TRUE = (2.0, 1.0)  # slope, intercept


def fit_l2_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least squares ``(slope, intercept)``."""
    a = np.c_[x, np.ones_like(x)]
    slope, intercept = np.linalg.lstsq(a, y, rcond=None)[0]
    return float(slope), float(intercept)


def fit_l1_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least absolute deviations ``(slope, intercept)``, exactly: the best line through two
    data points (ties: the first pair found)."""
    best, best_cost = None, np.inf
    for i, j in combinations(range(len(x)), 2):
        if x[i] == x[j]:
            continue
        slope = (y[j] - y[i]) / (x[j] - x[i])
        intercept = y[i] - slope * x[i]
        cost = np.abs(y - slope * x - intercept).sum()
        if cost < best_cost - 1e-12:
            best, best_cost = (float(slope), float(intercept)), cost
    if best is None:
        raise UserError("walkthrough regularization: the points need at least two distinct x")
    return best


def follows_sentence(dist_l1: float, dist_l2: float) -> str:
    """Which fit the outliers pulled, from the fits' mean distance to the outliers."""
    if dist_l2 < dist_l1:
        return (f"the L2 fit followed the outliers (mean distance to them {dist_l2:.2f} vs "
                f"{dist_l1:.2f} for L1)")
    if dist_l1 < dist_l2:
        return (f"the L1 fit followed the outliers (mean distance to them {dist_l1:.2f} vs "
                f"{dist_l2:.2f} for L2)")
    return f"both fits are equally far from the outliers ({dist_l1:.2f})"


def zeros_sentence(d: int, l1_zero: int, l2_zero: int, l2_small6: int, l2_small2: int,
                   sub_zero: int, sub_small2: int) -> str:
    def count(k: int) -> str:
        return "none" if k == 0 else str(k)

    return (f"L1 regularisation set {l1_zero} of {d} weights to exactly 0; L2 set "
            f"{count(l2_zero)} to 0, {count(l2_small6)} below 1e-6 and {count(l2_small2)} below "
            f"1e-2; subgradient SGD on the same L1 penalty set {count(sub_zero)} to exactly 0 "
            f"({count(sub_small2)} below 1e-2)")


def regularization_lab(
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
    n: int = 60,
    dim: int = 100,
    nonzero: int = 10,
    lam: float = 0.1,
    iterations: int = 500,
    seed: int = 0,
) -> LabResult:
    """Fit a line with L1 and L2 losses to ``(x, y)`` (default ``LINE_X``/``LINE_Y`` with two
    outliers), and fit a ``dim``-weight linear model with ``nonzero`` true weights on ``n``
    samples with an L1 penalty (proximal gradient and subgradient SGD, ``iterations`` steps) and an
    L2 penalty (closed form), both of strength ``lam``.

    Raises:
        UserError: lam <= 0, iterations < 1, nonzero outside [0, dim], mismatched x and y.
    """
    if not lam > 0 or iterations < 1 or not 0 <= nonzero <= dim or n < 2:
        raise UserError("walkthrough regularization: need lam > 0, iterations >= 1, "
                        f"0 <= nonzero <= dim and n >= 2; got {lam}, {iterations}, {nonzero}, {n}")
    default_line = x is None and y is None
    lx = np.asarray(LINE_X if x is None else x, dtype=np.float64)
    ly = np.asarray(LINE_Y if y is None else y, dtype=np.float64)
    if lx.shape != ly.shape or lx.ndim != 1 or lx.size < 2:
        raise UserError(f"walkthrough regularization: x {lx.shape} and y {ly.shape} must be "
                        "1-D with the same length >= 2")
    l2_fit, l1_fit = fit_l2_line(lx, ly), fit_l1_line(lx, ly)
    if default_line:
        out_idx = list(LINE_OUTLIERS)
    else:  # the points farthest from the L1 fit count as the outliers (the largest 1/6)
        res = np.abs(ly - l1_fit[0] * lx - l1_fit[1])
        out_idx = np.argsort(-res)[: max(1, lx.size // 6)].tolist()

    def dist(fit: tuple[float, float]) -> float:
        return float(np.abs(ly[out_idx] - fit[0] * lx[out_idx] - fit[1]).mean())

    d_l1, d_l2 = dist(l1_fit), dist(l2_fit)

    # the sparse regression: mean 0.5 ||X w - y||^2 / n + penalty
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, dim))
    w_true = np.zeros(dim)
    w_true[rng.choice(dim, nonzero, replace=False)] = rng.uniform(1, 3, nonzero) * rng.choice(
        [-1, 1], nonzero)
    b = a @ w_true + 0.1 * rng.standard_normal(n)
    gram, rhs = a.T @ a / n, a.T @ b / n
    step = 1.0 / float(np.linalg.eigvalsh(gram).max())  # 1/L: the proximal step converges
    w_l1 = np.zeros(dim)
    w_sub = np.zeros(dim)
    first = None
    for k in range(iterations):
        grad = gram @ w_l1 - rhs
        before = w_l1 - step * grad
        w_l1 = soft_threshold(before, step * lam)
        if first is None and k == 1:
            first = (before, w_l1)
        _, sub = l1_penalty(w_sub, lam)
        w_sub = w_sub - step * (gram @ w_sub - rhs + sub)
    w_l2 = np.linalg.solve(gram + lam * np.eye(dim), rhs)
    counts = {
        "l1_zero": int((w_l1 == 0).sum()), "l2_zero": int((w_l2 == 0).sum()),
        "l2_below_1e-6": int((np.abs(w_l2) < 1e-6).sum()),
        "l2_below_1e-2": int((np.abs(w_l2) < 1e-2).sum()),
        "subgradient_zero": int((w_sub == 0).sum()),
        "subgradient_below_1e-2": int((np.abs(w_sub) < 1e-2).sum()),
    }
    before, after = first
    j = int(np.argmax((after == 0) & (before != 0))) if ((after == 0) & (before != 0)).any() else 0
    thr = step * lam
    on_line = np.flatnonzero(np.abs(ly - l1_fit[0] * lx - l1_fit[1]) < 1e-9)
    i1, j1 = int(on_line[0]), int(on_line[-1])  # the fit is a line through two data points
    worked = [
        f"the L1 line passes through points {i1} and {j1}: slope = ({num(ly[j1])} - "
        f"{num(ly[i1])}) / ({num(lx[j1])} - {num(lx[i1])}) = {num(l1_fit[0])}, intercept = "
        f"{num(ly[i1])} - {num(l1_fit[0])} * {num(lx[i1])} = {num(l1_fit[1])}",
        f"proximal L1 step 2, weight {j}: w - step * grad = {num(before[j])};  soft threshold "
        f"step * lam = {num(step)} * {num(lam)} = {num(thr)}:  sign({num(before[j])}) * "
        f"max(|{num(before[j])}| - {num(thr)}, 0) = {num(after[j])}",
        f"a subgradient step instead moves w by step * lam * sign(w) = {num(thr)} whatever |w| "
        f"is, so a weight near 0 jumps across it (to about {num(before[j] - thr * np.sign(before[j]))})"
        " and rarely lands on exactly 0",
    ]
    conclusion = (
        f"{follows_sentence(d_l1, d_l2)}; "
        + zeros_sentence(dim, counts["l1_zero"], counts["l2_zero"], counts["l2_below_1e-6"],
                         counts["l2_below_1e-2"], counts["subgradient_zero"],
                         counts["subgradient_below_1e-2"]) + "."
    )
    sections = [
        (f"a line fitted to {lx.size} points ({len(out_idx)} outliers: "
         f"{', '.join(str(i) for i in out_idx)})",
         table(["loss", "slope", "intercept", "mean |r| on outliers"],
               [["L2 (least squares)", *l2_fit, d_l2], ["L1 (least |r|)", *l1_fit, d_l1]])
         + (f"\ntrue line: slope {num(LINE_TRUE[0])}, intercept {num(LINE_TRUE[1])}"
            if default_line else "")),
        (f"{dim} weights ({nonzero} truly non-zero), {n} samples, lam {num(lam)}, "
         f"{iterations} steps of size 1/L = {num(step)}",
         table(["penalty / solver", "exactly 0", "|w| < 1e-6", "|w| < 1e-2", "largest |w|"],
               [["L1, proximal (ISTA)", str(counts["l1_zero"]),
                 str(int((np.abs(w_l1) < 1e-6).sum())), str(int((np.abs(w_l1) < 1e-2).sum())),
                 float(np.abs(w_l1).max())],
                ["L2, closed form", str(counts["l2_zero"]), str(counts["l2_below_1e-6"]),
                 str(counts["l2_below_1e-2"]), float(np.abs(w_l2).max())],
                ["L1, subgradient SGD", str(counts["subgradient_zero"]),
                 str(int((np.abs(w_sub) < 1e-6).sum())), str(counts["subgradient_below_1e-2"]),
                 float(np.abs(w_sub).max())]])),
        ("why L1 gives exact zeros",
         "the L1 ball |w1| + |w2| <= t has corners on the axes: a loss's contour first touches\n"
         "it at a corner, where a coordinate is 0; the L2 ball is round and is touched at a\n"
         "point with every coordinate non-zero. In the update: soft thresholding maps the whole\n"
         "interval |w| <= step * lam to 0; L2's step w / (1 + step * lam) only shrinks."),
    ]
    values = {
        "line": {"x": lx, "y": ly, "outliers": out_idx,
                 "l2": {"slope": l2_fit[0], "intercept": l2_fit[1], "outlier_distance": d_l2},
                 "l1": {"slope": l1_fit[0], "intercept": l1_fit[1], "outlier_distance": d_l1}},
        "penalty": {"dim": dim, "lam": lam, "step": step, **counts,
                    "w_l1": w_l1, "w_l2": w_l2, "w_subgradient": w_sub},
    }

    def draw(fig):
        a1, a2, a3 = fig.subplots(1, 3)
        a1.plot(lx, ly, "o", color="0.3", label="data")
        a1.plot(lx[out_idx], ly[out_idx], "o", color="C3", label="outliers")
        xs = np.linspace(lx.min(), lx.max(), 2)
        a1.plot(xs, l2_fit[0] * xs + l2_fit[1], "C0-", label="L2 fit")
        a1.plot(xs, l1_fit[0] * xs + l1_fit[1], "C2-", label="L1 fit")
        a1.set(xlabel="x", ylabel="y", title="L1 vs L2 loss with outliers")
        a1.legend(fontsize=7)
        floor = 1e-12
        for w, label in ((w_l1, "L1 proximal"), (w_l2, "L2"), (w_sub, "L1 subgradient")):
            a2.plot(np.sort(np.maximum(np.abs(w), floor)), ".-", ms=3, label=label)
        a2.axhline(1e-2, color="0.6", ls=":", lw=1)
        a2.set(yscale="log", xlabel="weights, sorted", ylabel="|w| (exact 0 drawn at 1e-12)",
               title="L1 vs L2 penalty: exact zeros")
        a2.legend(fontsize=7)
        t = np.linspace(0, 2 * np.pi, 400)
        a3.plot(np.cos(t), np.sin(t), "C0", label="L2 ball")
        a3.plot([1, 0, -1, 0, 1], [0, 1, 0, -1, 0], "C2", label="L1 ball")
        cx, cy = 1.6, 0.55  # a loss's minimum; its contours are ellipses around it
        for r in (0.4, 0.75, 1.1):
            a3.plot(cx + r * np.cos(t), cy + 0.6 * r * np.sin(t), color="0.6", lw=0.7)
        a3.plot([1], [0], "o", color="C2")
        a3.set(aspect="equal", xlim=(-1.3, 2.8), ylim=(-1.3, 1.5), xlabel="w1", ylabel="w2",
               title="the L1 ball's corners lie on the axes")
        a3.legend(fontsize=7)

    return LabResult(
        "regularization", "L1 vs L2: as a loss (outliers) and as a penalty (exact zeros)",
        f"{lx.size} points for the line; {dim} weights, {nonzero} non-zero, {n} samples, "
        f"lam {num(lam)}, {iterations} iterations, seed {seed}",
        sections, worked, conclusion, values, draw)
