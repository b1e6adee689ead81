"""`bullet export-gguf CHILD.bullet -o child.gguf`: a .bullet lm as a GGUF file that llama.cpp
(and so Ollama, LM Studio, ...) runs, written with the `gguf` package, the llama.cpp project's
own writer. docs/INTEROP.md has the mapping tables.

- architecture `llama`, every hyper-parameter key llama.cpp reads for it;
- BQ4 matrices as Q4_0 (bit-identical weights, bulletd.gguf.mapping), f32 as F32, f16 as F16;
  vectors (the norms) as F32, which is exact for f16 too;
- the padding rule: a BQ4 matrix whose rows are not a multiple of 32 weights cannot be Q4_0
  (ggml blocks never pad). It is written as F32 holding exactly the BQ4 values (scale * q is
  exact in f32), and its BQ4 blocks go into the metadata key `bullet.bq4.<tensor>` (u8 array),
  from which `bullet import-gguf` restores the tensor byte for byte;
- the tokenizer as tokenizer model "llama" (SentencePiece-style: scores, token types,
  byte-fallback tokens <0xHH>, spaces stored as U+2581; in a vocabulary with no space piece the
  byte token 0x20 becomes the piece U+2581, recorded in `bullet.space_byte_token`);
- provenance as general.* keys, and the whole .bullet header as the JSON string `bullet.header`,
  so that a GGUF made here imports back to the same .bullet file (the header's body checksum
  tells the importer whether the tensors are still the exported ones).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import FormatError
from ..format import BulletFile, dequantize_bq4
from ..format.arch import head_dim
from ..format.tokenizer import TOKEN_BYTE, TOKEN_CONTROL, TOKEN_NORMAL
from .mapping import GT_NORMAL, GT_UNKNOWN, SPM_SPACE, bq4_to_q4_0, gguf_name, spm_piece

HEADER_KEY = "bullet.header"
BQ4_KEY = "bullet.bq4."
SPACE_BYTE_KEY = "bullet.space_byte_token"


def _gguf():
    try:
        import gguf
    except ImportError:
        raise FormatError("GGUF export needs the 'gguf' package (pip install gguf), a dependency "
                          "of bullet-os") from None
    return gguf


def export_gguf(src, out) -> dict:
    """Write the lm .bullet file `src` as GGUF `out` (atomically). Returns a summary dict."""
    gguf = _gguf()
    with BulletFile.open(src) as bf:
        bf.verify_body()
        if bf.kind != "lm":
            raise FormatError(f"{src}: a {bf.kind} file has no GGUF form (only lm children export)")
        arch, tok = bf.arch, bf.header["tokenizer"]
        out = Path(out)
        fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent or ".")
        os.close(fd)
        try:
            w = gguf.GGUFWriter(tmp, "llama")
            _write_hparams(w, gguf, arch)
            _write_tokenizer(w, bf, tok)
            _write_provenance(w, gguf, bf)
            counts = _write_tensors(w, gguf, bf)
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_tensors_to_file()
            w.close()
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, out)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return {"out": str(out), "size": out.stat().st_size, "tensors": counts}


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def _write_hparams(w, gguf, arch: dict) -> None:
    hd = head_dim(arch)
    w.add_context_length(arch["max_seq_len"])
    w.add_embedding_length(arch["dim"])
    w.add_block_count(arch["n_layers"])
    w.add_feed_forward_length(arch["hidden_dim"])
    w.add_head_count(arch["n_heads"])
    w.add_head_count_kv(arch["n_kv_heads"])
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(arch["rope_theta"])
    w.add_layer_norm_rms_eps(arch["norm_eps"])
    w.add_vocab_size(arch["vocab_size"])


def _write_tokenizer(w, bf: BulletFile, tok: dict) -> None:
    unk = tok.get("unk_id")
    texts, types, scores = [], [], []
    seen: dict[bytes, int] = {}
    # llama.cpp writes a space as U+2581 before it looks anything up: a vocabulary with no space
    # piece, which Bullet encodes with its byte token 0x20, gets that token as the piece "▁"
    space_byte = None
    if not any(e.type == TOKEN_NORMAL and e.piece == b" " for e in bf.vocab):
        space_byte = next((i for i, e in enumerate(bf.vocab) if e.type == TOKEN_BYTE and e.piece == b" "), None)
    for i, e in enumerate(bf.vocab):
        if SPM_SPACE in e.piece and e.type != TOKEN_CONTROL:
            raise FormatError(f"{bf.path}: token {i} {e.piece!r} contains U+2581, which llama.cpp's "
                              f"'llama' tokenizer reads as a space; this vocabulary has no GGUF form")
        text, gtype = spm_piece(e.piece, e.type) if i != space_byte else (SPM_SPACE, GT_NORMAL)
        key = text or b"[EMPTY_%d]" % i           # llama.cpp's name for an empty token
        if key in seen:        # llama.cpp's loader asserts that token texts are distinct
            raise FormatError(f"{bf.path}: tokens {seen[key]} and {i} are both {text!r} in GGUF; "
                              f"llama.cpp needs distinct token texts")
        seen[key] = i
        if i == unk and e.type == TOKEN_CONTROL:
            gtype = GT_UNKNOWN
        texts.append(text)
        types.append(gtype)
        scores.append(float(e.score))
    if space_byte is not None:
        w.add_uint32(SPACE_BYTE_KEY, space_byte)
    w.add_tokenizer_model("llama")
    w.add_token_list(texts)
    w.add_token_scores(scores)
    w.add_token_types(types)
    for key, add in (("bos_id", w.add_bos_token_id), ("eos_id", w.add_eos_token_id),
                     ("unk_id", w.add_unk_token_id), ("pad_id", w.add_pad_token_id)):
        if isinstance(tok.get(key), int):
            add(tok[key])
    # the stop ids besides EOS end generation in llama.cpp as its end-of-turn / end-of-message ids
    stops = [t for t in tok.get("stop_ids") or [] if isinstance(t, int) and t != tok.get("eos_id")]
    for t, add in zip(stops, (w.add_eot_token_id, w.add_eom_token_id)):
        add(t)
    w.add_add_bos_token(tok.get("bos_id") is not None)   # bulletd starts every prompt with BOS
    w.add_add_eos_token(False)
    w.add_add_space_prefix(bool(tok.get("add_dummy_prefix", False)))


def _write_provenance(w, gguf, bf: BulletFile) -> None:
    prov = bf.provenance
    w.add_type("model")
    w.add_name(str(prov.get("name", bf.name)))
    w.add_version(str(prov.get("version", bf.version)))
    desc = f"Bullet OS child '{bf.name}' {bf.version}"
    if prov.get("created"):
        desc += f", created {prov['created']}"
    w.add_description(desc)
    w.add_quantized_by("Bullet OS (BQ4 as Q4_0)")
    dtypes = {t.dtype for t in bf.tensors.values() if len(t.shape) == 2}
    ftype = (gguf.LlamaFileType.MOSTLY_Q4_0 if "bq4" in dtypes else
             gguf.LlamaFileType.MOSTLY_F16 if dtypes == {"f16"} else gguf.LlamaFileType.ALL_F32)
    w.add_file_type(int(ftype))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_string(HEADER_KEY, json.dumps(bf.header, ensure_ascii=False, separators=(",", ":")))


def _write_tensors(w, gguf, bf: BulletFile) -> dict:
    Q = gguf.GGMLQuantizationType
    counts: dict[str, int] = {}
    for name, info in bf.tensors.items():
        gname = gguf_name(name)
        data = bf.tensor(name)
        if info.dtype == "bq4":
            rows, cols = info.shape
            if cols % 32 == 0:
                w.add_tensor(gname, bq4_to_q4_0(data), raw_dtype=Q.Q4_0)
                kind = "Q4_0"
            else:   # the padding rule (module docstring)
                w.add_tensor(gname, np.ascontiguousarray(dequantize_bq4(data, cols)))
                w.add_array(BQ4_KEY + gname, np.ascontiguousarray(data).tobytes())
                kind = "F32 (padded BQ4)"
        elif info.dtype == "f16" and len(info.shape) == 2:
            w.add_tensor(gname, np.ascontiguousarray(data, dtype=np.float16))
            kind = "F16"
        else:
            w.add_tensor(gname, np.ascontiguousarray(data, dtype=np.float32))
            kind = "F32"
        counts[kind] = counts.get(kind, 0) + 1
    return counts
