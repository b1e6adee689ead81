"""`python -m bulletd.bench.gguf`: bulletd's runtime and llama.cpp decoding the same child, side
by side in one run.

A random child of the REFERENCE shape (BQ4, bulletd/format/synth.py) is exported with `bullet
export-gguf` and decoded by both, one thread each, one token per call over the same ids
(positions 0..N-1), median of passes:

    bulletd    Session.forward (the native kernels; on an AVX-512 VNNI machine also the AVX2 path,
               the instruction set of llama.cpp's portable build)
    llama.cpp  llama-cpp-python, n_threads=1: Llama.eval([token]) per position (one llama_decode),
               which includes the Python binding's call overhead

    python -m bulletd.bench.gguf [--tokens 256] [--passes 5] [--small] [--json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _bulletd_rate(path: Path, ids: list[int], passes: int, kernel: str = "auto") -> tuple[float, str]:
    from bulletd.bench.runtime import _decode_rate
    from bulletd.runtime.model import load_model
    with load_model(path, backend="native", kernel=kernel) as m:
        s = m.new_session()
        for pos, t in enumerate(ids):          # warm: every weight page touched
            s.forward(t, pos)
        return _decode_rate(m, ids, passes), m.kernel_path


def _llama_rate(path: Path, ids: list[int], passes: int) -> tuple[float, str]:
    import llama_cpp
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=len(ids), n_batch=len(ids), n_threads=1,
                          n_threads_batch=1, verbose=False)
    rates = []
    for i in range(passes + 1):                # the first pass warms
        llm.reset()
        t0 = time.perf_counter()
        for t in ids:
            llm.eval([t])
        if i:
            rates.append(len(ids) / (time.perf_counter() - t0))
    return statistics.median(rates), llama_cpp.__version__


def main(argv: list[str] | None = None) -> int:
    from bulletd.format.arch import REFERENCE, SMALL
    from bulletd.format.synth import write_random_lm
    from bulletd.gguf.export import export_gguf
    ap = argparse.ArgumentParser(prog="python -m bulletd.bench.gguf", description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=256, help="positions decoded per pass (default: the context, 256)")
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--small", action="store_true", help="the SMALL shape instead of REFERENCE")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("bench gguf: llama-cpp-python is not installed (scripts/setup.sh --test builds it)", file=sys.stderr)
        return 1
    arch = dict(SMALL if a.small else REFERENCE)
    n = max(1, min(a.tokens, arch["max_seq_len"]))
    ids = [int(t) for t in np.random.default_rng(1).integers(3, arch["vocab_size"], size=n)]
    with tempfile.TemporaryDirectory(prefix="bullet-bench-gguf-") as d:
        src, gg = Path(d) / "child.bullet", Path(d) / "child.gguf"
        write_random_lm(src, arch, seed=0, dtype="bq4", name="bench")
        export_gguf(src, gg)
        b, path = _bulletd_rate(src, ids, a.passes)
        b2 = None
        if path == "avx512vnni":       # llama.cpp's build here is AVX2 (no tuning to the CPU): same ISA too
            b2, _ = _bulletd_rate(src, ids, a.passes, kernel="avx2")
        lc, version = _llama_rate(gg, ids, a.passes)
        r = {"shape": "SMALL" if a.small else "REFERENCE", "arch": arch, "tokens": n, "passes": a.passes,
             "bullet_bytes": src.stat().st_size, "gguf_bytes": gg.stat().st_size,
             "bulletd_tok_s": b, "bulletd_kernel_path": path, "bulletd_avx2_tok_s": b2,
             "llama_cpp_tok_s": lc, "llama_cpp_python": version, "ratio": b / lc}
    if a.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"{r['shape']} child (dim {arch['dim']}, {arch['n_layers']} layers, vocab {arch['vocab_size']}), BQ4 / Q4_0, "
          f"{r['bullet_bytes']:,} bytes .bullet, {r['gguf_bytes']:,} bytes GGUF; decode of {n} positions, one thread, "
          f"median of {a.passes} passes")
    print(f"  bulletd runtime ({path:<10})          {b:>9,.0f} tok/s   {b / lc:5.2f}x llama.cpp")
    if b2 is not None:
        print(f"  bulletd runtime (avx2      )          {b2:>9,.0f} tok/s   {b2 / lc:5.2f}x llama.cpp")
    print(f"  llama.cpp (llama-cpp-python {version})  {lc:>9,.0f} tok/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
