"""The tiny example file of docs/BULLET_SPEC.md and its hex dump.

    python -m bulletd.format.example [OUT.bullet]   # prints the dump (and writes the file)
"""
from __future__ import annotations

import sys

import numpy as np

from .container import build_bullet
from .tokenizer import TOKEN_BYTE, TOKEN_CONTROL, TOKEN_NORMAL, VocabEntry


def example_bytes() -> bytes:
    """A router-kind file with one 2x32 bq4 matrix, one f32 vector and a 4-token vocabulary."""
    w = np.zeros((2, 32), dtype=np.float32)
    w[0, :] = np.arange(32) - 16          # row 0: -16 .. 15
    w[1, 0], w[1, 16] = -8.0, 7.0         # row 1: scale 1, q[0] = -8, q[16] = 7
    vocab = [VocabEntry(b"<s>", 0.0, TOKEN_CONTROL), VocabEntry(b"\n", 0.0, TOKEN_BYTE),
             VocabEntry(b"hi", -1.0, TOKEN_NORMAL), VocabEntry("न".encode(), -2.0, TOKEN_NORMAL)]
    return build_bullet(kind="router", arch={}, vocab=vocab,
                        tensors={"w": ("bq4", w), "b": ("f32", np.array([1.0, -2.0], np.float32))},
                        tokenizer={"kind": "bpe", "bos_id": 0, "eos_id": None},
                        provenance={"name": "example", "version": "1.0.0", "created": "2026-01-01T00:00:00+00:00"})


def hexdump(data: bytes) -> str:
    """`hexdump -C` style: offset, 16 bytes, ASCII; repeated lines collapse to '*'."""
    lines, prev, starred = [], None, False
    for off in range(0, len(data), 16):
        row = data[off: off + 16]
        if row == prev and off + 16 < len(data):
            if not starred:
                lines.append("*")
                starred = True
            continue
        prev, starred = row, False
        hx = " ".join(f"{b:02x}" for b in row[:8]) + "  " + " ".join(f"{b:02x}" for b in row[8:])
        asc = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        lines.append(f"{off:08x}  {hx:<48}  |{asc}|")
    lines.append(f"{len(data):08x}")
    return "\n".join(lines)


if __name__ == "__main__":
    raw = example_bytes()
    if len(sys.argv) > 1:
        with open(sys.argv[1], "wb") as f:
            f.write(raw)
    print(hexdump(raw))
