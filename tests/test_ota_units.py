"""OTA pieces on their own (no broker): protocol validation, versions, the staging transfer,
the install journal and recovery, the anti-rollback rules, the smoke test, and `bullet push`
from the command line (that one with a real broker and receiver process).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bulletd.ota import OtaConfig, OtaError, OtaReceiver, version_key
from bulletd.ota import protocol as P
from bulletd.ota.smoke import SmokeTestFailed, smoke_test
from bulletd.ota.staging import Ledger, Transfer, atomic_write, recover
from bulletd.signing import TrustStore, read_signature
from _ota_util import Keys, ReceiverProc, make_child

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------------------------
# protocol

def test_version_key_orders_integers_and_dotted_versions():
    assert version_key("1.2.10") > version_key("1.2.9")
    assert version_key(3) == version_key("3") == version_key("3.0.0") == version_key("v3")
    assert version_key("2") > version_key("1.99")


@pytest.mark.parametrize("bad", ["1.2-beta", "", "x", True, -1, None, "1..2"])
def test_version_key_refuses_what_it_cannot_order(bad):
    with pytest.raises(OtaError) as e:
        version_key(bad)
    assert e.value.reason == "bad_version"
    assert "expected an integer or dotted integers" in str(e.value) or "negative" in str(e.value)


def _offer(**change):
    signed = {"manifest": {"name": "kid", "version": "1", "size": 10_000, "sha256": "a" * 64,
                           "key_id": "k", "created": "now"}, "signature": "AAAA"}
    msg = P.make_offer("p1", signed, 4096)
    msg.update(change)
    return msg


def test_offer_envelope_checks_name_the_field():
    assert P.check_offer(_offer(), "t")["n_chunks"] == 3
    cases = [({"chunk_size": 100}, "bad_offer", "chunk_size 100 outside"),
             ({"n_chunks": 7}, "bad_offer", "n_chunks 7 does not match"),
             ({"push_id": 5}, "bad_offer", "field 'push_id' should be str"),
             ({"chunk_size": True}, "bad_offer", "field 'chunk_size' should be int"),
             ({"signed": None}, "unsigned", "carries no signed manifest"),
             ({"signed": {"manifest": {}}}, "unsigned", "'signature'")]
    for change, reason, text in cases:
        with pytest.raises(OtaError) as e:
            P.check_offer(_offer(**change), "bullet/dev1/ota/offer")
        assert e.value.reason == reason, change
        assert text in str(e.value) and "bullet/dev1/ota/offer" in str(e.value)


def test_unpack_refuses_garbage_and_other_protocol_versions():
    with pytest.raises(OtaError, match="not msgpack"):
        P.unpack(b"\xc1\xc1", "t")
    with pytest.raises(OtaError, match="expected a msgpack map, found list"):
        P.unpack(P.pack([1, 2]), "t")
    with pytest.raises(OtaError, match="expected protocol v=1, found v=2"):
        P.unpack(P.pack({"v": 2}), "t")


def test_topic_words_refuse_wildcards():
    for bad in ("a/b", "+", "#", "", "$SYS"):
        with pytest.raises(ValueError, match="topic level"):
            P.check_topic_word("device id", bad)
    with pytest.raises(ValueError, match="device id"):
        OtaConfig(device="dev/1")


# ----------------------------------------------------------------------------------------------
# staging

def _signed(tmp, keys, **kw):
    f = make_child(tmp / "kid.bullet", keys.key, **kw)
    return f, read_signature(str(f) + ".sig")


def test_transfer_writes_chunks_flushes_bitmap_and_reloads(tmp_path):
    keys = Keys(tmp_path)
    f, signed = _signed(tmp_path, keys)
    staging = tmp_path / "staging"
    staging.mkdir()
    t = Transfer.create(staging, signed, 4096, "p1")
    data = f.read_bytes()
    assert t.total == -(-len(data) // 4096) and t.part.stat().st_size == len(data)
    for seq in (5, 0, 5, t.total - 1):
        t.write_chunk(seq, data[seq * 4096:(seq + 1) * 4096])
    assert t.have == 3 and t.missing(2) == [1, 2]
    # not flushed yet: a reload (after a crash) must not believe in unsynced chunks
    assert Transfer.load(staging, t.sha256).have == 0
    t.flush()
    t.close()
    again = Transfer.load(staging, t.sha256)
    assert again.have == 3 and again.bits[5] == 1 and again.bits[t.total - 1] == 1


def test_transfer_load_reports_inconsistent_files(tmp_path):
    keys = Keys(tmp_path)
    f, signed = _signed(tmp_path, keys)
    staging = tmp_path / "staging"
    staging.mkdir()
    t = Transfer.create(staging, signed, 4096, "p1")
    t.close()
    os.truncate(t.part, 100)
    with pytest.raises(OtaError, match=r"size 100, expected \d+"):
        Transfer.load(staging, t.sha256)
    t.bits_path.write_bytes(b"\x01\x02")
    with pytest.raises(OtaError, match="expected 21 bytes of 0/1, found 2 bytes"):
        Transfer.load(staging, t.sha256)


def test_recover_finishes_a_journal_and_removes_debris(tmp_path):
    ota, models = tmp_path / "ota", tmp_path / "models"
    (ota / "staging").mkdir(parents=True)
    models.mkdir()
    (models / "kid.bullet").write_bytes(b"old")
    (models / "kid.bullet.sig").write_bytes(b"old-sig")
    new, new_sig = ota / "staging" / "x.part", ota / "staging" / "x.sig"
    new.write_bytes(b"new")
    new_sig.write_bytes(b"new-sig")
    # the crash came after the first rename: the .sig is new, the file still old
    os.replace(new_sig, models / "kid.bullet.sig")
    atomic_write(ota / "install.json", json.dumps({
        "op": "install", "name": "kid",
        "moves": [[str(new_sig), str(models / "kid.bullet.sig")], [str(new), str(models / "kid.bullet")]],
        "ledger": {"children": {"kid": {"version": "2", "high_water": "2"}}}}).encode())
    (models / "kid.bullet.ota-tmp").write_bytes(b"junk")
    (ota / "staging" / "orphan.part").write_bytes(b"junk")
    ledger = Ledger(ota / "ledger.json")
    actions = recover(ota, models, ledger)
    assert (models / "kid.bullet").read_bytes() == b"new"
    assert (models / "kid.bullet.sig").read_bytes() == b"new-sig"
    assert not (ota / "install.json").exists()
    assert sorted(os.listdir(models)) == ["kid.bullet", "kid.bullet.sig"]
    assert os.listdir(ota / "staging") == []
    assert Ledger(ota / "ledger.json").children["kid"]["version"] == "2"
    assert actions[0] == "finished an interrupted install"


# ----------------------------------------------------------------------------------------------
# anti-rollback and replay rules

def test_admission_rules_downgrade_replay_and_force(tmp_path):
    keys = Keys(tmp_path)
    rx = OtaReceiver(OtaConfig(device="d"), TrustStore(keys.trust), tmp_path / "m",
                     tmp_path / "ota", smoke=lambda p: {})
    m = {"name": "kid", "version": "2", "sha256": "b" * 64}
    rx.check_admissible(m)                      # nothing installed: fine
    rx.ledger.children["kid"] = {"version": "1", "high_water": "3"}
    with pytest.raises(OtaError, match="not higher than the highest ever installed 3") as e:
        rx.check_admissible(m)
    assert e.value.reason == "downgrade"
    rx.check_admissible(m, force=True)          # an administrator may go back
    rx.ledger.note_seen("c" * 64, {"outcome": "installed", "name": "kid", "version": "9"})
    with pytest.raises(OtaError, match="was offered before") as e:
        rx.check_admissible(dict(m, version="9", sha256="c" * 64))
    assert e.value.reason == "replay"
    rx.ledger.note_seen("d" * 64, {"outcome": "hash_mismatch"})   # not a verdict on content
    rx.check_admissible(dict(m, version="10", sha256="d" * 64))


def test_manifest_checks_refuse_unsafe_names_and_unknown_keys(tmp_path):
    keys = Keys(tmp_path)
    rx = OtaReceiver(OtaConfig(device="d", max_file_size=50_000), TrustStore(keys.trust),
                     tmp_path / "m", tmp_path / "ota", smoke=lambda p: {})
    f, signed = _signed(tmp_path, keys)
    with pytest.raises(OtaError, match="more than max_file_size 50000") as e:
        rx._check_manifest(signed)
    assert e.value.reason == "too_large"
    from bulletd.signing import load_private_key, sign_manifest
    bad = sign_manifest(dict(signed["manifest"], name="../etc/passwd"), load_private_key(keys.key))
    with pytest.raises(OtaError, match="not a safe file name"):
        rx._check_manifest(bad)
    stranger = sign_manifest(signed["manifest"], load_private_key(keys.other_key))
    with pytest.raises(OtaError) as e:
        rx._check_manifest(stranger)
    assert e.value.reason == "unknown_key"


# ----------------------------------------------------------------------------------------------
# smoke test

def test_smoke_test_replays_vectors_and_names_the_bad_token(tmp_path):
    keys = Keys(tmp_path)
    good = make_child(tmp_path / "good.bullet", keys.key)
    info = smoke_test(good)
    assert info["vectors"] == 2 and info["tokens"] == 12 and info["exact"] >= 10
    bad = make_child(tmp_path / "bad.bullet", keys.key, bad_vectors=True)
    with pytest.raises(SmokeTestFailed, match=r"verification\[0\] \('hello there'\): token 0 is "
                                              r"\d+, expected \d+ .*gap"):
        smoke_test(bad)


def test_smoke_test_without_vectors_passes_unless_required(tmp_path):
    from bulletd.format.synth import write_random_lm
    from _ota_util import TINY
    f = write_random_lm(tmp_path / "bare.bullet", TINY, seed=1, name="bare", version="1")
    assert smoke_test(f)["vectors"] == 0
    with pytest.raises(SmokeTestFailed, match="carries no verification vectors"):
        smoke_test(f, require_vectors=True)


# ----------------------------------------------------------------------------------------------
# the command line

def test_bullet_push_command_reports_each_device(tmp_path, broker):
    keys = Keys(tmp_path)
    f = make_child(tmp_path / "kid.bullet", keys.key, version="4")
    rx = ReceiverProc(tmp_path, broker).start()
    try:
        cmd = [sys.executable, "-c", "import sys; from bulletd.cli_bullet import main; "
               "sys.exit(main(sys.argv[1:]))", "push", str(f), "--device", "dev1",
               "--device", "ghost", "--broker", f"127.0.0.1:{broker.port}",
               "--chunk-size", "8k", "--timeout", "6", "--json"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert r.returncode == 1, r.stderr     # one device never answered
        out = json.loads(r.stdout)
        assert out["name"] == "kid" and out["version"] == "4"
        assert out["devices"]["dev1"]["state"] == "installed"
        assert out["devices"]["dev1"]["chunks_sent"] == -(-f.stat().st_size // 8192)
        assert out["devices"]["ghost"]["state"] == "timeout"
        assert "no final status within 6 s" in out["devices"]["ghost"]["message"]
        assert "0/0" not in out["devices"]["ghost"]["message"]      # it never said how much it needs
        r = subprocess.run(cmd[:4] + [str(tmp_path / "nope.bullet"), "--device", "dev1"],
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert r.returncode == 1 and "nope.bullet: no such file" in r.stderr
        unsigned = make_child(tmp_path / "unsigned.bullet", keys.key, sign=False)
        r = subprocess.run(cmd[:4] + [str(unsigned), "--device", "dev1"],
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert r.returncode == 1 and "unsigned.bullet is not signed" in r.stderr
        assert "bullet sign" in r.stderr
    finally:
        rx.stop()


def test_bullet_push_counts_in_plain_words(tmp_path, broker):
    """One chunk is '1 chunk'; no '0/0 chunks' before the device has said how much it needs."""
    keys = Keys(tmp_path)
    f = make_child(tmp_path / "kid.bullet", keys.key, version="5")
    rx = ReceiverProc(tmp_path, broker).start()
    try:
        r = subprocess.run([sys.executable, "-m", "bulletd.cli_bullet", "push", str(f), "--device", "dev1",
                            "--broker", f"127.0.0.1:{broker.port}", "--chunk-size", "512k", "--timeout", "30"],
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f"dev1: installed (sent 1 chunk, {f.stat().st_size} bytes)"
        assert "1 chunk of" in r.stderr and "1 chunks" not in r.stderr and "0/0" not in r.stderr
        assert "dev1: installed 1/1 chunk" in r.stderr
    finally:
        rx.stop()


def test_receiver_creates_its_directories_only_when_a_push_needs_them(tmp_path):
    keys = Keys(tmp_path)
    rx = OtaReceiver(OtaConfig(device="d"), TrustStore(keys.trust), tmp_path / "models",
                     tmp_path / "models" / ".ota", smoke=lambda p: {})
    assert rx.recovered == [] and not (tmp_path / "models").exists()
    rx._check_space(1000)
    assert sorted(p.name for p in (tmp_path / "models" / ".ota").iterdir()) == [
        "previous", "rejected", "staging"]
