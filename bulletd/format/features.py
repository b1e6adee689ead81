"""Router features: hashed character n-grams, shared by the mother's trainer and the daemon.

router_features(text, dim): the lower-cased text wrapped in single spaces; every character
n-gram for n = 1, 2, 3 (over Unicode code points) is hashed with 32-bit FNV-1a over its UTF-8
bytes into bucket hash % dim; the counts go through log1p and the vector is L2-normalised.
"""
from __future__ import annotations

import numpy as np

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def fnv1a32(data: bytes) -> int:
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def router_features(text: str, dim: int) -> np.ndarray:
    """float32 (dim,) feature vector of `text`."""
    if not isinstance(text, str):
        raise TypeError(f"router_features expects str, got {type(text).__name__}")
    s = " " + " ".join(text.lower().split()) + " "
    v = np.zeros(dim, dtype=np.float32)
    for n in (1, 2, 3):
        for i in range(len(s) - n + 1):
            v[fnv1a32(s[i: i + n].encode("utf-8")) % dim] += 1.0
    v = np.log1p(v)
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v
