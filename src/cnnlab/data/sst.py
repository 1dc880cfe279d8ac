"""The Stanford Sentiment Treebank, fine-grained (SST-5): PTB-style trees -> sentences, phrases.

Each line of ``{train,dev,test}.txt`` is one sentence as a binary tree in which every node carries
a sentiment label 0-4 (very negative ... very positive)::

    (3 (2 It) (4 (4 (2 's) (4 (3 (2 a) (4 (3 lovely) (2 film))) ...

The root label is the sentence label; every inner node labels the phrase it spans. The official
split (Socher et al. 2013) has 8,544 / 1,101 / 2,210 sentences.

Where it is looked for (first match wins): ``data_dir`` when given (a folder or the archive),
``$CNNLAB_DATA``, ``./data``, ``../shared/data`` relative to the checkout; in each folder as
``sst-trees.tar.gz`` (the archive, read without unpacking), ``sst/`` or the three files themselves.
Parsing all 11,855 trees takes about 3 s (measured under load from other helpers), so nothing
is cached.

Example::

    from cnnlab.data.sst import load_sst, Vocabulary, encode_split
    sst = load_sst(phrases=True)                 # train sentences + every training phrase
    vocab = Vocabulary.build(sst.train.tokens)   # from training only
    batch = encode_split(sst.test, vocab)        # tokens (2210, L) int64, lengths, labels
"""

from __future__ import annotations

import os
import re
import tarfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnlab.errors import DataError, DataNotFoundError, UserError

SST_CLASSES = ("very negative", "negative", "neutral", "positive", "very positive")
SPLITS = ("train", "dev", "test")
ARCHIVE = "sst-trees.tar.gz"
PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1

_REPO = Path(__file__).resolve().parents[3]
# Words are separated by ASCII white space only: a word may hold a no-break space (U+00A0),
# e.g. the film title "8\u00a01\/2" in train.txt, which Python's \s would split.
_TOKEN = re.compile(r"\(|\)|[^ \t\r\n\f\v()]+")


# ------------------------------------------------------------------------------------------ trees

@dataclass(frozen=True)
class Tree:
    """One parsed sentence.

    Attributes:
        words: the leaves, left to right.
        label: the root's label (the sentence's sentiment, 0-4).
        spans: every labelled node as ``(label, start, end)``: it covers ``words[start:end]``.
            The root is ``(label, 0, len(words))``; each leaf is ``(label, i, i + 1)``.
    """

    words: tuple[str, ...]
    label: int
    spans: tuple[tuple[int, int, int], ...]


def parse_tree(line: str, where: str = "tree") -> Tree:
    """Parse one PTB-style sentiment tree.

    Args:
        line: e.g. ``"(3 (2 It) (4 (2 works) (2 .)))"``.
        where: named in errors, e.g. ``"sst-trees.tar.gz:sst/train.txt line 17"``.

    Raises:
        DataError: unbalanced brackets, a label outside 0-4 (or not a number), a node without a
            word or children, text outside the tree; the message starts with ``where``.
    """
    tokens = _TOKEN.findall(line)
    if not tokens:
        raise DataError(f"{where}: empty line, expected a tree like (2 (2 a) (2 b))")
    words: list[str] = []
    spans: list[tuple[int, int, int]] = []
    stack: list[tuple[int, int, int]] = []  # open nodes: (label, first word, children seen)
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "(":
            if i > 0 and not stack:
                raise DataError(f"{where}: text after the end of the tree (unbalanced brackets: "
                                "one ')' too many or a second tree on the line)")
            if i + 1 >= len(tokens) or tokens[i + 1] in "()":
                raise DataError(f"{where}: '(' must be followed by a label 0-4")
            label_text = tokens[i + 1]
            if not (label_text.isdigit() and 0 <= int(label_text) <= 4):
                raise DataError(f"{where}: label {label_text!r} is outside 0-4 (labels are "
                                f"0 very negative ... 4 very positive)")
            if stack:
                parent = stack[-1]
                stack[-1] = (parent[0], parent[1], parent[2] + 1)
            stack.append((int(label_text), len(words), 0))
            i += 2
        elif tok == ")":
            if not stack:
                raise DataError(f"{where}: unbalanced brackets: ')' without a matching '('")
            label, start, children = stack.pop()
            if children == 0 and len(words) == start:
                raise DataError(f"{where}: a node with label {label} has neither a word nor "
                                "children")
            spans.append((label, start, len(words)))
            i += 1
        else:  # a word: the leaf of the innermost open node
            if not stack:
                raise DataError(f"{where}: word {tok!r} outside the tree (unbalanced brackets)")
            label, start, children = stack[-1]
            if children or len(words) > start:
                raise DataError(f"{where}: word {tok!r} beside other words or subtrees in one "
                                "node; a leaf is (label word)")
            words.append(tok)
            i += 1
    if stack:
        raise DataError(f"{where}: unbalanced brackets: {len(stack)} '(' not closed")
    root = spans[-1]
    return Tree(words=tuple(words), label=root[0], spans=tuple(spans))


# ------------------------------------------------------------------------------------------ data

@dataclass(frozen=True)
class TextSplit:
    """Labelled token sequences.

    Attributes:
        tokens: one tuple of words per example.
        labels: ``(N,)`` int64 in ``[0, 5)``.
    """

    tokens: tuple[tuple[str, ...], ...]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class SSTData:
    """SST-5 as read: sentences of each split, and (optionally) the training phrases.

    Attributes:
        train: the training examples: the 8,544 sentences, or with ``phrases=True`` every
            distinct labelled phrase of the training trees (sentences included).
        dev, test: whole sentences (1,101 and 2,210), always.
        train_sentences: the 8,544 training sentences (same as ``train`` without phrases).
        train_on: ``"sentences"`` or ``"phrases"``.
        source: the archive or folder read.
    """

    train: TextSplit
    dev: TextSplit
    test: TextSplit
    train_sentences: TextSplit
    train_on: str
    source: str
    classes: tuple[str, ...] = SST_CLASSES

    def info(self) -> dict:
        """What a saved run needs to know about its data (JSON-serialisable)."""
        return {"name": "sst5", "classes": list(self.classes), "train_on": self.train_on,
                "num_train": len(self.train), "num_dev": len(self.dev),
                "num_test": len(self.test), "source": self.source}


def find_sst(data_dir: str | Path | None = None) -> Path:
    """The archive or folder :func:`load_sst` reads.

    Raises:
        DataNotFoundError: naming every place looked at.
    """
    if data_dir is not None:
        dirs = [Path(data_dir).expanduser()]
    else:
        # the image data sets' search order (cnnlab.data.datasets)
        dirs = [Path(os.environ["CNNLAB_DATA"])] if os.environ.get("CNNLAB_DATA") else []
        dirs += [Path.cwd() / "data", _REPO.parent / "shared" / "data"]
    for folder in dirs:
        if folder.is_file():
            return folder
        for candidate in (folder / ARCHIVE, folder / "sst", folder):
            if candidate.is_file() or (candidate / "train.txt").is_file():
                return candidate
    looked = ", ".join(str(d) for d in dirs)
    raise DataNotFoundError(f"SST-5 not found (looked in: {looked}); expected {ARCHIVE} or a "
                            "folder with train.txt, dev.txt and test.txt (PTB-style trees)")


def _read_lines(source: Path) -> dict[str, tuple[str, list[str]]]:
    """``split -> (name for errors, lines)`` from a folder or a tar archive."""
    out: dict[str, tuple[str, list[str]]] = {}
    if source.is_dir():
        for split in SPLITS:
            path = source / f"{split}.txt"
            if not path.is_file():
                raise DataError(f"{source}: {split}.txt is missing")
            out[split] = (str(path), path.read_text(encoding="utf-8").splitlines())
        return out
    try:
        with tarfile.open(source) as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            for split in SPLITS:
                member = members.get(f"{split}.txt")
                if member is None:
                    raise DataError(f"{source}: the archive has no {split}.txt")
                f = tar.extractfile(member)
                assert f is not None  # a regular file member always has content
                out[split] = (f"{source}:{member.name}",
                              f.read().decode("utf-8").splitlines())
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{source}: not a readable tar archive ({exc})") from exc
    return out


def read_trees(name: str, lines: Iterable[str]) -> list[Tree]:
    """Parse every non-blank line; errors name ``name`` and the 1-based line number."""
    return [parse_tree(line, f"{name} line {n}") for n, line in enumerate(lines, 1)
            if line.strip()]


def _split(trees: Sequence[Tree], lowercase: bool) -> TextSplit:
    tokens = tuple(_words(t.words, lowercase) for t in trees)
    return TextSplit(tokens, np.array([t.label for t in trees], dtype=np.int64))


def _words(words: Sequence[str], lowercase: bool) -> tuple[str, ...]:
    return tuple(w.lower() for w in words) if lowercase else tuple(words)


def _phrases(trees: Sequence[Tree], lowercase: bool) -> TextSplit:
    """Every distinct labelled phrase, first occurrence wins (a phrase has one label in SST)."""
    seen: dict[tuple[str, ...], int] = {}
    for t in trees:
        words = _words(t.words, lowercase)
        for label, start, end in reversed(t.spans):  # root first: sentences keep their label
            seen.setdefault(words[start:end], label)
    return TextSplit(tuple(seen), np.fromiter(seen.values(), dtype=np.int64, count=len(seen)))


def load_sst(data_dir: str | Path | None = None, *, phrases: bool = False,
             lowercase: bool = True) -> SSTData:
    """Read SST-5.

    Args:
        data_dir: the archive or a folder holding it (default: the search order above).
        phrases: train on every distinct labelled phrase of the training trees, sentences
            included (as Socher et al. 2013 and Kim 2014 do); dev and test stay whole sentences.
        lowercase: lower-case every word (Kim 2014's preprocessing).

    Raises:
        DataNotFoundError, DataError: missing data; a malformed tree (file and line named).
    """
    source = find_sst(data_dir)
    trees = {split: read_trees(name, lines) for split, (name, lines) in _read_lines(source).items()}
    for split in SPLITS:
        if not trees[split]:
            raise DataError(f"{source}: {split}.txt holds no trees")
    sentences = _split(trees["train"], lowercase)
    return SSTData(
        train=_phrases(trees["train"], lowercase) if phrases else sentences,
        dev=_split(trees["dev"], lowercase), test=_split(trees["test"], lowercase),
        train_sentences=sentences, train_on="phrases" if phrases else "sentences",
        source=str(source))


# ------------------------------------------------------------------------------------ vocabulary

@dataclass(frozen=True)
class Vocabulary:
    """Word <-> id. Id 0 is padding, id 1 the unknown word; the rest by frequency.

    Attributes:
        words: ``words[i]`` is the word of id ``i``.
        lowercase: whether :meth:`encode_text` lower-cases (as the data it was built from).
    """

    words: tuple[str, ...]
    lowercase: bool = True

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], min_freq: int = 1,
              lowercase: bool = True) -> Vocabulary:
        """From training sentences only. Words seen fewer than ``min_freq`` times map to
        ``<unk>``, so that ``<unk>`` is trained on the rarest words (``min_freq=2``) instead of
        never seen before test time (``min_freq=1``). Ties in frequency sort alphabetically, so
        the ids do not depend on the order of the sentences."""
        if min_freq < 1:
            raise UserError(f"min_freq must be >= 1, got {min_freq}")
        counts = Counter(w for s in sentences for w in s)
        kept = sorted((w for w, c in counts.items() if c >= min_freq and w not in (PAD, UNK)),
                      key=lambda w: (-counts[w], w))
        return cls((PAD, UNK, *kept), lowercase)

    def __len__(self) -> int:
        return len(self.words)

    @property
    def _index(self) -> dict[str, int]:
        index = self.__dict__.get("_index_cache")
        if index is None:
            index = {w: i for i, w in enumerate(self.words)}
            object.__setattr__(self, "_index_cache", index)  # frozen: a derived, private cache
        return index

    def encode(self, tokens: Sequence[str]) -> np.ndarray:
        """``(L,)`` int64 ids; unknown words are ``UNK_ID``."""
        index = self._index
        return np.array([index.get(w, UNK_ID) for w in tokens], dtype=np.int64)

    def encode_text(self, text: str) -> tuple[tuple[str, ...], np.ndarray]:
        """A sentence typed by a user: split on white space -> ``(tokens, (L,) ids)``.

        Raises:
            UserError: an empty sentence, or one of unknown words only (the model would see
                nothing but ``<unk>``).
        """
        tokens = _words(text.split(), self.lowercase)
        if not tokens:
            raise UserError("the sentence is empty; give at least one word")
        ids = self.encode(tokens)
        if (ids == UNK_ID).all():
            raise UserError(f"every word of {text.strip()!r} is unknown to the vocabulary "
                            f"({len(self)} words); use at least one known word")
        return tokens, ids


# ---------------------------------------------------------------------------------------- batches

@dataclass(frozen=True)
class TokenBatch:
    """Padded token ids.

    Attributes:
        tokens: ``(N, L)`` int64, ``PAD_ID`` after each sequence's end; ``L`` the longest.
        lengths: ``(N,)`` int64, each >= 1.
        labels: ``(N,)`` int64, or None.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor | None = None

    @property
    def mask(self) -> torch.Tensor:
        """``(N, L)`` bool, True on real tokens."""
        return padding_mask(self.lengths, self.tokens.shape[1])


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``(N,)`` lengths -> ``(N, max_len)`` bool, True where ``t < lengths[n]``."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def pad_sequences(seqs: Sequence[np.ndarray | Sequence[int]], labels: Sequence[int] | None = None
                  ) -> TokenBatch:
    """Right-pad id sequences with ``PAD_ID`` into one ``(N, L)`` tensor.

    Raises:
        UserError: no sequences, or an empty one (a sentence needs at least one word).
    """
    if not seqs:
        raise UserError("no sequences to pad")
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    if (lengths == 0).any():
        raise UserError(f"sequence {int(np.argmax(lengths == 0))} is empty; a sentence needs at "
                        "least one word")
    tokens = np.full((len(seqs), int(lengths.max())), PAD_ID, dtype=np.int64)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = s
    return TokenBatch(torch.from_numpy(tokens), torch.from_numpy(lengths),
                      None if labels is None else torch.as_tensor(np.asarray(labels),
                                                                  dtype=torch.int64))


def encode_split(split: TextSplit, vocab: Vocabulary) -> TokenBatch:
    """A whole split as one padded batch (SST's longest sentence has 56 words)."""
    return pad_sequences([vocab.encode(t) for t in split.tokens], split.labels)
