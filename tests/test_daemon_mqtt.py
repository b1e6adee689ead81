"""bulletd against a real Mosquitto broker: MQTT v5 request/response with Correlation Data,
msgpack and JSON, the MQTT 3.1.1 fallback, streaming, error replies, retained status with the
Last Will, fleet mode with two daemons, and the broker killed and restarted under load."""
import asyncio
import json
import os
import subprocess
import time
import uuid

import aiomqtt
import msgpack
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from _daemon_util import SLOW_ENV, DaemonProc, make_kit
from bulletd.client import AsyncClient, Client, DaemonUnavailable

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    return make_kit(tmp_path_factory.mktemp("mkit"))


def mqtt_daemon(tmp_path, kit, broker, device="dev1", name="d", env=None, **mqtt):
    cfg = {"model_dir": str(kit["models"]), "trust": {"keys": [str(kit["trust"])]}, "device_id": device,
           "limits": {"max_request_bytes": 8192},
           "mqtt": {"host": broker.host, "port": broker.port, "reconnect_min": 0.1, "reconnect_max": 0.5,
                    "keepalive": 5, **mqtt}}
    d = DaemonProc(tmp_path, cfg, name=name, env=env).start()
    wait_connected(d)
    return d


def wait_connected(d, n=1, timeout=20):
    end = time.monotonic() + timeout
    with d.client() as c:
        while time.monotonic() < end:
            m = c.status()["mqtt"]
            if m["state"] == "connected" and m["connects"] >= n and m.get("fleet_state", "connected") == "connected":
                return
            time.sleep(0.05)
    raise AssertionError(f"daemon not connected to the broker {n} time(s):\n{d.log()}")


class Raw:
    """A plain aiomqtt client that records every message on its reply topic."""

    def __init__(self, broker, v5=True, name=None):
        self.b, self.v5 = broker, v5
        self.reply = f"test/replies/{name or uuid.uuid4().hex[:8]}"
        self.msgs: list[tuple[bytes | None, object, object]] = []   # (corr, decoded payload, properties)

    async def __aenter__(self):
        self.c = aiomqtt.Client(self.b.host, self.b.port, protocol=aiomqtt.ProtocolVersion.V5 if self.v5
                                else aiomqtt.ProtocolVersion.V311, identifier=f"raw-{uuid.uuid4().hex[:8]}")
        await self.c.__aenter__()
        await self.c.subscribe(self.reply, qos=1)
        self.task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc):
        self.task.cancel()
        try:
            await self.c.__aexit__(None, None, None)
        except Exception:
            pass

    async def _read(self):
        try:
            async for m in self.c.messages:
                p = bytes(m.payload)
                obj = json.loads(p) if p[:1] == b"{" else msgpack.unpackb(p, raw=False)
                corr = getattr(m.properties, "CorrelationData", None) if m.properties else None
                self.msgs.append((corr, obj, m.properties))
        except aiomqtt.MqttError:
            pass

    async def send(self, topic, obj=None, *, raw=None, corr=None, ct=None, reply=True):
        props = None
        if self.v5:
            props = Properties(PacketTypes.PUBLISH)
            if reply:
                props.ResponseTopic = self.reply
            if corr is not None:
                props.CorrelationData = corr
            if ct:
                props.ContentType = ct
        payload = raw if raw is not None else (json.dumps(obj).encode() if ct == "application/json"
                                                else msgpack.packb(obj))
        await self.c.publish(topic, payload, qos=1, properties=props)

    def finals(self, key=None, by="corr"):
        out = []
        for corr, obj, props in self.msgs:
            if not obj.get("final"):
                continue
            if key is None or (corr if by == "corr" else obj.get("id")) == key:
                out.append(obj)
        return out

    async def wait(self, cond, timeout=15):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out; got {[o for _, o, _ in self.msgs]}")


async def test_v5_msgpack_reply_carries_correlation_data_and_content_type(tmp_path, kit, broker):
    d = mqtt_daemon(tmp_path, kit, broker)
    try:
        async with Raw(broker) as r:
            corr = b"\x01corr-123"
            await r.send("bullet/dev1/req", {"child": "math", "prompt": "hi", "max_tokens": 4, "seed": 1}, corr=corr)
            await r.wait(lambda: r.finals(corr))
            corr_, obj, props = r.msgs[-1]
            assert corr_ == corr and props.ContentType == "application/msgpack"
            assert obj["ok"] is True and obj["child"] == "math" and obj["device"] == "dev1" and obj["seq"] == 0
            assert len(r.finals(corr)) == 1
    finally:
        d.stop()


async def test_json_by_content_type_and_mosquitto_rr_by_hand(tmp_path, kit, broker):
    d = mqtt_daemon(tmp_path, kit, broker)
    try:
        async with Raw(broker) as r:
            await r.send("bullet/dev1/req", {"id": "j1", "child": "weather", "prompt": "hi", "max_tokens": 3},
                         corr=b"j", ct="application/json")
            await r.wait(lambda: r.finals(b"j"))
            assert r.msgs[-1][2].ContentType == "application/json"
            assert r.msgs[-1][1]["id"] == "j1" and r.msgs[-1][1]["ok"] is True
        out = subprocess.run(["mosquitto_rr", "-p", str(broker.port), "-V", "5", "-t", "bullet/dev1/req",
                              "-e", "test/rr", "-m", '{"op": "route", "prompt": "recipe for tomato soup"}', "-W", "10"],
                             capture_output=True, text=True, timeout=20)
        reply = json.loads(out.stdout)
        assert reply["ok"] and reply["decision"]["child"] == "cooking" and reply["decision"]["reason"] == "mother"
    finally:
        d.stop()


async def test_mqtt311_client_uses_reply_to_and_id_in_the_payload(tmp_path, kit, broker):
    d = mqtt_daemon(tmp_path, kit, broker)
    try:
        async with Raw(broker, v5=False) as r:
            await r.send("bullet/dev1/req", {"id": "old-1", "reply_to": r.reply, "child": "math", "prompt": "x",
                                             "max_tokens": 3})
            await r.send("bullet/dev1/req", {"id": "old-2", "reply_to": r.reply, "child": "zzz", "prompt": "x"},
                         ct="application/json")
            await r.wait(lambda: r.finals("old-1", by="id") and r.finals("old-2", by="id"))
            assert r.finals("old-1", by="id")[0]["ok"] is True
            bad = r.finals("old-2", by="id")[0]
            assert bad["ok"] is False and bad["error"]["code"] == "unknown_child"
        # the daemon itself can also speak 3.1.1
        d2 = mqtt_daemon(tmp_path, kit, broker, device="dev311", name="d311", protocol="3.1.1")
        try:
            with Client.mqtt(broker.host, broker.port, device="dev311", protocol="3.1.1", timeout=20) as c:
                assert c.generate("x", child="math", max_tokens=2).raw["device"] == "dev311"
        finally:
            d2.stop()
    finally:
        d.stop()


async def test_streaming_over_mqtt_chunks_then_one_final(tmp_path, kit, broker):
    d = mqtt_daemon(tmp_path, kit, broker)
    try:
        async with Raw(broker) as r:
            await r.send("bullet/dev1/req", {"child": "slow", "prompt": "go", "max_tokens": 80, "seed": 2,
                                             "stream": True}, corr=b"s")
            await r.wait(lambda: r.finals(b"s"), timeout=30)
            mine = [o for c, o, _ in r.msgs if c == b"s"]
            assert [o["seq"] for o in mine] == list(range(len(mine)))
            assert sum(o["final"] for o in mine) == 1 and mine[-1]["final"] and mine[-1]["ok"]
            assert len(mine) >= 3
        async with AsyncClient.mqtt(broker.host, broker.port, device="dev1", json_payloads=True) as c:
            s = c.stream("go", "slow", max_tokens=80, seed=2)
            pieces = [p async for p in s]
            assert "".join(pieces) == "".join(o.get("text", "") for o in mine[:-1])
            assert s.result.tokens == mine[-1]["tokens"]
    finally:
        d.stop()


async def test_bad_mqtt_payloads_get_error_replies_and_the_daemon_keeps_serving(tmp_path, kit, broker):
    d = mqtt_daemon(tmp_path, kit, broker)
    try:
        async with Raw(broker) as r:
            cases = {
                b"1": dict(raw=b"\xc1\xc1\xc1"),
                b"2": dict(raw=b"{not json", ct="application/json"),
                b"3": dict(obj={"prompt": 42}),
                b"4": dict(obj={"prompt": "x", "child": "../../x"}),
                b"5": dict(raw=msgpack.packb({"prompt": "y" * 20000})),
                b"6": dict(obj={"op": "unload", "name": "math"}),
                b"7": dict(obj={"prompt": "x", "child": "nosuch"}),
                b"8": dict(obj={"prompt": "x", "child": "math", "max_tokens": 0}),
            }
            await r.send("bullet/dev1/req", {"prompt": "no reply topic"}, reply=False)   # dropped, logged
            for corr, kw in cases.items():
                await r.send("bullet/dev1/req", corr=corr, **kw)
            await r.wait(lambda: all(r.finals(c) for c in cases))
            codes = {c: r.finals(c)[0]["error"]["code"] for c in cases}
            assert codes == {b"1": "bad_request", b"2": "bad_request", b"3": "bad_request", b"4": "bad_request",
                             b"5": "too_large", b"6": "forbidden", b"7": "unknown_child", b"8": "bad_request"}
            assert "not valid msgpack" in r.finals(b"1")[0]["error"]["message"]
            assert "limits.max_request_bytes" in r.finals(b"5")[0]["error"]["message"]
            assert all(len(r.finals(c)) == 1 for c in cases)
            await r.send("bullet/dev1/req", {"child": "math", "prompt": "ok", "max_tokens": 2}, corr=b"ok")
            await r.wait(lambda: r.finals(b"ok"))
            assert r.finals(b"ok")[0]["ok"] is True
        assert "no usable reply topic" in d.log()
    finally:
        d.stop()


async def test_deeply_nested_payloads_get_exactly_one_bad_request(tmp_path, kit, broker):
    d = mqtt_daemon(tmp_path, kit, broker)
    try:
        async with Raw(broker) as r:
            deep_json = b"[" * 4000 + b"]" * 4000                       # past the recursion limit
            mid_json = json.dumps({"id": "m1", "prompt": "x", "stop": json.loads("[" * 100 + "]" * 100)})
            await r.send("bullet/dev1/req", raw=deep_json, corr=b"j", ct="application/json")
            await r.send("bullet/dev1/req", raw=b'{"a":' * 1200 + b"1" + b"}" * 1200, corr=b"o")
            await r.send("bullet/dev1/req", raw=mid_json.encode(), corr=b"m", ct="application/json")
            await r.send("bullet/dev1/req", raw=b"\x91" * 5000 + b"\xc0", corr=b"p")   # msgpack
            await r.wait(lambda: all(r.finals(c) for c in (b"j", b"o", b"m", b"p")))
            await asyncio.sleep(0.3)
            for c in (b"j", b"o", b"m", b"p"):
                (f,) = r.finals(c)
                assert f["error"]["code"] == "bad_request", f
                assert "nested more than" in f["error"]["message"], f
                assert f["seq"] == 0
            assert r.finals(b"m")[0]["id"] == "m1"                      # readable, so echoed
        assert "Traceback" not in d.log() and "RecursionError" not in d.log()
        with d.client() as c:
            assert c.ping()
    finally:
        d.stop()


async def test_json_lone_surrogates_get_one_bad_request_not_silence(tmp_path, kit, broker):
    """JSON's "\\ud800" escape makes a string with no UTF-8: in an id it once broke the reply's
    encoding (no final reply at all), in a prompt the tokenizer (an internal error)."""
    d = mqtt_daemon(tmp_path, kit, broker)
    try:
        async with Raw(broker) as r:
            cases = {b"id": b'{"id":"a\\ud800","child":"math","prompt":"hi","max_tokens":2}',
                     b"prompt": b'{"child":"math","prompt":"x\\udcff","max_tokens":2}',
                     b"key": b'{"child":"math","prompt":"x","\\ud800":1}'}
            for corr, raw in cases.items():
                await r.send("bullet/dev1/req", raw=raw, corr=corr, ct="application/json")
            await r.send("bullet/dev1/req", raw=b'{"child":"math","prompt":"\\ud83d\\ude00","max_tokens":2}',
                         corr=b"pair", ct="application/json")
            await r.wait(lambda: all(r.finals(c) for c in (*cases, b"pair")))
            await asyncio.sleep(0.3)
            for c in cases:
                (f,) = r.finals(c)
                assert f["error"]["code"] == "bad_request" and "surrogate" in f["error"]["message"], f
            assert r.finals(b"pair")[0]["ok"] is True          # a surrogate pair is a real character
        assert "Traceback" not in d.log()
    finally:
        d.stop()


def _retained_status(broker, device):
    out = subprocess.run(["mosquitto_sub", "-p", str(broker.port), "-t", f"bullet/{device}/status", "-C", "1",
                          "-W", "5"], capture_output=True, text=True, timeout=15)
    return json.loads(out.stdout)


def test_status_is_retained_online_then_offline_on_graceful_stop(tmp_path, kit, broker):
    d = mqtt_daemon(tmp_path, kit, broker)
    st = _retained_status(broker, "dev1")
    assert st["state"] == "online" and set(st["children"]) >= {"math", "slow"} and st["memory"]["rss"] > 0
    assert d.stop() == 0
    assert _retained_status(broker, "dev1")["state"] == "offline"


def test_last_will_marks_a_killed_daemon_offline(tmp_path, kit, broker):
    d = mqtt_daemon(tmp_path, kit, broker)
    assert _retained_status(broker, "dev1")["state"] == "online"
    d.kill()
    end = time.monotonic() + 10
    while time.monotonic() < end:
        st = _retained_status(broker, "dev1")
        if st["state"] == "offline":
            break
        time.sleep(0.1)
    assert st == {"state": "offline", "device": "dev1", "reason": "connection lost"}


async def test_two_daemons_share_a_fleet_subscription(tmp_path, kit, broker):
    a = mqtt_daemon(tmp_path, kit, broker, device="fa", name="fa", fleet={"enabled": True, "group": "g1"})
    b = mqtt_daemon(tmp_path, kit, broker, device="fb", name="fb", fleet={"enabled": True, "group": "g1"})
    try:
        async with Raw(broker) as r:
            corrs = [f"f{i}".encode() for i in range(16)]
            for c in corrs:
                await r.send("bullet/fleet/req", {"child": "math", "prompt": "x", "max_tokens": 2}, corr=c)
            await r.wait(lambda: all(r.finals(c) for c in corrs), timeout=30)
            assert all(len(r.finals(c)) == 1 for c in corrs)          # each served by exactly one daemon
            devices = [r.finals(c)[0]["device"] for c in corrs]
            assert set(devices) == {"fa", "fb"}, devices
            assert min(devices.count("fa"), devices.count("fb")) >= 4
    finally:
        a.stop()
        b.stop()


async def test_broker_killed_and_restarted_while_requests_flow(tmp_path, kit, broker):
    d = mqtt_daemon(tmp_path, kit, broker, env=SLOW_ENV)
    try:
        finals_by_corr: dict[bytes, int] = {}

        def count(r):
            for corr, obj, _ in r.msgs:
                if obj.get("final"):
                    finals_by_corr[corr] = finals_by_corr.get(corr, 0) + 1
        r1 = Raw(broker, name="flow")
        await r1.__aenter__()
        inflight = [f"a{i}".encode() for i in range(2)]
        for c in inflight:
            await r1.send("bullet/dev1/req", {"child": "slow", "prompt": "go", "max_tokens": 150, "stream": True},
                          corr=c)
        await r1.wait(lambda: any(c in inflight for c, _, _ in r1.msgs), timeout=20)   # generating now
        broker.stop(kill=True)
        # the local API does not wait for the broker
        with d.client() as c:
            assert c.ping()["pong"] is True
            assert c.status()["mqtt"]["state"] == "disconnected"
            assert c.generate("x", child="math", max_tokens=2).child == "math"
        await r1.__aexit__()
        count(r1)
        time.sleep(1.0)
        broker.start()
        wait_connected(d, n=2)
        async with Raw(broker, name="flow") as r2:
            after = [f"b{i}".encode() for i in range(5)]
            for c in after:
                await r2.send("bullet/dev1/req", {"child": "math", "prompt": "x", "max_tokens": 2}, corr=c)
            await r2.wait(lambda: all(r2.finals(c) for c in after), timeout=20)
            await asyncio.sleep(0.5)       # late replies of the killed session would show up here
            count(r2)
        assert all(finals_by_corr.get(c) == 1 for c in after), finals_by_corr
        assert all(finals_by_corr.get(c, 0) <= 1 for c in inflight), finals_by_corr   # never twice
        assert "MQTT connection lost" in d.log()
        # a client that was connected when the broker died gets a clear error, not a hang. Its
        # request goes to a device that a silent subscriber takes and never answers, so nothing
        # but the lost connection can end it (a reply cannot race the kill, however fast the
        # machine or whatever else is running)
        t0 = time.monotonic()
        with pytest.raises(DaemonUnavailable, match="lost before the final reply|could not publish"):
            async with Raw(broker) as silent, AsyncClient.mqtt(broker.host, broker.port, device="nobody",
                                                              timeout=20) as c:
                await silent.c.subscribe("bullet/nobody/req", qos=1)
                t = asyncio.create_task(c.generate("go", "slow", max_tokens=250))
                await asyncio.sleep(0.15)
                broker.stop(kill=True)
                await t
        assert time.monotonic() - t0 < 10      # the loss ended it, not the 20 s timeout
        broker.start()
    finally:
        d.stop()


def test_tls_with_username_and_password_from_the_config(tmp_path, kit):
    """A broker that takes only TLS with a password: the daemon, and its OTA receiver on a
    connection of its own, connect with the CA, user and password file from its config; a wrong
    password leaves it disconnected (and logged) while the socket keeps serving."""
    import shutil as _sh
    from conftest import _wait_port, free_port
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    certs = tmp_path / "certs"
    subprocess.run(["sh", os.path.join(root, "deploy", "mosquitto", "make-certs.sh"), str(certs), "localhost",
                    "127.0.0.1"], check=True, capture_output=True, timeout=60)
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "dev1", "s3cret"], check=True, capture_output=True)
    os.chmod(pw, 0o600)
    port = free_port()
    conf = tmp_path / "tls.conf"
    conf.write_text(f"listener {port} 127.0.0.1\ncafile {certs}/ca.crt\ncertfile {certs}/server.crt\n"
                    f"keyfile {certs}/server.key\nallow_anonymous false\npassword_file {pw}\n"
                    # the test folder is private to root: keep root so the broker can read it
                    "persistence false\nset_tcp_nodelay true\nuser root\n")
    broker = subprocess.Popen([_sh.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        secret = tmp_path / "mqtt.pass"
        secret.write_text("s3cret\n")
        base = {"model_dir": str(kit["models"]), "trust": {"keys": [str(kit["trust"])]}, "device_id": "dev1"}
        mq = {"host": "127.0.0.1", "port": port, "username": "dev1", "password_file": str(secret),
              "tls": {"enabled": True, "ca_file": str(certs / "ca.crt")}, "reconnect_min": 0.1, "reconnect_max": 0.5}
        d = DaemonProc(tmp_path, {**base, "mqtt": mq}, name="tls").start()
        try:
            wait_connected(d)
            with d.client() as c:
                end = time.monotonic() + 20
                while not c.status()["ota"].get("connected") and time.monotonic() < end:
                    time.sleep(0.05)
                assert c.status()["ota"]["connected"], d.log()
            with Client.mqtt("127.0.0.1", port, device="dev1", tls=True, ca_file=str(certs / "ca.crt"),
                             username="dev1", password="s3cret", timeout=20) as c:
                assert c.generate("x", child="math", max_tokens=2).raw["device"] == "dev1"
        finally:
            d.stop()
        secret.write_text("wrong\n")
        d = DaemonProc(tmp_path, {**base, "mqtt": mq}, name="tls-bad").start()
        try:
            time.sleep(1.0)
            with d.client() as c:
                m = c.status()["mqtt"]
                assert m["state"] == "disconnected" and m["connects"] == 0
                assert m["last_error"] and ("auth" in m["last_error"].lower() or "not authorized" in m["last_error"].lower()
                                            or "bad user" in m["last_error"].lower()), m
                assert c.generate("x", child="math", max_tokens=2).child == "math"
        finally:
            d.stop()
    finally:
        broker.terminate()
        broker.wait(10)


async def test_repeated_and_retained_requests_are_not_served_twice(tmp_path, kit, broker):
    d = mqtt_daemon(tmp_path, kit, broker)
    try:
        async with Raw(broker) as r:
            req = {"child": "math", "prompt": "x", "max_tokens": 2}
            await r.send("bullet/dev1/req", req, corr=b"same")
            await r.send("bullet/dev1/req", req, corr=b"same")         # what a redelivery looks like
            await r.send("bullet/dev1/req", req, corr=b"other")
            await r.wait(lambda: r.finals(b"same") and r.finals(b"other"))
            await asyncio.sleep(0.5)
            assert len(r.finals(b"same")) == 1 and len(r.finals(b"other")) == 1
            with d.client() as c:
                assert c.status()["mqtt"]["duplicates"] == 1
                dropped = c.status()["mqtt"]["dropped"]
            # a request published with retain while the daemon is subscribed: dropped as well
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = r.reply
            props.CorrelationData = b"live-retained"
            await r.c.publish("bullet/dev1/req", msgpack.packb(req), qos=1, retain=True, properties=props)
            await r.send("bullet/dev1/req", req, corr=b"after")
            await r.wait(lambda: r.finals(b"after"))
            assert not r.finals(b"live-retained")
            with d.client() as c:
                assert c.status()["mqtt"]["dropped"] == dropped + 1
            await r.c.publish("bullet/dev1/req", b"", qos=1, retain=True)      # clear it
            # a retained request reaches every new subscription (with the retain flag set): a
            # daemon subscribing for the first time must not run it
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = r.reply
            props.CorrelationData = b"kept"
            await r.c.publish("bullet/devR/req", msgpack.packb(req), qos=1, retain=True, properties=props)
            d2 = mqtt_daemon(tmp_path, kit, broker, device="devR", name="devR")
            try:
                await asyncio.sleep(0.5)
                assert not r.finals(b"kept")
                await r.c.publish("bullet/devR/req", b"", qos=1, retain=True)   # clear it
                with d2.client() as c:
                    assert c.status()["mqtt"]["dropped"] >= 1
                assert "dropped a retained message" in d2.log()
            finally:
                d2.stop()
    finally:
        d.stop()


async def test_requests_sent_while_the_daemon_is_down_are_served_after_it_restarts(tmp_path, kit, broker):
    d = mqtt_daemon(tmp_path, kit, broker)
    d.stop()
    async with Raw(broker) as r:
        await r.send("bullet/dev1/req", {"child": "math", "prompt": "x", "max_tokens": 2}, corr=b"late")
        await asyncio.sleep(0.2)
        assert not r.finals(b"late")
        d.start()                  # same client id, clean_start=false: the broker kept the session
        try:
            await r.wait(lambda: r.finals(b"late"), timeout=20)
            assert r.finals(b"late")[0]["ok"] is True and len(r.finals(b"late")) == 1
        finally:
            d.stop()


async def test_a_request_held_by_a_killed_daemon_is_served_after_its_restart(tmp_path, kit, broker):
    """A QoS 1 request is acknowledged only once it is served: SIGKILL during its generation
    leaves it in the daemon's broker session, and the restarted daemon answers it, once."""
    d = mqtt_daemon(tmp_path, kit, broker, env=SLOW_ENV)
    try:
        async with Raw(broker) as r:
            await r.send("bullet/dev1/req", {"child": "slow", "prompt": "x", "max_tokens": 250, "seed": 11},
                         corr=b"held")
            with d.client() as c:
                end = time.monotonic() + 10
                while c.status()["inflight"] == 0:
                    assert time.monotonic() < end, d.log()
                    time.sleep(0.02)
            d.kill()
            assert not r.finals(b"held")
            d.start()
            await r.wait(lambda: r.finals(b"held"), timeout=40)
            await asyncio.sleep(0.5)
            assert len(r.finals(b"held")) == 1 and r.finals(b"held")[0]["ok"] is True
    finally:
        d.stop()


def test_a_request_no_daemon_is_subscribed_to_is_unavailable_at_once(broker):
    """The broker's PUBACK says "No matching subscribers" (MQTT v5): the client raises
    DaemonUnavailable at once instead of waiting for its timeout."""
    with Client.mqtt(broker.host, broker.port, device="nobody", timeout=20) as c:
        t0 = time.monotonic()
        with pytest.raises(DaemonUnavailable, match="no bulletd is subscribed to bullet/nobody/req"):
            c.generate("x", max_tokens=2)
        assert time.monotonic() - t0 < 5


async def test_a_killed_fleet_member_takes_no_share_of_later_requests(tmp_path, kit, broker):
    """The fleet subscription lives on a session that ends with its connection: once a member is
    SIGKILLed, the broker gives every fleet request to the members still there."""
    a = mqtt_daemon(tmp_path, kit, broker, device="fa", name="fa", fleet={"enabled": True, "group": "g1"})
    b = mqtt_daemon(tmp_path, kit, broker, device="fb", name="fb", fleet={"enabled": True, "group": "g1"})
    try:
        a.kill()
        await asyncio.sleep(0.5)
        async with Raw(broker) as r:
            corrs = [f"k{i}".encode() for i in range(8)]      # within fb's queue: none is busy
            for c in corrs:
                await r.send("bullet/fleet/req", {"child": "math", "prompt": "x", "max_tokens": 2}, corr=c)
            await r.wait(lambda: all(r.finals(c) for c in corrs), timeout=15)
            got = [[(x.get("device"), x.get("ok")) for x in r.finals(c)] for c in corrs]
            assert got == [[("fb", True)]] * len(corrs), got
    finally:
        a.stop()
        b.stop()
