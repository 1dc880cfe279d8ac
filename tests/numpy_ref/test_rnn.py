"""Elman RNN, LSTM, embedding and the masked heads against PyTorch float64 (torch.nn.RNN /
torch.nn.LSTM on packed sequences, F.embedding, F.linear, F.cross_entropy with ignore_index:
values and autograd gradients, random shapes and lengths) and central differences.

Tolerance: rtol 1e-10, atol 1e-12 (float64), central differences 1e-7 (step 1e-6).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from cnnlab.errors import UserError
from cnnlab.numpy_ref import (
    embedding_backward,
    embedding_forward,
    lstm_backward,
    lstm_forward,
    lstm_step_backward,
    lstm_step_forward,
    many_to_many_backward,
    many_to_many_forward,
    many_to_one_backward,
    many_to_one_forward,
    rnn_backward,
    rnn_forward,
    rnn_step_backward,
    rnn_step_forward,
    sequence_cross_entropy,
    softmax,
)

shapes = st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 5), st.integers(1, 5))


def _lengths(rng, n, t, use):
    return rng.integers(1, t + 1, n) if use else None


def _torch_states(module, x, h0, lengths, c0=None):
    """torch's states in our convention: past its end a sequence keeps its last state."""
    n, t, _ = x.shape
    hx = h0[None] if c0 is None else (h0[None], c0[None])
    if lengths is None:
        out, last = module(x, hx)
        return out, last
    packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=True,
                                  enforce_sorted=False)
    out, last = module(packed, hx)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=t)
    idx = torch.minimum(torch.arange(t)[None, :], torch.tensor(lengths)[:, None] - 1)  # (N, T)
    return out.gather(1, idx[..., None].expand(-1, -1, out.shape[2])), last


def _tensor(a):
    return torch.tensor(a, dtype=torch.float64, requires_grad=True)


@settings(max_examples=40)
@given(shapes, st.booleans(), st.integers(0, 2**31))
def test_rnn_matches_torch_rnn(assert_close, shape, use_lengths, seed):
    n, t, d, hid = shape
    rng = np.random.default_rng(seed)
    x, h0 = rng.standard_normal((n, t, d)), rng.standard_normal((n, hid))
    wx, wh = rng.standard_normal((hid, d)), rng.standard_normal((hid, hid)) * 0.5
    b_ih, b_hh = rng.standard_normal(hid), rng.standard_normal(hid)
    lengths = _lengths(rng, n, t, use_lengths)
    h, cache = rnn_forward(x, wx, wh, b_ih + b_hh, h0, lengths)
    dh = rng.standard_normal(h.shape)
    grads = rnn_backward(dh, cache)

    m = torch.nn.RNN(d, hid, batch_first=True, nonlinearity="tanh").double()
    with torch.no_grad():
        for p, v in zip((m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0),
                        (wx, wh, b_ih, b_hh), strict=True):
            p.copy_(torch.tensor(v))
    xt, h0t = _tensor(x), _tensor(h0)
    ref, last = _torch_states(m, xt, h0t, lengths)
    assert_close(h, ref.detach().numpy())
    assert_close(h[:, -1], last[0].detach().numpy())  # h_n: each sequence's last real state
    ref.backward(torch.tensor(dh))
    dx, dh0, dwx, dwh, db = grads
    assert_close(dx, xt.grad.numpy())
    assert_close(dh0, h0t.grad.numpy())
    assert_close(dwx, m.weight_ih_l0.grad.numpy())
    assert_close(dwh, m.weight_hh_l0.grad.numpy())
    assert_close(db, m.bias_ih_l0.grad.numpy())
    assert_close(db, m.bias_hh_l0.grad.numpy())  # both biases get the same gradient


@settings(max_examples=40)
@given(shapes, st.booleans(), st.integers(0, 2**31))
def test_lstm_matches_torch_lstm(assert_close, shape, use_lengths, seed):
    n, t, d, hid = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, t, d))
    h0, c0 = rng.standard_normal((n, hid)), rng.standard_normal((n, hid))
    wx, wh = rng.standard_normal((4 * hid, d)), rng.standard_normal((4 * hid, hid))
    b_ih, b_hh = rng.standard_normal(4 * hid), rng.standard_normal(4 * hid)
    lengths = _lengths(rng, n, t, use_lengths)
    h, c, cache = lstm_forward(x, wx, wh, b_ih + b_hh, h0, c0, lengths)
    dh, dc_last = rng.standard_normal(h.shape), rng.standard_normal((n, hid))
    dx, dh0, dc0, dwx, dwh, db = lstm_backward(dh, cache, dc_last)

    m = torch.nn.LSTM(d, hid, batch_first=True).double()
    with torch.no_grad():
        for p, v in zip((m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0),
                        (wx, wh, b_ih, b_hh), strict=True):
            p.copy_(torch.tensor(v))
    xt, h0t, c0t = _tensor(x), _tensor(h0), _tensor(c0)
    ref, (h_n, c_n) = _torch_states(m, xt, h0t, lengths, c0t)
    assert_close(h, ref.detach().numpy())
    assert_close(h[:, -1], h_n[0].detach().numpy())
    assert_close(c[:, -1], c_n[0].detach().numpy())
    ((ref * torch.tensor(dh)).sum() + (c_n[0] * torch.tensor(dc_last)).sum()).backward()
    assert_close(dx, xt.grad.numpy())
    assert_close(dh0, h0t.grad.numpy())
    assert_close(dc0, c0t.grad.numpy())
    assert_close(dwx, m.weight_ih_l0.grad.numpy())
    assert_close(dwh, m.weight_hh_l0.grad.numpy())
    assert_close(db, m.bias_hh_l0.grad.numpy())


def test_steps_against_central_differences(central_differences):
    rng = np.random.default_rng(1)
    n, d, hid = 2, 3, 4
    x, h_prev, c_prev = (rng.standard_normal(s) for s in ((n, d), (n, hid), (n, hid)))
    wx, wh, b = rng.standard_normal((hid, d)), rng.standard_normal((hid, hid)), rng.standard_normal(hid)
    dh = rng.standard_normal((n, hid))
    _, cache = rnn_step_forward(x, h_prev, wx, wh, b)
    analytic = rnn_step_backward(dh, cache)
    numeric = central_differences(
        lambda: float((rnn_step_forward(x, h_prev, wx, wh, b)[0] * dh).sum()),
        [x, h_prev, wx, wh, b])
    for a, num in zip(analytic, numeric, strict=True):
        np.testing.assert_allclose(a, num, rtol=1e-7, atol=1e-7)

    wx4, wh4, b4 = (rng.standard_normal(s) for s in ((4 * hid, d), (4 * hid, hid), (4 * hid,)))
    dc = rng.standard_normal((n, hid))

    def loss():
        h, c, _ = lstm_step_forward(x, h_prev, c_prev, wx4, wh4, b4)
        return float((h * dh).sum() + (c * dc).sum())

    _, _, cache = lstm_step_forward(x, h_prev, c_prev, wx4, wh4, b4)
    dx, dhp, dcp, dwx, dwh, db = lstm_step_backward(dh, dc, cache)
    numeric = central_differences(loss, [x, h_prev, c_prev, wx4, wh4, b4])
    for a, num in zip((dx, dhp, dcp, dwx, dwh, db), numeric, strict=True):
        np.testing.assert_allclose(a, num, rtol=1e-7, atol=1e-7)


def test_masked_sequence_against_central_differences(central_differences):
    """Through time with two lengths: padded steps pass the gradient through unchanged."""
    rng = np.random.default_rng(2)
    x, h0 = rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 2))
    wx, wh, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 2)), rng.standard_normal(2)
    w_out, b_out = rng.standard_normal((5, 2)), rng.standard_normal(5)
    y, lengths = np.array([1, 4]), np.array([2, 4])

    def loss():
        from cnnlab.numpy_ref import softmax_cross_entropy

        h, _ = rnn_forward(x, wx, wh, b, h0, lengths)
        logits, _ = many_to_one_forward(h, w_out, b_out, lengths)
        return softmax_cross_entropy(logits, y)[0]

    from cnnlab.numpy_ref import softmax_cross_entropy

    h, cache = rnn_forward(x, wx, wh, b, h0, lengths)
    logits, head = many_to_one_forward(h, w_out, b_out, lengths)
    _, dlogits = softmax_cross_entropy(logits, y)
    dh, dw_out, db_out = many_to_one_backward(dlogits, head)
    dx, dh0, dwx, dwh, db = rnn_backward(dh, cache)
    assert (dx[0, 2:] == 0).all()  # the padding of sequence 0 gets no gradient
    numeric = central_differences(loss, [x, h0, wx, wh, b, w_out, b_out])
    for a, num in zip((dx, dh0, dwx, dwh, db, dw_out, db_out), numeric, strict=True):
        np.testing.assert_allclose(a, num, rtol=1e-7, atol=1e-8)


def test_embedding_matches_torch_with_repeated_ids(torch_ref, assert_close):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((6, 4))
    ids = np.array([[0, 3, 3, 5], [3, 1, 0, 0]])  # 3 three times, 0 three times
    out, cache = embedding_forward(ids, w)
    dout = rng.standard_normal(out.shape)
    ref, (dw,) = torch_ref(lambda wt: F.embedding(torch.tensor(ids), wt), w, dout=dout)
    assert_close(out, ref)
    assert_close(embedding_backward(dout, cache), dw)


@settings(max_examples=30)
@given(shapes, st.integers(2, 5), st.integers(0, 2**31))
def test_heads_match_torch(torch_ref, assert_close, shape, k, seed):
    n, t, _, hid = shape
    rng = np.random.default_rng(seed)
    h, w, b = rng.standard_normal((n, t, hid)), rng.standard_normal((k, hid)), rng.standard_normal(k)
    lengths = rng.integers(1, t + 1, n)
    last = torch.tensor(lengths - 1)

    logits, cache = many_to_one_forward(h, w, b, lengths)
    dlogits = rng.standard_normal(logits.shape)
    ref, grads = torch_ref(lambda ht, wt, bt: F.linear(ht[torch.arange(n), last], wt, bt),
                           h, w, b, dout=dlogits)
    assert_close(logits, ref)
    for ours, theirs in zip(many_to_one_backward(dlogits, cache), grads, strict=True):
        assert_close(ours, theirs)

    # many-to-many + loss against F.cross_entropy over the real steps (ignore_index at padding)
    y = rng.integers(0, k, (n, t))
    logits, cache = many_to_many_forward(h, w, b, lengths)
    loss, dz = sequence_cross_entropy(logits, y, lengths)
    dh, dw, db = many_to_many_backward(dz, cache)
    ht, wt, bt = _tensor(h), _tensor(w), _tensor(b)
    target = torch.tensor(np.where(np.arange(t)[None] < lengths[:, None], y, -100))
    ref = F.cross_entropy(F.linear(ht, wt, bt).reshape(n * t, k), target.reshape(-1),
                          ignore_index=-100)
    ref.backward()
    np.testing.assert_allclose(loss, ref.item(), rtol=1e-10)
    assert_close(dh, ht.grad.numpy())
    assert_close(dw, wt.grad.numpy())
    assert_close(db, bt.grad.numpy())
    assert (logits[np.arange(t)[None] >= lengths[:, None]] == 0).all()


def test_softmax_matches_torch_and_is_stable(assert_close):
    z = np.array([[1000.0, 1001.0, 999.0], [-3.0, 0.0, 2.5]])
    assert_close(softmax(z), torch.softmax(torch.tensor(z), dim=-1).numpy())
    assert np.isfinite(softmax(z)).all()


@pytest.mark.parametrize("call,msg", [
    (lambda: rnn_forward(np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 2)), np.ones(2)),
     r"rnn: input x must be 3-D \(N, T, D\)"),
    (lambda: rnn_forward(np.ones((1, 3, 4)), np.ones((2, 3)), np.ones((2, 2)), np.ones(2)),
     r"rnn: W_x must have shape \(2, 4\)"),
    (lambda: rnn_forward(np.ones((2, 3, 4)), np.ones((2, 4)), np.ones((2, 2)), np.ones(2),
                         lengths=np.array([0, 3])), r"lengths must be in \[1, 3\]"),
    (lambda: lstm_forward(np.ones((1, 3, 4)), np.ones((2, 4)), np.ones((2, 2)), np.ones(2)),
     r"lstm: W_x must have shape \(8, 4\) = \(4H, D\)"),
    (lambda: embedding_forward(np.array([[0, 7]]), np.ones((5, 2))), r"ids must be in \[0, 5\)"),
    (lambda: embedding_forward(np.array([0.5]), np.ones((5, 2))), "ids must be integers"),
    (lambda: many_to_one_forward(np.ones((2, 3, 4)), np.ones((5, 4)), np.ones(5),
                                 np.array([1, 2, 3])), r"lengths must be \(2,\) integers"),
])
def test_bad_arguments_are_one_line_user_errors(call, msg):
    with pytest.raises(UserError, match=msg):
        call()
