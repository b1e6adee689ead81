"""The BULK tokenizer: encoding rule, byte fallback, streaming decode of split UTF-8."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulletd.format import TOKEN_BYTE, TOKEN_CONTROL, TOKEN_NORMAL, Tokenizer, VocabEntry, router_features
from bulletd.format.synth import byte_vocab


def _vocab(pieces):
    v = [VocabEntry(b"<s>", 0.0, TOKEN_CONTROL), VocabEntry(b"</s>", 0.0, TOKEN_CONTROL)]
    v += [VocabEntry(bytes([b]), 0.0, TOKEN_BYTE) for b in range(256)]
    v += [VocabEntry(p.encode(), -float(i), TOKEN_NORMAL) for i, p in enumerate(pieces)]
    return v


def test_merges_follow_highest_score_and_stay_inside_chunks():
    pieces = ["a", "b", " ", "ab", " a", " ab", "abab"]
    tok = Tokenizer(_vocab(pieces), {"bos_id": 0, "eos_id": 1})
    ids = tok.encode("ab abab", bos=False)
    assert [tok.vocab[i].piece for i in ids] == [b"ab", b" ab", b"ab"]
    assert tok.encode("ab", bos=True)[0] == 0
    assert tok.encode("ab", bos=False, eos=True)[-1] == 1


def test_byte_fallback_encodes_anything():
    tok = Tokenizer(_vocab(["a"]), {"bos_id": 0})
    text = "a€\x00नमस्ते"
    ids = tok.encode(text, bos=False)
    assert tok.decode(ids) == text
    assert all(tok.vocab[i].type in (TOKEN_NORMAL, TOKEN_BYTE) for i in ids)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_round_trip_any_text(text):
    tok = Tokenizer(byte_vocab(600), {"bos_id": 1, "eos_id": 2})
    assert tok.decode(tok.encode(text, bos=True)) == text


def test_stream_decoder_never_emits_half_a_character():
    tok = Tokenizer(_vocab([]), {})
    text = "नमस्ते जग"
    out = []
    dec = tok.stream_decoder()
    for i in tok.encode(text, bos=False):
        s = dec.push(i)
        out.append(s)
        assert "\ufffd" not in s
    assert "".join(out) + dec.flush() == text
    assert sum(1 for s in out if s == "") > 0   # some bytes were held back


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 260), max_size=30), st.lists(st.integers(1, 6), min_size=1, max_size=8),
       st.booleans())
def test_push_many_is_pushing_one_at_a_time(ids, cuts, prefix):
    """Any ids (control tokens, raw bytes that split or break UTF-8, pieces with a leading space),
    cut into groups anywhere: push_many gives the same text, and leaves the same state."""
    tok = Tokenizer(_vocab([" a", "नम", " "]), {"add_dummy_prefix": prefix})
    one = tok.stream_decoder()
    want = "".join(one.push(i) for i in ids)
    many = tok.stream_decoder()
    got, k, c = [], 0, 0
    while k < len(ids):
        n = cuts[c % len(cuts)]
        got.append(many.push_many(ids[k:k + n]))
        k, c = k + n, c + 1
    assert "".join(got) == want
    assert many.push_many([]) == ""
    again = tok.stream_decoder()                 # any iterable, read once
    assert again.push_many(i for i in ids) == want
    tail = tok.encode(" aन", bos=False)       # the states match: the same text follows
    assert many.push_many(tail) + many.flush() == "".join(one.push(i) for i in tail) + one.flush()


def test_push_many_names_a_bad_id():
    dec = Tokenizer(_vocab([]), {}).stream_decoder()
    for bad in ([5, 10 ** 6], [-1]):
        with pytest.raises(Exception, match="out of range"):
            dec.push_many(bad)


def test_dummy_prefix_is_added_and_stripped():
    tok = Tokenizer(_vocab([" hi", "hi"]), {"add_dummy_prefix": True})
    ids = tok.encode("hi", bos=False)
    assert [tok.vocab[i].piece for i in ids] == [b" hi"]
    assert tok.decode(ids) == "hi"


def test_bad_ids_and_metadata():
    tok = Tokenizer(_vocab([]), {})
    with pytest.raises(Exception, match="out of range"):
        tok.decode([10 ** 6])
    with pytest.raises(Exception, match="bos_id"):
        Tokenizer(_vocab([]), {"bos_id": 99999})
    with pytest.raises(TypeError):
        tok.encode(b"bytes")


def test_router_features_are_normalised_and_deterministic():
    a = router_features("Hello World", 512)
    b = router_features("hello   world", 512)
    assert a.shape == (512,) and abs(float((a * a).sum()) - 1.0) < 1e-5
    assert (a == b).all()
    assert float(a @ router_features("नमस्ते", 512)) < 0.5


def test_lone_surrogates_are_a_bad_request_not_a_unicode_error():
    """A JSON "\\udcff" escape or an undecodable command-line byte: no UTF-8 exists for it."""
    from bulletd.errors import RequestError
    from bulletd.format.synth import byte_vocab
    tok = Tokenizer(byte_vocab(300), {"bos_id": 1})
    for text in ("\udcff", "ab \ud800 c", "नम\udc80"):
        with pytest.raises(RequestError, match="lone surrogate") as e:
            tok.encode(text)
        assert e.value.code == "bad_request"
    assert tok.decode(tok.encode("\U0001F600 ok", bos=False)) == "\U0001F600 ok"
