"""Router features: hashed character and word n-grams, shared by the mother's trainer and the daemon.

router_features(text, dim, kind="char1-3"): the lower-cased text, whitespace runs collapsed to one
space, wrapped in single spaces. Every n-gram of the kind is hashed with 32-bit FNV-1a over the
UTF-8 bytes of its key into bucket hash % dim; the counts go through log1p and the vector is
L2-normalised. Kinds (a mother's header names its kind in router.features; absent = "char1-3"):

  * "char1-3"          character n-grams, n = 1, 2, 3, over Unicode code points; key = the n-gram;
  * "char1-4+word1-2"  every digit written as 0 (ASCII) or ० (Devanagari) first: which number a
                       request holds says nothing of its task. Then character n-grams, n = 1 .. 4,
                       as above, and word n-grams: the words are the
                       text split at whitespace after ASCII punctuation and the danda (। ॥) became
                       spaces and the operator signs + - * / ^ % = × ÷ single words; key of a word
                       = "\\x01" + word; key of a pair of neighbours = "\\x02" + w1 + " " + w2, over
                       "<s>", the words, "</s>" (so the first and the last word also count as pairs).

Hashes of keys are memoised (the daemon sees the same n-grams again and again).
"""
from __future__ import annotations

import numpy as np

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193

FEATURE_KINDS = ("char1-3", "char1-4+word1-2")
DEFAULT_KIND = "char1-3"
_CACHE_MAX = 1 << 18
_cache: dict[str, int] = {}
_PUNCT = {ord(c): " " for c in ".,!?;:\"'`()[]{}<>|\\@#&_~।॥"}
_PUNCT.update({ord(c): f" {c} " for c in "+-*/^%=×÷"})
_DIGITS = str.maketrans("123456789१२३४५६७८९", "000000000०००००००००")


def fnv1a32(data: bytes) -> int:
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def _hash(key: str) -> int:
    h = _cache.get(key)
    if h is None:
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        h = _cache[key] = fnv1a32(key.encode("utf-8"))
    return h


def _keys(text: str, kind: str) -> list[str]:
    s = " " + " ".join(text.lower().split()) + " "
    if kind != "char1-3":
        s = s.translate(_DIGITS)
    top = 3 if kind == "char1-3" else 4
    keys = [s[i: i + n] for n in range(1, top + 1) for i in range(len(s) - n + 1)]
    if kind == "char1-4+word1-2":
        words = s.translate(_PUNCT).split()
        keys += ["\x01" + w for w in words]
        seq = ["<s>"] + words + ["</s>"]
        keys += ["\x02" + a + " " + b for a, b in zip(seq, seq[1:])]
    return keys


def _buckets(text: str, dim: int, kind: str) -> np.ndarray:
    if not isinstance(text, str):
        raise TypeError(f"router_features expects str, got {type(text).__name__}")
    if kind not in FEATURE_KINDS:
        raise ValueError(f"unknown router feature kind {kind!r} (known: {', '.join(FEATURE_KINDS)})")
    return np.asarray([_hash(k) % dim for k in _keys(text, kind)], dtype=np.int64)


def router_features(text: str, dim: int, kind: str = DEFAULT_KIND) -> np.ndarray:
    """float32 (dim,) feature vector of `text`."""
    v = np.log1p(np.bincount(_buckets(text, dim, kind), minlength=dim).astype(np.float32))
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def router_features_sparse(text: str, dim: int, kind: str = DEFAULT_KIND) -> tuple[np.ndarray, np.ndarray]:
    """The non-zero buckets of router_features(text, dim, kind) and their values (for training)."""
    idx, counts = np.unique(_buckets(text, dim, kind), return_counts=True)
    v = np.log1p(counts.astype(np.float32))
    norm = float(np.linalg.norm(v))
    return idx, (v / norm if norm > 0 else v)
