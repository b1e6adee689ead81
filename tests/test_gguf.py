"""GGUF export and import (bulletd.gguf) without llama.cpp: round trips byte for byte, BQ4 ==
Q4_0 weight for weight as the llama.cpp project's own Python package dequantises it, the padding
rule, F16 / Q8_0 imports with their error, foreign tokenizers, clear refusals, and the reader
against truncated and lying files. tests/test_gguf_llamacpp.py runs the files in llama.cpp.
"""
import functools
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _gguf_util import SMALL_ARCH, random_weights, write_gguf
from bulletd.errors import FormatError
from bulletd.format import BulletFile, dequantize_bq4
from bulletd.format.synth import write_random_lm
from bulletd.gguf import GGUFFile
from bulletd.gguf.export import export_gguf
from bulletd.gguf.importer import import_gguf
from bulletd.gguf.mapping import bq4_to_q4_0, gguf_name
from conftest import ROOT

gguf = pytest.importorskip("gguf")
CHILDREN = ROOT / "child_models"


def _tensor_bytes(path) -> dict:
    with BulletFile.open(path) as bf:
        return {n: (t.dtype, t.shape, bf.tensor(n).tobytes()) for n, t in bf.tensors.items()}


# -- round trips ----------------------------------------------------------------------------
@pytest.mark.parametrize("child", ["fortunes", "marathi", "home"])
def test_shipped_child_round_trips_to_the_same_file(child, tmp_path):
    src = CHILDREN / f"{child}.bullet"
    export_gguf(src, tmp_path / "c.gguf")
    info = import_gguf(tmp_path / "c.gguf", tmp_path / "back.bullet")
    assert info["restored_header"] and info["errors"] == {}
    assert (tmp_path / "back.bullet").read_bytes() == src.read_bytes()


def test_round_trip_without_the_saved_header_keeps_every_tensor(tmp_path):
    """--dtype bq4 ignores bullet.header: the tensors still come back byte for byte."""
    src = CHILDREN / "fortunes.bullet"
    export_gguf(src, tmp_path / "c.gguf")
    info = import_gguf(tmp_path / "c.gguf", tmp_path / "back.bullet", dtype="bq4")
    assert not info["restored_header"] and info["errors"] == {}
    assert _tensor_bytes(tmp_path / "back.bullet") == _tensor_bytes(src)
    with BulletFile.open(src) as a, BulletFile.open(tmp_path / "back.bullet") as b:
        assert a.vocab == b.vocab
        assert b.provenance["source"]["kind"] == "gguf"
        assert b.header["tokenizer"]["stop_ids"] == a.header["tokenizer"]["stop_ids"] == [1]


def test_bq4_and_q4_0_dequantise_to_the_same_weights(tmp_path):
    """Read back by the gguf package's own reader and dequantiser: every Q4_0 weight equals the
    BQ4 weight bit for bit."""
    src = CHILDREN / "marathi.bullet"
    export_gguf(src, tmp_path / "m.gguf")
    r = gguf.GGUFReader(tmp_path / "m.gguf")
    by_name = {t.name: t for t in r.tensors}
    n_q4 = 0
    with BulletFile.open(src) as bf:
        for name, info in bf.tensors.items():
            t = by_name[gguf_name(name)]
            if info.dtype == "bq4":
                assert t.tensor_type == gguf.GGMLQuantizationType.Q4_0
                theirs = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(info.shape)
                ours = dequantize_bq4(bf.tensor(name), info.shape[1])
                assert np.array_equal(theirs.view(np.uint32), ours.view(np.uint32)), name
                n_q4 += 1
            else:
                assert np.array_equal(np.asarray(t.data).reshape(info.shape), bf.tensor(name))
    assert n_q4 == 8 * 7 + 2


def test_q4_0_nibbles_are_bq4_nibbles_plus_8():
    q = np.arange(-8, 8, dtype=np.int8)
    qs = np.tile(q, 2)                                   # 32 weights
    nib = (qs & 0x0F).astype(np.uint8)
    block = np.zeros((1, 20), np.uint8)
    block[0, 0:2] = np.array([0.5], np.float16).view(np.uint8)
    block[0, 4:] = nib[:16] | (nib[16:] << 4)
    out = bq4_to_q4_0(block)
    u = np.concatenate([out[0, 2:] & 0x0F, out[0, 2:] >> 4])
    assert np.array_equal(u.astype(int) - 8, qs)
    assert out[0, :2].tobytes() == block[0, :2].tobytes()


def test_padded_rows_are_f32_with_their_blocks_and_come_back_exactly(tmp_path):
    arch = dict(SMALL_ARCH, hidden_dim=72)              # w2 rows of 72: 2 whole blocks + 8
    src = write_random_lm(tmp_path / "p.bullet", arch, seed=3)
    info = export_gguf(src, tmp_path / "p.gguf")
    assert info["tensors"]["F32 (padded BQ4)"] == 2
    r = gguf.GGUFReader(tmp_path / "p.gguf")
    t = next(t for t in r.tensors if t.name == "blk.0.ffn_down.weight")
    assert t.tensor_type == gguf.GGMLQuantizationType.F32
    with BulletFile.open(src) as bf:
        assert np.array_equal(np.asarray(t.data).reshape(64, 72), dequantize_bq4(bf.tensor("blk.0.w2"), 72))
    import_gguf(tmp_path / "p.gguf", tmp_path / "back.bullet")
    assert (tmp_path / "back.bullet").read_bytes() == src.read_bytes()


def test_stories260k_round_trips_in_f32_and_bq4(stories260k, tmp_path):
    from bulletd.runtime.llama2c import import_llama2c
    for dtype in ("f32", "bq4"):
        src = tmp_path / f"s-{dtype}.bullet"
        import_llama2c(stories260k, src, dtype=dtype)
        export_gguf(src, tmp_path / f"s-{dtype}.gguf")
        import_gguf(tmp_path / f"s-{dtype}.gguf", tmp_path / f"back-{dtype}.bullet")
        assert (tmp_path / f"back-{dtype}.bullet").read_bytes() == src.read_bytes(), dtype


def test_exported_metadata_is_what_llama_cpp_reads(tmp_path):
    export_gguf(CHILDREN / "fortunes.bullet", tmp_path / "f.gguf")
    with GGUFFile(tmp_path / "f.gguf") as g:
        m = g.metadata
        assert g.str_value("general.architecture") == "llama" and g.str_value("general.name") == "fortunes"
        assert g.str_value("general.version") == "0.3.0"
        assert (m["llama.embedding_length"], m["llama.block_count"], m["llama.feed_forward_length"],
                m["llama.attention.head_count"], m["llama.attention.head_count_kv"], m["llama.context_length"],
                m["llama.rope.dimension_count"], m["llama.vocab_size"]) == (256, 8, 768, 4, 4, 128, 64, 1024)
        assert g.str_value("tokenizer.ggml.model") == "llama"
        toks, types = m["tokenizer.ggml.tokens"], m["tokenizer.ggml.token_type"]
        assert toks[:4] == [b"<unk>", b"<s>", b"</s>", b"<0x00>"] and list(types[:4]) == [2, 3, 3, 6]
        assert not any(b" " in t for t in toks)
        assert (m["tokenizer.ggml.bos_token_id"], m["tokenizer.ggml.eos_token_id"]) == (1, 2)
        assert m["tokenizer.ggml.eot_token_id"] == 1 and "tokenizer.ggml.eom_token_id" not in m   # stop_ids [1]
        assert m["tokenizer.ggml.add_bos_token"] is True and m["tokenizer.ggml.add_space_prefix"] is False


# -- foreign files ----------------------------------------------------------------------------
@pytest.mark.parametrize("qtype,bound", [("F16", 0.2), ("Q8_0", 0.2), ("F32", 0.2)])
def test_import_quantises_to_bq4_and_reports_the_error(qtype, bound, tmp_path):
    w = random_weights(SMALL_ARCH, seed=1)
    write_gguf(tmp_path / "m.gguf", SMALL_ARCH, w, qtype)
    info = import_gguf(tmp_path / "m.gguf", tmp_path / "m.bullet")
    assert not info["restored_header"]
    assert set(info["errors"]) == {n for n, a in w.items() if a.ndim == 2}
    assert all(0.01 < e < bound for e in info["errors"].values()), info["errors"]
    with BulletFile.open(tmp_path / "m.bullet") as bf:
        assert {t.dtype for t in bf.tensors.values()} == {"bq4", "f32"}
        assert bf.provenance["name"] == "test model" and bf.provenance["version"] == "2.1"
        assert bf.provenance["quantisation_rel_rms"]
        back = dequantize_bq4(bf.tensor("blk.0.wq"), 64)
        rel = np.sqrt(np.mean((back - w["blk.0.wq"]) ** 2) / np.mean(w["blk.0.wq"] ** 2))
        assert rel < bound


def test_import_keeps_f16_and_dequantises_q8_0_exactly_on_request(tmp_path):
    w = random_weights(SMALL_ARCH, seed=2)
    write_gguf(tmp_path / "h.gguf", SMALL_ARCH, w, "F16")
    import_gguf(tmp_path / "h.gguf", tmp_path / "h.bullet", dtype="f16")
    with BulletFile.open(tmp_path / "h.bullet") as bf:
        assert np.array_equal(bf.tensor("blk.1.w2"), w["blk.1.w2"].astype(np.float16))
    write_gguf(tmp_path / "q.gguf", SMALL_ARCH, w, "Q8_0")
    info = import_gguf(tmp_path / "q.gguf", tmp_path / "q.bullet", dtype="f32")
    assert info["errors"] == {}
    r = gguf.GGUFReader(tmp_path / "q.gguf")
    t = next(t for t in r.tensors if t.name == "blk.1.ffn_down.weight")
    with BulletFile.open(tmp_path / "q.bullet") as bf:
        assert np.array_equal(bf.tensor("blk.1.w2"),
                              gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(64, 96))


def test_foreign_q4_0_comes_in_bit_exact(tmp_path):
    w = random_weights(SMALL_ARCH, seed=4)
    write_gguf(tmp_path / "q.gguf", SMALL_ARCH, w, "Q4_0")
    info = import_gguf(tmp_path / "q.gguf", tmp_path / "q.bullet")
    assert info["errors"] == {} and info["kinds"]["Q4_0 -> bq4"] == 2 * 7 + 2
    r = gguf.GGUFReader(tmp_path / "q.gguf")
    t = next(t for t in r.tensors if t.name == "blk.0.attn_q.weight")
    with BulletFile.open(tmp_path / "q.bullet") as bf:
        theirs = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(64, 64)
        assert np.array_equal(dequantize_bq4(bf.tensor("blk.0.wq"), 64), theirs)
        tok = bf.tokenizer
        ids = tok.encode("the oak", bos=False)
        assert bf.vocab[ids[0]].piece == b" the"       # add_space_prefix (llama's default) is kept
        assert tok.decode(ids) == "the oak"
        assert bf.vocab[259 + 10].piece == b"a"


def test_byte_level_bpe_import_encodes_by_its_merges(tmp_path):
    from bulletd.gguf.mapping import _bytes_to_unicode
    table = _bytes_to_unicode()
    enc = lambda b: "".join(table[x] for x in b).encode()   # noqa: E731
    toks = [b"<|endoftext|>", b"<|begin|>", b"<|end|>"] + [enc(bytes([b])) for b in range(256)]
    merged = [b"he", b"ll", b"hell", b"hello", b" w", b" wo"]
    merges = [enc(b"h") + b" " + enc(b"e"), enc(b"l") + b" " + enc(b"l"), enc(b"he") + b" " + enc(b"ll"),
              enc(b"hell") + b" " + enc(b"o"), enc(b" ") + b" " + enc(b"w"), enc(b" w") + b" " + enc(b"o")]
    toks += [enc(m) for m in merged]
    types = [3, 3, 3] + [1] * (256 + len(merged))
    arch = dict(SMALL_ARCH, vocab_size=len(toks))
    write_gguf(tmp_path / "b.gguf", arch, random_weights(arch), "F32", tokenizer="gpt2",
               tokens=(toks, None, types, merges))
    import_gguf(tmp_path / "b.gguf", tmp_path / "b.bullet", dtype="f32")
    with BulletFile.open(tmp_path / "b.bullet") as bf:
        tok = bf.tokenizer
        ids = tok.encode("hello world é", bos=False)
        assert [bf.vocab[i].piece for i in ids[:2]] == [b"hello", b" wo"]
        assert tok.decode(ids) == "hello world é"
        assert bf.header["tokenizer"]["kind"] == "gguf-gpt2"


@pytest.mark.parametrize("change,message", [
    (dict(architecture="qwen2"), "architecture 'qwen2' is not supported"),
    (dict(tokenizer="bert"), "tokenizer model 'bert' is not supported"),
    (dict(extra={"llama.expert_count": lambda w: w.add_uint32("llama.expert_count", 8)}),
     "mixture of experts is not supported"),
    (dict(extra={"llama.rope.scaling.type": lambda w: w.add_string("llama.rope.scaling.type", "yarn")}),
     "RoPE scaling 'yarn'"),
])
def test_unsupported_files_are_refused_by_name(change, message, tmp_path):
    write_gguf(tmp_path / "x.gguf", SMALL_ARCH, random_weights(SMALL_ARCH), "F32", **change)
    with pytest.raises(FormatError, match=message):
        import_gguf(tmp_path / "x.gguf", tmp_path / "x.bullet")
    assert not (tmp_path / "x.bullet").exists()


def test_unsupported_tensor_type_is_named(tmp_path):
    write_gguf(tmp_path / "x.gguf", SMALL_ARCH, random_weights(SMALL_ARCH), "Q4_0")
    data = bytearray((tmp_path / "x.gguf").read_bytes())
    name = b"blk.0.attn_q.weight"
    at = data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name) + 4 + 16   # past n_dims, ne
    assert struct.unpack_from("<I", data, at)[0] == 2                                # Q4_0
    struct.pack_into("<I", data, at, 12)                                            # Q4_K
    (tmp_path / "x.gguf").write_bytes(bytes(data))
    with pytest.raises(FormatError, match="blk.0.attn_q.weight: type Q4_K is not supported"):
        import_gguf(tmp_path / "x.gguf", tmp_path / "x.bullet")


def test_a_tampered_padded_block_array_is_refused(tmp_path):
    src = write_random_lm(tmp_path / "p.bullet", dict(SMALL_ARCH, hidden_dim=72), seed=3)
    export_gguf(src, tmp_path / "p.gguf")
    data = bytearray((tmp_path / "p.gguf").read_bytes())
    key = b"bullet.bq4.blk.1.ffn_down.weight"
    at = data.index(key) + len(key) + 4 + 4 + 8 + 20 * 3 + 10    # into the 4th block's nibbles
    data[at] ^= 0x11
    (tmp_path / "p.gguf").write_bytes(bytes(data))
    with pytest.raises(FormatError, match="does not hold the weights of tensor blk.1.ffn_down.weight"):
        import_gguf(tmp_path / "p.gguf", tmp_path / "back.bullet")


def test_cli_export_and_import(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "bulletd.cli_bullet", *a], capture_output=True,   # noqa: E731
                                    text=True, timeout=120, cwd=tmp_path)
    r = run("export-gguf", str(CHILDREN / "calc.bullet"), "-o", "c.gguf")
    assert r.returncode == 0 and "44 Q4_0, 13 F32" in r.stdout, r.stdout + r.stderr
    r = run("import-gguf", "c.gguf", "-o", "c.bullet", "--dtype", "f16")
    assert r.returncode == 0 and "quantisation error" in r.stdout and "worst" in r.stdout, r.stdout + r.stderr
    (tmp_path / "bad.gguf").write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1, 1 << 40))
    r = run("import-gguf", "bad.gguf", "-o", "x.bullet")
    assert r.returncode == 1 and "metadata count" in r.stderr and "Traceback" not in r.stderr, r.stderr


# -- untrusted input ----------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _small_gguf() -> bytes:
    """A whole small export (not a fixture: hypothesis would print it with every example)."""
    with tempfile.TemporaryDirectory() as d:
        arch = dict(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, hidden_dim=40, vocab_size=300, max_seq_len=8)
        src = write_random_lm(Path(d) / "s.bullet", arch, seed=0)
        export_gguf(src, Path(d) / "s.gguf")
        return (Path(d) / "s.gguf").read_bytes()


def _import_bytes(data: bytes, d) -> None:
    p = d / "in.gguf"
    p.write_bytes(data)
    try:
        import_gguf(p, d / "out.bullet")
    except FormatError:
        return
    with BulletFile.open(d / "out.bullet") as bf:
        bf.verify_body()


def test_every_truncation_is_refused(tmp_path):
    data = _small_gguf()
    p = tmp_path / "t.gguf"
    p.write_bytes(data)
    with GGUFFile(p) as g:      # past the last tensor's data only the writer's zero padding follows
        end = g.data_offset + max(t.offset + t.nbytes for t in g.tensors.values())
    for n in sorted(set(range(0, 2048)) | set(range(0, end, 97)) | {end - 1}):
        p.write_bytes(data[:n])
        with pytest.raises(FormatError):
            import_gguf(p, tmp_path / "t.bullet")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_lying_sizes_and_offsets_give_format_errors(tmp_path, data):
    """Overwrite 4 or 8 bytes anywhere in the metadata and tensor table with a large, small or
    random value: the import refuses with FormatError or produces a valid file, nothing else."""
    base = _small_gguf()
    head_end = base.index(b"blk.0.ffn_up.weight") + 64          # about the tensor table's end
    at = data.draw(st.integers(4, head_end), label="offset")
    width = data.draw(st.sampled_from([4, 8]), label="width")
    value = data.draw(st.one_of(st.sampled_from([0, 1, 31, 32, 2 ** 31, 2 ** 32 - 1, 2 ** 63, 2 ** 64 - 1]),
                                st.integers(0, 2 ** 64 - 1)), label="value") % (1 << (8 * width))
    b = bytearray(base)
    b[at:at + width] = value.to_bytes(width, "little")
    _import_bytes(bytes(b), tmp_path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_byte_damage_gives_format_errors(tmp_path, data):
    b = bytearray(_small_gguf())
    for _ in range(data.draw(st.integers(1, 8))):
        b[data.draw(st.integers(0, len(b) - 1))] = data.draw(st.integers(0, 255))
    _import_bytes(bytes(b), tmp_path)


@pytest.mark.parametrize("header,message", [
    ("[" * 100_000, "bullet.header is not JSON"),
    ('{"kind":"lm","tensors":[],"tokenizer":{},"provenance":{}}', "bullet.header: header 'arch' must be an object"),
])
def test_a_bad_saved_header_is_refused(header, message, tmp_path):
    write_gguf(tmp_path / "x.gguf", SMALL_ARCH, random_weights(SMALL_ARCH), "F32",
               extra={"bullet.header": header})
    with pytest.raises(FormatError, match=message):
        import_gguf(tmp_path / "x.gguf", tmp_path / "x.bullet")
    import_gguf(tmp_path / "x.gguf", tmp_path / "x.bullet", dtype="bq4")     # without it: imports


def test_a_directory_or_missing_file_is_a_format_error(tmp_path):
    with pytest.raises(FormatError, match="not a regular file"):
        GGUFFile(tmp_path)
    with pytest.raises(FormatError, match="cannot open"):
        GGUFFile(tmp_path / "missing.gguf")


def test_a_vocabulary_llama_cpp_cannot_load_is_refused_at_export(tmp_path):
    """llama.cpp aborts on two tokens with the same text (a BYTE token and a NORMAL piece
    "<0x41>", for one); U+2581 in a piece would read as a space."""
    from bulletd.format import TOKEN_NORMAL, VocabEntry, write_bullet
    from bulletd.format.synth import byte_vocab, random_lm_tensors
    arch = dict(SMALL_ARCH, vocab_size=300)
    for bad, message in ((b"<0x41>", "tokens 68 and 299 are both b'<0x41>'"), ("x\u2581".encode(), "contains U\\+2581")):
        vocab = byte_vocab(299) + [VocabEntry(bad, -1.0, TOKEN_NORMAL)]
        write_bullet(tmp_path / "v.bullet", kind="lm", arch=arch, tensors=random_lm_tensors(arch), vocab=vocab,
                     tokenizer={"kind": "bpe", "bos_id": 1, "eos_id": 2}, provenance={"name": "v", "version": "1"})
        with pytest.raises(FormatError, match=message):
            export_gguf(tmp_path / "v.bullet", tmp_path / "v.gguf")
        assert not (tmp_path / "v.gguf").exists() and not list(tmp_path.glob("*.tmp"))


def test_tensors_changed_after_export_do_not_get_the_saved_header(tmp_path):
    src = CHILDREN / "fortunes.bullet"
    export_gguf(src, tmp_path / "f.gguf")
    data = bytearray((tmp_path / "f.gguf").read_bytes())
    with GGUFFile(tmp_path / "f.gguf") as g:
        t = g.tensors["blk.0.attn_norm.weight"]
        at = g.data_offset + t.offset
    data[at:at + 4] = np.array([2.5], "<f4").tobytes()
    (tmp_path / "f.gguf").write_bytes(bytes(data))
    info = import_gguf(tmp_path / "f.gguf", tmp_path / "back.bullet")
    assert not info["restored_header"] and "changed after export" in info["header_ignored"]
    with BulletFile.open(tmp_path / "back.bullet") as bf:
        assert bf.provenance["source"]["kind"] == "gguf" and bf.provenance["name"] == "fortunes"
        assert bf.tensor("blk.0.attn_norm")[0] == 2.5


@pytest.mark.parametrize("dtype,gtype", [("f16", "F16"), ("f32", "F32")])
def test_f16_and_f32_matrices_export_as_such_and_come_back(dtype, gtype, tmp_path):
    src = write_random_lm(tmp_path / "r.bullet", SMALL_ARCH, seed=5, dtype=dtype)
    export_gguf(src, tmp_path / "r.gguf")
    with GGUFFile(tmp_path / "r.gguf") as g:
        assert {t.type_name for n, t in g.tensors.items() if len(t.ne) == 2} == {gtype}
        assert {t.type_name for n, t in g.tensors.items() if len(t.ne) == 1} == {"F32"}
    import_gguf(tmp_path / "r.gguf", tmp_path / "back.bullet")
    assert (tmp_path / "back.bullet").read_bytes() == src.read_bytes()
