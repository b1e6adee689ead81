"""BQ4: 4-bit symmetric block quantisation (NumPy, vectorised). The executable definition.

A block holds 32 consecutive weights of a row in 20 bytes:
    [scale: f16 LE][zero: i8 = 0][pad: u8 = 0][16 bytes: byte j = q[j] | q[j+16] << 4]
with q two's-complement 4-bit in [-8, 7] and weight = scale * q. A row of `cols` weights takes
ceil(cols / 32) blocks; weights past `cols` in the last block are zero.

Scale rule ("mse"): per block, try a grid of scales around the signed absmax (the extreme value
may map to -8 as well as to +7), keep the one with the least squared error, refine it once by
least squares for the chosen integers, and always re-round with the f16 scale actually stored.
"absmax" is the plain rule scale = absmax / 7, kept as the baseline the benchmark compares with.
"""
from __future__ import annotations

import numpy as np

from ..errors import FormatError

QK = 32            # weights per block
BLOCK_BYTES = 20   # bytes per block


def bq4_row_blocks(cols: int) -> int:
    """Blocks per row of `cols` weights."""
    return (int(cols) + QK - 1) // QK


def bq4_nbytes(rows: int, cols: int) -> int:
    """Bytes of a (rows, cols) BQ4 tensor."""
    return int(rows) * bq4_row_blocks(cols) * BLOCK_BYTES


def _pad_cols(w: np.ndarray) -> np.ndarray:
    rows, cols = w.shape
    padded = bq4_row_blocks(cols) * QK
    if padded == cols:
        return w
    out = np.zeros((rows, padded), dtype=np.float32)
    out[:, :cols] = w
    return out


def _round_q(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """q = clip(round(x / d), -8, 7) with d == 0 giving q == 0. x (..., 32), d (..., 1)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(d != 0, 1.0 / d, 0.0)
    return np.clip(np.rint(x * inv), -8, 7)


def _choose_scales(x: np.ndarray, rule: str) -> np.ndarray:
    """Scale per block for blocks x (n, 32) float32 -> (n, 1) float32 (before f16 rounding)."""
    amax_idx = np.argmax(np.abs(x), axis=1)
    signed_max = np.take_along_axis(x, amax_idx[:, None], axis=1)  # (n, 1)
    if rule == "absmax":
        return np.abs(signed_max) / 7.0
    if rule != "mse":
        raise ValueError(f"unknown BQ4 scale rule {rule!r} (expected 'mse' or 'absmax')")
    best_d = signed_max / -8.0
    best_err = np.full((x.shape[0], 1), np.inf, dtype=np.float64)
    # candidates: the signed extreme maps to a level between -8 and -6.5 or +6.5 and +7
    for k in (-8.0, -7.75, -7.5, -7.25, -7.0, -6.75, -6.5, 7.0, 6.75, 6.5, 6.25):
        d = signed_max / k
        q = _round_q(x, d)
        err = np.sum((x - d * q) ** 2, axis=1, keepdims=True, dtype=np.float64)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_d = np.where(better, d, best_d)
    # one least-squares refinement of d for the chosen integers
    q = _round_q(x, best_d)
    qq = np.sum(q * q, axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        d_ls = np.where(qq > 0, np.sum(x * q, axis=1, keepdims=True) / qq, 0.0)
    q2 = _round_q(x, d_ls)
    err2 = np.sum((x - d_ls * q2) ** 2, axis=1, keepdims=True, dtype=np.float64)
    return np.where(err2 < best_err, d_ls, best_d).astype(np.float32)


def quantize_bq4(w: np.ndarray, rule: str = "mse") -> np.ndarray:
    """Quantise a float matrix (rows, cols) to BQ4 blocks: uint8 (rows, ceil(cols/32) * 20)."""
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise FormatError(f"BQ4 quantises 2-D matrices, got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise FormatError("BQ4 cannot quantise non-finite weights (NaN or inf found)")
    rows, cols = w.shape
    nb = bq4_row_blocks(cols)
    x = _pad_cols(w).reshape(rows * nb, QK)
    d = _choose_scales(x, rule)
    d16 = d.astype(np.float16)
    if not np.all(np.isfinite(d16)):
        raise FormatError("BQ4 scale overflows f16 (weights larger than about 4.9e5)")
    q = _round_q(x, d16.astype(np.float32)).astype(np.int8)   # re-round with the stored scale
    nib = (q & 0x0F).astype(np.uint8)
    packed = nib[:, : QK // 2] | (nib[:, QK // 2:] << 4)          # byte j: q[j] low, q[j+16] high
    out = np.zeros((rows * nb, BLOCK_BYTES), dtype=np.uint8)
    out[:, 0:2] = d16.view(np.uint8).reshape(-1, 2)
    out[:, 4:] = packed
    return out.reshape(rows, nb * BLOCK_BYTES)


def dequantize_bq4(blocks: np.ndarray, cols: int) -> np.ndarray:
    """BQ4 blocks uint8 (rows, nb*20) -> float32 (rows, cols)."""
    blocks = np.asarray(blocks)
    if blocks.dtype != np.uint8 or blocks.ndim != 2:
        raise FormatError(f"BQ4 blocks must be a 2-D uint8 array, got {blocks.dtype} {blocks.shape}")
    rows = blocks.shape[0]
    nb = bq4_row_blocks(cols)
    if blocks.shape[1] != nb * BLOCK_BYTES:
        raise FormatError(f"BQ4 row of {cols} weights needs {nb * BLOCK_BYTES} bytes, got {blocks.shape[1]}")
    b = np.ascontiguousarray(blocks).reshape(rows * nb, BLOCK_BYTES)
    d = b[:, 0:2].copy().view(np.float16).astype(np.float32)          # (rows*nb, 1)
    qs = b[:, 4:]
    w = np.empty((rows * nb, QK), dtype=np.float32)
    # sign-extend a nibble: put it in the top half of an int8, shift back arithmetically
    w[:, : QK // 2] = (qs << 4).view(np.int8) >> 4                    # q[j]: low nibbles
    w[:, QK // 2:] = qs.view(np.int8) >> 4                            # q[j+16]: high nibbles
    w *= d                                                            # weight = scale * q (float32)
    return w.reshape(rows, nb * QK)[:, :cols]


def bq4_rms_error(w: np.ndarray, rule: str = "mse") -> float:
    """RMS of the quantisation error relative to the RMS of w."""
    w = np.asarray(w, dtype=np.float32)
    back = dequantize_bq4(quantize_bq4(w, rule), w.shape[1])
    return float(np.sqrt(np.mean((back - w) ** 2)) / np.sqrt(np.mean(w ** 2)))
