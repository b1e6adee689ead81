"""Where a decode token's time goes, beside the roofline of the model on this machine (a part of
`bullet bench`; also `python -m bulletd.bench.roofline`).

The breakdown: the native decode loop (sampling on, the daemon's settings) over the whole context
on one thread, with the session's step profile on (native/model.h, ProfilePart: wall time of each
part of every step, summed), each part from the pass where it took least. Passes with the profile
off alternate with it, so the cost of the timers shows. "other" is what the parts leave of a
profiled pass's wall time (the smallest remainder): the calls between batches.

The roofline of one core, from two probes of this machine (native/roofline.cpp, timed by the
thread's CPU time, as the decode rate it is compared with), with the kernel path's own
instructions:
  memory:  bytes a token must read / the read bandwidth of one core over a buffer as large as the
           model's weights and KV cache (the cache level they live in between tokens), read with
           the widest loads the CPU has (the auto path's), the same for every path
  compute: int8 multiply-accumulates a token needs (every weight once) / the path's peak int8
           MAC rate on register data
The bound is the smaller rate. "weights" counts the weights' bytes (as the path holds them,
repacked) per token, as the usual int8 roofline does; "weights + KV" adds the K and V rows that
attention reads, at the mean position of a decode over the whole context.
"""
from __future__ import annotations

import time

import numpy as np

PARTS = ("qkv", "wo", "ffn", "classifier", "attention", "norm", "rope", "act", "embed", "sample")
GROUPS = (("matvecs", ("qkv", "wo", "ffn", "classifier")), ("attention", ("attention",)),
          ("norms, rope, activation", ("norm", "rope", "act", "embed")), ("sampling", ("sample",)))


def _decode_loop(impl, ctx: int) -> tuple[int, float, float]:
    """The native decode loop from BOS to the end of the context in calls of 64 tokens (as
    bench.runtime._loop); returns (tokens, wall seconds, this thread's CPU seconds)."""
    coins = np.random.default_rng(0).random(64)
    seen = np.array([1], dtype=np.int64)
    stop = np.zeros(0, dtype=np.int64)
    logits = np.array(impl.prefill([1], 0), dtype=np.float32)
    t0, c0 = time.perf_counter(), time.thread_time()
    pos, pending, n = 1, -1, 0
    while pos < ctx:
        k = min(64, ctx - pos + (pending < 0))
        toks, _, pos = impl.decode(logits, pending, pos, k, coins, seen, 0.8, 40, 0.95, 1.1, stop)
        pending, n = toks[-1], n + len(toks)
    return n, time.perf_counter() - t0, time.thread_time() - c0


def breakdown(native_model, rounds: int = 3) -> dict:
    """Per-token seconds of each part and the wall time per token with the profile on and off, on
    one thread of the calling process, each the smallest over `rounds` passes (the parts are wall
    time: on a busy machine other processes stretch whichever part they interrupt, so each part is
    taken from the pass where it was least disturbed); tok_s_cpu: tokens per second of this
    thread's CPU time (unprofiled)."""
    impl = native_model.new_session()
    ctx = native_model.config["max_seq_len"]
    _decode_loop(impl, ctx)                                    # warm-up
    on, off, off_cpu, parts = [], [], [], {p: [] for p in PARTS}
    for _ in range(rounds):
        impl.profiling = False
        n, dt, cpu = _decode_loop(impl, ctx)
        off.append(dt / n)
        off_cpu.append(cpu / n)
        impl.profiling = True                                  # clears the counters
        n, dt, _ = _decode_loop(impl, ctx)
        prof = impl.profile
        impl.profiling = False
        on.append(dt / n)
        steps = max(1, prof["steps"])
        for p in PARTS:
            parts[p].append(prof[p] / steps)
    # each figure from its least disturbed round: other processes stretch whatever they interrupt
    r = {"token_s": min(off), "token_s_profiled": min(on), "part_s": {p: min(v) for p, v in parts.items()}}
    r["tok_s"] = 1 / r["token_s"]
    r["tok_s_cpu"] = 1 / max(min(off_cpu), 1e-12)
    r["profile_cost"] = r["token_s_profiled"] / r["token_s"] - 1
    r["other_s"] = max(0.0, min(on[i] - sum(v[i] for v in parts.values()) for i in range(rounds)))
    return r


def model_counts(config: dict, weight_bytes: int) -> dict:
    """int8 MACs and bytes a decode step needs: every matrix once (the classifier is the embedding
    when tied), and the K and V rows attention reads at the mean position over the context."""
    d, L, V, H = config["dim"], config["n_layers"], config["vocab_size"], config["hidden_dim"]
    hd = config.get("head_dim") or d // config["n_heads"]
    qd, kvd = hd * config["n_heads"], hd * config["n_kv_heads"]
    macs = L * (d * qd + 2 * d * kvd + qd * d + 3 * d * H) + V * d
    ctx = config["max_seq_len"]
    mean_positions = (ctx + 1) / 2                             # positions 0..p read at step p
    kv_read = L * kvd * 2 * 4 * mean_positions                 # f32 K and V rows
    kv_cache = L * kvd * 2 * 4 * ctx
    return {"macs": macs, "weight_bytes": weight_bytes, "kv_read_bytes": kv_read, "kv_cache_bytes": kv_cache}


def roofline(native_model, path: str | None = None) -> dict:
    """The model's roofline on one core of this machine for kernel path `path` (the model's own by
    default): tokens/s of the memory bound (weights only, and weights + KV) and of the compute
    bound, from the probes in native/roofline.cpp."""
    from bulletd.kernels import native_module
    n = native_module()
    path = path or native_model.kernel_path
    cfg = native_model.config
    wbytes = native_model.packed_bytes or native_model.weight_bytes
    c = model_counts(cfg, wbytes)
    # the machine's bandwidth: its widest loads (the auto path's), whichever path computes
    bw = n.read_bytes_per_s("auto", int(wbytes + c["kv_cache_bytes"]))
    macs_s = n.int8_macs_per_s(path)
    c.update(path=path, read_bytes_s=bw, int8_macs_s=macs_s,
             memory_tok_s=bw / wbytes, memory_kv_tok_s=bw / (wbytes + c["kv_read_bytes"]),
             compute_tok_s=macs_s / c["macs"])
    c["roofline_tok_s"] = min(c["memory_tok_s"], c["compute_tok_s"])
    c["roofline_kv_tok_s"] = min(c["memory_kv_tok_s"], c["compute_tok_s"])
    c["bound"] = "memory" if c["memory_tok_s"] <= c["compute_tok_s"] else "compute"
    return c


def measure(native_model, rounds: int = 3) -> dict:
    """breakdown() and roofline() of one model, the decode (tokens per CPU second) as a fraction of
    both bounds."""
    r = breakdown(native_model, rounds)
    r["roofline"] = rl = roofline(native_model)
    # the probes count this thread's CPU time, so the decode is put beside them the same way
    r["of_roofline"] = r["tok_s_cpu"] / rl["roofline_tok_s"]
    r["of_roofline_kv"] = r["tok_s_cpu"] / rl["roofline_kv_tok_s"]
    return r


def report_lines(r: dict, indent: str = "  ") -> list[str]:
    rl = r["roofline"]
    us = 1e6
    lines = [f"{indent}where a token's time goes (decode loop with sampling, whole context, one thread, profile on; "
             f"{r['tok_s']:.1f} tok/s with it off ({r['tok_s_cpu']:.1f} per CPU second), the timers cost "
             f"{100 * r['profile_cost']:+.1f} %):"]
    total = sum(r["part_s"].values()) + r["other_s"]           # the shares are of what was counted
    for label, parts in GROUPS:
        t = sum(r["part_s"][p] for p in parts)
        detail = ", ".join(f"{p} {r['part_s'][p] * us:.1f}" for p in parts) if len(parts) > 1 else ""
        lines.append(f"{indent}  {label:24s} {t * us:7.1f} us  {100 * t / total:5.1f} %" + (f"   ({detail})" if detail else ""))
    lines.append(f"{indent}  {'other (calls, Python)':24s} {r['other_s'] * us:7.1f} us  {100 * r['other_s'] / total:5.1f} %")
    lines.append(f"{indent}roofline, one core: read {rl['read_bytes_s'] / 1e9:.1f} GB/s over "
                 f"{(rl['weight_bytes'] + rl['kv_cache_bytes']) / 2**20:.1f} MiB (weights + KV cache), "
                 f"int8 {rl['int8_macs_s'] / 1e9:.1f} GMAC/s with {rl['path']}'s dot instruction")
    lines.append(f"{indent}  weights {rl['weight_bytes'] / 2**20:.2f} MiB a token: {rl['memory_tok_s']:.0f} tok/s; "
                 f"{rl['macs'] / 1e6:.2f} M MACs a token: {rl['compute_tok_s']:.0f} tok/s -> {rl['bound']} bound, "
                 f"{rl['roofline_tok_s']:.0f} tok/s; decode (per CPU second) is {100 * r['of_roofline']:.0f} % of it")
    lines.append(f"{indent}  with the KV rows attention reads (mean {rl['kv_read_bytes'] / 2**20:.2f} MiB a token): "
                 f"{rl['roofline_kv_tok_s']:.0f} tok/s; decode is {100 * r['of_roofline_kv']:.0f} % of it")
    return lines


def main(argv=None) -> int:
    import argparse
    from bulletd.format.synth import REFERENCE, SMALL
    from bulletd.kernels import NativeModel, available_kernels, random_bq4_tensors
    p = argparse.ArgumentParser(prog="python -m bulletd.bench.roofline", description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="reference,small")
    p.add_argument("--paths", default="", help="comma list of kernel paths (default: every SIMD path this CPU runs)")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    paths = [s for s in a.paths.split(",") if s] or [k for k in available_kernels() if k != "scalar"] or ["scalar"]
    for label in a.shapes.split(","):
        cfg = dict({"reference": REFERENCE, "small": SMALL}[label.strip().lower()], tied_embeddings=True)
        tensors = random_bq4_tensors(cfg, seed=0)
        for path in paths:
            m = NativeModel(cfg, tensors, path)
            print(f"== {label.upper()} {path}")
            print("\n".join(report_lines(measure(m, a.rounds))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
