"""bulletd-cli and bulletd.client against a real daemon: tables and --json, streaming to the
terminal, exit codes (1 = the daemon answered an error, 3 = no daemon), the async client."""
import asyncio
import json
import subprocess
import sys

import pytest

from _daemon_util import ROOT, TOPICS, DaemonProc, make_child, make_kit
from bulletd.client import AsyncClient, Client, DaemonError, DaemonUnavailable

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    t = tmp_path_factory.mktemp("cli")
    k = make_kit(t, slow=False)
    key, trust, models = k["key"], k["trust"], k["models"]
    extra = make_child(t, "extra", key=key, seed=7, version="3.1.4",
                       examples=["plant tomatoes in spring", "water the garden roses", "prune the apple tree"])
    d = DaemonProc(t, {"model_dir": str(models), "trust": {"keys": [str(trust)]}, "device_id": "clidev"}).start()
    d.extra = extra
    yield d
    d.stop()


def cli(d, *args, sock=None, stdin=None):
    return subprocess.run([sys.executable, "-m", "bulletd.cli", "--socket", sock or d.sock, *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, input=stdin)


def test_list_table_and_json(daemon):
    r = cli(daemon, "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["NAME", "VERSION", "SIZE", "STATE"]
    row = next(line for line in lines if line.startswith("math"))
    assert "1.0.0" in row and "loaded" in row and "mother" in row
    j = json.loads(cli(daemon, "--json", "ps").stdout)
    assert {c["name"] for c in j} >= set(TOPICS)
    assert all(len(c["signer"]) == 16 for c in j if c.get("loaded", True))


def test_status_shows_children_mother_and_memory(daemon):
    r = cli(daemon, "status")
    assert r.returncode == 0, r.stderr
    assert "device    clidev" in r.stdout or "clidev" in r.stdout
    assert "mother" in r.stdout and "3 labels" in r.stdout and "mqtt      off" in r.stdout
    s = json.loads(cli(daemon, "--json", "status").stdout)
    assert s["device"] == "clidev" and s["mqtt"] == {"enabled": False}


def test_route_prints_decision_and_scores(daemon):
    r = cli(daemon, "route", "recipe for tomato soup")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].split() == ["child", "cooking"]
    assert "reason      mother" in r.stdout and "mother scores:" in r.stdout and "weather" in r.stdout
    j = json.loads(cli(daemon, "--json", "route", "recipe for tomato soup").stdout)
    assert j["decision"]["child"] == "cooking" and j["decision"]["elapsed_ms"] < 50


def test_generate_streams_to_stdout_and_summarises_on_stderr(daemon):
    r = cli(daemon, "generate", "hello", "--child", "math", "--max-tokens", "6", "--seed", "4")
    assert r.returncode == 0, r.stderr
    with daemon.client() as c:
        ref = c.generate("hello", child="math", max_tokens=6, seed=4)
    assert r.stdout == ref.text + "\n"
    assert "[math via explicit, " in r.stderr and "tokens" in r.stderr
    j = json.loads(cli(daemon, "--json", "generate", "-", "--child", "math", "--max-tokens", "6", "--seed", "4",
                       stdin="hello").stdout)
    assert j["text"] == ref.text and j["tokens"] == ref.tokens


def test_load_unload_and_a_child_routable_by_its_examples(daemon):
    r = cli(daemon, "load", str(daemon.extra))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("loaded extra v3.1.4")
    j = json.loads(cli(daemon, "--json", "route", "water the roses and prune the tree").stdout)
    assert j["decision"]["child"] == "extra" and j["decision"]["reason"] == "examples"
    r = cli(daemon, "unload", "extra", "--cancel")
    assert r.returncode == 0 and "unloaded extra v3.1.4" in r.stdout and "mode cancel" in r.stdout


def test_error_reply_exits_1_with_the_code(daemon):
    r = cli(daemon, "generate", "x", "--child", "nosuch")
    assert r.returncode == 1
    assert "bulletd-cli: error unknown_child: no child named 'nosuch'" in r.stderr
    r = cli(daemon, "unload", "../x")
    assert r.returncode == 1 and "error bad_request" in r.stderr


def test_no_daemon_exits_3_with_a_clear_message(daemon, tmp_path):
    r = cli(daemon, "status", sock=str(tmp_path / "gone.sock"))
    assert r.returncode == 3
    assert "bulletd is not running: no socket at" in r.stderr and "gone.sock" in r.stderr


def test_blocking_and_async_clients_stream(daemon):
    with Client(daemon.sock) as c:
        s = c.stream("hello", child="weather", max_tokens=10, seed=2)
        text = "".join(s)
        assert s.result.tokens > 0 and s.result.text == text and s.result.child == "weather"
        with pytest.raises(DaemonError) as e:
            c.generate("x", child="zz")
        assert e.value.code == "unknown_child"

    async def go():
        async with AsyncClient.socket(daemon.sock) as c:
            r1, r2 = await asyncio.gather(c.generate("a", "math", max_tokens=3, seed=1),
                                          c.generate("b", "cooking", max_tokens=3, seed=1))
            s = c.stream("hello", "weather", max_tokens=10, seed=2)
            pieces = [p async for p in s]
            return r1, r2, "".join(pieces)
    r1, r2, streamed = asyncio.run(go())
    assert (r1.child, r2.child) == ("math", "cooking") and streamed == text


def test_no_final_reply_within_the_timeout_is_a_clear_error(tmp_path):
    """A peer that reads the request and never answers: the client gives up after its timeout
    with DaemonUnavailable, forgets the request, and a late reply would find no waiter."""
    path = str(tmp_path / "silent.sock")
    seen = []

    async def silent(reader, writer):
        seen.append(await reader.read(4))
        await asyncio.sleep(10)

    async def go():
        loop = asyncio.get_running_loop()
        srv = await asyncio.start_unix_server(silent, path)
        async with srv:
            async with AsyncClient.socket(path, timeout=0.3) as c:
                t0 = loop.time()
                with pytest.raises(DaemonUnavailable, match=r"no final reply from bulletd within 0\.3 s"):
                    await c.ping()
                took = loop.time() - t0
                return took, dict(c.t.waiting)
    took, waiting = asyncio.run(go())
    assert seen and len(seen[0]) == 4          # the request did reach the peer
    assert 0.25 <= took < 2.0 and waiting == {}


def test_reload_command_rereads_the_config(daemon):
    r = cli(daemon, "reload")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"reloaded {daemon.cfg_path}"
    assert "configuration reloaded from" in daemon.log()


# ---------------------------------------------------------------------- what users see on errors

def test_a_refused_connection_exits_3_in_one_line(tmp_path):
    """The daemon turns a connection away (its connection table is full): exit 3, one line."""
    import socket

    k = make_kit(tmp_path, slow=False)
    d = DaemonProc(tmp_path, {"model_dir": str(k["models"]), "trust": {"keys": [str(k["trust"])]},
                              "socket": {"path": str(tmp_path / "d.sock"), "max_connections": 5}}).start()
    held = []
    try:
        for _ in range(200):   # fill the table, whatever room the daemon keeps, until it refuses one
            s = socket.socket(socket.AF_UNIX)
            s.connect(d.sock)
            s.settimeout(0.3)
            try:
                s.recv(1)          # a refused connection is answered (or closed) at once
                s.close()
                if held:           # (not the ready probe's connection, still being closed)
                    break
            except socket.timeout:
                held.append(s)     # accepted and waiting for a request
        else:
            pytest.fail("bulletd never refused a connection")
        for args in (["status"], ["generate", "-"]):
            r = cli(d, *args, stdin="x" * 300_000)
            assert r.returncode == 3, r.stderr
            assert r.stderr.startswith("bulletd-cli: cannot reach bulletd") and "Traceback" not in r.stderr
            assert len(r.stderr.strip().splitlines()) == 1 and "Error" not in r.stderr
        r = cli(d, "--json", "ping")
        assert r.returncode == 3 and json.loads(r.stdout)["error"]["code"] == "unreachable"
    finally:
        for s in held:
            s.close()
        d.stop()


def test_a_peer_that_drops_the_connection_mid_request_is_unreachable(tmp_path):
    """A daemon that goes away while a large request is being written: DaemonUnavailable, not a
    ConnectionResetError or BrokenPipeError."""
    path = str(tmp_path / "drop.sock")

    async def drop(reader, writer):
        await reader.read(4)
        writer.close()

    async def go():
        srv = await asyncio.start_unix_server(drop, path)
        async with srv:
            async with AsyncClient.socket(path, timeout=5) as c:
                with pytest.raises(DaemonUnavailable, match="cannot reach bulletd: it closed the connection"):
                    await c.generate("x" * 4_000_000)
    asyncio.run(go())


def test_a_prompt_over_the_frame_limit_is_too_large_said_plainly(daemon):
    r = cli(daemon, "generate", "-", "--child", "math", stdin="word " * 200_000)   # 1 MB from stdin
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("bulletd-cli: error too_large: ") and "larger than the limit" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli(daemon, "--json", "generate", "-", "--child", "math", stdin="word " * 200_000)
    assert r.returncode == 1 and json.loads(r.stdout)["error"]["code"] == "too_large"


def test_output_closed_early_ends_quietly(daemon):
    """`bulletd-cli list | head`: the reader leaves; no traceback, no error line, status 141."""
    for args in (["list"], ["generate", "hello", "--child", "math", "--max-tokens", "20"]):
        p = subprocess.Popen([sys.executable, "-m", "bulletd.cli", "--socket", daemon.sock, *args], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        p.stdout.close()
        err = p.stderr.read()
        assert p.wait(60) == 141 and err == "", err


def test_errors_are_json_with_json(daemon, tmp_path):
    r = cli(daemon, "--json", "generate", "x", "--child", "nosuch")
    assert r.returncode == 1 and r.stderr == ""
    e = json.loads(r.stdout)
    assert e["ok"] is False and e["error"]["code"] == "unknown_child"
    assert e["error"]["message"].startswith("no child named 'nosuch'")
    r = cli(daemon, "--json", "status", sock=str(tmp_path / "gone.sock"))
    e = json.loads(r.stdout)["error"]
    assert r.returncode == 3 and e["code"] == "unreachable" and "gone.sock" in e["message"]
    r = cli(daemon, "--json", "generate")
    assert r.returncode == 2 and json.loads(r.stdout)["error"]["code"] == "usage"
    r = cli(daemon, "--json", "--mqtt", "127.0.0.1:1", "--password-file", str(tmp_path / "nope"), "status")
    e = json.loads(r.stdout)["error"]
    assert r.returncode == 2 and e["message"].endswith("nope: No such file or directory")
    r = cli(daemon, "--mqtt", "broker:port", "status")
    assert r.returncode == 2 and "expected HOST[:PORT]" in r.stderr and "Traceback" not in r.stderr
    r = cli(daemon, "--mqtt", f"127.0.0.1:{_free_port()}", "status")
    assert r.returncode == 3 and "cannot reach the MQTT broker" in r.stderr and "Errno" not in r.stderr


def test_bench_options_reach_the_daemon_benchmark(daemon, tmp_path):
    """`bulletd-cli bench --quick --json --broker` are the benchmark's own options."""
    models = daemon.tmp / "models"
    r = cli(daemon, "bench", "--quick", "--json", "--route", str(models))
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["prompts"] == sum(len(v) for v in TOPICS.values()) and j["mother"] is True
    port = _free_port()
    r = cli(daemon, "bench", "--quick", "--broker", f"127.0.0.1:{port}")
    assert r.returncode == 3 and f"cannot reach the broker 127.0.0.1:{port}" in r.stderr
    r = cli(daemon, "bench", "--json", "--broker", f"127.0.0.1:{port}")
    assert r.returncode == 3 and json.loads(r.stdout)["error"]["code"] == "unreachable"
    r = cli(daemon, "bench", "--broker", "host:port")
    assert r.returncode == 2 and "expected HOST:PORT" in r.stderr
    r = cli(daemon, "--json", "bench", "--route", str(tmp_path / "none"))
    assert r.returncode == 2 and "no such folder" in json.loads(r.stdout)["error"]["message"]


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
