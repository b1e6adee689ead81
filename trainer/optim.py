"""AdamW with decoupled weight decay, the warmup + cosine learning-rate schedule, and global-norm
gradient clipping. All three work on the model's flat parameter / gradient vectors.

The schedule is a pure function of the step (nanoGPT's get_lr), so a resumed run computes the
same learning rates as an uninterrupted one.
"""
from __future__ import annotations

import math

import numpy as np


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


def clip_grad_norm(grad: np.ndarray, max_norm: float) -> float:
    """Scale grad in place so its L2 norm is at most max_norm (<= 0 disables). Returns the norm
    before clipping (inf/nan when the gradient is not finite: the caller treats that as a spike)."""
    # one BLAS dot in the gradient's own dtype: a float64 copy of a 8M-element vector costs more
    # than the whole optimiser step, and the norm only steers a scale factor
    # (partial dots over 256k-element pieces, summed in float64, keep the rounding error ~1e-5)
    with np.errstate(over="ignore", invalid="ignore"):
        sq = sum(float(np.dot(grad[i:i + 262144], grad[i:i + 262144])) for i in range(0, grad.size, 262144))
    norm = math.sqrt(sq) if math.isfinite(sq) else float("nan") if math.isnan(sq) else float("inf")
    if max_norm > 0 and math.isfinite(norm) and norm > max_norm:
        grad *= max_norm / (norm + 1e-6)
    return norm


class AdamW:
    """AdamW (Loshchilov & Hutter): m, v moments with bias correction; weight decay applied to the
    weights directly (p -= lr * wd * p), not through the gradient, and only where decay_mask is set.

    The update is elementwise, so it runs over cache-sized chunks (each chunk's temporaries stay
    in L2 instead of streaming 7 full-size passes through memory) split between two threads
    (NumPy releases the GIL inside ufuncs). Every element sees the same operations in the same
    order whatever the chunking, so the result is bit-identical to a single pass.
    """

    CHUNK = 1 << 15  # 32k float32 = 128 KiB per array; six arrays fit in a 1 MiB L2

    def __init__(self, params: np.ndarray, grads: np.ndarray, decay_mask: np.ndarray, *,
                 betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, threads: int = 2):
        self.p, self.g = params, grads
        self.decay = decay_mask.astype(params.dtype) * weight_decay  # per-element decay rate
        self.b1, self.b2 = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.m = np.zeros_like(params)
        self.v = np.zeros_like(params)
        self.t = 0  # number of updates done
        n = params.size
        bounds = list(range(0, n, self.CHUNK)) + [n]
        self._chunks = list(zip(bounds[:-1], bounds[1:]))
        self._threads = max(1, threads)
        self._pool = None

    def _update(self, lo: int, hi: int, lr: float, c1: float, c2: float) -> None:
        b1, b2 = self.b1, self.b2
        p, g, m, v, dec = self.p[lo:hi], self.g[lo:hi], self.m[lo:hi], self.v[lo:hi], self.decay[lo:hi]
        tmp = np.empty_like(p)
        # m = b1 m + (1 - b1) g ; v = b2 v + (1 - b2) g^2
        m *= b1
        np.multiply(g, 1.0 - b1, out=tmp)
        m += tmp
        v *= b2
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - b2
        v += tmp
        # p -= lr * wd * p  (decoupled decay), then p -= lr/c1 * m / (sqrt(v/c2) + eps)
        np.multiply(p, dec, out=tmp)
        tmp *= lr
        p -= tmp
        np.multiply(v, 1.0 / c2, out=tmp)
        np.sqrt(tmp, out=tmp)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= lr / c1
        p -= tmp

    def _run_range(self, chunks, lr, c1, c2):
        for lo, hi in chunks:
            self._update(lo, hi, lr, c1, c2)

    def step(self, lr: float) -> None:
        self.t += 1
        c1 = 1.0 - self.b1 ** self.t
        c2 = 1.0 - self.b2 ** self.t
        ch = self._chunks
        if self._threads == 1 or len(ch) < 8:
            self._run_range(ch, lr, c1, c2)
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=self._threads - 1, thread_name_prefix="adamw")
        k = len(ch) // self._threads
        futs = [self._pool.submit(self._run_range, ch[i * k:(i + 1) * k], lr, c1, c2)
                for i in range(1, self._threads)]
        self._run_range(ch[:k] if self._threads > 1 else ch, lr, c1, c2)
        if self._threads > 1:
            # the last worker also takes the remainder
            rest = ch[self._threads * k:]
            self._run_range(rest, lr, c1, c2)
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
