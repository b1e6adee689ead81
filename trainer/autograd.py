"""A small reverse-mode autograd engine over NumPy arrays: the Tensor type and the ops the model needs.

Every op returns a new Tensor holding its output and a backward closure that *accumulates* into
the gradients of its inputs; ``Tensor.backward()`` walks the graph in reverse topological order
(the micrograd design, with arrays instead of scalars). Ops are dtype-generic: the model trains in
float32 and the tests check every op against finite differences in float64
(``tests/test_autograd.py``).

The numeric kernels of the heavier ops (RMSNorm, RoPE, attention, softmax-cross-entropy) are plain
functions (``*_fwd`` / ``*_bwd``) so the fused ``self_attention`` op can reuse them; the attention
kernels live in ``trainer.attention``.

    from trainer import autograd as ag
    x = ag.Tensor(np.ones((2, 3)), requires_grad=True)
    y = ag.sum(ag.silu(x)); y.backward(); x.grad
"""
from __future__ import annotations

import math

import numpy as np

from trainer import attention as attn


class Tensor:
    """An array plus what is needed to differentiate through it.

    `parents` are the input Tensors of the op that made this one; `backward_fn(g)` receives this
    tensor's gradient and adds the inputs' gradients into their `.grad` (see `_acc`).
    `fresh` marks a preset `.grad` buffer (a parameter's) whose contents are stale: the first
    contribution overwrites it instead of adding to it, so nothing has to zero it first.
    """

    __slots__ = ("data", "grad", "parents", "backward_fn", "requires_grad", "name", "fresh")

    def __init__(self, data, parents=(), backward_fn=None, requires_grad=False, name=None):
        self.data = data if isinstance(data, np.ndarray) else np.asarray(data)
        self.grad = None
        self.fresh = False
        self.parents = parents
        self.backward_fn = backward_fn
        self.requires_grad = bool(requires_grad) or any(p.requires_grad for p in parents)
        self.name = name

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    def __repr__(self):
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, name={self.name!r})"

    def backward(self, grad=None):
        """Back-propagate from this tensor (default gradient: ones, i.e. d(sum(self)))."""
        topo, seen = [], set()
        stack = [(self, False)]
        # iterative DFS: the model graph is deep enough (layers x ops) to make recursion fragile
        while stack:
            node, expanded = stack.pop()
            if expanded:
                topo.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            for p in node.parents:
                if p.requires_grad and id(p) not in seen:
                    stack.append((p, False))
        if grad is None:
            grad = np.ones_like(self.data)
        _acc(self, np.asarray(grad, dtype=self.data.dtype))
        for node in reversed(topo):
            if node.backward_fn is not None and node.grad is not None:
                node.backward_fn(node.grad)
                # intermediate gradients are not needed once passed on; free them early
                if node.parents:
                    node.grad = None if node is not self else node.grad


def _acc(t: Tensor, g: np.ndarray) -> None:
    """Add g into t.grad. A preset grad (parameters: a view into the flat gradient buffer) is
    updated in place (overwritten when `fresh`); otherwise the first contribution is copied so no
    two tensors share storage."""
    if not t.requires_grad:
        return
    if t.grad is None:
        t.grad = np.array(g, dtype=t.data.dtype, copy=True)
    elif t.fresh:
        np.copyto(t.grad, g)
        t.fresh = False
    else:
        t.grad += g


def _give(t: Tensor, g: np.ndarray) -> None:
    """_acc for a gradient array the caller made and hands over: a tensor without a gradient yet
    takes it as is, no copy."""
    if t.requires_grad and t.grad is None and g.dtype == t.data.dtype and g.shape == t.data.shape:
        t.grad = g
    else:
        _acc(t, g)


def _unbroadcast(g: np.ndarray, shape) -> np.ndarray:
    """Sum a broadcast gradient back to `shape`."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for i, n in enumerate(shape):
        if n == 1 and g.shape[i] != 1:
            g = g.sum(axis=i, keepdims=True)
    return g


def as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(np.asarray(x))


# ---------------------------------------------------------------------------------------------
# elementwise and shape ops
# ---------------------------------------------------------------------------------------------

def add(a, b) -> Tensor:
    a, b = as_tensor(a), as_tensor(b)

    def bwd(g):
        _acc(a, _unbroadcast(g, a.shape))
        _acc(b, _unbroadcast(g, b.shape))

    return Tensor(a.data + b.data, (a, b), bwd)


def mul(a, b) -> Tensor:
    a, b = as_tensor(a), as_tensor(b)

    def bwd(g):
        if a.requires_grad:
            _acc(a, _unbroadcast(g * b.data, a.shape))
        if b.requires_grad:
            _acc(b, _unbroadcast(g * a.data, b.shape))

    return Tensor(a.data * b.data, (a, b), bwd)


def sum(a) -> Tensor:  # noqa: A001 - mirrors numpy's name on purpose
    a = as_tensor(a)

    def bwd(g):
        _acc(a, np.broadcast_to(g, a.shape))

    return Tensor(np.asarray(a.data.sum(), dtype=a.data.dtype), (a,), bwd)


def reshape(a, shape) -> Tensor:
    a = as_tensor(a)

    def bwd(g):
        _acc(a, g.reshape(a.shape))

    return Tensor(a.data.reshape(shape), (a,), bwd)


def transpose(a, axes) -> Tensor:
    a = as_tensor(a)
    inv = np.argsort(axes)

    def bwd(g):
        _acc(a, g.transpose(inv))

    return Tensor(a.data.transpose(axes), (a,), bwd)


def relu(x) -> Tensor:
    x = as_tensor(x)
    pos = x.data > 0

    def bwd(g):
        _acc(x, g * pos)

    return Tensor(np.where(pos, x.data, 0).astype(x.data.dtype), (x,), bwd)


def silu(x) -> Tensor:
    """x * sigmoid(x)."""
    x = as_tensor(x)
    s = 1.0 / (1.0 + np.exp(-x.data))

    def bwd(g):
        _acc(x, g * (s * (1.0 + x.data * (1.0 - s))))

    return Tensor(x.data * s, (x,), bwd)


def swiglu(gate_up) -> Tensor:
    """SwiGLU on a fused (…, 2H) input [gate | up]: silu(gate) * up -> (…, H)."""
    gate_up = as_tensor(gate_up)
    h = gate_up.shape[-1] // 2
    if gate_up.shape[-1] != 2 * h:
        raise ValueError(f"swiglu: last axis must be even (gate|up), got {gate_up.shape[-1]}")
    # contiguous copies of the two halves: NumPy's arithmetic on the strided halves runs ~4x slower
    gt, up = np.ascontiguousarray(gate_up.data[..., :h]), np.ascontiguousarray(gate_up.data[..., h:])
    s = np.negative(gt)  # s = 1 / (1 + exp(-gate)), in place in one buffer
    np.exp(s, out=s)
    s += 1.0
    np.reciprocal(s, out=s)
    sg = gt * s

    def bwd(g):
        out = np.empty_like(gate_up.data)
        # d/dgate silu(gate)*up = (g * up) * (s * (1 + gate * (1 - s))); d/dup = g * silu(gate)
        d = np.subtract(1.0, s)
        d *= gt
        d += 1.0
        d *= s
        u = np.multiply(g, up)
        d *= u
        out[..., :h] = d
        np.multiply(g, sg, out=out[..., h:])
        _give(gate_up, out)

    return Tensor(sg * up, (gate_up,), bwd)


def dropout(x, mask: np.ndarray) -> Tensor:
    """x * mask, the mask given (0 where an element is dropped, 1 / keep-rate where it is kept:
    trainer.model.Model draws it from a counter-based seed). Gradient: g * mask."""
    x = as_tensor(x)
    if mask.shape != x.shape:
        raise ValueError(f"dropout: mask shape {mask.shape} does not match input {x.shape}")

    def bwd(g):
        _give(x, g * mask)

    return Tensor(x.data * mask, (x,), bwd)


# ---------------------------------------------------------------------------------------------
# matrix products
# ---------------------------------------------------------------------------------------------

def matmul(a, b) -> Tensor:
    """a @ b with NumPy's broadcasting rules over leading (batch) axes; both at least 2-D."""
    a, b = as_tensor(a), as_tensor(b)
    if a.data.ndim < 2 or b.data.ndim < 2:
        raise ValueError(f"matmul: both operands must be at least 2-D, got {a.shape} and {b.shape}")

    def bwd(g):
        if a.requires_grad:
            _acc(a, _unbroadcast(g @ np.swapaxes(b.data, -1, -2), a.shape))
        if b.requires_grad:
            _acc(b, _unbroadcast(np.swapaxes(a.data, -1, -2) @ g, b.shape))

    return Tensor(a.data @ b.data, (a, b), bwd)


def linear(x, w) -> Tensor:
    """y = x @ w.T with w stored (out_features, in_features) as in the .bullet file (y = W x)."""
    x, w = as_tensor(x), as_tensor(w)
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"linear: input has {x.shape[-1]} features, weight expects {w.shape[1]}")
    x2 = x.data.reshape(-1, x.shape[-1])
    y = x2 @ w.data.T

    def bwd(g):
        g2 = g.reshape(-1, g.shape[-1])
        if w.requires_grad:
            if w.fresh:
                # straight into the parameter's gradient buffer: one GEMM, no temporary
                np.matmul(g2.T, x2, out=w.grad)
                w.fresh = False
            elif w.grad is not None:
                w.grad += g2.T @ x2
            else:
                _acc(w, g2.T @ x2)
        if x.requires_grad:
            _give(x, (g2 @ w.data).reshape(x.shape))

    return Tensor(y.reshape(*x.shape[:-1], w.shape[0]), (x, w), bwd)


def embedding(w, ids: np.ndarray) -> Tensor:
    """Rows of w (vocab, dim) gathered by the integer array ids -> ids.shape + (dim,)."""
    w = as_tensor(w)
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= w.shape[0]):
        raise ValueError(f"embedding: ids must lie in [0, {w.shape[0]}), got [{ids.min()}, {ids.max()}]")

    def bwd(g):
        if not w.requires_grad:
            return
        if w.grad is None:
            w.grad = np.zeros_like(w.data)
        elif w.fresh:
            w.grad[...] = 0
            w.fresh = False
        np.add.at(w.grad, ids.reshape(-1), g.reshape(-1, w.shape[1]))  # scatter-add, repeats summed

    return Tensor(w.data[ids], (w,), bwd)


# ---------------------------------------------------------------------------------------------
# normalisation and position
# ---------------------------------------------------------------------------------------------

def rmsnorm_fwd(x, w, eps):
    """y = w * x / rms(x) over the last axis -> (y, xhat = x / rms(x), r = 1 / rms(x) of shape (…, 1))."""
    x2 = x.reshape(-1, x.shape[-1])
    ms = np.einsum("ij,ij->i", x2, x2)  # sum of squares per row, no temporary
    ms *= 1.0 / x.shape[-1]
    ms += eps
    r = np.reciprocal(np.sqrt(ms, out=ms), out=ms).reshape(*x.shape[:-1], 1)
    xhat = x * r
    return xhat * w, xhat, r


def rmsnorm_bwd(g, xhat, w, r):
    # y = w * xhat, xhat = x * r, r = (mean(x^2)+eps)^-1/2  =>  dx = r * (gh - xhat * mean(gh * xhat)),
    # gh = g * w; dw = sum over rows of g * xhat
    D = xhat.shape[-1]
    gh = g * w
    gh2, xh2 = gh.reshape(-1, D), xhat.reshape(-1, D)
    c = np.einsum("ij,ij->i", gh2, xh2)
    c *= 1.0 / D
    tmp = np.multiply(xh2, c[:, None])
    gh2 -= tmp
    gh *= r
    np.multiply(g.reshape(-1, D), xh2, out=tmp)
    gw = tmp.sum(axis=0)
    return gh, gw


def rmsnorm(x, w, eps=1e-5) -> Tensor:
    x, w = as_tensor(x), as_tensor(w)
    y, xhat, r = rmsnorm_fwd(x.data, w.data, eps)

    def bwd(g):
        gx, gw = rmsnorm_bwd(g, xhat, w.data, r)
        _give(x, gx)
        _acc(w, gw)

    return Tensor(y, (x, w), bwd)


def rope_tables(seq_len: int, head_dim: int, theta: float = 10000.0, dtype=np.float32):
    """cos, sin tables (seq_len, head_dim/2) for llama2.c RoPE: pair (2i, 2i+1) rotates by
    pos * theta^(-2i/head_dim)."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
    freq = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    ang = np.arange(seq_len, dtype=np.float64)[:, None] * freq[None, :]
    return np.cos(ang).astype(dtype), np.sin(ang).astype(dtype)


def rope_fwd(x, cos, sin):
    """x (…, T, hd); cos/sin (T, hd/2). Rotates interleaved pairs (x[2i], x[2i+1])."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


def rope_bwd(g, cos, sin):
    # the inverse rotation (transpose of the rotation matrix)
    g0, g1 = g[..., 0::2], g[..., 1::2]
    out = np.empty_like(g)
    out[..., 0::2] = g0 * cos + g1 * sin
    out[..., 1::2] = g1 * cos - g0 * sin
    return out


def rope(x, cos, sin) -> Tensor:
    x = as_tensor(x)
    T = x.shape[-2]
    c, s = cos[:T], sin[:T]

    def bwd(g):
        _acc(x, rope_bwd(g, c, s))

    return Tensor(rope_fwd(x.data, c, s), (x,), bwd)


# ---------------------------------------------------------------------------------------------
# attention
# ---------------------------------------------------------------------------------------------

def attention(q, k, v, impl: str = "flash", block: int = 64) -> Tensor:
    """Causal attention. q (B, H, T, hd), k/v (B, KV, T, hd) with H a multiple of KV (grouped
    query heads). impl "flash" (tiled, O(T) memory, recomputing backward) or "plain" (stores the
    T x T probabilities)."""
    q, k, v = as_tensor(q), as_tensor(k), as_tensor(v)
    out, saved = attn.attention_fwd(q.data, k.data, v.data, impl=impl, block=block)

    def bwd(g):
        dq, dk, dv = attn.attention_bwd(g, q.data, k.data, v.data, out, saved, impl=impl, block=block)
        _acc(q, dq)
        _acc(k, dk)
        _acc(v, dv)

    return Tensor(out, (q, k, v), bwd)


def self_attention(qkv, cos, sin, batch: int, seq: int, n_heads: int, n_kv_heads: int,
                   impl: str = "flash", block: int = 64, keep_p: bool = True) -> Tensor:
    """Fused: split qkv (B*T, (H+2KV)*hd) into heads, RoPE on q and k, causal attention,
    merge heads -> (B*T, H*hd). Same math as reshape/transpose/rope/attention in sequence (the
    tests check that), with fewer temporaries.

    At short context (attention.stores_p) the probabilities are kept for the backward pass
    instead of recomputed: RoPE is one complex multiplication of the (even, odd) pairs, with the
    score scale folded into q's rotation; the g query heads of a kv head are stacked along the
    rows so one batched product serves them all; the output and the gradients are written
    straight into the merged-head layouts. Longer contexts (and keep_p=False) take the kernels
    of `impl`."""
    qkv = as_tensor(qkv)
    B, T, H, KV = batch, seq, n_heads, n_kv_heads
    width = qkv.shape[-1]
    hd = width // (H + 2 * KV)
    if hd * (H + 2 * KV) != width or qkv.shape[0] != B * T:
        raise ValueError(f"self_attention: qkv shape {qkv.shape} does not match B={B} T={T} "
                         f"heads={H} kv_heads={KV}")
    if H % KV:
        raise ValueError(f"attention: {H} query heads is not a multiple of {KV} kv heads")
    dt = qkv.data.dtype
    if dt not in _COMPLEX or hd % 2 or not keep_p or not attn.stores_p(impl, B, H, T, dt.itemsize):
        return _self_attention_tiled(qkv, cos, sin, B, T, H, KV, impl, block)
    g = H // KV
    cd = _COMPLEX[dt]
    scale = 1.0 / math.sqrt(hd)
    rot = (cos[:T] + 1j * sin[:T]).astype(cd)[:, None, :]          # (T, 1, hd/2)
    xc = np.ascontiguousarray(qkv.data).reshape(B, T, H + 2 * KV, hd).view(cd)
    # q and k rotated into head-major, contiguous arrays (q scaled): (B, heads, T, hd)
    q = np.empty((B, H, T, hd // 2), cd)
    np.multiply(xc[:, :, :H].transpose(0, 2, 1, 3), (rot * scale).transpose(1, 0, 2), out=q)
    k = np.empty((B, KV, T, hd // 2), cd)
    np.multiply(xc[:, :, H:H + KV].transpose(0, 2, 1, 3), rot.transpose(1, 0, 2), out=k)
    q = q.view(dt).reshape(B, KV, g * T, hd)
    k = k.view(dt)
    v = qkv.data.reshape(B, T, H + 2 * KV, hd)[:, :, H + KV:].transpose(0, 2, 1, 3)  # a view
    y = np.empty((B, T, H, hd), dtype=dt)
    y4 = y.transpose(0, 2, 1, 3)                                       # (B, H, T, hd) view
    if g == 1:
        p = attn.grouped_fwd(q, k, v, out=y4)
    else:
        o = np.empty((B, KV, g * T, hd), dtype=dt)
        p = attn.grouped_fwd(q, k, v, out=o)
        y4[...] = o.reshape(B, H, T, hd)

    def bwd(gr):
        go4 = gr.reshape(B, T, H, hd).transpose(0, 2, 1, 3)
        gx = np.empty((B, T, H + 2 * KV, hd), dtype=dt)
        dq4 = gx[:, :, :H].transpose(0, 2, 1, 3)
        dk = gx[:, :, H:H + KV].transpose(0, 2, 1, 3)
        dv = gx[:, :, H + KV:].transpose(0, 2, 1, 3)
        if g == 1:
            attn.grouped_bwd(go4, y4, q, k, v, p, dq4, dk, dv)
        else:
            dq = np.empty((B, KV, g * T, hd), dtype=dt)
            attn.grouped_bwd(np.ascontiguousarray(go4).reshape(B, KV, g * T, hd),
                             np.ascontiguousarray(y4).reshape(B, KV, g * T, hd), q, k, v, p, dq, dk, dv)
            dq4[...] = dq.reshape(B, H, T, hd)
        # the inverse rotations (q's with the score scale), in place
        gc = gx.view(cd)
        gc[:, :, :H] *= np.conj(rot) * scale
        gc[:, :, H:H + KV] *= np.conj(rot)
        _give(qkv, gx.reshape(B * T, width))

    return Tensor(y.reshape(B * T, H * hd), (qkv,), bwd)


_COMPLEX = {np.dtype(np.float32): np.complex64, np.dtype(np.float64): np.complex128}


def _self_attention_tiled(qkv, cos, sin, B, T, H, KV, impl, block) -> Tensor:
    """self_attention through attention_fwd / attention_bwd (flash: the tiles at long context)."""
    width = qkv.shape[-1]
    hd = width // (H + 2 * KV)
    c, s = cos[:T], sin[:T]
    x = qkv.data.reshape(B, T, H + 2 * KV, hd).transpose(0, 2, 1, 3)  # (B, H+2KV, T, hd)
    q = rope_fwd(x[:, :H], c, s)
    k = rope_fwd(x[:, H:H + KV], c, s)
    v = np.ascontiguousarray(x[:, H + KV:])
    o, saved = attn.attention_fwd(q, k, v, impl=impl, block=block)  # (B, H, T, hd)
    y = o.transpose(0, 2, 1, 3).reshape(B * T, H * hd)

    def bwd(g):
        go = np.ascontiguousarray(g.reshape(B, T, H, hd).transpose(0, 2, 1, 3))
        dq, dk, dv = attn.attention_bwd(go, q, k, v, o, saved, impl=impl, block=block)
        gx = np.empty((B, T, H + 2 * KV, hd), dtype=qkv.data.dtype)
        gx[:, :, :H] = rope_bwd(dq, c, s).transpose(0, 2, 1, 3)
        gx[:, :, H:H + KV] = rope_bwd(dk, c, s).transpose(0, 2, 1, 3)
        gx[:, :, H + KV:] = dv.transpose(0, 2, 1, 3)
        _acc(qkv, gx.reshape(B * T, width))

    return Tensor(y, (qkv,), bwd)


# ---------------------------------------------------------------------------------------------
# loss
# ---------------------------------------------------------------------------------------------

def cross_entropy_fwd(logits: np.ndarray, targets: np.ndarray):
    """Per-row negative log-likelihood (float64 accumulation of the mean is left to the caller)
    and the softmax probabilities. logits (N, V), targets (N,)."""
    m = logits.max(axis=-1, keepdims=True)
    e = np.exp(logits - m)
    ssum = e.sum(axis=-1, keepdims=True)
    lse = np.log(ssum) + m
    nll = lse[:, 0] - logits[np.arange(logits.shape[0]), targets]
    e /= ssum
    return nll, e


def _masked_cross_entropy(logits: Tensor, targets: np.ndarray, count=None) -> Tensor:
    """cross_entropy where rows with target -1 carry no loss: mean over the other rows."""
    keep = targets >= 0
    n = max(1, int(keep.sum())) if count is None else count
    safe = np.where(keep, targets, 0)
    nll, p = cross_entropy_fwd(logits.data, safe)
    loss = np.asarray(nll[keep].sum(dtype=np.float64) / n, dtype=logits.data.dtype)

    def bwd(g):
        rows = np.flatnonzero(keep)
        p[rows, safe[rows]] -= 1.0
        p[~keep] = 0.0
        np.multiply(p, g / n, out=p)
        _give(logits, p)

    return Tensor(loss, (logits,), bwd)


def cross_entropy(logits, targets: np.ndarray, count: int | None = None) -> Tensor:
    """Fused softmax + cross-entropy, mean over rows. logits (N, V), targets (N,) ints in [0, V);
    a target of -1 masks its row out (agent records: no loss on the prompt and the padding).
    `count` divides the sum instead of the number of rows with a loss: a batch cut into row
    groups gives each group the whole batch's count, and the groups' losses add up to its mean."""
    logits = as_tensor(logits)
    targets = np.asarray(targets).reshape(-1)
    N, V = logits.shape
    if targets.shape[0] != N:
        raise ValueError(f"cross_entropy: {N} rows of logits but {targets.shape[0]} targets")
    if N and (targets.min() < -1 or targets.max() >= V):
        raise ValueError(f"cross_entropy: targets must lie in [0, {V}) (or be -1: no loss on that row)")
    if count is not None and count < 1:
        raise ValueError(f"cross_entropy: count must be >= 1, got {count}")
    if N and targets.min() < 0:
        return _masked_cross_entropy(logits, targets, count)
    nll, p = cross_entropy_fwd(logits.data, targets)
    n = N if count is None else count
    loss = np.asarray(nll.mean(dtype=np.float64) if count is None else nll.sum(dtype=np.float64) / n,
                      dtype=logits.data.dtype)

    def bwd(g):
        # d mean(nll) / d logits = (softmax - onehot) / n; p is ours to overwrite
        p[np.arange(N), targets] -= 1.0
        np.multiply(p, g / n, out=p)
        _give(logits, p)

    return Tensor(loss, (logits,), bwd)
