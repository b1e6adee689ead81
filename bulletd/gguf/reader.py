"""A validating, zero-copy GGUF reader (GGUF versions 2 and 3, little-endian).

A GGUF file is untrusted input, like a .bullet file: every count, length, offset and shape is
checked against the file size before anything is read or points into the mapping, and any
problem raises FormatError naming what is wrong and where. Needs only the standard library and
NumPy (the `gguf` package is used for writing, bulletd.gguf.export).

    [magic "GGUF"][u32 version][u64 n_tensors][u64 n_kv]
    n_kv x      [string key][u32 value type][value]
    n_tensors x [string name][u32 n_dims][u64 ne[n_dims]][u32 ggml type][u64 offset]
    zero padding to general.alignment (default 32), then the tensor data; each tensor's offset
    is from the start of the data and a multiple of the alignment.

A string is [u64 length][bytes]; an array is [u32 element type][u64 count][elements].
ne[0] is the number of columns (the fastest-varying dimension): a (rows, cols) matrix has
ne = [cols, rows].
"""
from __future__ import annotations

import mmap
import os
import stat
import struct
from dataclasses import dataclass

import numpy as np

from ..errors import FormatError

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_TENSORS = 1 << 16        # far beyond any model; a lying count fails before it allocates
MAX_KV = 1 << 16
MAX_KEY_BYTES = 1 << 16
MAX_STRING_BYTES = 1 << 24
MAX_DIMS = 4
MAX_NE = 1 << 40

# metadata value types
T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32, T_BOOL = range(8)
T_STRING, T_ARRAY, T_UINT64, T_INT64, T_FLOAT64 = 8, 9, 10, 11, 12
_SCALAR = {T_UINT8: "<u1", T_INT8: "<i1", T_UINT16: "<u2", T_INT16: "<i2", T_UINT32: "<u4",
           T_INT32: "<i4", T_FLOAT32: "<f4", T_BOOL: "<u1", T_UINT64: "<u8", T_INT64: "<i8",
           T_FLOAT64: "<f8"}

# ggml tensor types this project reads: (block size in weights, bytes per block)
F32, F16, Q4_0, Q8_0 = 0, 1, 2, 8
TYPE_LAYOUT = {F32: (1, 4), F16: (1, 2), Q4_0: (32, 18), Q8_0: (32, 34)}
TYPE_NAMES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
              10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
              17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
              23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M",
              30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4"}


def type_name(t: int) -> str:
    return TYPE_NAMES.get(t, f"type {t}")


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    type: int                  # ggml type (F32, F16, Q4_0, Q8_0)
    ne: tuple[int, ...]        # ggml order: ne[0] = columns
    offset: int                # from the start of the tensor data
    nbytes: int

    @property
    def shape(self) -> tuple[int, ...]:
        """NumPy order: (rows, cols) for a matrix."""
        return tuple(reversed(self.ne))

    @property
    def type_name(self) -> str:
        return type_name(self.type)


def tensor_nbytes(ggml_type: int, ne: tuple[int, ...]) -> int:
    block, size = TYPE_LAYOUT[ggml_type]
    n = 1
    for d in ne[1:]:
        n *= d
    return n * (ne[0] // block) * size


class GGUFFile:
    """A memory-mapped, validated GGUF file.

    metadata: {key: value}; a value is an int, float, bool, bytes (a string, undecoded) or, for
    an array, a NumPy array (numbers) or a list of bytes (strings). str_value() decodes one.
    tensors:  {name: GGUFTensor}, in file order. tensor_data(name) is a uint8 view of its bytes.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise FormatError(f"{path}: cannot open: {exc.strerror}") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise self._fail("not a regular file")
            self.size = st.st_size
            if self.size < 24:
                raise self._fail(f"file of {self.size} bytes is too small to be a GGUF file")
            self._mm = mmap.mmap(fd, self.size, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        try:
            self._walk()
        except BaseException:
            self.close()
            raise

    def _fail(self, what: str) -> FormatError:
        return FormatError(f"{self.path}: {what}")

    # -- low-level reads, each checked against the end of the file ---------------------------
    def _take(self, n: int, what: str) -> int:
        """Reserve n bytes at the cursor; returns their offset."""
        off = self._pos
        if n < 0 or off + n > self.size:
            raise self._fail(f"{what} at offset {off} needs {n} bytes, the file ends at {self.size} "
                             f"(truncated or a lying size)")
        self._pos = off + n
        return off

    def _u32(self, what: str) -> int:
        return struct.unpack_from("<I", self._mm, self._take(4, what))[0]

    def _u64(self, what: str) -> int:
        return struct.unpack_from("<Q", self._mm, self._take(8, what))[0]

    def _string(self, what: str, limit: int = MAX_STRING_BYTES) -> bytes:
        n = self._u64(f"length of {what}")
        if n > limit:
            raise self._fail(f"{what} at offset {self._pos - 8} claims {n:_} bytes, more than {limit:_}")
        off = self._take(n, what)
        return bytes(self._mm[off:off + n])

    def _value(self, vtype: int, what: str, in_array: bool = False):
        if vtype == T_STRING:
            return self._string(what)
        if vtype == T_ARRAY:
            if in_array:
                raise self._fail(f"{what}: arrays of arrays are not supported")
            etype = self._u32(f"element type of {what}")
            count = self._u64(f"element count of {what}")
            if etype == T_STRING:
                if count > (self.size - self._pos) // 8:
                    raise self._fail(f"{what} claims {count:_} strings, more than the "
                                     f"{self.size - self._pos:_} bytes left in the file can hold")
                return [self._string(f"{what}[{i}]") for i in range(count)]
            if etype == T_ARRAY:
                raise self._fail(f"{what}: arrays of arrays are not supported")
            dt = _SCALAR.get(etype)
            if dt is None:
                raise self._fail(f"{what}: unknown array element type {etype}")
            size = np.dtype(dt).itemsize
            if count > (self.size - self._pos) // size:
                raise self._fail(f"{what} claims {count:_} elements of {size} bytes, more than the "
                                 f"{self.size - self._pos:_} bytes left in the file")
            off = self._take(count * size, what)
            arr = np.frombuffer(self._mm, dt, count, off).copy()
            if etype == T_BOOL:
                arr = arr.astype(bool)
            return arr
        dt = _SCALAR.get(vtype)
        if dt is None:
            raise self._fail(f"{what}: unknown value type {vtype}")
        off = self._take(np.dtype(dt).itemsize, what)
        v = np.frombuffer(self._mm, dt, 1, off)[0]
        if vtype == T_BOOL:
            if v > 1:
                raise self._fail(f"{what}: boolean value {int(v)} is neither 0 nor 1")
            return bool(v)
        return float(v) if vtype in (T_FLOAT32, T_FLOAT64) else int(v)

    # -- the walk ---------------------------------------------------------------------------
    def _walk(self) -> None:
        self._pos = 0
        magic = bytes(self._mm[0:4])
        if magic != MAGIC:
            raise self._fail(f"magic {magic!r}, expected {MAGIC!r}: not a GGUF file")
        self._pos = 4
        version = self._u32("version")
        if version not in VERSIONS:
            hint = " (a big-endian file?)" if version > 0xFFFF else ""
            raise self._fail(f"GGUF version {version} is not supported (this reader reads "
                             f"{', '.join(map(str, VERSIONS))}){hint}")
        self.version = version
        n_tensors = self._u64("tensor count")
        n_kv = self._u64("metadata count")
        if n_tensors > MAX_TENSORS:
            raise self._fail(f"tensor count {n_tensors:_} is above the limit {MAX_TENSORS:_}")
        if n_kv > MAX_KV:
            raise self._fail(f"metadata count {n_kv:_} is above the limit {MAX_KV:_}")

        self.metadata: dict = {}
        self.value_types: dict[str, int] = {}
        for i in range(n_kv):
            raw = self._string(f"metadata key {i}", MAX_KEY_BYTES)
            try:
                key = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise self._fail(f"metadata key {i} is not UTF-8: {raw[:40]!r}") from None
            if key in self.metadata:
                raise self._fail(f"metadata key {key!r} appears twice")
            vtype = self._u32(f"value type of {key}")
            self.value_types[key] = vtype
            self.metadata[key] = self._value(vtype, key)

        align = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if (self.value_types.get("general.alignment", T_UINT32) != T_UINT32 or not isinstance(align, int)
                or align <= 0 or align & (align - 1) or align > 1 << 16):
            raise self._fail(f"general.alignment {align!r} must be a u32 power of two up to 65536")
        self.alignment = align

        infos = []
        for i in range(n_tensors):
            raw = self._string(f"name of tensor {i}", 256)
            try:
                name = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise self._fail(f"name of tensor {i} is not UTF-8: {raw[:40]!r}") from None
            n_dims = self._u32(f"dimension count of tensor {name}")
            if not 1 <= n_dims <= MAX_DIMS:
                raise self._fail(f"tensor {name}: {n_dims} dimensions, expected 1..{MAX_DIMS}")
            ne = tuple(self._u64(f"dimension {d} of tensor {name}") for d in range(n_dims))
            ttype = self._u32(f"type of tensor {name}")
            off = self._u64(f"offset of tensor {name}")
            infos.append((name, ne, ttype, off))

        self.data_offset = (self._pos + align - 1) // align * align
        if self.data_offset > self.size:
            raise self._fail(f"tensor data would start at offset {self.data_offset}, past the end of "
                             f"the file ({self.size} bytes)")
        data_nb = self.size - self.data_offset
        self.tensors: dict[str, GGUFTensor] = {}
        spans = []
        for name, ne, ttype, off in infos:
            t = self._check_tensor(name, ne, ttype, off, data_nb)
            if name in self.tensors:
                raise self._fail(f"tensor {name!r} appears twice")
            self.tensors[name] = t
            spans.append((t.offset, t.offset + t.nbytes, name))
        spans.sort()
        for (a0, a1, an), (b0, _, bn) in zip(spans, spans[1:]):
            if b0 < a1:
                raise self._fail(f"tensors {an!r} ({a0}..{a1}) and {bn!r} (from {b0}) overlap")

    def _check_tensor(self, name, ne, ttype, off, data_nb) -> GGUFTensor:
        if any(not 0 < d <= MAX_NE for d in ne):
            raise self._fail(f"tensor {name}: dimensions {list(ne)} must be in 1..{MAX_NE}")
        if ttype not in TYPE_LAYOUT:
            raise self._fail(f"tensor {name}: type {type_name(ttype)} is not supported "
                             f"(supported: F32, F16, Q4_0, Q8_0)")
        block, _ = TYPE_LAYOUT[ttype]
        if ne[0] % block:
            raise self._fail(f"tensor {name}: {ne[0]} columns is not a multiple of the "
                             f"{type_name(ttype)} block of {block}")
        if off % self.alignment:
            raise self._fail(f"tensor {name}: offset {off} is not a multiple of the alignment {self.alignment}")
        n = 1
        for d in ne:
            n *= d
            if n > MAX_NE:
                raise self._fail(f"tensor {name}: {list(ne)} holds more than {MAX_NE:_} values")
        nb = tensor_nbytes(ttype, ne)
        if off + nb > data_nb:
            raise self._fail(f"tensor {name}: offset {off:_} + {nb:_} bytes runs past the end of the "
                             f"tensor data ({data_nb:_} bytes from offset {self.data_offset:_}): truncated?")
        return GGUFTensor(name, ttype, ne, off, nb)

    # -- access -----------------------------------------------------------------------------
    def str_value(self, key: str, default: str | None = None) -> str | None:
        """A string value decoded as UTF-8; FormatError when it is not a string."""
        if key not in self.metadata:
            return default
        v = self.metadata[key]
        if self.value_types[key] != T_STRING:
            raise self._fail(f"metadata {key} must be a string")
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            raise self._fail(f"metadata {key} is not UTF-8") from None

    def int_value(self, key: str, default: int | None = None) -> int | None:
        """An integer value (any integer type); FormatError for any other type."""
        if key not in self.metadata:
            return default
        if self.value_types[key] not in (T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32,
                                         T_UINT64, T_INT64):
            raise self._fail(f"metadata {key} must be an integer, got {self._describe(key)}")
        return self.metadata[key]

    def float_value(self, key: str, default: float | None = None) -> float | None:
        if key not in self.metadata:
            return default
        if self.value_types[key] not in (T_FLOAT32, T_FLOAT64):
            raise self._fail(f"metadata {key} must be a float, got {self._describe(key)}")
        return self.metadata[key]

    def bool_value(self, key: str, default: bool | None = None) -> bool | None:
        if key not in self.metadata:
            return default
        if self.value_types[key] != T_BOOL:
            raise self._fail(f"metadata {key} must be a boolean, got {self._describe(key)}")
        return self.metadata[key]

    def _describe(self, key: str) -> str:
        t = self.value_types[key]
        return "an array" if t == T_ARRAY else "a string" if t == T_STRING else f"value type {t}"

    def tensor_data(self, name: str) -> np.ndarray:
        """The tensor's bytes, a uint8 view into the mapping."""
        t = self.tensors[name]
        return np.frombuffer(self._mm, np.uint8, t.nbytes, self.data_offset + t.offset)

    def close(self) -> None:
        mm = getattr(self, "_mm", None)
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # NumPy views still point into the mapping; it closes when they are gone

    def __enter__(self) -> "GGUFFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
