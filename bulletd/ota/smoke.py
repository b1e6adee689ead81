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
forward step (config `require_vectors` turns that into a failure). A mother (router-kind
file) is checked by smoke_test_router instead.

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


def smoke_test_router(path, require_vectors: bool = False) -> dict:
    """A mother (router-kind file): it must load, give finite probabilities that sum to 1, and
    route each of its verification texts ({"text", "label"}) to the stored label."""
    from bulletd.router import load_mother
    try:
        m = load_mother(str(path))
    except BulletError as exc:
        raise SmokeTestFailed(f"{path}: the router cannot load it: {exc}") from exc
    from bulletd.format import BulletFile
    with BulletFile.open(path) as bf:
        vectors = bf.header.get("verification") or []
    if not isinstance(vectors, list):
        raise SmokeTestFailed(f"{path}: header 'verification' should be a list")
    if not vectors and require_vectors:
        raise SmokeTestFailed(f"{path}: carries no verification vectors and the receiver "
                              f"requires them (ota.require_vectors)")
    texts = [(v.get("text"), v.get("label")) for v in vectors[:MAX_VECTORS] if isinstance(v, dict)]
    for i, (text, label) in enumerate(texts or [("hello", None)]):
        if not isinstance(text, str):
            raise SmokeTestFailed(f"{path}: verification[{i}] should have a 'text' string")
        p = m.probs(m.hidden(m.features(text)))
        if not np.all(np.isfinite(p)) or abs(float(p.sum()) - 1.0) > 1e-3:
            raise SmokeTestFailed(f"{path}: probabilities for {text!r:.40} are not a distribution")
        got = m.labels[int(np.argmax(p))]
        if label is not None and got != label:
            raise SmokeTestFailed(f"{path}: verification[{i}] ({text!r:.40}) routes to {got!r}, "
                                  f"expected {label!r}")
    return {"vectors": len(texts), "router": True}


def smoke_test(path, require_vectors: bool = False) -> dict:
    """Load PATH with the runtime and replay its verification vectors.

    Returns {"vectors": n, "tokens": ids checked, "exact": ids that were the exact argmax}.
    Raises SmokeTestFailed.
    """
    from bulletd.format import BulletFile
    from bulletd.runtime import load_model  # late: keeps `import bulletd.ota` light

    try:
        with BulletFile.open(path) as bf:
            kind = bf.kind
    except BulletError as exc:
        raise SmokeTestFailed(f"{path}: not a readable .bullet file: {exc}") from exc
    if kind == "router":
        return smoke_test_router(path, require_vectors)
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
