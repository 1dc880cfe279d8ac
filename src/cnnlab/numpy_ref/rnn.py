"""Recurrent layers, as ``torch.nn.RNN`` (tanh) and ``torch.nn.LSTM`` compute them, with
backward through time.

Elman RNN, one step (``x_t`` the word vector, ``h_{t-1}`` the previous hidden state)::

    h_t = tanh(W_x x_t + W_h h_{t-1} + b)

LSTM, one step (gates in PyTorch's order i, f, g, o along the ``4H`` rows of the weights)::

    [i, f, g, o] = W_x x_t + W_h h_{t-1} + b
    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
    h_t = sigmoid(o) * tanh(c_t)

Weights use PyTorch's layout: ``W_x`` is ``weight_ih`` ``(H, D)`` (LSTM ``(4H, D)``), ``W_h`` is
``weight_hh``; ``b`` is PyTorch's two biases summed, ``bias_ih + bias_hh`` (they always enter
together, and each receives the same gradient ``db``).

Sequences are ``(N, T, D)`` (batch first). With ``lengths``, sequence ``n`` has ``lengths[n]``
real steps; after them its state is carried unchanged, so ``h[:, -1]`` is every sequence's last
real state (PyTorch's ``h_n`` of a packed sequence) and padding gets no gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnlab.errors import UserError
from cnnlab.numpy_ref._args import as_float_array


def _sigmoid(a: np.ndarray) -> np.ndarray:
    # 0.5 * (1 + tanh(a / 2)) equals 1 / (1 + exp(-a)) and never overflows
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def _check_weights(op: str, d: int, h: int, gates: int, wx: np.ndarray, wh: np.ndarray,
                   b: np.ndarray) -> None:
    rows = gates * h
    if wx.shape != (rows, d):
        raise UserError(f"{op}: W_x must have shape ({rows}, {d}) = ({'4H' if gates == 4 else 'H'},"
                        f" D), got {wx.shape}")
    if wh.shape != (rows, h):
        raise UserError(f"{op}: W_h must have shape ({rows}, {h}), got {wh.shape}")
    if b.shape != (rows,):
        raise UserError(f"{op}: b must have shape ({rows},) (bias_ih + bias_hh), got {b.shape}")


def step_mask(lengths: Any, n: int, t: int, op: str) -> np.ndarray:
    """``(N, T)`` float mask, 1 where step ``t < lengths[n]``; all ones for ``lengths=None``.

    Raises:
        UserError: lengths not ``(N,)`` integers in ``[1, T]``.
    """
    if lengths is None:
        return np.ones((n, t))
    lengths = np.asarray(lengths)
    if lengths.dtype.kind not in "iu" or lengths.shape != (n,):
        raise UserError(f"{op}: lengths must be ({n},) integers, one per sequence; got "
                        f"{lengths.dtype} {lengths.shape}")
    if lengths.min() < 1 or lengths.max() > t:
        raise UserError(f"{op}: lengths must be in [1, {t}] (T), got {lengths.min()}.."
                        f"{lengths.max()}")
    return (np.arange(t)[None, :] < lengths[:, None]).astype(np.float64)


def _inputs(op: str, x: Any, h0: Any, hidden: int) -> tuple[np.ndarray, np.ndarray]:
    x = as_float_array(x, "input x", op, ndim=3, layout="(N, T, D)")
    if h0 is None:
        return x, np.zeros((x.shape[0], hidden))
    h0 = as_float_array(h0, "initial state h0", op, ndim=2, layout="(N, H)")
    if h0.shape != (x.shape[0], hidden):
        raise UserError(f"{op}: h0 must have shape ({x.shape[0]}, {hidden}), got {h0.shape}")
    return x, h0


# ------------------------------------------------------------------------------------ Elman RNN

def rnn_step_forward(x: Any, h_prev: Any, wx: Any, wh: Any, b: Any) -> tuple[np.ndarray, tuple]:
    """One step ``h = tanh(x @ W_x.T + h_prev @ W_h.T + b)``.

    Args:
        x: ``(N, D)``; h_prev: ``(N, H)``; wx: ``(H, D)``; wh: ``(H, H)``; b: ``(H,)``.

    Returns:
        ``(h, cache)``, ``h`` of shape ``(N, H)``.
    """
    x = as_float_array(x, "input x", "rnn step", ndim=2, layout="(N, D)")
    h_prev = as_float_array(h_prev, "h_prev", "rnn step", ndim=2, layout="(N, H)")
    wx, wh, b = (as_float_array(a, n, "rnn step") for a, n in ((wx, "W_x"), (wh, "W_h"), (b, "b")))
    _check_weights("rnn step", x.shape[1], h_prev.shape[1], 1, wx, wh, b)
    h = np.tanh(x @ wx.T + h_prev @ wh.T + b)
    return h, (x, h_prev, wx, wh, h)


def rnn_step_backward(dh: Any, cache: tuple) -> tuple[np.ndarray, ...]:
    """Gradient of ``rnn_step_forward``: ``da = dh * (1 - h**2)`` (tanh' = 1 - tanh**2).

    Returns:
        ``(dx (N, D), dh_prev (N, H), dwx (H, D), dwh (H, H), db (H,))``.
    """
    x, h_prev, wx, wh, h = cache
    da = as_float_array(dh, "dh", "rnn step backward") * (1.0 - h * h)  # (N, H)
    return da @ wx, da @ wh, da.T @ x, da.T @ h_prev, da.sum(axis=0)


@dataclass(frozen=True)
class RNNCache:
    x: np.ndarray  # (N, T, D)
    h0: np.ndarray  # (N, H)
    h: np.ndarray  # (N, T, H): the carried states
    h_new: np.ndarray  # (N, T, H): tanh(a_t) before masking
    mask: np.ndarray  # (N, T)
    wx: np.ndarray
    wh: np.ndarray


def rnn_forward(x: Any, wx: Any, wh: Any, b: Any, h0: Any = None,
                lengths: Any = None) -> tuple[np.ndarray, RNNCache]:
    """An Elman (tanh) RNN over whole sequences, as ``torch.nn.RNN(batch_first=True)``.

    Args:
        x: ``(N, T, D)`` inputs; wx: ``(H, D)``; wh: ``(H, H)``; b: ``(H,)``.
        h0: ``(N, H)`` initial state (default zeros).
        lengths: ``(N,)`` real steps per sequence, or None (all ``T``).

    Returns:
        ``(h, cache)``: ``h`` ``(N, T, H)``, the state after every step (carried past a
        sequence's end, so ``h[:, -1]`` is each sequence's last real state).
    """
    wx, wh, b = (as_float_array(a, n, "rnn") for a, n in ((wx, "W_x"), (wh, "W_h"), (b, "b")))
    x, h_prev = _inputs("rnn", x, h0, wh.shape[0] if wh.ndim == 2 else 0)
    n, t, d = x.shape
    _check_weights("rnn", d, h_prev.shape[1], 1, wx, wh, b)
    mask = step_mask(lengths, n, t, "rnn")
    h = np.empty((n, t, h_prev.shape[1]))
    h_new = np.empty_like(h)
    h0 = h_prev
    xw = x @ wx.T + b  # (N, T, H): the input part of every step at once
    for s in range(t):
        h_new[:, s] = np.tanh(xw[:, s] + h_prev @ wh.T)
        m = mask[:, s, None]
        h_prev = h[:, s] = m * h_new[:, s] + (1.0 - m) * h_prev
    return h, RNNCache(x, h0, h, h_new, mask, wx, wh)


def rnn_backward(dh: Any, cache: RNNCache) -> tuple[np.ndarray, ...]:
    """Backward through time of ``rnn_forward``.

    ``dh[:, t]`` is the loss's gradient with respect to the output ``h[:, t]``; the gradient
    flowing back from step t + 1 is added to it before step t is differentiated.

    Returns:
        ``(dx (N, T, D), dh0 (N, H), dwx (H, D), dwh (H, H), db (H,))``.
    """
    c = cache
    dh = as_float_array(dh, "dh", "rnn backward", ndim=3, layout="(N, T, H)")
    if dh.shape != c.h.shape:
        raise UserError(f"rnn backward: dh must have shape {c.h.shape}, got {dh.shape}")
    n, t, _ = c.x.shape
    da_all = np.zeros_like(c.h)
    carry = np.zeros_like(c.h0)  # dL/dh_t from the steps after t
    for s in range(t - 1, -1, -1):
        total = dh[:, s] + carry
        m = c.mask[:, s, None]
        da = m * total * (1.0 - c.h_new[:, s] ** 2)  # (N, H)
        da_all[:, s] = da
        carry = da @ c.wh + (1.0 - m) * total  # a padded step passes its gradient through
    h_prev = np.concatenate([c.h0[:, None], c.h[:, :-1]], axis=1)  # (N, T, H)
    dx = da_all @ c.wx
    dwx = np.einsum("nth,ntd->hd", da_all, c.x)
    dwh = np.einsum("nth,ntk->hk", da_all, h_prev)
    return dx, carry, dwx, dwh, da_all.sum(axis=(0, 1))


# ------------------------------------------------------------------------------------ LSTM

def lstm_step_forward(x: Any, h_prev: Any, c_prev: Any, wx: Any, wh: Any,
                      b: Any) -> tuple[np.ndarray, np.ndarray, tuple]:
    """One LSTM step (gates i, f, g, o, as PyTorch).

    Args:
        x: ``(N, D)``; h_prev, c_prev: ``(N, H)``; wx: ``(4H, D)``; wh: ``(4H, H)``; b: ``(4H,)``.

    Returns:
        ``(h, c, cache)``, both ``(N, H)``.
    """
    op = "lstm step"
    x = as_float_array(x, "input x", op, ndim=2, layout="(N, D)")
    h_prev = as_float_array(h_prev, "h_prev", op, ndim=2, layout="(N, H)")
    c_prev = as_float_array(c_prev, "c_prev", op, ndim=2, layout="(N, H)")
    if c_prev.shape != h_prev.shape:
        raise UserError(f"{op}: c_prev must have h_prev's shape {h_prev.shape}, got {c_prev.shape}")
    wx, wh, b = (as_float_array(a, n, op) for a, n in ((wx, "W_x"), (wh, "W_h"), (b, "b")))
    _check_weights(op, x.shape[1], h_prev.shape[1], 4, wx, wh, b)
    a = x @ wx.T + h_prev @ wh.T + b  # (N, 4H)
    i, f, g, o = np.split(a, 4, axis=1)
    i, f, g, o = _sigmoid(i), _sigmoid(f), np.tanh(g), _sigmoid(o)
    c = f * c_prev + i * g
    tc = np.tanh(c)
    h = o * tc
    return h, c, (x, h_prev, c_prev, wx, wh, i, f, g, o, tc)


def lstm_step_backward(dh: Any, dc: Any, cache: tuple) -> tuple[np.ndarray, ...]:
    """Gradient of ``lstm_step_forward``.

    Args:
        dh, dc: ``(N, H)``: the loss's gradient with respect to ``h`` and ``c`` (``dc`` from the
            next step; 0 at the last).

    Returns:
        ``(dx (N, D), dh_prev, dc_prev (N, H), dwx (4H, D), dwh (4H, H), db (4H,))``.
    """
    x, h_prev, c_prev, wx, wh, i, f, g, o, tc = cache
    dh = as_float_array(dh, "dh", "lstm step backward")
    dc = as_float_array(dc, "dc", "lstm step backward") + dh * o * (1.0 - tc * tc)
    da = np.concatenate([dc * g * i * (1.0 - i),  # d/d(i pre-activation): sigmoid' = s(1 - s)
                         dc * c_prev * f * (1.0 - f),
                         dc * i * (1.0 - g * g),  # tanh' = 1 - tanh**2
                         dh * tc * o * (1.0 - o)], axis=1)  # (N, 4H)
    return da @ wx, da @ wh, dc * f, da.T @ x, da.T @ h_prev, da.sum(axis=0)


@dataclass(frozen=True)
class LSTMCache:
    steps: list[tuple]  # one lstm_step_forward cache per time step
    mask: np.ndarray  # (N, T)
    h0: np.ndarray
    c0: np.ndarray


def lstm_forward(x: Any, wx: Any, wh: Any, b: Any, h0: Any = None, c0: Any = None,
                 lengths: Any = None) -> tuple[np.ndarray, np.ndarray, LSTMCache]:
    """An LSTM over whole sequences, as ``torch.nn.LSTM(batch_first=True)``.

    Args:
        x: ``(N, T, D)``; wx: ``(4H, D)``; wh: ``(4H, H)``; b: ``(4H,)``.
        h0, c0: ``(N, H)`` initial states (default zeros).
        lengths: ``(N,)`` real steps per sequence, or None.

    Returns:
        ``(h, c, cache)``: hidden and cell states after every step, ``(N, T, H)`` each (carried
        past a sequence's end).
    """
    wx, wh, b = (as_float_array(a, n, "lstm") for a, n in ((wx, "W_x"), (wh, "W_h"), (b, "b")))
    hidden = wh.shape[1] if wh.ndim == 2 else 0
    x, h_prev = _inputs("lstm", x, h0, hidden)
    _, c_prev = _inputs("lstm", x, c0, hidden)
    n, t, d = x.shape
    _check_weights("lstm", d, hidden, 4, wx, wh, b)
    mask = step_mask(lengths, n, t, "lstm")
    h = np.empty((n, t, hidden))
    c = np.empty_like(h)
    steps = []
    h0_, c0_ = h_prev, c_prev
    for s in range(t):
        hn, cn, step = lstm_step_forward(x[:, s], h_prev, c_prev, wx, wh, b)
        m = mask[:, s, None]
        h_prev = h[:, s] = m * hn + (1.0 - m) * h_prev
        c_prev = c[:, s] = m * cn + (1.0 - m) * c_prev
        steps.append(step)
    return h, c, LSTMCache(steps, mask, h0_, c0_)


def lstm_backward(dh: Any, cache: LSTMCache, dc_last: Any = None) -> tuple[np.ndarray, ...]:
    """Backward through time of ``lstm_forward``.

    Args:
        dh: ``(N, T, H)``, gradient with respect to every output ``h[:, t]``.
        cache: from ``lstm_forward``.
        dc_last: ``(N, H)`` gradient with respect to the final cell state (default 0).

    Returns:
        ``(dx (N, T, D), dh0 (N, H), dc0 (N, H), dwx (4H, D), dwh (4H, H), db (4H,))``.
    """
    dh = as_float_array(dh, "dh", "lstm backward", ndim=3, layout="(N, T, H)")
    n, t = cache.mask.shape
    if dh.shape != (n, t, cache.h0.shape[1]):
        raise UserError(f"lstm backward: dh must have shape {(n, t, cache.h0.shape[1])}, got "
                        f"{dh.shape}")
    x0, _, _, wx, wh, *_ = cache.steps[0]
    dx = np.empty((n, t, x0.shape[1]))
    dwx, dwh, db = np.zeros_like(wx), np.zeros_like(wh), np.zeros(wx.shape[0])
    carry_h = np.zeros_like(cache.h0)
    carry_c = np.zeros_like(cache.c0) if dc_last is None else as_float_array(dc_last, "dc", "lstm")
    for s in range(t - 1, -1, -1):
        total_h = dh[:, s] + carry_h
        m = cache.mask[:, s, None]
        dxs, dhp, dcp, dwxs, dwhs, dbs = lstm_step_backward(m * total_h, m * carry_c,
                                                            cache.steps[s])
        dx[:, s] = dxs
        dwx += dwxs
        dwh += dwhs
        db += dbs
        carry_h = dhp + (1.0 - m) * total_h
        carry_c = dcp + (1.0 - m) * carry_c
    return dx, carry_h, carry_c, dwx, dwh, db
