"""Causal attention kernels in NumPy: the plain reference and a FlashAttention-style tiled version.

Shapes: q (B, H, T, hd), k and v (B, KV, T, hd), H a multiple of KV (grouped-query heads: query
head h reads kv head h // (H/KV)). Scores are scaled by 1/sqrt(hd); position i attends to j <= i.

* plain: S = q k^T, P = softmax(S + causal mask), out = P v. The backward pass reuses the stored
  P, so memory is O(B H T^2).
* flash: the queries and keys are cut into tiles of `block` rows. The forward pass keeps, per query
  row, a running max m and a running normaliser l (online softmax: when a new tile raises the max,
  the old sums are rescaled by exp(m_old - m_new)) and stores only the output and the row's
  log-sum-exp L = m + log l. The backward pass recomputes each tile's probabilities from L
  (P = exp(S - L)) instead of storing them, using D_i = sum_d dO_id O_id:
      dV_j += P^T dO,  dP = dO V^T,  dS = P * (dP - D),  dQ += dS K / sqrt(hd),  dK += dS^T Q / sqrt(hd)
  so memory is O(B H T hd + B H block^2), linear in T.

* grouped (`grouped_fwd` / `grouped_bwd`, used by the model's fused self-attention while one
  layer's P fits STORE_P_BYTES, whichever impl is configured): plain's math with P kept, laid out
  transposed (keys along the rows) so the softmax reduces over an outer axis, and the g query
  heads of each kv head stacked along the rows so one batched product serves them all.

`attention_fwd` / `attention_bwd` are the entry points of plain and flash; `tests/test_autograd.py`
checks the implementations against finite differences and against each other, and
`peak_attention_memory` measures the difference at long context (also printed by
`bullet-train bench`).
"""
from __future__ import annotations

import functools
import math
import tracemalloc

import numpy as np


def _expand_kv(k: np.ndarray, n_heads: int) -> np.ndarray:
    kv = k.shape[1]
    if n_heads % kv:
        raise ValueError(f"attention: {n_heads} query heads is not a multiple of {kv} kv heads")
    return k if kv == n_heads else np.repeat(k, n_heads // kv, axis=1)


def _reduce_kv(g: np.ndarray, kv: int) -> np.ndarray:
    B, H, T, d = g.shape
    return g if kv == H else g.reshape(B, kv, H // kv, T, d).sum(axis=2)


def _make_causal_bias(i0, i1, j0, j1, dtype, repeat):
    i = np.arange(i0, i1)[:, None]
    j = np.arange(j0, j1)[None, :]
    b = np.where(j <= i, 0.0, -np.inf).astype(dtype)
    return np.tile(b.T, (1, repeat)) if repeat else b


@functools.lru_cache(maxsize=64)
def _causal_bias_cached(i0, i1, j0, j1, dtype, repeat):
    b = _make_causal_bias(i0, i1, j0, j1, dtype, repeat)
    b.flags.writeable = False
    return b


def _causal_bias(i0, i1, j0, j1, dtype, repeat=0):
    """0 where key j <= query i, -inf elsewhere, for the tile rows i0:i1, cols j0:j1. With
    `repeat`, transposed (keys along the rows) and the query columns `repeat` times over (grouped
    query heads stacked). Read-only; cached up to 1 MiB (tiles, short contexts)."""
    dtype = np.dtype(dtype)
    if (i1 - i0) * (j1 - j0) * max(1, repeat) * dtype.itemsize > 1 << 20:
        return _make_causal_bias(i0, i1, j0, j1, dtype, repeat)
    return _causal_bias_cached(i0, i1, j0, j1, dtype, repeat)


# ---------------------------------------------------------------------------------------------
# plain (reference)
# ---------------------------------------------------------------------------------------------

def plain_fwd(q, k, v):
    B, H, T, d = q.shape
    ke, ve = _expand_kv(k, H), _expand_kv(v, H)
    s = (q @ np.swapaxes(ke, -1, -2)) * (1.0 / math.sqrt(d))  # (B, H, T, T)
    s += _causal_bias(0, T, 0, T, q.dtype)
    s -= s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    return p @ ve, p


def plain_bwd(do, q, k, v, p):
    B, H, T, d = q.shape
    scale = 1.0 / math.sqrt(d)
    ke, ve = _expand_kv(k, H), _expand_kv(v, H)
    dv = np.swapaxes(p, -1, -2) @ do
    dp = do @ np.swapaxes(ve, -1, -2)
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    dq = (ds @ ke) * scale
    dk = (np.swapaxes(ds, -1, -2) @ q) * scale
    return dq, _reduce_kv(dk, k.shape[1]), _reduce_kv(dv, v.shape[1])


# ---------------------------------------------------------------------------------------------
# flash (tiled, online softmax, recomputing backward)
# ---------------------------------------------------------------------------------------------

def flash_fwd(q, k, v, block=64):
    """Returns (out (B,H,T,hd), lse (B,H,T)). Never holds more than one (B,H,block,block) tile."""
    B, H, T, d = q.shape
    if block < 1:
        raise ValueError(f"attention block must be >= 1, got {block}")
    ke, ve = _expand_kv(k, H), _expand_kv(v, H)
    qs = q * q.dtype.type(1.0 / math.sqrt(d))  # fold the score scale into q once
    kt = np.swapaxes(ke, -1, -2)
    out = np.empty_like(q)
    lse = np.empty((B, H, T), dtype=q.dtype)
    for i0 in range(0, T, block):
        i1 = min(T, i0 + block)
        qi = qs[:, :, i0:i1]
        m = np.full((B, H, i1 - i0, 1), -np.inf, dtype=q.dtype)
        l = np.zeros((B, H, i1 - i0, 1), dtype=q.dtype)
        acc = np.zeros((B, H, i1 - i0, d), dtype=q.dtype)
        for j0 in range(0, i1, block):  # causal: key tiles past the last query of this tile are skipped
            j1 = min(T, j0 + block, i1)
            s = qi @ kt[:, :, :, j0:j1]  # (B, H, bi, bj)
            if j1 > i0 + 1:  # the tile crosses the diagonal
                s += _causal_bias(i0, i1, j0, j1, q.dtype)
            m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
            s -= m_new
            p = np.exp(s, out=s)  # in place: the tile's probabilities (unnormalised)
            corr = np.exp(m - m_new)  # rescales what was summed under the old max
            l *= corr
            l += p.sum(axis=-1, keepdims=True)
            acc *= corr
            acc += p @ ve[:, :, j0:j1]
            m = m_new
        np.divide(acc, l, out=out[:, :, i0:i1])
        lse[:, :, i0:i1] = (m + np.log(l))[..., 0]
    return out, lse


def flash_bwd(do, q, k, v, out, lse, block=64):
    B, H, T, d = q.shape
    scale = q.dtype.type(1.0 / math.sqrt(d))
    ke, ve = _expand_kv(k, H), _expand_kv(v, H)
    qs = q * scale
    kt, vt = np.swapaxes(ke, -1, -2), np.swapaxes(ve, -1, -2)
    D = (do * out).sum(axis=-1, keepdims=True)  # (B, H, T, 1)
    dq = np.zeros_like(q)
    dk = np.zeros_like(ke)
    dv = np.zeros_like(ve)
    for i0 in range(0, T, block):
        i1 = min(T, i0 + block)
        qi = qs[:, :, i0:i1]
        doi = do[:, :, i0:i1]
        li = lse[:, :, i0:i1, None]
        di = D[:, :, i0:i1]
        for j0 in range(0, i1, block):
            j1 = min(T, j0 + block, i1)
            s = qi @ kt[:, :, :, j0:j1]
            if j1 > i0 + 1:
                s += _causal_bias(i0, i1, j0, j1, q.dtype)
            s -= li
            p = np.exp(s, out=s)  # recomputed from the stored log-sum-exp, never kept across tiles
            dv[:, :, j0:j1] += np.swapaxes(p, -1, -2) @ doi
            ds = doi @ vt[:, :, :, j0:j1]  # dP
            ds -= di
            ds *= p  # dS = P * (dP - D)
            # dq = dS K / sqrt(d); dk = dS^T Q / sqrt(d) = dS^T (Q / sqrt(d))
            dq[:, :, i0:i1] += ds @ ke[:, :, j0:j1]
            dk[:, :, j0:j1] += np.swapaxes(ds, -1, -2) @ qi
    dq *= scale
    return dq, _reduce_kv(dk, k.shape[1]), _reduce_kv(dv, v.shape[1])


# ---------------------------------------------------------------------------------------------
# stored probabilities, grouped heads (the fused self-attention at short context)
# ---------------------------------------------------------------------------------------------

STORE_P_BYTES = 8 << 20  # the fused self-attention keeps P when one layer's P is at most this


def stores_p(impl: str, batch: int, n_heads: int, seq: int, itemsize: int) -> bool:
    """Whether the fused self-attention keeps the probabilities for its backward pass: always
    for "plain", and for "flash" while one layer's P (batch x heads x T x T) fits STORE_P_BYTES
    (at T 128 and batch 2: 0.5 MiB); longer contexts take the tiles."""
    return impl == "plain" or batch * n_heads * seq * seq * itemsize <= STORE_P_BYTES


def grouped_fwd(q, k, v, out):
    """Causal attention with P kept. q (B, KV, g*T, hd) holds the g query heads of each kv head
    stacked along the rows and already scaled by 1/sqrt(hd); k (B, KV, T, hd); v (B, KV, T, hd),
    any strides with a unit last one. Writes the output (B, KV, g*T, hd) into `out` (a view is
    fine) and returns P transposed, (B, KV, T, g*T): keys along the rows, so the softmax's max
    and sum run over an outer axis, which NumPy vectorises (along the last axis they run several
    times slower)."""
    T = k.shape[2]
    st = k @ np.swapaxes(q, -1, -2)                                  # S^T: (B, KV, T keys, g*T queries)
    st += _causal_bias(0, T, 0, T, st.dtype, q.shape[2] // T)
    st -= st.max(axis=-2, keepdims=True)
    pt = np.exp(st, out=st)
    pt /= pt.sum(axis=-2, keepdims=True)
    np.matmul(np.swapaxes(pt, -1, -2), v, out=out)
    return pt


def grouped_bwd(do, o, q, k, v, pt, dq, dk, dv):
    """Gradients of grouped_fwd from its output gradient do and output o (B, KV, g*T, hd) into
    dq (of the scaled q), dk, dv (views are fine): dV = P^T dO, dS = P * (dO V^T - rowsum(dO * O)),
    dQ = dS K, dK = dS^T Q (all with S and P transposed)."""
    np.matmul(pt, do, out=dv)
    dst = v @ np.swapaxes(do, -1, -2)                                # dP^T
    dst -= np.einsum("...d,...d->...", do, o)[..., None, :]
    dst *= pt
    np.matmul(np.swapaxes(dst, -1, -2), k, out=dq)
    np.matmul(dst, q, out=dk)


# ---------------------------------------------------------------------------------------------
# dispatch
# ---------------------------------------------------------------------------------------------

def attention_fwd(q, k, v, impl="flash", block=64):
    """-> (out, saved) where saved is what attention_bwd needs (lse for flash, P for plain)."""
    if q.ndim != 4 or k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"attention: bad shapes q={q.shape} k={k.shape} v={v.shape}")
    if impl == "flash":
        return flash_fwd(q, k, v, block)
    if impl == "plain":
        return plain_fwd(q, k, v)
    raise ValueError(f"attention impl must be 'flash' or 'plain', got {impl!r}")


def attention_bwd(do, q, k, v, out, saved, impl="flash", block=64):
    if impl == "flash":
        return flash_bwd(do, q, k, v, out, saved, block)
    return plain_bwd(do, q, k, v, saved)


def peak_attention_memory(impl: str, seq: int, batch=1, heads=4, head_dim=32, block=64, seed=0) -> int:
    """Peak bytes NumPy allocates for one forward + backward of causal attention (tracemalloc
    sees NumPy's buffers), excluding the inputs and the output gradient."""
    rng = np.random.default_rng(seed)
    q, k, v, do = (rng.standard_normal((batch, heads, seq, head_dim), dtype=np.float32) for _ in range(4))
    tracemalloc.start()
    tracemalloc.reset_peak()
    out, saved = attention_fwd(q, k, v, impl=impl, block=block)
    grads = attention_bwd(do, q, k, v, out, saved, impl=impl, block=block)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del out, saved, grads
    return peak
