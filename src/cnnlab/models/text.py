"""Sentence classifiers: token ids ``(N, L)`` (+ lengths) -> ``(N, num_classes)`` logits.

Every model is ``embedding -> encoder -> classifier``: ``model.embedding`` maps ids to vectors
(id 0 is padding and stays the zero vector), ``model.encoder`` turns the ``(N, L, E)`` vectors of
each sentence into one ``(N, F)`` feature vector, and ``model.classifier`` is
``Sequential(Dropout or Identity, Linear)``. The encoders, as a table::

    rnn, gru, lstm   many-to-one: the last hidden state h_T of each sentence (T its own length)
    bilstm           the last forward state and the first backward state, concatenated
    kim_cnn          Kim 2014: convolutions of widths 3/4/5 (100 maps each), max over time
    bag_of_embeddings  the mean of the word vectors (a baseline without word order)

Padding never changes a sentence's logits: the RNNs run on packed sequences, the CNN's
max-over-time ignores the positions that see only padding and the mean divides by the real
length (tested in float64 against each sentence run alone).

``in_chans`` is accepted (the registry passes it to every builder) and ignored: token ids have no
channels. ``vocab_size`` must be the size of the vocabulary the ids come from.
"""

from __future__ import annotations

import torch
import torch.fx
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from cnnlab.errors import UserError
from cnnlab.models._registry import register_model

TASK = "text_classification"
# SST-5: the longest sentence has 56 words; 5 classes; 16,583 distinct lower-cased training
# words, rounded up: the reference setting `cnnlab models` and the analyzer count parameters at.
_DEFAULT_INPUT = (56,)
_REFERENCE_CLASSES = 5
_VOCAB = 20_000


def check_token_input(tokens: Tensor, lengths: Tensor | None, name: str, vocab_size: int) -> None:
    """Raise a :class:`UserError` unless ``tokens`` is ``(N, L)`` integer ids and ``lengths`` is
    ``None`` or ``(N,)`` with ``1 <= lengths <= L``.

    Values are checked only on tensors that hold data (not on meta or fake tensors).
    """
    if tokens.dim() != 2:
        raise UserError(f"{name} expects token ids (N, L), got a tensor of shape "
                        f"{tuple(tokens.shape)}")
    if tokens.is_floating_point() and _has_data(tokens):
        raise UserError(f"{name} expects integer token ids (N, L), got dtype {tokens.dtype}")
    n, length = tokens.shape
    if lengths is not None:
        if lengths.shape != (n,):
            raise UserError(f"{name}: lengths must have shape ({n},), one per sentence; got "
                            f"{tuple(lengths.shape)}")
        if _has_data(lengths) and ((lengths < 1).any() or (lengths > length).any()):
            raise UserError(f"{name}: lengths must be in [1, {length}] (the padded length), got "
                            f"{int(lengths.min())}..{int(lengths.max())}")
    if _has_data(tokens) and tokens.numel() and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise UserError(f"{name}: token ids must be in [0, {vocab_size}) (vocab_size), got "
                        f"{int(tokens.min())}..{int(tokens.max())}")


def _has_data(t: Tensor) -> bool:
    """False on meta tensors and on the fake tensors of ``FakeTensorMode`` (the analyzer's)."""
    from torch._subclasses.fake_tensor import is_fake

    return not (t.is_meta or is_fake(t))


torch.fx.wrap("check_token_input")  # a leaf call in fx graphs


class TextClassifier(nn.Module):
    """Base: check the input, ``embedding``, ``encoder``, ``classifier``.

    Args:
        name: the model name in error messages.
        encoder: ``(N, L, E)`` vectors and ``(N,)`` lengths (or None: all of length L) ->
            ``(N, F)``.
        features: ``F``.
        vocab_size, embed_dim: the embedding table is ``(vocab_size, embed_dim)``.
        num_classes: outputs.
        dropout: before the classifier (and, for the RNNs, on the word vectors).
        embed_scale: 0 keeps torch's N(0, 1) word vectors; s > 0 draws them from U(-s, s)
            (Kim 2014 used 0.25 for the random vectors of CNN-rand).
    """

    def __init__(self, *, name: str, encoder: nn.Module, features: int, vocab_size: int,
                 embed_dim: int, num_classes: int, dropout: float,
                 embed_scale: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise UserError(f"dropout must be in [0, 1), got {dropout!r}")
        if isinstance(embed_scale, bool) or not isinstance(embed_scale, (int, float)) \
                or not 0.0 <= embed_scale < float("inf"):
            raise UserError(f"embed_scale must be a finite number >= 0, got {embed_scale!r}")
        for what, v in (("vocab_size", vocab_size), ("embed_dim", embed_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < (2 if what == "vocab_size"
                                                                     else 1):
                raise UserError(f"{what} must be an integer >= {2 if what == 'vocab_size' else 1}"
                                f", got {v!r}")
        self.model_name = name
        self.vocab_size = vocab_size
        self.num_classes = num_classes
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        if embed_scale:
            with torch.no_grad():
                self.embedding.weight.uniform_(-embed_scale, embed_scale)
                self.embedding.weight[0].zero_()  # padding stays the zero vector
        self.encoder = encoder
        self.classifier = nn.Sequential(
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(), nn.Linear(features, num_classes)
        )

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``(N, L)`` ids (0 = padding), ``(N,)`` lengths or None -> ``(N, num_classes)``."""
        check_token_input(tokens, lengths, self.model_name, self.vocab_size)
        x = self.embedding(tokens.long())  # (N, L, E); .long(): fake float ids of the analyzer
        return self.classifier(self.encoder(x, lengths))  # (N, F) -> (N, num_classes)


# ------------------------------------------------------------------------------------ encoders

_CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


class RecurrentEncoder(nn.Module):
    """Many-to-one: the last hidden state of each sentence (both directions when bidirectional).

    With lengths the sentences run packed (``pack_padded_sequence``), so each stops at its own
    last word and the backward direction starts there, not in the padding.
    """

    def __init__(self, cell: str, embed_dim: int, hidden_size: int, bidirectional: bool,
                 dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        kwargs = {"nonlinearity": "tanh"} if cell == "rnn" else {}
        self.rnn = _CELLS[cell](embed_dim, hidden_size, batch_first=True,
                                bidirectional=bidirectional, **kwargs)
        self.out_features = hidden_size * (2 if bidirectional else 1)

    def forward(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        """``(N, L, E)`` -> ``(N, H * directions)``."""
        x = self.dropout(x)
        if lengths is not None:
            x = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h = self.rnn(x)
        h = h[0] if isinstance(h, tuple) else h  # LSTM: (h_n, c_n)
        # h: (directions, N, H) -> (N, directions * H); packed: in the input's order
        return h.transpose(0, 1).reshape(h.shape[1], -1)


class KimCNNEncoder(nn.Module):
    """Kim 2014: for each width w, a 1-D convolution over the words (wide: w - 1 zero vectors
    at both ends, as Kim pads each sentence), ReLU, max over time; the maxima concatenated.

    Positions past ``length + w - 1`` see only padding and are left out of the max, so a padded
    sentence gives what it gives alone.
    """

    def __init__(self, embed_dim: int, widths: tuple[int, ...], maps: int) -> None:
        super().__init__()
        self.widths = tuple(widths)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, maps, w, padding=w - 1) for w in widths)
        self.act = nn.ReLU()
        self.out_features = maps * len(widths)

    def forward(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        """``(N, L, E)`` -> ``(N, maps * len(widths))``."""
        x = x.transpose(1, 2)  # (N, E, L)
        pooled = []
        for w, conv in zip(self.widths, self.convs, strict=True):
            y = self.act(conv(x))  # (N, maps, L + w - 1)
            if lengths is not None:
                valid = torch.arange(y.shape[2], device=y.device)[None, :] < (lengths + w - 1
                                                                            ).to(y.device)[:, None]
                y = y.masked_fill(~valid[:, None, :], float("-inf"))
            pooled.append(y.amax(dim=2))  # (N, maps)
        return torch.cat(pooled, dim=1)


class MeanEncoder(nn.Module):
    """The mean of each sentence's word vectors (padding left out)."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.out_features = embed_dim

    def forward(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        """``(N, L, E)`` -> ``(N, E)``."""
        if lengths is None:
            return x.mean(dim=1)
        lengths = lengths.to(x.device)
        mask = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]  # (N, L)
        return (x * mask[..., None].to(x.dtype)).sum(dim=1) / lengths[:, None].to(x.dtype)


# ------------------------------------------------------------------------------------ builders

def _recurrent(name: str, cell: str, bidirectional: bool, *, num_classes: int, vocab_size: int,
               embed_dim: int, hidden_size: int, dropout: float,
               embed_scale: float) -> TextClassifier:
    if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size < 1:
        raise UserError(f"hidden_size must be a positive integer, got {hidden_size!r}")
    enc = RecurrentEncoder(cell, embed_dim, hidden_size, bidirectional, dropout)
    return TextClassifier(name=name, encoder=enc, features=enc.out_features,
                          vocab_size=vocab_size, embed_dim=embed_dim, num_classes=num_classes,
                          dropout=dropout, embed_scale=embed_scale)


def _register(name: str, description: str):  # noqa: ANN202
    return register_model(family="text", default_input=_DEFAULT_INPUT, min_input=(1,),
                          description=description, reference_classes=_REFERENCE_CLASSES,
                          task=TASK, name=name)


@_register("rnn", "Elman RNN (tanh), many-to-one: last hidden state -> linear; Socher et al. "
                  "2013 report 43.2% on SST-5")
def rnn(*, num_classes: int, in_chans: int = 1, vocab_size: int = _VOCAB, embed_dim: int = 300,
        hidden_size: int = 150, dropout: float = 0.5, embed_scale: float = 0.0) -> nn.Module:
    return _recurrent("rnn", "rnn", False, num_classes=num_classes, vocab_size=vocab_size,
                      embed_dim=embed_dim, hidden_size=hidden_size, dropout=dropout,
                      embed_scale=embed_scale)


@_register("gru", "GRU (Cho et al. 2014), many-to-one: last hidden state -> linear")
def gru(*, num_classes: int, in_chans: int = 1, vocab_size: int = _VOCAB, embed_dim: int = 300,
        hidden_size: int = 150, dropout: float = 0.5, embed_scale: float = 0.0) -> nn.Module:
    return _recurrent("gru", "gru", False, num_classes=num_classes, vocab_size=vocab_size,
                      embed_dim=embed_dim, hidden_size=hidden_size, dropout=dropout,
                      embed_scale=embed_scale)


@_register("lstm", "LSTM, many-to-one: last hidden state -> linear; Tai et al. 2015 report 46.4% "
                   "on SST-5 (GloVe)")
def lstm(*, num_classes: int, in_chans: int = 1, vocab_size: int = _VOCAB, embed_dim: int = 300,
         hidden_size: int = 150, dropout: float = 0.5, embed_scale: float = 0.0) -> nn.Module:
    return _recurrent("lstm", "lstm", False, num_classes=num_classes, vocab_size=vocab_size,
                      embed_dim=embed_dim, hidden_size=hidden_size, dropout=dropout,
                      embed_scale=embed_scale)


@_register("bilstm", "bidirectional LSTM, both final states -> linear; Tai et al. 2015 report "
                     "49.1% on SST-5 (GloVe)")
def bilstm(*, num_classes: int, in_chans: int = 1, vocab_size: int = _VOCAB, embed_dim: int = 300,
           hidden_size: int = 150, dropout: float = 0.5, embed_scale: float = 0.0) -> nn.Module:
    return _recurrent("bilstm", "lstm", True, num_classes=num_classes, vocab_size=vocab_size,
                      embed_dim=embed_dim, hidden_size=hidden_size, dropout=dropout,
                      embed_scale=embed_scale)


@_register("kim_cnn", "sentence CNN, Kim 2014: widths 3/4/5 x 100 maps, max over time, dropout "
                      "0.5; CNN-rand 45.0% on SST-5")
def kim_cnn(*, num_classes: int, in_chans: int = 1, vocab_size: int = _VOCAB,
            embed_dim: int = 300, widths: tuple[int, ...] = (3, 4, 5), maps: int = 100,
            dropout: float = 0.5, embed_scale: float = 0.0) -> nn.Module:
    widths = tuple(widths)
    if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise UserError(f"widths must be positive integers, got {widths!r}")
    if isinstance(maps, bool) or not isinstance(maps, int) or maps < 1:
        raise UserError(f"maps must be a positive integer, got {maps!r}")
    enc = KimCNNEncoder(embed_dim, widths, maps)
    return TextClassifier(name="kim_cnn", encoder=enc, features=enc.out_features,
                          vocab_size=vocab_size, embed_dim=embed_dim, num_classes=num_classes,
                          dropout=dropout, embed_scale=embed_scale)


@_register("bag_of_embeddings", "baseline: mean of the word vectors -> linear (no word order; "
                                "Joulin et al. 2017's fastText without n-grams)")
def bag_of_embeddings(*, num_classes: int, in_chans: int = 1, vocab_size: int = _VOCAB,
                      embed_dim: int = 300, dropout: float = 0.5,
                      embed_scale: float = 0.0) -> nn.Module:
    enc = MeanEncoder(embed_dim)
    return TextClassifier(name="bag_of_embeddings", encoder=enc, features=enc.out_features,
                          vocab_size=vocab_size, embed_dim=embed_dim, num_classes=num_classes,
                          dropout=dropout, embed_scale=embed_scale)
