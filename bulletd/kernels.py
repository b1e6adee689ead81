"""bulletd.kernels: the one door to the native module bulletd._native, and the NumPy reference of
every kernel it runs (the executable specification the parity tests hold each path to).

Native side (C++, native/): kernels in five variants (scalar reference, avx2, avx512vnni, neon,
neon_dot) behind a dispatch table filled once from the CPU's features; on x86-64 auto prefers
avx512vnni (AVX-512 F+BW+VL+VNNI, with the OS saving ZMM state) over avx2. BULLET_KERNEL=scalar
(or avx2, avx512vnni, neon, neon_dot) forces a path (a path the CPU cannot run, or an unknown
name, falls back to scalar; the active path is always what kernel_path() reports). The SIMD paths
repack each BQ4 matrix once at load into row groups (16 rows for AVX-512 VNNI, 8 for AVX2, 4 for
NEON) so one vector op serves several rows; the scalar path reads the mapped blocks. avx512vnni
has its own BQ4 x q8 kernels (vpdpbusd), q8 quantisation and attention; its other float kernels
are AVX2's. `NativeModel(config, tensors)` wraps `_native.Model`, `NativeSession(model)` wraps
`_native.Session` (its own KV cache; forward/prefill release the GIL) and turn the native module's
ValueError/RuntimeError into ModelError.

NumPy references below: activations are quantised per 32-element block to int8 (q8:
d = amax/127, q = round-half-even(x * (1/d)), zero-padded), BQ4 weights times q8 activations are
exact integer dot products per block scaled by d_w * d_x. Every other kernel is plain float32 math
in llama2.c's order.

The benchmark of the native forward per kernel path is bulletd.bench.kernels.
"""
from __future__ import annotations

import os

import numpy as np

from .errors import ModelError
from .format.arch import REFERENCE, SMALL, native_limits, tensor_shapes
from .format.bq4 import BLOCK_BYTES as BQ4_BLOCK, QK   # weights (and activations) per block; bytes per block

try:
    from . import _native  # type: ignore[attr-defined]
    _NATIVE_ERROR = None
except ImportError as exc:  # not built, or built for another Python
    _native = None
    _NATIVE_ERROR = f"{type(exc).__name__}: {exc}"
if _native is not None and hasattr(_native, "set_arch_limits"):
    _native.set_arch_limits(native_limits())   # the native model checks configs against these


# =============================================================================
# Access to the native module
# =============================================================================

def native_available() -> bool:
    return _native is not None


def native_error() -> str | None:
    """Why the native module is unavailable, or None."""
    return _NATIVE_ERROR


def native_module():
    """The bulletd._native module; ModelError when it is not built."""
    if _native is None:
        raise ModelError(f"the native module bulletd._native is unavailable ({_NATIVE_ERROR}); "
                         f"rebuild with `pip install --no-build-isolation -e .`")
    return _native


def kernel_path() -> str:
    """Active kernel path: "avx512vnni", "avx2", "neon_dot", "neon" or "scalar"; "numpy" without
    the module."""
    return _native.kernel_path() if _native is not None else "numpy"


def cpu_features() -> dict:
    """What dispatch saw: arch, and booleans avx2, fma, f16c, avx512f, avx512bw, avx512vl,
    avx512vnni (each AVX/AVX-512 flag only if the OS also saves that register state), neon,
    dotprod. Empty without the native module."""
    return dict(_native.cpu_features()) if _native is not None else {}


def available_kernels() -> list[str]:
    """Kernel paths this CPU and build can run (always includes "scalar" when built)."""
    return list(_native.available_kernels()) if _native is not None else []


def native_sampler():
    """The native token sampler (same rules as runtime.sampling.Sampler's NumPy path, GIL
    released), or None when the module is missing, too old, or BULLET_SAMPLER=numpy."""
    if _native is None or os.environ.get("BULLET_SAMPLER", "").lower() == "numpy":
        return None
    return getattr(_native, "sample_token", None)


def token_automaton(vocab: int, base=None):
    """A native token automaton for grammar decoding (rows added with .set(state, ids, next,
    done)), layered over `base`; None when the module lacks it or BULLET_SAMPLER=numpy."""
    if native_sampler() is None or not hasattr(_native, "TokenAutomaton"):
        return None
    return _native.TokenAutomaton(int(vocab), base)


class NativeModel:
    """A native model over borrowed arrays (views into the mapped file; kept alive here).

    config: dim, n_layers, n_heads, n_kv_heads, hidden_dim, vocab_size, max_seq_len, and optional
    norm_eps, rope_theta, tied_embeddings, head_dim. tensors: name -> ndarray; float32/float16
    arrays of the logical shape, or uint8 BQ4 blocks of shape (rows, ceil(cols/32)*20).
    kernel: "auto" (the dispatch choice) or a path name from available_kernels().
    Raises ModelError naming the config key or tensor that is wrong."""

    def __init__(self, config: dict, tensors: dict, kernel: str = "auto"):
        mod = native_module()
        try:
            self._m = mod.Model(dict(config), dict(tensors), kernel)
        except (ValueError, RuntimeError, TypeError) as exc:
            raise ModelError(f"native model: {exc}") from exc

    @property
    def kernel_path(self) -> str:
        return self._m.kernel_path

    @property
    def config(self) -> dict:
        """The config the model was built from."""
        return dict(self._m.config)

    @property
    def weight_bytes(self) -> int:
        """Bytes of the borrowed weight arrays (the mapped file's tensors)."""
        return self._m.weight_bytes

    @property
    def packed_bytes(self) -> int:
        """Bytes the kernel path allocated for its repacked copy of the BQ4 matrices (read at run
        time instead of the mapped blocks; 0 on the scalar path)."""
        return self._m.packed_bytes

    def new_session(self, prefill_chunk: int = 64) -> "NativeSession":
        return NativeSession(self, prefill_chunk)


class NativeSession:
    """One KV cache. forward(token, pos) and prefill(tokens, pos) return float32 logits (vocab,).
    Positions must be filled in order: pos may not exceed the number of positions computed so far.
    A session must not be used by two threads at once (the native side refuses, with an error)."""

    def __init__(self, model: NativeModel, prefill_chunk: int = 64):
        mod = native_module()
        native = model._m if isinstance(model, NativeModel) else model
        try:
            self._s = mod.Session(native, prefill_chunk)
        except (ValueError, RuntimeError, TypeError) as exc:
            raise ModelError(f"native session: {exc}") from exc

    def forward(self, token: int, pos: int) -> np.ndarray:
        try:
            return self._s.forward(int(token), int(pos))
        except (ValueError, RuntimeError, TypeError, OverflowError) as exc:
            raise ModelError(str(exc)) from exc

    def prefill(self, tokens, pos: int = 0) -> np.ndarray:
        try:
            return self._s.prefill([int(t) for t in tokens], int(pos))
        except (ValueError, RuntimeError, TypeError, OverflowError) as exc:
            raise ModelError(str(exc)) from exc

    @property
    def has_decode(self) -> bool:
        """Whether this build has the batched decode loop (a module built before it lacks it)."""
        return hasattr(self._s, "decode")

    def decode(self, logits: np.ndarray, pending: int, pos: int, n: int, coins: np.ndarray, seen: np.ndarray,
               temperature: float, top_k: int, top_p: float, penalty: float, stop_ids: np.ndarray):
        """Sample up to n tokens in one native call (GIL released), running each through the model
        before drawing the next; the last one drawn is not run (pass it as `pending` next time).
        logits: the caller's float32 buffer of the logits at pos - 1, overwritten in place.
        Returns (tokens, end, next_pos), end in "count", "stop_id", "nonfinite"."""
        try:
            return self._s.decode(logits, int(pending), int(pos), int(n), coins, seen, float(temperature),
                                  int(top_k), float(top_p), float(penalty), stop_ids)
        except (ValueError, RuntimeError, TypeError, OverflowError) as exc:
            raise ModelError(str(exc)) from exc

    @property
    def has_decode_grammar(self) -> bool:
        """Whether this build has the decode loop under a grammar automaton."""
        return hasattr(self._s, "decode_grammar")

    def decode_grammar(self, logits: np.ndarray, pending: int, pos: int, n: int, coins: np.ndarray,
                       seen: np.ndarray, temperature: float, top_k: int, top_p: float, penalty: float,
                       stop_ids: np.ndarray, automaton, state: int):
        """decode() among the ids a token automaton (token_automaton()) allows, following its
        transitions. Returns (tokens, end, next_pos, state), end in "count", "stop_id",
        "nonfinite", "expand" (state has no row yet), "complete" (the document is complete)."""
        try:
            return self._s.decode_grammar(logits, int(pending), int(pos), int(n), coins, seen, float(temperature),
                                          int(top_k), float(top_p), float(penalty), stop_ids, automaton, int(state))
        except (ValueError, RuntimeError, TypeError, OverflowError) as exc:
            raise ModelError(str(exc)) from exc

    @property
    def threads(self) -> int:
        """Threads one forward step runs on (1 unless set_threads said otherwise)."""
        return self._s.threads if hasattr(self._s, "threads") else 1

    def set_threads(self, n: int) -> None:
        """Split each step's matrix products and attention heads among n threads (1..64): the
        session's own pinned workers and the calling thread. The logits are the same bit for bit."""
        if not hasattr(self._s, "threads"):
            if n != 1:
                raise ModelError("this build of the native module runs one thread per session")
            return
        try:
            self._s.threads = int(n)
        except (ValueError, RuntimeError, TypeError, OverflowError) as exc:
            raise ModelError(str(exc)) from exc

    @property
    def profiling(self) -> bool:
        """Whether decode steps time their parts (see profile); off by default, and then free."""
        return bool(getattr(self._s, "profiling", False))

    @profiling.setter
    def profiling(self, on: bool) -> None:
        if not hasattr(self._s, "profiling"):
            raise ModelError("this build of the native module has no step profile")
        try:
            self._s.profiling = bool(on)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(str(exc)) from exc

    @property
    def profile(self) -> dict:
        """Seconds each part of the profiled decode steps took, summed ("qkv", "wo", "ffn",
        "classifier", "attention", "norm", "rope", "act", "embed", "sample"), and "steps": the
        forward steps profiled (one-thread steps while profiling is on; turning it on clears it)."""
        return dict(self._s.profile)

    @property
    def kv_cache_bytes(self) -> int:
        return self._s.kv_cache_bytes

    @property
    def scratch_bytes(self) -> int:
        return self._s.scratch_bytes

    @property
    def valid_len(self) -> int:
        return self._s.valid_len


# =============================================================================
# NumPy references (the specification of each native kernel)
# =============================================================================

def bq4_unpack_ref(blocks: np.ndarray, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """BQ4 blocks uint8 (rows, nb*20) -> (scales float32 (rows, nb), q int8 (rows, nb, 32)).
    Byte j of a block's 16 nibble bytes holds q[j] (low nibble) and q[j+16] (high), two's complement."""
    blocks = np.asarray(blocks, dtype=np.uint8)
    rows = blocks.shape[0]
    nb = -(-cols // QK)
    b = blocks.reshape(rows, nb, BQ4_BLOCK)
    d = b[:, :, 0:2].copy().view(np.float16)[:, :, 0].astype(np.float32)
    qs = b[:, :, 4:]
    lo = ((qs & 0x0F).astype(np.int8) ^ 8) - 8
    hi = ((qs >> 4).astype(np.int8) ^ 8) - 8
    return d, np.concatenate([lo, hi], axis=2).astype(np.int8)


def quantize_q8_ref(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x float32 (n,) -> (d float32 (nb,), sum int32 (nb,), q int8 (nb, 32)), zero-padded past n.
    d = amax / 127; q = round-half-even(x * (1 / d)) (q = 0 when d = 0)."""
    x = np.asarray(x, dtype=np.float32).ravel()
    nb = -(-x.size // QK)
    xp = np.zeros(nb * QK, dtype=np.float32)
    xp[: x.size] = x
    xp = xp.reshape(nb, QK)
    amax = np.max(np.abs(xp), axis=1)
    d = (amax / np.float32(127.0)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(d != 0, np.float32(1.0) / d, np.float32(0.0)).astype(np.float32)
    q = np.rint(xp * inv[:, None]).astype(np.int32)
    return d, q.sum(axis=1).astype(np.int32), q.astype(np.int8)


def matmul_bq4_q8_ref(blocks: np.ndarray, rows: int, cols: int, x: np.ndarray) -> np.ndarray:
    """out (T, rows): for each activation row t (quantised to q8) and weight row r,
    sum over blocks b of (d_w[r,b] * d_x[t,b]) * sum_j q_w[r,b,j] * q_x[t,b,j] (integer)."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    dw, qw = bq4_unpack_ref(np.asarray(blocks).reshape(rows, -1), cols)
    qx = [quantize_q8_ref(row) for row in x]
    dx = np.stack([a[0] for a in qx])                       # (T, nb)
    qq = np.stack([a[2] for a in qx]).astype(np.int32)     # (T, nb, 32)
    isum = np.einsum("rbj,tbj->trb", qw.astype(np.int32), qq)      # exact integers
    scale = dw[None, :, :] * dx[:, None, :]                         # (T, rows, nb) float32
    return np.sum(scale * isum.astype(np.float32), axis=2, dtype=np.float32)


def dot_f32_ref(a: np.ndarray, b: np.ndarray) -> np.float32:
    return np.float32(np.dot(np.asarray(a, np.float32), np.asarray(b, np.float32)))


def rmsnorm_ref(x: np.ndarray, w: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """w * (x / sqrt(mean(x^2) + eps)), llama2.c's rmsnorm."""
    x = np.asarray(x, np.float32)
    ss = np.float32(np.dot(x, x)) / np.float32(x.size) + np.float32(eps)
    return (np.asarray(w, np.float32) * (x * (np.float32(1.0) / np.sqrt(ss)))).astype(np.float32)


def softmax_ref(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    e = np.exp(x - np.max(x))
    return (e / np.sum(e, dtype=np.float32)).astype(np.float32)


def swiglu_ref(g: np.ndarray, u: np.ndarray) -> np.ndarray:
    """silu(g) * u = g / (1 + exp(-g)) * u."""
    g = np.asarray(g, np.float32)
    return (g / (np.float32(1.0) + np.exp(-g)) * np.asarray(u, np.float32)).astype(np.float32)


def rope_angles_ref(pos: int, head_dim: int, theta: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin (head_dim/2,) float32: freq_i = 1 / theta^(2i/hd), angle = f32(pos * freq_i)."""
    i2 = np.arange(0, head_dim, 2, dtype=np.float32)
    freq = np.float32(1.0) / np.power(np.float32(theta), i2 / np.float32(head_dim))
    ang = (np.float32(pos) * freq).astype(np.float32)
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def rope_ref(v: np.ndarray, n_heads: int, head_dim: int, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate pairs (2i, 2i+1) of each head: (a, b) -> (a cos - b sin, a sin + b cos)."""
    h = np.asarray(v, np.float32).reshape(n_heads, head_dim // 2, 2)
    a, b = h[..., 0], h[..., 1]
    out = np.empty_like(h)
    out[..., 0] = a * cos - b * sin
    out[..., 1] = a * sin + b * cos
    return out.reshape(-1)


def attention_ref(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """One head: softmax(K q / sqrt(hd)) @ V; q (hd,), k and v (n, hd)."""
    q = np.asarray(q, np.float32)
    att = softmax_ref((np.asarray(k, np.float32) @ q) / np.float32(np.sqrt(np.float32(q.size))))
    return (att @ np.asarray(v, np.float32)).astype(np.float32)


# =============================================================================
# Random models (benchmarks and tests)
# =============================================================================

def random_bq4_tensors(config: dict, seed: int = 0, tied: bool = True) -> dict:
    """Random weights for `config` as the native Model takes them (BQ4 blocks for matrices, f32
    norms), quantised with bulletd.format.quantize_bq4. For benchmarks and tests."""
    from .format import quantize_bq4
    rng = np.random.default_rng(seed)
    table = tensor_shapes(dict(config, tied_embeddings=tied))
    # drawn in this order (the benchmarks' figures and the tests' models stay those of one seed)
    order = ["tok_embd", "out_norm"] + ([] if tied else ["output"]) + [
        f"blk.{i}.{n}" for i in range(config["n_layers"])
        for n in ("attn_norm", "ffn_norm", "wq", "wk", "wv", "wo", "w1", "w2", "w3")]
    out = {}
    for name in order:
        shape = table[name]
        if len(shape) == 1:
            out[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            out[name] = quantize_bq4((rng.standard_normal(shape) / np.sqrt(shape[1])).astype(np.float32))
    return out
