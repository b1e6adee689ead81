"""Helpers for the native-kernel tests (tests/test_kernels.py, tests/test_native_*.py).

random_lm(): a random model as the native Model takes it (BQ4 blocks / f32 / f16 arrays).
q8_forward(): a NumPy forward pass that quantises activations to q8 exactly as the native BQ4
path does (bulletd.kernels references), so native logits can be held to tight tolerances.
assert_close(): the failure message names the worst element with ref, got and err.
"""
from __future__ import annotations

import numpy as np

from bulletd import kernels as K
from bulletd.format import dequantize_bq4, quantize_bq4
from bulletd.format.arch import tensor_shapes


def assert_close(what: str, ref, got, rtol: float, atol: float) -> None:
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    assert ref.shape == got.shape, f"{what}: shape {got.shape}, expected {ref.shape}"
    if ref.size == 0:
        return
    scale = float(np.max(np.abs(ref)))
    tol = atol + rtol * scale
    err = np.abs(ref - got)
    err = np.where(np.isnan(got) & ~np.isnan(ref), np.inf, err)
    i = int(np.argmax(err))
    assert err.flat[i] <= tol, (f"{what}: worst at index {np.unravel_index(i, ref.shape)}: ref={ref.flat[i]:.9g} "
                                f"got={got.flat[i]:.9g} err={err.flat[i]:.3g} > tol={tol:.3g} "
                                f"(rtol {rtol} x max|ref| {scale:.4g} + atol {atol})")


def lm_shapes(cfg: dict) -> dict:
    """The shapes of bulletd.format.arch's table, in the order random_lm draws them."""
    table = tensor_shapes(cfg)
    order = ["tok_embd", "out_norm"] + (["output"] if "output" in table else []) + [
        f"blk.{i}.{n}" for i in range(cfg["n_layers"])
        for n in ("attn_norm", "ffn_norm", "wq", "wk", "wv", "wo", "w1", "w2", "w3")]
    return {name: table[name] for name in order}


def random_lm(cfg: dict, seed: int, dtype="bq4") -> dict:
    """name -> array. dtype: "bq4" | "f32" | "f16", or a callable name -> dtype (mixed models)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in lm_shapes(cfg).items():
        if len(shape) == 1:
            out[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
            continue
        w = (rng.standard_normal(shape) / np.sqrt(shape[1])).astype(np.float32)
        dt = dtype(name) if callable(dtype) else dtype
        out[name] = quantize_bq4(w) if dt == "bq4" else w.astype(np.float16 if dt == "f16" else np.float32)
    return out


def float_weights(cfg: dict, tensors: dict) -> dict:
    """The same model with every matrix widened to float32 (bq4 dequantised)."""
    shapes = lm_shapes(cfg)
    return {n: (dequantize_bq4(a, shapes[n][1]) if a.dtype == np.uint8 else a.astype(np.float32))
            for n, a in tensors.items()}


def _matvec(w: np.ndarray, shape, x: np.ndarray) -> np.ndarray:
    if w.dtype == np.uint8:
        return K.matmul_bq4_q8_ref(w, shape[0], shape[1], x[None, :])[0]
    return (w.astype(np.float32) @ x).astype(np.float32)


def q8_forward(cfg: dict, tensors: dict, tokens: list[int]) -> np.ndarray:
    """Logits (len(tokens), vocab) for tokens at positions 0.., with bq4 matrices applied to
    q8-quantised activations exactly as the native path does; the rest float32 (llama2.c order)."""
    shapes = lm_shapes(cfg)
    d, nh, nkv = cfg["dim"], cfg["n_heads"], cfg["n_kv_heads"]
    hd = cfg.get("head_dim") or d // nh
    eps, theta = cfg.get("norm_eps", 1e-5), cfg.get("rope_theta", 10000.0)
    out_name = "tok_embd" if cfg.get("tied_embeddings", False) else "output"
    T = len(tokens)
    kc = np.zeros((cfg["n_layers"], T, nkv, hd), np.float32)
    vc = np.zeros_like(kc)
    emb = tensors["tok_embd"]
    emb_f = dequantize_bq4(emb, d) if emb.dtype == np.uint8 else emb.astype(np.float32)
    logits = []
    for pos, tok in enumerate(tokens):
        x = emb_f[tok].copy()
        cos, sin = K.rope_angles_ref(pos, hd, theta)
        for i in range(cfg["n_layers"]):
            p = f"blk.{i}."
            mv = lambda n, v: _matvec(tensors[p + n], shapes[p + n], v)  # noqa: E731
            xb = K.rmsnorm_ref(x, tensors[p + "attn_norm"], eps)
            q = K.rope_ref(mv("wq", xb), nh, hd, cos, sin)
            kc[i, pos] = K.rope_ref(mv("wk", xb), nkv, hd, cos, sin).reshape(nkv, hd)
            vc[i, pos] = mv("wv", xb).reshape(nkv, hd)
            att = np.concatenate([K.attention_ref(q[h * hd:(h + 1) * hd], kc[i, :pos + 1, h // (nh // nkv)],
                                                  vc[i, :pos + 1, h // (nh // nkv)]) for h in range(nh)])
            x = x + mv("wo", att)
            xb = K.rmsnorm_ref(x, tensors[p + "ffn_norm"], eps)
            hb = K.swiglu_ref(mv("w1", xb), mv("w3", xb))
            x = x + mv("w2", hb)
        x = K.rmsnorm_ref(x, tensors["out_norm"], eps)
        logits.append(_matvec(tensors[out_name], shapes[out_name], x))
    return np.stack(logits)
