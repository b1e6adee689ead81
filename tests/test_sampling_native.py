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
