"""The BPE tokenizer trainer: exact size, determinism, byte fallback, Devanagari compression, and
agreement with the device-side bulletd.format.Tokenizer (the tokenization the model trains on
must be the one the runtime produces)."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulletd.format import TOKEN_BYTE, TOKEN_CONTROL, TOKEN_NORMAL
from trainer.bpe import BOS_ID, Vocab, chunks, train_bpe
from trainer.errors import ConfigError, DataError

TEXTS = ["the cat sat on the mat", "the cat ate the rat", "a mat for the cat", "नमस्कार, कसे आहात?",
         "मी ठीक आहे, धन्यवाद", "the  end\tof\nlines", "रात्र आहे"] * 5


@pytest.fixture(scope="module")
def marathi_sample(marathi_corpus):
    lines = marathi_corpus.read_text(encoding="utf-8").splitlines()
    return [json.loads(x)["text"] for x in lines[::5]]  # every fifth record: ~15k texts


@pytest.fixture(scope="module")
def marathi_vocab(marathi_sample):
    return train_bpe(marathi_sample[:-500], 1024)


def test_vocab_has_exact_size_and_layout():
    v = train_bpe(TEXTS, 300)
    assert len(v) == 300
    assert v.types[:3] == [TOKEN_CONTROL] * 3 and v.pieces[BOS_ID] == b"<s>"
    assert v.types[3:259] == [TOKEN_BYTE] * 256 and v.pieces[3 + 0x41] == b"A"
    assert set(v.types[259:]) == {TOKEN_NORMAL}
    merges = [s for s in v.scores[259:] if s > -1e6]
    assert merges == [-float(r) for r in range(len(merges))]  # score = -merge_rank
    assert b"the" in v.pieces or b" the" in v.pieces


def test_training_is_deterministic():
    a, b = train_bpe(TEXTS, 290), train_bpe(list(TEXTS), 290)
    assert a.pieces == b.pieces and a.scores == b.scores


def test_chunks_keep_leading_whitespace():
    assert chunks("  hello world\n x ") == ["  hello", " world", "\n x", " "]


def test_encode_roundtrip_and_byte_fallback_for_unseen_characters():
    v = train_bpe(TEXTS, 300)
    text = "zebra 🦓 ñandú — the cat"
    ids = v.encode(text)
    assert v.decode(ids) == text
    assert any(v.types[i] == TOKEN_BYTE for i in ids)  # the emoji went through byte tokens


def test_runtime_tokenizer_encodes_exactly_as_trained():
    v = train_bpe(TEXTS, 300)
    tok = v.runtime_tokenizer()
    for t in TEXTS + ["unseen words 🦓 here", "", "   ", "\n\nनमस्कार\tcat"]:
        assert tok.encode(t, bos=False) == v.encode(t), t
        assert tok.encode(t, bos=True) == [BOS_ID] + v.encode(t)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_any_text_encodes_identically_in_trainer_and_runtime(text):
    v = _HYP_VOCAB
    assert v.runtime_tokenizer().encode(text, bos=False) == v.encode(text)
    assert v.decode(v.encode(text)) == text


_HYP_VOCAB = train_bpe(TEXTS, 300)


def test_marathi_vocab_agrees_with_runtime_on_heldout_text(marathi_vocab, marathi_sample):
    tok = marathi_vocab.runtime_tokenizer()
    held = marathi_sample[-500:]
    for t in held:
        assert tok.encode(t, bos=False) == marathi_vocab.encode(t)


def test_marathi_vocab_compresses_devanagari(marathi_vocab, marathi_sample):
    held = marathi_sample[-500:]
    n_tok = sum(len(marathi_vocab.encode(t)) for t in held)
    n_bytes = sum(len(t.encode()) for t in held)
    n_chars = sum(len(t) for t in held)
    # each Devanagari character is 3 bytes; a useful vocabulary packs several characters per token
    assert n_bytes / n_tok > 5.0, n_bytes / n_tok
    assert n_chars / n_tok > 2.0
    assert sum(marathi_vocab.types[i] == TOKEN_BYTE for t in held for i in marathi_vocab.encode(t)) < 0.01 * n_tok


def test_vocab_json_roundtrip(tmp_path):
    v = train_bpe(TEXTS, 280)
    v.save(tmp_path / "tok.json")
    w = Vocab.load(tmp_path / "tok.json")
    assert w.pieces == v.pieces and w.scores == v.scores and w.types == v.types
    assert w.encode("the cat") == v.encode("the cat")


def test_bad_tokenizer_file_is_a_clear_error(tmp_path):
    (tmp_path / "t.json").write_text('{"format": "other"}')
    with pytest.raises(ConfigError, match="format is 'other', expected 'bullet-bpe-1'"):
        Vocab.load(tmp_path / "t.json")
    with pytest.raises(ConfigError, match="does not exist"):
        Vocab.load(tmp_path / "missing.json")


def test_vocab_too_small_is_rejected():
    with pytest.raises(ConfigError, match="vocab_size 259 leaves no room for text pieces"):
        train_bpe(TEXTS, 259)


def test_empty_corpus_is_rejected():
    with pytest.raises(DataError, match="empty corpus"):
        train_bpe([], 300)


def test_small_corpus_stops_when_pairs_run_out():
    v = train_bpe(["ab ab"], 400)
    assert len(v) < 400  # the caller (the trainer) turns this into a config error
    assert v.encode("ab ab") == [v.pieces.index(b"ab"), v.pieces.index(b" ab")]


def test_token_bytes_count_text_bytes():
    v = train_bpe(TEXTS, 300)
    tb = np.array(v.token_bytes())
    ids = v.encode("नमस्कार the cat")
    assert tb[ids].sum() == len("नमस्कार the cat".encode())
