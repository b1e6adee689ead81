"""Parity of every native kernel path this machine can run (and the scalar reference) against the
NumPy references in bulletd.kernels, with named tolerances, odd lengths, tails and fixed seeds.

Run: pytest tests/test_kernels.py -q
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from bulletd import kernels as K
from bulletd.errors import ModelError
from bulletd.format import dequantize_bq4, quantize_bq4

from _kernels_util import assert_close

pytestmark = pytest.mark.skipif(not K.native_available(), reason=f"native module not built: {K.native_error()}")

PATHS = K.available_kernels() if K.native_available() else []
N = K.native_module() if K.native_available() else None

# Named tolerances (relative to max|ref|, absolute)
TOL_INT_DOT = (2e-6, 1e-6)     # exact integer block sums; only the f32 sum over blocks may differ
TOL_F32_SUM = (2e-6, 1e-6)     # float dot products: summation order differs between paths
TOL_EXP = (1e-5, 1e-7)         # the AVX2 polynomial exp is within 2 ulp of expf
LENGTHS = [1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 100, 257]


def test_dispatch_reports_a_path_this_cpu_runs():
    assert K.kernel_path() in PATHS
    feats = K.cpu_features()
    assert feats["arch"] in ("x86_64", "aarch64", "other")
    assert "scalar" in PATHS
    if feats.get("avx2") and feats.get("fma") and feats.get("f16c"):
        assert "avx2" in PATHS
        # with AVX-512 F/BW/VL/VNNI too (and the OS saving ZMM state) auto prefers avx512vnni
        vnni = all(feats.get(k) for k in ("avx512f", "avx512bw", "avx512vl", "avx512vnni"))
        assert ("avx512vnni" in PATHS) == vnni
        if not os.environ.get("BULLET_KERNEL"):
            assert K.kernel_path() == ("avx512vnni" if vnni else "avx2")


def test_bullet_kernel_scalar_forces_the_reference_path():
    code = "import bulletd.kernels as k; print(k.kernel_path())"
    env = dict(os.environ, BULLET_KERNEL="scalar")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "scalar"


def test_unknown_kernel_path_is_refused():
    with pytest.raises(ModelError, match="kernel path 'sse9' is unknown"):
        K.NativeModel({"dim": 32}, {}, kernel="sse9")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("n", LENGTHS + [1000])
def test_quantize_q8_is_bit_identical_to_numpy(path, n):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 3).astype(np.float32)
    if n > 20:
        x[5] = 0.0
        x[11] = x[3] * 0.5  # values near a rounding half
    d, s, q = N.k_quantize_q8(path, x)
    rd, rs, rq = K.quantize_q8_ref(x)
    np.testing.assert_array_equal(d, rd, err_msg=f"{path} q8 scales n={n}")
    np.testing.assert_array_equal(q, rq, err_msg=f"{path} q8 quants n={n}")
    np.testing.assert_array_equal(s, rs, err_msg=f"{path} q8 sums n={n}")


@pytest.mark.parametrize("path", PATHS)
def test_quantize_q8_of_zeros_and_halves(path):
    x = np.zeros(64, np.float32)
    d, s, q = N.k_quantize_q8(path, x)
    assert np.all(d == 0) and np.all(q == 0) and np.all(s == 0)
    # amax 127 -> d = 1, so x = k + 0.5 lands exactly on a half: ties go to even
    x = np.array([127.0] + [0.5, 1.5, 2.5, -0.5, -1.5, -2.5] + [0.0] * 25, np.float32)
    d, s, q = N.k_quantize_q8(path, x)
    assert d[0] == 1.0
    assert q[0, :7].tolist() == [127, 0, 2, 2, 0, -2, -2]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("rows,cols", [(1, 32), (7, 40), (8, 64), (9, 172), (33, 256), (13, 100), (64, 31)])
@pytest.mark.parametrize("T", [1, 2, 5, 70])
def test_bq4_matmul_matches_numpy(path, rows, cols, T):
    rng = np.random.default_rng(rows * 1000 + cols + T)
    blocks = quantize_bq4(rng.standard_normal((rows, cols)).astype(np.float32))
    x = rng.standard_normal((T, cols)).astype(np.float32)
    got = N.k_matmul_bq4(path, blocks, rows, cols, x)
    ref = K.matmul_bq4_q8_ref(blocks, rows, cols, x)
    assert_close(f"{path} bq4 {'matvec' if T == 1 else 'matmul'} ({rows}x{cols}) T={T}", ref, got, *TOL_INT_DOT)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cols", [32, 33, 64, 172, 768])
def test_bq4_single_row_dot_matches_numpy(path, cols):
    rng = np.random.default_rng(cols)
    blocks = quantize_bq4(rng.standard_normal((1, cols)).astype(np.float32))
    x = rng.standard_normal(cols).astype(np.float32)
    got = N.k_dot_bq4_q8(path, blocks, x)
    ref = K.matmul_bq4_q8_ref(blocks, 1, cols, x[None])[0, 0]
    assert_close(f"{path} dot_bq4_q8 cols={cols}", [ref], [got], *TOL_INT_DOT)


def test_bq4_quantised_product_is_close_to_the_float_product():
    """The q8 activation error is small: the int8 path is a faithful approximation of W @ x."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((64, 256)).astype(np.float32)
    blocks = quantize_bq4(w)
    x = rng.standard_normal((1, 256)).astype(np.float32)
    exact = dequantize_bq4(blocks, 256) @ x[0]
    got = N.k_matmul_bq4(K.kernel_path(), blocks, 64, 256, x)[0]
    assert_close("bq4 x q8 vs bq4 x f32", exact, got, 2e-2, 0.0)


def test_native_dequantize_matches_format():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((5, 70)).astype(np.float32)
    blocks = quantize_bq4(w)
    np.testing.assert_array_equal(N.bq4_dequantize(blocks, 5, 70), dequantize_bq4(blocks, 70))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("n", [0] + LENGTHS)
def test_float_vector_kernels_match_numpy(path, n):
    rng = np.random.default_rng(100 + n)
    a, b, w = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
    assert_close(f"{path} dot_f32 n={n}", [np.dot(a.astype(np.float64), b)], [N.k_dot_f32(path, a, b)], *TOL_F32_SUM)
    h = a.astype(np.float16)
    ref16 = np.dot(h.astype(np.float64), b)
    assert_close(f"{path} dot_f16 n={n}", [ref16], [N.k_dot_f16(path, h.view(np.uint16), b)], *TOL_F32_SUM)
    assert_close(f"{path} axpy n={n}", b + np.float32(0.37) * a, N.k_axpy(path, 0.37, a, b), 1e-6, 1e-6)
    if n == 0:
        return
    assert_close(f"{path} rmsnorm n={n}", K.rmsnorm_ref(a, w, 1e-5), N.k_rmsnorm(path, a, w, 1e-5), 1e-5, 1e-6)
    s = (rng.standard_normal(n) * 6).astype(np.float32)
    assert_close(f"{path} softmax n={n}", K.softmax_ref(s), N.k_softmax(path, s), *TOL_EXP)
    g = (rng.standard_normal(n) * 4).astype(np.float32)
    assert_close(f"{path} swiglu n={n}", K.swiglu_ref(g, b), N.k_swiglu(path, g, b), *TOL_EXP)


@pytest.mark.parametrize("path", PATHS)
def test_softmax_handles_large_and_equal_scores(path):
    x = np.array([1000.0, 1000.0, -1000.0, 999.0, -np.inf], np.float32)
    assert_close(f"{path} softmax extremes", K.softmax_ref(x), N.k_softmax(path, x), *TOL_EXP)
    assert abs(float(np.sum(N.k_softmax(path, np.zeros(37, np.float32)))) - 1.0) < 1e-6


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("head_dim", [2, 6, 8, 64])
@pytest.mark.parametrize("pos", [0, 1, 17, 255])
def test_rope_matches_numpy(path, head_dim, pos):
    rng = np.random.default_rng(head_dim + pos)
    v = rng.standard_normal(3 * head_dim).astype(np.float32)
    cos, sin = K.rope_angles_ref(pos, head_dim, 10000.0)
    assert_close(f"{path} rope hd={head_dim} pos={pos}", K.rope_ref(v, 3, head_dim, cos, sin),
                 N.k_rope(path, v, 3, head_dim, cos, sin), 1e-6, 1e-6)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("head_dim", [2, 8, 48, 64])
@pytest.mark.parametrize("n", [1, 3, 8, 31, 33, 100, 256])
def test_attention_matches_numpy(path, head_dim, n):
    rng = np.random.default_rng(head_dim * 1000 + n)
    q = rng.standard_normal(head_dim).astype(np.float32)
    k = rng.standard_normal((n, head_dim)).astype(np.float32)
    v = rng.standard_normal((n, head_dim)).astype(np.float32)
    assert_close(f"{path} attention hd={head_dim} n={n}", K.attention_ref(q, k, v), N.k_attention(path, q, k, v),
                 1e-5, 1e-6)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("head_dim", [2, 8, 24, 64])
@pytest.mark.parametrize("n0", [0, 1, 6, 29, 124])
@pytest.mark.parametrize("nq", [1, 3, 4])
def test_prefill_attention_of_consecutive_queries_is_causal_and_matches_numpy(path, head_dim, n0, nq):
    rng = np.random.default_rng(head_dim * 100 + n0 * 7 + nq)
    q = rng.standard_normal((nq, head_dim)).astype(np.float32)
    k = rng.standard_normal((n0 + nq, head_dim)).astype(np.float32)
    v = rng.standard_normal((n0 + nq, head_dim)).astype(np.float32)
    got = N.k_attention_multi(path, q, k, v, n0)
    for i in range(nq):  # query i sits at position n0 + i and must not see later positions
        ref = K.attention_ref(q[i], k[: n0 + i + 1], v[: n0 + i + 1])
        assert_close(f"{path} attention_multi hd={head_dim} n0={n0} query {i}/{nq}", ref, got[i], 1e-5, 1e-6)


def test_a_wrong_kernel_result_is_detected():
    """The tolerance helper fails on a real discrepancy and names ref/got/err."""
    with pytest.raises(AssertionError, match=r"ref=1 got=1.001 err="):
        assert_close("demo", np.array([1.0, 0.0]), np.array([1.001, 0.0]), *TOL_INT_DOT)
