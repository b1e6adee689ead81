"""The decode step profile (Session.profiling / profile, native/model.h ProfilePart) and the roofline
probes behind `bullet bench`'s per-token breakdown (bulletd.bench.roofline).

Run: pytest tests/test_profile.py -q
"""
import numpy as np
import pytest

from bulletd import kernels as K
from bulletd.errors import ModelError
from bulletd.format.synth import REFERENCE, SMALL

pytestmark = pytest.mark.skipif(not K.native_available(), reason=f"native module not built: {K.native_error()}")
PATHS = K.available_kernels() if K.native_available() else []

PARTS = ("qkv", "wo", "ffn", "classifier", "attention", "norm", "rope", "act", "embed", "sample")
CFG = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=172, vocab_size=300, max_seq_len=40,
           tied_embeddings=True)


def _model(path, cfg=CFG):
    return K.NativeModel(cfg, K.random_bq4_tensors(cfg, seed=3), path)


def _decode(s, n, toks_seen=(1,)):
    """n tokens through the native decode loop (sampling on) after BOS; returns the token ids."""
    logits = np.array(s.prefill([1], 0), dtype=np.float32)
    coins = np.random.default_rng(0).random(n)
    toks, _, _ = s.decode(logits, -1, 1, n, coins, np.array(toks_seen, np.int64), 0.8, 40, 0.95, 1.1,
                          np.zeros(0, np.int64))
    return toks


@pytest.mark.parametrize("path", PATHS)
def test_profile_is_off_by_default_and_changes_no_logit(path):
    m = _model(path)
    toks = np.random.default_rng(0).integers(0, CFG["vocab_size"], 30).tolist()
    plain, timed = m.new_session(), m.new_session()
    assert plain.profiling is False and plain.profile["steps"] == 0
    timed.profiling = True
    for pos, t in enumerate(toks):
        # the profiled step runs the SwiGLU apart from its products: still the same bits
        np.testing.assert_array_equal(plain.forward(t, pos), timed.forward(t, pos), err_msg=f"{path} pos {pos}")
    assert plain.profile["steps"] == 0 and all(plain.profile[p] == 0 for p in PARTS)
    assert timed.profile["steps"] == len(toks)


@pytest.mark.parametrize("path", PATHS)
def test_profile_counts_every_part_of_decode_steps(path):
    s = _model(path).new_session()
    s.profiling = True
    toks = _decode(s, 20)
    p = s.profile
    assert len(toks) == 20
    assert p["steps"] == 19            # the prefill is not profiled; the last token drawn is not run
    for part in PARTS:
        assert p[part] > 0, part
    # turning it on again clears it; off keeps what was counted
    s.profiling = False
    kept = s.profile
    _decode(s, 5)
    assert s.profile == kept
    s.profiling = True
    assert s.profile["steps"] == 0 and sum(s.profile[q] for q in PARTS) == 0


@pytest.mark.parametrize("dim", [128, 96])
def test_profile_skips_steps_split_across_threads(dim):
    # head_dim 32: the step runs as one job split by heads; 24: layer by layer, products split
    cfg = dict(CFG, dim=dim, n_heads=4, n_kv_heads=4)
    s = _model("auto", cfg).new_session()
    s.set_threads(2)
    s.profiling = True
    for pos in range(5):
        s.forward(1, pos)
    assert s.profile["steps"] == 0
    s.set_threads(1)
    s.forward(1, 5)
    assert s.profile["steps"] == 1


def test_model_counts_match_the_reference_shape():
    from bulletd.bench.roofline import model_counts
    c = model_counts(dict(REFERENCE), weight_bytes=1)
    # per layer q, k, v, o: 4 x 256 x 256; w1, w2, w3: 3 x 256 x 768; classifier 2048 x 256
    assert c["macs"] == 8 * (4 * 65536 + 3 * 196608) + 2048 * 256 == 7_340_032
    assert c["kv_cache_bytes"] == 2 * 8 * 256 * 256 * 4
    assert c["kv_read_bytes"] == c["kv_cache_bytes"] * (257 / 2) / 256     # positions 0..p at step p
    s = model_counts(dict(SMALL), weight_bytes=1)
    assert s["macs"] == 4 * (4 * 128 * 128 + 3 * 128 * 384) + 1024 * 128


@pytest.mark.parametrize("path", PATHS)
def test_roofline_probes_measure_this_core(path):
    n = K.native_module()
    macs = n.int8_macs_per_s(path)
    bw = n.read_bytes_per_s(path, 1 << 20)
    # any CPU this runs on does 1e7..1e13 of each per second; a probe optimised away reads as ~inf
    assert 1e7 < macs < 1e13 and 1e7 < bw < 1e13
    with pytest.raises(ValueError, match="4 KiB"):
        n.read_bytes_per_s(path, 100)
    with pytest.raises(ValueError, match="unknown"):
        n.int8_macs_per_s("sse9")


def test_breakdown_and_roofline_of_a_small_model():
    from bulletd.bench import roofline
    m = K.NativeModel(dict(SMALL, tied_embeddings=True), K.random_bq4_tensors(dict(SMALL, tied_embeddings=True), 0))
    r = roofline.measure(m, rounds=1)
    assert r["tok_s"] == 1 / r["token_s"]
    assert set(r["part_s"]) == set(PARTS) and all(v > 0 for v in r["part_s"].values())
    # one round: the parts and the remainder are that pass's, so they add up to its wall time
    assert sum(r["part_s"].values()) + r["other_s"] == pytest.approx(r["token_s_profiled"], rel=1e-9)
    rl = r["roofline"]
    assert rl["weight_bytes"] == m.packed_bytes or (rl["weight_bytes"] == m.weight_bytes and m.packed_bytes == 0)
    assert rl["roofline_tok_s"] == min(rl["memory_tok_s"], rl["compute_tok_s"])
    assert rl["roofline_kv_tok_s"] < rl["roofline_tok_s"] or rl["bound"] == "compute"
    assert r["of_roofline"] == r["tok_s_cpu"] / rl["roofline_tok_s"]
    text = "\n".join(roofline.report_lines(r))
    for label in ("matvecs", "attention", "norms, rope, activation", "sampling", "memory bound" if
                  rl["bound"] == "memory" else "compute bound"):
        assert label in text


def test_profiling_needs_a_build_with_it():
    class Old:  # a session of a module built before the profile existed
        pass
    s = K.NativeSession.__new__(K.NativeSession)
    s._s = Old()
    assert s.profiling is False
    with pytest.raises(ModelError, match="no step profile"):
        s.profiling = True
