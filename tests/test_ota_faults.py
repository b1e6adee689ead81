"""OTA pushes against a real Mosquitto and a real receiver process, with injected faults.

Each test pushes real signed tiny children (bulletd.format + bulletd.signing) with the real
pusher (bulletd.ota.push.Pusher, or FaultyPusher which misbehaves on purpose) to
`python -m bulletd.ota receive` running as its own process, then checks the outcome the device
reported and the files on its disk.
"""
from __future__ import annotations

import json
import os
import random
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bulletd.signing import sign_file, verify_file
from conftest import Broker
from _ota_util import FaultyPusher, Keys, ReceiverProc, make_child, push, retained, still_missing, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One broker, one key pair and one long-running receiver for the tests that only need
    a fresh child name (rejections); the fault tests start their own receivers."""
    tmp = tmp_path_factory.mktemp("ota")
    broker = Broker(tmp)
    rx = None
    try:
        keys = Keys(tmp)
        rx = ReceiverProc(tmp, broker, device="shared")
        rx.start()
        yield tmp, broker, keys, rx
    finally:   # also when the receiver fails to start: never leave processes behind
        if rx is not None:
            rx.stop()
        broker.stop()


def outcome(p, device="dev1"):
    return p.outcomes[device]


def child(tmp, keys, name, version, **kw):
    return make_child(tmp / f"{name}-{version}-{kw.get('seed', 1)}.bullet", keys.key, name=name,
                      version=version, **kw)


# ----------------------------------------------------------------------------------------------
# the plain push

def test_push_installs_signed_child_and_leaves_staging_empty(world):
    tmp, broker, keys, rx = world
    f = child(tmp, keys, "plain", "1")
    events = []
    p = push(f, broker, devices=("shared",), on_event=lambda k, o: events.append(o.state))
    o = outcome(p, "shared")
    assert (o.state, o.reason) == ("installed", None), o.message
    assert o.chunks_sent == p.n_chunks == -(-f.stat().st_size // 4096)
    live = rx.models / "plain.bullet"
    assert verify_file(live, keys.trust)["version"] == "1"
    assert live.read_bytes() == f.read_bytes()
    for state in ("received", "verified", "installed"):
        assert state in events
    assert rx.staging_files() == [] and rx.tmp_files() == []
    led = rx.ledger()
    assert led["children"]["plain"]["version"] == "1"
    assert led["last"]["plain"]["state"] == "installed"


def test_duplicated_and_reordered_chunks_still_install(world):
    tmp, broker, keys, rx = world
    f = child(tmp, keys, "dupes", "1")
    p = push(f, broker, FaultyPusher, devices=("shared",), duplicate=True, reverse=True)
    o = outcome(p, "shared")
    assert o.state == "installed", o.message
    assert (rx.models / "dupes.bullet").read_bytes() == f.read_bytes()
    received = [e for e in o.statuses if e["state"] == "received"]
    assert received and received[-1]["duplicates"] > 0


def test_chunk_damaged_in_transit_is_asked_for_again(world):
    tmp, broker, keys, rx = world
    f = child(tmp, keys, "damaged", "1")
    p = push(f, broker, FaultyPusher, devices=("shared",), corrupt_once={3, 7},
             truncate_once={5})
    o = outcome(p, "shared")
    assert o.state == "installed"
    assert [p.sent_seqs.count(s) for s in (3, 5, 7)] == [2, 2, 2]
    received = [e for e in o.statuses if e["state"] == "received"][-1]
    assert received["bad_chunks"] == 3
    assert (rx.models / "damaged.bullet").read_bytes() == f.read_bytes()


def test_forged_chunk_is_rejected_with_hash_mismatch(world):
    tmp, broker, keys, rx = world
    f = child(tmp, keys, "forged", "1")
    p = push(f, broker, FaultyPusher, devices=("shared",), forge={2})
    o = outcome(p, "shared")
    assert (o.state, o.reason) == ("rejected", "hash_mismatch")
    assert "SHA-256" in o.message
    assert not (rx.models / "forged.bullet").exists()
    assert rx.staging_files() == []
    # the content was never judged: the honest file may still be pushed (not a replay)
    p = push(f, broker, devices=("shared",))
    assert outcome(p, "shared").state == "installed"


# ----------------------------------------------------------------------------------------------
# trust, anti-rollback, replay: refused from the offer, before any chunk moves

def test_bad_signature_is_rejected_before_download(world):
    tmp, broker, keys, rx = world
    f = child(tmp, keys, "badsig", "1")
    sig = json.loads(Path(str(f) + ".sig").read_text())
    sig["manifest"]["version"] = "9"          # the signature no longer covers the manifest
    Path(str(f) + ".sig").write_text(json.dumps(sig))
    p = push(f, broker, devices=("shared",))
    o = outcome(p, "shared")
    assert (o.state, o.reason) == ("rejected", "bad_signature")
    assert "does not verify" in o.message
    assert o.chunks_sent == 0
    assert not (rx.models / "badsig.bullet").exists()


def test_unknown_key_is_rejected_before_download(world):
    tmp, broker, keys, rx = world
    f = make_child(tmp / "stranger.bullet", keys.other_key, name="stranger", version="1")
    p = push(f, broker, devices=("shared",))
    o = outcome(p, "shared")
    assert (o.state, o.reason) == ("rejected", "unknown_key")
    assert "not in the trust store" in o.message
    assert o.chunks_sent == 0


def test_downgrade_is_rejected(world):
    tmp, broker, keys, rx = world
    assert outcome(push(child(tmp, keys, "down", "2"), broker, devices=("shared",)),
                   "shared").state == "installed"
    older = child(tmp, keys, "down", "1", seed=5)
    o = outcome(push(older, broker, devices=("shared",)), "shared")
    assert (o.state, o.reason) == ("rejected", "downgrade")
    assert "not higher than the installed 2" in o.message
    assert o.chunks_sent == 0
    assert rx.live_manifest("down")["version"] == "2"


def test_replayed_old_push_is_rejected(world):
    tmp, broker, keys, rx = world
    v1 = child(tmp, keys, "replay", "1")
    v2 = child(tmp, keys, "replay", "2", seed=2)
    assert outcome(push(v1, broker, devices=("shared",)), "shared").state == "installed"
    assert outcome(push(v2, broker, devices=("shared",)), "shared").state == "installed"
    for old in (v1, v2):  # an attacker re-sends a recorded, validly signed push
        o = outcome(push(old, broker, devices=("shared",)), "shared")
        assert (o.state, o.reason) == ("rejected", "replay"), o.message
        assert o.chunks_sent == 0
    assert rx.live_manifest("replay")["version"] == "2"


def test_smoke_test_failure_keeps_previous_and_sets_file_aside(world):
    tmp, broker, keys, rx = world
    assert outcome(push(child(tmp, keys, "smoky", "1"), broker, devices=("shared",)),
                   "shared").state == "installed"
    bad = child(tmp, keys, "smoky", "2", seed=3, bad_vectors=True)
    o = outcome(push(bad, broker, devices=("shared",)), "shared")
    assert (o.state, o.reason) == ("rejected", "smoke_test_failed")
    assert "verification[0]" in o.message and "expected" in o.message
    assert rx.live_manifest("smoky")["version"] == "1"
    aside = rx.ota_dir / "rejected" / "smoky-2.smoke_test_failed.bullet"
    assert aside.read_bytes() == bad.read_bytes()
    note = json.loads(aside.with_suffix(".json").read_text())
    assert note["reason"] == "smoke_test_failed"
    assert rx.staging_files() == []
    o = outcome(push(bad, broker, devices=("shared",)), "shared")
    assert (o.state, o.reason) == ("rejected", "replay")


def test_unsigned_file_is_refused_by_the_pusher(world):
    tmp, broker, keys, rx = world
    from bulletd.ota.push import Pusher, PushError
    f = make_child(tmp / "unsigned.bullet", keys.key, name="unsigned", sign=False)
    with pytest.raises(PushError, match="is not signed"):
        Pusher(f, port=broker.port, devices=("shared",))
    sign_file(f, keys.key)
    f.write_bytes(f.read_bytes() + b"x")
    with pytest.raises(PushError, match="changed after signing"):
        Pusher(f, port=broker.port, devices=("shared",))


# ----------------------------------------------------------------------------------------------
# interrupted transfers

def test_truncated_push_resumes_sending_only_what_is_missing(tmp_path, broker):
    keys = Keys(tmp_path)
    f = make_child(tmp_path / "k.bullet", keys.key, version="1")
    rx = ReceiverProc(tmp_path, broker, extra=["--stall-timeout", "30"]).start()
    try:
        p1 = push(f, broker, FaultyPusher, stop_after=8, timeout=2.5)
        assert outcome(p1).state == "timeout"
        assert outcome(p1).chunks_sent == 8
        # the partial file survives on the device, durably: its bitmap says 8 chunks
        wait_for(lambda: rx.durable_chunks() == 8, 10, what="8 chunks in the staging bitmap")
        assert sorted(Path(n).suffix for n in rx.staging_files()) == [".bits", ".offer", ".part"]
        p2 = push(f, broker)
        o = outcome(p2)
        assert o.state == "installed", o.message
        # only the missing chunks travel (a chunk re-requested after a slow window may go twice)
        assert o.seqs_sent == still_missing(set(p1.sent_seqs), 4096, p2.chunk_size, f.stat().st_size)
        assert o.chunks_sent >= len(o.seqs_sent) and len(o.seqs_sent) == p2.n_chunks - 8
        assert (rx.models / "kid.bullet").read_bytes() == f.read_bytes()
        assert rx.staging_files() == []
    finally:
        rx.stop()


def test_resumed_push_with_another_chunk_size_sends_only_what_is_missing(tmp_path, broker):
    keys = Keys(tmp_path)
    f = make_child(tmp_path / "k.bullet", keys.key, version="1")
    rx = ReceiverProc(tmp_path, broker, extra=["--stall-timeout", "30"]).start()
    try:
        p1 = push(f, broker, FaultyPusher, stop_after=8, timeout=2.5)   # 8 x 4 KiB durable
        assert outcome(p1).chunks_sent == 8
        wait_for(lambda: rx.durable_chunks() == 8, 10, what="8 chunks in the staging bitmap")
        p2 = push(f, broker, chunk_size=8192)                           # 4 x 8 KiB are there
        o = outcome(p2)
        assert o.state == "installed", o.message
        assert o.seqs_sent == still_missing(set(p1.sent_seqs), 4096, 8192, f.stat().st_size)
        assert o.chunks_sent >= len(o.seqs_sent) and 0 < len(o.seqs_sent) < p2.n_chunks
        assert (rx.models / "kid.bullet").read_bytes() == f.read_bytes()
    finally:
        rx.stop()


def test_abandoned_push_is_reported_stalled_and_presence_follows_the_process(tmp_path, broker):
    keys = Keys(tmp_path)
    f = make_child(tmp_path / "k.bullet", keys.key, version="1")
    rx = ReceiverProc(tmp_path, broker, groups=("lab",), extra=["--stall-timeout", "1.5"]).start()
    try:
        state = retained(broker, "bullet/dev1/ota/state")
        assert state["online"] is True and state["groups"] == ["lab"]
        p = push(f, broker, FaultyPusher, stop_after=4, timeout=1.0)   # the pusher goes away
        st = wait_for(lambda: (lambda s: s if s and s["state"] == "stalled" else None)(
            retained(broker, "bullet/dev1/ota/status", 1.0)), 10, what="stalled status")
        assert st["reason"] == "timeout" and st["push_id"] == p.push_id
        assert st["have"] == 4 and "kept" in st["message"]
        rx.kill()          # SIGKILL: the broker publishes the Last Will
        state = wait_for(lambda: (lambda s: s if s and s["online"] is False else None)(
            retained(broker, "bullet/dev1/ota/state", 1.0)), 10, what="Last Will")
        assert state["device"] == "dev1"
    finally:
        rx.stop()


def test_second_push_waits_while_the_device_is_busy_then_installs(tmp_path, broker):
    keys = Keys(tmp_path)
    a = make_child(tmp_path / "a.bullet", keys.key, name="alpha", version="1")
    b = make_child(tmp_path / "b.bullet", keys.key, name="beta", version="1", seed=2)
    rx = ReceiverProc(tmp_path, broker).start()
    try:
        res = {}
        slow = threading.Thread(target=lambda: res.update(
            a=push(a, broker, FaultyPusher, delay=0.05, timeout=40)))
        slow.start()
        wait_for(lambda: len(rx.staging_files()) == 3, 10, what="first transfer")
        pb = push(b, broker, timeout=40)
        slow.join(40)
        ob = outcome(pb)
        assert ob.state == "installed", ob.message
        assert outcome(res["a"]).state == "installed"
        waits = [s for s in ob.statuses if s["state"] == "waiting"]
        assert waits and waits[0]["reason"] == "busy" and "receiving alpha 1" in waits[0]["message"]
        assert rx.live_manifest("alpha")["version"] == rx.live_manifest("beta")["version"] == "1"
    finally:
        rx.stop()


def test_truncated_push_survives_a_receiver_restart(tmp_path, broker):
    keys = Keys(tmp_path)
    f = make_child(tmp_path / "k.bullet", keys.key, version="1")
    rx = ReceiverProc(tmp_path, broker).start()
    try:
        p1 = push(f, broker, FaultyPusher, stop_after=16, timeout=2.5)
        assert outcome(p1).chunks_sent == 16
        # the last window's fsync runs on a worker thread: stop only once all 16 are durable
        wait_for(lambda: rx.durable_chunks() == 16, 10, what="16 chunks in the staging bitmap")
        rx.stop()
        rx.start()
        p2 = push(f, broker, chunk_size=8192)   # and with another chunk size: 16 x 4 KiB = 8 x 8 KiB
        o = outcome(p2)
        assert o.state == "installed", o.message
        assert o.seqs_sent == still_missing(set(p1.sent_seqs), 4096, 8192, f.stat().st_size)
        assert o.chunks_sent >= len(o.seqs_sent) and 0 < len(o.seqs_sent) < p2.n_chunks
    finally:
        rx.stop()


def test_broker_restart_mid_push_resumes(tmp_path):
    b = Broker(tmp_path)
    keys = Keys(tmp_path)
    f = make_child(tmp_path / "k.bullet", keys.key, version="1")
    rx = ReceiverProc(tmp_path, b).start()
    try:
        restarted = threading.Event()

        def restart_when_half_done():
            wait_for(lambda: len(rx.staging_files()) == 3, 10, what="transfer start")
            time.sleep(0.3)
            b.restart()
            restarted.set()

        threading.Thread(target=restart_when_half_done, daemon=True).start()
        p = push(f, b, FaultyPusher, delay=0.05, timeout=40)
        o = outcome(p)
        assert restarted.is_set()
        assert o.state == "installed", o.message
        assert p.reconnects >= 1
        # resumed, not restarted: at most one window (8) of chunks was sent twice
        assert p.n_chunks <= o.chunks_sent <= p.n_chunks + 8
        assert (rx.models / "kid.bullet").read_bytes() == f.read_bytes()
    finally:
        rx.stop()
        b.stop()


# ----------------------------------------------------------------------------------------------
# full disk

def test_full_disk_by_file_size_limit_is_rejected_no_space(tmp_path, broker):
    keys = Keys(tmp_path)
    f = make_child(tmp_path / "k.bullet", keys.key, version="1")

    def limit():  # the receiver may not write files larger than 40 KB: fallocate gets EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))

    rx = ReceiverProc(tmp_path, broker, preexec_fn=limit).start()
    try:
        o = outcome(push(f, broker))
        assert (o.state, o.reason) == ("rejected", "no_space"), o.message
        assert "EFBIG" in o.message
        assert o.chunks_sent == 0
        assert rx.staging_files() == [] and not (rx.models / "kid.bullet").exists()
    finally:
        rx.stop()


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True)
    return r.returncode == 0


def test_full_disk_on_a_small_filesystem_is_rejected_no_space(tmp_path, broker):
    small = tmp_path / "small"
    if os.geteuid() != 0 or not _mount_tmpfs(small, "64k"):
        pytest.skip("cannot mount a tmpfs here (needs root); the file-size-limit test above "
                    "covers no_space")
    try:
        keys = Keys(tmp_path)
        f = make_child(tmp_path / "k.bullet", keys.key, version="1")   # 84 KB > 64 KB
        rx = ReceiverProc(tmp_path, broker, ota_dir=small / "ota", models=small / "models").start()
        try:
            o = outcome(push(f, broker))
            assert (o.state, o.reason) == ("rejected", "no_space"), o.message
            assert "bytes free" in o.message
            assert o.chunks_sent == 0
        finally:
            rx.stop()
    finally:
        subprocess.run(["umount", str(small)], check=False)


# ----------------------------------------------------------------------------------------------
# fleets

def test_fleet_push_reaches_every_device_and_reports_each(tmp_path, broker):
    keys = Keys(tmp_path)
    v2 = make_child(tmp_path / "v2.bullet", keys.key, version="2")
    v3 = make_child(tmp_path / "v3.bullet", keys.key, version="3", seed=3)
    a = ReceiverProc(tmp_path, broker, device="a", groups=("lab",)).start()
    b = ReceiverProc(tmp_path, broker, device="b", groups=("lab", "x")).start()
    c = ReceiverProc(tmp_path, broker, device="c", groups=("other",)).start()
    try:
        # b already runs version 3: the fleet push of 2 is a downgrade there only
        b.models.mkdir(parents=True, exist_ok=True)
        shutil.copy(v3, b.models / "kid.bullet")
        shutil.copy(str(v3) + ".sig", b.models / "kid.bullet.sig")
        p = push(v2, broker, devices=(), fleet="lab", discover=1.0)
        assert sorted(p.outcomes) == ["a", "b"]
        assert p.outcomes["a"].state == "installed"
        assert (p.outcomes["b"].state, p.outcomes["b"].reason) == ("rejected", "downgrade")
        assert a.live_manifest()["version"] == "2"
        assert b.live_manifest()["version"] == "3"
        assert c.live_manifest() is None and c.staging_files() == []
    finally:
        for r in (a, b, c):
            r.stop()


# ----------------------------------------------------------------------------------------------
# SIGKILL during receive and install: the child is the old or the new version, never broken

CRASH_POINTS = ["after_chunk@3", "after_flush@1", "after_chunk@13", "after_received",
                "after_verified", "after_smoke", "before_journal", "after_journal",
                "journal_move@1", "journal_move@2", "journal_move@3", "after_rename",
                "after_install"]


def _check_disk(rx, keys, versions):
    """The live child verifies and is one of `versions`."""
    m = rx.live_manifest()
    assert m is not None
    assert verify_file(rx.models / "kid.bullet", keys.trust)["version"] in versions
    return m["version"]


def _recover_and_check(rx, keys, versions):
    """Run the receiver's start-up recovery on its own (as the daemon does before it loads
    children), then check: old or new version, verified; no temporary file; staging empty or
    one resumable transfer (its .part, .bits and .offer)."""
    r = subprocess.run([sys.executable, "-m", "bulletd.ota", "recover", "--models",
                        str(rx.models), "--ota-dir", str(rx.ota_dir)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    live = _check_disk(rx, keys, versions)
    assert rx.tmp_files() == []
    assert not (rx.ota_dir / "install.json").exists()
    files = rx.staging_files()
    if files:
        assert len({n.split(".")[0] for n in files}) == 1, files
        assert sorted(Path(n).suffix for n in files) == [".bits", ".offer", ".part"], files
    return live


def _install_v1(rx, v1):
    rx.models.mkdir(parents=True, exist_ok=True)
    shutil.copy(v1, rx.models / "kid.bullet")          # version 1 was installed earlier
    shutil.copy(str(v1) + ".sig", rx.models / "kid.bullet.sig")


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_sigkill_during_receive_or_install_leaves_old_or_new(tmp_path, broker, point):
    keys = Keys(tmp_path)
    v1 = make_child(tmp_path / "v1.bullet", keys.key, version="1")
    v2 = make_child(tmp_path / "v2.bullet", keys.key, version="2", seed=2)
    rx = ReceiverProc(tmp_path, broker)
    _install_v1(rx, v1)
    rx.start(env={"BULLETD_OTA_FAILPOINTS": point})
    result = {}
    pusher = threading.Thread(target=lambda: result.update(p=push(v2, broker, timeout=40)))
    pusher.start()
    try:
        assert rx.wait_exit(30) == -9, f"failpoint {point} was not reached"
        live = _recover_and_check(rx, keys, ("1", "2"))
        if point in ("journal_move@3", "after_rename", "after_install"):
            assert live == "2"   # the journal existed: recovery finished the install
        if point.startswith("after_chunk") or point == "after_flush@1":
            assert live == "1" and rx.staging_files()   # the partial transfer is kept
        rx.start(env={"BULLETD_OTA_FAILPOINTS": ""})
        pusher.join(40)
        o = outcome(result["p"])
        assert o.state == "installed", (point, o.message, rx.logtext()[-2000:])
        assert _check_disk(rx, keys, ("2",)) == "2"
        assert (rx.models / "kid.bullet").read_bytes() == v2.read_bytes()
        assert (rx.ota_dir / "previous" / "kid.bullet").read_bytes() == v1.read_bytes()
        assert rx.staging_files() == [] and rx.tmp_files() == []
        assert not (rx.ota_dir / "install.json").exists()
    finally:
        rx.stop()
        pusher.join(1)


def test_sigkill_at_random_moments_never_breaks_the_child(tmp_path, broker):
    keys = Keys(tmp_path)
    rng = random.Random(7)
    versions = [make_child(tmp_path / f"v{i}.bullet", keys.key, version=str(i), seed=i)
                for i in (1, 2, 3)]
    rx = ReceiverProc(tmp_path, broker)
    _install_v1(rx, versions[0])
    kills = 0
    try:
        for i, f in enumerate(versions[1:], start=2):
            result = {}
            t = threading.Thread(target=lambda: result.update(
                p=push(f, broker, FaultyPusher, delay=0.01, timeout=40)))
            rx.start()
            t.start()
            for _ in range(3):     # three SIGKILLs at random moments of the same push
                time.sleep(rng.uniform(0.05, 0.8))
                rx.kill()
                kills += 1
                _recover_and_check(rx, keys, (str(i - 1), str(i)))
                rx.start()
            t.join(40)
            o = outcome(result["p"])
            assert o.state == "installed", o.message
            assert _check_disk(rx, keys, (str(i),)) == str(i)
            assert rx.staging_files() == [] and rx.tmp_files() == []
            rx.stop()
        assert kills == 6
    finally:
        rx.stop()
