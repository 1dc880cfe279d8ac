"""A network of linear layers without non-linearities is one linear map.

``W3 (W2 (W1 x + b1) + b2) + b3 = (W3 W2 W1) x + (W3 (W2 b1 + b2) + b3)``: any depth collapses
to a single affine layer whose rank is at most the narrowest width. With a ReLU between the
layers no single affine map fits: the least-squares affine fit leaves a residual.
"""

from __future__ import annotations

import numpy as np

from cnnlab.errors import UserError
from cnnlab.numpy_ref.labs._result import LabResult, num, paren, table
from cnnlab.numpy_ref.layers import linear_forward, relu_forward


def collapse_sentence(depth: int, d_in: int, d_out: int, diff: float, relu_rms: float,
                      scale: float, tol: float = 1e-9) -> str:
    lin = (f"the {depth}-layer network without non-linearities equals one {d_in}->{d_out} "
           f"linear map (largest difference {diff:.1e})" if diff <= tol * scale else
           f"the {depth}-layer linear network differs from the product map by {diff:.1e}")
    if relu_rms > tol * scale:
        rel = (f"with ReLU between the layers the best single affine map leaves an RMS residual "
               f"of {relu_rms:.3g} ({relu_rms / scale:.1%} of the outputs' RMS), so it does not "
               "collapse")
    else:
        rel = "with ReLU the best affine map fits too (the ReLUs never switched off here)"
    return f"{lin}; {rel}"


def linear_collapse_lab(widths: tuple[int, ...] = (4, 6, 2, 5, 3), samples: int = 200,
                        seed: int = 0) -> LabResult:
    """Build ``len(widths) - 1`` random linear layers ``widths[k] -> widths[k + 1]`` (biases
    included), compare the stack with the product map on ``samples`` random inputs, and fit one
    affine map by least squares to the same stack with ReLU between the layers.

    Raises:
        UserError: fewer than 2 layers, a width < 1, samples too few for the fit.
    """
    widths = tuple(int(w) for w in widths)
    if len(widths) < 3 or min(widths) < 1:
        raise UserError(f"walkthrough linear-collapse: need >= 3 widths >= 1 (2 layers), got "
                        f"{widths}")
    if samples < widths[0] + 2:
        raise UserError(f"walkthrough linear-collapse: samples must be >= {widths[0] + 2}")
    rng = np.random.default_rng(seed)
    layers = [(rng.standard_normal((o, i)) / np.sqrt(i), 0.5 * rng.standard_normal(o))
              for i, o in zip(widths[:-1], widths[1:], strict=True)]
    x = rng.standard_normal((samples, widths[0]))
    h, hr = x, x
    for k, (w, b) in enumerate(layers):
        h, _ = linear_forward(h, w, b)
        hr, _ = linear_forward(hr, w, b)
        if k < len(layers) - 1:
            hr, _ = relu_forward(hr)
    w_all, b_all = np.eye(widths[0]), np.zeros(widths[0])
    for w, b in layers:
        w_all, b_all = w @ w_all, w @ b_all + b  # (out, in), (out,)
    one, _ = linear_forward(x, w_all, b_all)
    diff = float(np.abs(one - h).max())
    scale = float(np.sqrt(np.mean(h * h)))
    design = np.c_[x, np.ones(samples)]
    coef = np.linalg.lstsq(design, hr, rcond=None)[0]
    relu_rms = float(np.sqrt(np.mean((design @ coef - hr) ** 2)))
    rank = int(np.linalg.matrix_rank(w_all))
    w1, _ = layers[0]
    w2, _ = layers[1]
    terms = " + ".join(f"{paren(w2[0, k])}*{paren(w1[k, 0])}" for k in range(w1.shape[0]))
    w21 = w2 @ w1
    worked = [
        f"(W2 W1)[0,0] = sum_k W2[0,k] W1[k,0] = {terms} = {num(w21[0, 0])}",
        f"the bias folds in layer by layer (b <- W_k b + b_k, so b = W2 b1 + b2 after two); "
        f"the product of all "
        f"{len(layers)} layers is {widths[-1]}x{widths[0]} with rank {rank} <= min width "
        f"{min(widths)}",
    ]
    conclusion = collapse_sentence(len(layers), widths[0], widths[-1], diff, relu_rms,
                                   max(scale, 1e-300)) + "."
    sections = [
        (f"{len(layers)} linear layers, widths {' -> '.join(map(str, widths))}",
         "W = " + " @ ".join(f"W{k}" for k in range(len(layers), 0, -1))
         + f" ({widths[-1]}x{widths[0]}):\n"
         + table([""] + [f"in {k}" for k in range(widths[0])],
                 [[f"out {r}", *w_all[r]] for r in range(widths[-1])])
         + f"\nb = [{', '.join(num(v) for v in b_all)}]\nrank(W) = {rank}"),
        (f"on {samples} random inputs",
         table(["", "value"], [["max |stack - (W x + b)|", diff], ["RMS of the outputs", scale],
                               ["ReLU stack: RMS residual of the best affine fit", relu_rms]])),
    ]
    values = {"widths": list(widths), "W": w_all, "b": b_all, "rank": rank,
              "max_difference": diff, "output_rms": scale, "relu_affine_rms_residual": relu_rms}

    def draw(fig):
        a1, a2 = fig.subplots(1, 2)
        a1.plot(one.ravel(), h.ravel(), ".", ms=3)
        a1.set(xlabel="W x + b (one layer)", ylabel="linear stack output",
               title=f"linear stack = one map (max diff {diff:.0e})")
        a2.plot((design @ coef).ravel(), hr.ravel(), ".", ms=3, color="C3")
        lim = [float(hr.min()), float(hr.max())]
        a1.plot(lim, lim, "k-", lw=0.7)
        a2.plot(lim, lim, "k-", lw=0.7)
        a2.set(xlabel="best affine fit", ylabel="ReLU stack output",
               title=f"with ReLU: RMS residual {relu_rms:.3g}")

    return LabResult(
        "linear-collapse", "A linear network without non-linearities collapses to one layer",
        f"widths {' -> '.join(map(str, widths))}, {samples} inputs, seed {seed}", sections,
        worked, conclusion, values, draw, figsize=(10.0, 4.2))
