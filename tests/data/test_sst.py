"""SST-5 reader: the official split sizes and label counts (../shared/data/README.md, from Socher et
al. 2013), phrases, the tree parser on hand-made trees, malformed lines naming file and line,
vocabulary from training only, padding masks."""

import tarfile

import numpy as np
import pytest
import torch

from cnnlab.data.sst import (
    PAD_ID,
    UNK_ID,
    Vocabulary,
    encode_split,
    find_sst,
    load_sst,
    pad_sequences,
    parse_tree,
)
from cnnlab.errors import DataError, DataNotFoundError, UserError


def _real_source():
    try:
        return find_sst()
    except DataNotFoundError:
        return None


REAL = _real_source()
needs_sst = pytest.mark.skipif(REAL is None, reason="sst-trees.tar.gz not found (set CNNLAB_DATA)")


@pytest.fixture(scope="module")
def sst():
    return load_sst(REAL)


@needs_sst
def test_official_split_sizes_and_label_counts(sst):
    assert (len(sst.train), len(sst.dev), len(sst.test)) == (8544, 1101, 2210)
    # ../shared/data/README.md: sentence label counts 0/1/2/3/4
    assert np.bincount(sst.train.labels).tolist() == [1092, 2218, 1624, 2322, 1288]
    assert np.bincount(sst.test.labels).tolist() == [279, 633, 389, 510, 399]
    assert sst.train.tokens[0][:3] == ("the", "rock", "is")  # lower-cased by default
    assert sst.info()["num_test"] == 2210 and sst.train_on == "sentences"


@needs_sst
def test_phrases_add_training_phrases_only(sst):
    ph = load_sst(REAL, phrases=True)
    assert ph.train_on == "phrases"
    # README: about 150k labelled phrases in train (distinct phrases, sentences included)
    assert 140_000 < len(ph.train) < 170_000
    phrase_label = dict(zip(ph.train.tokens, ph.train.labels.tolist(), strict=True))
    for words, label in zip(sst.train.tokens[:200], sst.train.labels[:200], strict=True):
        assert phrase_label[words] == label  # every sentence is in, with its own label
    assert ph.test.tokens == sst.test.tokens  # test stays whole sentences
    assert np.array_equal(ph.test.labels, sst.test.labels)
    assert ph.train_sentences.tokens == sst.train.tokens


def test_parse_tree_words_labels_and_spans():
    t = parse_tree("(3 (2 It) (4 (2 works) (3 well)))")
    assert t.words == ("It", "works", "well") and t.label == 3
    assert set(t.spans) == {(2, 0, 1), (2, 1, 2), (3, 2, 3), (4, 1, 3), (3, 0, 3)}
    # a word may hold a no-break space (SST's film title "8 1/2"): one token, not two
    assert parse_tree("(2 (2 8\u00a01\\/2) (2 .))").words == ("8\u00a01\\/2", ".")


@pytest.mark.parametrize("line,msg", [
    ("(3 (2 It) (4 works)", r"unbalanced brackets: 1 '\(' not closed"),
    ("(3 (2 It) (4 works)))", r"unbalanced brackets: '\)' without a matching '\('"),
    ("(3 (2 It) (5 works))", r"label '5' is outside 0-4"),
    ("(3 (2 It) (-1 works))", r"label '-1' is outside 0-4"),
    ("(x (2 It))", r"label 'x' is outside 0-4"),
    ("(3 (2 It) (2 a b))", r"word 'b' beside other words"),
    ("(3 (2 a)) (2 b)", "text after the end of the tree"),
    ("(3 ())", r"'\(' must be followed by a label"),
])
def test_malformed_tree_is_one_data_error(line, msg):
    with pytest.raises(DataError, match="^here: " + msg):
        parse_tree(line, "here")


def _write(folder, train, dev="(2 (2 ok))", test="(1 (1 bad))"):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("train", train), ("dev", dev), ("test", test)):
        (folder / f"{name}.txt").write_text(text + "\n", encoding="utf-8")
    return folder


def test_malformed_line_names_file_and_line(tmp_path):
    folder = _write(tmp_path / "sst", "(2 (2 a))\n(4 (4 b))\n(3 (2 c) (9 d))")
    with pytest.raises(DataError, match=r"sst/train.txt line 3: label '9' is outside 0-4"):
        load_sst(tmp_path)
    with tarfile.open(tmp_path / "sst-trees.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="sst")
    archive = tmp_path / "sst-trees.tar.gz"
    with pytest.raises(DataError, match=r"sst-trees.tar.gz:sst/train.txt line 3: label '9'"):
        load_sst(archive)


def test_missing_data_says_where_it_looked(tmp_path):
    with pytest.raises(DataNotFoundError, match=rf"SST-5 not found \(looked in: {tmp_path}\)"):
        find_sst(tmp_path)
    (tmp_path / "sst-trees.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(DataError, match="not a readable tar archive"):
        load_sst(tmp_path)


def test_vocabulary_from_training_only_and_unknown_words(tmp_path):
    _write(tmp_path, "(3 (2 A) (3 (3 good) (2 film)))\n(1 (2 a) (1 (1 bad) (2 film)))",
           test="(1 (1 (2 unseen) (2 film)))")
    data = load_sst(tmp_path)
    vocab = Vocabulary.build(data.train.tokens)
    # pad, unk, then by frequency (film 2, a 2 after lower-casing), ties alphabetical
    assert vocab.words == ("<pad>", "<unk>", "a", "film", "bad", "good")
    assert vocab.encode(data.test.tokens[0]).tolist() == [UNK_ID, vocab.words.index("film")]
    assert Vocabulary.build(data.train.tokens, min_freq=2).words == ("<pad>", "<unk>", "a", "film")
    tokens, ids = vocab.encode_text("  Good  unseen ")
    assert tokens == ("good", "unseen") and ids.tolist() == [5, UNK_ID]
    with pytest.raises(UserError, match="^the sentence is empty"):
        vocab.encode_text("   ")
    with pytest.raises(UserError, match=r"^every word of 'xyz qq' is unknown to the vocabulary"):
        vocab.encode_text("xyz qq")


def test_padding_and_mask():
    b = pad_sequences([np.array([5, 6, 7]), np.array([8])], labels=[1, 2])
    assert b.tokens.tolist() == [[5, 6, 7], [8, PAD_ID, PAD_ID]]
    assert b.lengths.tolist() == [3, 1] and b.labels.tolist() == [1, 2]
    assert b.mask.tolist() == [[True, True, True], [True, False, False]]
    assert b.tokens.dtype == torch.int64
    with pytest.raises(UserError, match="sequence 1 is empty"):
        pad_sequences([[1], []])


@needs_sst
def test_encoded_test_split(sst):
    vocab = Vocabulary.build(sst.train.tokens)
    batch = encode_split(sst.test, vocab)
    assert batch.tokens.shape == (2210, 56)  # SST's longest test sentence has 56 words
    assert (batch.tokens[batch.mask] != PAD_ID).all() and (batch.tokens[~batch.mask] == 0).all()
    # unknown ids exactly where a test word never occurs in the training sentences (5.2%)
    seen = {w for s in sst.train.tokens for w in s}
    expected = [w not in seen for s in sst.test.tokens for w in s]
    assert (batch.tokens[batch.mask] == UNK_ID).tolist() == expected and any(expected)
