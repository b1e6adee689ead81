"""OTA inside the real daemon: hot swap under continuous load, rollback, forced local install,
push results in `bulletd-cli list`, and SIGKILL of the daemon during an install.

The daemon runs as `python -m bulletd.daemon --config FILE` (tests/_daemon_util.DaemonProc),
pushes come from the real pusher through a real Mosquitto, requests through the Unix socket.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bulletd.client import DaemonError
from bulletd.signing import verify_file
from _daemon_util import DaemonProc
from _ota_util import Keys, make_child, make_mother, push, wait_for

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parent.parent


def start_daemon(tmp, broker, keys, *, env=None, name="d", first=None):
    models = tmp / "models"
    models.mkdir(exist_ok=True)
    if first is not None:   # version 1 shipped with the device
        shutil.copy(first, models / "kid.bullet")
        shutil.copy(str(first) + ".sig", models / "kid.bullet.sig")
    cfg = {"device_id": "dev1", "model_dir": str(models), "trust": {"keys": [str(keys.trust)]},
           "mqtt": {"host": "127.0.0.1", "port": broker.port},
           "ota": {"chunk_timeout": 0.5, "stall_timeout": 5.0, "min_free_mb": 0}}
    d = DaemonProc(tmp, cfg, env=env, name=name).start()
    try:
        with d.client() as c:   # the OTA connection is up when the status says so
            wait_for(lambda: c.status()["ota"].get("connected"), 15, what="OTA connection")
    except BaseException:
        d.kill()
        raise
    return d


def version_of(d, name="kid"):
    with d.client() as c:
        r = c.generate("hello", child=name, max_tokens=2, temperature=0)
    return r.raw["version"]


class Load:
    """Clients that send generate requests back to back and record every outcome."""

    def __init__(self, d, n=4):
        self.d, self.stop = d, threading.Event()
        self.results: list[tuple[float, str, str]] = []   # (time, "ok"/error code, version)
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]

    def _run(self):
        with self.d.client(timeout=30) as c:
            while not self.stop.is_set():
                try:
                    r = c.generate("the cat sat", child="kid", max_tokens=12, temperature=0)
                    self.results.append((time.monotonic(), "ok", r.raw["version"]))
                except DaemonError as exc:
                    self.results.append((time.monotonic(), exc.code, ""))
                except Exception as exc:  # the test reports it rather than losing it
                    self.results.append((time.monotonic(), type(exc).__name__, ""))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)


def test_hot_swap_under_continuous_load_fails_no_request(tmp_path, broker):
    keys = Keys(tmp_path)
    v1 = make_child(tmp_path / "v1.bullet", keys.key, version="1")
    v2 = make_child(tmp_path / "v2.bullet", keys.key, version="2", seed=2)
    v3 = make_child(tmp_path / "v3.bullet", keys.key, version="3", seed=3)
    d = start_daemon(tmp_path, broker, keys, first=v1)
    try:
        with Load(d) as load:
            time.sleep(0.5)
            p2 = push(v2, broker)
            t2 = time.monotonic()
            time.sleep(0.5)
            t3_start = time.monotonic()
            p3 = push(v3, broker)
            t3 = time.monotonic()
            time.sleep(0.5)
        assert p2.outcomes["dev1"].state == "installed", p2.outcomes["dev1"].message
        assert p3.outcomes["dev1"].state == "installed", p3.outcomes["dev1"].message
        failed = [r for r in load.results if r[1] != "ok"]
        assert failed == [], failed[:5]
        assert len(load.results) > 50
        versions = [v for _, _, v in load.results]
        assert {"1", "2", "3"} <= set(versions)
        # after the "installed" status no new request may get the old version: requests that
        # finish later than 0.2 s after it must be the new one
        late = [v for t, _, v in load.results if t2 + 0.2 < t < t3_start]
        assert late and set(late) == {"2"}
        assert versions[-1] == "3"
        assert verify_file(tmp_path / "models" / "kid.bullet", keys.trust)["version"] == "3"
    finally:
        d.stop()


def test_rollback_and_forced_local_downgrade_through_bulletd_cli(tmp_path, broker):
    keys = Keys(tmp_path)
    v1 = make_child(tmp_path / "v1.bullet", keys.key, version="1")
    v2 = make_child(tmp_path / "v2.bullet", keys.key, version="2", seed=2)
    d = start_daemon(tmp_path, broker, keys, first=v1)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "bulletd.cli", "--socket", d.sock, *args],
                              capture_output=True, text=True, timeout=60, cwd=ROOT)

    try:
        assert push(v2, broker).outcomes["dev1"].state == "installed"
        assert version_of(d) == "2"
        r = cli("rollback", "kid")
        assert r.returncode == 0, r.stderr
        assert "kid is now version 1" in r.stdout
        assert version_of(d) == "1"
        assert (tmp_path / "models" / "kid.bullet").read_bytes() == v1.read_bytes()
        # anti-rollback still holds after a local rollback: 2 was seen, 1 is not higher
        o = push(v2, broker).outcomes["dev1"]
        assert (o.state, o.reason) == ("rejected", "replay")
        r = cli("rollback", "kid")                  # a second rollback undoes the first
        assert r.returncode == 0 and version_of(d) == "2"
        other1 = make_child(tmp_path / "other1.bullet", keys.key, version="1", seed=9)
        r = cli("install", str(other1))             # a downgrade needs --force
        assert r.returncode == 1 and "error downgrade" in r.stderr, r.stderr
        r = cli("install", str(other1), "--force")
        assert r.returncode == 0, r.stderr
        assert version_of(d) == "1"
        assert (tmp_path / "models" / "kid.bullet").read_bytes() == other1.read_bytes()
        r = cli("status")
        assert "ota       connected" in r.stdout and "1 child(ren) installed by OTA" in r.stdout
        r = cli("--json", "list")
        kid = [c for c in json.loads(r.stdout) if c["name"] == "kid"][0]
        assert kid["version"] == "1" and kid["ota"]["state"] == "installed"
    finally:
        d.stop()


def test_list_shows_a_rejected_push_with_its_reason(tmp_path, broker):
    keys = Keys(tmp_path)
    v1 = make_child(tmp_path / "v1.bullet", keys.key, version="1")
    bad = make_child(tmp_path / "bad.bullet", keys.key, version="2", seed=2, bad_vectors=True)
    d = start_daemon(tmp_path, broker, keys, first=v1)
    try:
        o = push(bad, broker).outcomes["dev1"]
        assert (o.state, o.reason) == ("rejected", "smoke_test_failed")
        assert version_of(d) == "1"
        r = subprocess.run([sys.executable, "-m", "bulletd.cli", "--socket", d.sock, "list"],
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert "last OTA push of kid: 2 rejected (smoke_test_failed:" in r.stdout
    finally:
        d.stop()


@pytest.mark.parametrize("point,expect_after_restart", [("after_chunk@5", "1"),
                                                        ("after_journal", "2"),
                                                        ("journal_move@3", "2")])
def test_daemon_sigkill_during_push_restarts_whole(tmp_path, broker, point, expect_after_restart):
    keys = Keys(tmp_path)
    v1 = make_child(tmp_path / "v1.bullet", keys.key, version="1")
    v2 = make_child(tmp_path / "v2.bullet", keys.key, version="2", seed=2)
    d = start_daemon(tmp_path, broker, keys, first=v1, env={"BULLETD_OTA_FAILPOINTS": point})
    result = {}
    t = threading.Thread(target=lambda: result.update(p=push(v2, broker, timeout=60)))
    t.start()
    try:
        assert d.proc.wait(30) == -9
        d._log.close()
        d.env["BULLETD_OTA_FAILPOINTS"] = ""
        d.start()
        # the daemon recovered before it loaded anything: it serves a whole child at once
        assert version_of(d) in ("1", "2")
        if expect_after_restart == "2":
            assert version_of(d) == "2"
        t.join(60)
        assert result["p"].outcomes["dev1"].state == "installed"
        wait_for(lambda: version_of(d) == "2", 10, what="version 2 serving")
        staging = tmp_path / "models" / ".ota" / "staging"
        assert sorted(staging.iterdir()) == []
    finally:
        d.stop()
        t.join(1)


def test_pushed_mother_replaces_the_router_and_a_bad_one_is_refused(tmp_path, broker):
    keys = Keys(tmp_path)
    v1 = make_child(tmp_path / "v1.bullet", keys.key, version="1")
    m1 = make_mother(tmp_path / "m1.bullet", keys.key, version="1")
    (tmp_path / "models").mkdir()
    shutil.copy(m1, tmp_path / "models" / "mother.bullet")
    shutil.copy(str(m1) + ".sig", tmp_path / "models" / "mother.bullet.sig")
    d = start_daemon(tmp_path, broker, keys, first=v1)
    try:
        with d.client() as c:
            assert c.status()["mother"]["version"] == "1"
        bad = make_mother(tmp_path / "bad.bullet", keys.key, version="2", wrong_label=True)
        o = push(bad, broker).outcomes["dev1"]
        assert (o.state, o.reason) == ("rejected", "smoke_test_failed")
        assert "routes to 'kid', expected 'other'" in o.message
        m2 = make_mother(tmp_path / "m2.bullet", keys.key, version="3", seed=1)
        o = push(m2, broker).outcomes["dev1"]
        assert o.state == "installed", o.message
        with d.client() as c:
            st = c.status()
            assert st["mother"]["version"] == "3"
            assert "mother" not in st["children"]   # it routes; it is not a child
            assert c.route("once upon a time a cat")["decision"]["child"] == "kid"
    finally:
        d.stop()


def test_a_rejected_install_raises_no_high_water_mark(tmp_path, broker):
    """A signed file of the wrong kind named mother fails only at the swap; the previous mother
    stays and so does the anti-rollback mark: a later genuine, lower version still installs,
    by push and by `bulletd-cli install` alike."""
    keys = Keys(tmp_path)
    v1 = make_child(tmp_path / "v1.bullet", keys.key, version="1")
    m1 = make_mother(tmp_path / "m1.bullet", keys.key, version="1")
    (tmp_path / "models").mkdir()
    shutil.copy(m1, tmp_path / "models" / "mother.bullet")
    shutil.copy(str(m1) + ".sig", tmp_path / "models" / "mother.bullet.sig")
    d = start_daemon(tmp_path, broker, keys, first=v1)
    ledger = tmp_path / "models" / ".ota" / "ledger.json"

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "bulletd.cli", "--socket", d.sock, *args],
                              capture_output=True, text=True, timeout=60, cwd=ROOT)

    try:
        wrong = make_child(tmp_path / "wrong9.bullet", keys.key, name="mother", version="9.0.0")
        o = push(wrong, broker).outcomes["dev1"]
        assert (o.state, o.reason) == ("rejected", "swap_failed"), o.message
        assert (tmp_path / "models" / "mother.bullet").read_bytes() == m1.read_bytes()
        hw = json.loads(ledger.read_text())["children"].get("mother", {}).get("high_water")
        assert hw in (None, "1"), hw
        m2 = make_mother(tmp_path / "m2.bullet", keys.key, version="2", seed=1)
        o = push(m2, broker).outcomes["dev1"]
        assert o.state == "installed", o.message
        # the same through the local install command
        wrong8 = make_child(tmp_path / "wrong8.bullet", keys.key, name="mother", version="8", seed=3)
        r = cli("install", str(wrong8))
        assert r.returncode == 1 and "error swap_failed" in r.stderr, r.stderr
        assert json.loads(ledger.read_text())["children"]["mother"]["high_water"] == "2"
        m3 = make_mother(tmp_path / "m3.bullet", keys.key, version="3", seed=2)
        r = cli("install", str(m3))
        assert r.returncode == 0, r.stderr
        with d.client() as c:
            assert c.status()["mother"]["version"] == "3"
    finally:
        d.stop()


def test_a_mislabelled_offer_does_not_make_the_correct_one_a_replay(tmp_path, broker):
    """The signed manifest names the wrong version: name_mismatch. The same bytes signed
    correctly afterwards are a new offer, not a replay. Messages name the user's file, not the
    staging area."""
    keys = Keys(tmp_path)
    v1 = make_child(tmp_path / "v1.bullet", keys.key, version="1")
    v2 = make_child(tmp_path / "v2.bullet", keys.key, version="2", seed=2)
    d = start_daemon(tmp_path, broker, keys, first=v1)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "bulletd.cli", "--socket", d.sock, *args],
                              capture_output=True, text=True, timeout=60, cwd=ROOT)

    try:
        from bulletd.signing import sign_file
        sign_file(v2, keys.key, name="kid", version="3")       # header says 2
        r = cli("install", str(v2))
        assert r.returncode == 1 and "error name_mismatch" in r.stderr, r.stderr
        assert ".ota" not in r.stderr and "staging" not in r.stderr, r.stderr
        sign_file(v2, keys.key, name="kid", version="2")
        r = cli("install", str(v2))
        assert r.returncode == 0, r.stderr
        assert version_of(d) == "2"
        # a bad file's message names the file given, never .ota/staging/<sha>.part
        bad = make_child(tmp_path / "bad4.bullet", keys.key, version="4", seed=4, bad_vectors=True)
        r = cli("install", str(bad))
        assert r.returncode == 1 and "error smoke_test_failed" in r.stderr, r.stderr
        assert str(bad) in r.stderr and ".part" not in r.stderr and "staging" not in r.stderr, r.stderr
    finally:
        d.stop()
