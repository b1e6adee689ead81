"""`bullet import-gguf MODEL.gguf -o model.bullet`: a llama-architecture GGUF model as a .bullet
lm. docs/INTEROP.md has the mapping tables.

Accepted: architecture `llama`; tensors F32, F16, Q4_0, Q8_0; tokenizer model "llama"
(SentencePiece-style) or "gpt2" (byte-level BPE). Anything else is refused with an error naming
it. The file is untrusted input: bulletd.gguf.reader validates its structure, this module its
meaning (keys, shapes, token tables), and the .bullet writer and reader check the result again.

--dtype decides the matrices (vectors keep F32 as f32 and F16 as f16):
    auto  (default) a GGUF written by `bullet export-gguf` comes back as the .bullet it was made
          from, byte for byte (its saved header is used only when the rebuilt body has the
          checksum the header records: a file changed after export, e.g. requantised by
          llama.cpp, is imported as any other); any other file is imported as bq4
    bq4   Q4_0 is copied bit for bit; F32, F16 and Q8_0 are quantised to BQ4 (error reported)
    f16   everything as f16 (F16 copied; others rounded, error reported)
    f32   everything as f32 (exact for all four types)
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

import numpy as np

from ..errors import FormatError
from ..signing import file_sha256
from ..format import Tokenizer, VocabEntry, dequantize_bq4, quantize_bq4, write_bullet
from ..format.arch import INT_KEYS, check_arch, tensor_shapes
from ..format.bq4 import bq4_nbytes
from ..format.tokenizer import TOKEN_BYTE, TOKEN_CONTROL, TOKEN_NORMAL
from .export import BQ4_KEY, HEADER_KEY, SPACE_BYTE_KEY
from .mapping import (GT_CONTROL, GT_UNKNOWN, GT_UNUSED, bullet_name, dequantize_q4_0, dequantize_q8_0,
                      from_bpe_text, from_spm_piece, gguf_name, q4_0_to_bq4)
from .reader import F16, F32, Q4_0, T_ARRAY, T_STRING, GGUFFile

DTYPES = ("auto", "bq4", "f16", "f32")
# llama.* keys with features this runtime does not have: a file using them is refused
_UNSUPPORTED_KEYS = {
    "llama.expert_count": "mixture of experts",
    "llama.attention.sliding_window": "sliding-window attention",
    "llama.attention.layer_norm_epsilon": "LayerNorm (llama uses RMSNorm)",
}


def import_gguf(src, out, *, dtype: str = "auto", name: str | None = None,
                version: str | None = None) -> dict:
    """Convert GGUF `src` to .bullet `out`. Returns a summary: arch, dtype per tensor kind,
    quantisation errors (relative RMS per converted matrix), whether a Bullet header was
    restored (and why not, when the file has one). FormatError for anything unsupported or
    malformed; ValueError for a bad dtype."""
    from ..format import BulletFile
    from ..signing import ModelOutput
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    src = Path(src)
    ignored = None
    with GGUFFile(src) as g:
        p = str(src)
        arch_name = g.str_value("general.architecture")
        if arch_name != "llama":
            raise FormatError(f"{p}: architecture {arch_name!r} is not supported (only 'llama')")
        arch = _arch(g, p)
        vocab, tok_meta = _vocab(g, p, arch["vocab_size"])
        saved = _saved_header(g, p, arch) if dtype == "auto" else None
        with ModelOutput(out) as output:
            r = _write(g, src, output.tmp, arch, vocab, tok_meta, saved, dtype, name, version)
            if saved is not None:
                with BulletFile.open(output.tmp) as bf:
                    same = bf.header["body_sha256"] == saved.get("body_sha256")
                if not same:       # e.g. requantised by llama.cpp: the header would lie about the weights
                    ignored = ("its tensors are not the ones exported from that .bullet file "
                               "(changed after export), so it is imported as any GGUF")
                    saved = None
                    r = _write(g, src, output.tmp, arch, vocab, tok_meta, None, dtype, name, version)
        tokenizer = g.str_value("tokenizer.ggml.model")
    return {"out": str(out), "size": os.path.getsize(out), "arch": r["arch"], "kinds": r["kinds"],
            "errors": r["errors"], "restored_header": saved is not None, "header_ignored": ignored,
            "tokenizer": tokenizer, "removed_sig": str(output.sig_path) if output.removed_sig else None}


def _write(g: GGUFFile, src: Path, path, arch: dict, vocab, tok_meta: dict, saved: dict | None,
           dtype: str, name, version) -> dict:
    """Convert the tensors and write the .bullet file: from the saved header of a Bullet export
    when `saved` is given, else as any GGUF."""
    p = str(src)
    targets = {t["name"]: t["dtype"] for t in saved["tensors"]} if saved is not None else {}
    tensors, errors, kinds = _tensors(g, p, arch, dtype, targets)
    if saved is not None:
        arch, tok_meta, provenance = saved["arch"], saved["tokenizer"], saved["provenance"]
        try:
            Tokenizer(vocab, tok_meta)          # its ids must fit this vocabulary
        except FormatError as exc:
            raise FormatError(f"{p}: {HEADER_KEY}: {exc}") from None
        extra = {k: v for k, v in saved.items()
                 if k not in ("format", "version", "kind", "arch", "tokenizer", "provenance", "tensors",
                              "body_sha256")}
        if name is not None or version is not None:
            provenance = dict(provenance)
            provenance.update({k: v for k, v in (("name", name), ("version", version)) if v is not None})
    else:
        extra = None
        provenance = _provenance(g, src, name, version, dtype, errors)
        if arch["head_dim"] == arch["dim"] // arch["n_heads"]:
            arch = {k: v for k, v in arch.items() if k != "head_dim"}
    write_bullet(path, kind="lm", arch=arch, tensors=tensors, vocab=vocab, tokenizer=tok_meta,
                 provenance=provenance, extra=extra)
    return {"arch": arch, "kinds": kinds, "errors": errors}


# -- hyper-parameters -------------------------------------------------------------------------
def _arch(g: GGUFFile, p: str) -> dict:
    for key, what in _UNSUPPORTED_KEYS.items():
        if key in g.metadata and not (isinstance(g.metadata[key], int) and g.metadata[key] == 0):
            raise FormatError(f"{p}: {key} is set: {what} is not supported")
    scaling = g.str_value("llama.rope.scaling.type", "none")
    factor = g.float_value("llama.rope.scaling.factor", 1.0)
    if scaling not in ("none", "linear") or (scaling == "linear" and factor != 1.0):
        raise FormatError(f"{p}: RoPE scaling {scaling!r} (factor {factor}) is not supported")

    def need(key: str) -> int:
        v = g.int_value(key)
        if v is None:
            raise FormatError(f"{p}: metadata key {key} is missing")
        return v

    emb = g.tensors.get("token_embd.weight")
    if emb is None:
        raise FormatError(f"{p}: tensor token_embd.weight is missing")
    n_heads = need("llama.attention.head_count")
    dim = need("llama.embedding_length")
    arch = {
        "dim": dim,
        "n_layers": need("llama.block_count"),
        "n_heads": n_heads,
        "n_kv_heads": g.int_value("llama.attention.head_count_kv", n_heads),
        "hidden_dim": need("llama.feed_forward_length"),
        "vocab_size": g.int_value("llama.vocab_size", emb.shape[0]),
        "max_seq_len": need("llama.context_length"),
        "norm_eps": g.float_value("llama.attention.layer_norm_rms_epsilon", 1e-5),
        "rope_theta": g.float_value("llama.rope.freq_base", 10000.0),
        "tied_embeddings": "output.weight" not in g.tensors,
    }
    if n_heads and dim % n_heads == 0:
        hd = g.int_value("llama.attention.key_length", dim // n_heads)
    else:
        hd = need("llama.attention.key_length")
    vd = g.int_value("llama.attention.value_length", hd)
    if vd != hd:
        raise FormatError(f"{p}: value_length {vd} differs from key_length {hd}: not supported")
    if n_heads == 0 or hd != dim // n_heads:
        arch["head_dim"] = hd
    rope = g.int_value("llama.rope.dimension_count", hd)
    if rope != hd:
        raise FormatError(f"{p}: RoPE on {rope} of {hd} head dimensions (partial RoPE) is not supported")
    try:
        return check_arch(arch)
    except FormatError as exc:
        raise FormatError(f"{p}: {exc}") from None


# -- tokenizer --------------------------------------------------------------------------------
def _array(g: GGUFFile, p: str, key: str, kinds: str, n: int):
    """An array of n entries; kinds: "S" strings, else NumPy kinds ("f", "iu")."""
    v = g.metadata.get(key)
    if v is None:
        return None
    ok = (isinstance(v, list) and kinds == "S") or (isinstance(v, np.ndarray) and v.dtype.kind in kinds
                                                    and kinds != "S")
    if g.value_types[key] != T_ARRAY or not ok:
        raise FormatError(f"{p}: metadata {key} has the wrong type")
    if len(v) != n:
        raise FormatError(f"{p}: metadata {key} has {len(v)} entries, the vocabulary {n}")
    return v


def _vocab(g: GGUFFile, p: str, n: int) -> tuple[list[VocabEntry], dict]:
    model = g.str_value("tokenizer.ggml.model")
    if model is None:
        raise FormatError(f"{p}: no tokenizer (tokenizer.ggml.model is missing)")
    if model not in ("llama", "gpt2"):
        raise FormatError(f"{p}: tokenizer model {model!r} is not supported ('llama' SentencePiece-style "
                          f"or 'gpt2' byte-level BPE)")
    tokens = _array(g, p, "tokenizer.ggml.tokens", "S", n)
    if tokens is None:
        raise FormatError(f"{p}: tokenizer.ggml.tokens is missing")
    types = _array(g, p, "tokenizer.ggml.token_type", "iu", n)
    types = [1] * n if types is None else [int(t) for t in types]
    meta: dict = {"kind": "gguf-" + model}
    for key, gkey in (("bos_id", "bos_token_id"), ("eos_id", "eos_token_id"), ("unk_id", "unknown_token_id"),
                      ("pad_id", "padding_token_id")):
        v = g.int_value("tokenizer.ggml." + gkey)
        if v is not None:
            if not 0 <= v < n:
                raise FormatError(f"{p}: tokenizer.ggml.{gkey} {v} is not a token id below {n}")
            meta[key] = v
    meta.setdefault("bos_id", None)
    meta.setdefault("eos_id", None)
    stops = []
    for gkey in ("eot_token_id", "eom_token_id"):        # llama.cpp ends generation on these too
        v = g.int_value("tokenizer.ggml." + gkey)
        if v is not None and 0 <= v < n and v != meta["eos_id"] and v not in stops:
            stops.append(v)
    if stops:
        meta["stop_ids"] = stops
    if model == "llama":
        scores = _array(g, p, "tokenizer.ggml.scores", "f", n)
        scores = np.zeros(n, np.float32) if scores is None else scores.astype(np.float32)
        if not np.all(np.isfinite(scores)):
            raise FormatError(f"{p}: tokenizer.ggml.scores holds a non-finite score")
        space_byte = g.int_value(SPACE_BYTE_KEY)      # bulletd.gguf.export: the byte token 0x20
        vocab = []
        for i, (text, gt) in enumerate(zip(tokens, types)):
            try:
                piece, tt = from_spm_piece(text, gt)
            except FormatError as exc:
                raise FormatError(f"{p}: token {i}: {exc}") from None
            if i == space_byte and piece == b" " and tt == TOKEN_NORMAL:
                tt = TOKEN_BYTE
            vocab.append(VocabEntry(piece, float(scores[i]), tt))
        meta["add_dummy_prefix"] = bool(g.bool_value("tokenizer.ggml.add_space_prefix", True))
    else:
        vocab = _bpe_vocab(g, p, tokens, types)
        meta["add_dummy_prefix"] = False
    meta["byte_fallback"] = any(e.type == TOKEN_BYTE for e in vocab)
    return vocab, meta


def _bpe_vocab(g: GGUFFile, p: str, tokens: list, types: list) -> list[VocabEntry]:
    """Byte-level BPE: a token made by merge number r scores -r, so that the Bullet rule (merge
    the pair whose concatenation is the best-scoring piece) follows the merge order; single
    bytes become BYTE tokens; control tokens stay control."""
    merges = g.metadata.get("tokenizer.ggml.merges")
    if merges is not None and (g.value_types["tokenizer.ggml.merges"] != T_ARRAY or not isinstance(merges, list)):
        raise FormatError(f"{p}: tokenizer.ggml.merges must be an array of strings")
    pieces = []
    for i, (text, gt) in enumerate(zip(tokens, types)):
        if gt in (GT_CONTROL, GT_UNKNOWN, GT_UNUSED):
            pieces.append((text, TOKEN_CONTROL))
        elif gt == 4:        # user-defined: stored as plain text
            pieces.append((text, TOKEN_NORMAL))
        else:
            try:
                raw = from_bpe_text(text)
            except FormatError as exc:
                raise FormatError(f"{p}: token {i}: {exc}") from None
            pieces.append((raw, TOKEN_BYTE if len(raw) == 1 else TOKEN_NORMAL))
    rank: dict[bytes, int] = {}
    for r, m in enumerate(merges or []):
        parts = m.split(b" ")
        if len(parts) != 2:
            raise FormatError(f"{p}: merge {r} {m[:40]!r} is not two tokens separated by a space")
        try:
            rank.setdefault(from_bpe_text(parts[0]) + from_bpe_text(parts[1]), r)
        except FormatError as exc:
            raise FormatError(f"{p}: merge {r}: {exc}") from None
    vocab = []
    for piece, tt in pieces:
        score = 0.0 if tt != TOKEN_NORMAL else float(-rank[piece]) if piece in rank else -1e9
        vocab.append(VocabEntry(piece, score, tt))
    return vocab


# -- a header saved by `bullet export-gguf` -------------------------------------------------------
def _saved_header(g: GGUFFile, p: str, arch: dict) -> dict | None:
    if HEADER_KEY not in g.metadata:
        return None
    raw = g.str_value(HEADER_KEY)
    try:
        h = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"{p}: {HEADER_KEY} is not JSON: {exc}") from None
    if not isinstance(h, dict) or h.get("kind") != "lm" or not isinstance(h.get("tensors"), list):
        raise FormatError(f"{p}: {HEADER_KEY} is not the header of an lm .bullet file")
    for key in ("tokenizer", "provenance"):
        if not isinstance(h.get(key), dict):
            raise FormatError(f"{p}: {HEADER_KEY} has no '{key}' object")
    try:
        saved_arch = check_arch(h.get("arch"))
    except FormatError as exc:
        raise FormatError(f"{p}: {HEADER_KEY}: {exc}") from None
    for k in INT_KEYS + ("head_dim", "norm_eps", "rope_theta", "tied_embeddings"):
        if saved_arch[k] != arch[k] and not (isinstance(arch[k], float) and np.float32(saved_arch[k]) == np.float32(arch[k])):
            raise FormatError(f"{p}: {HEADER_KEY} says arch.{k} = {saved_arch[k]!r}, the GGUF keys {arch[k]!r}")
    names = set(tensor_shapes(saved_arch))
    for t in h["tensors"]:
        if not isinstance(t, dict) or t.get("name") not in names or t.get("dtype") not in ("bq4", "f16", "f32"):
            raise FormatError(f"{p}: {HEADER_KEY} has a bad tensor table entry {str(t)[:80]}")
    if sorted(t["name"] for t in h["tensors"]) != sorted(names):
        raise FormatError(f"{p}: {HEADER_KEY}'s tensor table does not list each tensor of the architecture once")
    return h


# -- tensors ----------------------------------------------------------------------------------
def _tensors(g: GGUFFile, p: str, arch: dict, dtype: str, targets: dict) -> tuple[dict, dict, dict]:
    want = tensor_shapes(arch)
    by_bullet = {}
    for gname in g.tensors:
        b = bullet_name(gname)
        if b is None or b not in want:
            raise FormatError(f"{p}: tensor {gname} is not part of a llama model of this shape "
                              f"(not supported)")
        by_bullet[b] = gname
    tensors, errors, kinds = {}, {}, {}
    for name in (targets or want):          # a restored header keeps its file order
        shape = want[name]
        gname = by_bullet.get(name)
        if gname is None:
            raise FormatError(f"{p}: tensor {gguf_name(name)} is missing")
        t = g.tensors[gname]
        if t.shape != shape:
            raise FormatError(f"{p}: tensor {gname} has shape {list(t.shape)}, the hyper-parameters "
                              f"need {list(shape)}")
        target = targets.get(name)
        if target is None:
            if len(shape) == 1:
                target = "f16" if t.type == F16 else "f32"
            else:
                target = "bq4" if dtype == "auto" else dtype
        spec, err = _convert(g, p, t, shape, target)
        tensors[name] = spec
        if err is not None:
            errors[name] = err
        key = f"{t.type_name} -> {target}"
        kinds[key] = kinds.get(key, 0) + 1
    return tensors, errors, kinds


def _floats(g: GGUFFile, t, shape) -> np.ndarray:
    raw = g.tensor_data(t.name)
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    cols = shape[-1]
    if t.type == F32:
        out = raw.view("<f4").astype(np.float32)
    elif t.type == F16:
        out = raw.view("<f2").astype(np.float32)
    elif t.type == Q4_0:
        out = dequantize_q4_0(raw, rows, cols)
    else:
        out = dequantize_q8_0(raw, rows, cols)
    return out.reshape(shape)


def _rel_rms(a: np.ndarray, b: np.ndarray) -> float:
    den = float(np.sqrt(np.mean(np.square(b, dtype=np.float64))))
    num = float(np.sqrt(np.mean(np.square(a.astype(np.float64) - b))))
    return num / den if den > 0 else num


def _convert(g: GGUFFile, p: str, t, shape: tuple, target: str):
    """One tensor to its .bullet dtype: (spec for write_bullet, relative RMS error or None)."""
    if target == "bq4" and len(shape) == 1:
        target = "f32"
    raw = g.tensor_data(t.name)
    if target == "bq4":
        rows, cols = shape
        if t.type == Q4_0:
            return ("bq4", q4_0_to_bq4(raw, rows), shape), None
        key = BQ4_KEY + t.name
        if key in g.metadata and t.type == F32:
            blocks = g.metadata[key]
            if g.value_types[key] != T_ARRAY or not isinstance(blocks, np.ndarray) or blocks.dtype != np.uint8 \
                    or blocks.size != bq4_nbytes(rows, cols):
                raise FormatError(f"{p}: {key} must be a u8 array of {bq4_nbytes(rows, cols)} bytes")
            blocks = blocks.reshape(rows, -1)
            if not np.array_equal(dequantize_bq4(blocks, cols).view(np.uint32),
                                  raw.view("<f4").reshape(shape).view(np.uint32)):
                raise FormatError(f"{p}: {key} does not hold the weights of tensor {t.name}")
            return ("bq4", blocks, shape), None
        w = _floats(g, t, shape)
        if not np.all(np.isfinite(w)):
            raise FormatError(f"{p}: tensor {t.name} holds NaN or infinite values")
        with np.errstate(over="ignore"):           # a scale past f16 is quantize_bq4's FormatError
            blocks = quantize_bq4(w)
        return ("bq4", blocks, shape), _rel_rms(dequantize_bq4(blocks, cols), w)
    if target == "f16":
        if t.type == F16:
            return ("f16", raw.view("<f2").reshape(shape)), None
        w = _floats(g, t, shape)
        with np.errstate(over="ignore"):
            h = w.astype(np.float16)
        if not np.array_equal(np.isfinite(h), np.isfinite(w)):
            raise FormatError(f"{p}: tensor {t.name} has values beyond the f16 range")
        return ("f16", h), _rel_rms(h.astype(np.float32), w)
    if target != "f32":
        raise FormatError(f"{p}: tensor {t.name}: unknown target dtype {target!r}")
    return ("f32", _floats(g, t, shape)), None


# -- provenance -------------------------------------------------------------------------------
def _provenance(g: GGUFFile, src: Path, name, version, dtype: str, errors: dict) -> dict:
    general = {}
    for k, v in g.metadata.items():
        if k.startswith("general.") and g.value_types[k] == T_STRING:
            general[k[len("general."):]] = v.decode("utf-8", "replace")[:1000]
        elif k.startswith("general.") and isinstance(v, (int, float, bool)):
            general[k[len("general."):]] = v
    gv = general.get("version")
    if version is None:
        version = gv if isinstance(gv, str) and gv and all(x.isdigit() for x in gv.split(".")) else "1"
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    prov = {
        "name": name or str(general.get("name") or src.stem),
        "version": str(version),
        "created": now,
        "source": {"kind": "gguf", "file": src.name, "sha256": file_sha256(src)[0], "size": src.stat().st_size,
                   "gguf_version": g.version, "general": general},
        "converted_by": "bullet import-gguf",
        "weights_dtype": dtype,
    }
    if errors:
        prov["quantisation_rel_rms"] = {k: round(v, 6) for k, v in errors.items()}
    return prov
