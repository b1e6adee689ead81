"""Native forward speed per kernel path, one thread, random BQ4 models of the REFERENCE and
SMALL shapes (bulletd.format.synth):

    python -m bulletd.bench.kernels      # decode tokens/s and 128-token prefill ms per kernel path
"""
from __future__ import annotations

import os
import time

import numpy as np

from bulletd.format.synth import REFERENCE, SMALL
from bulletd.kernels import (NativeModel, available_kernels, cpu_features, kernel_path, native_module,
                             random_bq4_tensors)


def bench_forward(config: dict, tensors: dict, kernel: str = "auto", n_decode: int = 256,
                  prompt_len: int = 128, repeats: int = 5) -> dict:
    """Time the native model on one thread (the calling one).

    decode: tokens/s of forward() over positions 0..n_decode-1 (best of `repeats` passes);
    prefill: best wall time in ms of one prefill() of `prompt_len` tokens at position 0.
    Returns a dict with kernel_path, decode_tok_s, prefill_ms, prefill_tok_s, kv_cache_bytes."""
    m = NativeModel(config, tensors, kernel)
    s = m.new_session()
    vocab, ctx = config["vocab_size"], config["max_seq_len"]
    n_decode = min(n_decode, ctx)
    prompt_len = min(prompt_len, ctx)
    rng = np.random.default_rng(1)
    ids = [int(t) for t in rng.integers(0, vocab, size=max(n_decode, prompt_len))]
    # wall time (what a user waits) and this thread's CPU time (what the code costs: on a shared
    # machine other processes stretch the wall time, not the CPU time)
    best_dec = best_dec_cpu = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        for p in range(n_decode):
            s.forward(ids[p], p)
        best_dec = min(best_dec, time.perf_counter() - t0)
        best_dec_cpu = min(best_dec_cpu, time.thread_time() - c0)
    best_pre = best_pre_cpu = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        s.prefill(ids[:prompt_len], 0)
        best_pre = min(best_pre, time.perf_counter() - t0)
        best_pre_cpu = min(best_pre_cpu, time.thread_time() - c0)
    return {"kernel_path": m.kernel_path, "decode_tok_s": n_decode / best_dec, "prefill_ms": best_pre * 1e3,
            "prefill_tok_s": prompt_len / best_pre, "decode_tok_s_cpu": n_decode / max(best_dec_cpu, 1e-9),
            "prefill_ms_cpu": best_pre_cpu * 1e3, "kv_cache_bytes": s.kv_cache_bytes,
            "scratch_bytes": s.scratch_bytes, "weight_bytes": m.weight_bytes, "packed_bytes": m.packed_bytes}


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m bulletd.bench.kernels",
                                description="Native forward benchmark on random BQ4 models, one thread.")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--decode", type=int, default=256)
    p.add_argument("--prompt", type=int, default=128)
    a = p.parse_args(argv)
    native_module()
    print(f"active kernel path: {kernel_path()}  (BULLET_KERNEL={os.environ.get('BULLET_KERNEL', '')!r}); "
          f"cpu: {cpu_features()}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; best of {a.repeats}; "
          f"decode over positions 0..{a.decode - 1}; wall time, and this thread's CPU time in brackets")
    for label, cfg in (("REFERENCE", REFERENCE), ("SMALL", SMALL)):
        cfg = dict(cfg, tied_embeddings=True)
        tensors = random_bq4_tensors(cfg, seed=0)
        for path in available_kernels():
            r = bench_forward(cfg, tensors, path, a.decode, a.prompt, a.repeats)
            print(f"{label:9s} {path:10s} decode {r['decode_tok_s']:7.0f} tok/s ({r['decode_tok_s_cpu']:7.0f})   "
                  f"prefill {a.prompt} tokens {r['prefill_ms']:7.2f} ms ({r['prefill_ms_cpu']:7.2f})   "
                  f"kv cache {r['kv_cache_bytes']:,} B   scratch {r['scratch_bytes']:,} B   "
                  f"packed weights {r['packed_bytes']:,} B")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
