"""bulletd as a real process over its Unix socket: requests, streaming, every error code, the
registry (trust, eviction, keep-alive, unload while running, swap/rollback), admin checks by
SO_PEERCRED, SIGTERM drain, SIGHUP reload and the sd_notify messages."""
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from _daemon_util import SLOW, SLOW_ENV, TOPICS, DaemonProc, frame, make_child, make_kit, raw_request, read_replies
from bulletd.client import Client, DaemonError, DaemonUnavailable

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    """Signed tiny children with routing examples, a mother, a slow child, and the trust folder."""
    return make_kit(tmp_path_factory.mktemp("kit"))


def base_cfg(kit, models=None, **extra):
    cfg = {"model_dir": str(models or kit["models"]), "trust": {"keys": [str(kit["trust"])]}, "device_id": "t1"}
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg


@pytest.fixture(scope="module")
def shared(kit, tmp_path_factory):
    d = DaemonProc(tmp_path_factory.mktemp("shared"), base_cfg(kit)).start()
    yield d
    d.stop()


def err(replies):
    final = [r for r in replies if r.get("final")]
    assert len(final) == 1, replies
    assert final[0]["ok"] is False, final[0]
    return final[0]["error"]["code"], final[0]["error"]["message"]


# ---------------------------------------------------------------- requests


def test_generate_through_the_mother_and_by_name(shared):
    with shared.client() as c:
        r = c.generate("recipe for tomato soup", max_tokens=12, seed=5)
        assert r.child == "cooking" and r.route["reason"] == "mother"
        assert r.tokens <= 12 and r.finish_reason in ("length", "eos")
        assert r.raw["device"] == "t1" and r.raw["version"] == "1.0.0"
        again = c.generate("recipe for tomato soup", max_tokens=12, seed=5)
        assert again.text == r.text                      # same seed, same tokens
        r2 = c.generate("anything", child="math", max_tokens=4, seed=1)
        assert r2.child == "math" and r2.route == {"reason": "explicit", "confidence": 1.0}
    # where the time went: the worker's wall and CPU time sit inside the request's total
    t = r.timing
    assert 0 < t["worker_cpu_ms"] <= t["worker_ms"] + 0.5
    assert t["queue_ms"] + t["worker_ms"] <= t["total_ms"] + 0.01
    assert t["first_ms"] <= t["worker_ms"] + 0.01


def test_streaming_sends_chunks_then_exactly_one_final(shared):
    req = {"id": "s1", "op": "generate", "child": "slow", "prompt": "hello", "max_tokens": 80,
           "temperature": 0.7, "seed": 3, "stream": True}
    replies = raw_request(shared.sock, req)
    chunks = [r for r in replies if not r["final"]]
    finals = [r for r in replies if r["final"]]
    assert len(finals) == 1 and finals[0]["ok"] is True and finals[0]["tokens"] > 0
    assert len(chunks) >= 2, replies
    assert [r["seq"] for r in replies] == list(range(len(replies)))
    assert all(r["id"] == "s1" for r in replies)
    whole = raw_request(shared.sock, {**req, "stream": False, "id": "s2"})[-1]
    assert "".join(c["text"] for c in chunks) == whole["text"]


def test_a_stream_sends_its_first_piece_at_once_and_later_ones_at_most_every_stream_gap(shared):
    """Each chunk wakes the daemon's event loop and the requester: after the first piece, the
    pieces of a fast child go out together, at most one chunk every STREAM_GAP (and the rest just
    before the final reply)."""
    from bulletd.daemon.scheduler import STREAM_GAP
    for seed in range(20):
        replies = raw_request(shared.sock, {"id": "g", "op": "generate", "child": "math", "prompt": "x",
                                            "max_tokens": 120, "seed": seed, "stream": True})
        if replies[-1]["tokens"] >= 60:
            break
    final, chunks = replies[-1], replies[:-1]
    assert final["ok"] and final["tokens"] >= 60, final
    assert chunks and all(not c["final"] for c in chunks)
    assert len(chunks) <= 2 + final["timing"]["worker_ms"] / (STREAM_GAP * 1e3), (len(chunks), final["timing"])
    whole = raw_request(shared.sock, {"id": "w", "op": "generate", "child": "math", "prompt": "x",
                                      "max_tokens": 120, "seed": seed})[-1]
    assert "".join(c["text"] for c in chunks) == whole["text"]


def test_one_blocking_client_shared_by_threads(shared):
    """The blocking client reads the socket in the calling thread (no thread of its own); threads
    sharing one client each get the replies to their own requests."""
    def ask(c, i):
        if i % 3 == 0:
            s = c.stream("hello", child="weather", max_tokens=20 + i, seed=i)
            return "".join(s), s.result.tokens
        if i % 3 == 1:
            r = c.generate("hello", child="cooking", max_tokens=20 + i, seed=i)
            return r.text, r.tokens
        return c.route("recipe for tomato soup")["decision"]["child"], 0

    before = threading.active_count()
    with shared.client() as c:
        assert threading.active_count() == before
        alone = [ask(c, i) for i in range(12)]
        got: dict[int, list] = {}

        def run(t):
            got[t] = [ask(c, i) for i in range(12)]
        ths = [threading.Thread(target=run, args=(t,)) for t in range(4)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(60)
    assert all(got[t] == alone for t in range(4)), got


def test_status_and_listing_fields(shared):
    with shared.client() as c:
        c.generate("x", child="weather", max_tokens=2)
        kids = {k["name"]: k for k in c.list()}
        st = c.status()
    assert {"cooking", "weather", "math", "slow"} <= set(kids)
    w = kids["weather"]
    for field in ("name", "version", "size", "signer", "loaded_since", "last_used", "requests", "active"):
        assert field in w, field
    assert w["version"] == "1.0.0" and w["size"] == (shared_kit_size := os.path.getsize(w["path"]))
    assert len(w["signer"]) == 16 and w["requests"] >= 1 and w["active"] == 0
    assert w["routable_by"] == "mother"
    assert st["mother"]["labels"] == list(TOPICS) and st["state"] == "online"
    assert st["memory"]["rss"] > 0 and st["memory"]["children_bytes"] >= shared_kit_size


@pytest.mark.parametrize("payload, code, needle", [
    (b"\xc1\xff\x00", "bad_request", "not valid msgpack (truncated or malformed)"),
    (b"\x91" * 60000 + b"\xc0", "bad_request", "nested more than"),
    ([1, 2, 3], "bad_request", "expected a map as the request, found list"),
    ({"op": "generate"}, "bad_request", "prompt: missing"),
    ({"op": "generate", "prompt": ["no"]}, "bad_request", "prompt: expected a string, found list"),
    ({"op": "generate", "prompt": "x", "max_tokens": -4}, "bad_request", "max_tokens must be between 1 and"),
    ({"op": "generate", "prompt": "x", "top_p": 7}, "bad_request", "top_p"),
    ({"op": "frobnicate"}, "bad_request", "op: expected one of"),
    ({"op": "generate", "prompt": "x", "child": "../../etc/passwd"}, "bad_request", "path separators"),
    ({"op": "generate", "prompt": "x", "child": "nosuch"}, "unknown_child", "no child named 'nosuch'"),
    ({"op": "generate", "prompt": "word " * 200, "child": "math"}, "too_long", "context is 128 tokens"),
    ({"op": "load", "name": "a/../../b"}, "bad_request", "expected a file ending in .bullet"),
    ({"op": "load", "path": "/nonexistent/x.bullet"}, "not_found", "/nonexistent/x.bullet"),
    ({"op": "unload", "name": "nosuch"}, "unknown_child", "not loaded"),
])
def test_bad_requests_get_one_clear_error_and_the_daemon_keeps_serving(shared, payload, code, needle):
    replies = raw_request(shared.sock, payload)
    got_code, msg = err(replies)
    assert got_code == code, msg
    assert needle in msg
    assert raw_request(shared.sock, {"op": "ping"})[-1]["pong"] is True


def test_malformed_requests_are_answered_with_their_id_and_seq_in_plain_words(shared):
    deep = {"id": "deep-1", "op": "generate", "prompt": "x", "stop": []}
    inner = deep["stop"]
    for _ in range(200):
        inner.append([])
        inner = inner[0]
    for req in (deep, {"id": 7, "op": "generate", "prompt": 5}, {"id": "s", "op": "generate", "prompt": "x",
                                                                "stop": [[1]]}):
        (r,) = raw_request(shared.sock, req)
        assert r["final"] and r["ok"] is False and r["error"]["code"] == "bad_request", r
        assert r["id"] == req["id"] and r["seq"] == 0, r
        assert "Error" not in r["error"]["message"], r
    (r,) = raw_request(shared.sock, b"\x81\xa2id\x05extra")                # extra bytes after the map
    assert r["error"]["code"] == "bad_request" and "extra bytes" in r["error"]["message"]
    assert "ExtraData" not in r["error"]["message"] and r["seq"] == 0 and "id" in r


def test_oversized_frame_is_refused_and_the_connection_closed(shared):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(shared.sock)
        s.sendall(struct.pack("!I", 10 << 20) + b"x" * 100)
        replies = read_replies(s)
        code, msg = err(replies)
        assert code == "too_large" and "limits.max_request_bytes" in msg
        assert replies[0]["seq"] == 0 and replies[0]["id"] is None   # the id could not be read
        s.settimeout(5)
        assert s.recv(10) == b""                     # closed
    assert raw_request(shared.sock, {"op": "ping"})[-1]["ok"] is True


def test_pipelined_requests_on_one_connection_are_answered_by_id(shared):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(shared.sock)
        s.sendall(b"".join(frame({"op": "generate", "id": i, "child": "math", "prompt": "hi", "max_tokens": 3})
                           for i in range(6)))
        replies = read_replies(s, until_final=6)
    assert sorted(r["id"] for r in replies if r["final"]) == list(range(6))
    assert all(r["ok"] for r in replies)


def test_a_peer_that_is_not_admin_cannot_load_or_unload(kit, tmp_path):
    sockdir = Path(f"/tmp/bulletd-test-{os.getpid()}-{time.monotonic_ns()}")
    sockdir.mkdir(mode=0o755)
    try:
        cfg = base_cfg(kit, socket={"path": str(sockdir / "b.sock"), "mode": 0o666, "group": "nogroup"})
        d = DaemonProc(tmp_path, cfg)
        d.sock = str(sockdir / "b.sock")
        d.cfg_path.write_text(yaml.safe_dump({**cfg, "log_level": "debug", "scheduler": {"workers": 2}}))
        d.start()
        try:
            script = ("import socket,sys;s=socket.socket(socket.AF_UNIX);s.connect(sys.argv[1]);"
                      "s.sendall(bytes.fromhex(sys.argv[2]));s.settimeout(10);sys.stdout.write(s.recv(4096).hex())")
            out = {}
            for op in ({"op": "unload", "name": "math", "id": 1}, {"op": "ping", "id": 2}):
                p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                    "/usr/bin/python3", "-c", script, d.sock, frame(op).hex()],
                                   capture_output=True, text=True, timeout=30)
                assert p.returncode == 0, p.stderr
                out[op["op"]] = bytes.fromhex(p.stdout)
            assert b"forbidden" in out["unload"] and b"not an admin" in out["unload"]
            assert b"pong" in out["ping"]
            with d.client() as c:                         # root is an admin; math is still loaded
                assert "math" in [k["name"] for k in c.list() if k.get("loaded", True)]
            assert oct(os.stat(d.sock).st_mode & 0o777) == oct(0o666)
            assert os.stat(d.sock).st_gid == 65534                 # socket.group: nogroup
        finally:
            d.stop()
        # the same peer becomes an admin through socket.admin_groups
        cfg["socket"]["admin_groups"] = ["nogroup"]
        d.cfg_path.write_text(yaml.safe_dump({**cfg, "log_level": "debug", "scheduler": {"workers": 2}}))
        d.start()
        try:
            p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                "/usr/bin/python3", "-c", script, d.sock,
                                frame({"op": "unload", "name": "math", "id": 3}).hex()],
                               capture_output=True, text=True, timeout=30)
            reply = bytes.fromhex(p.stdout)
            assert b"unloaded" in reply and b"forbidden" not in reply, reply
        finally:
            d.stop()
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


# a peer of another uid (run with setpriv): opens N connections, pings on each, prints what each
# got (pong / busy), then for the accepted ones how long after the reply the daemon closed them
HOLDER = r"""
import json, select, socket, sys, time
path, n, hold, req = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), bytes.fromhex(sys.argv[4])
got, live = [], []
for i in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    try:
        s.sendall(req)
    except OSError:
        pass   # a refused connection may be closed before the request is written
    s.settimeout(10)
    data = b""
    while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
        try:
            chunk = s.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    got.append("pong" if b"pong" in data else "busy" if b"busy" in data else data.hex())
    if b"pong" in data:
        live.append((s, time.monotonic()))
print(json.dumps(got), flush=True)
closed, end = [], time.monotonic() + hold
while live and time.monotonic() < end:
    ready, _, _ = select.select([s for s, _ in live], [], [], 0.05)
    for s, t0 in [c for c in live if c[0] in ready]:
        if s.recv(1) == b"":
            closed.append(round(time.monotonic() - t0, 2))
            live.remove((s, t0))
print(json.dumps(closed), flush=True)
"""


def _holder(sock, uid, n, hold):
    return subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "/usr/bin/python3",
                             "-c", HOLDER, sock, str(n), str(hold), frame({"op": "ping"}).hex()],
                            stdout=subprocess.PIPE, text=True)


def _eof_after(s, timeout=10.0):
    """Seconds until the peer closes `s` (None if it does not within timeout)."""
    t0 = time.monotonic()
    s.settimeout(timeout)
    try:
        while s.recv(4096):
            pass
    except socket.timeout:
        return None
    return time.monotonic() - t0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run peers as other uids (setpriv)")
def test_one_uid_cannot_take_every_connection_and_admins_keep_room(kit, tmp_path):
    sockdir = Path(f"/tmp/bulletd-test-{os.getpid()}-{time.monotonic_ns()}")
    sockdir.mkdir(mode=0o755)
    procs = []
    try:
        cfg = base_cfg(kit, socket={"path": str(sockdir / "b.sock"), "mode": 0o666, "max_connections": 8,
                                    "admin_reserved": 2, "max_per_uid": 3, "idle_timeout": 30})
        d = DaemonProc(tmp_path, cfg)
        d.sock = str(sockdir / "b.sock")
        try:
            d.start()
            procs.append(_holder(d.sock, 65534, 5, 20))
            assert json.loads(procs[-1].stdout.readline()) == ["pong"] * 3 + ["busy"] * 2   # max_per_uid
            procs.append(_holder(d.sock, 65533, 3, 20))
            assert json.loads(procs[-1].stdout.readline()) == ["pong"] * 3       # 6 = 8 - admin_reserved
            procs.append(_holder(d.sock, 65532, 1, 1))
            assert json.loads(procs[-1].stdout.readline()) == ["busy"]           # only admins now
            with d.client() as a, d.client() as b:                               # root: an admin
                assert a.ping()["pong"] and b.ping()["pong"]
            log = d.log()
            assert "refused a connection from uid=65534" in log and "socket.max_per_uid=3" in log
            assert "refused a connection from uid=65532" in log and "kept for admins" in log
            for p in procs:
                p.kill()
                p.wait()
            with d.client() as c:                                                # the slots are free again
                wait_until(lambda: c.status()["connections"]["open"] == 1, 10)
                assert c.status()["connections"]["refused"] == 3
            procs.append(_holder(d.sock, 65532, 1, 1))
            assert json.loads(procs[-1].stdout.readline()) == ["pong"]
        finally:
            d.stop()
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(sockdir, ignore_errors=True)


def wait_until(cond, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_idle_connections_and_partial_frames_time_out(kit, tmp_path):
    cfg = base_cfg(kit, socket={"path": str(tmp_path / "d.sock"), "idle_timeout": 1.0, "frame_timeout": 0.5})
    d = DaemonProc(tmp_path, cfg).start()
    try:
        with socket.socket(socket.AF_UNIX) as s:                 # sends nothing at all
            s.connect(d.sock)
            t = _eof_after(s)
            assert t is not None and 0.8 < t < 4, t
        with socket.socket(socket.AF_UNIX) as s:                 # half a length prefix
            s.connect(d.sock)
            s.sendall(b"\x00\x00")
            t = _eof_after(s)
            assert t is not None and 0.3 < t < 3, t
        with socket.socket(socket.AF_UNIX) as s:                 # a header, then half the body
            s.connect(d.sock)
            s.sendall(frame({"op": "ping", "id": 1})[:8])
            t = _eof_after(s)
            assert t is not None and 0.3 < t < 3, t
        with socket.socket(socket.AF_UNIX) as s:                 # busy with a long request: not idle
            s.connect(d.sock)
            s.sendall(frame({"op": "generate", "id": 1, "child": "slow", "prompt": "x", "max_tokens": 200,
                             "stream": True}))
            replies = read_replies(s, until_final=1, timeout=30)
            assert replies[-1]["ok"] is True, replies[-1]
        log = d.log()
        assert "socket.idle_timeout" in log and "socket.frame_timeout" in log
        with d.client() as c:                                    # the client reconnects after an idle close
            assert c.ping()["pong"]
            time.sleep(1.6)
            assert c.ping()["pong"]
    finally:
        d.stop()


def test_socket_file_mode_is_0660_by_default(shared):
    assert os.stat(shared.sock).st_mode & 0o777 == 0o660


# ---------------------------------------------------------------- registry


def test_trust_policy_refuses_unsigned_and_tampered_children(kit, tmp_path):
    models = tmp_path / "m"
    models.mkdir()
    good = make_child(models, "good", key=kit["key"], seed=1)
    make_child(models, "unsigned", key=None, seed=2)
    bad = make_child(models, "tampered", key=kit["key"], seed=3)
    data = bytearray(bad.read_bytes())
    data[-100] ^= 0xFF
    bad.write_bytes(bytes(data))
    (models / "junk.bullet").write_bytes(b"not a bullet file at all" * 10)
    d = DaemonProc(tmp_path, base_cfg(kit, models=models)).start()
    try:
        with d.client() as c:
            loaded = {k["name"]: k for k in c.list() if k.get("loaded", True)}
            assert set(loaded) == {"good"}, loaded
            with pytest.raises(DaemonError) as e:
                c.load("unsigned")
            assert e.value.code == "untrusted" and "is not signed" in e.value.message
            with pytest.raises(DaemonError) as e:
                c.load("tampered")
            assert e.value.code == "untrusted" and "hash_mismatch" in e.value.message
            with pytest.raises(DaemonError) as e:
                c.generate("x", child="tampered")
            assert e.value.code == "untrusted"
            assert c.generate("x", child="good", max_tokens=2).child == "good"
        assert good.exists()
        assert "child unsigned not loaded" in d.log()
    finally:
        d.stop()


def test_allow_unsigned_loads_unsigned_children_and_bad_files_are_bad_model(kit, tmp_path):
    models = tmp_path / "m"
    models.mkdir()
    make_child(models, "dev", key=None, seed=1)
    (models / "junk.bullet").write_bytes(b"{\"format\": \"bullet\"" + b"\x00" * 5000)
    shutil.copy(kit["models"] / "mother.bullet", models / "router_as_child.bullet")
    d = DaemonProc(tmp_path, base_cfg(kit, models=models, trust={"allow_unsigned": True})).start()
    try:
        with d.client() as c:
            kids = {k["name"]: k for k in c.list() if k.get("loaded", True)}
            assert kids["dev"]["signer"] is None
            with pytest.raises(DaemonError) as e:
                c.load("junk")
            assert e.value.code == "bad_model"
            with pytest.raises(DaemonError) as e:
                c.load("router_as_child")
            assert e.value.code == "bad_model" and "expected a child (kind 'lm'), found kind 'router'" in e.value.message
    finally:
        d.stop()


def test_small_budget_evicts_the_least_recently_used_idle_child(kit, tmp_path):
    size = os.path.getsize(kit["models"] / "math.bullet")
    budget_mb = (2.5 * size) / 2**20                          # room for two tiny children
    models = tmp_path / "m"
    models.mkdir()
    for name in ("cooking", "weather", "math"):
        shutil.copy(kit["models"] / f"{name}.bullet", models)
        shutil.copy(kit["models"] / f"{name}.bullet.sig", models)
    shutil.copy(kit["models"] / "slow.bullet", models)
    shutil.copy(kit["models"] / "slow.bullet.sig", models)
    d = DaemonProc(tmp_path, base_cfg(kit, models=models, registry={"memory_budget_mb": budget_mb, "preload": False})).start()
    try:
        with d.client() as c:
            c.generate("x", child="cooking", max_tokens=1)
            time.sleep(0.01)
            c.generate("x", child="weather", max_tokens=1)
            c.generate("x", child="cooking", max_tokens=1)     # weather is now the LRU
            c.generate("x", child="math", max_tokens=1)        # evicts weather
            loaded = sorted(k["name"] for k in c.list() if k.get("loaded", True))
            assert loaded == ["cooking", "math"]
            st = c.status()
            assert st["memory"]["evictions"] == 1 and st["memory"]["children_bytes"] <= st["memory"]["budget_bytes"]
            assert c.generate("x", child="weather", max_tokens=1).child == "weather"   # reloads on demand
            with pytest.raises(DaemonError) as e:
                c.generate("x", child="slow", max_tokens=1)
            assert e.value.code == "no_memory" and "larger than the whole memory budget" in e.value.message
        assert "evicting idle child weather" in d.log()
    finally:
        d.stop()


def test_keep_alive_unloads_idle_children_and_they_come_back_on_demand(kit, tmp_path):
    d = DaemonProc(tmp_path, base_cfg(kit, registry={"keep_alive": 0.6})).start()
    try:
        with d.client() as c:
            c.generate("x", child="math", max_tokens=1)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(k.get("loaded", True) for k in c.list()):
                time.sleep(0.2)
            assert not [k["name"] for k in c.list() if k.get("loaded", True)]
            assert c.generate("x", child="math", max_tokens=1).child == "math"
        assert "keep-alive: unloading math" in d.log()
    finally:
        d.stop()


def _start_stream(path, child, max_tokens, rid="long", **kw):
    """Open a connection, send a streaming generation, return (socket, thread collecting replies)."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(frame({"op": "generate", "id": rid, "child": child, "prompt": "once", "max_tokens": max_tokens,
                     "temperature": 0.9, "seed": 1, "stream": True, **kw}))
    box = {}
    th = threading.Thread(target=lambda: box.setdefault("r", read_replies(s, 1, 60)))
    th.start()
    return s, th, box


def _wait_first_chunk(d, child, timeout=10):
    end = time.monotonic() + timeout
    with d.client() as c:
        while time.monotonic() < end:
            if any(k["name"] == child and k.get("active") for k in c.list()):
                return
            time.sleep(0.01)
    raise AssertionError("the long generation never started")


def test_unload_with_cancel_ends_running_requests_with_an_error(kit, tmp_path):
    d = DaemonProc(tmp_path, base_cfg(kit), env=SLOW_ENV).start()
    try:
        s, th, box = _start_stream(d.sock, "slow", 250)
        _wait_first_chunk(d, "slow")
        with d.client() as c:
            r = c.unload("slow", mode="cancel")
        th.join(30)
        s.close()
        assert r["running"] == 1 and r["mode"] == "cancel"
        code, msg = err(box["r"])
        assert code == "cancelled" and "unloaded with cancel" in msg
    finally:
        d.stop()


def test_unload_with_wait_lets_running_requests_finish(kit, tmp_path):
    d = DaemonProc(tmp_path, base_cfg(kit), env=SLOW_ENV).start()
    try:
        s, th, box = _start_stream(d.sock, "slow", 120)
        _wait_first_chunk(d, "slow")
        with d.client() as c:
            r = c.unload("slow", mode="wait")
            assert "slow" not in [k["name"] for k in c.list() if k.get("loaded", True) and not k.get("retired")]
        th.join(30)
        s.close()
        final = box["r"][-1]
        assert final["final"] and final["ok"] is True and final["tokens"] > 0, final
        assert r["running"] == 1 and r["waited_ms"] > 0
    finally:
        d.stop()


def test_load_as_a_loaded_name_is_exists_unless_a_swap_is_asked_for(shared, kit, tmp_path):
    other = make_child(tmp_path, "other", key=kit["key"], seed=33, version="7.0.0")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "bulletd.cli", "--socket", shared.sock, *args],
                              capture_output=True, text=True, timeout=60)

    with shared.client() as c:
        before = c.generate("x", child="math", max_tokens=2).raw["version"]
        with pytest.raises(DaemonError) as e:
            c.load(str(other), "math")
        assert e.value.code == "exists" and "already loaded" in e.value.message
        assert c.generate("x", child="math", max_tokens=2).raw["version"] == before
        r = cli("load", str(other), "--as", "math")
        assert r.returncode == 1 and "error exists" in r.stderr, r.stderr
        assert c.generate("x", child="math", max_tokens=2).raw["version"] == before
        r = cli("load", str(other), "--as", "math", "--swap")
        assert r.returncode == 0, r.stderr
        assert c.generate("x", child="math", max_tokens=2).raw["version"] == "7.0.0"
        c.request("rollback", name="math")                       # leave the shared daemon as it was
        assert c.generate("x", child="math", max_tokens=2).raw["version"] == before
        with pytest.raises(DaemonError) as e:
            c.request("load", path=str(other), **{"as": "math", "swap": "yes"})
        assert e.value.code == "bad_request"


def test_swap_keeps_running_requests_on_the_old_version_and_rollback_restores_it(kit, tmp_path):
    d = DaemonProc(tmp_path, base_cfg(kit), env=SLOW_ENV).start()
    v2 = make_child(tmp_path, "slow-v2", key=kit["key"], arch=SLOW, seed=21, version="2.0.0")
    try:
        s, th, box = _start_stream(d.sock, "slow", 120)
        _wait_first_chunk(d, "slow")
        with d.client() as c:
            sw = c.request("swap", name="slow", path=str(v2))["swapped"]
            assert sw["version"] == "2.0.0" and sw["previous"].endswith("slow.bullet")
            assert c.generate("x", child="slow", max_tokens=2).raw["version"] == "2.0.0"
            th.join(30)
            s.close()
            assert box["r"][-1]["ok"] is True and box["r"][-1]["version"] == "1.0.0"
            rb = c.request("rollback", name="slow")["rolled_back"]
            assert rb["version"] == "1.0.0"
            assert c.generate("x", child="slow", max_tokens=2).raw["version"] == "1.0.0"
            unsigned = make_child(tmp_path, "slow-v3", key=None, seed=5, version="3.0.0")
            with pytest.raises(DaemonError) as e:                  # a bad file never replaces a good one
                c.request("swap", name="slow", path=str(unsigned))
            assert e.value.code == "untrusted"
            assert c.generate("x", child="slow", max_tokens=2).raw["version"] == "1.0.0"
    finally:
        d.stop()


def test_full_queue_answers_busy_at_once(kit, tmp_path):
    d = DaemonProc(tmp_path, base_cfg(kit, scheduler={"workers": 1, "max_queue": 1}), env=SLOW_ENV).start()
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(d.sock)
            t0 = time.monotonic()
            # a fixed seed: no run of the four can end early on an end-of-text token (the two
            # that run are checked below to reach max_tokens)
            s.sendall(b"".join(frame({"op": "generate", "id": i, "child": "slow", "prompt": "go", "max_tokens": 200,
                                      "seed": 11}) for i in range(4)))
            first = read_replies(s, 1, 30)
            first_at = time.monotonic() - t0
            rest = read_replies(s, 3, 60)
        finals = [r for r in first + rest if r["final"]]
        busy = [r for r in finals if not r["ok"] and r["error"]["code"] == "busy"]
        ok = [r for r in finals if r["ok"]]
        assert len(finals) == 4 and len(busy) == 2 and len(ok) == 2, finals
        assert all(r["finish_reason"] == "length" and r["tokens"] == 200 for r in ok), ok
        assert first[0]["ok"] is False and first[0]["error"]["code"] == "busy"   # answered before any generation ended
        assert "scheduler.max_queue" in busy[0]["error"]["message"]
        assert first_at < 1.0
    finally:
        d.stop()


def test_deadline_cancels_a_generation_with_timeout(shared):
    # a fixed seed that runs all 250 tokens (~40 ms natively): without one, a run that drew the
    # end-of-text token early could finish inside the 10 ms deadline
    replies = raw_request(shared.sock, {"op": "generate", "child": "slow", "prompt": "x", "max_tokens": 250,
                                        "seed": 11, "deadline": 0.01})
    code, msg = err(replies)
    assert code == "timeout" and "deadline of 0.01 s passed" in msg


def test_no_route_without_mother_examples_or_fallback_then_fallback(kit, tmp_path):
    models = tmp_path / "m"
    models.mkdir()
    make_child(models, "plain", key=kit["key"], seed=4)
    d = DaemonProc(tmp_path, base_cfg(kit, models=models)).start()
    try:
        code, msg = err(raw_request(d.sock, {"op": "generate", "prompt": "hello"}))
        assert code == "no_route" and "no fallback child is configured" in msg
        cfg = yaml.safe_load(d.cfg_path.read_text())
        cfg["router"] = {"fallback": "plain"}
        d.cfg_path.write_text(yaml.safe_dump(cfg))
        d.signal(signal.SIGHUP)
        end = time.monotonic() + 10
        while time.monotonic() < end and "configuration reloaded" not in d.log():
            time.sleep(0.05)
        r = raw_request(d.sock, {"op": "generate", "prompt": "hello", "max_tokens": 2})[-1]
        assert r["ok"] and r["child"] == "plain" and r["route"]["reason"] == "fallback"
    finally:
        d.stop()


def test_internal_errors_become_an_internal_reply_not_a_crash():
    import asyncio
    from bulletd.daemon.config import Config, override
    from bulletd.daemon.protocol import Peer
    from bulletd.daemon.service import Daemon

    async def go():
        d = Daemon(override(Config(), model_dir="/nonexistent", **{"trust.allow_unsigned": True}))
        d.accepting = True

        async def broken(req, emit, peer):
            raise ZeroDivisionError("boom")
        d.op_status = broken
        r = await d.handle({"op": "status"}, None, Peer("socket", True))
        ok = await d.handle({"op": "ping"}, None, Peer("socket", True))
        return r, ok
    r, ok = asyncio.run(go())
    assert r["ok"] is False and r["error"]["code"] == "internal" and "internal error: boom" in r["error"]["message"]
    assert "ZeroDivisionError" not in r["error"]["message"]      # plain words, the class is in the log
    assert ok["ok"] is True


# ---------------------------------------------------------------- lifecycle


def test_sigterm_drains_running_generation_and_refuses_new_work(kit, tmp_path):
    # weights read from the map each step (about 130 tok/s here, 5x slower than f32): the stream
    # must still be running when the second connection's requests arrive, also on a loaded machine
    d = DaemonProc(tmp_path, base_cfg(kit), env={**SLOW_ENV, "BULLET_NUMPY_WEIGHTS": "mapped"}).start()
    s, th, box = _start_stream(d.sock, "slow", 200)
    _wait_first_chunk(d, "slow")
    with socket.socket(socket.AF_UNIX) as other:
        other.connect(d.sock)
        other.sendall(frame({"op": "ping"}))
        assert read_replies(other)[-1]["pong"] is True      # accepted before the listener closes
        d.signal(signal.SIGTERM)
        time.sleep(0.2)
        other.sendall(frame({"op": "generate", "child": "math", "prompt": "x"}))
        code, msg = err(read_replies(other))
    th.join(30)
    s.close()
    assert code == "shutting_down"
    final = box["r"][-1]
    assert final["final"] and final["ok"] is True and final["tokens"] > 0
    assert d.proc.wait(20) == 0
    assert not os.path.exists(d.sock)


def test_sigterm_past_the_drain_timeout_cancels_with_a_final_error(kit, tmp_path):
    d = DaemonProc(tmp_path, base_cfg(kit, drain_timeout=0.2), env=SLOW_ENV).start()
    s, th, box = _start_stream(d.sock, "slow", 250)
    _wait_first_chunk(d, "slow")
    d.signal(signal.SIGTERM)
    th.join(30)
    s.close()
    code, msg = err(box["r"])
    assert code == "cancelled" and "daemon is stopping" in msg
    assert d.proc.wait(20) == 0


def _notify_listener(path):
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(path)
    ns.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    ns.settimeout(0.5)
    msgs = []
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                data, anc, _, _ = ns.recvmsg(4096, socket.CMSG_SPACE(12))
            except socket.timeout:
                continue
            except OSError:
                return
            pid = None
            for level, typ, cdata in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", cdata[:12])[0]
            msgs.append((time.monotonic(), pid, data.decode()))
    th = threading.Thread(target=loop, daemon=True)
    th.start()
    return ns, msgs, stop


def test_sd_notify_ready_watchdog_reload_and_stopping(kit, tmp_path):
    npath = str(tmp_path / "notify.sock")
    ns, msgs, stop = _notify_listener(npath)
    try:
        d = DaemonProc(tmp_path, base_cfg(kit), env={"NOTIFY_SOCKET": npath, "WATCHDOG_USEC": "400000"})
        d.start()
        end = time.monotonic() + 10
        while time.monotonic() < end and sum("WATCHDOG=1" in m for _, _, m in msgs) < 3:
            time.sleep(0.05)
        d.signal(signal.SIGHUP)
        time.sleep(0.5)
        rc = d.stop()
        time.sleep(0.3)
    finally:
        stop.set()
        ns.close()
    texts = [m for _, _, m in msgs]
    ready = [i for i, m in enumerate(texts) if "READY=1" in m]
    assert ready, texts
    assert "STATUS=serving" in texts[ready[0]] and f"MAINPID={d.proc.pid}" in texts[ready[0]]
    assert sum("WATCHDOG=1" in m for m in texts) >= 3
    reload_i = next(i for i, m in enumerate(texts) if "RELOADING=1" in m)
    assert "MONOTONIC_USEC=" in texts[reload_i] and any("READY=1" in m for m in texts[reload_i + 1:])
    assert "STOPPING=1" in texts[-1] or any("STOPPING=1" in m for m in texts[reload_i:])
    assert rc == 0
    assert {pid for _, pid, _ in msgs} == {d.proc.pid}       # NotifyAccess=main accepts only these
    wd = [t for t, _, m in msgs if m == "WATCHDOG=1"]
    gaps = [b - a for a, b in zip(wd, wd[1:])]
    assert gaps and max(gaps) < 0.4, gaps                     # pinged at half the period


def test_a_second_daemon_on_the_same_socket_fails_fast(shared, tmp_path):
    cfg = yaml.safe_load(shared.cfg_path.read_text())
    p = tmp_path / "dup.yaml"
    p.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "bulletd.daemon", "--config", str(p)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1
    assert f"another bulletd is already listening on {shared.sock}" in r.stderr
    assert raw_request(shared.sock, {"op": "ping"})[-1]["ok"]


def test_bad_config_exits_2_with_the_key_named(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("registry:\n  memory_budget_mb: -1\n")
    r = subprocess.run([sys.executable, "-m", "bulletd.daemon", "--config", str(p)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    assert "registry.memory_budget_mb: expected a number > 0, found -1.0" in r.stderr


def test_a_missing_model_dir_given_by_flag_or_config_exits_2_and_says_so(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bulletd.daemon", "--models", str(tmp_path / "nonexistent"),
                        "--socket", str(tmp_path / "s.sock")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert f"model_dir {tmp_path / 'nonexistent'} does not exist (from --models)" in r.stderr
    (tmp_path / "afile").write_text("x")
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"model_dir": str(tmp_path / "afile"), "socket": {"path": str(tmp_path / "s.sock")}}))
    r = subprocess.run([sys.executable, "-m", "bulletd.daemon", "--config", str(p)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "is not a directory (from model_dir in the config)" in r.stderr, r.stderr
    assert not (tmp_path / "s.sock").exists()


def test_symlinks_out_of_the_model_dir_are_neither_listed_nor_loaded(kit, tmp_path):
    models, elsewhere = tmp_path / "m", tmp_path / "elsewhere"
    models.mkdir()
    elsewhere.mkdir()
    make_child(models, "good", key=kit["key"], seed=1)
    target = make_child(elsewhere, "target", key=kit["key"], seed=2)
    for suffix in ("", ".sig"):
        (models / f"evil.bullet{suffix}").symlink_to(f"{target}{suffix}")
        (models / f"alias.bullet{suffix}").symlink_to(f"good.bullet{suffix}")   # inside: fine
    d = DaemonProc(tmp_path, base_cfg(kit, models=models)).start()
    try:
        with d.client() as c:
            assert sorted(k["name"] for k in c.list()) == ["alias", "good"]
            with pytest.raises(DaemonError) as e:
                c.generate("x", child="evil", max_tokens=2)
            assert e.value.code == "unknown_child"
            with pytest.raises(DaemonError) as e:
                c.load("evil")
            assert e.value.code == "unknown_child"
            assert c.generate("x", child="alias", max_tokens=2).child == "alias"
        assert "a symlink to" in d.log() and "outside the model dir" in d.log()
    finally:
        d.stop()


def test_client_reports_a_daemon_that_is_not_running(tmp_path):
    with pytest.raises(DaemonUnavailable, match="bulletd is not running: no socket at"):
        Client(str(tmp_path / "none.sock"))


def test_load_and_unload_while_requests_run_never_lose_a_reply(kit, tmp_path):
    d = DaemonProc(tmp_path, base_cfg(kit)).start()
    results: list[str] = []
    stop = threading.Event()

    def load_loop(child):
        with d.client(timeout=30) as c:
            while not stop.is_set():
                try:
                    c.generate("go", child=child, max_tokens=8)
                    results.append("ok")
                except DaemonError as e:
                    results.append(e.code)
    threads = [threading.Thread(target=load_loop, args=(ch,)) for ch in ("math", "math", "cooking")]
    try:
        for t in threads:
            t.start()
        with d.client() as c:
            for i in range(8):
                c.unload("math", mode="wait")
                c.load("math")
                try:
                    c.unload("cooking", mode="cancel")
                except DaemonError as e:        # it may be reloading on demand right now
                    assert e.code == "unknown_child"
                time.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        d.stop()
    assert len(results) > 20
    # a cancelled request is the documented outcome of unload --cancel; nothing else may fail
    assert set(results) <= {"ok", "cancelled"}, sorted(set(results))
    assert results.count("ok") > len(results) // 2


def test_unreadable_trusted_key_fails_start_with_its_path(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "broken.pem").write_text("-----BEGIN PUBLIC KEY-----\nnope\n")
    r = subprocess.run([sys.executable, "-m", "bulletd.daemon", "--trust", str(keys), "--socket",
                        str(tmp_path / "s.sock"), "--models", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "cannot start" in r.stderr and "broken.pem" in r.stderr


def test_sighup_with_a_broken_config_keeps_the_running_one(kit, tmp_path):
    d = DaemonProc(tmp_path, base_cfg(kit)).start()
    try:
        good = d.cfg_path.read_text()
        d.cfg_path.write_text(good + "registry: {unload_mode: sometimes}\n")
        d.signal(signal.SIGHUP)
        end = time.monotonic() + 10
        while time.monotonic() < end and "reload failed" not in d.log():
            time.sleep(0.05)
        assert "reload failed, keeping the running config" in d.log()
        assert "registry.unload_mode: expected wait or cancel" in d.log()
        assert raw_request(d.sock, {"op": "generate", "child": "math", "prompt": "x", "max_tokens": 2})[-1]["ok"]
    finally:
        d.stop()


def test_a_child_dropped_into_the_model_dir_is_routable_after_a_reload(kit, tmp_path):
    models = tmp_path / "m"
    shutil.copytree(kit["models"], models)
    (models / "slow.bullet").unlink()
    d = DaemonProc(tmp_path, base_cfg(kit, models=models)).start()
    try:
        prompt = "prune the roses and water the garden beds"
        make_child(models, "garden", key=kit["key"], seed=11,
                   examples=["plant tomatoes in spring", "water the garden roses", "prune the apple tree branches",
                             "compost for the vegetable beds", "mow the lawn and rake leaves"])
        with d.client() as c:
            assert c.route(prompt)["decision"]["child"] != "garden"
            c.request("reload")
            dec = c.route(prompt)["decision"]
            assert (dec["child"], dec["reason"]) == ("garden", "examples"), dec
            assert c.generate(prompt, max_tokens=2).child == "garden"
    finally:
        d.stop()


def test_threads_per_request_per_child_and_the_cap(kit, tmp_path):
    """A request's `threads` (at most scheduler.max_threads), else the child's entry in
    scheduler.child_threads, else scheduler.threads; the reply says which, and the text is the same."""
    cfg = base_cfg(kit, scheduler={"threads": 1, "max_threads": 2, "child_threads": {"cooking": 2}})
    d = DaemonProc(tmp_path, cfg).start()
    try:
        with d.client() as c:
            runs = {n: c.generate("recipe for tomato soup", child="cooking", max_tokens=24, seed=3, threads=n)
                    for n in (1, 2)}
            default = c.generate("recipe for tomato soup", child="cooking", max_tokens=24, seed=3)
            other = c.generate("will it rain", child="weather", max_tokens=4, seed=3)
            assert [runs[1].raw["threads"], runs[2].raw["threads"], default.raw["threads"]] == [1, 2, 2]
            assert other.raw["threads"] == 1
            assert runs[1].text == runs[2].text == default.text and runs[1].tokens == runs[2].tokens > 0
            for bad, why in ((3, "threads: at most 2 on this device (scheduler.max_threads), found 3"),
                             (65, "threads must be 0 (the model's default) or 1 to 64, got 65"), (-1, "threads")):
                with pytest.raises(DaemonError) as e:
                    c.generate("recipe", child="cooking", max_tokens=4, threads=bad)
                assert e.value.code == "bad_request" and why in e.value.message
            assert c.ping()["pong"] is True
    finally:
        d.stop()
