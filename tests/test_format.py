"""The .bullet v1 container: round trip, zero-copy views, and a reader that never trusts a file."""
import json
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulletd.errors import FormatError
from bulletd.format import (FOOTER, BulletFile, VocabEntry, build_bullet, dequantize_bq4, lm_tensor_shapes,
                            write_bullet)
from bulletd.format.container import HEADER_ALIGN
from _format_util import TINY, micro_file, tiny_file


@pytest.fixture
def tiny(tmp_path):
    return tiny_file(tmp_path / "tiny.bullet")


def _header_end(raw: bytes) -> int:
    return raw.index(b"\x00")


def _rewrite_header(raw: bytes, edit) -> bytes:
    """Apply edit(header_dict) and re-serialise the header, keeping the 4096 alignment."""
    end = _header_end(raw)
    h = json.loads(raw[:end])
    edit(h)
    head = json.dumps(h).encode()
    body_start = (end + 4 + HEADER_ALIGN - 1) // HEADER_ALIGN * HEADER_ALIGN
    if len(head) + 4 > body_start:
        raise ValueError("edited header no longer fits")
    return head + b"\x00" * (body_start - len(head)) + raw[body_start:]


def _t(h: dict, name: str) -> dict:
    return next(t for t in h["tensors"] if t["name"] == name)


def _open_bytes(tmp_path, raw: bytes) -> BulletFile:
    p = tmp_path / "edited.bullet"
    p.write_bytes(raw)
    return BulletFile.open(p)


def test_round_trip_values_and_metadata(tmp_path):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((40, 64)).astype(np.float32)
    v = rng.standard_normal(7).astype(np.float32)
    vocab = [VocabEntry(b"a", -1.0), VocabEntry(b"\xe0\xa4\x85", -2.0)]
    p = write_bullet(tmp_path / "r.bullet", kind="router", arch={"feature_dim": 64}, vocab=vocab,
                     tensors={"w": ("bq4", w), "v": ("f32", v), "h": ("f16", v)},
                     tokenizer={"kind": "none"}, provenance={"name": "r", "version": "2.1"},
                     extra={"examples": ["hello"]})
    with BulletFile.open(p) as bf:
        assert bf.kind == "router" and bf.name == "r" and bf.version == "2.1"
        assert bf.header["examples"] == ["hello"]
        np.testing.assert_array_equal(bf.tensor("v"), v)
        np.testing.assert_array_equal(bf.tensor("h"), v.astype(np.float16))
        back = dequantize_bq4(bf.tensor("w"), 64)
        assert np.sqrt(np.mean((back - w) ** 2)) < 0.1 * np.sqrt(np.mean(w ** 2))
        assert bf.vocab == vocab
        bf.verify_body()


def test_tensor_views_are_zero_copy_into_the_mapping(tiny):
    with BulletFile.open(tiny) as bf:
        for name in ("blk.0.wq", "blk.0.attn_norm", "tok_embd"):
            t = bf.tensor(name)
            assert not t.flags.owndata and not t.flags.writeable, name
            assert (bf.data_offset + bf.tensors[name].offset) % 64 == 0


def test_layout_offsets_and_footer(tiny):
    raw = tiny.read_bytes()
    end = _header_end(raw)
    assert raw[end:end + 4] == b"\x00" * 4
    with BulletFile.open(tiny) as bf:
        assert bf.body_offset % 4096 == 0 and raw[bf.body_offset:bf.body_offset + 4] == b"BULK"
        assert (bf.data_offset - 64) % 64 == 0 and raw[bf.data_offset - 64:bf.data_offset - 60] == b"BWT0"
    assert raw.endswith(b"BULLET_ENDEND!")


def test_every_truncation_is_a_format_error(tmp_path):
    p = micro_file(tmp_path / "micro.bullet")
    for n in range(p.stat().st_size - 1, -1, -1):
        os.truncate(p, n)
        with pytest.raises(FormatError):
            BulletFile.open(p)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_byte_flips_never_crash(tmp_path, data):
    raw = bytearray(_TINY_BYTES)
    n = data.draw(st.integers(1, 4))
    for _ in range(n):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
    p = tmp_path / "flip.bullet"
    p.write_bytes(bytes(raw))
    try:
        with BulletFile.open(p) as bf:
            for name in bf.tensors:
                np.asarray(bf.tensor(name)).sum()
            bf.vocab
            bf.verify_body()
            # the body is intact, so only the header changed
            assert bytes(raw)[bf.body_offset:] == _TINY_BYTES[bf.body_offset:]
    except FormatError:
        pass


def test_header_lying_about_offset(tiny, tmp_path):
    raw = tiny.read_bytes()
    bad = _rewrite_header(raw, lambda h: _t(h, "blk.0.wq").update(offset=10 ** 9 // 64 * 64))
    with pytest.raises(FormatError, match=r"tensor blk\.0\.wq: offset .* runs past the end"):
        _open_bytes(tmp_path, bad)


def test_header_lying_about_shape(tiny, tmp_path):
    raw = tiny.read_bytes()
    bad = _rewrite_header(raw, lambda h: _t(h, "blk.0.wq").update(shape=[32, 64]))
    with pytest.raises(FormatError, match=r"tensor blk\.0\.wq: nbytes .* does not match"):
        _open_bytes(tmp_path, bad)


def test_header_lying_about_dtype(tiny, tmp_path):
    raw = tiny.read_bytes()
    bad = _rewrite_header(raw, lambda h: _t(h, "blk.0.wq").update(dtype="f32"))
    with pytest.raises(FormatError, match="does not match dtype f32"):
        _open_bytes(tmp_path, bad)
    bad = _rewrite_header(raw, lambda h: _t(h, "blk.0.wq").update(dtype="q8"))
    with pytest.raises(FormatError, match="dtype 'q8' is not one of"):
        _open_bytes(tmp_path, bad)


def test_header_with_shape_that_disagrees_with_arch(tiny, tmp_path):
    raw = tiny.read_bytes()

    def edit(h):
        t = _t(h, "blk.0.wq")
        t.update(shape=[16, 32], nbytes=16 * 20)   # consistent bytes, wrong for the arch
    bad = _rewrite_header(raw, edit)
    with pytest.raises(FormatError, match=r"blk\.0\.wq: shape \[16, 32\] does not match the architecture"):
        _open_bytes(tmp_path, bad)


def test_overlapping_tensors_rejected(tiny, tmp_path):
    raw = tiny.read_bytes()
    bad = _rewrite_header(raw, lambda h: _t(h, "blk.0.wk").update(offset=_t(h, "blk.0.wq")["offset"]))
    with pytest.raises(FormatError, match="overlap"):
        _open_bytes(tmp_path, bad)


def test_tensor_count_mismatch_and_missing_tensor(tiny, tmp_path):
    raw = tiny.read_bytes()
    bad = _rewrite_header(raw, lambda h: h["tensors"].pop())
    with pytest.raises(FormatError, match="weights block says"):
        _open_bytes(tmp_path, bad)


def test_bad_arch_values(tiny, tmp_path):
    raw = tiny.read_bytes()
    for edit, msg in [
        (lambda h: h["arch"].update(n_heads=3), "not a multiple of n_heads"),
        (lambda h: h["arch"].update(dim=-1), "arch.dim must be an integer"),
        (lambda h: h["arch"].update(vocab_size=300), "vocab_size 300 differs"),
        (lambda h: h.update(version=2), "format version 2 is not supported"),
        (lambda h: h.update(kind="exe"), "'kind' is 'exe'"),
    ]:
        with pytest.raises(FormatError, match=msg):
            _open_bytes(tmp_path, _rewrite_header(raw, edit))


def test_wrong_magics(tiny, tmp_path):
    raw = bytearray(tiny.read_bytes())
    with BulletFile.open(tiny) as bf:
        tok, wt = bf.body_offset, bf.data_offset - 64
    b = bytearray(raw); b[tok:tok + 4] = b"XULK"
    with pytest.raises(FormatError, match="magic b'XULK', expected b'BULK'"):
        _open_bytes(tmp_path, bytes(b))
    b = bytearray(raw); b[wt:wt + 4] = b"BWT1"
    with pytest.raises(FormatError, match="magic b'BWT1', expected b'BWT0'"):
        _open_bytes(tmp_path, bytes(b))


def test_missing_footer_and_trailing_garbage(tiny, tmp_path):
    raw = tiny.read_bytes()
    with pytest.raises(FormatError, match="footer missing"):
        _open_bytes(tmp_path, raw[:-len(FOOTER)] + b"X" * len(FOOTER))
    with pytest.raises(FormatError, match="trailing data after the footer"):
        _open_bytes(tmp_path, raw + b"garbage")


def test_header_without_terminating_zero_bytes(tiny, tmp_path):
    raw = tiny.read_bytes()
    end = _header_end(raw)
    bad = raw[:end] + b"\x00\x01\x00\x00" + raw[end + 4:]
    with pytest.raises(FormatError, match="not terminated by 4 zero bytes"):
        _open_bytes(tmp_path, bad)
    with pytest.raises(FormatError, match="no header terminator"):
        _open_bytes(tmp_path, b"{" * 5000)


def test_header_not_json_and_not_object(tmp_path):
    with pytest.raises(FormatError, match="not valid UTF-8 JSON"):
        _open_bytes(tmp_path, b"{nope" + b"\x00" * 5000)
    with pytest.raises(FormatError, match="must be a JSON object"):
        _open_bytes(tmp_path, b"[1,2]" + b"\x00" * 5000)


def test_bulk_block_lies(tiny, tmp_path):
    raw = bytearray(tiny.read_bytes())
    with BulletFile.open(tiny) as bf:
        tok = bf.body_offset
    b = bytearray(raw); struct.pack_into("<I", b, tok + 4, 10 ** 8)   # n_tokens
    with pytest.raises(FormatError, match="runs past the end of the file"):
        _open_bytes(tmp_path, bytes(b))
    b = bytearray(raw); struct.pack_into("<I", b, tok + 8, 0)       # max_piece_len
    with pytest.raises(FormatError, match="longer than the declared maximum"):
        _open_bytes(tmp_path, bytes(b))


def test_body_checksum_detects_a_changed_weight(tiny, tmp_path):
    raw = bytearray(tiny.read_bytes())
    raw[-100] ^= 0x10
    with _open_bytes(tmp_path, bytes(raw)) as bf:
        with pytest.raises(FormatError, match="body SHA-256 .* does not match"):
            bf.verify_body()


def test_missing_file_and_tiny_file(tmp_path):
    with pytest.raises(FormatError, match="cannot open"):
        BulletFile.open(tmp_path / "nope.bullet")
    with pytest.raises(FormatError, match="too small"):
        _open_bytes(tmp_path, b"{}")


def test_writer_rejects_bad_tensors():
    with pytest.raises(FormatError, match="dtype 'f64'"):
        build_bullet(kind="router", tensors={"x": ("f64", np.zeros(3))}, vocab=[], tokenizer={}, provenance={})
    with pytest.raises(FormatError, match="non-finite"):
        build_bullet(kind="router", tensors={"x": ("bq4", np.full((2, 32), np.nan))}, vocab=[], tokenizer={},
                     provenance={})


def test_lm_tensor_shapes_follow_arch():
    s = lm_tensor_shapes({**TINY, "tied_embeddings": True})
    assert s["blk.0.wk"] == (16, 32) and s["blk.0.w2"] == (32, 48) and "output" not in s


_TINY_BYTES = b""


@pytest.fixture(autouse=True, scope="module")
def _tiny_bytes(tmp_path_factory):
    global _TINY_BYTES
    _TINY_BYTES = micro_file(tmp_path_factory.mktemp("t") / "t.bullet").read_bytes()
