"""AdamW with decoupled weight decay, the warmup + cosine learning-rate schedule, and global-norm
gradient clipping. All three work on the model's flat parameter / gradient vectors.

The schedule is a pure function of the step (nanoGPT's get_lr), so a resumed run computes the
same learning rates as an uninterrupted one.
"""
from __future__ import annotations

import math

import numpy as np

from trainer import cpu


def lr_at(step: int, *, max_lr: float, min_lr: float, warmup: int, total: int) -> float:
    """Learning rate for the update that produces step `step + 1` (step counts from 0).

    Linear warmup from max_lr/warmup to max_lr over `warmup` steps, then cosine decay to min_lr
    at `total`; min_lr after that.
    """
    if warmup > 0 and step < warmup:
        return max_lr * (step + 1) / warmup
    if step >= total:
        return min_lr
    span = max(1, total - warmup)
    progress = (step - warmup) / span
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def grad_norm(grad: np.ndarray) -> float:
    """L2 norm of the gradient (inf/nan when it is not finite: the caller treats that as a spike)."""
    # one BLAS dot in the gradient's own dtype: a float64 copy of a 8M-element vector costs more
    # than the whole optimiser step, and the norm only steers a scale factor
    # (partial dots over 256k-element pieces, summed in float64, keep the rounding error ~1e-5)
    # (the pieces' dots on the worker threads, added in piece order: the same bits on any count)
    starts = list(range(0, grad.size, 262144))

    def dots(part):
        with np.errstate(over="ignore", invalid="ignore"):
            return [float(np.dot(grad[i:i + 262144], grad[i:i + 262144])) for i in part]

    n = min(cpu.workers(), len(starts))
    if n > 1:
        cuts = [len(starts) * i // n for i in range(n + 1)]
        futs = [cpu.pool().submit(dots, starts[cuts[i]:cuts[i + 1]]) for i in range(1, n)]
        parts = [dots(starts[:cuts[1]])] + [f.result() for f in futs]
    else:
        parts = [dots(starts)]
    sq = sum(d for part in parts for d in part)
    return math.sqrt(sq) if math.isfinite(sq) else float("nan") if math.isnan(sq) else float("inf")


def clip_scale(norm: float, max_norm: float) -> float:
    """The factor that brings a gradient of this norm down to max_norm (1.0 when it is within,
    when max_norm <= 0 disables clipping, or when the norm is not finite)."""
    if max_norm > 0 and math.isfinite(norm) and norm > max_norm:
        return max_norm / (norm + 1e-6)
    return 1.0


def clip_grad_norm(grad: np.ndarray, max_norm: float) -> float:
    """Scale grad in place so its L2 norm is at most max_norm (<= 0 disables). Returns the norm
    before clipping. (The training loop passes clip_scale to AdamW.step instead: no extra pass.)"""
    norm = grad_norm(grad)
    scale = clip_scale(norm, max_norm)
    if scale != 1.0:
        grad *= scale
    return norm


class AdamW:
    """AdamW (Loshchilov & Hutter): m, v moments with bias correction; weight decay applied to the
    weights directly (p -= lr * wd * p), not through the gradient, and only where decay_mask is set.

    The update is elementwise, so it runs over cache-sized chunks (each chunk's temporaries stay
    in cache instead of streaming full-size passes through memory) split between the trainer's worker
    threads (NumPy releases the GIL inside ufuncs), with one scratch array per chunk and the
    constants folded (clipping scale, bias corrections, learning rate): 13 passes over a chunk.
    Every element sees the same operations in the same order whatever the chunking, so the result
    is bit-identical to a single pass.
    """

    # 128k float32 = 512 KiB per array: the chunk's arrays stay in cache, and the calls are few
    # enough that two threads do not queue on the GIL between them (32k chunks: 3,000 ufunc calls
    # a step, and two threads were slower than one)
    CHUNK = 1 << 17

    def __init__(self, params: np.ndarray, grads: np.ndarray, decay_mask: np.ndarray, *,
                 betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, threads: int = 2):
        self.p, self.g = params, grads
        self.b1, self.b2 = betas
        self.eps = eps
        self.weight_decay = weight_decay
        mask = np.asarray(decay_mask, dtype=bool)
        n_decay = int(mask.sum())
        # the model puts the decayed matrices first: decay is then one scalar over a prefix
        self.n_decay = n_decay if mask[:n_decay].all() else None
        self.decay = None if self.n_decay is not None else mask.astype(params.dtype) * weight_decay
        self.m = np.zeros_like(params)
        self.v = np.zeros_like(params)
        self.t = 0  # number of updates done
        n = params.size
        bounds = list(range(0, n, self.CHUNK)) + [n]
        self._chunks = list(zip(bounds[:-1], bounds[1:]))
        self._threads = max(1, threads)

    def _update(self, lo: int, hi: int, k: dict) -> None:
        p, g, m, v = self.p[lo:hi], self.g[lo:hi], self.m[lo:hi], self.v[lo:hi]
        tmp = np.empty_like(p)
        # m = b1 m + (1 - b1) s g ; v = b2 v + (1 - b2) s^2 g^2   (s: the clipping scale)
        np.multiply(g, k["gm"], out=tmp)
        m *= self.b1
        m += tmp
        np.multiply(g, g, out=tmp)
        tmp *= k["gv"]
        v *= self.b2
        v += tmp
        # decoupled decay p -= lr wd p, then p -= lr/c1 m / (sqrt(v/c2) + eps)
        #                                   = lr sqrt(c2)/c1 * m / (sqrt(v) + eps sqrt(c2))
        if self.decay is not None:
            np.multiply(p, self.decay[lo:hi], out=tmp)
            tmp *= k["lr"]
            p -= tmp
        elif lo < self.n_decay:
            p[:self.n_decay - lo] *= k["keep"]
        np.sqrt(v, out=tmp)
        tmp += k["eps"]
        np.divide(m, tmp, out=tmp)
        tmp *= k["step"]
        p -= tmp

    def _run_range(self, chunks, k):
        for lo, hi in chunks:
            self._update(lo, hi, k)

    def step(self, lr: float, grad_scale: float = 1.0) -> None:
        """One update with the gradient times grad_scale (clip_scale: clipping without a pass of
        its own)."""
        self.t += 1
        c1 = 1.0 - self.b1 ** self.t
        c2 = 1.0 - self.b2 ** self.t
        k = {"gm": (1.0 - self.b1) * grad_scale, "gv": (1.0 - self.b2) * grad_scale * grad_scale,
             "lr": lr, "keep": 1.0 - lr * self.weight_decay, "eps": self.eps * math.sqrt(c2),
             "step": lr * math.sqrt(c2) / c1}
        ch = self._chunks
        n = min(self._threads, cpu.workers())
        if n == 1 or len(ch) < 2:
            self._run_range(ch, k)
            return
        cuts = [len(ch) * i // n for i in range(n + 1)]
        futs = [cpu.pool().submit(self._run_range, ch[cuts[i]:cuts[i + 1]], k) for i in range(1, n)]
        self._run_range(ch[:cuts[1]], k)
        for f in futs:
            f.result()

    def state(self) -> dict:
        return {"m": self.m, "v": self.v}

    def load_state(self, m: np.ndarray, v: np.ndarray, t: int) -> None:
        if m.shape != self.m.shape or v.shape != self.v.shape:
            raise ValueError(f"optimiser state has {m.size} values, the model has {self.m.size}")
        self.m[...] = m
        self.v[...] = v
        self.t = int(t)
