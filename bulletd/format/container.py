"""The .bullet v1 container: writer and zero-copy mmap reader. docs/BULLET_SPEC.md is the spec;
`BulletFile._walk` reads the file in file order and matches the spec section by section.

    [JSON header, UTF-8][4 zero bytes][zero padding to 4096]
    [BULK tokenizer block][zero padding to 64]
    [BWT0 weights block: 64-byte block header, then tensor data][BULLET_END END!]

A reader never trusts a file: every offset, length, count, dtype and shape is checked against
the file size before anything points into the mapping; any problem raises FormatError.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError
from .arch import check_arch, tensor_shapes
from .bq4 import BLOCK_BYTES, bq4_nbytes, bq4_row_blocks, quantize_bq4
from .tokenizer import TOKEN_BYTE, TOKEN_CONTROL, Tokenizer, VocabEntry

FORMAT_VERSION = 1
HEADER_ALIGN = 4096
BLOCK_ALIGN = 64
TENSOR_ALIGN = 64
MAX_HEADER_BYTES = 16 << 20
BULK_MAGIC = b"BULK"
BWT_MAGIC = b"BWT0"
FOOTER = b"BULLET_END" + b"END!"
BULK_HEAD = struct.Struct("<4sIII")    # magic, n_tokens, max_piece_len, pieces_nbytes
BWT_HEAD = struct.Struct("<4sIQ")      # magic, n_tensors, data_nbytes (then zeros up to 64 bytes)
DTYPES = {"f32": np.float32, "f16": np.float16}
KINDS = ("lm", "router")
MAX_DIM = 1 << 20       # tensor shapes: no dimension beyond MAX_DIM * 64


def align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def tensor_nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    """Bytes a tensor of this dtype and shape takes in the file."""
    if dtype == "bq4":
        return bq4_nbytes(shape[0], shape[1])
    n = 1
    for s in shape:
        n *= s
    return n * np.dtype(DTYPES[dtype]).itemsize


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str              # "bq4" | "f16" | "f32"
    shape: tuple[int, ...]  # logical shape; bq4 is (rows, cols)
    offset: int             # from the start of the tensor data region, a multiple of 64
    nbytes: int


def lm_tensor_shapes(arch: dict) -> dict[str, tuple[int, ...]]:
    """The tensors an lm of this architecture must have, with their shapes (bulletd.format.arch)."""
    return tensor_shapes(arch)


def validate_lm_arch(arch: Any) -> dict:
    """Check an lm architecture dict (bulletd.format.arch.check_arch); returns it with the
    defaults of norm_eps, rope_theta and tied_embeddings filled in."""
    check_arch(arch)
    out = dict(arch)
    out.setdefault("norm_eps", 1e-5)
    out.setdefault("rope_theta", 10000.0)
    out.setdefault("tied_embeddings", False)
    return out


def _fail(path: str, what: str) -> FormatError:
    return FormatError(f"{path}: {what}")


class BulletFile:
    """A memory-mapped, validated .bullet file. Tensors are NumPy views into the mapping.

    Opening reads the header, the tokenizer block and the footer with pread(), never through the
    mapping, so no page of the mapping is resident until a tensor is used."""

    def __init__(self, path: str | os.PathLike, fd: int, mm: mmap.mmap, size: int):
        self.path = str(path)
        self._fd = fd
        self._mm = mm
        self.size = size
        self.header: dict = {}
        self.tensors: dict[str, TensorInfo] = {}
        self._walk()

    @classmethod
    def open(cls, path: str | os.PathLike) -> "BulletFile":
        """Map and validate `path` (structure only; see verify_body for the checksum)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise FormatError(f"{path}: cannot open: {exc.strerror}") from exc
        mm = None
        try:
            size = os.fstat(fd).st_size
            if size < len(FOOTER) + 8:
                raise _fail(str(path), f"file of {size} bytes is too small to be a .bullet file")
            mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
            return cls(path, fd, mm, size)
        except BaseException:
            os.close(fd)
            if mm is not None:
                try:
                    mm.close()
                except BufferError:
                    pass  # a view made during validation is still referenced by the traceback
            raise

    def _read(self, off: int, n: int) -> bytes:
        data = os.pread(self._fd, n, off)
        if len(data) != n:
            raise _fail(self.path, f"short read of {n} bytes at offset {off} (file changed while open?)")
        return data

    # -- the walk, in file order (docs/BULLET_SPEC.md sections 2-6) ------------------------
    def _walk(self) -> None:
        size, p = self.size, self.path

        # 2. header: UTF-8 JSON up to the first NUL, then 4 zero bytes
        head = self._read(0, min(size, 1 << 16))
        end = head.find(b"\x00")
        if end < 0 and size > len(head):
            head = self._read(0, min(size, MAX_HEADER_BYTES))
            end = head.find(b"\x00")
        if end < 0:
            raise _fail(p, f"no header terminator (4 zero bytes) in the first {len(head)} bytes")
        if end == 0:
            raise _fail(p, "empty header (file starts with a zero byte)")
        if end + 4 > size or self._read(end, 4) != b"\x00\x00\x00\x00":
            raise _fail(p, f"header at offset {end} is not terminated by 4 zero bytes")
        try:
            header = json.loads(head[:end].decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise _fail(p, f"header is not valid UTF-8 JSON: {exc}") from exc
        if not isinstance(header, dict):
            raise _fail(p, f"header must be a JSON object, got {type(header).__name__}")
        self.header = header
        self._check_header_fields()

        # 3. padding to 4096, then the tokenizer block
        tok_off = align(end + 4, HEADER_ALIGN)
        self.body_offset = tok_off
        if tok_off + BULK_HEAD.size > size:
            raise _fail(p, f"tokenizer block at offset {tok_off} runs past the end of the file ({size} bytes)")
        if any(self._read(end + 4, tok_off - end - 4)):
            raise _fail(p, f"header padding {end + 4}..{tok_off} is not all zero")
        magic, n_tok, max_len, pieces_nb = BULK_HEAD.unpack(self._read(tok_off, BULK_HEAD.size))
        if magic != BULK_MAGIC:
            raise _fail(p, f"tokenizer block at offset {tok_off}: magic {magic!r}, expected {BULK_MAGIC!r}")
        types_off = BULK_HEAD.size                       # offsets below are within the block
        scores_off = types_off + align(n_tok, 4)
        offsets_off = scores_off + 4 * n_tok
        pieces_off = offsets_off + 4 * (n_tok + 1)
        bulk_end = tok_off + pieces_off + pieces_nb
        if bulk_end > size:
            raise _fail(p, f"tokenizer block of {n_tok} tokens and {pieces_nb} piece bytes at offset "
                           f"{tok_off} runs past the end of the file ({bulk_end} > {size} bytes)")
        self._bulk_raw = self._read(tok_off, bulk_end - tok_off)
        self._bulk = (n_tok, max_len, types_off, scores_off, offsets_off, pieces_off, pieces_nb)
        self._check_bulk()

        # 4. padding to 64, then the weights block header (64 bytes)
        wt_off = align(bulk_end, BLOCK_ALIGN)
        if wt_off + BLOCK_ALIGN > size:
            raise _fail(p, f"weights block at offset {wt_off} runs past the end of the file ({size} bytes)")
        magic, n_tensors, data_nb = BWT_HEAD.unpack(self._read(wt_off, BWT_HEAD.size))
        if magic != BWT_MAGIC:
            raise _fail(p, f"weights block at offset {wt_off}: magic {magic!r}, expected {BWT_MAGIC!r}")
        data_off = wt_off + BLOCK_ALIGN
        self.data_offset = data_off

        # 6. footer right after the tensor data, and nothing after it
        foot_off = data_off + data_nb
        if foot_off + len(FOOTER) > size:
            raise _fail(p, f"tensor data of {data_nb} bytes at offset {data_off} plus the footer runs past "
                           f"the end of the file ({size} bytes): truncated?")
        if self._read(foot_off, len(FOOTER)) != FOOTER:
            raise _fail(p, f"footer missing at offset {foot_off}: expected {FOOTER!r}")
        if foot_off + len(FOOTER) != size:
            raise _fail(p, f"{size - foot_off - len(FOOTER)} bytes of trailing data after the footer "
                           f"at offset {foot_off}")

        # 5. the tensor table, checked against the data region
        table = header.get("tensors")
        if not isinstance(table, list):
            raise _fail(p, "header 'tensors' must be a list")
        if len(table) != n_tensors:
            raise _fail(p, f"header lists {len(table)} tensors, weights block says {n_tensors}")
        spans = []
        for i, t in enumerate(table):
            info = self._check_tensor(i, t, data_nb)
            if info.name in self.tensors:
                raise _fail(p, f"tensor {info.name!r} appears twice in the tensor table")
            self.tensors[info.name] = info
            spans.append((info.offset, info.offset + info.nbytes, info.name))
        spans.sort()
        for (a0, a1, an), (b0, _, bn) in zip(spans, spans[1:]):
            if b0 < a1:
                raise _fail(p, f"tensors {an!r} ({a0}..{a1}) and {bn!r} (from {b0}) overlap")
        if self.kind == "lm":
            self._check_lm_tensors()

    def _check_header_fields(self) -> None:
        h, p = self.header, self.path
        if h.get("format") != "bullet":
            raise _fail(p, f"header 'format' is {h.get('format')!r}, expected 'bullet'")
        if h.get("version") != FORMAT_VERSION:
            raise _fail(p, f"format version {h.get('version')!r} is not supported (this reader reads {FORMAT_VERSION})")
        if h.get("kind") not in KINDS:
            raise _fail(p, f"header 'kind' is {h.get('kind')!r}, expected one of {KINDS}")
        sha = h.get("body_sha256")
        if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
            raise _fail(p, f"header 'body_sha256' must be 64 lowercase hex digits, got {sha!r}")
        for key in ("provenance", "tokenizer"):
            if not isinstance(h.get(key), dict):
                raise _fail(p, f"header '{key}' must be an object")
        if h["kind"] == "lm":
            try:
                h["arch"] = validate_lm_arch(h.get("arch"))
            except FormatError as exc:
                raise _fail(p, str(exc)) from None

    def _check_bulk(self) -> None:
        n_tok, max_len, types_off, scores_off, offsets_off, pieces_off, pieces_nb = self._bulk
        p, raw = self.path, self._bulk_raw
        types = np.frombuffer(raw, np.uint8, n_tok, types_off)
        if n_tok and types.max() > TOKEN_CONTROL:
            bad = int(np.argmax(types > TOKEN_CONTROL))
            raise _fail(p, f"tokenizer entry {bad} has unknown type {types[bad]}")
        offs = np.frombuffer(raw, "<u4", n_tok + 1, offsets_off)
        if offs[0] != 0 or offs[-1] != pieces_nb:
            raise _fail(p, f"tokenizer piece offsets must run from 0 to {pieces_nb}, got {offs[0]}..{offs[-1]}")
        lens = np.diff(offs.astype(np.int64))
        if n_tok and lens.min() < 0:
            raise _fail(p, f"tokenizer piece offsets decrease at entry {int(np.argmax(lens < 0))}")
        if n_tok and lens.max() > max_len:
            raise _fail(p, f"tokenizer piece {int(np.argmax(lens))} is {lens.max()} bytes, longer than the "
                           f"declared maximum {max_len}")
        byte_bad = (types == TOKEN_BYTE) & (lens != 1)
        if byte_bad.any():
            raise _fail(p, f"tokenizer entry {int(np.argmax(byte_bad))} is a byte token but not 1 byte long")
        scores = np.frombuffer(raw, "<f4", n_tok, scores_off)
        if not np.all(np.isfinite(scores)):
            raise _fail(p, f"tokenizer score of entry {int(np.argmax(~np.isfinite(scores)))} is not finite")
        meta_n = self.header["tokenizer"].get("n_tokens")
        if meta_n != n_tok:
            raise _fail(p, f"header tokenizer.n_tokens is {meta_n!r}, tokenizer block holds {n_tok}")
        if self.kind == "lm" and self.header["arch"]["vocab_size"] != n_tok:
            raise _fail(p, f"arch.vocab_size {self.header['arch']['vocab_size']} differs from the "
                           f"{n_tok} tokens of the tokenizer block")

    def _check_tensor(self, i: int, t: Any, data_nb: int) -> TensorInfo:
        p = self.path
        if not isinstance(t, dict):
            raise _fail(p, f"tensor table entry {i} must be an object")
        name, dtype, shape, off, nb = (t.get(k) for k in ("name", "dtype", "shape", "offset", "nbytes"))
        if not isinstance(name, str) or not name or len(name) > 128:
            raise _fail(p, f"tensor table entry {i}: bad name {name!r}")
        where = f"tensor {name}"
        if dtype not in ("bq4", "f16", "f32"):
            raise _fail(p, f"{where}: dtype {dtype!r} is not one of bq4, f16, f32")
        if (not isinstance(shape, list) or not 1 <= len(shape) <= 2
                or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= MAX_DIM * 64 for s in shape)):
            raise _fail(p, f"{where}: shape {shape!r} must be a list of 1 or 2 positive integers")
        if dtype == "bq4" and len(shape) != 2:
            raise _fail(p, f"{where}: bq4 tensors are 2-D, got shape {shape}")
        for key, v in (("offset", off), ("nbytes", nb)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise _fail(p, f"{where}: {key} {v!r} must be a non-negative integer")
        if off % TENSOR_ALIGN:
            raise _fail(p, f"{where}: offset {off} is not a multiple of {TENSOR_ALIGN}")
        want = tensor_nbytes(dtype, tuple(shape))
        if nb != want:
            raise _fail(p, f"{where}: nbytes {nb} does not match dtype {dtype} and shape {shape} ({want} bytes)")
        if off + nb > data_nb:
            raise _fail(p, f"{where}: offset {off:_} + {nb:_} bytes runs past the end of the tensor data "
                           f"({data_nb:_} bytes, file of {self.size:_} bytes)")
        return TensorInfo(name, dtype, tuple(shape), off, nb)

    def _check_lm_tensors(self) -> None:
        want = lm_tensor_shapes(self.header["arch"])
        for name, shape in want.items():
            info = self.tensors.get(name)
            if info is None:
                raise _fail(self.path, f"lm tensor {name!r} is missing")
            if info.shape != shape:
                raise _fail(self.path, f"tensor {name}: shape {list(info.shape)} does not match the "
                                       f"architecture, expected {list(shape)}")
            if len(shape) == 1 and info.dtype == "bq4":
                raise _fail(self.path, f"tensor {name}: vectors must be f32 or f16, not bq4")
        extra = set(self.tensors) - set(want)
        if extra:
            raise _fail(self.path, f"unexpected tensors for this architecture: {sorted(extra)[:5]}")

    # -- access ---------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.header["kind"]

    @property
    def arch(self) -> dict:
        return self.header.get("arch", {})

    @property
    def provenance(self) -> dict:
        return self.header["provenance"]

    @property
    def name(self) -> str:
        return str(self.provenance.get("name", Path(self.path).stem))

    @property
    def version(self) -> str:
        return str(self.provenance.get("version", "0"))

    def tensor(self, name: str) -> np.ndarray:
        """Zero-copy view: f32/f16 in their shape; bq4 as uint8 (rows, blocks_per_row * 20)."""
        info = self.tensors.get(name)
        if info is None:
            raise FormatError(f"{self.path}: no tensor named {name!r}")
        off = self.data_offset + info.offset
        if info.dtype == "bq4":
            rows, cols = info.shape
            return np.frombuffer(self._mm, np.uint8, info.nbytes, off).reshape(rows, bq4_row_blocks(cols) * BLOCK_BYTES)
        dt = np.dtype(DTYPES[info.dtype]).newbyteorder("<")
        return np.frombuffer(self._mm, dt, info.nbytes // dt.itemsize, off).reshape(info.shape)

    @cached_property
    def vocab(self) -> list[VocabEntry]:
        n_tok, _, types_off, scores_off, offsets_off, pieces_off, pieces_nb = self._bulk
        raw = self._bulk_raw
        types = np.frombuffer(raw, np.uint8, n_tok, types_off).tolist()
        scores = np.frombuffer(raw, "<f4", n_tok, scores_off).tolist()
        offs = np.frombuffer(raw, "<u4", n_tok + 1, offsets_off).tolist()
        blob = raw[pieces_off: pieces_off + pieces_nb]
        return [VocabEntry(blob[offs[i]: offs[i + 1]], scores[i], types[i]) for i in range(n_tok)]

    @cached_property
    def tokenizer(self) -> Tokenizer:
        return Tokenizer(self.vocab, self.header["tokenizer"])

    def body_sha256(self) -> str:
        """SHA-256 of the body, read with pread (hashing does not make the mapping resident)."""
        h = hashlib.sha256()
        off = self.body_offset
        while off < self.size:
            chunk = os.pread(self._fd, min(1 << 20, self.size - off), off)
            if not chunk:
                raise _fail(self.path, f"file shrank while hashing (at offset {off})")
            h.update(chunk)
            off += len(chunk)
        return h.hexdigest()

    def verify_body(self) -> None:
        """Recompute the body checksum; FormatError when it differs from the header's."""
        got = self.body_sha256()
        if got != self.header["body_sha256"]:
            raise FormatError(f"{self.path}: body SHA-256 {got} does not match the header's "
                              f"{self.header['body_sha256']} (file corrupted or modified)")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        try:
            self._mm.close()
        except BufferError:
            pass  # NumPy views still point into the mapping; it closes when they are gone

    def __enter__(self) -> "BulletFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- writer -------------------------------------------------------------------------------
def _encode_bulk(vocab: list[VocabEntry]) -> bytes:
    n = len(vocab)
    pieces = b"".join(e.piece for e in vocab)
    offs = np.zeros(n + 1, dtype="<u4")
    offs[1:] = np.cumsum([len(e.piece) for e in vocab], dtype=np.int64)
    types = np.array([e.type for e in vocab], dtype=np.uint8).tobytes()
    max_len = max((len(e.piece) for e in vocab), default=0)
    return b"".join([
        BULK_HEAD.pack(BULK_MAGIC, n, max_len, len(pieces)),
        types, b"\x00" * (align(n, 4) - n),
        np.array([e.score for e in vocab], dtype="<f4").tobytes(),
        offs.tobytes(),
        pieces,
    ])


def _prepare_tensor(name: str, spec: tuple) -> tuple[str, tuple[int, ...], bytes]:
    dtype = spec[0]
    if dtype == "bq4":
        if len(spec) == 3:
            blocks, shape = np.asarray(spec[1], dtype=np.uint8), tuple(int(s) for s in spec[2])
            if len(shape) != 2 or blocks.nbytes != bq4_nbytes(*shape):
                raise FormatError(f"tensor {name}: quantised blocks of {blocks.nbytes} bytes do not fit shape {shape}")
            return dtype, shape, np.ascontiguousarray(blocks).tobytes()
        arr = np.asarray(spec[1], dtype=np.float32)
        if arr.ndim != 2:
            raise FormatError(f"tensor {name}: bq4 needs a 2-D matrix, got shape {arr.shape}")
        return dtype, arr.shape, quantize_bq4(arr).tobytes()
    if dtype not in DTYPES:
        raise FormatError(f"tensor {name}: dtype {dtype!r} is not one of bq4, f16, f32")
    arr = np.ascontiguousarray(np.asarray(spec[1], dtype=np.dtype(DTYPES[dtype]).newbyteorder("<")))
    if arr.ndim not in (1, 2):
        raise FormatError(f"tensor {name}: only 1-D and 2-D tensors are stored, got shape {arr.shape}")
    return dtype, arr.shape, arr.tobytes()


def build_bullet(*, kind: str, tensors: dict, vocab: list[VocabEntry], tokenizer: dict,
                 provenance: dict, arch: dict | None = None, extra: dict | None = None) -> bytes:
    """The bytes of a .bullet file (see write_bullet)."""
    if kind not in KINDS:
        raise FormatError(f"kind {kind!r} is not one of {KINDS}")
    bulk = _encode_bulk(vocab)
    table, chunks, pos = [], [], 0
    for name, spec in tensors.items():
        dtype, shape, raw = _prepare_tensor(name, spec)
        start = align(pos, TENSOR_ALIGN)
        chunks.append(b"\x00" * (start - pos))
        chunks.append(raw)
        table.append({"name": name, "dtype": dtype, "shape": [int(s) for s in shape],
                      "offset": start, "nbytes": len(raw)})
        pos = start + len(raw)
    data = b"".join(chunks)
    wt_head = BWT_HEAD.pack(BWT_MAGIC, len(table), len(data))
    body = b"".join([
        bulk, b"\x00" * (align(len(bulk), BLOCK_ALIGN) - len(bulk)),
        wt_head, b"\x00" * (BLOCK_ALIGN - len(wt_head)),
        data, FOOTER,
    ])
    header: dict[str, Any] = {"format": "bullet", "version": FORMAT_VERSION, "kind": kind}
    if arch is not None:
        header["arch"] = validate_lm_arch(arch) if kind == "lm" else arch
    header["tokenizer"] = {**tokenizer, "n_tokens": len(vocab)}
    header["provenance"] = provenance
    header["tensors"] = table
    for k, v in (extra or {}).items():
        if k in header:
            raise FormatError(f"extra header key {k!r} would overwrite a reserved key")
        header[k] = v
    header["body_sha256"] = hashlib.sha256(body).hexdigest()
    head = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return head + b"\x00" * (align(len(head) + 4, HEADER_ALIGN) - len(head)) + body


def write_bullet(path: str | os.PathLike, **kwargs) -> Path:
    """Write a .bullet file atomically (temp file, fsync, rename). Keyword arguments as in
    build_bullet: kind, arch, tensors {name: (dtype, array) | ("bq4", blocks, (rows, cols))},
    vocab [VocabEntry], tokenizer (header metadata), provenance, extra (more header keys)."""
    data = build_bullet(**kwargs)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent or ".")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)   # mkstemp makes 0600; a model file is as readable as any file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
