"""Synthetic models for tests and benchmarks: a byte-level vocabulary and random lm weights.

    from bulletd.format.synth import write_random_lm, SMALL, REFERENCE
    write_random_lm("small.bullet", SMALL, seed=0)
"""
from __future__ import annotations

import datetime as _dt

import numpy as np

from .container import lm_tensor_shapes, validate_lm_arch, write_bullet
from .tokenizer import TOKEN_BYTE, TOKEN_CONTROL, TOKEN_NORMAL, VocabEntry

# the REFERENCE and SMALL shapes of the benchmarks and the shipped SMALL children
REFERENCE = dict(dim=256, n_layers=8, n_heads=4, n_kv_heads=4, hidden_dim=768, vocab_size=2048, max_seq_len=256)
SMALL = dict(dim=128, n_layers=4, n_heads=4, n_kv_heads=4, hidden_dim=384, vocab_size=1024, max_seq_len=256)

BOS_ID, EOS_ID = 1, 2


def byte_vocab(n: int) -> list[VocabEntry]:
    """n entries: <unk>, <s>, </s>, the 256 bytes, then the most common English bigrams/words as
    pieces (synthetic, only so that text encodes to fewer ids)."""
    if n < 259:
        raise ValueError(f"a byte-level vocabulary needs at least 259 entries, got {n}")
    v = [VocabEntry(b"<unk>", 0.0, TOKEN_CONTROL), VocabEntry(b"<s>", 0.0, TOKEN_CONTROL),
         VocabEntry(b"</s>", 0.0, TOKEN_CONTROL)]
    v += [VocabEntry(bytes([b]), 0.0, TOKEN_BYTE) for b in range(256)]
    letters = b" etaoinshrdlucmfwypvbgk"
    pieces = [bytes([a, b]) for a in letters for b in letters]
    k = 0
    while len(v) < n:
        if k < len(pieces):
            piece = pieces[k]
        else:
            piece = b"<%d>" % k
        v.append(VocabEntry(piece, -float(k), TOKEN_NORMAL))
        k += 1
    return v


def random_lm_tensors(arch: dict, seed: int = 0, dtype: str = "bq4") -> dict:
    """Random weights (scaled like a trained model's) for every tensor of `arch`."""
    arch = validate_lm_arch(arch)
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in lm_tensor_shapes(arch).items():
        if len(shape) == 1:
            out[name] = ("f32", (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32))
        else:
            w = (rng.standard_normal(shape) / np.sqrt(shape[1])).astype(np.float32)
            out[name] = (dtype, w)
    return out


def write_random_lm(path, arch: dict, seed: int = 0, dtype: str = "bq4", name: str = "random",
                    version: str = "1.0.0", extra: dict | None = None):
    """Write a random lm .bullet file; returns its path."""
    arch = validate_lm_arch(arch)
    return write_bullet(
        path, kind="lm", arch=arch, tensors=random_lm_tensors(arch, seed, dtype),
        vocab=byte_vocab(arch["vocab_size"]),
        tokenizer={"kind": "bpe", "bos_id": BOS_ID, "eos_id": EOS_ID, "add_dummy_prefix": False},
        provenance={"name": name, "version": version,
                    "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "training": {"kind": "random", "seed": seed}},
        extra=extra,
    )
