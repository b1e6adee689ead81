"""Runtime: native vs NumPy reference on random models of several shapes, prefill vs token-by-token,
sessions (errors, prefix reuse, threads, cancel), the generate contract and its errors.

    pytest tests/test_runtime.py -q
"""
import datetime as dt
import threading

import numpy as np
import pytest

from _runtime_util import random_arch
from bulletd.daemon.protocol import wire_error
from bulletd.errors import BadPrompt, BadSettings, ContextOverflow, FormatError, ModelError
from bulletd.format import BulletFile, write_bullet
from bulletd.format.synth import byte_vocab, random_lm_tensors, write_random_lm
from bulletd.runtime import GenerationSettings, load_model
from bulletd.runtime.model import _native_kernels
from bulletd.runtime.reference import ReferenceModel

SHAPES = {
    # name: (arch kwargs, matrix dtype)
    "gqa-f32": (dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=96, vocab_size=300,
                     max_seq_len=40), "f32"),
    "mqa-untied-f16": (dict(dim=64, n_layers=2, n_heads=8, n_kv_heads=1, hidden_dim=160, vocab_size=509,
                            max_seq_len=24, tied=False), "f16"),
    "gqa-bq4": (dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=96, vocab_size=300,
                     max_seq_len=40), "bq4"),
    "hidden72-untied-bq4": (dict(dim=32, n_layers=3, n_heads=4, n_kv_heads=4, hidden_dim=72, vocab_size=777,
                                 max_seq_len=33, tied=False), "bq4"),
    "dim48-bq4": (dict(dim=48, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=80, vocab_size=301,
                       max_seq_len=20), "bq4"),
}


def _need_native():
    kernels, why = _native_kernels()
    if kernels is None:
        pytest.fail(f"the native backend is part of the runtime and must be built: {why}")
    return kernels


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("rt")
    out = {}
    for i, (name, (kw, dtype)) in enumerate(SHAPES.items()):
        p = d / f"{name}.bullet"
        write_random_lm(p, random_arch(**kw), seed=10 + i, dtype=dtype, name=name)
        out[name] = p
    return out


def _seq(vocab, n, seed=0):
    return [int(t) for t in np.random.default_rng(seed).integers(0, vocab, size=n)]


# -- native vs NumPy -------------------------------------------------------------------------

@pytest.mark.parametrize("shape", ["gqa-f32", "mqa-untied-f16"])
def test_native_float_weights_match_reference_over_the_whole_context(model_files, shape):
    kernels = _need_native()
    nat = load_model(model_files[shape], backend="native")
    ref = load_model(model_files[shape], backend="numpy")
    ctx = nat.context
    ids = _seq(nat.arch["vocab_size"], ctx, seed=1)
    sn, sr = nat.new_session(), ref.new_session()
    for pos, t in enumerate(ids):                       # up to the last position of the context
        ln, lr = sn.forward(t, pos), sr.forward(t, pos)
        err = np.abs(ln - lr).max()
        assert err < 1e-4 * max(1.0, np.abs(lr).max()), f"{shape} pos {pos}: max error {err:.3g}"
    assert nat.kernel_path in kernels.available_kernels()


@pytest.mark.parametrize("kernel", ["auto", "scalar"])
@pytest.mark.parametrize("shape", ["gqa-bq4", "hidden72-untied-bq4", "dim48-bq4"])
def test_native_bq4_matches_reference_with_q8_activations(model_files, shape, kernel):
    _need_native()
    nat = load_model(model_files[shape], backend="native", kernel=kernel)
    with BulletFile.open(model_files[shape]) as bf:
        q8 = ReferenceModel.from_bullet(bf, activations="q8").new_session()
        f32 = ReferenceModel.from_bullet(bf, activations="f32").new_session()
    ids = _seq(nat.arch["vocab_size"], nat.context, seed=2)
    sn = nat.new_session()
    worst_q8 = worst_f32 = 0.0
    for pos, t in enumerate(ids):
        ln, lq, lf = sn.forward(t, pos), q8.forward(t, pos), f32.forward(t, pos)
        scale = np.abs(lf).max()
        worst_q8 = max(worst_q8, np.abs(ln - lq).max() / scale)
        worst_f32 = max(worst_f32, np.abs(ln - lf).max() / scale)
        if pos == 0:   # same integer arithmetic: only float summation order differs
            assert np.abs(ln - lq).max() < 1e-5 * scale
    # the q8 emulation does the same integer arithmetic: only float summation order differs (a
    # rare q8 rounding flip would show as ~1e-3); the f32 reference differs by the activation
    # quantisation itself
    assert worst_q8 < 1e-3, f"{shape}: native vs q8 reference {worst_q8:.3g}"
    assert worst_f32 < 5e-2, f"{shape}: native vs f32 reference {worst_f32:.3g}"
    print(f"{shape}: native vs q8 reference {worst_q8:.2g}, vs f32 reference {worst_f32:.2g}")


def test_forced_scalar_kernel_matches_dispatched_kernel(model_files):
    kernels = _need_native()
    p = model_files["gqa-bq4"]
    auto = load_model(p, backend="native")
    scalar = load_model(p, backend="native", kernel="scalar")
    assert scalar.kernel_path == "scalar"
    ids = _seq(300, 20, seed=3)
    la = auto.new_session().prefill(ids, 0)
    ls = scalar.new_session().prefill(ids, 0)
    tol = 0 if auto.kernel_path == "scalar" else 1e-3 * np.abs(ls).max()
    assert np.abs(la - ls).max() <= tol
    assert "scalar" in kernels.available_kernels()


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("shape", ["gqa-f32", "hidden72-untied-bq4"])
def test_prefill_equals_token_by_token(model_files, backend, shape):
    if backend == "native":
        _need_native()
    m = load_model(model_files[shape], backend=backend)
    ids = _seq(m.arch["vocab_size"], 17, seed=4)
    a, b = m.new_session(), m.new_session()
    for pos, t in enumerate(ids):
        last = a.forward(t, pos)
    pre = b.prefill(ids, 0)
    assert np.abs(pre - last).max() < 1e-3 * max(1.0, np.abs(last).max())
    # both caches continue identically
    np.testing.assert_allclose(a.forward(5, 17), b.forward(5, 17), atol=1e-3 * np.abs(last).max())


# -- bad ids, positions, prompts -----------------------------------------------------------------

@pytest.fixture(scope="module", params=["numpy", "native"])
def small(request, model_files):
    if request.param == "native":
        _need_native()
    return load_model(model_files["gqa-f32"], backend=request.param)


def test_token_id_out_of_range_is_a_model_error(small):
    s = small.new_session()
    with pytest.raises(ModelError, match=r"token id 300 at index 0 is outside 0..299"):
        s.forward(300, 0)
    with pytest.raises(ModelError, match=r"token id -1 at index 2 is outside 0..299"):
        s.prefill([1, 2, -1], 0)
    with pytest.raises(ModelError, match="token at index 1 must be an integer id, got 'a'"):
        s.prefill([1, "a"], 0)
    with pytest.raises(ModelError, match="outside 0..299"):
        small.generate_ids([1, 999], GenerationSettings(max_tokens=2))


def test_positions_beyond_the_cache_or_context_are_model_errors(small):
    s = small.new_session()
    with pytest.raises(ModelError, match=r"position 3 is invalid: .* the next free one is 0"):
        s.forward(1, 3)
    s.prefill(list(range(1, 11)), 0)
    with pytest.raises(ModelError, match=r"position -1 is invalid"):
        s.forward(1, -1)
    with pytest.raises(ModelError, match=r"positions 10..40 run past the context of 40 tokens"):
        s.prefill([1] * 31, 10)
    s.forward(1, 10)                     # the next free position still works after the errors
    s.forward(2, 5)                      # rewinding is allowed: the cache is cut at 5
    assert len(s.tokens) == 6


def test_empty_prompts_are_rejected(small):
    s = small.new_session()
    with pytest.raises(ModelError, match="empty prompt"):
        s.prefill([], 0)
    with pytest.raises(BadPrompt, match="prompt is empty") as e:
        small.generate("", GenerationSettings(max_tokens=8))
    assert wire_error(e.value).code == "bad_request"
    with pytest.raises(BadPrompt, match="prompt must be a string, got bytes"):
        small.generate(b"hi", GenerationSettings(max_tokens=8))


def test_prompt_longer_than_the_context_is_too_long(small):
    with pytest.raises(ContextOverflow, match=r"the prompt is \d+ tokens; this model's context is 40") as e:
        small.generate("x" * 100, GenerationSettings(max_tokens=1))
    assert wire_error(e.value).code == "too_long"


def test_bad_settings_fail_before_any_work(small):
    with pytest.raises(BadSettings, match="max_tokens must be between 1 and the model's context of 40"):
        small.generate("hi", GenerationSettings(max_tokens=41))
    with pytest.raises(BadSettings, match="top_p"):
        small.generate("hi", GenerationSettings(max_tokens=8, top_p=2))


def test_unknown_backend_and_missing_file_are_clear(model_files, tmp_path, monkeypatch):
    with pytest.raises(ModelError, match="backend must be one of auto, native, numpy, got 'gpu'"):
        load_model(model_files["gqa-f32"], backend="gpu")
    with pytest.raises(FormatError, match="no such model file"):
        load_model(tmp_path / "nope.bullet")
    monkeypatch.setenv("BULLET_BACKEND", "fast")
    with pytest.raises(ModelError, match="BULLET_BACKEND must be one of"):
        load_model(model_files["gqa-f32"])


def test_bullet_backend_env_selects_numpy(model_files, monkeypatch):
    monkeypatch.setenv("BULLET_BACKEND", "numpy")
    m = load_model(model_files["gqa-f32"])
    assert m.backend == "numpy" and m.kernel_path == "numpy"
    assert load_model(model_files["gqa-f32"], backend="native" if _native_kernels()[0] else "numpy").backend


def test_router_file_is_not_an_lm(tmp_path):
    p = tmp_path / "router.bullet"
    write_bullet(p, kind="router", arch={"feature_dim": 8}, vocab=byte_vocab(259),
                 tensors={"router.w1": ("f32", np.zeros((8, 4), np.float32))},
                 tokenizer={"kind": "bpe", "bos_id": 1, "eos_id": 2},
                 provenance={"name": "r", "version": "1", "created": "2026-01-01T00:00:00+00:00"})
    with pytest.raises(ModelError, match="kind is 'router'; only 'lm' files generate text"):
        load_model(p)


# -- generation ---------------------------------------------------------------------------------

def test_generate_contract_fields(small):
    st = GenerationSettings(max_tokens=12, temperature=0.7, seed=1)
    g = small.generate("hi there", st)
    pieces = list(g)
    assert g.finish_reason in ("length", "eos")
    assert "".join(pieces) == g.text and all(isinstance(p, str) and p for p in pieces)
    assert g.prompt_tokens[0] == small.tokenizer.bos_id
    assert g.prompt_tokens == small.tokenizer.encode("hi there", bos=True)
    assert 1 <= len(g.tokens) <= 12
    assert g.prefill_s > 0 and g.ttft_s >= g.prefill_s
    assert small.name == "gqa-f32" and small.version == "1.0.0" and small.header["kind"] == "lm"


def test_generation_stops_with_length_at_the_end_of_the_context(small):
    n_prompt = len(small.tokenizer.encode("hello", bos=True))
    g = small.generate("hello", GenerationSettings(max_tokens=40, temperature=0, repetition_penalty=1.0))
    list(g)
    if g.finish_reason == "length":
        # positions prompt..39 are forwarded; the token sampled at the last one is emitted too
        assert len(g.tokens) == 40 - n_prompt + 1
    else:
        assert g.finish_reason == "eos"


def test_eos_ends_generation_without_emitting_it(tmp_path):
    arch = random_arch(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, hidden_dim=64, vocab_size=300, max_seq_len=32)
    tensors = random_lm_tensors(arch, seed=7, dtype="f32")
    kw = dict(kind="lm", arch=arch, tensors=tensors, vocab=byte_vocab(300),
              provenance={"name": "e", "version": "1", "created": dt.datetime(2026, 1, 1).isoformat()})
    write_bullet(tmp_path / "a.bullet", tokenizer={"kind": "bpe", "bos_id": 1, "eos_id": 2}, **kw)
    m = load_model(tmp_path / "a.bullet", backend="numpy")
    greedy = GenerationSettings(max_tokens=10, temperature=0, repetition_penalty=1.0)
    g = m.generate("ab", greedy)
    list(g)
    k = next(i for i in range(1, len(g.tokens)) if g.tokens[i] not in g.tokens[:i])
    third = g.tokens[k]
    # the same weights, with a later greedy token (not seen before it) declared end-of-sequence
    write_bullet(tmp_path / "b.bullet", tokenizer={"kind": "bpe", "bos_id": 1, "eos_id": third}, **kw)
    m2 = load_model(tmp_path / "b.bullet", backend="numpy")
    g2 = m2.generate("ab", greedy)
    text = "".join(g2)
    assert g2.finish_reason == "eos"
    assert g2.tokens == g.tokens[:k] and third not in g2.tokens
    assert text == m2.tokenizer.decode(g.tokens[:k])


def test_cancel_event_stops_with_cancelled(small):
    ev = threading.Event()
    ev.set()
    g = small.generate("hi", GenerationSettings(max_tokens=20, temperature=0), cancel=ev)
    assert list(g) == [] and g.finish_reason == "cancelled" and g.tokens == []
    ev = threading.Event()
    g = small.generate("hi", GenerationSettings(max_tokens=30, temperature=0.9, top_k=0, seed=2,
                                                repetition_penalty=1.0), cancel=ev)
    n = 0
    for _ in g:
        n += 1
        if n == 3:
            ev.set()
    assert g.finish_reason == "cancelled"
    assert 3 <= len(g.tokens) < 30


def test_session_reuses_a_common_prompt_prefix_with_identical_results(small):
    st = GenerationSettings(max_tokens=8, temperature=0.8, seed=4, top_k=0, repetition_penalty=1.0)
    s = small.new_session()
    first = small.generate("abcdef", st, session=s)
    list(first)
    cached = list(s.tokens)
    assert cached[:len(first.prompt_tokens)] == first.prompt_tokens
    again = small.generate("abcdxy", st, session=s)
    list(again)
    fresh = small.generate("abcdxy", st)
    list(fresh)
    assert again.tokens == fresh.tokens and again.text == fresh.text


def test_sessions_on_threads_match_sequential_runs(small):
    prompts = ["one", "two two", "three", "four four four"]
    st = lambda i: GenerationSettings(max_tokens=10, temperature=0.8, seed=i, top_k=0)
    want = []
    for i, p in enumerate(prompts):
        g = small.generate(p, st(i))
        list(g)
        want.append(g.tokens)
    got = [None] * len(prompts)
    shared = small.new_session()      # two threads share this one; the other two have their own

    def work(i):
        g = small.generate(prompts[i], st(i), session=shared if i < 2 else None)
        list(g)
        got[i] = g.tokens

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert got == want


def test_session_of_another_model_is_rejected(model_files, small):
    other = load_model(model_files["gqa-bq4"], backend="numpy")
    with pytest.raises(ModelError, match="the session belongs to another model"):
        small.generate("hi", GenerationSettings(max_tokens=8), session=other.new_session())


def test_generate_without_a_session_reuses_one_idle_session(small):
    st = GenerationSettings(max_tokens=6, temperature=0.8, seed=3, top_k=0)
    small.release_idle()
    a = small.generate("same prompt", st)
    assert a.session is None                      # taken only when the run starts
    list(a)
    idle = small._idle
    assert idle is a.session and idle.tokens[:len(a.prompt_tokens)] == a.prompt_tokens
    b = small.generate("same prompt", st)
    list(b)
    assert b.session is idle and b.tokens == a.tokens and b.text == a.text
    small.release_idle()
    assert small._idle is None


def test_model_close_leaves_a_callers_bulletfile_open(model_files):
    bf = BulletFile.open(model_files["gqa-f32"])
    m = load_model(bf, backend="numpy")
    m.close()
    assert bf.tensor("out_norm").shape == (64,)   # still mapped: the caller closes it
    bf.close()


def test_context_whose_kv_cache_would_be_huge_is_refused(tmp_path, monkeypatch):
    arch = random_arch(dim=32, n_layers=2, n_heads=2, n_kv_heads=2, hidden_dim=32, vocab_size=260,
                       max_seq_len=1 << 20)          # no tensor bounds max_seq_len
    p = tmp_path / "ctx.bullet"
    write_random_lm(p, arch, seed=1, dtype="f32")
    with pytest.raises(ModelError, match=r"KV cache for max_seq_len 1048576 would take 536_870_912 bytes, "
                                         r"above the limit of 1_000_000"):
        monkeypatch.setenv("BULLET_MAX_KV_BYTES", "1000000")
        load_model(p, backend="numpy")


def test_consumer_that_breaks_after_cancel_sees_cancelled_and_close_releases(small):
    ev = threading.Event()
    s = small.new_session()
    g = small.generate("hi", GenerationSettings(max_tokens=30, temperature=0.9, top_k=0, seed=2), session=s,
                       cancel=ev)
    for _ in g:
        ev.set()
        break
    assert g.finish_reason == "cancelled"
    assert s.lock.locked()            # the suspended generation still holds the session...
    g.close()
    assert not s.lock.locked()        # ...until it is closed
    g2 = small.generate("hi", GenerationSettings(max_tokens=3, temperature=0), session=s)
    list(g2)
    assert g2.finish_reason in ("length", "eos")


def test_bullet_run_uses_the_daemons_defaults_and_refuses_negative_steps(tmp_path):
    """`bullet run` without sampling options generates what the daemon does with the same seed:
    one definition of the defaults (GenerationSettings)."""
    import subprocess
    import sys
    p = write_random_lm(tmp_path / "m.bullet", random_arch(dim=64, n_layers=2, n_heads=4, n_kv_heads=2,
                                                           hidden_dim=96, vocab_size=300, max_seq_len=128),
                        seed=3, name="m")

    def bullet(*args):
        return subprocess.run([sys.executable, "-m", "bulletd.cli_bullet", "run", str(p), *args],
                              capture_output=True, text=True, timeout=60)
    r = bullet("-p", "ab", "--seed", "5", "--ids", "--quiet")
    assert r.returncode == 0, r.stderr
    with load_model(p) as m:
        g = m.generate_ids(m.tokenizer.encode("ab", bos=True), GenerationSettings(seed=5))
        for _ in g:
            pass
    assert [int(t) for t in r.stdout.split()] == list(g.tokens) and len(g.tokens) > 1
    for bad in ("-1", "x"):
        r = bullet("-n", bad)
        assert r.returncode == 2 and "argument -n/--steps" in r.stderr and "Traceback" not in r.stderr
    assert "must be 0 (the whole context) or more, got -1" in bullet("-n", "-1").stderr
