"""The avx512vnni kernel path (native/kernels_avx512.cpp: vpdpbusd BQ4 x q8 on 16-row groups) and
its dispatch, beyond the shared parity tests that tests/test_kernels.py and tests/test_native_model.py
already run on every path in available_kernels():

- integer exactness: with unit scales every output is an exact integer, so the path must equal
  the int64 NumPy product bit for bit (extreme nibbles -8/+7, activations +-127, ragged shapes);
- the float side is the AVX2 path's operation for operation, so both paths agree bit for bit
  (the products and SwiGLU);
- the AVX-512 attention (64 positions / output elements per pass, masked tails) and prefill
  attention (4 queries, 32 per pass) on head sizes and cache lengths past one pass, against NumPy;
- dispatch: auto prefers avx512vnni when the CPU and OS support it, BULLET_KERNEL=avx2/scalar
  still force those paths, and the CPU-feature report names the AVX-512 flags.

Tests that need the instructions skip, naming the reason, on a CPU without AVX-512 VNNI.
Run: pytest tests/test_kernels_avx512.py -q
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from bulletd import kernels as K
from bulletd.format import quantize_bq4

from _kernels_util import assert_close

pytestmark = pytest.mark.skipif(not K.native_available(), reason=f"native module not built: {K.native_error()}")

PATHS = K.available_kernels() if K.native_available() else []
N = K.native_module() if K.native_available() else None
FEATS = K.cpu_features() if K.native_available() else {}
HAS_VNNI = "avx512vnni" in PATHS
needs_vnni = pytest.mark.skipif(
    not HAS_VNNI, reason="this CPU/OS/build cannot run AVX-512 F+BW+VL+VNNI (cpu_features: "
    + ", ".join(f"{k}={v}" for k, v in FEATS.items() if k.startswith("avx")) + ")")

TOL_INT_DOT = (2e-6, 1e-6)   # as tests/test_kernels.py
SHAPES = [(1, 32), (15, 33), (16, 64), (17, 100), (31, 172), (33, 256), (100, 768), (13, 31)]


def _kernel_in_subprocess(env_value, code="import bulletd.kernels as k; print(k.kernel_path())"):
    env = {k: v for k, v in os.environ.items() if k != "BULLET_KERNEL"}
    if env_value is not None:
        env["BULLET_KERNEL"] = env_value
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


MODEL_PATH_CODE = """
import bulletd.kernels as K
cfg = dict(K.SMALL, n_layers=1, tied_embeddings=True, max_seq_len=8)
print(K.NativeModel(cfg, K.random_bq4_tensors(cfg, seed=1)).kernel_path)
"""


def _bq4_unit_scale(q: np.ndarray) -> np.ndarray:
    """BQ4 blocks (rows, nb*20) with scale 1.0 and the given int nibbles q (rows, nb*32) in [-8, 7]."""
    rows, n = q.shape
    nb = n // 32
    b = np.zeros((rows, nb, 20), np.uint8)
    b[:, :, 0:2] = np.frombuffer(np.float16(1.0).tobytes(), np.uint8)
    u = (q.reshape(rows, nb, 32) & 0x0F).astype(np.uint8)
    b[:, :, 4:] = u[:, :, :16] | (u[:, :, 16:] << 4)
    return b.reshape(rows, nb * 20)


def _integer_case(rng, rows, cols, T, extreme):
    """Weights and activations whose q8 quantisation is exact (every block's max |x| is 127, so
    d = 1 and q = x) and whose product is therefore an exact integer in float32."""
    nbc = -(-cols // 32) * 32
    if extreme:  # worst-case magnitudes: every product is +-8*127 or 7*127
        q = rng.choice(np.array([-8, 7], np.int64), size=(rows, nbc))
        x = rng.choice(np.array([-127, 127], np.int64), size=(T, cols))
    else:
        q = rng.integers(-8, 8, size=(rows, nbc))
        x = rng.integers(-127, 128, size=(T, cols))
        x[:, ::32] = rng.choice(np.array([-127, 127]), size=x[:, ::32].shape)  # amax 127 in every block
    q[:, cols:] = 0  # weights past `cols` are zero, as the format requires
    want = x @ q[:, :cols].T  # exact int64 (|value| <= 8 * 127 * 768 < 2**24, exact in float32 too)
    return _bq4_unit_scale(q), x.astype(np.float32), want


@needs_vnni
@pytest.mark.parametrize("extreme", [False, True], ids=["random", "extreme"])
@pytest.mark.parametrize("T", [1, 3, 9, 70])
@pytest.mark.parametrize("rows,cols", SHAPES)
def test_integer_dot_products_are_exact(rows, cols, T, extreme):
    rng = np.random.default_rng(rows * 7919 + cols * 31 + T + extreme)
    blocks, x, want = _integer_case(rng, rows, cols, T, extreme)
    got = N.k_matmul_bq4("avx512vnni", blocks, rows, cols, x)
    np.testing.assert_array_equal(got, want.astype(np.float32),
                                  err_msg=f"avx512vnni {rows}x{cols} T={T} extreme={extreme}")
    # the scalar reference agrees, so the integer case itself is sound
    np.testing.assert_array_equal(N.k_matmul_bq4("scalar", blocks, rows, cols, x), want.astype(np.float32))


@needs_vnni
@pytest.mark.parametrize("cols", [32, 33, 100, 768])
def test_single_row_dot_is_exact_on_integer_data(cols):
    rng = np.random.default_rng(cols)
    blocks, x, want = _integer_case(rng, 1, cols, 1, extreme=True)
    assert N.k_dot_bq4_q8("avx512vnni", blocks, x[0]) == float(want[0, 0])


@needs_vnni
@pytest.mark.skipif("avx2" not in PATHS, reason="no AVX2 path to compare with")
@pytest.mark.parametrize("T", [1, 2, 8, 13, 16, 24, 70])   # prefill tiles: 16 tokens, then 8, then 1..7
@pytest.mark.parametrize("rows,cols", SHAPES + [(2048, 256), (256, 768)])
def test_float_results_equal_the_avx2_path_bit_for_bit(rows, cols, T):
    rng = np.random.default_rng(rows + 1000 * cols + T)
    blocks = quantize_bq4(rng.standard_normal((rows, cols)).astype(np.float32))
    x = (rng.standard_normal((T, cols)) * rng.uniform(0.01, 100, size=(T, 1))).astype(np.float32)
    a = N.k_matmul_bq4("avx2", blocks, rows, cols, x)
    b = N.k_matmul_bq4("avx512vnni", blocks, rows, cols, x)
    np.testing.assert_array_equal(b, a, err_msg=f"avx512vnni vs avx2 {rows}x{cols} T={T}")
    assert_close(f"avx512vnni vs numpy {rows}x{cols} T={T}", K.matmul_bq4_q8_ref(blocks, rows, cols, x), b,
                 *TOL_INT_DOT)


@needs_vnni
@pytest.mark.parametrize("head_dim", [16, 64, 80, 128])
@pytest.mark.parametrize("n", [1, 15, 64, 65, 130, 256])
def test_attention_past_one_pass_matches_numpy(head_dim, n):
    rng = np.random.default_rng(head_dim * 1000 + n)
    q = rng.standard_normal(head_dim).astype(np.float32)
    k = rng.standard_normal((n, head_dim)).astype(np.float32)
    v = rng.standard_normal((n, head_dim)).astype(np.float32)
    assert_close(f"avx512vnni attention hd={head_dim} n={n}", K.attention_ref(q, k, v),
                 N.k_attention("avx512vnni", q, k, v), 1e-5, 1e-6)


@needs_vnni
@pytest.mark.parametrize("head_dim", [40, 80, 128])
@pytest.mark.parametrize("n0", [0, 27, 28, 60, 130])
def test_prefill_attention_past_one_pass_is_causal_and_matches_numpy(head_dim, n0):
    rng = np.random.default_rng(head_dim * 100 + n0)
    q = rng.standard_normal((4, head_dim)).astype(np.float32)
    k = rng.standard_normal((n0 + 4, head_dim)).astype(np.float32)
    v = rng.standard_normal((n0 + 4, head_dim)).astype(np.float32)
    got = N.k_attention_multi("avx512vnni", q, k, v, n0)
    for i in range(4):  # query i sits at position n0 + i and must not see later positions
        ref = K.attention_ref(q[i], k[: n0 + i + 1], v[: n0 + i + 1])
        assert_close(f"avx512vnni attention_multi hd={head_dim} n0={n0} query {i}", ref, got[i], 1e-5, 1e-6)


@needs_vnni
@pytest.mark.parametrize("n", [1, 7, 8, 15, 16, 17, 24, 31, 33, 100, 768, 1000])
def test_swiglu_equals_the_avx2_path_bit_for_bit(n):
    rng = np.random.default_rng(n)
    g = (rng.standard_normal(n) * 6).astype(np.float32)
    g[:: 7] *= 20          # past the exp clamp on both sides
    u = rng.standard_normal(n).astype(np.float32)
    np.testing.assert_array_equal(N.k_swiglu("avx512vnni", g, u), N.k_swiglu("avx2", g, u), err_msg=f"n={n}")


@needs_vnni
def test_quantize_q8_extremes_are_bit_identical():
    x = np.array([127.0, -127.0, 0.5, -0.5, 1.5, 2.5, 1e-30, -1e30, 3e38, -3e38] + [0.0] * 22
                 + list(np.linspace(-1, 1, 32)) + [7.0] * 32, np.float32)
    for n in (x.size, x.size - 5, 1):
        d, s, q = N.k_quantize_q8("avx512vnni", x[:n])
        rd, rs, rq = K.quantize_q8_ref(x[:n])
        np.testing.assert_array_equal(d, rd)
        np.testing.assert_array_equal(q, rq)
        np.testing.assert_array_equal(s, rs)


@needs_vnni
def test_model_packs_weights_for_the_new_path():
    cfg = dict(K.SMALL, n_layers=1, tied_embeddings=True, max_seq_len=8)
    t = K.random_bq4_tensors(cfg, seed=2)
    m = K.NativeModel(cfg, t, "avx512vnni")
    assert m.kernel_path == "avx512vnni"
    # 16-row groups: f16 scales padded per group to 64 bytes; 18 bytes per row-block before padding
    row_blocks = sum(a.shape[0] * (a.shape[1] // 20) for a in t.values() if a.dtype == np.uint8)
    assert 18 * row_blocks <= m.packed_bytes <= 18 * row_blocks * 1.5
    s = m.new_session()
    a = s.prefill([1, 2, 3], 0)
    ref = K.NativeModel(cfg, t, "scalar").new_session().prefill([1, 2, 3], 0)
    assert_close("avx512vnni vs scalar model prefill", ref, a, 2e-3, 1e-4)


@needs_vnni
def test_cpu_features_report_the_avx512_flags():
    for k in ("avx512f", "avx512bw", "avx512vl", "avx512vnni"):
        assert FEATS[k] is True, k


def test_cpu_features_have_the_avx512_keys_everywhere():
    assert {"avx512f", "avx512bw", "avx512vl", "avx512vnni"} <= set(FEATS)
    if FEATS["arch"] != "x86_64":
        assert not any(FEATS[k] for k in ("avx512f", "avx512bw", "avx512vl", "avx512vnni"))


@needs_vnni
def test_auto_dispatch_prefers_avx512vnni():
    assert _kernel_in_subprocess(None) == "avx512vnni"
    assert _kernel_in_subprocess("auto") == "avx512vnni"


@needs_vnni
@pytest.mark.parametrize("forced", ["avx2", "scalar", "avx512vnni"])
def test_bullet_kernel_still_forces_a_path(forced):
    if forced not in PATHS:
        pytest.skip(f"{forced} not available here")
    assert _kernel_in_subprocess(forced) == forced


@pytest.mark.parametrize("forced", PATHS)
def test_bullet_kernel_governs_models_built_with_auto(forced):
    """A model built with kernel="auto" (what load_model and `bullet bench` do) runs the path
    BULLET_KERNEL names, e.g. a forced avx2 baseline on an AVX-512 VNNI machine."""
    assert _kernel_in_subprocess(forced, MODEL_PATH_CODE) == forced
