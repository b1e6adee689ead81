"""The OTA smoke test: load a candidate child and replay the verification vectors it carries.

The trainer stores header["verification"] = [{"prompt": str, "ids": [prompt ids],
"expected": [greedy continuation ids]}, ...] when it exports a child. A candidate passes when
its tokenizer still encodes each prompt to `ids`, and greedy decoding from `ids` reproduces
`expected`: at every step the expected id must be the argmax of the logits, or lie within a
small tolerance of it (TOL_ABS, or TOL_REL x the logits' standard deviation). The tolerance
exists because backends legitimately differ: the native kernels quantise activations to int8,
and on the tiny test models their logits differ from the NumPy reference by up to ~0.1 (std ~1),
so a near-tie may flip. A wrong or damaged model misses by several standard deviations. The
expected id (not our argmax) is fed back at each step (teacher forcing), so one near-tie does
not derail the rest of the vector. A child without vectors passes when it loads and runs one
forward step (config `require_vectors` turns that into a failure).

Runs on a worker thread (it is CPU work). Raises SmokeTestFailed with what differed and where.
"""
from __future__ import annotations

import numpy as np

from bulletd.errors import BulletError

MAX_VECTORS = 16  # bounds the time a hostile (but signed) file can make the test take
TOL_ABS = 0.05
TOL_REL = 0.25


class SmokeTestFailed(BulletError):
    pass


def _greedy(model, ids: list[int], n: int) -> list[int]:
    """Plain greedy decoding: n argmax ids after `ids` (used to write vectors in tests)."""
    session = model.new_session()
    logits = session.prefill(list(ids), 0)
    out = []
    pos = len(ids)
    for _ in range(n):
        tok = int(np.argmax(logits))
        out.append(tok)
        if len(out) == n:
            break
        logits = session.forward(tok, pos)
        pos += 1
    return out


def replay(model, ids: list[int], expected: list[int], where: str) -> int:
    """Teacher-forced greedy check of one vector. Returns how many ids were the exact argmax;
    raises SmokeTestFailed at the first id outside the tolerance."""
    vocab = model.arch["vocab_size"]
    if not all(isinstance(t, int) and 0 <= t < vocab for t in list(ids) + list(expected)):
        raise SmokeTestFailed(f"{where}: ids must be integers in [0, {vocab})")
    session = model.new_session()
    logits = session.prefill(list(ids), 0)
    pos, exact = len(ids), 0
    for j, tok in enumerate(expected):
        top = int(np.argmax(logits))
        if top == tok:
            exact += 1
        else:
            gap = float(logits[top] - logits[tok])
            tol = max(TOL_ABS, TOL_REL * float(np.std(logits)))
            if gap > tol:
                raise SmokeTestFailed(f"{where}: token {j} is {top}, expected {tok} (logit "
                                      f"{logits[tok]:.3f} vs best {logits[top]:.3f}: gap "
                                      f"{gap:.3f} > tolerance {tol:.3f})")
        if j + 1 < len(expected):
            logits = session.forward(tok, pos)
            pos += 1
    return exact


def smoke_test(path, require_vectors: bool = False) -> dict:
    """Load PATH with the runtime and replay its verification vectors.

    Returns {"vectors": n, "tokens": ids checked, "exact": ids that were the exact argmax}.
    Raises SmokeTestFailed.
    """
    from bulletd.runtime import load_model  # late: keeps `import bulletd.ota` light

    try:
        model = load_model(str(path))
    except BulletError as exc:
        raise SmokeTestFailed(f"{path}: the runtime cannot load it: {exc}") from exc
    try:
        vectors = model.header.get("verification") or []
        if not isinstance(vectors, list):
            raise SmokeTestFailed(f"{path}: header 'verification' should be a list, "
                                  f"found {type(vectors).__name__}")
        if not vectors:
            if require_vectors:
                raise SmokeTestFailed(f"{path}: carries no verification vectors and the "
                                      f"receiver requires them (ota.require_vectors)")
            _greedy(model, [getattr(model.tokenizer, "bos_id", 1)], 1)
            return {"vectors": 0, "tokens": 1}
        tokens = exact = 0
        for i, vec in enumerate(vectors[:MAX_VECTORS]):
            if not isinstance(vec, dict) or not all(k in vec for k in ("prompt", "ids", "expected")):
                raise SmokeTestFailed(f"{path}: verification[{i}] should be a map with prompt, "
                                      f"ids and expected")
            if not isinstance(vec["ids"], list) or not isinstance(vec["expected"], list):
                raise SmokeTestFailed(f"{path}: verification[{i}]: ids and expected should be "
                                      f"lists of token ids")
            ids, expected = vec["ids"], vec["expected"]
            encoded = model.tokenizer.encode(vec["prompt"], bos=True)
            if encoded != ids and model.tokenizer.encode(vec["prompt"], bos=False) != ids:
                raise SmokeTestFailed(f"{path}: verification[{i}]: the tokenizer encodes "
                                      f"{vec['prompt']!r:.40} to {encoded[:12]}..., the file "
                                      f"expects {ids[:12]}...")
            try:
                exact += replay(model, ids, expected,
                                f"{path}: verification[{i}] ({vec['prompt']!r:.40})")
            except BulletError as exc:
                if isinstance(exc, SmokeTestFailed):
                    raise
                raise SmokeTestFailed(f"{path}: verification[{i}]: decoding failed: {exc}") from exc
            tokens += len(expected)
        return {"vectors": min(len(vectors), MAX_VECTORS), "tokens": tokens, "exact": exact}
    finally:
        close = getattr(model, "close", None)
        if close:
            close()
