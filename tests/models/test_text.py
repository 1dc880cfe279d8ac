"""Sentence classifiers: a padded batch gives each sentence the logits it gets alone (float64),
the RNN's many-to-one output is torch's own last state, bad inputs are one-line UserErrors, and
the registry, `cnnlab models` and the analyzer handle them."""

import pytest
import torch

from cnnlab.data.sst import pad_sequences
from cnnlab.errors import UserError
from cnnlab.models import create, list_models, model_info

TEXT = [n for n in list_models() if model_info(n).task == "text_classification"]
VOCAB = 30


def test_the_six_text_models_are_registered():
    assert set(TEXT) == {"rnn", "gru", "lstm", "bilstm", "kim_cnn", "bag_of_embeddings"}
    for name in TEXT:
        info = model_info(name)
        assert info.default_input == (56,) and info.min_input == (1,)
        assert info.reference_classes == 5 and "vocab_size" in info.options


@pytest.mark.parametrize("name", TEXT)
def test_padding_gives_the_logits_of_each_sentence_alone(name):
    torch.manual_seed(0)
    model = create(name, num_classes=5, vocab_size=VOCAB, embed_dim=6,
                   **({} if name in ("kim_cnn", "bag_of_embeddings") else {"hidden_size": 4})
                   ).double().eval()
    g = torch.Generator().manual_seed(1)
    lengths = [1, 7, 3, 2, 7]  # 1 and 2 words: shorter than Kim's widths 3/4/5
    seqs = [torch.randint(2, VOCAB, (n,), generator=g) for n in lengths]
    batch = pad_sequences([s.numpy() for s in seqs])
    with torch.no_grad():
        together = model(batch.tokens, batch.lengths)
        alone = torch.cat([model(s[None], torch.tensor([len(s)])) for s in seqs])
        no_lengths = torch.cat([model(s[None]) for s in seqs])
    assert together.shape == (5, 5) and together.dtype == torch.float64
    torch.testing.assert_close(together, alone, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(alone, no_lengths, rtol=1e-10, atol=1e-12)
    # without lengths the padding would be read as words: a different answer for short ones
    assert not torch.allclose(model(batch.tokens)[0], alone[0])


def test_rnn_output_is_the_last_state_of_torch_rnn():
    torch.manual_seed(0)
    model = create("rnn", num_classes=5, vocab_size=VOCAB, embed_dim=6, hidden_size=4).double()
    model.eval()
    tokens = torch.tensor([[3, 4, 5]])
    with torch.no_grad():
        out, h_n = model.encoder.rnn(model.embedding(tokens))
        expected = model.classifier(out[:, -1])  # many-to-one: h_T -> linear
        torch.testing.assert_close(model(tokens, torch.tensor([3])), expected)
        assert torch.equal(out[:, -1], h_n[0])


def test_training_step_reaches_every_parameter():
    for name in TEXT:
        model = create(name, num_classes=5, vocab_size=VOCAB, embed_dim=6).train()
        batch = pad_sequences([[2, 3, 4], [5]])
        model(batch.tokens, batch.lengths).logsumexp(1).sum().backward()
        for k, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), (name, k)
        assert model.embedding.weight.grad[0].abs().sum() == 0  # padding stays the zero vector


@pytest.mark.parametrize("call,msg", [
    (lambda m: m(torch.zeros(3, dtype=torch.long)), r"lstm expects token ids \(N, L\), got .*\(3,\)"),
    (lambda m: m(torch.zeros(2, 3)), r"lstm expects integer token ids \(N, L\), got dtype"),
    (lambda m: m(torch.full((1, 3), VOCAB)), r"token ids must be in \[0, 30\)"),
    (lambda m: m(torch.ones(2, 3, dtype=torch.long), torch.tensor([3, 4])),
     r"lengths must be in \[1, 3\]"),
    (lambda m: m(torch.ones(2, 3, dtype=torch.long), torch.tensor([3])),
     r"lengths must have shape \(2,\)"),
])
def test_bad_inputs_are_user_errors(call, msg):
    model = create("lstm", vocab_size=VOCAB, embed_dim=4, hidden_size=3)
    with pytest.raises(UserError, match=msg):
        call(model)


@pytest.mark.parametrize("kw,msg", [
    ({"vocab_size": 1}, r"vocab_size must be an integer >= 2, got 1"),
    ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ({"hidden_size": 0}, "hidden_size must be a positive integer"),
    ({"embed_scale": -0.1}, "embed_scale must be a finite number >= 0, got -0.1"),
    ({"embed_scale": float("nan")}, "embed_scale must be a finite number >= 0"),
])
def test_bad_options(kw, msg):
    with pytest.raises(UserError, match=msg):
        create("gru", **kw)


@pytest.mark.parametrize("name", ["kim_cnn", "lstm", "bag_of_embeddings"])
def test_embed_scale_draws_uniform_word_vectors_and_keeps_padding_zero(name):
    torch.manual_seed(0)
    w = create(name, num_classes=5, vocab_size=2000, embed_dim=50,
               embed_scale=0.25).embedding.weight.detach()
    assert torch.equal(w[0], torch.zeros(50))
    rest = w[1:].flatten()
    assert float(rest.abs().max()) <= 0.25
    # U(-a, a) has variance a^2 / 3; over 99,950 draws the sample variance's relative standard
    # error is sqrt(4/45 / n) = 0.3%: 3% is a 10-sigma margin
    assert abs(float(rest.var()) / (0.25 ** 2 / 3) - 1) < 0.03
    torch.manual_seed(0)
    default = create(name, num_classes=5, vocab_size=2000, embed_dim=50).embedding.weight
    assert abs(float(default[1:].detach().std()) - 1.0) < 0.02  # torch's N(0, 1)


def test_analyzer_counts_the_lstm():
    from cnnlab.analysis import analyze

    a = analyze("lstm")
    # 56 steps x 4 gates x H x (E + H) multiply-accumulates, plus the H x 5 classifier
    assert a.totals["total_macs"] == 56 * 4 * 150 * (300 + 150) + 150 * 5
    model = create("lstm", num_classes=5)
    assert a.totals["trainable_params"] == sum(p.numel() for p in model.parameters())
