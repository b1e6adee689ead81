"""The NumPy reference's two ways of holding BQ4 weights (bulletd/runtime/reference.py):
"mapped" (the block arrays of the mapped file, dequantised at every use) and "f32" (dequantised
once at load). Bit-identical logits on random models of several shapes (forward, prefill,
prefill_all; f32 and q8 activations), mapped tensors are views of the mapping and are validated
at load, BULLET_NUMPY_WEIGHTS selects the mode of the numpy backend, and in a real process the
mapped mode adds only the KV cache and temporaries to the anonymous memory while f32 adds the
dequantised copy (4 bytes a weight, 6.4x the bq4 bytes).

    pytest tests/test_reference_weights.py -q
"""
import datetime as dt
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from _runtime_util import random_arch
from bulletd.errors import ModelError
from bulletd.format import BulletFile, dequantize_bq4, write_bullet
from bulletd.format.synth import REFERENCE, byte_vocab, random_lm_tensors, write_random_lm
from bulletd.runtime import load_model
from bulletd.runtime import reference as R
from bulletd.runtime.model import _native_kernels
from bulletd.runtime.reference import ReferenceModel

SHAPES = {
    # name: (arch kwargs, matrices not bq4: name -> dtype)
    "gqa-tied": (dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=96, vocab_size=300,
                      max_seq_len=24, tied=True), {}),
    "mqa-untied": (dict(dim=64, n_layers=2, n_heads=8, n_kv_heads=1, hidden_dim=160, vocab_size=509,
                        max_seq_len=20, tied=False), {}),
    # stories260K's proportions: hidden 172 -> w2 rows of 172 weights, the last block zero-padded
    "hidden172-untied": (dict(dim=64, n_layers=2, n_heads=8, n_kv_heads=4, hidden_dim=172, vocab_size=512,
                              max_seq_len=20, tied=False), {}),
    # every matrix's columns padded (48 and 80 are not multiples of 32), head size 12
    "dim48-gqa": (dict(dim=48, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=80, vocab_size=301,
                       max_seq_len=20), {}),
    # float embedding with a bq4 output, one f32 and one f16 matrix among bq4 ones
    "mixed-untied": (dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=4, hidden_dim=96, vocab_size=300,
                          max_seq_len=20, tied=False), {"tok_embd": "f16", "blk.1.w2": "f32", "blk.0.wq": "f16"}),
}


def _write(path, arch, floats: dict, seed: int):
    tensors = random_lm_tensors(arch, seed, "bq4")
    for name, dtype in floats.items():
        tensors[name] = (dtype, tensors[name][1])
    write_bullet(path, kind="lm", arch=arch, tensors=tensors, vocab=byte_vocab(arch["vocab_size"]),
                 tokenizer={"kind": "bpe", "bos_id": 1, "eos_id": 2, "add_dummy_prefix": False},
                 provenance={"name": path.stem, "version": "1",
                             "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("refw")
    return {name: _write(d / f"{name}.bullet", random_arch(**kw), floats, seed=20 + i)
            for i, (name, (kw, floats)) in enumerate(SHAPES.items())}


def _same_bits(a, b, what):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert a.shape == b.shape, what
    diff = np.nonzero(a.view(np.uint32) != b.view(np.uint32))
    assert diff[0].size == 0, f"{what}: {diff[0].size} logits differ, first at {tuple(d[0] for d in diff)}"


@pytest.mark.parametrize("activations", ["f32", "q8"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_mapped_weights_give_bit_identical_logits(files, shape, activations):
    with BulletFile.open(files[shape]) as bf:
        mapped = ReferenceModel.from_bullet(bf, activations, weights="mapped")
        f32 = ReferenceModel.from_bullet(bf, activations, weights="f32")
        bq4_names = {n for n, i in bf.tensors.items() if i.dtype == "bq4"}
    assert mapped.weights == "mapped" and f32.weights == "f32"
    assert set(mapped.bq4) == bq4_names and not f32.bq4
    a = mapped.arch
    ids = [int(t) for t in np.random.default_rng(5).integers(0, a["vocab_size"], a["max_seq_len"])]
    sm, sf = mapped.new_session(), f32.new_session()
    _same_bits(sm.prefill_all(ids[:6], 0), sf.prefill_all(ids[:6], 0), f"{shape} prefill_all")
    _same_bits(sm.prefill(ids[6:11], 6), sf.prefill(ids[6:11], 6), f"{shape} prefill at 6")
    for pos in range(11, len(ids)):               # to the last position of the context
        _same_bits(sm.forward(ids[pos], pos), sf.forward(ids[pos], pos), f"{shape} forward at {pos}")
    _same_bits(sm.k_cache, sf.k_cache, f"{shape} K cache")
    _same_bits(sm.v_cache, sf.v_cache, f"{shape} V cache")
    # rewinding and re-running a batch from the middle
    _same_bits(sm.prefill_all(ids[3:9], 3), sf.prefill_all(ids[3:9], 3), f"{shape} prefill_all at 3")


def test_mapped_bq4_tensors_are_views_of_the_mapping(files):
    with BulletFile.open(files["hidden172-untied"]) as bf:
        m = ReferenceModel.from_bullet(bf)          # the default is "mapped"
        assert m.weights == "mapped"
        for name, blocks in m.bq4.items():
            assert bf.tensors[name].dtype == "bq4"
            assert blocks.dtype == np.uint8 and not blocks.flags.owndata
            assert np.shares_memory(blocks, bf.tensor(name)), name
        # the float tensors of this file (norms, f32) are views too: the model owns no weight bytes
        assert not any(w.flags.owndata for w in m.w.values())
        assert set(m.w) == {n for n, i in bf.tensors.items() if i.dtype != "bq4"}
        f32 = ReferenceModel.from_bullet(bf, weights="f32")   # for contrast: private float copies
        for name, info in bf.tensors.items():
            if info.dtype == "bq4":
                w = f32.w[name]
                assert w.dtype == np.float32 and w.shape == info.shape
                assert not np.shares_memory(w, bf.tensor(name))


def test_embedding_lookup_decodes_only_the_rows_it_reads(files, monkeypatch):
    with BulletFile.open(files["dim48-gqa"]) as bf:
        m = ReferenceModel.from_bullet(bf)
        full = dequantize_bq4(bf.tensor("tok_embd"), 48)
    seen = []

    def spy(blocks, cols):
        seen.append(blocks.shape)
        return dequantize_bq4(blocks, cols)

    monkeypatch.setattr(R, "dequantize_bq4", spy)
    ids = np.array([7, 300, 7, 0])
    rows = m.embed(ids)
    assert seen == [(4, 2 * 20)]
    _same_bits(rows, full[ids], "embedding rows")
    assert rows.flags.c_contiguous and rows.dtype == np.float32


def test_mapped_tensors_are_checked_at_load():
    arch = random_arch(dim=64, n_layers=1, n_heads=4, n_kv_heads=2, hidden_dim=172, vocab_size=300,
                       max_seq_len=8)
    tensors = {n: w for n, (_, w) in random_lm_tensors(arch, 1, "bq4").items()}
    from bulletd.format import quantize_bq4
    bq4 = {n: (quantize_bq4(w), w.shape) for n, w in tensors.items() if w.ndim == 2}
    floats = {n: w for n, w in tensors.items() if w.ndim == 1}
    ReferenceModel(arch, floats, bq4=bq4)           # well-formed: accepted

    def build(name, entry):
        ReferenceModel(arch, floats, bq4={**bq4, name: entry})

    w2 = bq4["blk.0.w2"][0]
    # same block count (6 per row), another logical width: must not be read as 172 columns
    with pytest.raises(ModelError, match=r"blk\.0\.w2: expected shape \(64, 172\), found \(64, 170\)"):
        build("blk.0.w2", (w2, (64, 170)))
    with pytest.raises(ModelError, match=r"bq4 tensor blk\.0\.w2 .* needs uint8 blocks \(64, 120\), found uint8 \(64, 100\)"):
        build("blk.0.w2", (w2[:, :100], (64, 172)))
    with pytest.raises(ModelError, match=r"found int8 \(64, 120\)"):
        build("blk.0.w2", (w2.view(np.int8), (64, 172)))
    with pytest.raises(ModelError, match=r"found uint8 \(63, 120\)"):
        build("blk.0.w2", (w2[:63], (64, 172)))
    with pytest.raises(ModelError, match="must be given as"):
        build("blk.0.w2", w2)
    with pytest.raises(ModelError, match="is a vector .* cannot be bq4"):
        build("out_norm", (np.zeros((64, 2 * 20), np.uint8), (64,)))


class _LyingFile:
    """A BulletFile whose tensor table claims a shape its arch does not (as a corrupt header
    that slipped past the container checks would)."""

    def __init__(self, bf, name, shape):
        self._bf, self.arch = bf, bf.arch
        info = bf.tensors[name]
        self.tensors = {**bf.tensors, name: type(info)(info.name, info.dtype, shape, info.offset, info.nbytes)}
        self._fake = (name, shape)

    def tensor(self, name):
        t = self._bf.tensor(name)
        if name == self._fake[0]:
            rows, cols = self._fake[1]
            return t.reshape(-1)[: rows * (-(-cols // 32)) * 20].reshape(rows, -1)
        return t


@pytest.mark.parametrize("weights", ["mapped", "f32"])
def test_a_mis_shaped_bq4_tensor_is_a_model_error_in_both_modes(files, weights):
    with BulletFile.open(files["gqa-tied"]) as bf:
        for name, shape in (("blk.1.w1", (95, 64)), ("blk.0.w2", (64, 90))):
            with pytest.raises(ModelError, match=re.escape(f"{name}: expected shape")):
                ReferenceModel.from_bullet(_LyingFile(bf, name, shape), weights=weights)


def test_unknown_weights_mode_is_a_model_error(files):
    with BulletFile.open(files["gqa-tied"]) as bf:
        with pytest.raises(ModelError, match="weights must be 'mapped' or 'f32', got 'f16'"):
            ReferenceModel.from_bullet(bf, weights="f16")


def test_bullet_numpy_weights_selects_the_mode(files, monkeypatch):
    p = files["gqa-tied"]
    monkeypatch.delenv("BULLET_NUMPY_WEIGHTS", raising=False)
    m = load_model(p, backend="numpy")
    assert m.numpy_weights == "mapped" and m._ref.weights == "mapped" and m._ref.bq4
    assert "weights=mapped" in repr(m)
    monkeypatch.setenv("BULLET_NUMPY_WEIGHTS", "f32")
    m = load_model(p, backend="numpy")
    assert m.numpy_weights == "f32" and m._ref.weights == "f32" and not m._ref.bq4
    monkeypatch.setenv("BULLET_NUMPY_WEIGHTS", " Mapped ")
    assert load_model(p, backend="numpy").numpy_weights == "mapped"
    monkeypatch.setenv("BULLET_NUMPY_WEIGHTS", "f32")
    assert load_model(p, backend="numpy", numpy_weights="mapped").numpy_weights == "mapped"   # argument wins
    monkeypatch.setenv("BULLET_NUMPY_WEIGHTS", "f16")
    with pytest.raises(ModelError, match="BULLET_NUMPY_WEIGHTS must be one of mapped, f32, got 'f16'"):
        load_model(p, backend="numpy")
    monkeypatch.delenv("BULLET_NUMPY_WEIGHTS")
    with pytest.raises(ModelError, match="numpy_weights must be auto or one of mapped, f32, got 'copy'"):
        load_model(p, backend="numpy", numpy_weights="copy")
    if _native_kernels()[0] is not None:
        assert load_model(p, backend="native").numpy_weights is None
        # the fallback's setting never stops the native backend from loading
        monkeypatch.setenv("BULLET_NUMPY_WEIGHTS", "f16")
        assert load_model(p, backend="native").numpy_weights is None


def test_both_modes_generate_the_same_text(files, monkeypatch):
    from bulletd.runtime import GenerationSettings
    out = {}
    for mode in ("mapped", "f32"):
        monkeypatch.setenv("BULLET_NUMPY_WEIGHTS", mode)
        m = load_model(files["mqa-untied"], backend="numpy")
        g = m.generate("the sea", GenerationSettings(max_tokens=12, temperature=0.9, seed=3))
        out[mode] = ("".join(g), g.tokens)
    assert out["mapped"] == out["f32"]


_PROBE = textwrap.dedent("""
    import json, sys
    import numpy as np
    from bulletd.runtime import load_model

    def anon():
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024

    path, mode = sys.argv[1], sys.argv[2]
    ids = [int(t) for t in np.random.default_rng(0).integers(3, 2048, 8)]
    np.zeros(1) @ np.zeros(1)              # BLAS and NumPy's own first allocations
    before = anon()
    m = load_model(path, backend="numpy", numpy_weights=mode)
    loaded = anon()
    s = m.new_session()
    s.prefill(ids[:4], 0)
    for pos in range(4, 8):
        s.forward(ids[pos], pos)
    print(json.dumps({"load": loaded - before, "run": anon() - before, "kv": s.kv_bytes,
                      "weights": m.numpy_weights}))
""")


def test_mapped_mode_adds_far_less_anonymous_memory_than_f32(tmp_path):
    """REFERENCE shape, BQ4 (~4 MB file, ~29 MB as f32), a fresh process per mode."""
    try:
        has_anon = any(line.startswith("RssAnon:") for line in open("/proc/self/status"))
    except OSError:
        has_anon = False
    if not has_anon:
        pytest.skip("needs Linux /proc/self/status RssAnon")
    p = write_random_lm(tmp_path / "reference.bullet", REFERENCE, seed=0, dtype="bq4")
    with BulletFile.open(p) as bf:
        f32_bytes = 4 * sum(int(np.prod(i.shape)) for i in bf.tensors.values() if i.dtype == "bq4")
    env_one_thread = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    res = {}
    for mode in ("mapped", "f32"):
        r = subprocess.run([sys.executable, "-c", _PROBE, str(p), mode], capture_output=True, text=True,
                           timeout=120, env={**os.environ, **env_one_thread})
        assert r.returncode == 0, r.stderr
        res[mode] = json.loads(r.stdout)
        assert res[mode]["weights"] == mode
    mapped, f32 = res["mapped"], res["f32"]
    mib = 1 << 20
    print(f"\nanonymous memory added (MiB): mapped load {mapped['load'] / mib:.1f}, after 8 positions "
          f"{mapped['run'] / mib:.1f}; f32 load {f32['load'] / mib:.1f}, after 8 positions {f32['run'] / mib:.1f}; "
          f"bq4 weights as f32 {f32_bytes / mib:.1f}, KV cache {mapped['kv'] / mib:.1f}")
    assert f32_bytes > 28 * mib
    # f32 keeps every dequantised matrix
    assert f32["load"] > 0.9 * f32_bytes
    # mapped: at most the KV cache (4 MiB, zero pages until written) and the largest temporaries
    # (a 2048 x 256 f32 matrix is 2 MiB) plus allocator slack
    assert mapped["load"] < 2 * mib, mapped
    assert mapped["run"] < mapped["kv"] + 8 * mib, mapped
    assert f32["run"] - mapped["run"] > 0.75 * f32_bytes
