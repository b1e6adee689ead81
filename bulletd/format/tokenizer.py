"""The tokenizer stored in a .bullet file's BULK block: vocabulary, encoding, streaming decoding.

Encoding rule (docs/BULLET_SPEC.md, "Tokenizer"):
1. with `add_dummy_prefix`, a non-empty text gets one leading space;
2. the text is cut into chunks: a run of whitespace followed by a run of non-whitespace, so
   merges never cross a chunk boundary;
3. inside a chunk, each character becomes the NORMAL token of its UTF-8 bytes when one exists,
   else one BYTE token per byte (byte fallback: any text encodes);
4. repeatedly, the adjacent pair whose concatenation is a NORMAL piece with the highest score
   is merged (ties: the leftmost pair), until no pair merges.
"""
from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import Iterable

from ..errors import FormatError, RequestError

TOKEN_NORMAL = 0    # a piece of text (bytes)
TOKEN_BYTE = 1      # exactly one raw byte, for byte fallback
TOKEN_CONTROL = 2   # bos / eos / pad: no text

_CHUNK = re.compile(r"\s*\S+|\s+")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class VocabEntry:
    piece: bytes
    score: float = 0.0
    type: int = TOKEN_NORMAL


class Tokenizer:
    """Encode text to ids and decode ids to text. Built from a vocabulary and header metadata.

    meta keys: bos_id, eos_id (ints or None), add_dummy_prefix (bool).
    """

    def __init__(self, vocab: list[VocabEntry], meta: dict | None = None):
        meta = meta or {}
        self.vocab = vocab
        self.bos_id = meta.get("bos_id")
        self.eos_id = meta.get("eos_id")
        self.add_dummy_prefix = bool(meta.get("add_dummy_prefix", False))
        for key in ("bos_id", "eos_id"):
            v = meta.get(key)
            if v is not None and (not isinstance(v, int) or not 0 <= v < len(vocab)):
                raise FormatError(f"tokenizer {key} {v!r} is not a token id below {len(vocab)}")
        self._normal: dict[bytes, tuple[float, int]] = {}
        self._byte: dict[int, int] = {}
        for i, e in enumerate(vocab):
            if e.type == TOKEN_NORMAL and e.piece and e.piece not in self._normal:
                self._normal[e.piece] = (e.score, i)
            elif e.type == TOKEN_BYTE and len(e.piece) == 1 and e.piece[0] not in self._byte:
                self._byte[e.piece[0]] = i
        self._cache: dict[str, tuple[int, ...]] = {}
        # what each id decodes to (control tokens: nothing), for decoding many ids at once
        self._out_bytes = [b"" if e.type == TOKEN_CONTROL else e.piece for e in vocab]

    def __len__(self) -> int:
        return len(self.vocab)

    # -- encoding -------------------------------------------------------------------------
    def _encode_chunk(self, chunk: str) -> tuple[int, ...]:
        cached = self._cache.get(chunk)
        if cached is not None:
            return cached
        ids: list[int] = []
        pieces: list[bytes] = []
        for ch in chunk:
            b = ch.encode("utf-8")
            hit = self._normal.get(b)
            if hit is not None:
                ids.append(hit[1])
                pieces.append(b)
                continue
            for byte in b:
                tid = self._byte.get(byte)
                if tid is None:
                    raise FormatError(f"tokenizer has no piece for {ch!r} and no byte token 0x{byte:02x}")
                ids.append(tid)
                pieces.append(bytes([byte]))
        normal = self._normal
        while len(ids) > 1:
            best_score, best_i, best_id = None, -1, -1
            for i in range(len(ids) - 1):
                hit = normal.get(pieces[i] + pieces[i + 1])
                if hit is not None and (best_score is None or hit[0] > best_score):
                    best_score, best_i, best_id = hit[0], i, hit[1]
            if best_i < 0:
                break
            ids[best_i: best_i + 2] = [best_id]
            pieces[best_i: best_i + 2] = [pieces[best_i] + pieces[best_i + 1]]
        out = tuple(ids)
        if len(self._cache) < 200_000:
            self._cache[chunk] = out
        return out

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """Text -> token ids (with BOS first when `bos` and the vocabulary has one)."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}")
        bad = None if text.isascii() else _SURROGATE.search(text)
        if bad is not None:
            # a JSON "\ud800" escape or an undecodable byte of a command line: no UTF-8 exists
            raise RequestError("bad_request", f"text is not valid Unicode: a lone surrogate "
                               f"U+{ord(bad.group()):04X} at character {bad.start()}")
        ids: list[int] = []
        if bos and self.bos_id is not None:
            ids.append(self.bos_id)
        if self.add_dummy_prefix and text:
            text = " " + text
        for m in _CHUNK.finditer(text):
            ids.extend(self._encode_chunk(m.group(0)))
        if eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    # -- decoding -------------------------------------------------------------------------
    def piece_bytes(self, token_id: int) -> bytes:
        if not 0 <= token_id < len(self.vocab):
            raise FormatError(f"token id {token_id} out of range (vocabulary of {len(self.vocab)})")
        e = self.vocab[token_id]
        return b"" if e.type == TOKEN_CONTROL else e.piece

    def decode(self, ids: Iterable[int]) -> str:
        dec = self.stream_decoder()
        return "".join(dec.push(i) for i in ids) + dec.flush()

    def stream_decoder(self) -> "StreamDecoder":
        return StreamDecoder(self)


class StreamDecoder:
    """Turns ids into text as they come, holding back an incomplete UTF-8 sequence (a Devanagari
    character is 3 bytes and may be split across tokens) until it completes. Invalid bytes
    become U+FFFD."""

    def __init__(self, tok: Tokenizer):
        self._tok = tok
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._strip = tok.add_dummy_prefix   # the dummy prefix space is not part of the output

    def push(self, token_id: int) -> str:
        return self._text(self._dec.decode(self._tok.piece_bytes(token_id)))

    def push_many(self, token_ids) -> str:
        """The text of several ids at once: the same as joining push(i) for each."""
        pieces = self._tok._out_bytes
        if not isinstance(token_ids, (list, tuple)):
            token_ids = list(token_ids)          # an iterator is read once
        try:
            if min(token_ids, default=0) < 0:
                raise IndexError
            data = b"".join([pieces[i] for i in token_ids])
        except (IndexError, TypeError):
            for i in token_ids:                  # name the bad id the way push() does
                self._tok.piece_bytes(i)
            raise
        return self._text(self._dec.decode(data))

    def _text(self, text: str) -> str:
        if self._strip and text:
            self._strip = False
            if text.startswith(" "):
                text = text[1:]
        return text

    def flush(self) -> str:
        return self._dec.decode(b"", final=True)
