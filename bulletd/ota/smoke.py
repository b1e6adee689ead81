"""The OTA smoke test: load a candidate child and replay the verification vectors it carries.

The trainer stores header["verification"] = [{"prompt": str, "ids": [prompt ids],
"expected": [greedy continuation ids]}, ...] when it exports a child. A candidate passes when
its tokenizer still encodes each prompt to `ids` and greedy decoding (argmax, no penalty, no
sampling) from `ids` reproduces `expected` exactly. A child without vectors passes when it
loads and runs one forward step (config `require_vectors` turns that into a failure).

Runs on a worker thread (it is CPU work). Raises SmokeTestFailed with what differed and where.
"""
from __future__ import annotations

import numpy as np

from bulletd.errors import BulletError

MAX_VECTORS = 16  # bounds the time a hostile (but signed) file can make the test take


class SmokeTestFailed(BulletError):
    pass


def _greedy(model, ids: list[int], n: int) -> list[int]:
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


def smoke_test(path, require_vectors: bool = False) -> dict:
    """Load PATH with the runtime and replay its verification vectors.

    Returns {"vectors": n, "tokens": total tokens checked}. Raises SmokeTestFailed.
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
            _greedy(model, [model.tokenizer.bos_id if hasattr(model.tokenizer, "bos_id") else 1], 1)
            return {"vectors": 0, "tokens": 1}
        tokens = 0
        for i, vec in enumerate(vectors[:MAX_VECTORS]):
            if not isinstance(vec, dict) or not all(k in vec for k in ("prompt", "ids", "expected")):
                raise SmokeTestFailed(f"{path}: verification[{i}] should be a map with prompt, "
                                      f"ids and expected")
            ids, expected = list(vec["ids"]), list(vec["expected"])
            encoded = model.tokenizer.encode(vec["prompt"], bos=True)
            if encoded != ids and model.tokenizer.encode(vec["prompt"], bos=False) != ids:
                raise SmokeTestFailed(f"{path}: verification[{i}]: the tokenizer encodes "
                                      f"{vec['prompt']!r:.40} to {encoded[:12]}..., the file "
                                      f"expects {ids[:12]}...")
            try:
                got = _greedy(model, ids, len(expected))
            except BulletError as exc:
                raise SmokeTestFailed(f"{path}: verification[{i}]: decoding failed: {exc}") from exc
            if got != expected:
                at = next(j for j, (a, b) in enumerate(zip(got, expected)) if a != b)
                raise SmokeTestFailed(f"{path}: verification[{i}] ({vec['prompt']!r:.40}): "
                                      f"token {at} is {got[at]}, expected {expected[at]}")
            tokens += len(expected)
        return {"vectors": min(len(vectors), MAX_VECTORS), "tokens": tokens}
    finally:
        close = getattr(model, "close", None)
        if close:
            close()
