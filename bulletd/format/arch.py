"""The lm architecture's shape rules, in one place.

Every layer that checks an `arch` or lays out its tensors takes the rule from here: the container
(reader and writer), the NumPy reference, the runtime, the trainer, and the native model, which
receives the numbers from bulletd.kernels (`native_limits()`) and keeps its own check as the last
guard.

    check_arch(arch)      -> normalised copy: ints, float norm_eps/rope_theta, tied_embeddings,
                             head_dim filled in. Raises FormatError naming the key.
    head_dim(arch)        -> arch["head_dim"] when given, else dim // n_heads
    tensor_shapes(arch)   -> {name: logical shape} of every tensor an lm file holds, in file order
    kv_cache_bytes(arch)  -> bytes of one session's f32 K and V caches
    max_kv_bytes()        -> the KV-cache cap: BULLET_MAX_KV_BYTES, default MAX_KV_BYTES
    bq4_matrix_shape(rows, cols) -> the uint8 block array a (rows, cols) bq4 matrix maps to

REFERENCE and SMALL are the shapes the benchmarks and tests measure.
"""
from __future__ import annotations

import os
from typing import Any

from ..errors import FormatError
from .bq4 import BLOCK_BYTES, bq4_row_blocks

INT_KEYS = ("dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "vocab_size", "max_seq_len")
# Largest value of each integer; no tiny model comes near them, they stop a hostile header from
# asking for terabytes. head_dim is optional (default dim // n_heads).
LIMITS = {"dim": 1 << 16, "n_layers": 4096, "n_heads": 1 << 16, "n_kv_heads": 1 << 16,
          "hidden_dim": 1 << 18, "vocab_size": 1 << 20, "max_seq_len": 1 << 20, "head_dim": 1 << 14}
MAX_FLOAT = 1e12    # norm_eps and rope_theta lie in (0, MAX_FLOAT)
# A session's KV cache is sized by max_seq_len, which no tensor bounds. The runtime refuses a
# model whose cache would exceed this (BULLET_MAX_KV_BYTES overrides it); so does the native model.
MAX_KV_BYTES = 1 << 30

REFERENCE = dict(dim=256, n_layers=8, n_heads=4, n_kv_heads=4, hidden_dim=768, vocab_size=2048, max_seq_len=256)
SMALL = dict(dim=128, n_layers=4, n_heads=4, n_kv_heads=4, hidden_dim=384, vocab_size=1024, max_seq_len=256)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_arch(arch: Any) -> dict:
    """Check an lm architecture; returns a normalised copy (see the module docstring)."""
    if not isinstance(arch, dict):
        raise FormatError(f"header 'arch' must be an object, got {type(arch).__name__}")
    out: dict = {}
    for k in INT_KEYS:
        v = arch.get(k)
        if not _is_int(v) or not 0 < v <= LIMITS[k]:
            raise FormatError(f"arch.{k} must be an integer in 1..{LIMITS[k]}, got {v!r}")
        out[k] = v
    hd = arch.get("head_dim")
    if hd is None:
        if out["dim"] % out["n_heads"]:
            raise FormatError(f"arch.dim {out['dim']} is not a multiple of n_heads {out['n_heads']}")
        hd = out["dim"] // out["n_heads"]
    elif not _is_int(hd) or not 0 < hd <= LIMITS["head_dim"]:
        raise FormatError(f"arch.head_dim must be an integer in 1..{LIMITS['head_dim']}, got {hd!r}")
    if hd % 2:
        raise FormatError(f"head size {hd} must be even for RoPE")
    if out["n_heads"] % out["n_kv_heads"]:
        raise FormatError(f"arch.n_heads {out['n_heads']} is not a multiple of n_kv_heads {out['n_kv_heads']}")
    out["head_dim"] = hd
    for k, default in (("norm_eps", 1e-5), ("rope_theta", 10000.0)):
        v = arch.get(k, default)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < MAX_FLOAT:
            raise FormatError(f"arch.{k} must be a positive number, got {v!r}")
        out[k] = float(v)
    tied = arch.get("tied_embeddings", False)
    if not isinstance(tied, bool):
        raise FormatError(f"arch.tied_embeddings must be true or false, got {tied!r}")
    out["tied_embeddings"] = tied
    return out


def head_dim(arch: dict) -> int:
    """The head size: arch["head_dim"] when given, else dim // n_heads (llama2.c)."""
    hd = arch.get("head_dim")
    return hd if hd is not None else arch["dim"] // arch["n_heads"]


def tensor_shapes(arch: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor an lm of this (checked) architecture holds, with its logical shape
    (out_features, in_features), in file order (docs/ARCHITECTURE.md, "Tensor names")."""
    dim, hd, hidden = arch["dim"], head_dim(arch), arch["hidden_dim"]
    q_out, kv_out = arch["n_heads"] * hd, arch["n_kv_heads"] * hd
    shapes: dict[str, tuple[int, ...]] = {"tok_embd": (arch["vocab_size"], dim)}
    for i in range(arch["n_layers"]):
        p = f"blk.{i}."
        shapes.update({
            p + "attn_norm": (dim,), p + "wq": (q_out, dim), p + "wk": (kv_out, dim),
            p + "wv": (kv_out, dim), p + "wo": (dim, q_out), p + "ffn_norm": (dim,),
            p + "w1": (hidden, dim), p + "w2": (dim, hidden), p + "w3": (hidden, dim),
        })
    shapes["out_norm"] = (dim,)
    if not arch.get("tied_embeddings", False):
        shapes["output"] = (arch["vocab_size"], dim)
    return shapes


def bq4_matrix_shape(rows: int, cols: int) -> tuple[int, int]:
    """The uint8 array a bq4 matrix of logical shape (rows, cols) maps to."""
    return rows, bq4_row_blocks(cols) * BLOCK_BYTES


def kv_cache_bytes(arch: dict) -> int:
    """Bytes of one session's KV cache: f32 K and V for every layer, position and kv head."""
    return 2 * 4 * arch["n_layers"] * arch["max_seq_len"] * arch["n_kv_heads"] * head_dim(arch)


def max_kv_bytes() -> int:
    """The KV-cache cap: BULLET_MAX_KV_BYTES when set, else MAX_KV_BYTES. ValueError when the
    variable is not an integer."""
    raw = os.environ.get("BULLET_MAX_KV_BYTES")
    if raw is None:
        return MAX_KV_BYTES
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"BULLET_MAX_KV_BYTES must be an integer, got {raw!r}") from None


def native_limits() -> dict[str, int]:
    """The numbers the native model checks a config against (bulletd.kernels hands them over
    when it imports the module): LIMITS, MAX_FLOAT as "max_float" and the default KV-cache cap
    as "kv_bytes"."""
    return dict(LIMITS, max_float=MAX_FLOAT, kv_bytes=MAX_KV_BYTES)


def native_config(arch: dict, max_kv: int | None = None) -> dict:
    """The config dict the native model takes for a checked arch."""
    cfg = {k: arch[k] for k in INT_KEYS + ("head_dim", "norm_eps", "rope_theta", "tied_embeddings")}
    cfg["max_kv_bytes"] = min(max_kv_bytes() if max_kv is None else max_kv, 1 << 62)   # an int64 in C++
    return cfg
