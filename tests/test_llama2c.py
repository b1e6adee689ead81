"""llama2.c import: parity with llama2.c's run.c (its output recorded in tests/data/llama2c, see
the README there) and with a NumPy transcription of run.c (tests/_runtime_util.RunC), the
import round trip, tokenizer.bin, separate classifiers, malformed checkpoints, `bullet run --ids`.

    pytest tests/test_llama2c.py -q
"""
import hashlib
import json
import os
import struct
import subprocess
import sys

from pathlib import Path

import numpy as np
import pytest

from _runtime_util import (RunC, sentencepiece_like_pieces, write_llama2c_bin,
                           write_tokenizer_bin)
from bulletd.errors import FormatError
from bulletd.format import TOKEN_BYTE, TOKEN_CONTROL, TOKEN_NORMAL, BulletFile
from bulletd.runtime import GenerationSettings, load_model
from bulletd.runtime.llama2c import (greedy_agreement, import_llama2c, read_checkpoint, read_config,
                                     read_tokenizer)
from bulletd.runtime.model import _native_kernels

STEPS = 200
RECORDED = Path(__file__).parent / "data" / "llama2c"
STORIES_SHA256 = "9414d5a285453a7eab631713d171753232c978f6f97654211469aff8be93c8d6"


def _native_or_fail():
    kernels, why = _native_kernels()
    if kernels is None:
        pytest.fail(f"the native backend must run llama2.c parity: {why}")


@pytest.fixture(scope="module")
def stories_runc(stories260k):
    rc = RunC(stories260k)
    ids, logits = rc.greedy(STEPS)
    return ids, np.array(logits)


@pytest.fixture(scope="module")
def stories_f32(stories260k, tmp_path_factory):
    out = tmp_path_factory.mktemp("l2c") / "stories260K-f32.bullet"
    import_llama2c(stories260k, out, dtype="f32")
    return out


@pytest.fixture(scope="module")
def stories_bq4(stories260k, tmp_path_factory):
    out = tmp_path_factory.mktemp("l2c") / "stories260K-bq4.bullet"
    import_llama2c(stories260k, out, dtype="bq4")
    return out


@pytest.fixture(scope="module")
def runc_recorded(stories260k):
    """run.c's own greedy ids (256 steps) and first logits, recorded from this exact checkpoint."""
    digest = hashlib.sha256(stories260k.read_bytes()).hexdigest()
    assert digest == STORIES_SHA256, "the recording belongs to another stories260K.bin"
    ids = [int(t) for t in (RECORDED / "stories260K_runc_greedy_ids.txt").read_text().split()]
    first = np.loadtxt(RECORDED / "stories260K_runc_first_logits.txt", dtype=np.float32)
    assert len(ids) == 256 and first.shape == (512,)
    return ids, first


def _greedy_with_logits(model, steps, bos=1):
    s = model.new_session()
    tok, ids, logits = bos, [], []
    for pos in range(steps):
        lg = s.forward(tok, pos)
        logits.append(lg)
        nxt = int(np.argmax(lg))
        if nxt == bos:
            break
        ids.append(nxt)
        tok = nxt
    return ids, np.array(logits)


def test_runc_transcription_runs_200_greedy_steps_without_stopping(stories_runc):
    ids, logits = stories_runc
    assert len(ids) == STEPS          # the model never emits BOS in 200 steps, so all are compared
    assert logits.shape == (STEPS, 512)
    assert len(set(ids)) > 20         # a real sequence, not one token repeated


def _load_backend(path, backend: str):
    """backend "numpy", "native" or "native-scalar" (the native backend on the scalar kernels)."""
    kernel = "auto"
    if backend.startswith("native"):
        _native_or_fail()
        if backend == "native-scalar":
            backend, kernel = "native", "scalar"
    m = load_model(path, backend=backend, kernel=kernel)
    assert m.backend == backend and (kernel == "auto" or m.kernel_path == kernel)
    return m


@pytest.mark.parametrize("backend", ["numpy", "native", "native-scalar"])
def test_f32_import_reproduces_runc_greedy_ids_and_logits(stories_f32, stories_runc, backend):
    ref_ids, ref_logits = stories_runc
    m = _load_backend(stories_f32, backend)
    ids, logits = _greedy_with_logits(m, STEPS)
    assert ids == ref_ids
    err = np.abs(logits - ref_logits).max()
    assert err < 1e-4, f"max |logit difference| {err:.3g} over {STEPS} steps"


def test_numpy_transcription_agrees_with_recorded_runc(stories_runc, runc_recorded):
    ids, logits = stories_runc
    rec_ids, rec_first = runc_recorded
    assert ids == rec_ids[:STEPS]
    assert np.abs(logits[0] - rec_first).max() < 1e-4


@pytest.mark.parametrize("backend", ["numpy", "native", "native-scalar"])
def test_f32_import_gives_recorded_runc_ids_for_256_steps(stories_f32, runc_recorded, backend):
    rec_ids, rec_first = runc_recorded
    m = _load_backend(stories_f32, backend)
    ids, logits = _greedy_with_logits(m, len(rec_ids))
    assert ids == rec_ids
    err = np.abs(logits[0] - rec_first).max()
    assert err < 1e-4, f"max |logit difference| {err:.3g} at position 0"


@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_f32_import_prefill_matches_runc_logits(stories_f32, stories_runc, backend):
    if backend == "native":
        _native_or_fail()
    ref_ids, ref_logits = stories_runc
    m = load_model(stories_f32, backend=backend)
    s = m.new_session()
    last = s.prefill([1] + ref_ids[:99], 0)
    assert np.abs(last - ref_logits[99]).max() < 1e-4
    nxt = s.forward(ref_ids[99], 100)
    assert np.abs(nxt - ref_logits[100]).max() < 1e-4


def test_f32_import_generate_api_gives_runc_ids(stories_f32, stories_runc):
    ref_ids, _ = stories_runc
    m = load_model(stories_f32, backend="numpy")
    g = m.generate_ids([1], GenerationSettings(max_tokens=STEPS, temperature=0, repetition_penalty=1.0))
    text = "".join(g)
    assert g.tokens == ref_ids
    assert g.finish_reason == "length"
    assert text == g.text and text   # placeholder vocabulary still decodes to something


def test_import_round_trip_keeps_every_weight_exact(stories260k, stories_f32):
    cfg, weights = read_checkpoint(stories260k)
    with BulletFile.open(stories_f32) as bf:
        bf.verify_body()
        assert bf.arch["dim"] == 64 and bf.arch["hidden_dim"] == 172 and bf.arch["n_kv_heads"] == 4
        assert bf.arch["tied_embeddings"] is True and "output" not in bf.tensors
        for name, arr in weights.items():
            assert bf.tensors[name].dtype == "f32"
            np.testing.assert_array_equal(bf.tensor(name), arr)
        prov = bf.header["provenance"]
        src = prov["source"]
        assert src["kind"] == "llama2c-v0" and src["file"] == "stories260K.bin"
        assert src["sha256"] == "9414d5a285453a7eab631713d171753232c978f6f97654211469aff8be93c8d6"
        assert src["tokenizer"]["placeholder"] is True and "placeholder" in src["tokenizer"]["note"]
        assert prov["weights_dtype"] == "f32"
        assert len(bf.vocab) == 512
        assert bf.vocab[1].type == TOKEN_CONTROL and bf.vocab[3 + 65].piece == b"A"


def test_runc_reads_the_raw_file_independently_of_bulletd(stories260k):
    # both readers agree on every weight: the transcription is a second, independent reading
    rc = RunC(stories260k)
    _, w = read_checkpoint(stories260k)
    np.testing.assert_array_equal(rc.w2[4], w["blk.4.w2"])
    np.testing.assert_array_equal(rc.wk[2], w["blk.2.wk"])
    np.testing.assert_array_equal(rc.rms_final_weight, w["out_norm"])


def test_bq4_import_pads_hidden_172_and_reports_greedy_agreement(stories_bq4, stories_f32, capsys):
    with BulletFile.open(stories_bq4) as bf:
        w2 = bf.tensors["blk.0.w2"]
        assert w2.dtype == "bq4" and w2.shape == (64, 172)
        assert bf.tensor("blk.0.w2").shape == (64, 6 * 20)   # 172 -> 6 blocks, last one zero-padded
        assert bf.tensors["blk.0.attn_norm"].dtype == "f32"
        assert bf.header["provenance"]["weights_dtype"] == "bq4"
    f32 = load_model(stories_f32, backend="numpy")
    bq4 = load_model(stories_bq4, backend="numpy")
    r = greedy_agreement(f32, bq4, STEPS)
    with capsys.disabled():
        print(f"\n[stories260K bq4 vs f32 over {STEPS} greedy steps] {json.dumps(r)}")
    assert r["steps"] == STEPS
    # 4-bit weights on a 260K-parameter model change its greedy choices often; the logits must
    # still be strongly related (a broken dequantisation or padding would give ~1/512 = 0.2%)
    assert r["teacher_forced"] > 0.15


def test_bq4_import_mapped_and_f32_weights_give_identical_logits(stories_bq4):
    """The numpy backend's two weight modes on the real model (w2 rows of 172 weights, 6 blocks):
    bit for bit, over greedy steps and a batched prefill."""
    mapped = load_model(stories_bq4, backend="numpy", numpy_weights="mapped")
    f32 = load_model(stories_bq4, backend="numpy", numpy_weights="f32")
    assert (mapped.numpy_weights, f32.numpy_weights) == ("mapped", "f32")
    ids_m, logits_m = _greedy_with_logits(mapped, 64)
    ids_f, logits_f = _greedy_with_logits(f32, 64)
    assert ids_m == ids_f
    np.testing.assert_array_equal(logits_m.view(np.uint32), logits_f.view(np.uint32))
    prompt = [1] + ids_m[:40]
    np.testing.assert_array_equal(mapped.new_session().prefill(prompt, 0).view(np.uint32),
                                  f32.new_session().prefill(prompt, 0).view(np.uint32))


def test_bq4_native_matches_q8_reference_on_stories(stories_bq4):
    _native_or_fail()
    from bulletd.runtime.reference import ReferenceModel
    nat = load_model(stories_bq4, backend="native").new_session()
    with BulletFile.open(stories_bq4) as bf:
        q8 = ReferenceModel.from_bullet(bf, activations="q8").new_session()
    tok, worst, same = 1, 0.0, 0
    for pos in range(STEPS):
        ln, lq = nat.forward(tok, pos), q8.forward(tok, pos)
        err = np.abs(ln - lq).max() / np.abs(lq).max()
        if pos == 0:   # identical integer block products; only summation order differs
            assert err < 1e-5
        worst = max(worst, err)
        same += int(np.argmax(ln) == np.argmax(lq))
        tok = int(np.argmax(lq))
    # later positions: a 1e-7 difference can flip one q8 rounding, which this tiny model amplifies
    assert worst < 0.08, f"worst relative logit error {worst:.3g}"
    assert same >= 0.9 * STEPS, f"argmax agreed at {same} of {STEPS} positions"


def test_separate_classifier_and_gqa_checkpoint_imports_and_matches_runc(tmp_path):
    ck = tmp_path / "sep.bin"
    write_llama2c_bin(ck, dim=32, hidden_dim=72, n_layers=2, n_heads=4, n_kv_heads=2,
                      vocab_size=300, seq_len=48, shared=False, seed=3)
    cfg = read_config(ck)
    assert cfg.shared_classifier is False and cfg.vocab_size == 300
    out = tmp_path / "sep.bullet"
    import_llama2c(ck, out, dtype="f32")
    m = load_model(out, backend="numpy")
    assert m.arch["tied_embeddings"] is False
    with BulletFile.open(out) as bf:
        assert bf.header["provenance"]["source"]["classifier"] == "separate"
        np.testing.assert_array_equal(bf.tensor("output"), RunC(ck).wcls)
    ref_ids, ref_logits = RunC(ck).greedy(48)
    ids, logits = _greedy_with_logits(m, 48)
    assert ids == ref_ids
    assert np.abs(logits - ref_logits).max() < 1e-4


def test_tokenizer_bin_becomes_control_byte_and_normal_tokens(tmp_path):
    ck = tmp_path / "m.bin"
    write_llama2c_bin(ck, vocab_size=280, seed=1)
    tk = tmp_path / "tok.bin"
    pieces = sentencepiece_like_pieces(280)
    write_tokenizer_bin(tk, pieces, [0.0] * 259 + [-float(i) for i in range(21)])
    max_len, entries, count = read_tokenizer(tk, 280)
    assert count == 280 and entries[10][0] == b"<0x07>" and max_len == max(len(p) for p in pieces)
    out = tmp_path / "m.bullet"
    import_llama2c(ck, out, tokenizer=tk, dtype="f32")
    with BulletFile.open(out) as bf:
        v = bf.vocab
        assert [v[i].type for i in (0, 1, 2)] == [TOKEN_CONTROL] * 3
        assert v[3 + 0x0A].type == TOKEN_BYTE and v[3 + 0x0A].piece == b"\n"
        assert v[259].type == TOKEN_NORMAL and v[259].piece == b" the"
        tok = bf.tokenizer
        assert tok.bos_id == 1 and tok.eos_id == 2
        ids = tok.encode("the\n", bos=True)
        assert ids[0] == 1 and ids[1] == 259 and ids[-1] == 3 + 0x0A   # " the" then byte fallback
        assert bf.header["provenance"]["source"]["tokenizer"]["placeholder"] is False


def test_tokenizer_with_fewer_entries_than_the_model_is_rejected(tmp_path):
    tk = tmp_path / "tok.bin"
    write_tokenizer_bin(tk, sentencepiece_like_pieces(270))
    with pytest.raises(FormatError, match="the model has 300 tokens but the tokenizer file holds only 270"):
        read_tokenizer(tk, 300)


def test_truncated_tokenizer_is_rejected_with_position(tmp_path):
    tk = tmp_path / "tok.bin"
    write_tokenizer_bin(tk, sentencepiece_like_pieces(270))
    data = tk.read_bytes()
    tk.write_bytes(data[:-3])
    with pytest.raises(FormatError, match=r"token 269 at byte \d+: length \d+ .*past the end"):
        read_tokenizer(tk, 270)


def test_truncated_checkpoint_is_rejected_with_sizes(tmp_path):
    ck = tmp_path / "m.bin"
    write_llama2c_bin(ck)
    data = ck.read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[:-8])
    with pytest.raises(FormatError, match=rf"has {len(data)} bytes, the file has {len(data) - 8}"):
        read_config(tmp_path / "cut.bin")


def test_wrong_classifier_sign_is_diagnosed(tmp_path):
    ck = tmp_path / "m.bin"
    write_llama2c_bin(ck, shared=False)
    data = bytearray(ck.read_bytes())
    struct.pack_into("<i", data, 20, 300)           # claim a shared classifier
    ck.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="opposite classifier sharing"):
        read_config(ck)


@pytest.mark.parametrize("field,value,msg", [
    (0, 0, "dim = 0 is outside"),
    (3, 5, "dim 32 is not a multiple of n_heads 5"),
    (4, 3, "n_heads 4 is not a multiple of n_kv_heads 3"),
    (5, 0, "vocab_size = 0"),
])
def test_bad_checkpoint_header_is_rejected(tmp_path, field, value, msg):
    ck = tmp_path / "m.bin"
    write_llama2c_bin(ck)
    data = bytearray(ck.read_bytes())
    struct.pack_into("<i", data, 4 * field, value)
    ck.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=msg):
        read_config(ck)


def test_not_a_checkpoint_is_rejected(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"hello")
    with pytest.raises(FormatError, match="header needs 28 bytes, the file has 5"):
        read_config(p)


def _bullet(*args, env=None):
    return subprocess.run([sys.executable, "-m", "bulletd.cli_bullet", *map(str, args)],
                          capture_output=True, text=True, timeout=120, env=env)


def test_cli_import_and_run_ids_reproduce_runc(stories260k, runc_recorded, tmp_path):
    out = tmp_path / "s.bullet"
    r = _bullet("import-llama2c", stories260k, "--dtype", "f32", "-o", out)
    assert r.returncode == 0, r.stderr
    assert "placeholder" in r.stdout and "hidden 172" in r.stdout
    for backend in ("numpy", "native"):
        if backend == "native":
            _native_or_fail()
        r = _bullet("run", out, "-n", 256, "-t", 0, "--repeat-penalty", 1, "--ids", "--backend", backend)
        assert r.returncode == 0, r.stderr
        assert [int(t) for t in r.stdout.split()] == runc_recorded[0]
        assert "256 tokens" in r.stderr and backend in r.stderr
        if backend == "numpy":   # how the fallback holds bq4 weights is reported (default: mapped)
            assert "weights mapped, BULLET_NUMPY_WEIGHTS" in r.stderr


def test_cli_run_seeded_sampling_is_repeatable_and_seed_dependent(stories_f32):
    env = {**os.environ, "BULLET_BACKEND": "numpy"}
    a = _bullet("run", stories_f32, "-n", 40, "-t", 1.0, "--seed", 7, "--ids", "--quiet", env=env)
    b = _bullet("run", stories_f32, "-n", 40, "-t", 1.0, "--seed", 7, "--ids", "--quiet", env=env)
    c = _bullet("run", stories_f32, "-n", 40, "-t", 1.0, "--seed", 8, "--ids", "--quiet", env=env)
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and 1 <= len(a.stdout.split()) <= 40
    assert a.stdout != c.stdout


def test_cli_run_reports_bad_settings_clearly(stories_f32):
    r = _bullet("run", stories_f32, "-t", "-1", "--quiet")
    assert r.returncode == 1
    assert "temperature must be between 0 and 100" in r.stderr and "[bad_request]" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_import_of_a_missing_checkpoint_is_one_clear_error(tmp_path):
    r = _bullet("import-llama2c", tmp_path / "nope.bin", "-o", tmp_path / "x.bullet")
    assert r.returncode == 1
    assert "cannot read llama2.c checkpoint" in r.stderr and "Traceback" not in r.stderr


def test_import_over_a_signed_file_replaces_it_whole_and_drops_its_stale_sig(tmp_path):
    """The old .sig cannot sign the new file: it goes with the file it signed. A failed import
    (a bad checkpoint) leaves the existing pair alone."""
    from bulletd.signing import generate_keypair, sign_file, verify_file
    priv, pub = generate_keypair("k", tmp_path / "keys")
    ck = tmp_path / "m.bin"
    write_llama2c_bin(ck, seed=1)
    out = tmp_path / "m.bullet"
    import_llama2c(ck, out, dtype="f32")
    sig = sign_file(out, priv)
    before = out.read_bytes(), sig.read_bytes()
    (tmp_path / "bad.bin").write_bytes(ck.read_bytes()[:-8])
    r = _bullet("import-llama2c", tmp_path / "bad.bin", "-o", out)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert (out.read_bytes(), sig.read_bytes()) == before
    verify_file(out, pub)
    r = _bullet("import-llama2c", ck, "--dtype", "bq4", "-o", out)
    assert r.returncode == 0, r.stderr
    assert f"removed {sig}: it signed the file this one replaced" in r.stdout
    assert not sig.exists() and out.read_bytes() != before[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.bin", "keys", "m.bin", "m.bullet"]
