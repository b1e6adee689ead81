"""Exported children proven in llama.cpp itself (llama-cpp-python, built from source by
scripts/setup.sh --test): the same greedy ids as `bullet run` for stories260K, logits within a
stated tolerance for a shipped BQ4 child, and the same tokens for thousands of strings.

Without llama-cpp-python these tests skip and say so; .ci/run installs it and sets
BULLET_REQUIRE_LLAMACPP=1, which turns the skip into a failure.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from bulletd.format import BulletFile
from bulletd.gguf.export import export_gguf
from bulletd.runtime.model import load_model
from conftest import ROOT

CHILDREN = ROOT / "child_models"
# the stated tolerance for a BQ4 child (docs/INTEROP.md): llama.cpp multiplies Q4_0 weights by
# activations it rounds to 8 bits (Q8_0), bulletd by its own; the logits differ by that rounding
LOGIT_MAX_ABS = 0.5          # largest |difference| of any logit at any of the 200 positions
LOGIT_REL_RMS = 0.02         # RMS of the difference / RMS of bulletd's logits, over all positions
AGREEMENT = 0.95             # positions whose greedy token is the same


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        msg = "llama-cpp-python is not installed (scripts/setup.sh --test builds it)"
        if os.environ.get("BULLET_REQUIRE_LLAMACPP") == "1":
            pytest.fail(msg + "; BULLET_REQUIRE_LLAMACPP=1 makes this a failure")
        pytest.skip(msg)
    return llama_cpp


def _load(path, **kw):
    """llama.cpp with an f32 KV cache, as bulletd's (llama.cpp's default f16 cache alone moves
    stories260K's f32 logits by up to 0.05)."""
    llama_cpp = _llama_cpp()
    if not kw.get("vocab_only"):
        kw.update(type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    return llama_cpp.Llama(model_path=str(path), n_threads=1, n_threads_batch=1, verbose=False, **kw)


def _greedy(llm, first: int, n: int) -> list[int]:
    """n greedy ids after `first`, one llama_decode per token, argmax of the raw logits."""
    llm.reset()
    out, tok = [], first
    for _ in range(n):
        llm.eval([tok])
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(tok)
    return out


def test_stories260k_f32_gives_the_same_200_greedy_ids_as_bullet_run(stories260k, tmp_path):
    from bulletd.runtime.llama2c import import_llama2c
    src = tmp_path / "s.bullet"
    import_llama2c(stories260k, src, dtype="f32")
    export_gguf(src, tmp_path / "s.gguf")
    r = subprocess.run([sys.executable, "-m", "bulletd.cli_bullet", "run", str(src), "-n", "200", "-t", "0",
                        "--ids", "--repeat-penalty", "1", "--quiet"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    ours = [int(t) for t in r.stdout.split()]
    assert len(ours) == 200, f"bullet run stopped after {len(ours)} ids"
    llm = _load(tmp_path / "s.gguf", n_ctx=512, n_batch=512, logits_all=True)
    theirs = _greedy(llm, 1, 200)
    assert theirs == ours


def _teacher_forced(child: str, tmp_path, n: int = 200):
    export_gguf(CHILDREN / f"{child}.bullet", tmp_path / "c.gguf")
    with load_model(CHILDREN / f"{child}.bullet", backend="native") as m:
        s = m.new_session()
        seq, logits_b = [m.tokenizer.bos_id], []
        for pos in range(n):
            lg = np.array(s.forward(seq[-1], pos), dtype=np.float32)
            logits_b.append(lg)
            seq.append(int(np.argmax(lg)))
    llm = _load(tmp_path / "c.gguf", n_ctx=n + 8, n_batch=n + 8, logits_all=True)
    llm.reset()
    llm.eval(seq[:n])
    logits_l = np.array(llm.scores[:n], dtype=np.float32)
    return np.array(logits_b), logits_l


def test_shipped_bq4_child_logits_match_llama_cpp(tmp_path):
    ours, theirs = _teacher_forced("marathi", tmp_path)
    diff = theirs - ours
    max_abs = float(np.abs(diff).max())
    rel = float(np.sqrt(np.mean(diff ** 2)) / np.sqrt(np.mean(ours ** 2)))
    agree = float(np.mean(np.argmax(ours, 1) == np.argmax(theirs, 1)))
    print(f"marathi, 200 teacher-forced positions: max |dlogit| {max_abs:.4f}, relative RMS {rel:.5f}, "
          f"greedy agreement {100 * agree:.1f}%")
    assert agree >= AGREEMENT
    assert max_abs <= LOGIT_MAX_ABS and rel <= LOGIT_REL_RMS


def _strings(tok, n_random: int, seed: int = 0) -> list[str]:
    """Text from the child's own vocabulary (random ids decoded), Devanagari and Latin words,
    whitespace runs, digits in both scripts, punctuation, characters only byte fallback covers."""
    rng = np.random.default_rng(seed)
    pieces = [e.piece.decode("utf-8", "ignore") for e in tok.vocab if e.type == 0]
    alphabet = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"()-")
                + [chr(c) for c in range(0x0900, 0x0980)] + list("०१२३४५६७८९")
                + [" ", " ", " ", "  ", "\n", "\t", "\n\n", " \n", "\u00a0", "\u3000"]
                + ["é", "ß", "€", "😀", "中", "ℵ", "\u200d", "\x00", "\x7f"])
    out = []
    for _ in range(n_random):
        if rng.random() < 0.5:
            k = rng.integers(1, 12)
            out.append("".join(pieces[i] for i in rng.integers(0, len(pieces), k)))
        else:
            k = rng.integers(1, 30)
            out.append("".join(alphabet[i] for i in rng.integers(0, len(alphabet), k)))
    out += ["नमस्कार जग", "मी घरी जातो.", "  दोन   शब्द ", "Hello, world!", "", " ", "\n", "a\u00a0b",
            "१२३ + 45 = ?", "तुम्ही कसे आहात?\nमी ठीक आहे."]
    return out


@pytest.mark.parametrize("child", ["marathi", "fortunes"])
def test_tokenizer_encodes_the_same_in_llama_cpp(child, tmp_path):
    export_gguf(CHILDREN / f"{child}.bullet", tmp_path / "c.gguf")
    llm = _load(tmp_path / "c.gguf", vocab_only=True)
    with BulletFile.open(CHILDREN / f"{child}.bullet") as bf:
        tok = bf.tokenizer
        strings = _strings(tok, 3000)
        bad = []
        for s in strings:
            ours = tok.encode(s, bos=False)
            theirs = llm.tokenize(s.encode("utf-8"), add_bos=False, special=False)
            if ours != list(theirs):
                bad.append((s, ours, list(theirs)))
    assert bad == [], f"{len(bad)} of {len(strings)} strings differ, e.g. {bad[:3]}"
    assert sum(any("\u0900" <= c <= "\u097f" for c in s) for s in strings) > 1000


def test_llama_cpp_stops_where_bulletd_stops(tmp_path):
    """The shipped children stop on EOS and on BOS (stop_ids): both end generation in llama.cpp."""
    llama_cpp = _llama_cpp()
    export_gguf(CHILDREN / "fortunes.bullet", tmp_path / "c.gguf")
    llm = _load(tmp_path / "c.gguf", vocab_only=True)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    assert [bool(llama_cpp.llama_vocab_is_eog(vocab, t)) for t in range(5)] == [False, True, True, False, False]


def test_the_one_known_difference_is_u2581_in_the_text(tmp_path):
    """llama.cpp's "llama" tokenizer stores a space as U+2581, so it reads a U+2581 typed in the
    text as a space; Bullet reads it as itself (bytes e2 96 81, by byte fallback here)."""
    export_gguf(CHILDREN / "fortunes.bullet", tmp_path / "c.gguf")
    llm = _load(tmp_path / "c.gguf", vocab_only=True)
    with BulletFile.open(CHILDREN / "fortunes.bullet") as bf:
        tok = bf.tokenizer
        s = "a\u2581b"
        assert tok.encode(s, bos=False) != list(llm.tokenize(s.encode(), add_bos=False, special=False))
        assert list(llm.tokenize(s.encode(), add_bos=False, special=False)) == \
            list(llm.tokenize(b"a b", add_bos=False, special=False))


def test_a_vocabulary_without_a_space_piece_encodes_the_same(stories260k, tmp_path):
    """stories260K without its tokenizer.bin gets a byte-level placeholder vocabulary: no space
    piece, so Bullet encodes a space with the byte token 0x20, which the export names U+2581 for
    llama.cpp. add_dummy_prefix is on (as llama2.c's tokenizer)."""
    from bulletd.runtime.llama2c import import_llama2c
    import_llama2c(stories260k, tmp_path / "s.bullet", dtype="bq4")
    export_gguf(tmp_path / "s.bullet", tmp_path / "s.gguf")
    llm = _load(tmp_path / "s.gguf", vocab_only=True)
    with BulletFile.open(tmp_path / "s.bullet") as bf:
        tok = bf.tokenizer
        strings = _strings(tok, 500, seed=1)
        bad = [s for s in strings if tok.encode(s, bos=False) != list(llm.tokenize(s.encode(), add_bos=False,
                                                                                      special=False))]
    assert bad == [], f"{len(bad)} of {len(strings)} strings differ, e.g. {bad[:3]}"


@pytest.mark.parametrize("ftype,types", [(7, {"Q8_0", "F16", "F32"}), (2, {"Q4_0", "Q8_0", "F16", "F32"})])
def test_a_model_quantised_by_llama_cpp_imports_exactly(ftype, types, stories260k, tmp_path):
    """llama.cpp's own quantiser makes a Q8_0 / Q4_0 file (rows of 172 fall back to F16). Imported
    with --dtype f32, every weight equals the gguf package's dequantisation of that file; the
    import, exported again as F32, gives in llama.cpp the same 200 greedy ids as `bullet run`
    gives on it. The saved Bullet header no longer matches the tensors, so the default import
    ignores it and says why."""
    import ctypes
    import gguf
    from bulletd.gguf import GGUFFile
    from bulletd.gguf.importer import import_gguf
    from bulletd.gguf.mapping import bullet_name
    from bulletd.runtime.llama2c import import_llama2c
    llama_cpp = _llama_cpp()
    import_llama2c(stories260k, tmp_path / "s.bullet", dtype="f32")
    export_gguf(tmp_path / "s.bullet", tmp_path / "s.gguf")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = ftype, 1
    rc = llama_cpp.llama_model_quantize(str(tmp_path / "s.gguf").encode(), str(tmp_path / "q.gguf").encode(),
                                        ctypes.byref(params))
    assert rc == 0
    with GGUFFile(tmp_path / "q.gguf") as g:
        assert {t.type_name for t in g.tensors.values()} == types
    info = import_gguf(tmp_path / "q.gguf", tmp_path / "auto.bullet")
    assert not info["restored_header"] and "changed after export" in info["header_ignored"]
    assert info["errors"] and all(k.endswith("-> bq4") or k == "F32 -> f32" for k in info["kinds"])

    info = import_gguf(tmp_path / "q.gguf", tmp_path / "q.bullet", dtype="f32")
    assert info["errors"] == {}
    with BulletFile.open(tmp_path / "q.bullet") as bf:
        for t in gguf.GGUFReader(tmp_path / "q.gguf").tensors:
            theirs = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
            ours = bf.tensor(bullet_name(t.name))
            assert np.array_equal(ours.reshape(theirs.shape).view(np.uint32), theirs.view(np.uint32)), t.name

    export_gguf(tmp_path / "q.bullet", tmp_path / "q32.gguf")
    r = subprocess.run([sys.executable, "-m", "bulletd.cli_bullet", "run", str(tmp_path / "q.bullet"), "-n", "200",
                        "-t", "0", "--ids", "--repeat-penalty", "1", "--quiet"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    ours = [int(t) for t in r.stdout.split()]
    assert len(ours) == 200
    assert _greedy(_load(tmp_path / "q32.gguf", n_ctx=512, n_batch=512, logits_all=True), 1, 200) == ours


def test_bench_command_prints_both_runtimes():
    _llama_cpp()
    r = subprocess.run([sys.executable, "-m", "bulletd.bench.gguf", "--small", "--tokens", "32", "--passes", "1",
                        "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    import json
    out = json.loads(r.stdout)
    assert out["shape"] == "SMALL" and out["tokens"] == 32
    assert out["bulletd_tok_s"] > 0 and out["llama_cpp_tok_s"] > 0
    assert out["gguf_bytes"] > 0.8 * out["bullet_bytes"]
