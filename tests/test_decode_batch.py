"""The native decode loop (Session.decode: draw, run, draw ... in one call, GIL released) gives
exactly the token ids, text, finish reasons and cache contents of the one-call-per-token path,
and refuses bad arguments with clear errors.

    pytest tests/test_decode_batch.py -q
"""
import datetime as dt

import numpy as np
import pytest

from _runtime_util import random_arch
from bulletd import kernels
from bulletd.errors import ModelError
from bulletd.format import write_bullet
from bulletd.format.synth import byte_vocab, random_lm_tensors, write_random_lm
from bulletd.runtime import GenerationSettings, load_model

pytestmark = pytest.mark.skipif(kernels.native_sampler() is None,
                                reason=f"native module not built: {kernels.native_error()}")

ARCH = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=96, vocab_size=300, max_seq_len=48)


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    p = tmp_path_factory.mktemp("dec") / "m.bullet"
    write_random_lm(p, random_arch(**ARCH), seed=3, dtype="bq4", name="m")
    return p


def _run(path, monkeypatch, mode, prompt, **kw):
    """Generate with `mode`: batched (native decode), per_token (native sampler, one forward call
    per token) or numpy (NumPy sampler, one forward call per token)."""
    with monkeypatch.context() as mp:
        if mode == "numpy":
            mp.setenv("BULLET_SAMPLER", "numpy")
        if mode != "batched":
            mp.setattr(kernels.NativeSession, "has_decode", property(lambda self: False))
        m = load_model(path, backend="native")
        s = m.new_session()
        g = m.generate(prompt, GenerationSettings(**kw), session=s)
        pieces = list(g)
        out = dict(tokens=g.tokens, text=g.text, joined="".join(pieces), reason=g.finish_reason,
                   cached=list(s.tokens))
        m.close()
        return out


SETTINGS = [
    dict(max_tokens=40, temperature=0.0),
    dict(max_tokens=40, temperature=0.8, top_k=40, top_p=0.95, repetition_penalty=1.1, seed=1),
    dict(max_tokens=47, temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.5, seed=2),
    dict(max_tokens=1, temperature=0.7, seed=3),
    dict(max_tokens=3, temperature=0.7, seed=3),
    dict(max_tokens=17, temperature=1.3, top_k=5, seed=4),
    dict(max_tokens=40, temperature=0.9, seed=5, stop=["e", "ab"]),
    # not streaming: every native batch is _MAX_BATCH tokens from the first one
    dict(max_tokens=40, temperature=0.8, top_k=40, top_p=0.95, repetition_penalty=1.1, seed=1, stream=False),
    dict(max_tokens=40, temperature=0.9, seed=5, stop=["e", "ab"], stream=False),
    dict(max_tokens=3, temperature=0.0, stream=False),
]


@pytest.mark.parametrize("kw", SETTINGS, ids=[f"s{i}" for i in range(len(SETTINGS))])
@pytest.mark.parametrize("prompt", ["hello there", "x" * 44])   # the second leaves 4 free positions
def test_batched_decode_equals_one_call_per_token(path, monkeypatch, kw, prompt):
    batched = _run(path, monkeypatch, "batched", prompt, **kw)
    per_token = _run(path, monkeypatch, "per_token", prompt, **kw)
    numpy = _run(path, monkeypatch, "numpy", prompt, **kw)
    # a batch may have run tokens past a stop string (wasted work, still valid cache entries)
    cb, cp = batched.pop("cached"), per_token.pop("cached")
    assert cp == numpy.pop("cached")
    assert batched == per_token == numpy
    assert cb[:len(cp)] == cp
    if batched["reason"] != "stop":
        assert cb == cp
    assert batched["joined"] == batched["text"]
    if len(prompt) > 40:
        assert batched["reason"] in ("length", "eos", "stop")


def test_context_end_and_stop_id_in_the_middle_of_a_batch(tmp_path, monkeypatch):
    arch = random_arch(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, hidden_dim=64, vocab_size=300, max_seq_len=40)
    tensors = random_lm_tensors(arch, seed=7, dtype="f32")
    kw = dict(kind="lm", arch=arch, tensors=tensors, vocab=byte_vocab(300),
              provenance={"name": "e", "version": "1", "created": dt.datetime(2026, 1, 1).isoformat()})
    write_bullet(tmp_path / "a.bullet", tokenizer={"kind": "bpe", "bos_id": 1, "eos_id": 2}, **kw)
    greedy = dict(max_tokens=39, temperature=0, repetition_penalty=1.0)
    full = _run(tmp_path / "a.bullet", monkeypatch, "batched", "ab", **greedy)
    # greedy runs to the end of the context: 40 positions, 3 prompt tokens -> 38 draws
    assert full["reason"] == "length" and len(full["tokens"]) == 40 - 3 + 1
    assert full == _run(tmp_path / "a.bullet", monkeypatch, "per_token", "ab", **greedy)
    # the 10th generated token (new at that point) declared end-of-sequence: batches of 1, 2, 4, 8 ->
    # it is drawn in the middle of the fourth batch
    k = next(i for i in range(9, len(full["tokens"])) if full["tokens"][i] not in full["tokens"][:i])
    write_bullet(tmp_path / "b.bullet", tokenizer={"kind": "bpe", "bos_id": 1, "eos_id": full["tokens"][k]}, **kw)
    b = _run(tmp_path / "b.bullet", monkeypatch, "batched", "ab", **greedy)
    assert b["reason"] == "eos" and b["tokens"] == full["tokens"][:k]
    assert b == _run(tmp_path / "b.bullet", monkeypatch, "per_token", "ab", **greedy)


def test_cache_after_a_batched_generation_is_what_session_tokens_says(path):
    m = load_model(path, backend="native")
    s = m.new_session()
    g = m.generate("once upon", GenerationSettings(max_tokens=30, temperature=0.9, seed=8, stop=["q"]), session=s)
    list(g)
    cached = list(s.tokens)
    assert cached[:len(g.prompt_tokens)] == g.prompt_tokens
    assert len(cached) >= len(g.prompt_tokens) + len(g.tokens) - 1
    # the next position computed on that cache equals a fresh session run over the same ids
    a = s.forward(5, len(cached))
    b = m.new_session().prefill(cached + [5], 0)
    assert np.abs(a - b).max() <= 1e-3 * max(1.0, np.abs(b).max())
    m.close()


def _raw(path):
    m = load_model(path, backend="native")
    s = m.new_session()
    logits = s.prefill([1, 5, 6], 0)
    return m, s, np.array(logits, dtype=np.float32)


def test_decode_draws_runs_and_leaves_the_last_draw_pending(path):
    m, s, logits = _raw(path)
    none = np.zeros(0, np.int64)
    toks, end, pos = s._impl.decode(logits, -1, 3, 5, np.zeros(5), none, 0.0, 0, 1.0, 1.0, none)
    assert end == "count" and len(toks) == 5 and pos == 3 + 4
    # greedy by hand on another session of another model object: argmax, run, argmax ...
    ref = load_model(path, backend="native")
    r2 = ref.new_session()
    lg = r2.prefill([1, 5, 6], 0)
    want, p = [], 3
    for i in range(5):
        t = int(np.argmax(lg))
        want.append(t)
        if i < 4:
            lg = r2.forward(t, p)
            p += 1
    assert toks == want
    # the pending token runs first in the next call
    toks2, end2, pos2 = s._impl.decode(logits, toks[-1], pos, 2, np.zeros(2), none, 0.0, 0, 1.0, 1.0, none)
    lg = r2.forward(want[-1], p)
    assert toks2[0] == int(np.argmax(lg)) and pos2 == pos + 2
    m.close()
    ref.close()


@pytest.mark.parametrize("bad,match", [
    (dict(logits=np.zeros(299, np.float32)), "writable float32 array of 300 values"),
    (dict(logits=np.zeros(300, np.float64)), "incompatible function arguments|writable float32"),
    (dict(pending=300), "pending token id out of range"),
    (dict(n=-1), "n must be in"),
    (dict(coins=np.zeros(2)), "coins must hold n values"),
    (dict(coins=np.ones(4), temperature=0.5), r"coins must lie in \[0, 1\)"),
    (dict(temperature=-1.0), "temperature >= 0"),
    (dict(top_p=0.0), "top_p > 0"),
    (dict(pos=60), "outside the context"),
    (dict(pos=9), "skips positions"),
])
def test_decode_refuses_bad_arguments(path, bad, match):
    m, s, logits = _raw(path)
    args = dict(logits=logits, pending=-1, pos=3, n=4, coins=np.zeros(4), seen=np.zeros(0, np.int64),
                temperature=0.0, top_k=0, top_p=1.0, penalty=1.0, stop_ids=np.array([2], np.int64))
    args.update(bad)
    if "pos" in bad:
        args["pending"] = 7          # running a token at a bad position is what fails
    with pytest.raises(ModelError, match=match):
        s._impl.decode(**args)
    # the logits are written in place: anything that would need a converted copy is refused
    for other in (np.zeros(600, np.float32)[::2], list(logits), logits.astype(np.float16)):
        with pytest.raises(ModelError, match="incompatible function arguments"):
            s._impl.decode(other, -1, 3, 1, np.zeros(1), np.zeros(0, np.int64), 0.0, 0, 1.0, 1.0,
                           np.zeros(0, np.int64))
    ro = logits.copy()
    ro.flags.writeable = False
    with pytest.raises(ModelError, match="writable"):
        s._impl.decode(ro, -1, 3, 1, np.zeros(1), np.zeros(0, np.int64), 0.0, 0, 1.0, 1.0, np.zeros(0, np.int64))
    # the session still works after every refusal
    toks, end, _ = s._impl.decode(logits, -1, 3, 2, np.zeros(2), np.zeros(0, np.int64), 0.0, 0, 1.0, 1.0,
                                  np.zeros(0, np.int64))
    assert end == "count" and len(toks) == 2
    m.close()


def test_non_finite_logits_end_the_batch(path):
    m, s, logits = _raw(path)
    logits[7] = np.nan
    toks, end, pos = s._impl.decode(logits, -1, 3, 4, np.full(4, 0.5), np.zeros(0, np.int64), 0.8, 0, 1.0, 1.0,
                                    np.zeros(0, np.int64))
    assert (toks, end, pos) == ([], "nonfinite", 3)
    m.close()


@pytest.mark.parametrize("kw, sizes", [
    (dict(stream=True), [1, 4, 16, 19]),
    (dict(stream=False), [1, 16, 23]),                        # nobody sees a token before the end
    (dict(stream=False, stop=["\x00never"]), [1, 4, 16, 19]),   # a stop string may end it early
])
def test_batch_sizes_first_one_token_then_grow_or_jump(path, monkeypatch, kw, sizes):
    """The first native batch is one token (so ttft_s times one token); then batches grow 4x a call
    while streaming or with stop strings, and otherwise take 16 while the speed is unknown, then as many
    as fit the time budget (here a budget no call fills: up to _MAX_BATCH)."""
    from bulletd.runtime import model as M
    monkeypatch.setattr(M, "_BATCH_S", 1000.0)
    asked = []
    real = kernels.NativeSession.decode

    def spy(self, logits, pending, pos, n, *rest):
        asked.append(n)
        return real(self, logits, pending, pos, n, *rest)

    monkeypatch.setattr(kernels.NativeSession, "decode", spy)
    m = load_model(path, backend="native")
    g = m.generate("hi", GenerationSettings(max_tokens=40, temperature=0.8, seed=1, **kw))
    "".join(g)
    assert len(g.tokens) == 40 and g.finish_reason == "length"
    assert asked == sizes
    m.close()


def test_batches_hold_about_the_time_budget_of_work():
    """After the first calls, a batch holds _BATCH_S of work at the speed the last call ran,
    between 1 and _MAX_BATCH tokens; while streaming it grows at most 4x per call."""
    from bulletd.runtime.model import _BATCH_S, _FIRST_BATCH, _MAX_BATCH, _next_batch
    per_token = _BATCH_S / 40                              # a call of 10 tokens took a quarter of the budget
    assert _next_batch(16, False, 10 * per_token, 10) == 40
    assert _next_batch(4, True, 10 * per_token, 10) == 16     # streaming: 4x at most
    assert _next_batch(16, True, 10 * per_token, 10) == 40
    assert _next_batch(16, False, 1e-9, 10) == _MAX_BATCH     # a fast child: capped
    assert _next_batch(16, False, 100 * _BATCH_S, 10) == 1    # a slow one: one token a call
    assert _next_batch(1, False, 0.0, 0) == _FIRST_BATCH      # nothing ran yet: speed unknown
    assert _next_batch(1, True, 0.0, 0) == 4
