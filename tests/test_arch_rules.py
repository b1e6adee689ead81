"""One source of truth for the model's shape rules (bulletd.format.arch).

Every layer takes the architecture rule, the tensor-shape table, the BQ4 block size, the REFERENCE
and SMALL shapes and the KV-cache cap from bulletd.format.arch; these tests fail when a layer grows
its own copy that disagrees:
  - the native model's config check (the last guard, fed its numbers on import) accepts exactly the
    configs the Python rule accepts, over a grid that walks every limit, head_dim and the KV cap;
  - the trainer's config accepts exactly the shapes the rule accepts, with the rule's message;
  - the container, the NumPy reference, the runtime, the trainer and the kernels' random weights
    use the one tensor table, an explicit head_dim included (a file with head_dim != dim / n_heads
    is read, and runs the same on both backends);
  - the BQ4 block constants of Python and C++ agree.

Run: pytest tests/test_arch_rules.py -q
"""
import math

import numpy as np
import pytest

from bulletd import kernels as K
from bulletd.errors import FormatError, ModelError
from bulletd.format import BLOCK_BYTES, QK, BulletFile, arch as A, synth
from bulletd.format.container import lm_tensor_shapes, validate_lm_arch
from bulletd.runtime import load_model
from bulletd.runtime.reference import ReferenceModel, check_arch, expected_shapes
from trainer.model import ModelArch

needs_native = pytest.mark.skipif(not K.native_available(), reason=f"native module not built: {K.native_error()}")

BASE = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=96, vocab_size=300, max_seq_len=40)


def _grid() -> list[dict]:
    """Configs around every boundary of the rule."""
    out = [dict(BASE), dict(BASE, tied_embeddings=True)]
    for k in A.INT_KEYS:
        lim = A.LIMITS[k]
        for v in (-1, 0, 1, 2, 3, lim - 1, lim, lim + 1, 2 ** 40, True, 4.0, "4", None):
            out.append(dict(BASE, **{k: v}))
    for hd in (None, 0, 1, 2, 3, 6, 16, 24, A.LIMITS["head_dim"], A.LIMITS["head_dim"] + 1, True, 8.0):
        out.append(dict(BASE, head_dim=hd))
        out.append(dict(BASE, dim=60, n_heads=8, n_kv_heads=4, head_dim=hd))   # dim % n_heads != 0
        out.append(dict(BASE, dim=8, n_heads=16, n_kv_heads=16, head_dim=hd))  # more heads than dim
    out += [dict(BASE, dim=32, n_heads=32, n_kv_heads=32), dict(BASE, dim=48, n_heads=4, n_kv_heads=4),
            dict(BASE, n_heads=4, n_kv_heads=3), dict(BASE, n_heads=2, n_kv_heads=4)]
    for k in ("norm_eps", "rope_theta"):
        for v in (0, -1.0, 1e-5, 1, 9e11, 1e12, 1e13, math.nan, math.inf, -math.inf, True, "1"):
            out.append(dict(BASE, **{k: v}))
    for v in (True, False, 1, "yes", None):
        out.append(dict(BASE, tied_embeddings=v))
    return out


def _python_accepts(cfg: dict) -> bool:
    try:
        A.check_arch(cfg)
    except FormatError:
        return False
    return True


def _native_accepts(cfg: dict) -> bool:
    """Whether the native model's config check passes: with no tensors, a config it accepts fails
    on the first missing tensor instead."""
    try:
        K.NativeModel(cfg, {})
    except ModelError as exc:
        msg = str(exc)
        if msg.startswith("native model: tensor tok_embd: missing"):
            return True
        assert "config" in msg, msg
        return False
    raise AssertionError("a model without tensors was built")


@needs_native
@pytest.mark.parametrize("cfg", _grid(), ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items() if BASE.get(k) != v)
                         or "base")
def test_native_config_check_agrees_with_the_python_rule(cfg):
    py = _python_accepts(cfg)
    assert _native_accepts(cfg) == py, f"python {'accepts' if py else 'refuses'} {cfg}, native does not agree"


@needs_native
@pytest.mark.parametrize("layers,seq", [(2, 40), (4096, 1 << 20), (64, 1 << 14), (16, 1 << 16)])
def test_kv_cache_cap_is_the_same_number_in_python_and_cpp(layers, seq):
    arch = A.check_arch(dict(BASE, n_layers=layers, max_seq_len=seq))
    kv = A.kv_cache_bytes(arch)
    # the default cap (no max_kv_bytes in the config): the one bulletd.kernels handed over
    assert _native_accepts(arch) == (kv <= A.MAX_KV_BYTES)
    # a cap given per model (the runtime passes BULLET_MAX_KV_BYTES through native_config)
    for cap in (kv - 1, kv, kv + 1):
        assert _native_accepts(A.native_config(arch, cap)) == (kv <= cap)


def test_kv_cache_bytes_is_what_the_sessions_allocate():
    arch = A.check_arch(dict(BASE, head_dim=24))
    assert A.kv_cache_bytes(arch) == 2 * 4 * 2 * 40 * 2 * 24
    s = ReferenceModel(arch, {n: np.zeros(s, np.float32) for n, s in A.tensor_shapes(arch).items()}).new_session()
    assert s.kv_bytes == A.kv_cache_bytes(arch)
    if K.native_available():
        m = K.NativeModel(A.native_config(arch), K.random_bq4_tensors(arch, tied=False))
        assert m.new_session().kv_cache_bytes == A.kv_cache_bytes(arch)


def test_every_layer_refuses_what_the_rule_refuses():
    for cfg in _grid():
        ok = _python_accepts(cfg)
        for check in (validate_lm_arch, check_arch):
            try:
                check(cfg)
                got = True
            except (FormatError, ModelError):
                got = False
            assert got == ok, f"{check.__module__}.{check.__name__} on {cfg}"
        if ok and "head_dim" not in cfg:   # the trainer's arch has no head_dim field
            ModelArch(**cfg).check()
        elif all(isinstance(cfg.get(k), int) for k in A.INT_KEYS) and "head_dim" not in cfg:
            with pytest.raises(ValueError):
                ModelArch(**cfg).check()


def test_the_trainer_config_refuses_exactly_what_the_rule_refuses(tmp_path):
    """A training config's model keys are the arch keys; config_from_dict asks the rule and has no
    copy of it: over the grid, it accepts exactly the shapes the rule accepts, and its error is
    the rule's. (Grid points the config reads differently are left out: head_dim, which it does
    not take; null n_kv_heads / hidden_dim, which mean their defaults; vocab_size up to the
    tokenizer's base tokens, which the trainer refuses for its own reason.)"""
    from trainer.config import N_BASE_TOKENS, config_from_dict
    from trainer.errors import ConfigError

    train = dict(learning_rate=1e-3, batch_size=4, dataset_path=str(tmp_path / "data.jsonl"))
    checked = 0
    for cfg in _grid():
        if "head_dim" in cfg or cfg["n_kv_heads"] is None or cfg["hidden_dim"] is None or \
                (isinstance(cfg["vocab_size"], int) and cfg["vocab_size"] <= N_BASE_TOKENS):
            continue
        # the config reads norm_eps and rope_theta as floats, as YAML numbers
        cfg = {k: float(v) if k in ("norm_eps", "rope_theta") and type(v) in (int, float) else v
               for k, v in cfg.items()}
        try:
            rule = A.check_arch(cfg)
            why = None
        except FormatError as exc:
            rule, why = None, str(exc)
        try:
            tc = config_from_dict(dict(cfg, **train))
        except ConfigError as exc:
            assert why is not None, f"the rule accepts {cfg}, the trainer config refuses it: {exc}"
            if not str(exc).startswith("<config>: key "):    # the config's own type check came first
                assert str(exc) == f"<config>: {why}"
        else:
            assert why is None, f"the rule refuses {cfg} ({why}), the trainer config accepts it"
            assert A.check_arch(tc.arch().to_dict()) == rule
        checked += 1
    assert checked > 100


@pytest.mark.parametrize("arch", [
    dict(BASE), dict(BASE, tied_embeddings=True), dict(BASE, head_dim=24), dict(BASE, dim=60, n_heads=6, n_kv_heads=3),
    dict(BASE, dim=40, n_heads=8, n_kv_heads=2, head_dim=6), A.SMALL,
])
def test_every_module_takes_its_shapes_from_the_one_table(arch):
    table = A.tensor_shapes(A.check_arch(arch))
    assert lm_tensor_shapes(validate_lm_arch(arch)) == table
    assert expected_shapes(arch) == table
    tied = arch.get("tied_embeddings", False)
    got = {n: (v.shape[0], v.shape[1] * QK // BLOCK_BYTES) if v.dtype == np.uint8 else v.shape
           for n, v in K.random_bq4_tensors(arch, tied=tied).items()}
    padded = {n: (s[0], -(-s[1] // QK) * QK) if len(s) == 2 else s for n, s in table.items()}
    assert got == padded
    if "head_dim" not in arch:
        fused = ModelArch(**arch).param_shapes()
        for i in range(arch["n_layers"]):
            p = f"blk.{i}."
            assert fused[p + "wqkv"] == (table[p + "wq"][0] + table[p + "wk"][0] + table[p + "wv"][0], arch["dim"])
            assert fused[p + "w13"] == (table[p + "w1"][0] + table[p + "w3"][0], arch["dim"])
            for n in ("attn_norm", "wo", "ffn_norm", "w2"):
                assert fused[p + n] == table[p + n]
        assert {n: s for n, s in fused.items() if not n.startswith("blk.")} == \
               {n: s for n, s in table.items() if not n.startswith("blk.")}


@pytest.mark.parametrize("backend", ["numpy", pytest.param("native", marks=needs_native)])
def test_a_file_with_an_explicit_head_dim_is_read_and_runs_alike(tmp_path, backend):
    """head_dim 12 with dim 64 and 4 heads: q is (48, 64), not (64, 64). The container, the
    reference and the native model must all lay the tensors out by head_dim."""
    arch = dict(BASE, head_dim=12, vocab_size=260)
    p = synth.write_random_lm(tmp_path / "hd.bullet", arch, seed=3, dtype="f32")
    with BulletFile.open(p) as bf:
        assert bf.tensors["blk.0.wq"].shape == (48, 64)
        assert bf.tensors["blk.1.wo"].shape == (64, 48)
    ref = load_model(p, backend="numpy")
    m = load_model(p, backend=backend)
    ids = [1, 70, 80, 90, 100]
    a, b = ref.new_session(), m.new_session()
    np.testing.assert_allclose(b.prefill(ids, 0), a.prefill(ids, 0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(b.forward(7, 5), a.forward(7, 5), rtol=1e-4, atol=1e-4)
    ref.close()
    m.close()


@needs_native
def test_bq4_block_constants_agree_with_the_native_module():
    N = K.native_module()
    assert (N.QK, N.BQ4_BLOCK_BYTES) == (QK, BLOCK_BYTES) == (K.QK, K.BQ4_BLOCK)


def test_reference_and_small_are_defined_once():
    import trainer.bench as tb
    assert synth.REFERENCE is A.REFERENCE and synth.SMALL is A.SMALL
    assert K.REFERENCE is A.REFERENCE and K.SMALL is A.SMALL
    assert {k: v for k, v in tb.REFERENCE.to_dict().items() if k in A.REFERENCE} == A.REFERENCE
