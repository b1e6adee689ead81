"""The NumPy reference forward pass: the executable definition of the model family.

Owns the math every backend must reproduce (docs/ARCHITECTURE.md, "Tensor names"):

    x = tok_embd[token]
    for each block i:
        xb = rmsnorm(x) * attn_norm                     # eps = arch.norm_eps
        q, k, v = wq @ xb, wk @ xb, wv @ xb             # (n_heads*hd,), (n_kv*hd,), (n_kv*hd,)
        rotate pairs (2j, 2j+1) of every head of q and k by pos * theta^(-2j/hd)   # RoPE, llama2.c
        cache k, v at pos; each query head h attends to kv head h // (n_heads / n_kv_heads)
        x += wo @ concat_h(softmax(q_h . K_g / sqrt(hd)) @ V_g)
        xb = rmsnorm(x) * ffn_norm
        x += w2 @ (silu(w1 @ xb) * (w3 @ xb))           # SwiGLU
    logits = (output or tok_embd) @ (rmsnorm(x) * out_norm)

Everything is float32, as in llama2.c's run.c, including the RoPE angle (pos * freq rounded to
f32 before cos/sin). It is the oracle of the parity tests and the fallback backend
(BULLET_BACKEND=numpy).

Weights (`ReferenceModel.from_bullet(bf, weights=...)`, BULLET_NUMPY_WEIGHTS for the backend):
    "mapped" (default)  bq4 matrices stay the uint8 block arrays of the mapped .bullet file (no
                        copy); each product dequantises its matrix (dequantize_bq4) into a
                        temporary and multiplies, the embedding lookup dequantises only the rows
                        it reads. Private memory: the KV caches and temporaries.
    "f32"               bq4 matrices are dequantised once at load and kept (4 bytes per weight,
                        6.4x the bq4 bytes): faster per token; the same products on the same
                        values, so the logits are bit-identical to "mapped".
f32 tensors are views of the mapping in both modes; f16 tensors are widened to f32 copies.
"""
from __future__ import annotations

import numpy as np

from ..errors import ContextOverflow, FormatError, ModelError
from ..format import arch as _arch
from ..format import QK, dequantize_bq4

WEIGHT_MODES = ("mapped", "f32")

def check_arch(arch: dict) -> dict:
    """Validate an arch dict and return a normalised copy (ints, floats, head_dim filled in), by
    the rule of bulletd.format.arch. Raises ModelError naming the key, what was expected and what
    was found."""
    try:
        return _arch.check_arch(arch)
    except FormatError as exc:
        raise ModelError(str(exc)) from None


def expected_shapes(arch: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor an lm file must hold, with its logical shape (out_features, in_features)."""
    return _arch.tensor_shapes(check_arch(arch))


def rope_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin, each (max_seq_len, head_dim/2) float32, computed as llama2.c does in float:
    freq_j = 1 / theta^(2j/hd), angle = f32(pos * freq_j)."""
    j2 = np.arange(0, head_dim, 2, dtype=np.float32)                       # 2j
    freq = np.float32(1.0) / np.power(np.float32(theta), j2 / np.float32(head_dim))
    pos = np.arange(max_seq_len, dtype=np.float32)[:, None]
    ang = (pos * freq[None, :]).astype(np.float32)                         # (T, hd/2)
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """w * x / sqrt(mean(x^2) + eps) over the last axis, float32."""
    ss = np.mean(x * x, axis=-1, keepdims=True, dtype=np.float32) + np.float32(eps)
    return (w * (x * (np.float32(1.0) / np.sqrt(ss)))).astype(np.float32)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate pairs (2j, 2j+1). x (..., T, n, hd); cos/sin (T, hd/2)."""
    x0 = x[..., 0::2]
    x1 = x[..., 1::2]
    c = cos[:, None, :]
    s = sin[:, None, :]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


def silu(x: np.ndarray) -> np.ndarray:
    return x * (np.float32(1.0) / (np.float32(1.0) + np.exp(-x)))


def _check_bq4(name: str, shape: tuple[int, ...], entry) -> np.ndarray:
    """A mapped bq4 tensor `(blocks, (rows, cols))`, checked against the arch's shape; the blocks."""
    try:
        blocks, logical = entry
        logical = tuple(int(v) for v in logical)
    except (TypeError, ValueError):
        raise ModelError(f"bq4 tensor {name} must be given as (blocks, (rows, cols))") from None
    if len(shape) != 2:
        raise ModelError(f"tensor {name} is a vector of shape {shape} and cannot be bq4")
    if logical != shape:
        raise ModelError(f"tensor {name}: expected shape {shape}, found {logical}")
    want = _arch.bq4_matrix_shape(*shape)
    b = np.asarray(blocks)
    if b.dtype != np.uint8 or tuple(b.shape) != want:
        raise ModelError(f"bq4 tensor {name} of shape {shape} needs uint8 blocks {want}, "
                         f"found {b.dtype} {tuple(b.shape)}")
    return b


def _dequantized(blocks: np.ndarray, cols: int) -> np.ndarray:
    """BQ4 blocks -> C-contiguous float32 (rows, cols): the one way both weight modes build a
    float matrix, so that "mapped" multiplies exactly the array "f32" keeps."""
    return np.ascontiguousarray(dequantize_bq4(blocks, cols), dtype=np.float32)


class ReferenceModel:
    """Weights plus the arch. Sessions hold the KV caches.

    tensors: name -> float array (kept as float32; an f32 array is not copied).
    bq4: name -> (blocks, (rows, cols)): BQ4 block arrays kept as given (views of the mapped file:
        no copy) and dequantised for every product; see the module docstring ("mapped").
    q8_weights: name -> (d, q, cols), bq4 matrices unpacked once; products with them quantise the
        activations to q8 (see matmul()).
    activations "q8": products with the matrices of `bq4` do too, unpacking them per product."""

    def __init__(self, arch: dict, tensors: dict[str, np.ndarray], q8_weights: dict | None = None,
                 bq4: dict | None = None, activations: str = "f32"):
        if activations not in ("f32", "q8"):
            raise ModelError(f"activations must be 'f32' or 'q8', got {activations!r}")
        self.arch = check_arch(arch)
        self.activations = activations
        # name -> (d_w (rows, nb) f32, q_w (rows, nb, 32) i32, cols): matrices multiplied the
        # way the native kernels do (activations quantised to q8), see matmul()
        self.q8w = dict(q8_weights or {})
        bq4 = dict(bq4 or {})
        self.shapes = expected_shapes(self.arch)
        self.w: dict[str, np.ndarray] = {}      # float32 tensors
        self.bq4: dict[str, np.ndarray] = {}    # uint8 (rows, nb*20) BQ4 blocks, dequantised per use
        for name, shape in self.shapes.items():
            if name in bq4:
                self.bq4[name] = _check_bq4(name, shape, bq4[name])
                continue
            if name not in tensors:
                raise ModelError(f"tensor {name} is missing (arch needs shape {shape})")
            t = np.asarray(tensors[name])
            if tuple(t.shape) != shape:
                raise ModelError(f"tensor {name}: expected shape {shape}, found {tuple(t.shape)}")
            self.w[name] = np.ascontiguousarray(t, dtype=np.float32)
        # "mapped" when some matrix is read from its blocks at every use
        self.weights = "mapped" if self.bq4 else "f32"
        a = self.arch
        self.cos, self.sin = rope_tables(a["head_dim"], a["max_seq_len"], a["rope_theta"])
        self.out_name = "tok_embd" if a["tied_embeddings"] else "output"

    @classmethod
    def from_bullet(cls, bf, activations: str = "f32", weights: str = "mapped") -> "ReferenceModel":
        """Build from an open BulletFile; f16/f32 tensors are widened (f32: a view of the mapping).

        weights "mapped": bq4 tensors stay the block arrays of the mapping and are dequantised at
        every use; "f32": they are dequantised once, here. Both give bit-identical logits.
        activations "f32": every product is float32 (the model's math, the parity oracle).
        activations "q8": products with bq4 matrices quantise the activation row to int8 per
        32-block and sum exact integer block products, as the native kernels do
        (bulletd.kernels.matmul_bq4_q8_ref), so native bq4 logits can be held to a tight bound."""
        if activations not in ("f32", "q8"):
            raise ModelError(f"activations must be 'f32' or 'q8', got {activations!r}")
        if weights not in WEIGHT_MODES:
            raise ModelError(f"weights must be 'mapped' or 'f32', got {weights!r}")
        tensors, bq4, q8w = {}, {}, {}
        for name, info in bf.tensors.items():
            raw = bf.tensor(name)
            if info.dtype == "bq4":
                if weights == "mapped":
                    bq4[name] = (raw, tuple(info.shape))
                    continue
                tensors[name] = _dequantized(raw, info.shape[1])
                if activations == "q8":
                    from ..kernels import bq4_unpack_ref
                    d, q = bq4_unpack_ref(raw, info.shape[1])
                    q8w[name] = (d, q.astype(np.int32), info.shape[1])
            else:
                tensors[name] = np.asarray(raw, dtype=np.float32)
        m = cls(bf.arch, tensors, q8w, bq4=bq4, activations=activations)
        m.weights = weights
        return m

    def weight(self, name: str) -> np.ndarray:
        """The named tensor as float32: the kept array, or a bq4 matrix dequantised now."""
        b = self.bq4.get(name)
        if b is None:
            return self.w[name]
        return _dequantized(b, self.shapes[name][1])

    def embed(self, ids: np.ndarray) -> np.ndarray:
        """Rows `ids` of tok_embd, float32 (T, dim); from BQ4 blocks only those rows are decoded
        (a row's blocks hold its weights alone)."""
        b = self.bq4.get("tok_embd")
        if b is None:
            return self.w["tok_embd"][ids].astype(np.float32)
        return _dequantized(b[ids], self.shapes["tok_embd"][1])

    def _q8_weight(self, name: str):
        q = self.q8w.get(name)
        if q is None and self.activations == "q8" and name in self.bq4:
            from ..kernels import bq4_unpack_ref
            cols = self.shapes[name][1]
            d, qi = bq4_unpack_ref(self.bq4[name], cols)
            q = (d, qi.astype(np.int32), cols)
        return q

    def matmul(self, x: np.ndarray, name: str) -> np.ndarray:
        """x (T, in) -> (T, out) = x @ W.T for the named matrix."""
        q = self._q8_weight(name)
        if q is None:
            return (x @ self.weight(name).T).astype(np.float32)
        dw, qw, cols = q
        T = x.shape[0]
        nb = dw.shape[1]
        xp = np.zeros((T, nb * QK), dtype=np.float32)
        xp[:, :cols] = x
        xb = xp.reshape(T, nb, QK)
        dx = (np.max(np.abs(xb), axis=2) / np.float32(127.0)).astype(np.float32)      # (T, nb)
        with np.errstate(divide="ignore"):
            inv = np.where(dx != 0, np.float32(1.0) / dx, np.float32(0.0)).astype(np.float32)
        qx = np.rint(xb * inv[:, :, None]).astype(np.int32)                          # (T, nb, 32)
        isum = np.einsum("rbj,tbj->trb", qw, qx)                                      # exact ints
        return np.sum((dw[None] * dx[:, None, :]) * isum.astype(np.float32), axis=2, dtype=np.float32)

    def new_session(self) -> "ReferenceSession":
        return ReferenceSession(self)


class ReferenceSession:
    """One KV cache. forward/prefill append at `pos`; positions before `pos` must be filled."""

    def __init__(self, model: ReferenceModel):
        self.model = model
        a = model.arch
        # (n_layers, max_seq_len, n_kv_heads, head_dim) float32 each
        shape = (a["n_layers"], a["max_seq_len"], a["n_kv_heads"], a["head_dim"])
        self.k_cache = np.zeros(shape, dtype=np.float32)
        self.v_cache = np.zeros(shape, dtype=np.float32)
        self.kv_bytes = 2 * self.k_cache.nbytes
        self.filled = 0   # positions 0..filled-1 hold valid keys/values

    def _check(self, tokens, pos: int) -> np.ndarray:
        a = self.model.arch
        if isinstance(pos, bool) or not isinstance(pos, (int, np.integer)):
            raise ModelError(f"position must be an integer, got {pos!r}")
        ids = np.asarray(tokens)
        if ids.ndim != 1 or ids.shape[0] == 0:
            raise ModelError("no tokens to process: an empty prompt cannot be run")
        if ids.dtype.kind not in "iu":
            raise ModelError(f"token ids must be integers, got {ids.dtype}")
        bad = np.nonzero((ids < 0) | (ids >= a["vocab_size"]))[0]
        if bad.size:
            i = int(bad[0])
            raise ModelError(f"token id {int(ids[i])} at index {i} is outside 0..{a['vocab_size'] - 1}")
        if pos < 0 or pos > self.filled:
            raise ModelError(f"position {pos} is invalid: the cache holds positions 0..{self.filled - 1}, "
                             f"the next one is {self.filled}")
        if pos + ids.shape[0] > a["max_seq_len"]:
            raise ContextOverflow(f"positions {pos}..{pos + ids.shape[0] - 1} run past the context of "
                             f"{a['max_seq_len']} tokens")
        return ids.astype(np.int64)

    def forward(self, token: int, pos: int) -> np.ndarray:
        """Logits (vocab,) float32 for `token` at position `pos`."""
        return self.prefill([token], pos)

    def prefill(self, tokens, pos: int = 0) -> np.ndarray:
        """Run tokens at positions pos..pos+T-1 as one batch; logits of the last one."""
        return self.prefill_all(tokens, pos)[-1]

    def prefill_all(self, tokens, pos: int = 0) -> np.ndarray:
        """Logits (T, vocab) of every token; the KV cache takes positions pos..pos+T-1."""
        ids = self._check(tokens, pos)
        m, a, w = self.model, self.model.arch, self.model.w
        T = ids.shape[0]
        nh, nkv, hd = a["n_heads"], a["n_kv_heads"], a["head_dim"]
        group = nh // nkv
        eps = a["norm_eps"]
        end = pos + T
        cos, sin = m.cos[pos:end], m.sin[pos:end]
        scale = np.float32(1.0 / np.sqrt(np.float32(hd)))
        # causal mask: query t (absolute pos + t) sees keys 0..pos+t
        allowed = np.arange(end)[None, :] <= (pos + np.arange(T))[:, None]      # (T, end)

        x = m.embed(ids)                                                         # (T, dim)
        for i in range(a["n_layers"]):
            xb = rmsnorm(x, w[f"blk.{i}.attn_norm"], eps)
            q = m.matmul(xb, f"blk.{i}.wq").reshape(T, nh, hd)
            k = m.matmul(xb, f"blk.{i}.wk").reshape(T, nkv, hd)
            v = m.matmul(xb, f"blk.{i}.wv").reshape(T, nkv, hd)
            q = apply_rope(q, cos, sin)
            k = apply_rope(k, cos, sin)
            self.k_cache[i, pos:end] = k
            self.v_cache[i, pos:end] = v
            K = self.k_cache[i, :end]                                            # (end, nkv, hd)
            V = self.v_cache[i, :end]
            # group the query heads by the kv head they share: (nkv, group*T, hd)
            qg = q.reshape(T, nkv, group, hd).transpose(1, 2, 0, 3).reshape(nkv, group * T, hd)
            scores = (qg @ K.transpose(1, 2, 0)) * scale                         # (nkv, group*T, end)
            scores = scores.reshape(nkv, group, T, end)
            scores = np.where(allowed[None, None], scores, np.float32(-np.inf))
            scores -= scores.max(axis=-1, keepdims=True)
            p = np.exp(scores)
            p /= p.sum(axis=-1, keepdims=True)
            att = p.reshape(nkv, group * T, end) @ V.transpose(1, 0, 2)          # (nkv, group*T, hd)
            att = att.reshape(nkv, group, T, hd).transpose(2, 0, 1, 3).reshape(T, nh * hd)
            x = x + m.matmul(att.astype(np.float32), f"blk.{i}.wo")
            xb = rmsnorm(x, w[f"blk.{i}.ffn_norm"], eps)
            hb = silu(m.matmul(xb, f"blk.{i}.w1")) * m.matmul(xb, f"blk.{i}.w3")
            x = x + m.matmul(hb, f"blk.{i}.w2")
        self.filled = end
        x = rmsnorm(x, w["out_norm"], eps)
        return m.matmul(x, m.out_name)
