"""`bullet-train bench`: training speed of the REFERENCE model and the attention memory comparison.

Prints, for the REFERENCE shape (bulletd.format.arch: dim 256, 8 layers, 4 heads, 4 kv heads,
SwiGLU hidden 768, vocab 2048, context 256) at batch 4 x sequence 128:
  * steps per minute and the mean step time split into forward (row group 0's: the groups run
    side by side), backward (the rest of Model.loss_and_grad) and optimiser (AdamW + clipping),
    over timed steps after warm-up steps, and the step's cost in multiples of its bare GEMMs;
  * baselines measured in the same process: the same step's matrix products alone, run as bare
    NumPy GEMMs both ways of using both cores (BLAS threads, or the row groups on two threads:
    the faster is the floor, what a step would cost with zero overhead outside BLAS), the same
    step with the flash tiles at this short context too (the backward recomputing P instead of
    keeping it), and the one-pass step (the whole batch's forward and backward at once, BLAS
    with its own threads);
  * peak memory of one causal attention forward+backward at a long context, plain vs flash;
  * quoted reference points (the committed figures of the one-pass trainer, original Bullet OS,
    PyTorch eager and torch.compile on this machine kind), marked as quoted, not measured.

  * the CPU time of the step and of its GEMMs (all threads of the process), whose ratio does not
    depend on what else runs on the machine;

    bullet-train bench [--steps 30] [--warmup 3] [--seq 128] [--batch 4] [--memory-seq 2048] [--no-baselines]
"""
from __future__ import annotations

import os
import time

import numpy as np

from bulletd.format import arch as arch_rules
from trainer import cpu
from trainer.attention import peak_attention_memory
from trainer.model import Model, ModelArch
from trainer.optim import AdamW, clip_scale, grad_norm

REFERENCE = ModelArch(**arch_rules.REFERENCE)
# the one-pass trainer before the row groups and the fused kernels: its committed figures
# (2026-11-26, issue 17) and its bench beside this one in the same windows (2026-12-03)
BEFORE = "the one-pass trainer 159-266 steps/min, 1.8-2.8x its GEMMs"


def _settle() -> None:
    """Wait out the spinning of BLAS's own threads after a call that used them (OpenBLAS's idle
    threads spin for ~0.1 s before they sleep), so they take no core from what is timed next."""
    time.sleep(0.2)


class _Stepper:
    """One model + optimiser; step() runs one timed training step on random tokens.

    `one_pass` steps the old way, for comparison: zero_grad, the whole batch's forward and
    backward in one pass, BLAS with its own thread count."""

    def __init__(self, arch: ModelArch, batch: int, seq: int, seed: int = 0, one_pass=False, keep_p=True):
        self.model = Model(arch, seed=seed, attn_impl="flash")
        self.model.attn_keep_p = keep_p
        self.opt = AdamW(self.model.flat, self.model.flat_grad, self.model.decay_mask)
        self.rng = np.random.default_rng(seed)
        self.arch, self.batch, self.seq = arch, batch, seq
        self.one_pass = one_pass
        self.t = np.zeros(3)
        self.cpu_s = 0.0
        self.n = 0

    def step(self, timed: bool = True) -> None:
        w = self.rng.integers(0, self.arch.vocab_size, size=(self.batch, self.seq + 1))
        c0 = time.process_time()
        t0 = time.perf_counter()
        if self.one_pass:
            self.model.zero_grad()
            loss = self.model.loss(w[:, :-1], w[:, 1:])
            t1 = time.perf_counter()
            loss.backward()
        else:
            self.model.loss_and_grad(w[:, :-1], w[:, 1:])
            # the row groups run side by side: forward is row group 0's, on its own core
            t1 = t0 + self.model.group_times[0][0]
        t2 = time.perf_counter()
        self.opt.step(1e-4, grad_scale=clip_scale(grad_norm(self.model.flat_grad), 1.0))
        t3 = time.perf_counter()
        c3 = time.process_time()
        if self.one_pass:
            _settle()
        if timed:
            self.t += (t1 - t0, t2 - t1, t3 - t2)
            self.cpu_s += c3 - c0
            self.n += 1

    def result(self) -> dict:
        tf, tb, to = self.t / max(1, self.n)
        step = tf + tb + to
        return {"fwd_ms": 1e3 * tf, "bwd_ms": 1e3 * tb, "opt_ms": 1e3 * to, "step_ms": 1e3 * step,
                "cpu_ms": 1e3 * self.cpu_s / max(1, self.n),
                "steps_per_min": 60.0 / step, "tokens_per_s": self.batch * self.seq / step, "steps": self.n}


class _GemmFloor:
    """The step's GEMMs (forward, and the two backward products of each) as bare NumPy calls.

    Two ways to use both cores: the whole batch's products one after another with BLAS's own
    threads ("BLAS threads"), and the products of each row group (what `Model.loss_and_grad`
    runs) on the worker threads, one BLAS thread each ("row groups"). The floor is the faster."""

    def __init__(self, arch: ModelArch, batch: int, seq: int):
        rng = np.random.default_rng(0)
        k = max(1, min(Model.GROUPS, batch))
        self.flops = sum(2 * m * kk * n for m, kk, n in self._shapes(arch, batch * seq))
        self.whole = self._mats(rng, self._shapes(arch, batch * seq))
        self.groups = [self._mats(rng, self._shapes(arch, (batch * (i + 1) // k - batch * i // k) * seq))
                       for i in range(k)]
        self.t = {"blas": 0.0, "groups": 0.0, "groups_cpu": 0.0}
        self.n = 0

    @staticmethod
    def _shapes(arch, N):
        D, hd = arch.dim, arch.head_dim
        shapes = []  # (m, k, n) for an (m,k)@(k,n) product
        for _ in range(arch.n_layers):
            for out, inp in (((arch.n_heads + 2 * arch.n_kv_heads) * hd, D), (D, arch.n_heads * hd),
                             (2 * arch.hidden_dim, D), (D, arch.hidden_dim)):
                shapes += [(N, inp, out), (N, out, inp), (out, N, inp)]  # y = xW^T, dx = dy W, dW = dy^T x
        shapes += [(N, D, arch.vocab_size), (N, arch.vocab_size, D), (arch.vocab_size, N, D)]
        return shapes

    @staticmethod
    def _mats(rng, shapes):
        return [(rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32))
                for m, k, n in shapes]

    @staticmethod
    def _products(mats):
        for a, b in mats:
            a @ b

    def run(self, timed: bool = True) -> None:
        t0 = time.perf_counter()
        c0 = time.process_time()
        n_workers = min(len(self.groups), cpu.workers()) if cpu.blas_control() else 1
        with cpu.blas_threads(1):
            if n_workers > 1:
                futs = [cpu.pool().submit(self._products, g) for g in self.groups[1:]]
                self._products(self.groups[0])
                for f in futs:
                    f.result()
            else:
                for g in self.groups:
                    self._products(g)
        t1 = time.perf_counter()
        c1 = time.process_time()
        self._products(self.whole)
        t2 = time.perf_counter()
        _settle()
        if timed:
            self.t["groups"] += t1 - t0
            self.t["groups_cpu"] += c1 - c0
            self.t["blas"] += t2 - t1
            self.n += 1

    def result(self) -> dict:
        blas, groups = (self.t[k] / max(1, self.n) for k in ("blas", "groups"))
        dt = min(blas, groups)
        return {"gemm_ms": 1e3 * dt, "blas_ms": 1e3 * blas, "groups_ms": 1e3 * groups,
                "cpu_ms": 1e3 * self.t["groups_cpu"] / max(1, self.n),
                "gflop": self.flops / 1e9, "gflops_per_s": self.flops / dt / 1e9}


def run(steps=30, warmup=3, batch=4, seq=128, memory_seq=2048, baselines=True, out=print) -> dict:
    a = REFERENCE
    cpu.keep_freed_memory()
    out(f"bullet-train bench: REFERENCE model ({a.n_params() / 1e6:.2f}M parameters: dim {a.dim}, {a.n_layers} layers, "
        f"{a.n_heads} heads, hidden {a.hidden_dim}, vocab {a.vocab_size}), batch {batch} x seq {seq}, float32")
    out(f"  cores: {os.cpu_count()}; BLAS: {cpu.blas_name()}, {cpu.blas_thread_count() or 'unknown'} threads "
        f"({'settable' if cpu.blas_control() else 'not settable: row groups run one after another'}); "
        f"{steps} timed steps after {warmup} warm-up; figures are noisy on a shared machine")
    # the measurements are interleaved step by step, so a change in the machine's load hits all
    # of them alike and their ratios stay meaningful on a shared machine
    flash = _Stepper(a, batch, seq)
    tiles = _Stepper(a, batch, seq, keep_p=False) if baselines else None
    one_pass = _Stepper(a, batch, seq, one_pass=True) if baselines else None
    floor = _GemmFloor(a, batch, seq)
    for i in range(warmup + steps):
        timed = i >= warmup
        flash.step(timed)
        for base in (tiles, one_pass):
            if base is not None and (not timed or (i - warmup) % 3 == 0):  # every third timed step
                base.step(timed)
        floor.run(timed)
    r = flash.result()
    g = floor.result()

    def line(label, x, note=""):
        out(f"  {label:<16}: {x['steps_per_min']:7.1f} steps/min  step {x['step_ms']:6.1f} ms = forward "
            f"{x['fwd_ms']:6.1f} + backward {x['bwd_ms']:6.1f} + optimiser {x['opt_ms']:5.1f} ms  "
            f"= {x['step_ms'] / g['gemm_ms']:.2f}x GEMMs, CPU {x['cpu_ms']:.0f} ms  {note}")

    line("training step", r, f"({r['tokens_per_s']:.0f} tokens/s)   target >= 220 steps/min, <= 1.5x GEMMs")
    res = {"step": r}
    if tiles is not None:
        res["tiles"] = p = tiles.result()
        line("flash tiles", p, f"(baseline: P recomputed in the backward; {p['steps']} steps)")
        res["one_pass"] = o = one_pass.result()
        line("one pass", o, f"(baseline: the whole batch at once, BLAS threads; {o['steps']} steps)")
    out(f"  GEMM floor      : {60e3 / g['gemm_ms']:7.1f} steps/min  the step's {g['gflop']:.1f} GFLOP of matrix products "
        f"alone take {g['gemm_ms']:.1f} ms ({g['gflops_per_s']:.0f} GFLOP/s; BLAS threads {g['blas_ms']:.1f} ms, "
        f"row groups on {cpu.workers()} threads {g['groups_ms']:.1f} ms) (baseline)")
    out(f"  the training step costs {r['step_ms'] / g['gemm_ms']:.2f}x its bare GEMMs; in CPU time (all threads, "
        f"whatever else runs): step {r['cpu_ms']:.1f} ms, its GEMMs (row groups) {g['cpu_ms']:.1f} ms, "
        f"{r['cpu_ms'] / g['cpu_ms']:.2f}x")
    res["gemm"] = g
    if memory_seq:
        mp = peak_attention_memory("plain", memory_seq)
        mf = peak_attention_memory("flash", memory_seq)
        out(f"  attention memory at context {memory_seq} (batch 1, 4 heads, head 32, forward+backward peak): "
            f"plain {mp / 2**20:.1f} MiB, flash {mf / 2**20:.1f} MiB ({mp / max(1, mf):.1f}x less)")
        res["memory"] = {"plain": mp, "flash": mf, "seq": memory_seq}
    out(f"  quoted, not measured here: {BEFORE}; original Bullet OS ~100 steps/min (Marathi model); "
        "PyTorch eager 142-166, torch.compile 193-215 steps/min on this machine kind")
    return res
