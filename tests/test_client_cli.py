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
