"""Import llama2.c checkpoints into .bullet files.

Owns reading llama2.c's legacy "version 0" checkpoint (`run.c`'s format) and its `tokenizer.bin`,
mapping both onto the Bullet tensor names and vocabulary, and writing the result with
`bulletd.format.write_bullet`. Run it as

    bullet import-llama2c stories260K.bin [--tokenizer tok512.bin] [--dtype f32|bq4] -o out.bullet

Checkpoint layout (little-endian), read here in file order as run.c's memory_map_weights does:

    int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
        (vocab_size < 0 means the classifier is stored separately at the end)
    f32 token_embedding_table  (vocab, dim)
    f32 rms_att_weight         (n_layers, dim)
    f32 wq                     (n_layers, n_heads*head_size, dim)
    f32 wk, wv                 (n_layers, n_kv_heads*head_size, dim)
    f32 wo                     (n_layers, dim, n_heads*head_size)
    f32 rms_ffn_weight         (n_layers, dim)
    f32 w1                     (n_layers, hidden_dim, dim)
    f32 w2                     (n_layers, dim, hidden_dim)
    f32 w3                     (n_layers, hidden_dim, dim)
    f32 rms_final_weight       (dim,)
    f32 freq_cis_real, freq_cis_imag   (seq_len, head_size/2) each: legacy RoPE tables, unused
    f32 wcls                   (vocab, dim)   only when the classifier is not shared

tokenizer.bin: int32 max_token_length, then per token: f32 score, int32 length, `length` bytes.
Pieces "<0xHH>" are byte-fallback tokens; ids 0, 1, 2 are <unk>, BOS and EOS (run.c's fixed ids).
"""
from __future__ import annotations

import datetime as _dt
import os
import re
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import FormatError
from ..signing import file_sha256

HEADER_INTS = 7
HEADER_BYTES = HEADER_INTS * 4
BOS_ID = 1        # run.c: BOS is 1 and generation stops when the model produces it again
EOS_ID = 2
UNK_ID = 0
ROPE_THETA = 10000.0   # run.c hard-codes powf(10000.0f, ...)
NORM_EPS = 1e-5        # run.c's rmsnorm adds 1e-5f
MAX_DIM = 1 << 16      # far beyond any llama2.c model; stops a hostile header allocating terabytes
_BYTE_PIECE = re.compile(rb"^<0x([0-9A-Fa-f]{2})>$")


@dataclass(frozen=True)
class Llama2cConfig:
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int          # absolute value of the header field
    seq_len: int
    shared_classifier: bool  # header vocab_size > 0: the output matrix is the token embedding

    @property
    def head_size(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_size

    def n_floats(self) -> int:
        """f32 values after the header that a well-formed checkpoint holds."""
        L, d, h, kv, v = self.n_layers, self.dim, self.hidden_dim, self.kv_dim, self.vocab_size
        n = v * d                              # token embedding
        n += L * d                             # rms_att
        n += L * d * d + 2 * L * kv * d        # wq, wk, wv
        n += L * d * d                         # wo
        n += L * d                             # rms_ffn
        n += 3 * L * h * d                     # w1, w2, w3
        n += d                                 # rms_final
        n += self.seq_len * self.head_size     # legacy freq_cis_real + freq_cis_imag
        if not self.shared_classifier:
            n += v * d
        return n


def read_config(path) -> Llama2cConfig:
    """Read and check the 7-int header. FormatError names the field and the value found."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
    except OSError as exc:
        raise FormatError(f"{path}: cannot read llama2.c checkpoint: {exc.strerror or exc}") from exc
    if len(head) < HEADER_BYTES:
        raise FormatError(f"{path}: llama2.c checkpoint header needs {HEADER_BYTES} bytes, "
                          f"the file has {size}")
    dim, hidden, layers, heads, kv_heads, vocab, seq = struct.unpack("<7i", head)
    names = {"dim": dim, "hidden_dim": hidden, "n_layers": layers, "n_heads": heads,
             "n_kv_heads": kv_heads, "seq_len": seq}
    for k, v in names.items():
        if not 1 <= v <= MAX_DIM:
            raise FormatError(f"{path}: llama2.c header field {k} = {v} is outside 1..{MAX_DIM} "
                              f"(is this a version-0 llama2.c checkpoint?)")
    if vocab == 0 or abs(vocab) > (1 << 20):
        raise FormatError(f"{path}: llama2.c header field vocab_size = {vocab} is outside "
                          f"1..{1 << 20} in absolute value")
    if dim % heads:
        raise FormatError(f"{path}: dim {dim} is not a multiple of n_heads {heads}")
    if (dim // heads) % 2:
        raise FormatError(f"{path}: head size {dim // heads} is odd; RoPE rotates pairs")
    if heads % kv_heads:
        raise FormatError(f"{path}: n_heads {heads} is not a multiple of n_kv_heads {kv_heads}")
    cfg = Llama2cConfig(dim, hidden, layers, heads, kv_heads, abs(vocab), seq, vocab > 0)
    want = HEADER_BYTES + 4 * cfg.n_floats()
    if size != want:
        other = Llama2cConfig(**{**asdict(cfg), "shared_classifier": not cfg.shared_classifier})
        hint = ""
        if size == HEADER_BYTES + 4 * other.n_floats():
            hint = (" (that size fits the opposite classifier sharing: the sign of vocab_size "
                    "in the header is wrong)")
        raise FormatError(f"{path}: a version-0 llama2.c checkpoint with this header "
                          f"({'shared' if cfg.shared_classifier else 'separate'} classifier) "
                          f"has {want} bytes, the file has {size}{hint}")
    return cfg


def read_checkpoint(path) -> tuple[Llama2cConfig, dict[str, np.ndarray]]:
    """Read a checkpoint into float32 arrays named as in the .bullet tensor table.

    Returns (config, tensors). `output` is present only when the classifier is separate.
    """
    cfg = read_config(path)
    flat = np.fromfile(path, dtype="<f4", offset=HEADER_BYTES)
    L, d, h, kv, v, hs = cfg.n_layers, cfg.dim, cfg.hidden_dim, cfg.kv_dim, cfg.vocab_size, cfg.head_size
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        out = flat[pos:pos + n].reshape(shape).astype(np.float32)
        pos += n
        return out

    # file order, exactly as run.c's memory_map_weights walks its pointer
    tok = take(v, d)
    rms_att = take(L, d)
    wq = take(L, d, d)
    wk = take(L, kv, d)
    wv = take(L, kv, d)
    wo = take(L, d, d)
    rms_ffn = take(L, d)
    w1 = take(L, h, d)
    w2 = take(L, d, h)
    w3 = take(L, h, d)
    rms_final = take(d)
    take(cfg.seq_len, hs // 2)   # freq_cis_real: run.c recomputes RoPE, skips these
    take(cfg.seq_len, hs // 2)   # freq_cis_imag
    wcls = None if cfg.shared_classifier else take(v, d)
    if pos != flat.shape[0]:
        raise FormatError(f"{path}: read {pos} floats but the file holds {flat.shape[0]}")

    for name, arr in (("token_embedding_table", tok), ("wq", wq), ("w2", w2), ("rms_final", rms_final)):
        if not np.all(np.isfinite(arr)):
            raise FormatError(f"{path}: {name} holds NaN or infinite values")

    tensors: dict[str, np.ndarray] = {"tok_embd": tok}
    for i in range(L):
        tensors[f"blk.{i}.attn_norm"] = rms_att[i]
        tensors[f"blk.{i}.wq"] = wq[i]
        tensors[f"blk.{i}.wk"] = wk[i]
        tensors[f"blk.{i}.wv"] = wv[i]
        tensors[f"blk.{i}.wo"] = wo[i]
        tensors[f"blk.{i}.ffn_norm"] = rms_ffn[i]
        tensors[f"blk.{i}.w1"] = w1[i]
        tensors[f"blk.{i}.w2"] = w2[i]
        tensors[f"blk.{i}.w3"] = w3[i]
    tensors["out_norm"] = rms_final
    if wcls is not None:
        tensors["output"] = wcls
    return cfg, tensors


def arch_from_config(cfg: Llama2cConfig) -> dict:
    """The .bullet `arch` dict for a llama2.c model."""
    return {
        "dim": cfg.dim,
        "n_layers": cfg.n_layers,
        "n_heads": cfg.n_heads,
        "n_kv_heads": cfg.n_kv_heads,
        "hidden_dim": cfg.hidden_dim,
        "vocab_size": cfg.vocab_size,
        "max_seq_len": cfg.seq_len,
        "norm_eps": NORM_EPS,
        "rope_theta": ROPE_THETA,
        "tied_embeddings": cfg.shared_classifier,
    }


def read_tokenizer(path, vocab_size: int) -> tuple[int, list[tuple[bytes, float]], int]:
    """Read llama2.c's tokenizer.bin. Returns (max_token_length, [(piece, score)] * vocab_size,
    entries in the file). Like run.c, only the first vocab_size entries are used; a file with
    fewer entries is an error."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FormatError(f"{path}: cannot read tokenizer: {exc.strerror or exc}") from exc
    if len(data) < 4:
        raise FormatError(f"{path}: tokenizer.bin needs a 4-byte max_token_length, the file has "
                          f"{len(data)} bytes")
    (max_len,) = struct.unpack_from("<i", data, 0)
    if not 1 <= max_len <= 1 << 16:
        raise FormatError(f"{path}: max_token_length {max_len} is outside 1..65536 "
                          f"(is this a llama2.c tokenizer.bin?)")
    off = 4
    entries: list[tuple[bytes, float]] = []
    count = 0
    while off < len(data):
        if off + 8 > len(data):
            raise FormatError(f"{path}: token {count} at byte {off}: needs 8 bytes of score and "
                              f"length, {len(data) - off} remain")
        score, n = struct.unpack_from("<fi", data, off)
        off += 8
        if n < 0 or n > max_len or off + n > len(data):
            raise FormatError(f"{path}: token {count} at byte {off - 4}: length {n} is negative, "
                              f"above max_token_length {max_len} or past the end of the file")
        if count < vocab_size:
            entries.append((data[off:off + n], float(score)))
        off += n
        count += 1
    if count < vocab_size:
        raise FormatError(f"{path}: the model has {vocab_size} tokens but the tokenizer file "
                          f"holds only {count}")
    return max_len, entries, count


def _vocab_from_llama2c(entries):
    from ..format import TOKEN_BYTE, TOKEN_CONTROL, TOKEN_NORMAL, VocabEntry
    vocab = []
    for i, (piece, score) in enumerate(entries):
        m = _BYTE_PIECE.match(piece)
        if i in (UNK_ID, BOS_ID, EOS_ID):
            vocab.append(VocabEntry(piece, score, TOKEN_CONTROL))
        elif m:
            vocab.append(VocabEntry(bytes([int(m.group(1), 16)]), score, TOKEN_BYTE))
        else:
            vocab.append(VocabEntry(piece, score, TOKEN_NORMAL))
    return vocab


def placeholder_vocab(vocab_size: int):
    """A byte-level stand-in when the real tokenizer is not available: ids 0-2 are <unk>, <s>,
    </s> (control), ids 3-258 the 256 byte tokens (the layout of llama2.c's SentencePiece
    exports), every further id a NORMAL piece "<tok N>" that never merges from text. Ids keep
    their meaning; text decoding of ids above 258 shows the placeholders."""
    from ..format import TOKEN_BYTE, TOKEN_CONTROL, TOKEN_NORMAL, VocabEntry
    vocab = []
    for i in range(vocab_size):
        if i < 3:
            vocab.append(VocabEntry((b"<unk>", b"<s>", b"</s>")[i], 0.0, TOKEN_CONTROL))
        elif i < 259:
            vocab.append(VocabEntry(bytes([i - 3]), 0.0, TOKEN_BYTE))
        else:
            vocab.append(VocabEntry(f"<tok {i}>".encode(), -1e9, TOKEN_NORMAL))
    return vocab


def import_llama2c(checkpoint, out, *, tokenizer=None, dtype: str = "f32", name: str | None = None,
                   version: str = "1") -> dict:
    """Convert a llama2.c checkpoint (+ optional tokenizer.bin) into a .bullet file.

    dtype "f32" keeps every weight exact; "bq4" quantises the matrices (norm vectors stay f32).
    Returns a summary dict (config, dtype, placeholder vocabulary or not, output size).
    Raises FormatError for a malformed checkpoint or tokenizer, ValueError for a bad dtype.
    """
    from ..format import write_bullet
    from ..signing import ModelOutput
    if dtype not in ("f32", "bq4"):
        raise ValueError(f"dtype must be 'f32' or 'bq4', got {dtype!r}")
    checkpoint = Path(checkpoint)
    cfg, weights = read_checkpoint(checkpoint)
    placeholder = tokenizer is None
    tok_info: dict = {"placeholder": placeholder}
    if placeholder:
        vocab = placeholder_vocab(cfg.vocab_size)
        tok_info["note"] = ("no tokenizer file was given: the vocabulary is a byte-level "
                            "placeholder (ids 0-2 control, 3-258 bytes, the rest '<tok N>'); "
                            "token ids are exact, decoded text of ids above 258 is not")
    else:
        max_len, entries, in_file = read_tokenizer(tokenizer, cfg.vocab_size)
        vocab = _vocab_from_llama2c(entries)
        tok_info.update({"file": Path(tokenizer).name, "sha256": file_sha256(tokenizer)[0],
                         "max_token_length": max_len, "entries_in_file": in_file})

    tensors = {}
    for tname, arr in weights.items():
        if arr.ndim == 2 and dtype == "bq4":
            tensors[tname] = ("bq4", arr)
        else:
            tensors[tname] = ("f32", arr)

    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    provenance = {
        "name": name or checkpoint.stem,
        "version": str(version),
        "created": now,
        "source": {
            "kind": "llama2c-v0",
            "file": checkpoint.name,
            "sha256": file_sha256(checkpoint)[0],
            "size": checkpoint.stat().st_size,
            "header": asdict(cfg),
            "classifier": "shared" if cfg.shared_classifier else "separate",
            "tokenizer": tok_info,
        },
        "converted_by": "bullet import-llama2c",
        "weights_dtype": dtype,
        "notes": ("bq4 rows with in_features not a multiple of 32 are zero-padded to whole "
                  "blocks (docs/ARCHITECTURE.md)") if dtype == "bq4" else "weights copied exactly",
    }
    tok_meta = {"kind": "llama2c-sentencepiece" if not placeholder else "byte-placeholder",
                "bos_id": BOS_ID, "eos_id": EOS_ID, "add_dummy_prefix": True,
                # run.c ends a sample when the model emits BOS again (TinyStories delimiter)
                "stop_ids": [BOS_ID]}
    # an existing OUT is replaced only by a whole file; its old .sig (which cannot sign the new
    # file) is removed with it
    with ModelOutput(out) as output:
        write_bullet(output.tmp, kind="lm", arch=arch_from_config(cfg), tensors=tensors, vocab=vocab,
                     tokenizer=tok_meta, provenance=provenance)
    return {"config": asdict(cfg), "dtype": dtype, "placeholder_vocab": placeholder,
            "out": str(out), "size": os.path.getsize(out),
            "removed_sig": str(output.sig_path) if output.removed_sig else None}


def greedy_agreement(model_a, model_b, steps: int = 200, bos: int = BOS_ID) -> dict:
    """How often two models (e.g. f32 and bq4 imports of one checkpoint) pick the same greedy
    token over `steps` positions from BOS (no early stop, repetition penalty off).

    free_run:  each model decodes its own greedy sequence; `same_prefix` is how many leading
               tokens agree, `positionwise` the fraction of positions with the same id.
    teacher_forced: both models read model_a's sequence; the fraction of positions where their
               argmax agrees (the quantisation error per step, without drift compounding it).
    """
    steps = min(steps, model_a.context, model_b.context)

    def run(model, feed=None):
        s = model.new_session()
        tok, ids, argmaxes = bos, [], []
        for pos in range(steps):
            logits = s.forward(tok, pos)
            am = int(np.argmax(logits))
            argmaxes.append(am)
            ids.append(am)
            tok = am if feed is None else feed[pos]
        return ids, argmaxes

    a_ids, _ = run(model_a)
    b_ids, _ = run(model_b)
    _, b_forced = run(model_b, feed=a_ids)
    same_prefix = 0
    while same_prefix < steps and a_ids[same_prefix] == b_ids[same_prefix]:
        same_prefix += 1
    return {
        "steps": steps,
        "free_run_same_prefix": same_prefix,
        "free_run_positionwise": float(np.mean(np.array(a_ids) == np.array(b_ids))),
        "teacher_forced": float(np.mean(np.array(a_ids) == np.array(b_forced))),
    }
