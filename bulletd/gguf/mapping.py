"""The mapping between .bullet and GGUF (docs/INTEROP.md has the same tables): tensor names,
BQ4 <-> Q4_0 blocks, token types and pieces, and NumPy dequantisation of the GGUF types the
importer reads.

BQ4 block (20 bytes):  [f16 scale][u8 0][u8 0][16 bytes: q[j] | q[j+16] << 4], q signed in -8..7
Q4_0 block (18 bytes): [f16 scale][16 bytes: u[j] | u[j+16] << 4],                u unsigned 0..15
weight = scale * q = scale * (u - 8), so u = q + 8 (mod 16) = q XOR 8: each nibble's top bit
flips, a byte XOR 0x88. The scale bytes are copied. Every weight is bit-identical.
"""
from __future__ import annotations

import re

import numpy as np

from ..errors import FormatError
from ..format.bq4 import BLOCK_BYTES
from ..format.tokenizer import TOKEN_BYTE, TOKEN_CONTROL, TOKEN_NORMAL

Q4_0_BYTES = 18
Q8_0_BYTES = 34

# .bullet tensor name -> GGUF tensor name; {i} is the layer
_LAYER = {"attn_norm": "attn_norm", "wq": "attn_q", "wk": "attn_k", "wv": "attn_v", "wo": "attn_output",
          "ffn_norm": "ffn_norm", "w1": "ffn_gate", "w2": "ffn_down", "w3": "ffn_up"}
_TOP = {"tok_embd": "token_embd.weight", "out_norm": "output_norm.weight", "output": "output.weight"}
_TOP_BACK = {v: k for k, v in _TOP.items()}
_LAYER_BACK = {v: k for k, v in _LAYER.items()}
_GGUF_LAYER = re.compile(r"^blk\.(\d{1,6})\.([a-z_]+)\.weight$")


def gguf_name(name: str) -> str:
    """GGUF name of a .bullet lm tensor."""
    if name in _TOP:
        return _TOP[name]
    _, i, part = name.split(".")
    return f"blk.{i}.{_LAYER[part]}.weight"


def bullet_name(name: str) -> str | None:
    """.bullet name of a GGUF llama tensor; None for a name that is not part of the mapping."""
    if name in _TOP_BACK:
        return _TOP_BACK[name]
    m = _GGUF_LAYER.match(name)
    if m and m.group(2) in _LAYER_BACK:
        return f"blk.{int(m.group(1))}.{_LAYER_BACK[m.group(2)]}"
    return None


# -- BQ4 <-> Q4_0 ---------------------------------------------------------------------------
def bq4_to_q4_0(blocks: np.ndarray) -> np.ndarray:
    """BQ4 blocks uint8 (rows, nb*20) -> Q4_0 blocks uint8 (rows, nb*18). FormatError when a
    block's two reserved bytes are not zero (Q4_0 has no room for them)."""
    rows = blocks.shape[0]
    b = np.ascontiguousarray(blocks).reshape(-1, BLOCK_BYTES)
    if b[:, 2:4].any():
        raise FormatError("a BQ4 block has non-zero reserved bytes (zero point / padding); "
                          "Q4_0 cannot hold them")
    out = np.empty((b.shape[0], Q4_0_BYTES), dtype=np.uint8)
    out[:, 0:2] = b[:, 0:2]
    out[:, 2:] = b[:, 4:] ^ 0x88
    return out.reshape(rows, -1)


def q4_0_to_bq4(raw: np.ndarray, rows: int) -> np.ndarray:
    """Q4_0 blocks (bytes of `rows` rows) -> BQ4 blocks uint8 (rows, nb*20)."""
    b = np.asarray(raw, dtype=np.uint8).reshape(-1, Q4_0_BYTES)
    out = np.zeros((b.shape[0], BLOCK_BYTES), dtype=np.uint8)
    out[:, 0:2] = b[:, 0:2]
    out[:, 4:] = b[:, 2:] ^ 0x88
    return out.reshape(rows, -1)


def dequantize_q4_0(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Q4_0 bytes -> float32 (rows, cols), as ggml dequantises: scale * (u - 8)."""
    b = np.asarray(raw, dtype=np.uint8).reshape(-1, Q4_0_BYTES)
    d = b[:, 0:2].copy().view(np.float16).astype(np.float32)
    qs = b[:, 2:]
    u = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8
    return (u.astype(np.float32) * d).reshape(rows, cols)


def dequantize_q8_0(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Q8_0 bytes -> float32 (rows, cols): scale * q with a signed 8-bit q per weight."""
    b = np.asarray(raw, dtype=np.uint8).reshape(-1, Q8_0_BYTES)
    d = b[:, 0:2].copy().view(np.float16).astype(np.float32)
    q = b[:, 2:].copy().view(np.int8).astype(np.float32)
    return (q * d).reshape(rows, cols)


# -- tokens ---------------------------------------------------------------------------------
# GGUF token types (llama.cpp's llama_token_type)
GT_NORMAL, GT_UNKNOWN, GT_CONTROL, GT_USER_DEFINED, GT_UNUSED, GT_BYTE = 1, 2, 3, 4, 5, 6
SPACE = b" "
SPM_SPACE = "\u2581".encode()      # SentencePiece's visible space, as llama.cpp's "llama" tokenizer stores it
_BYTE_PIECE = re.compile(rb"^<0x([0-9A-Fa-f]{2})>$")


def spm_piece(piece: bytes, ttype: int) -> tuple[bytes, int]:
    """A .bullet vocabulary entry -> (GGUF token text, GGUF token type) for tokenizer model "llama"."""
    if ttype == TOKEN_BYTE:
        return f"<0x{piece[0]:02X}>".encode(), GT_BYTE
    if ttype == TOKEN_CONTROL:
        return piece, GT_CONTROL
    return piece.replace(SPACE, SPM_SPACE), GT_NORMAL


def from_spm_piece(text: bytes, gtype: int) -> tuple[bytes, int]:
    """A GGUF "llama" token -> (.bullet piece, .bullet token type)."""
    if gtype == GT_BYTE:
        m = _BYTE_PIECE.match(text)
        if m is None:
            raise FormatError(f"byte token {text[:40]!r} is not of the form <0xHH>")
        return bytes([int(m.group(1), 16)]), TOKEN_BYTE
    if gtype in (GT_UNKNOWN, GT_CONTROL, GT_UNUSED):
        return text, TOKEN_CONTROL
    if gtype in (GT_NORMAL, GT_USER_DEFINED):
        return text.replace(SPM_SPACE, SPACE), TOKEN_NORMAL
    raise FormatError(f"token type {gtype} is not a llama.cpp token type (1..6)")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (byte-level BPE stores token text this way)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_DECODER = {c: b for b, c in _bytes_to_unicode().items()}


def from_bpe_text(text: bytes) -> bytes:
    """A byte-level BPE token's text -> its raw bytes. FormatError when a character is not in
    GPT-2's byte table."""
    try:
        s = text.decode("utf-8")
        return bytes(BYTE_DECODER[c] for c in s)
    except (UnicodeDecodeError, KeyError):
        raise FormatError(f"token {text[:40]!r} is not byte-level BPE text") from None

