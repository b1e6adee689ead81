"""The fuzz targets: each takes one input (bytes) the way a stranger could send it, runs the real
code on it, and returns quietly when that code accepts the input or refuses it with its
documented error. Anything else escaping a target (another exception, a broken invariant as an
AssertionError, a crash or sanitizer report in the native code, a hang) is a bug.

    bullet     a .bullet file: BulletFile.open, the mother for a router, or the native model
               built and run for a few tokens for an lm
    tokenizer  a BULK tokenizer block (in a minimal file) and a text: encode, decode, streaming
    request    a Unix-socket byte stream: framing, msgpack, request validation, a request's schema
               compiled; the same bytes as an MQTT payload (msgpack or JSON)
    ota        OTA offer and chunk messages fed to a real receiver with its staging directory
    grammar    a JSON schema compiled to a grammar and a text run through it; an accepted text
               must be JSON that the schema validates
    gguf       a GGUF file: bullet import-gguf, then the .bullet it wrote opened, checked and run
               for a few tokens

`seeds()` gives each target's starting corpus, made from the project's own writers.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

import msgpack

from bulletd.errors import FormatError, ModelError, RequestError


def _scratch(prefix: str) -> Path:
    """A private directory for a target's files: tmpfs when there is one (no disk writes)."""
    return Path(tempfile.mkdtemp(prefix=f"bullet-fuzz-{prefix}-", dir=os.environ.get("BULLET_FUZZ_SCRATCH")
                                 or scratch_base()))


def scratch_base() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class Target:
    name = ""
    max_len = 4096

    def setup(self) -> None:
        """One-time preparation in the fuzzing process."""

    def run(self, data: bytes) -> None:
        raise NotImplementedError

    def seeds(self) -> list[bytes]:
        raise NotImplementedError

    def cleanup(self) -> None:
        d = getattr(self, "dir", None)
        if d is not None:
            shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------------------ bullet files

def _micro_lm(name: str = "micro", **extra) -> bytes:
    """The smallest useful lm: 8 tokens, tied embeddings, one layer (about 6 KB)."""
    from bulletd.format import TOKEN_CONTROL, TOKEN_NORMAL, VocabEntry
    from bulletd.format.container import build_bullet
    from bulletd.format.synth import random_lm_tensors
    arch = dict(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, hidden_dim=40, vocab_size=8, max_seq_len=8,
                tied_embeddings=True)
    vocab = [VocabEntry(b"<s>", 0.0, TOKEN_CONTROL), VocabEntry(b"</s>", 0.0, TOKEN_CONTROL)]
    vocab += [VocabEntry(p, -float(i), TOKEN_NORMAL) for i, p in enumerate([b"a", b"b", b" ", b"ab", b" a", b"ba"])]
    return build_bullet(kind="lm", arch=arch, tensors=random_lm_tensors(arch, seed=0, **extra), vocab=vocab,
                        tokenizer={"kind": "bpe", "bos_id": 0, "eos_id": 1},
                        provenance={"name": name, "version": "1.0.0", "created": "2026-01-01T00:00:00+00:00"})


def _micro_router() -> bytes:
    import numpy as np
    from bulletd.format import TOKEN_CONTROL, VocabEntry
    from bulletd.format.container import build_bullet
    rng = np.random.default_rng(0)
    d, h, labels = 16, 4, ["a", "b"]
    tensors = {"router.w1": ("f32", rng.standard_normal((d, h)).astype(np.float32)),
               "router.b1": ("f32", np.zeros(h, np.float32)),
               "router.w2": ("f32", rng.standard_normal((h, 2)).astype(np.float32)),
               "router.b2": ("f32", np.zeros(2, np.float32))}
    return build_bullet(kind="router", tensors=tensors, vocab=[VocabEntry(b"<s>", 0.0, TOKEN_CONTROL)],
                        tokenizer={"kind": "none"}, provenance={"name": "mother", "version": "1"},
                        extra={"router": {"labels": labels, "feature_dim": d, "hidden": h, "threshold": 0.5}})


class BulletTarget(Target):
    name = "bullet"
    max_len = 16384

    def setup(self) -> None:
        self.dir = _scratch(self.name)
        self.path = self.dir / "input.bullet"

    def run(self, data: bytes) -> None:
        from bulletd.format import BulletFile
        from bulletd.router import Mother
        from bulletd.runtime import GenerationSettings, load_model
        self.path.write_bytes(data)
        try:
            bf = BulletFile.open(self.path)
        except FormatError:
            return
        try:
            if bf.kind == "router":
                m = Mother(bf)
                m.probs(m.hidden(m.features("turn on the light")))
                return
            bf.tokenizer.decode(range(len(bf.vocab)))
            model = load_model(bf, backend="native")
            try:
                gen = model.generate("ab a", GenerationSettings(max_tokens=4, temperature=0.0, seed=0))
                "".join(gen)
                gen = model.generate("ba", GenerationSettings(max_tokens=3, temperature=0.9, seed=1))
                "".join(gen)
            finally:
                model.close()
        except (FormatError, ModelError, RequestError):
            pass
        finally:
            bf.close()

    def seeds(self) -> list[bytes]:
        return [_micro_lm(), _micro_lm(dtype="f16"), _micro_router()]


# ------------------------------------------------------------------------------ tokenizer

class TokenizerTarget(Target):
    """Input: u16 text length, one flags byte, the text (UTF-8, invalid bytes as lone
    surrogates, as a JSON prompt can carry them), then the BULK block."""
    name = "tokenizer"

    def setup(self) -> None:
        self.dir = _scratch(self.name)
        self.path = self.dir / "tok.bullet"

    @staticmethod
    def file_with(block: bytes, meta: dict) -> bytes:
        from bulletd.format.container import (BLOCK_ALIGN, BULK_HEAD, BWT_HEAD, BWT_MAGIC, FOOTER,
                                              HEADER_ALIGN, align)
        n_tok = BULK_HEAD.unpack_from(block)[1] if len(block) >= BULK_HEAD.size else 0
        header = {"format": "bullet", "version": 1, "kind": "router", "body_sha256": "0" * 64,
                  "provenance": {}, "tokenizer": {**meta, "n_tokens": n_tok}, "tensors": []}
        head = json.dumps(header).encode()
        head += b"\x00" * (align(len(head) + 4, HEADER_ALIGN) - len(head))
        wt = BWT_HEAD.pack(BWT_MAGIC, 0, 0)
        return (head + block + b"\x00" * (align(len(block), BLOCK_ALIGN) - len(block))
                + wt + b"\x00" * (BLOCK_ALIGN - len(wt)) + FOOTER)

    def run(self, data: bytes) -> None:
        from bulletd.format import BulletFile
        if len(data) < 3:
            return
        n, flags = struct.unpack_from("<HB", data)
        text = data[3:3 + n].decode("utf-8", "surrogateescape")
        block = data[3 + n:]
        meta = {"add_dummy_prefix": bool(flags & 1)}
        if flags & 2:
            meta["bos_id"] = (flags >> 2) & 7
        if flags & 32:
            meta["eos_id"] = (flags >> 6) & 3
        self.path.write_bytes(self.file_with(block, meta))
        try:
            with BulletFile.open(self.path) as bf:
                tok = bf.tokenizer
                ids = tok.encode(text, bos=True, eos=True)
        except FormatError:
            return
        except RequestError as exc:
            assert exc.code == "bad_request" and "surrogate" in exc.message, exc
            return
        assert all(0 <= i < len(tok) for i in ids), ids
        whole = tok.decode(ids)
        dec = tok.stream_decoder()
        one = "".join(dec.push(i) for i in ids) + dec.flush()
        dec = tok.stream_decoder()
        many = dec.push_many(ids) + dec.flush()
        assert whole == one == many, (whole, one, many)

    def seeds(self) -> list[bytes]:
        from bulletd.format.container import _encode_bulk
        from bulletd.format.synth import byte_vocab
        from bulletd.format import TOKEN_CONTROL, TOKEN_NORMAL, VocabEntry
        small = [VocabEntry(b"<s>", 0.0, TOKEN_CONTROL), VocabEntry(b"</s>", 0.0, TOKEN_CONTROL)]
        small += [VocabEntry(p, -float(i), TOKEN_NORMAL) for i, p in enumerate([b"a", b"b", b" ", b"ab", b" a"])]
        out = []
        for text, flags, vocab in ((b"ab ba", 2 | (0 << 2) | 32 | (1 << 6), small),
                                   ("नमस्कार, hello".encode(), 3 | (1 << 2), byte_vocab(300)),
                                   (b"a\xffb \xe0\xa4", 0, byte_vocab(259))):
            out.append(struct.pack("<HB", len(text), flags) + text + _encode_bulk(vocab))
        return out


# ------------------------------------------------------------------------------ requests

class RequestTarget(Target):
    """Input: the bytes a Unix-socket peer sends (4-byte length frames of msgpack). Each frame
    goes through decoding, request validation, a schema's check and compilation, and the prompt
    through a tokenizer, as bulletd does before generation; then the same bytes as one MQTT
    payload (content type by sniffing, then forced JSON)."""
    name = "request"

    def setup(self) -> None:
        from bulletd.daemon.config import LimitsConfig
        from bulletd.format import Tokenizer
        from bulletd.format.synth import byte_vocab
        self.limits = LimitsConfig(max_request_bytes=4096, max_tokens=256, max_prompt_chars=2048)
        self.tok = Tokenizer(byte_vocab(300), {"bos_id": 1, "eos_id": 2})

    def request(self, obj) -> None:
        """What bulletd does with a decoded request up to generation, and its reply encoded
        both ways (the id echoed as the transports do): a reply must always be sendable."""
        from bulletd.agents.agent import make_grammar
        from bulletd.agents.tools import check_schema
        from bulletd.daemon.protocol import (ERROR_CODES, encode_payload, error_reply, parse_request, reply_id,
                                             wire_error)
        from bulletd.errors import BulletError
        rid = reply_id(obj, (str, int))
        try:
            if not isinstance(obj, dict):
                raise RequestError("bad_request", "not a map")
            req = parse_request(obj, self.limits)
            if req.reply_to is not None:
                req.reply_to.encode("utf-8")
            reply = {"ok": True, "final": True, "op": req.op}
            if req.op == "generate":
                try:   # the settings a 64-token child would run with, as the daemon fits them
                    req.generation.fit(64)
                except BulletError as exc:
                    raise wire_error(exc) from None
                if req.schema is not None:
                    check_schema(req.schema, "the request's")
                if req.schema is not None or req.format is not None:
                    make_grammar(req.schema, req.format, req.prompt)
                ids = self.tok.encode(req.prompt)
                reply["text"] = self.tok.decode(ids)
        except RequestError as exc:
            assert exc.code in ERROR_CODES, exc.code
            reply = error_reply(exc.code, exc.message)
        reply.update(id=rid, seq=0)
        for ct in ("application/json", "application/msgpack"):
            encode_payload(reply, ct)

    def run(self, data: bytes) -> None:
        from bulletd.daemon.protocol import decode_msgpack, decode_payload, split_frames
        buf = bytearray(data)
        bodies, _ = split_frames(buf, self.limits.max_request_bytes)
        for body in bodies:
            try:
                obj = decode_msgpack(body, "frame")
            except RequestError:
                continue
            self.request(obj)
        for ct in (None, "application/json"):
            try:
                obj, _ = decode_payload(data, ct)
            except RequestError:
                continue
            self.request(obj)

    def seeds(self) -> list[bytes]:
        from bulletd.daemon.protocol import pack_frame
        schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8, "x-copy": True},
                                                   "n": {"type": "integer", "minimum": 0, "maximum": 9}},
                  "required": ["n"]}
        reqs = [{"op": "generate", "id": 1, "child": "tiny", "prompt": "hello", "max_tokens": 8, "temperature": 0.5,
                 "top_k": 4, "top_p": 0.9, "seed": 3, "stop": ["\n"], "stream": True, "deadline": 2.5},
                {"op": "generate", "id": "x", "prompt": "turn on the kitchen light", "schema": schema},
                {"op": "generate", "prompt": "a", "format": "json", "act": False},
                {"op": "load", "name": "tiny", "path": "tiny.bullet"},
                {"op": "route", "prompt": "what is 2+2", "reply_to": "bullet/replies/1"},
                {"op": "list"}, {"op": "ping", "id": 7}]
        out = [b"".join(pack_frame(r) for r in reqs[:3]), pack_frame(reqs[3]) + b"\x00\x00\x01"]
        out += [msgpack.packb(r) for r in reqs[3:]]
        out += [json.dumps(r).encode() for r in reqs[:3]]
        out += [b'{"id":"a\\ud800","prompt":"x"}', b'{"prompt":"\\udcff","child":"t"}',
                b'{"prompt":"\\ud83d\\ude00","max_tokens":1e400,"deadline":1' + b"0" * 400 + b'}']
        return out


# ------------------------------------------------------------------------------ OTA

class OtaTarget(Target):
    """Input: a sequence of messages, each [topic byte][u16 length][payload]; topic byte even =
    the device's offer topic, odd = its data topic. A fresh receiver (real trust store, real
    staging directory) gets them in order."""
    name = "ota"
    max_len = 8192

    def setup(self) -> None:
        from bulletd.signing import TrustStore, generate_keypair, load_private_key, make_manifest, sign_manifest
        self.dir = _scratch(self.name)
        keys = self.dir / "keys"
        keys.mkdir()
        priv, pub = generate_keypair("fuzz", keys)
        self.key = load_private_key(priv)
        self.trust = TrustStore(pub)
        self.file = self.dir / "micro.bullet"
        self.file.write_bytes(_micro_lm(name="micro"))
        self.signed = sign_manifest(make_manifest(self.file, "micro", "1.0.0"), self.key)
        self.n = 0

    def run(self, data: bytes) -> None:
        asyncio.run(self._run(data))

    async def _run(self, data: bytes) -> None:
        from bulletd.ota import protocol as P
        from bulletd.ota.receiver import OtaConfig, OtaReceiver
        self.n += 1
        root = self.dir / f"rx{self.n}"
        try:
            rx = OtaReceiver(OtaConfig(device="dev1", smoke_test=False), self.trust, root / "models", root / "ota")
            pos = 0
            while pos + 3 <= len(data):
                kind, ln = struct.unpack_from("<BH", data, pos)
                payload = data[pos + 3: pos + 3 + ln]
                pos += 3 + ln
                topic = rx.topic("data" if kind & 1 else "offer")
                try:
                    body = P.unpack(payload, topic)
                    if kind & 1:
                        await rx._on_chunk(body, topic)
                    else:
                        await rx._on_offer(body, topic)
                except P.OtaError as exc:
                    assert exc.reason in P.REASONS
            for t in list(rx._tasks):
                try:
                    await asyncio.wait_for(t, 10)
                except P.OtaError:
                    pass
            if rx.active is not None:
                a = rx.active
                if a.flushing is not None:
                    await a.flushing
                a.transfer.close()
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def seeds(self) -> list[bytes]:
        from bulletd.ota import protocol as P
        data = self.file.read_bytes()
        cs = P.MIN_CHUNK * 2

        def msg(kind: int, m: dict) -> bytes:
            b = P.pack(m)
            return struct.pack("<BH", kind, len(b)) + b

        offer = P.make_offer("push-1", self.signed, cs)
        chunks = [P.make_chunk("push-1", i, data[i * cs:(i + 1) * cs]) for i in range(P.n_chunks_for(len(data), cs))]
        whole = msg(0, offer) + b"".join(msg(1, c) for c in chunks)
        part = msg(0, offer) + msg(1, chunks[0]) + msg(1, chunks[0]) + msg(0, dict(offer, chunk_size=P.MIN_CHUNK))
        bad = msg(0, dict(offer, n_chunks=99)) + msg(1, dict(chunks[-1], crc=1)) + msg(0, {"v": 1, "type": "offer"})
        return [whole, part, bad]


# ------------------------------------------------------------------------------ grammar

class GrammarTarget(Target):
    """Input: a JSON schema, a NUL byte, then a text. The schema is compiled (copy source = the
    text); the text is run through the automaton; an accepted text must parse as JSON and
    satisfy the schema (jsonschema)."""
    name = "grammar"

    def run(self, data: bytes) -> None:
        from bulletd.runtime import grammar as G
        raw, _, text = data.partition(b"\x00")
        try:
            schema = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return
        text_s = text.decode("utf-8", "replace")
        G._CORES.clear()
        try:
            g = G.grammar_for_request(None, schema, copy_source=text_s) if isinstance(schema, dict) \
                else G.grammar_for_request(schema, None, copy_source=text_s)
        except G.GrammarError:
            return
        if g is None:
            return
        prefix = g.is_prefix(text)
        ok = g.accepts(text)
        assert prefix or not ok, "accepted a text that is not a viable prefix"
        if ok:
            import jsonschema
            doc = json.loads(text.decode("utf-8"))
            if isinstance(schema, dict):
                jsonschema.validate(doc, schema)

    def seeds(self) -> list[bytes]:
        from bulletd.agents.tools import TOOLS
        out = []
        for tool in TOOLS.values():
            out.append(json.dumps(tool.schema).encode() + b"\x00")
        out.append(json.dumps(TOOLS["calc"].schema).encode() + b'\x00{"expr":"2+2"}')
        out.append(b'{"type":"object","properties":{"a":{"type":"number","minimum":-1.5,"exclusiveMaximum":20},'
                   b'"b":{"enum":["x",1,null,[true]]},"c":{"type":"array","items":{"type":"boolean"},"maxItems":3}},'
                   b'"required":["a"]}\x00{"a":3.25,"c":[true,false]}')
        out.append(b'{"anyOf":[{"type":"string","minLength":2,"maxLength":4},{"type":"integer","minimum":10}]}'
                   b'\x00"\\u00e9t\xc3\xa9"')
        out.append(b'"json"\x00{"a":[1,2.5e3,"x",{"b":null}]}')
        return out


# ------------------------------------------------------------------------------ gguf files

def _foreign_gguf(path: Path) -> None:
    """A GGUF as another tool writes it: no Bullet header, Q8_0 and F16 matrices, a byte-level
    BPE tokenizer with merges."""
    import gguf
    import numpy as np
    from bulletd.format.arch import check_arch, tensor_shapes
    from bulletd.gguf.mapping import _bytes_to_unicode, gguf_name
    table = _bytes_to_unicode()

    def enc(b: bytes) -> bytes:
        return "".join(table[x] for x in b).encode()
    toks = [b"<s>", b"</s>"] + [enc(bytes([b])) for b in range(256)] + [enc(b"ab"), enc(b" a")]
    arch = check_arch(dict(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, hidden_dim=64,
                           vocab_size=len(toks), max_seq_len=8))
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(8)
    w.add_embedding_length(32)
    w.add_block_count(1)
    w.add_feed_forward_length(64)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(toks)
    w.add_token_types([3, 3] + [1] * (len(toks) - 2))
    w.add_token_merges([enc(b"a") + b" " + enc(b"b"), enc(b" ") + b" " + enc(b"a")])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    rng = np.random.default_rng(0)
    for i, (name, shape) in enumerate(tensor_shapes(arch).items()):
        a = rng.standard_normal(shape).astype(np.float32)
        if len(shape) == 1:
            w.add_tensor(gguf_name(name), a)
        elif i % 2:
            w.add_tensor(gguf_name(name), a.astype(np.float16))
        else:
            q = gguf.GGMLQuantizationType.Q8_0
            w.add_tensor(gguf_name(name), gguf.quants.quantize(a, q), raw_dtype=q)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


class GgufTarget(Target):
    name = "gguf"
    max_len = 49152

    def setup(self) -> None:
        self.dir = _scratch(self.name)
        self.path = self.dir / "input.gguf"
        self.out = self.dir / "out.bullet"

    def run(self, data: bytes) -> None:
        from bulletd.format import BulletFile
        from bulletd.gguf.importer import import_gguf
        from bulletd.runtime import GenerationSettings, load_model
        self.path.write_bytes(data)
        try:
            import_gguf(self.path, self.out)
        except FormatError:
            return
        with BulletFile.open(self.out) as bf:      # what the importer wrote must be a valid file
            bf.verify_body()
            try:
                model = load_model(bf, backend="native")
            except (FormatError, ModelError):      # e.g. a context whose KV cache is over the cap
                return
            try:
                "".join(model.generate("ab a", GenerationSettings(max_tokens=3, temperature=0.0, seed=0)))
            except (FormatError, ModelError, RequestError):    # e.g. a vocabulary that cannot encode the text
                pass
            finally:
                model.close()

    def seeds(self) -> list[bytes]:
        from bulletd.gguf.export import export_gguf
        d = _scratch("gguf-seeds")
        try:
            out = []
            for i, dtype in enumerate(("bq4", "f16", "f32")):      # bq4: w2's rows of 40 are padded
                (d / f"{i}.bullet").write_bytes(_micro_lm(dtype=dtype))
                export_gguf(d / f"{i}.bullet", d / f"{i}.gguf")
                out.append((d / f"{i}.gguf").read_bytes())
            _foreign_gguf(d / "foreign.gguf")
            out.append((d / "foreign.gguf").read_bytes())
            return out
        finally:
            shutil.rmtree(d, ignore_errors=True)


TARGETS: dict[str, type[Target]] = {t.name: t for t in
                                     (BulletTarget, TokenizerTarget, RequestTarget, OtaTarget, GrammarTarget,
                                      GgufTarget)}
