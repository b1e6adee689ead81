"""Test helpers of the runtime part.

1. `RunC`: a straightforward NumPy transcription of llama2.c's run.c (`memory_map_weights`,
   `rmsnorm`, `softmax`, `matmul`, `forward`), reading the version-0 .bin itself with `struct` and
   `np.frombuffer`. It shares no code with bulletd, so parity against it means something.
2. `random_lm_file`: write a small random lm .bullet with the lead's writer (fixed seed).
"""
from __future__ import annotations

import struct

import numpy as np


class RunC:
    """llama2.c run.c, line for line where it matters (float32 throughout)."""

    def __init__(self, path):
        data = open(path, "rb").read()
        (self.dim, self.hidden_dim, self.n_layers, self.n_heads, self.n_kv_heads, vocab,
         self.seq_len) = struct.unpack("<7i", data[:28])
        shared_weights = vocab > 0            # run.c: negative vocab_size = unshared classifier
        self.vocab_size = abs(vocab)
        ptr = np.frombuffer(data, dtype="<f4", offset=28)
        p = self
        head_size = p.dim // p.n_heads
        kv_dim = (p.dim * p.n_kv_heads) // p.n_heads
        L = p.n_layers
        off = 0

        def nxt(n, shape):
            nonlocal off
            a = ptr[off:off + n].reshape(shape)
            off += n
            return a

        # memory_map_weights
        self.token_embedding_table = nxt(p.vocab_size * p.dim, (p.vocab_size, p.dim))
        self.rms_att_weight = nxt(L * p.dim, (L, p.dim))
        self.wq = nxt(L * p.dim * (p.n_heads * head_size), (L, p.dim, p.dim))
        self.wk = nxt(L * p.dim * (p.n_kv_heads * head_size), (L, kv_dim, p.dim))
        self.wv = nxt(L * p.dim * (p.n_kv_heads * head_size), (L, kv_dim, p.dim))
        self.wo = nxt(L * (p.n_heads * head_size) * p.dim, (L, p.dim, p.dim))
        self.rms_ffn_weight = nxt(L * p.dim, (L, p.dim))
        self.w1 = nxt(L * p.dim * p.hidden_dim, (L, p.hidden_dim, p.dim))
        self.w2 = nxt(L * p.hidden_dim * p.dim, (L, p.dim, p.hidden_dim))
        self.w3 = nxt(L * p.dim * p.hidden_dim, (L, p.hidden_dim, p.dim))
        self.rms_final_weight = nxt(p.dim, (p.dim,))
        off += p.seq_len * head_size // 2    # skip what used to be freq_cis_real
        off += p.seq_len * head_size // 2    # skip what used to be freq_cis_imag
        self.wcls = self.token_embedding_table if shared_weights else nxt(
            p.vocab_size * p.dim, (p.vocab_size, p.dim))
        self.key_cache = np.zeros((L, p.seq_len, kv_dim), np.float32)
        self.value_cache = np.zeros((L, p.seq_len, kv_dim), np.float32)

    @staticmethod
    def rmsnorm(x, weight):
        ss = np.float32(0.0)
        ss = np.sum(x * x, dtype=np.float32)
        ss /= np.float32(x.shape[0])
        ss += np.float32(1e-5)
        ss = np.float32(1.0) / np.sqrt(ss)
        return (weight * (ss * x)).astype(np.float32)

    @staticmethod
    def softmax(x):
        max_val = x.max()
        e = np.exp(x - max_val)
        return (e / e.sum(dtype=np.float32)).astype(np.float32)

    @staticmethod
    def matmul(x, w):
        # W (d,n) @ x (n,) -> xout (d,)
        return (w @ x).astype(np.float32)

    def forward(self, token: int, pos: int) -> np.ndarray:
        p = self
        dim, hidden_dim = p.dim, p.hidden_dim
        kv_dim = (p.dim * p.n_kv_heads) // p.n_heads
        kv_mul = p.n_heads // p.n_kv_heads
        head_size = dim // p.n_heads
        x = self.token_embedding_table[token].copy()
        for l in range(p.n_layers):
            xb = self.rmsnorm(x, self.rms_att_weight[l])
            q = self.matmul(xb, self.wq[l])
            k = self.matmul(xb, self.wk[l])
            v = self.matmul(xb, self.wv[l])
            # RoPE: complex-valued rotate q and k in each head
            for i in range(0, dim, 2):
                head_dim = i % head_size
                freq = np.float32(1.0) / np.power(np.float32(10000.0),
                                                  np.float32(head_dim) / np.float32(head_size))
                val = np.float32(pos) * freq
                fcr = np.cos(val)
                fci = np.sin(val)
                rotn = 2 if i < kv_dim else 1
                for vv in range(rotn):
                    vec = q if vv == 0 else k
                    v0 = vec[i]
                    v1 = vec[i + 1]
                    vec[i] = v0 * fcr - v1 * fci
                    vec[i + 1] = v0 * fci + v1 * fcr
            self.key_cache[l, pos] = k
            self.value_cache[l, pos] = v
            xb = np.zeros(dim, np.float32)
            for h in range(p.n_heads):
                qh = q[h * head_size:(h + 1) * head_size]
                kh = self.key_cache[l, :pos + 1, (h // kv_mul) * head_size:(h // kv_mul + 1) * head_size]
                att = (kh @ qh) / np.sqrt(np.float32(head_size))
                att = self.softmax(att.astype(np.float32))
                vh = self.value_cache[l, :pos + 1, (h // kv_mul) * head_size:(h // kv_mul + 1) * head_size]
                xb[h * head_size:(h + 1) * head_size] = att @ vh
            xb2 = self.matmul(xb, self.wo[l])
            x = x + xb2
            xb = self.rmsnorm(x, self.rms_ffn_weight[l])
            hb = self.matmul(xb, self.w1[l])
            hb2 = self.matmul(xb, self.w3[l])
            hb = hb * (np.float32(1.0) / (np.float32(1.0) + np.exp(-hb))) * hb2
            xb = self.matmul(hb, self.w2[l])
            x = x + xb
        x = self.rmsnorm(x, self.rms_final_weight)
        return self.matmul(x, self.wcls)

    def greedy(self, steps: int, bos: int = 1):
        """run.c's generate loop with temperature 0 and an empty prompt: starts from BOS, stops
        early if the model emits BOS. Returns (ids without BOS, list of logits per step)."""
        token, ids, logits_all = bos, [], []
        for pos in range(steps):
            logits = self.forward(token, pos)
            logits_all.append(logits)
            nxt = int(np.argmax(logits))
            if nxt == bos:
                break
            ids.append(nxt)
            token = nxt
        return ids, logits_all


def random_arch(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=96, vocab_size=300,
                max_seq_len=64, tied=True):
    return {"dim": dim, "n_layers": n_layers, "n_heads": n_heads, "n_kv_heads": n_kv_heads,
            "hidden_dim": hidden_dim, "vocab_size": vocab_size, "max_seq_len": max_seq_len,
            "norm_eps": 1e-5, "rope_theta": 10000.0, "tied_embeddings": tied}


def random_weights(arch: dict, seed: int = 0, scale: float = 0.08) -> dict:
    from bulletd.runtime.reference import expected_shapes
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in expected_shapes(arch).items():
        if len(shape) == 1:
            out[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            out[name] = (scale * rng.standard_normal(shape)).astype(np.float32)
    return out


def write_llama2c_bin(path, *, dim=32, hidden_dim=72, n_layers=2, n_heads=4, n_kv_heads=2,
                      vocab_size=300, seq_len=48, shared=True, seed=0) -> None:
    """Write a random llama2.c version-0 checkpoint (export.py's legacy_export layout)."""
    rng = np.random.default_rng(seed)
    hs = dim // n_heads
    kv = n_kv_heads * hs
    L = n_layers

    def r(*shape, s=0.2):
        return (s * rng.standard_normal(shape)).astype("<f4")

    parts = [r(vocab_size, dim), 1 + r(L, dim, s=0.1), r(L, dim, dim), r(L, kv, dim), r(L, kv, dim),
             r(L, dim, dim), 1 + r(L, dim, s=0.1), r(L, hidden_dim, dim), r(L, dim, hidden_dim),
             r(L, hidden_dim, dim), 1 + r(dim, s=0.1), r(seq_len, hs // 2), r(seq_len, hs // 2)]
    if not shared:
        parts.append(r(vocab_size, dim))
    head = struct.pack("<7i", dim, hidden_dim, n_layers, n_heads, n_kv_heads,
                       vocab_size if shared else -vocab_size, seq_len)
    with open(path, "wb") as f:
        f.write(head)
        for p in parts:
            f.write(np.ascontiguousarray(p, dtype="<f4").tobytes())


def write_tokenizer_bin(path, pieces: list[bytes], scores: list[float] | None = None) -> None:
    """llama2.c tokenizer.bin: int32 max_token_length, then per token f32 score, int32 len, bytes."""
    scores = scores if scores is not None else [0.0] * len(pieces)
    with open(path, "wb") as f:
        f.write(struct.pack("<i", max(len(p) for p in pieces)))
        for p, s in zip(pieces, scores):
            f.write(struct.pack("<fi", s, len(p)))
            f.write(p)


def sentencepiece_like_pieces(vocab_size: int) -> list[bytes]:
    """<unk>, <s>, </s>, <0x00>..<0xFF>, then word pieces, as llama2.c's tok512 export lays out."""
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [b"<0x%02X>" % i for i in range(256)]
    words = [b" the", b" a", b"he", b" t", b"in", b"er", b" s", b"an", b" O", b"nce", b" Once",
             b" up", b"on", b" upon", b" time", b" ti", b"me"]
    k = 0
    while len(pieces) < vocab_size:
        pieces.append(words[k] if k < len(words) else b"<w%d>" % k)
        k += 1
    return pieces
