"""The Llama-style decoder of the `.bullet` lm kind (docs/BULLET_SPEC.md), built on trainer.autograd.

token embedding -> N x [RMSNorm -> causal self-attention (RoPE, grouped-query heads) -> residual,
RMSNorm -> SwiGLU MLP -> residual] -> RMSNorm -> output projection (tied or untied).

Training-side layout: q, k and v are one fused matrix `blk.i.wqkv` ((H + 2 KV) * hd, dim) and the
gate and up projections one matrix `blk.i.w13` (2 * hidden, dim), so each block does three big
GEMMs instead of six small ones. `bullet_tensors()` splits them back into the `.bullet` names of
docs/ARCHITECTURE.md (wq, wk, wv, w1, w3). All parameters are views into one flat float32 buffer
(and their gradients into one flat gradient buffer), so the optimiser and the gradient clipping
work on a single vector. `loss_and_grad`, the training step's forward and backward, runs the batch
as two row groups side by side on two threads, each with its own gradient buffer, added at the end.
"""
from __future__ import annotations

import math
import time
from concurrent.futures import wait
from dataclasses import asdict, dataclass

import numpy as np

from bulletd.errors import FormatError
from bulletd.format import arch as arch_rules
from trainer import autograd as ag
from trainer import cpu


@dataclass(frozen=True)
class ModelArch:
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    hidden_dim: int          # SwiGLU inner width
    vocab_size: int
    max_seq_len: int         # the context the model is trained for (RoPE tables, export)
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tied_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return arch_rules.head_dim(self.to_dict())

    def check(self) -> None:
        """Raise ValueError naming the first inconsistent hyper-parameter (the rule of
        bulletd.format.arch, which every reader of the exported file applies)."""
        try:
            arch_rules.check_arch(self.to_dict())
        except FormatError as exc:
            raise ValueError(str(exc)) from None

    def to_dict(self) -> dict:
        return asdict(self)

    def param_shapes(self) -> dict:
        """Training-side parameter names -> shapes, in file order: the `.bullet` shapes
        (bulletd.format.arch) with wq, wk, wv fused into wqkv and w1, w3 into w13."""
        t = arch_rules.tensor_shapes(self.to_dict())
        shapes = {"tok_embd": t["tok_embd"]}
        for i in range(self.n_layers):
            p = f"blk.{i}."
            shapes[p + "attn_norm"] = t[p + "attn_norm"]
            shapes[p + "wqkv"] = (t[p + "wq"][0] + t[p + "wk"][0] + t[p + "wv"][0], self.dim)
            shapes[p + "wo"] = t[p + "wo"]
            shapes[p + "ffn_norm"] = t[p + "ffn_norm"]
            shapes[p + "w13"] = (t[p + "w1"][0] + t[p + "w3"][0], self.dim)
            shapes[p + "w2"] = t[p + "w2"]
        shapes["out_norm"] = t["out_norm"]
        if "output" in t:
            shapes["output"] = t["output"]
        return shapes

    def n_params(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.param_shapes().values()))


class Model:
    """Parameters + forward pass. `loss(inputs, targets)` builds the autograd graph."""

    def __init__(self, arch: ModelArch, seed: int = 0, dtype=np.float32, attn_impl="flash", attn_block=64,
                 dropout: float = 0.0):
        arch.check()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.arch = arch
        self.dropout = float(dropout)  # training steps only (loss_and_grad with a drop_key)
        self.dtype = np.dtype(dtype)
        self.attn_impl = attn_impl
        self.attn_block = attn_block
        self.attn_keep_p = True  # keep P at short context (attention.stores_p); False: always the tiles
        shapes = arch.param_shapes()
        total = sum(int(np.prod(s)) for s in shapes.values())
        self.flat = np.zeros(total, dtype=self.dtype)       # all parameters, one vector
        self.flat_grad = np.zeros(total, dtype=self.dtype)  # their gradients
        self.decay_mask = np.zeros(total, dtype=bool)       # weight decay on matrices only
        # matrices first, vectors last: weight decay then covers one prefix of the flat vector
        order = [n for n, s in shapes.items() if len(s) == 2] + [n for n, s in shapes.items() if len(s) != 2]
        self._layout = {}  # name -> (offset, shape) in the flat vectors, file order
        off = 0
        for name in order:
            self._layout[name] = (off, shapes[name])
            if len(shapes[name]) == 2:
                self.decay_mask[off:off + int(np.prod(shapes[name]))] = True
            off += int(np.prod(shapes[name]))
        self._layout = {name: self._layout[name] for name in shapes}
        self.params: dict[str, ag.Tensor] = self._param_tensors(self.flat_grad)
        self._groups = [self.params]       # parameter Tensors per row group of loss_and_grad
        self._group_grads = [self.flat_grad]  # and their gradient buffers
        self.group_times = []  # (forward, backward) seconds of each group in the last loss_and_grad
        self.cos, self.sin = ag.rope_tables(arch.max_seq_len, arch.head_dim, arch.rope_theta, self.dtype)
        self.init_weights(seed)

    def _param_tensors(self, grad: np.ndarray) -> dict:
        """Parameter Tensors over the flat weights, their gradients preset to views into `grad`."""
        out = {}
        for name, (off, shape) in self._layout.items():
            n = int(np.prod(shape))
            t = ag.Tensor(self.flat[off:off + n].reshape(shape), requires_grad=True, name=name)
            t.grad = grad[off:off + n].reshape(shape)
            out[name] = t
        return out

    def init_weights(self, seed: int) -> None:
        """GPT-2 style: N(0, 0.02) for matrices, residual output projections scaled by
        1/sqrt(2 * n_layers) so the residual stream's variance does not grow with depth; norms at 1."""
        rng = np.random.default_rng(seed)
        resid_std = 0.02 / math.sqrt(2 * self.arch.n_layers)
        for name, t in self.params.items():
            if t.data.ndim == 1:
                t.data[...] = 1.0
            else:
                std = resid_std if name.endswith((".wo", ".w2")) else 0.02
                t.data[...] = rng.standard_normal(t.shape, dtype=np.float64) * std

    # -- forward ---------------------------------------------------------------------------------

    def logits(self, inputs: np.ndarray, params: dict | None = None, drop_key=None) -> ag.Tensor:
        """inputs (B, T) int token ids -> logits Tensor (B*T, vocab). `params`: the parameter
        Tensors to use (default `self.params`; a row group of loss_and_grad has its own).
        `drop_key`: a tuple of non-negative ints; with it and `dropout` > 0 the embeddings and
        each block's attention and MLP outputs are dropped by the masks of `dropout_mask`
        (without it, nothing is: evaluation and generation)."""
        a, P = self.arch, self.params if params is None else params
        B, T = inputs.shape
        if T > a.max_seq_len:
            raise ValueError(f"sequence of {T} tokens exceeds max_seq_len {a.max_seq_len}")
        drop = drop_key is not None and self.dropout > 0

        def dropped(t, layer, site):
            return ag.dropout(t, self.dropout_mask(drop_key, layer, site, t.shape)) if drop else t

        x = ag.reshape(ag.embedding(P["tok_embd"], inputs), (B * T, a.dim))  # (B*T, dim)
        x = dropped(x, 0, self.DROP_EMBD)
        for i in range(a.n_layers):
            h = ag.rmsnorm(x, P[f"blk.{i}.attn_norm"], a.norm_eps)
            qkv = ag.linear(h, P[f"blk.{i}.wqkv"])                         # (B*T, (H+2KV)*hd)
            att = ag.self_attention(qkv, self.cos, self.sin, B, T, a.n_heads, a.n_kv_heads,
                                    impl=self.attn_impl, block=self.attn_block,
                                    keep_p=self.attn_keep_p)                  # (B*T, H*hd)
            x = ag.add(x, dropped(ag.linear(att, P[f"blk.{i}.wo"]), i, self.DROP_ATTN))
            h = ag.rmsnorm(x, P[f"blk.{i}.ffn_norm"], a.norm_eps)
            m = ag.swiglu(ag.linear(h, P[f"blk.{i}.w13"]))                  # (B*T, hidden)
            x = ag.add(x, dropped(ag.linear(m, P[f"blk.{i}.w2"]), i, self.DROP_MLP))
        x = ag.rmsnorm(x, P["out_norm"], a.norm_eps)
        out_w = P["tok_embd"] if a.tied_embeddings else P["output"]
        return ag.linear(x, out_w)                                          # (B*T, vocab)

    DROP_EMBD, DROP_ATTN, DROP_MLP = 0, 1, 2  # the dropout sites (part of a mask's seed)

    def dropout_mask(self, key, layer: int, site: int, shape) -> np.ndarray:
        """The dropout mask of one site: 0 where dropped, 1 / (1 - dropout) where kept, a pure
        function of (key..., layer, site) and the shape. The uniforms are float32 draws of a
        PCG64 generator seeded with that tuple whatever the model's dtype, so a float64 model
        sees the masks of a float32 one. loss_and_grad's key is (run seed, step, attempt, row
        group): a step is the same bits on one core or two, and a resumed run draws the masks
        of the run it continues."""
        rng = np.random.default_rng([int(k) & 0xFFFFFFFFFFFFFFFF for k in key] + [layer, site])
        keep = rng.random(shape, dtype=np.float32) >= np.float32(self.dropout)
        mask = keep.astype(self.dtype)
        mask *= self.dtype.type(1.0 / (1.0 - self.dropout))
        return mask

    def loss(self, inputs: np.ndarray, targets: np.ndarray, drop_key=None) -> ag.Tensor:
        return ag.cross_entropy(self.logits(inputs, drop_key=drop_key), targets.reshape(-1))

    def nll(self, inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Per-token negative log-likelihood in nats (B*T,), no gradient bookkeeping kept; the
        row groups of loss_and_grad side by side."""
        targets = targets.reshape(inputs.shape[0], -1)

        def group(i, lo, hi):
            return ag.cross_entropy_fwd(self.logits(inputs[lo:hi]).data, targets[lo:hi].reshape(-1))[0]

        return np.concatenate(self._in_groups(inputs.shape[0], group))

    def zero_grad(self) -> None:
        self.flat_grad[...] = 0.0

    GROUPS = 2  # row groups of a training step (fixed: the numerics do not depend on the machine)

    def loss_and_grad(self, inputs: np.ndarray, targets: np.ndarray, drop_key=None) -> float:
        """One training step's forward and backward: returns the mean loss and leaves its
        gradient in `flat_grad` (no zero_grad needed). With `drop_key` (a tuple of ints, the
        trainer's (seed, step, attempt)) and `dropout` > 0, row group i drops with the masks of
        drop_key + (i,).

        The batch is cut into GROUPS row groups; each runs forward and backward on its own worker
        thread with one BLAS thread, into its own gradient buffer, and the buffers are added in
        group order. The result is the same bits run to run and on any number of cores; it
        differs from one pass over the whole batch (loss.backward()) only in the rounding of the
        sums over rows."""
        B = inputs.shape[0]
        k = max(1, min(self.GROUPS, B))
        targets = targets.reshape(B, -1)
        count = max(1, int((targets >= 0).sum()))
        while len(self._groups) < k:
            self._group_grads.append(np.empty_like(self.flat_grad))
            self._groups.append(self._param_tensors(self._group_grads[-1]))

        times = self.group_times = [(0.0, 0.0)] * k

        def group(i, lo, hi):
            P = self._groups[i]
            for t in P.values():
                t.fresh = True  # the first contribution overwrites the buffer: no zeroing pass
            t0 = time.perf_counter()
            key = None if drop_key is None else (*drop_key, i)
            loss = ag.cross_entropy(self.logits(inputs[lo:hi], P, key), targets[lo:hi].reshape(-1), count=count)
            t1 = time.perf_counter()
            loss.backward()
            for t in P.values():
                if t.fresh:  # not reached by the graph: no gradient
                    t.grad[...] = 0
                    t.fresh = False
            times[i] = (t1 - t0, time.perf_counter() - t1)
            return float(loss.data)

        losses = self._in_groups(B, group)
        if k > 1:
            self._sum_group_grads(k)
        return float(np.float64(sum(losses)).astype(self.dtype))

    def _workers(self, k: int) -> int:
        """Threads for k row groups: one each up to the cores, one in all when BLAS's thread count
        cannot be set (its own threads would fight the workers)."""
        return min(k, cpu.workers()) if cpu.blas_control() else 1

    def _in_groups(self, B: int, fn) -> list:
        """[fn(i, lo, hi) for each row group i of a batch of B rows], on the worker threads with
        one BLAS thread each (one group: the caller's thread, BLAS as it is)."""
        k = max(1, min(self.GROUPS, B))
        bounds = [B * i // k for i in range(k + 1)]
        if k == 1:
            return [fn(0, 0, B)]
        with cpu.blas_threads(1):
            if self._workers(k) == 1:
                return [fn(i, bounds[i], bounds[i + 1]) for i in range(k)]
            futs = [cpu.pool().submit(fn, i, bounds[i], bounds[i + 1]) for i in range(1, k)]
            try:
                first = fn(0, bounds[0], bounds[1])
            finally:
                wait(futs)  # never leave a group running behind an error
            return [first] + [f.result() for f in futs]

    def _sum_group_grads(self, k: int) -> None:
        """flat_grad += the other groups' buffers, in group order, over slices on the workers."""
        n_workers = self._workers(k)
        n = self.flat_grad.size
        cuts = [n * i // n_workers for i in range(n_workers + 1)]

        def add(lo, hi):
            for g in self._group_grads[1:k]:
                self.flat_grad[lo:hi] += g[lo:hi]

        if n_workers == 1:
            add(0, n)
            return
        futs = [cpu.pool().submit(add, cuts[i], cuts[i + 1]) for i in range(1, n_workers)]
        add(cuts[0], cuts[1])
        for f in futs:
            f.result()

    # -- state -----------------------------------------------------------------------------------

    def state_arrays(self) -> dict:
        """Training-side name -> array (views)."""
        return {name: t.data for name, t in self.params.items()}

    def load_arrays(self, arrays: dict) -> None:
        for name, t in self.params.items():
            if name not in arrays:
                raise ValueError(f"missing parameter {name}")
            src = arrays[name]
            if tuple(src.shape) != tuple(t.shape):
                raise ValueError(f"parameter {name}: expected shape {t.shape}, found {tuple(src.shape)}")
            t.data[...] = src

    def bullet_tensors(self) -> dict:
        """The `.bullet` tensor names of docs/ARCHITECTURE.md -> float32 arrays (copies)."""
        a, P = self.arch, self.params
        hd = a.head_dim
        out = {"tok_embd": P["tok_embd"].data.astype(np.float32)}
        for i in range(a.n_layers):
            wqkv = P[f"blk.{i}.wqkv"].data
            nq, nkv = a.n_heads * hd, a.n_kv_heads * hd
            out[f"blk.{i}.attn_norm"] = P[f"blk.{i}.attn_norm"].data.astype(np.float32)
            out[f"blk.{i}.wq"] = wqkv[:nq].astype(np.float32)
            out[f"blk.{i}.wk"] = wqkv[nq:nq + nkv].astype(np.float32)
            out[f"blk.{i}.wv"] = wqkv[nq + nkv:].astype(np.float32)
            out[f"blk.{i}.wo"] = P[f"blk.{i}.wo"].data.astype(np.float32)
            out[f"blk.{i}.ffn_norm"] = P[f"blk.{i}.ffn_norm"].data.astype(np.float32)
            w13 = P[f"blk.{i}.w13"].data
            out[f"blk.{i}.w1"] = w13[:a.hidden_dim].astype(np.float32)
            out[f"blk.{i}.w3"] = w13[a.hidden_dim:].astype(np.float32)
            out[f"blk.{i}.w2"] = P[f"blk.{i}.w2"].data.astype(np.float32)
        out["out_norm"] = P["out_norm"].data.astype(np.float32)
        if not a.tied_embeddings:
            out["output"] = P["output"].data.astype(np.float32)
        return out

    def load_bullet_tensors(self, tensors: dict) -> None:
        """Inverse of bullet_tensors (used to evaluate a dequantised export with this code)."""
        a = self.arch
        arrays = {"tok_embd": tensors["tok_embd"], "out_norm": tensors["out_norm"]}
        for i in range(a.n_layers):
            arrays[f"blk.{i}.attn_norm"] = tensors[f"blk.{i}.attn_norm"]
            arrays[f"blk.{i}.wqkv"] = np.concatenate([tensors[f"blk.{i}.{n}"] for n in ("wq", "wk", "wv")])
            arrays[f"blk.{i}.wo"] = tensors[f"blk.{i}.wo"]
            arrays[f"blk.{i}.ffn_norm"] = tensors[f"blk.{i}.ffn_norm"]
            arrays[f"blk.{i}.w13"] = np.concatenate([tensors[f"blk.{i}.w1"], tensors[f"blk.{i}.w3"]])
            arrays[f"blk.{i}.w2"] = tensors[f"blk.{i}.w2"]
        if not a.tied_embeddings:
            arrays["output"] = tensors["output"]
        self.load_arrays(arrays)
