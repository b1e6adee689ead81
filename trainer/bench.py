"""`bullet-train bench`: training speed of the REFERENCE model and the attention memory comparison.

Prints, for the REFERENCE shape (bulletd.format.arch: dim 256, 8 layers, 4 heads, 4 kv heads,
SwiGLU hidden 768, vocab 2048, context 256) at batch 4 x sequence 128:
  * steps per minute and the mean step time split into forward, backward and optimiser
    (AdamW + clipping), over timed steps after warm-up steps;
  * a baseline measured in the same process: the same step's matrix products alone, run as bare
    NumPy GEMMs (the BLAS floor: what a step would cost with zero overhead outside BLAS), and
    the same model with the plain (non-tiled) attention;
  * peak memory of one causal attention forward+backward at a long context, plain vs flash;
  * quoted reference points (original Bullet OS ~100 steps/min; PyTorch eager ~150,
    torch.compile ~200 on this machine) for orientation, marked as quoted, not measured.

    bullet-train bench [--steps 30] [--warmup 3] [--seq 128] [--batch 4] [--memory-seq 2048]
"""
from __future__ import annotations

import os
import time

import numpy as np

from bulletd.format import arch as arch_rules
from trainer.attention import peak_attention_memory
from trainer.model import Model, ModelArch
from trainer.optim import AdamW, clip_grad_norm

REFERENCE = ModelArch(**arch_rules.REFERENCE)


class _Stepper:
    """One model + optimiser; step() runs one timed training step on random tokens."""

    def __init__(self, arch: ModelArch, batch: int, seq: int, attn_impl: str, seed: int = 0):
        self.model = Model(arch, seed=seed, attn_impl=attn_impl)
        self.opt = AdamW(self.model.flat, self.model.flat_grad, self.model.decay_mask)
        self.rng = np.random.default_rng(seed)
        self.arch, self.batch, self.seq = arch, batch, seq
        self.t = np.zeros(3)
        self.n = 0

    def step(self, timed: bool = True) -> None:
        w = self.rng.integers(0, self.arch.vocab_size, size=(self.batch, self.seq + 1))
        t0 = time.perf_counter()
        self.model.zero_grad()
        loss = self.model.loss(w[:, :-1], w[:, 1:])
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        clip_grad_norm(self.model.flat_grad, 1.0)
        self.opt.step(1e-4)
        t3 = time.perf_counter()
        if timed:
            self.t += (t1 - t0, t2 - t1, t3 - t2)
            self.n += 1

    def result(self) -> dict:
        tf, tb, to = self.t / max(1, self.n)
        step = tf + tb + to
        return {"fwd_ms": 1e3 * tf, "bwd_ms": 1e3 * tb, "opt_ms": 1e3 * to, "step_ms": 1e3 * step,
                "steps_per_min": 60.0 / step, "tokens_per_s": self.batch * self.seq / step, "steps": self.n}


class _GemmFloor:
    """The step's GEMMs (forward, and the two backward products of each) as bare NumPy calls."""

    def __init__(self, arch: ModelArch, batch: int, seq: int):
        N, D, hd = batch * seq, arch.dim, arch.head_dim
        rng = np.random.default_rng(0)
        shapes = []  # (m, k, n) for an (m,k)@(k,n) product
        for _ in range(arch.n_layers):
            for out, inp in (((arch.n_heads + 2 * arch.n_kv_heads) * hd, D), (D, arch.n_heads * hd),
                             (2 * arch.hidden_dim, D), (D, arch.hidden_dim)):
                shapes += [(N, inp, out), (N, out, inp), (out, N, inp)]  # y = xW^T, dx = dy W, dW = dy^T x
        shapes += [(N, D, arch.vocab_size), (N, arch.vocab_size, D), (arch.vocab_size, N, D)]
        self.mats = [(rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32))
                     for m, k, n in shapes]
        self.flops = sum(2 * m * k * n for m, k, n in shapes)
        self.t, self.n = 0.0, 0

    def run(self, timed: bool = True) -> None:
        t0 = time.perf_counter()
        for a, b in self.mats:
            a @ b
        if timed:
            self.t += time.perf_counter() - t0
            self.n += 1

    def result(self) -> dict:
        dt = self.t / max(1, self.n)
        return {"gemm_ms": 1e3 * dt, "gflop": self.flops / 1e9, "gflops_per_s": self.flops / dt / 1e9}


def run(steps=30, warmup=3, batch=4, seq=128, memory_seq=2048, plain=True, out=print) -> dict:
    a = REFERENCE
    out(f"bullet-train bench: REFERENCE model ({a.n_params() / 1e6:.2f}M parameters: dim {a.dim}, {a.n_layers} layers, "
        f"{a.n_heads} heads, hidden {a.hidden_dim}, vocab {a.vocab_size}), batch {batch} x seq {seq}, float32")
    out(f"  cores: {os.cpu_count()}; BLAS threads: OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'default')}; "
        f"{steps} timed steps after {warmup} warm-up; figures are noisy on a shared machine")
    # the three measurements are interleaved step by step, so a change in the machine's load
    # hits all of them alike and their ratios stay meaningful on a shared machine
    flash = _Stepper(a, batch, seq, "flash")
    plain_s = _Stepper(a, batch, seq, "plain") if plain else None
    floor = _GemmFloor(a, batch, seq)
    for i in range(warmup + steps):
        timed = i >= warmup
        flash.step(timed)
        if plain_s is not None and (not timed or i % 3 == 0):
            plain_s.step(timed)
        floor.run(timed)
    r = flash.result()
    out(f"  flash attention : {r['steps_per_min']:7.1f} steps/min  step {r['step_ms']:6.1f} ms = forward "
        f"{r['fwd_ms']:6.1f} + backward {r['bwd_ms']:6.1f} + optimiser {r['opt_ms']:5.1f} ms  "
        f"({r['tokens_per_s']:.0f} tokens/s)   target >= 150 steps/min")
    res = {"flash": r}
    if plain_s is not None:
        p = plain_s.result()
        out(f"  plain attention : {p['steps_per_min']:7.1f} steps/min  step {p['step_ms']:6.1f} ms = forward "
            f"{p['fwd_ms']:6.1f} + backward {p['bwd_ms']:6.1f} + optimiser {p['opt_ms']:5.1f} ms  (baseline, "
            f"{p['steps']} steps)")
        res["plain"] = p
    g = floor.result()
    out(f"  GEMM floor      : {60e3 / g['gemm_ms']:7.1f} steps/min  the step's {g['gflop']:.1f} GFLOP of matrix products "
        f"alone take {g['gemm_ms']:.1f} ms ({g['gflops_per_s']:.0f} GFLOP/s) (baseline)")
    out(f"  the flash step costs {r['step_ms'] / g['gemm_ms']:.2f}x its bare GEMMs")
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
