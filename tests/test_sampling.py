"""Sampling and generation settings: greedy, seeds, top-k / top-p masks, repetition penalty,
validation errors, stop strings (including ones split across tokens).

    pytest tests/test_sampling.py -q
"""
import math

import numpy as np
import pytest

from _runtime_util import random_arch
from bulletd.daemon.protocol import wire_error
from bulletd.errors import BadSettings
from bulletd.format.synth import write_random_lm
from bulletd.runtime import GenerationSettings, Sampler, load_model
from bulletd.runtime.model import _scan_stops
from bulletd.runtime.sampling import apply_repetition_penalty, top_k_mask, top_p_mask


def S(**kw):
    return GenerationSettings(**kw).validate()


LOGITS = np.array([1.0, 3.0, -2.0, 2.5, 0.0, 3.0, -1.0], dtype=np.float32)


def test_greedy_is_argmax_with_first_index_on_ties():
    s = Sampler(S(temperature=0, repetition_penalty=1.0))
    assert s.sample(LOGITS) == 1                   # 3.0 at ids 1 and 5: the first wins
    rng = np.random.default_rng(0)
    for _ in range(50):
        z = rng.standard_normal(1000).astype(np.float32)
        assert s.sample(z) == int(np.argmax(z))


def test_greedy_probabilities_are_one_hot():
    p = Sampler(S(temperature=0, repetition_penalty=1.0)).probabilities(LOGITS)
    assert p.tolist() == [0, 1, 0, 0, 0, 0, 0]


def test_same_seed_repeats_and_other_seed_differs():
    z = np.random.default_rng(1).standard_normal(500).astype(np.float32)
    draw = lambda seed: [Sampler(S(temperature=1.0, top_k=0, top_p=1.0, seed=seed)).sample(z) for _ in range(1)]
    a = Sampler(S(temperature=1.0, top_k=0, top_p=1.0, seed=123))
    b = Sampler(S(temperature=1.0, top_k=0, top_p=1.0, seed=123))
    c = Sampler(S(temperature=1.0, top_k=0, top_p=1.0, seed=124))
    sa = [a.sample(z) for _ in range(40)]
    assert sa == [b.sample(z) for _ in range(40)]
    assert sa != [c.sample(z) for _ in range(40)]
    assert draw(5) == draw(5)


def test_sampling_follows_the_softmax_distribution():
    z = np.log(np.array([0.5, 0.3, 0.2], dtype=np.float64)).astype(np.float32)
    s = Sampler(S(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0, seed=0))
    counts = np.bincount([s.sample(z) for _ in range(4000)], minlength=3) / 4000
    np.testing.assert_allclose(counts, [0.5, 0.3, 0.2], atol=0.03)


def test_temperature_sharpens_and_flattens():
    z = np.array([2.0, 1.0, 0.0])
    cold = Sampler(S(temperature=0.5, top_k=0, top_p=1.0, repetition_penalty=1.0)).probabilities(z)
    hot = Sampler(S(temperature=2.0, top_k=0, top_p=1.0, repetition_penalty=1.0)).probabilities(z)
    e = np.exp([4.0, 2.0, 0.0])
    np.testing.assert_allclose(cold, e / e.sum(), rtol=1e-12)
    assert hot[0] < cold[0] and hot[2] > cold[2]


def test_top_k_keeps_exactly_the_k_largest():
    assert top_k_mask(LOGITS, 2).tolist() == [False, True, False, False, False, True, False]
    assert top_k_mask(LOGITS, 3).tolist() == [False, True, False, True, False, True, False]
    assert top_k_mask(LOGITS, 0).all() and top_k_mask(LOGITS, 99).all()
    p = Sampler(S(temperature=1.0, top_k=2, top_p=1.0, repetition_penalty=1.0)).probabilities(LOGITS)
    assert np.nonzero(p)[0].tolist() == [1, 5] and math.isclose(p.sum(), 1.0)
    s = Sampler(S(temperature=5.0, top_k=3, top_p=1.0, repetition_penalty=1.0, seed=3))
    assert {s.sample(LOGITS) for _ in range(300)} == {1, 3, 5}


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = np.array([0.1, 0.4, 0.05, 0.3, 0.15])
    assert np.nonzero(top_p_mask(probs, 0.5))[0].tolist() == [1, 3]          # 0.4 + 0.3 >= 0.5
    assert np.nonzero(top_p_mask(probs, 0.7))[0].tolist() == [1, 3]          # exactly reaches 0.7
    assert np.nonzero(top_p_mask(probs, 0.71))[0].tolist() == [1, 3, 4]
    assert np.nonzero(top_p_mask(probs, 0.01))[0].tolist() == [1]             # at least one
    assert top_p_mask(probs, 1.0).all()
    z = np.log(probs)
    s = Sampler(S(temperature=1.0, top_k=0, top_p=0.5, repetition_penalty=1.0, seed=9))
    p = s.probabilities(z)
    np.testing.assert_allclose(p, [0, 0.4 / 0.7, 0, 0.3 / 0.7, 0], rtol=1e-6)
    assert {s.sample(z) for _ in range(300)} == {1, 3}


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    z = np.array([2.0, -1.0, 0.5, 3.0])
    out = apply_repetition_penalty(z, [0, 1, 1, 1], 2.0)       # repeats count once
    assert out.tolist() == [1.0, -2.0, 0.5, 3.0]
    assert z.tolist() == [2.0, -1.0, 0.5, 3.0]                 # input untouched
    assert apply_repetition_penalty(z, [0, 1], 1.0).tolist() == z.tolist()


def test_repetition_penalty_changes_the_greedy_choice():
    z = np.array([2.0, 1.5, 0.0])
    assert Sampler(S(temperature=0, repetition_penalty=1.0)).sample(z, seen=[0]) == 0
    assert Sampler(S(temperature=0, repetition_penalty=1.5)).sample(z, seen=[0]) == 1
    p0 = Sampler(S(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0)).probabilities(z, [0])
    p1 = Sampler(S(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.3)).probabilities(z, [0])
    assert p1[0] < p0[0]


@pytest.mark.parametrize("kw,msg", [
    (dict(temperature=-0.1), "temperature must be between 0 and 100"),
    (dict(temperature=1e9), "temperature must be between 0 and 100"),
    (dict(temperature=float("nan")), "temperature must be finite"),
    (dict(temperature="hot"), "temperature must be a number, got str"),
    (dict(temperature=True), "temperature must be a number, got bool"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\], got 0"),
    (dict(top_p=1.5), r"top_p must be in \(0, 1\], got 1.5"),
    (dict(top_k=-1), "top_k must be 0 .* got -1"),
    (dict(top_k=2.5), "top_k must be an integer, got 2.5"),
    (dict(max_tokens=0), "max_tokens must be between 1 and"),
    (dict(max_tokens="10"), "max_tokens must be an integer, got str"),
    (dict(repetition_penalty=0), r"repetition_penalty must be in \(0, 10\]"),
    (dict(repetition_penalty=float("inf")), "repetition_penalty must be finite"),
    (dict(seed=-1), "seed must be between 0 and 2\\*\\*64-1"),
    (dict(seed="x"), "seed must be an integer"),
    (dict(stop=[""]), r"stop\[0\] must have 1 to 256 characters"),
    (dict(stop=["ok", 3]), r"stop\[1\] must be a string, got int"),
    (dict(stop=["x"] * 17), "at most 16 stop strings"),
    (dict(stop=5), "stop must be a list of strings"),
    (dict(stream="yes"), "stream must be true or false"),
])
def test_absurd_settings_are_bad_requests(kw, msg):
    with pytest.raises(BadSettings, match=msg) as e:
        GenerationSettings(**kw).validate()
    assert e.value.field == next(iter(kw))
    assert wire_error(e.value).code == "bad_request"


def test_max_tokens_beyond_the_context_is_a_bad_request():
    with pytest.raises(BadSettings, match="max_tokens must be between 1 and the model's context of 64") as e:
        GenerationSettings(max_tokens=65).validate(context=64)
    assert wire_error(e.value).code == "bad_request"
    assert GenerationSettings(max_tokens=64).validate(context=64).max_tokens == 64


def test_from_dict_rejects_unknown_keys_and_normalises():
    with pytest.raises(BadSettings, match="unknown generation setting.*temprature"):
        GenerationSettings.from_dict({"temprature": 0.5})
    s = GenerationSettings.from_dict({"max_tokens": 8.0, "stop": "END", "seed": 3})
    assert s.max_tokens == 8 and isinstance(s.max_tokens, int) and s.stop == ("END",)


def test_scan_stops_finds_the_earliest_and_holds_back_partial_matches():
    assert _scan_stops("hello wor", 0, ("world",)) == (None, 3)      # "wor" may become "world"
    assert _scan_stops("hello world!", 0, ("world",)) == (6, 0)
    assert _scan_stops("a END b STOP", 0, ("STOP", "END")) == (2, 0)
    assert _scan_stops("abc", 0, ("xyz",)) == (None, 0)
    assert _scan_stops("abcab", 3, ("abd",)) == (None, 2)


# -- stop strings through a real model --------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    p = tmp_path_factory.mktemp("samp") / "tiny.bullet"
    write_random_lm(p, random_arch(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, hidden_dim=64,
                                   vocab_size=300, max_seq_len=96), seed=5, dtype="f32")
    return load_model(p, backend="numpy")


def _free_run(model, n=40):
    st = GenerationSettings(max_tokens=n, temperature=0.9, top_k=0, top_p=1.0, seed=11,
                            repetition_penalty=1.0)
    g = model.generate("hello there", st)
    pieces = list(g)
    return g, pieces


def test_stop_string_split_across_tokens_ends_generation_and_is_not_emitted(tiny_model):
    g, pieces = _free_run(tiny_model)
    full = g.text
    assert "".join(pieces) == full and g.finish_reason == "length"
    # per-token text deltas (as the stream decoder gives them), to find a token boundary
    tok = tiny_model.tokenizer
    dec = tok.stream_decoder()
    for t in g.prompt_tokens:
        dec.push(t)
    deltas = [dec.push(t) for t in g.tokens]
    boundary = None
    acc = 0
    for i in range(len(deltas) - 1):
        acc += len(deltas[i])
        if deltas[i] and deltas[i + 1] and acc >= 3:
            boundary = acc
            break
    assert boundary is not None, deltas
    assert full[:boundary] == "".join(deltas[:i + 1])         # char offsets line up with tokens
    stop = full[boundary - 1: boundary + 1]                  # last char of one token + first of next
    first = full.find(stop)
    st = GenerationSettings(max_tokens=40, temperature=0.9, top_k=0, top_p=1.0, seed=11,
                            repetition_penalty=1.0, stop=[stop])
    g2 = tiny_model.generate("hello there", st)
    pieces2 = list(g2)
    assert g2.finish_reason == "stop"
    assert g2.text == full[:first] == "".join(pieces2)
    assert stop not in g2.text


def test_text_that_only_looks_like_a_stop_prefix_is_released_at_the_end(tiny_model):
    g, _ = _free_run(tiny_model)
    full = g.text
    st = GenerationSettings(max_tokens=40, temperature=0.9, top_k=0, top_p=1.0, seed=11,
                            repetition_penalty=1.0, stop=[full[-1] + "\x00never"])
    g2 = tiny_model.generate("hello there", st)
    assert "".join(g2) == full and g2.finish_reason == "length"


def test_seeded_generation_repeats_exactly(tiny_model):
    a, _ = _free_run(tiny_model)
    b, _ = _free_run(tiny_model)
    assert a.tokens == b.tokens and a.text == b.text and len(a.tokens) == 40


def test_top_k_keeps_every_id_tied_with_the_kth_value():
    z = np.array([1.0, 2.0, 2.0, 2.0, 0.0], dtype=np.float32)
    assert np.nonzero(top_k_mask(z, 2))[0].tolist() == [1, 2, 3]


def test_unique_seen_array_gives_the_same_penalty_as_a_list():
    z = np.random.default_rng(3).standard_normal(50).astype(np.float32)
    seen = [3, 7, 7, 3, 49, 0]
    a = apply_repetition_penalty(z, seen, 1.3)
    b = apply_repetition_penalty(z, np.array([0, 3, 7, 49]), 1.3, unique=True)
    assert a.tolist() == b.tolist() and a[7] != z[7]


def test_draws_follow_probabilities_with_all_filters_on():
    z = np.random.default_rng(4).standard_normal(300).astype(np.float32) * 2
    seen = [3, 3, 10, 250]
    s = Sampler(S(temperature=0.7, top_k=6, top_p=0.8, repetition_penalty=1.2, seed=5))
    p = s.probabilities(z, seen)
    assert 1 <= np.count_nonzero(p) <= 6 and math.isclose(p.sum(), 1.0, rel_tol=1e-9)
    counts = np.bincount([s.sample(z, seen) for _ in range(6000)], minlength=300) / 6000
    assert set(np.nonzero(counts)[0]) <= set(np.nonzero(p)[0])
    np.testing.assert_allclose(counts, p, atol=0.03)
