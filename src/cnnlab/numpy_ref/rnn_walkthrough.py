"""The RNN sentiment exercise: how a many-to-one RNN classifies an n-word sentence into 5 classes.

At every step t the cell takes the word vector ``x_t`` and the previous state ``h_{t-1}``:
``h_t = tanh(W_x x_t + W_h h_{t-1} + b)``. Many-to-one calls ``softmax(W_y h_n + b_y)`` once,
after the last word: one distribution over the 5 sentiment classes. Many-to-many calls it after
every word: n distributions. Small fixed vocabulary and weights (3-D word vectors, 3 hidden
units), computed with the engine's own ``rnn_forward``, heads and ``softmax``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab.errors import UserError
from cnnlab.numpy_ref.rnn import rnn_forward
from cnnlab.numpy_ref.sequence_heads import many_to_many_forward, many_to_one_forward, softmax
from cnnlab.numpy_ref.views import format_number

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CLASSES = ("very negative", "negative", "neutral", "positive", "very positive")
MODES = ("many-to-one", "many-to-many")
DEFAULT_SENTENCE = "the movie was not good"
# word -> 3-D vector (made up, one decimal so the arithmetic can be followed by hand)
VOCAB: dict[str, tuple[float, float, float]] = {
    "<unk>": (0.0, 0.0, 0.0), "the": (0.1, 0.0, 0.1), "movie": (0.2, 0.1, 0.0),
    "film": (0.2, 0.2, 0.0), "was": (0.0, 0.1, 0.1), "is": (0.0, 0.1, 0.2),
    "good": (0.9, 0.1, -0.2), "great": (1.0, 0.3, -0.1), "bad": (-0.9, 0.0, 0.3),
    "awful": (-1.0, -0.2, 0.4), "not": (0.0, -0.8, 0.6), "boring": (-0.6, 0.1, 0.2),
    "fun": (0.7, 0.2, 0.0), "very": (0.1, 0.5, 0.0),
}
W_X = np.array([[1.0, 0.2, -0.5], [-0.3, 0.8, 0.4], [0.5, -0.6, 1.0]])  # (H, E)
W_H = np.array([[0.5, -0.2, 0.1], [0.3, 0.4, -0.3], [-0.2, 0.1, 0.6]])  # (H, H)
B = np.array([0.0, 0.1, -0.1])  # (H,)
W_Y = np.array([[-2.0, 0.5, 1.0], [-1.0, 0.2, 0.8], [0.0, 1.0, 0.0],  # (K, H)
                [1.0, -0.2, -0.8], [2.0, -0.5, -1.0]])
B_Y = np.array([0.0, 0.2, 0.3, 0.2, 0.0])  # (K,)


@dataclass(frozen=True)
class RNNWalkthrough:
    """Every value of the exercise: ``x`` ``(n, E)``, ``h`` ``(n, H)``, ``logits``/``probs``
    ``(outputs, K)`` with one row (many-to-one) or n rows (many-to-many)."""

    tokens: tuple[str, ...]
    known: tuple[bool, ...]
    mode: str
    x: np.ndarray
    h: np.ndarray
    logits: np.ndarray
    probs: np.ndarray

    def to_json(self) -> dict[str, Any]:
        return {"tokens": list(self.tokens), "mode": self.mode, "inputs": self.x.tolist(),
                "hidden": self.h.tolist(), "logits": self.logits.tolist(),
                "outputs": self.probs.tolist(), "softmax_calls": len(self.probs),
                "classes": list(CLASSES)}

    def worked_cell(self) -> str:
        """``h_1[0] = tanh(W_x[0]·x_1 + W_h[0]·h_0 + b[0])`` with every number."""
        x1 = self.x[0]
        terms = [f"{format_number(w)}*{format_number(v)}" for w, v in zip(W_X[0], x1, strict=True)]
        hterms = [f"{format_number(w)}*0" for w in W_H[0]]
        a = float(W_X[0] @ x1 + B[0])
        return (f"h_1[0] = tanh({' + '.join(terms)} + {' + '.join(hterms)} + {format_number(B[0])})"
                f" = tanh({format_number(a)}) = {format_number(float(np.tanh(a)))}")

    def text(self) -> str:
        n = len(self.tokens)
        lines = [f"RNN sentiment walkthrough ({self.mode}): h_t = tanh(W_x x_t + W_h h_(t-1) + b),"
                 " h_0 = 0", f"sentence: {' '.join(self.tokens)}  ({n} words)", ""]
        for t in range(n):
            word = self.tokens[t] + ("" if self.known[t] else " (unknown -> <unk>)")
            lines.append(f"t={t + 1}  x_{t + 1} = {_vec(self.x[t])}  [{word}]   inputs: x_{t + 1} "
                         f"and h_{t}   ->  h_{t + 1} = {_vec(self.h[t])}")
        lines += ["", "one cell written out:", "  " + self.worked_cell(), ""]
        calls = len(self.probs)
        lines.append(f"softmax(y_hat) is called {calls} time{'s' if calls > 1 else ''}; each y_hat "
                     "is a distribution over the 5 sentiment classes:")
        for row, p in enumerate(self.probs):
            t = n if self.mode == "many-to-one" else row + 1
            best = int(np.argmax(p))
            probs = ", ".join(f"{c} {format_number(v)}" for c, v in zip(CLASSES, p, strict=True))
            lines.append(f"  y_hat_{t} = softmax(W_y h_{t} + b_y): {probs}  -> {CLASSES[best]}")
        return "\n".join(lines)

    def figure(self) -> Figure:
        """The unrolled network: one cell per word with x_t below, h_t inside, outputs above."""
        from matplotlib.figure import Figure

        n = len(self.tokens)
        fig = Figure(figsize=(2.3 * n + 1.5, 4.8), layout="constrained")
        ax = fig.subplots()
        ax.set_xlim(-0.8, n)
        ax.set_ylim(-0.6, 3.3)
        ax.axis("off")
        for t in range(n):
            ax.text(t, 0, f"{self.tokens[t]}\nx={_vec(self.x[t], 2)}", ha="center", va="center",
                    fontsize=8, bbox={"boxstyle": "round", "fc": "#e8f0fe"})
            ax.annotate("", (t, 0.85), (t, 0.3), arrowprops={"arrowstyle": "->"})
            ax.text(t, 1.2, f"h_{t + 1}\n{_vec(self.h[t], 2)}", ha="center", va="center",
                    fontsize=8, bbox={"boxstyle": "square", "fc": "#fde8d8"})
            if t:
                ax.annotate("", (t - 0.42, 1.2), (t - 0.58, 1.2), arrowprops={"arrowstyle": "->"})
            if self.mode == "many-to-many" or t == n - 1:
                p = self.probs[t if self.mode == "many-to-many" else 0]
                ax.annotate("", (t, 2.2), (t, 1.55), arrowprops={"arrowstyle": "->"})
                ax.text(t, 2.7, f"softmax\n{CLASSES[int(np.argmax(p))]}\np={_vec(p, 2)}",
                        ha="center", va="center", fontsize=7, bbox={"boxstyle": "round",
                                                                     "fc": "#e6f4ea"})
        ax.text(-0.7, 1.2, "h_0=0 ->", va="center", fontsize=8)
        ax.set_title(f"unrolled RNN, {self.mode}: softmax called {len(self.probs)} time(s)")
        return fig


def _vec(v: np.ndarray, decimals: int = 4) -> str:
    return "[" + ", ".join(format_number(float(a), decimals) for a in v) + "]"


def rnn_walkthrough(sentence: str = DEFAULT_SENTENCE, mode: str = "many-to-one") -> RNNWalkthrough:
    """Run the fixed RNN over ``sentence`` (lower-cased, split on white space).

    Raises:
        UserError: an unknown mode, an empty sentence, or a sentence of unknown words only.
    """
    if mode not in MODES:
        raise UserError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    tokens = tuple(sentence.lower().split())
    if not tokens:
        raise UserError("the sentence is empty; give at least one word")
    known = tuple(w in VOCAB and w != "<unk>" for w in tokens)
    if not any(known):
        raise UserError(f"every word of {sentence.strip()!r} is unknown; the vocabulary is: "
                        + ", ".join(w for w in VOCAB if w != "<unk>"))
    x = np.array([VOCAB[w] if k else VOCAB["<unk>"] for w, k in zip(tokens, known, strict=True)])
    h, _ = rnn_forward(x[None], W_X, W_H, B)  # (1, n, H)
    if mode == "many-to-one":
        logits, _ = many_to_one_forward(h, W_Y, B_Y)  # (1, K): after the last word only
    else:
        logits, _ = many_to_many_forward(h, W_Y, B_Y)  # (1, n, K): after every word
        logits = logits[0]
    return RNNWalkthrough(tokens, known, mode, x, h[0], logits, softmax(logits))
