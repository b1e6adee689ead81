"""`bullet-train bench`: training speed of the REFERENCE model and the attention memory comparison.

Prints, for the REFERENCE configuration of DESIGN.md (dim 256, 8 layers, 4 heads, 4 kv heads,
SwiGLU hidden 768, vocab 2048, context 256) at batch 4 x sequence 128:
  * steps per minute and the mean step time split into forward, backward and optimiser
    (AdamW + clipping), over timed steps after warm-up steps;
  * a baseline measured in the same process: the same step's matrix products alone, run as bare
    NumPy GEMMs (the BLAS floor: what a step would cost with zero overhead outside BLAS), and
    the same model with the plain (non-tiled) attention;
  * peak memory of one causal attention forward+backward at a long context, plain vs flash;
  * the issue's quoted reference points (original Bullet OS ~100 steps/min; PyTorch eager ~150,
    torch.compile ~200 on this machine) for orientation, marked as quoted, not measured.

    bullet-train bench [--steps 30] [--warmup 3] [--seq 128] [--batch 4] [--memory-seq 2048]
"""
from __future__ import annotations

import os
import time

import numpy as np

from trainer.attention import peak_attention_memory
from trainer.model import Model, ModelArch
from trainer.optim import AdamW, clip_grad_norm

REFERENCE = ModelArch(dim=256, n_layers=8, n_heads=4, n_kv_heads=4, hidden_dim=768, vocab_size=2048,
                      max_seq_len=256)


def time_steps(arch: ModelArch, batch: int, seq: int, steps: int, warmup: int, attn_impl="flash", seed=0) -> dict:
    model = Model(arch, seed=seed, attn_impl=attn_impl)
    opt = AdamW(model.flat, model.flat_grad, model.decay_mask)
    rng = np.random.default_rng(seed)
    tf = tb = to = 0.0
    for i in range(warmup + steps):
        w = rng.integers(0, arch.vocab_size, size=(batch, seq + 1))
        t0 = time.perf_counter()
        model.zero_grad()
        loss = model.loss(w[:, :-1], w[:, 1:])
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        clip_grad_norm(model.flat_grad, 1.0)
        opt.step(1e-4)
        t3 = time.perf_counter()
        if i >= warmup:
            tf += t1 - t0
            tb += t2 - t1
            to += t3 - t2
    n = steps
    step = (tf + tb + to) / n
    return {"fwd_ms": 1e3 * tf / n, "bwd_ms": 1e3 * tb / n, "opt_ms": 1e3 * to / n, "step_ms": 1e3 * step,
            "steps_per_min": 60.0 / step, "tokens_per_s": batch * seq / step}


def gemm_floor(arch: ModelArch, batch: int, seq: int, reps: int = 10) -> dict:
    """The step's GEMMs (forward, and the two backward products of each) as bare NumPy calls."""
    N, D, hd = batch * seq, arch.dim, arch.head_dim
    rng = np.random.default_rng(0)
    shapes = []  # (m, k, n) for an (m,k)@(k,n) product
    for _ in range(arch.n_layers):
        for out, inp in (((arch.n_heads + 2 * arch.n_kv_heads) * hd, D), (D, arch.n_heads * hd),
                         (2 * arch.hidden_dim, D), (D, arch.hidden_dim)):
            shapes += [(N, inp, out), (N, out, inp), (out, N, inp)]  # y = xW^T, dx = dy W, dW = dy^T x
    shapes += [(N, D, arch.vocab_size), (N, arch.vocab_size, D), (arch.vocab_size, N, D)]
    mats = [(rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32))
            for m, k, n in shapes]
    for a, b in mats:
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        for a, b in mats:
            a @ b
    dt = (time.perf_counter() - t0) / reps
    flops = sum(2 * m * k * n for m, k, n in shapes)
    return {"gemm_ms": 1e3 * dt, "gflop": flops / 1e9, "gflops_per_s": flops / dt / 1e9}


def run(steps=30, warmup=3, batch=4, seq=128, memory_seq=2048, plain=True, out=print) -> dict:
    a = REFERENCE
    out(f"bullet-train bench: REFERENCE model ({a.n_params() / 1e6:.2f}M parameters: dim {a.dim}, {a.n_layers} layers, "
        f"{a.n_heads} heads, hidden {a.hidden_dim}, vocab {a.vocab_size}), batch {batch} x seq {seq}, float32")
    out(f"  cores: {os.cpu_count()}; BLAS threads: OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'default')}; "
        f"{steps} timed steps after {warmup} warm-up; figures are noisy on a shared machine")
    r = time_steps(a, batch, seq, steps, warmup, "flash")
    out(f"  flash attention : {r['steps_per_min']:7.1f} steps/min  step {r['step_ms']:6.1f} ms = forward "
        f"{r['fwd_ms']:6.1f} + backward {r['bwd_ms']:6.1f} + optimiser {r['opt_ms']:5.1f} ms  "
        f"({r['tokens_per_s']:.0f} tokens/s)   target >= 150 steps/min")
    res = {"flash": r}
    if plain:
        p = time_steps(a, batch, seq, max(5, steps // 3), warmup, "plain")
        out(f"  plain attention : {p['steps_per_min']:7.1f} steps/min  step {p['step_ms']:6.1f} ms = forward "
            f"{p['fwd_ms']:6.1f} + backward {p['bwd_ms']:6.1f} + optimiser {p['opt_ms']:5.1f} ms  (baseline)")
        res["plain"] = p
    g = gemm_floor(a, batch, seq)
    out(f"  GEMM floor      : {60e3 / g['gemm_ms']:7.1f} steps/min  the step's {g['gflop']:.1f} GFLOP of matrix products "
        f"alone take {g['gemm_ms']:.1f} ms ({g['gflops_per_s']:.0f} GFLOP/s) (baseline)")
    out(f"  BLAS share of the flash step: {100 * g['gemm_ms'] / r['step_ms']:.0f}%")
    res["gemm"] = g
    if memory_seq:
        mp = peak_attention_memory("plain", memory_seq)
        mf = peak_attention_memory("flash", memory_seq)
        out(f"  attention memory at context {memory_seq} (batch 1, 4 heads, head 32, forward+backward peak): "
            f"plain {mp / 2**20:.1f} MiB, flash {mf / 2**20:.1f} MiB ({mp / max(1, mf):.1f}x less)")
        res["memory"] = {"plain": mp, "flash": mf, "seq": memory_seq}
    out("  quoted, not measured here: original Bullet OS ~100 steps/min (Marathi model); "
        "PyTorch eager ~150, torch.compile ~200 steps/min on this machine")
    return res
