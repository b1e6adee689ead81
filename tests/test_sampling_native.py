"""The native sampler picks exactly the token the NumPy reference (Sampler.sample_numpy) picks."""
import numpy as np
import pytest

from bulletd import kernels
from bulletd.runtime.sampling import GenerationSettings, Sampler

pytestmark = pytest.mark.skipif(kernels.native_sampler() is None,
                                reason=f"native module not built: {kernels.native_error()}")


def _pair(**kw):
    st = GenerationSettings(**kw).validate()
    a, b = Sampler(st), Sampler(st)
    assert a._native is not None
    return a, b


@pytest.mark.parametrize("vocab", [7, 300, 2048])
@pytest.mark.parametrize("temperature,top_k,top_p,penalty", [
    (0.0, 40, 0.95, 1.1), (0.8, 40, 0.95, 1.1), (1.0, 0, 1.0, 1.0), (0.3, 1, 0.5, 1.3),
    (2.0, 5000, 0.99, 0.9), (0.7, 3, 1.0, 1.0), (1.5, 0, 0.2, 2.0)])
def test_native_and_numpy_pick_the_same_tokens(vocab, temperature, top_k, top_p, penalty):
    rng = np.random.default_rng(vocab + int(temperature * 10) + top_k)
    a, b = _pair(temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=penalty, seed=5)
    for step in range(300):
        logits = (rng.standard_normal(vocab) * rng.uniform(0.5, 6)).astype(np.float32)
        if step % 7 == 0:
            logits[rng.integers(0, vocab, 3)] = logits.max()          # ties at the top
        seen = np.unique(rng.integers(0, vocab, rng.integers(0, 20))).astype(np.int64)
        got, want = a.sample(logits, seen, unique=True), b.sample_numpy(logits, seen, unique=True)
        assert got == want, f"step {step}: native {got}, numpy {want}, logits[:8]={logits[:8]}"


def test_seen_as_a_list_with_repeats_and_out_of_range_ids():
    a, b = _pair(temperature=0.0, repetition_penalty=3.0)
    logits = np.array([5.0, 4.9, 1.0, -2.0], np.float32)
    seen = [0, 0, 7, -1]
    assert a.sample(logits, seen) == b.sample_numpy(logits, seen) == 1


def test_non_finite_logits_are_an_error_not_a_token():
    a, _ = _pair(temperature=0.8)
    with pytest.raises(ValueError, match="NaN or infinite"):
        a.sample(np.array([0.0, np.nan, 1.0], np.float32))


def test_numpy_sampler_can_be_forced(monkeypatch):
    monkeypatch.setenv("BULLET_SAMPLER", "numpy")
    assert Sampler(GenerationSettings().validate())._native is None


@pytest.mark.parametrize("sampler", ["native", "numpy"])
def test_generation_with_nan_weights_is_a_model_error(tmp_path, monkeypatch, sampler):
    from bulletd.errors import ModelError
    from bulletd.format import write_bullet
    from bulletd.format.synth import byte_vocab, random_lm_tensors
    from bulletd.runtime import load_model
    if sampler == "numpy":
        monkeypatch.setenv("BULLET_SAMPLER", "numpy")
    arch = dict(dim=32, n_layers=1, n_heads=2, n_kv_heads=2, hidden_dim=64, vocab_size=260, max_seq_len=16)
    tensors = random_lm_tensors(arch, seed=0)
    tensors["out_norm"] = ("f32", np.full(32, np.nan, np.float32))
    p = write_bullet(tmp_path / "nan.bullet", kind="lm", arch=arch, tensors=tensors, vocab=byte_vocab(260),
                     tokenizer={"bos_id": 1, "eos_id": 2}, provenance={"name": "nan", "version": "1"})
    with load_model(p) as m:
        for temperature in (0.0, 0.8):
            with pytest.raises(ModelError, match="non-finite logits at position"):
                list(m.generate("hi", GenerationSettings(max_tokens=4, temperature=temperature)))


@pytest.mark.parametrize("vocab", [1, 2, 33, 1024, 32000])
def test_decode_loop_sampler_picks_what_its_reference_picks(vocab):
    """sample_token (the decode loop's, with the threshold pass and the (logit, id) sort) against
    sample_token_ref (nth_element and a stable sort) on logits full of repeats: ties at the k-th
    value, at the top, between +0 and -0, and whole runs of one value."""
    from bulletd import _native as N
    rng = np.random.default_rng(vocab)
    for step in range(150):
        kind = step % 5
        if kind == 0:
            logits = rng.standard_normal(vocab) * rng.uniform(0.1, 8)
        elif kind == 1:
            logits = rng.integers(-3, 4, vocab).astype(np.float64)         # a handful of values, many repeats
        elif kind == 2:
            logits = np.where(rng.random(vocab) < 0.5, 0.0, -0.0)          # only zeros of both signs
        elif kind == 3:
            logits = np.sort(rng.standard_normal(vocab))                   # ascending: the threshold rises often
        else:
            logits = -np.sort(-rng.standard_normal(vocab))                 # descending
        logits = logits.astype(np.float32)
        seen = np.unique(rng.integers(0, vocab, rng.integers(0, 30))).astype(np.int64)
        temperature = float(rng.choice([0.0, 0.2, 0.8, 1.7]))
        top_k = int(rng.choice([0, 1, 2, 5, 40, vocab - 1, vocab, vocab + 3]))
        top_p = float(rng.choice([1.0, 0.95, 0.5, 0.01]))
        penalty = float(rng.choice([1.0, 1.1, 2.5]))
        coin = float(rng.random())
        args = (logits, seen, temperature, top_k, top_p, penalty, coin)
        assert N.sample_token(*args) == N.sample_token_ref(*args), (step, temperature, top_k, top_p, penalty)


def test_decode_loop_sampler_refuses_non_finite_logits_anywhere():
    from bulletd import _native as N
    for bad in (np.nan, np.inf, -np.inf):
        for at in (0, 31, 32, 99):
            logits = np.zeros(100, np.float32)
            logits[at] = bad
            assert N.sample_token(logits, np.zeros(0, np.int64), 0.8, 40, 0.95, 1.1, 0.5) == -1
            assert N.sample_token(logits, np.zeros(0, np.int64), 0.0, 40, 0.95, 1.1, 0.5) == -1
