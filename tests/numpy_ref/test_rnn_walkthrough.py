"""`cnnlab walkthrough rnn`: the printed numbers recomputed here by hand-written NumPy loops (not
the engine's rnn_forward), the number of softmax calls, bad sentences exit 2 with one line."""

import json

import numpy as np
import pytest

from cnnlab.cli import main
from cnnlab.numpy_ref import rnn_walkthrough as rw


def _run(capsys, *argv):
    code = main(["walkthrough", "rnn", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _by_hand(words):
    h, states = np.zeros(3), []
    for w in words:
        x = np.array(rw.VOCAB.get(w, rw.VOCAB["<unk>"]))
        h = np.array([np.tanh(sum(rw.W_X[i, j] * x[j] for j in range(3))
                              + sum(rw.W_H[i, j] * h[j] for j in range(3)) + rw.B[i])
                      for i in range(3)])
        states.append(h)
    return np.array(states)


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


@pytest.mark.parametrize("mode", ["many-to-one", "many-to-many"])
def test_json_numbers_recomputed(capsys, mode, tmp_path):
    code, out, err = _run(capsys, "--sentence", "The film is not fun zzz", "--mode", mode,
                          "--json", "--out", str(tmp_path))
    assert code == 0
    doc = json.loads(out)
    words = ["the", "film", "is", "not", "fun", "zzz"]
    assert doc["tokens"] == words and doc["classes"][0] == "very negative"
    states = _by_hand(words)
    np.testing.assert_allclose(doc["hidden"], states, rtol=1e-12)
    heads = [states[-1]] if mode == "many-to-one" else states
    expected = [_softmax(rw.W_Y @ h + rw.B_Y) for h in heads]
    assert doc["softmax_calls"] == (1 if mode == "many-to-one" else 6) == len(doc["outputs"])
    np.testing.assert_allclose(doc["outputs"], expected, rtol=1e-12)
    assert (tmp_path / "rnn.png").stat().st_size > 0


def test_text_shows_steps_cell_and_classes(capsys):
    code, out, _ = _run(capsys, "--no-figure")
    assert code == 0
    states = _by_hand(rw.DEFAULT_SENTENCE.split())
    assert f"h_5 = [{', '.join(rw.format_number(v) for v in states[-1])}]" in out
    a = 1 * 0.1 + 0.2 * 0 + -0.5 * 0.1  # W_x[0] . x_1 ("the"), h_0 = 0, b[0] = 0
    assert f"= tanh({rw.format_number(a)}) = {rw.format_number(np.tanh(a))}" in out
    assert "softmax(y_hat) is called 1 time;" in out and "very positive" in out


@pytest.mark.parametrize("sentence,msg", [
    ("   ", "the sentence is empty"),
    ("qqq zzz", "every word of 'qqq zzz' is unknown"),
])
def test_bad_sentences_exit_2_with_one_line(capsys, sentence, msg):
    code, out, err = _run(capsys, "--sentence", sentence, "--no-figure")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and msg in err
