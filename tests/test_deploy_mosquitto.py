"""The example broker config (deploy/mosquitto/) against a real mosquitto: TLS works with the CA
made by make-certs.sh, logins come from a mosquitto_passwd file, and the ACL lets each device
read only its own topics and only the trainer push models.

Run: pytest tests/test_deploy_mosquitto.py -q

Negative checks need no sleeps: every publish is QoS 1 and awaited (the broker has handled it,
allowed or dropped, once the PUBACK is back), then an allowed "fence" message is sent on the
same subscription; when the fence arrives, any forbidden message would have arrived before it.
"""
from __future__ import annotations

import asyncio
import json
import ssl
import uuid

import aiomqtt
import pytest

from _deploy_util import TLSBroker, make_certs, stop_daemon

USERS = {"dev1": "pw-dev1", "dev2": "pw-dev2", "trainer": "pw-trainer", "app1": "pw-app1"}


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    b = TLSBroker(tmp_path_factory.mktemp("mosq"), USERS)
    yield b
    b.stop()


def client(b: TLSBroker, user: str, *, password: str | None = None, tls: bool = True,
           ca: str | None = None, cid: str | None = None) -> aiomqtt.Client:
    kw = {}
    if tls:
        kw["tls_params"] = aiomqtt.TLSParameters(ca_certs=ca or str(b.certs / "ca.crt"))
    return aiomqtt.Client("localhost" if tls else "127.0.0.1", b.tls_port if tls else b.plain_port,
                          username=user, password=USERS[user] if password is None else password,
                          identifier=cid or f"{user}-{uuid.uuid4().hex[:8]}",
                          protocol=aiomqtt.ProtocolVersion.V5, timeout=5, **kw)


class Inbox:
    """Collects what one client receives, and waits for a fence message."""

    def __init__(self, c: aiomqtt.Client):
        self.c = c
        self.got: list[tuple[str, bytes]] = []
        self.task = asyncio.ensure_future(self._run())

    async def _run(self):
        try:
            async for m in self.c.messages:
                self.got.append((m.topic.value, bytes(m.payload)))
        except aiomqtt.MqttError:   # the client left (end of the test, or a failed one)
            return

    async def until(self, payload: bytes, timeout: float = 5.0) -> list[tuple[str, bytes]]:
        async def _wait():
            while not any(p == payload for _, p in self.got):
                await asyncio.sleep(0.01)
        await asyncio.wait_for(_wait(), timeout)
        return self.got

    def close(self):
        self.task.cancel()


async def test_device_reads_only_its_own_request_topic(tls_broker):
    async with client(tls_broker, "dev1") as d1, client(tls_broker, "app1") as app:
        # dev1 tries its own topic, dev2's topic and a wildcard over every device.
        for t in ("bullet/dev1/req", "bullet/dev2/req", "bullet/+/req", "bullet/#"):
            await d1.subscribe(t, qos=1)
        inbox = Inbox(d1)
        await app.publish("bullet/dev2/req", b"for-dev2", qos=1)
        await app.publish("bullet/dev1/req", b"for-dev1", qos=1)
        got = await inbox.until(b"for-dev1")
        inbox.close()
    payloads = {p for _, p in got}
    assert b"for-dev1" in payloads
    assert b"for-dev2" not in payloads, f"dev1 read dev2's request: {got}"


async def test_only_the_trainer_publishes_model_pushes(tls_broker):
    async with client(tls_broker, "dev1") as d1, client(tls_broker, "dev2") as d2, \
            client(tls_broker, "app1") as app, client(tls_broker, "trainer") as tr:
        await d1.subscribe("bullet/dev1/ota/#", qos=1)
        await d1.subscribe("bullet/fleet/ota/#", qos=1)
        inbox = Inbox(d1)
        # Forbidden: another device, the device itself, and a client pushing a model.
        await d2.publish("bullet/dev1/ota/offer", b"evil-from-dev2", qos=1)
        await d1.publish("bullet/dev1/ota/offer", b"evil-from-dev1", qos=1)
        await d1.publish("bullet/dev1/ota/data", b"evil-data-from-dev1", qos=1)
        await d1.publish("bullet/fleet/ota/g1/offer", b"evil-fleet-from-dev1", qos=1)
        await app.publish("bullet/dev1/ota/offer", b"evil-from-app", qos=1)
        await app.publish("bullet/dev1/ota/data", b"evil-data-from-app", qos=1)
        await tr.publish("bullet/dev1/ota/data", b"data-from-trainer", qos=1)
        await tr.publish("bullet/fleet/ota/g1/offer", b"fleet-from-trainer", qos=1)
        await tr.publish("bullet/dev1/ota/offer", b"offer-from-trainer", qos=1)
        got = await inbox.until(b"offer-from-trainer")
        inbox.close()
    payloads = [p for _, p in got]
    assert {b"offer-from-trainer", b"fleet-from-trainer", b"data-from-trainer"} <= set(payloads)
    assert not [p for p in payloads if p.startswith(b"evil")], f"a non-trainer pushed a model: {got}"


async def test_device_chunk_requests_reach_the_trainer_and_dev2_cannot_read_them(tls_broker):
    async with client(tls_broker, "dev1") as d1, client(tls_broker, "dev2") as d2, \
            client(tls_broker, "trainer") as tr:
        await tr.subscribe("bullet/+/ota/need", qos=1)
        await d2.subscribe("bullet/dev1/#", qos=1)
        await d2.subscribe("bullet/dev2/req", qos=1)
        t_inbox, d2_inbox = Inbox(tr), Inbox(d2)
        await d1.publish("bullet/dev1/ota/need", b"need-dev1", qos=1)
        await d2.publish("bullet/dev1/ota/need", b"forged-need", qos=1)   # not its own topic
        await tr.publish("bullet/dev1/ota/data", b"dev1-chunk", qos=1)    # dev2 must not see it
        await tr.publish("bullet/dev2/req", b"d2-fence", qos=1)
        await d2.publish("bullet/dev2/ota/need", b"need-dev2", qos=1)
        got_t = await t_inbox.until(b"need-dev2")
        got_d2 = await d2_inbox.until(b"d2-fence")
        t_inbox.close()
        d2_inbox.close()
    assert ("bullet/dev1/ota/need", b"need-dev1") in got_t
    assert b"forged-need" not in [p for _, p in got_t]
    assert [p for _, p in got_d2] == [b"d2-fence"], f"dev2 read dev1's topics: {got_d2}"


async def test_status_replies_and_fleet_requests(tls_broker):
    # bulletd.client's reply topic is <prefix>/reply/<its client id>
    cid = f"bulletc-{uuid.uuid4().hex[:12]}"
    async with client(tls_broker, "dev1") as d1, client(tls_broker, "app1", cid=cid) as app, \
            client(tls_broker, "dev2") as d2, client(tls_broker, "trainer") as tr:
        await app.subscribe("bullet/+/status", qos=1)
        await app.subscribe(f"bullet/reply/{cid}", qos=1)
        await d2.subscribe(f"bullet/reply/{cid}", qos=1)          # someone else's replies
        await d2.subscribe("bullet/dev2/req", qos=1)
        await app.subscribe("bullet/+/ota/state", qos=1)
        await d1.subscribe("$share/bulletd/bullet/fleet/req", qos=1)
        a_inbox, d_inbox, d2_inbox = Inbox(app), Inbox(d1), Inbox(d2)
        await app.publish("bullet/fleet/req", b"fleet-job", qos=1)
        await d_inbox.until(b"fleet-job")
        await d1.publish("bullet/dev2/status", b"spoofed-status", qos=1)
        await d1.publish("bullet/dev1/status", b"online", qos=1, retain=True)
        await d1.publish("bullet/dev1/ota/state", b"ota-online", qos=1)
        await d1.publish(f"bullet/reply/{cid}", b"reply-42", qos=1)
        got = await a_inbox.until(b"reply-42")
        await tr.publish("bullet/dev2/req", b"d2-fence", qos=1)
        got_d2 = await d2_inbox.until(b"d2-fence")
        for box in (a_inbox, d_inbox, d2_inbox):
            box.close()
        await d1.publish("bullet/dev1/status", b"", qos=1, retain=True)     # clear the retained one
    assert [p for _, p in got_d2] == [b"d2-fence"], f"dev2 read another client's reply: {got_d2}"
    assert ("bullet/dev1/status", b"online") in got
    assert ("bullet/dev1/ota/state", b"ota-online") in got
    assert b"spoofed-status" not in [p for _, p in got]


async def test_loopback_listener_without_tls_still_needs_a_password(tls_broker):
    async with client(tls_broker, "dev1", tls=False) as d1:
        await d1.subscribe("bullet/dev1/req", qos=1)
    with pytest.raises(aiomqtt.MqttError, match=r"(?i)not authori[sz]ed|bad user name or password"):
        async with client(tls_broker, "dev1", tls=False, password="wrong"):
            pass


async def test_tls_rejects_wrong_password_and_untrusted_ca(tls_broker, tmp_path):
    with pytest.raises(aiomqtt.MqttError, match=r"(?i)not authori[sz]ed|bad user name or password"):
        async with client(tls_broker, "dev1", password="wrong"):
            pass
    other_ca = make_certs(tmp_path / "other", "localhost")
    with pytest.raises((aiomqtt.MqttError, ssl.SSLError), match=r"(?i)certificate verify failed"):
        async with client(tls_broker, "dev1", ca=str(other_ca / "ca.crt")):
            pass


async def test_real_daemon_and_client_work_through_tls_and_the_acl(tls_broker, tmp_path):
    """bulletd logs in as device dev1 over TLS; a bulletd.client logged in as app1 gets a
    generation: the ACL allows exactly the daemon's and the client's real topics."""
    import os
    import subprocess
    import sys

    import yaml
    from bulletd.client import AsyncClient
    from bulletd.format.synth import write_random_lm
    from bulletd.signing import generate_keypair, sign_file

    models, trust = tmp_path / "models", tmp_path / "trust"
    models.mkdir()
    trust.mkdir()
    priv, pub = generate_keypair("acltest", tmp_path / "keys")
    (trust / pub.name).write_bytes(pub.read_bytes())
    arch = dict(dim=64, n_layers=2, n_heads=2, n_kv_heads=2, hidden_dim=128, vocab_size=320, max_seq_len=128)
    sign_file(write_random_lm(models / "tiny.bullet", arch, seed=1, name="tiny"), priv, name="tiny", version="1.0.0")
    pwfile = tmp_path / "mqtt.password"
    pwfile.write_text(USERS["dev1"] + "\n")
    cfg = {"device_id": "dev1", "model_dir": str(models), "trust": {"keys": [str(trust)]},
           "socket": {"path": str(tmp_path / "d.sock")},
           "mqtt": {"host": "localhost", "port": tls_broker.tls_port, "username": "dev1",
                    "password_file": str(pwfile),
                    "tls": {"enabled": True, "ca_file": str(tls_broker.certs / "ca.crt")}}}
    (tmp_path / "bulletd.yaml").write_text(yaml.safe_dump(cfg))
    log = open(tmp_path / "daemon.log", "w")
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    d = subprocess.Popen([sys.executable, "-m", "bulletd.daemon.main", "--config", str(tmp_path / "bulletd.yaml")],
                         stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        async with client(tls_broker, "app1") as watcher:
            await watcher.subscribe("bullet/dev1/status", qos=1)
            async def online():       # this daemon's own status (not an older retained one)
                async for m in watcher.messages:
                    try:
                        st = json.loads(bytes(m.payload))
                    except ValueError:
                        continue
                    if isinstance(st, dict) and st.get("state") == "online" and st.get("pid") == d.pid:
                        return
            await asyncio.wait_for(online(), 60)
        async with AsyncClient.mqtt("localhost", tls_broker.tls_port, device="dev1", username="app1",
                                    password=USERS["app1"], tls=True,
                                    ca_file=str(tls_broker.certs / "ca.crt")) as c:
            r = await c.generate("hello", child="tiny", max_tokens=6, temperature=0.0, timeout=60)
        assert (r.child, r.tokens, r.finish_reason) == ("tiny", 6, "length")
        # bulletd-cli reaches the same daemon through TLS, a password file and the ACL
        app_pw = tmp_path / "app1.password"
        app_pw.write_text(USERS["app1"] + "\n")
        cli = [sys.executable, "-m", "bulletd.cli", "--mqtt", f"localhost:{tls_broker.tls_port}", "--device", "dev1",
               "--username", "app1", "--password-file", str(app_pw), "--tls",
               "--cafile", str(tls_broker.certs / "ca.crt"), "--timeout", "60"]
        out = subprocess.run(cli + ["--json", "generate", "hello", "--child", "tiny", "--max-tokens", "5",
                                    "--temperature", "0"], capture_output=True, text=True, timeout=90)
        assert out.returncode == 0, out.stderr
        final = json.loads(out.stdout)
        assert final["child"] == "tiny" and final["tokens"] == 5, final
        no_tls = cli[:11] + ["--timeout", "5", "ping"]   # the same login, but plain MQTT to the TLS port
        assert "--tls" not in no_tls and no_tls[-4] == str(app_pw)
        bad = subprocess.run(no_tls, capture_output=True, text=True, timeout=60)
        assert bad.returncode == 3 and "bulletd-cli" in bad.stderr, (bad.returncode, bad.stderr)
    finally:
        stop_daemon(d, log)
    text = (tmp_path / "daemon.log").read_text()
    assert d.returncode == 0, text


def test_broker_log_has_no_errors(tls_broker):
    # Runs after the others in this module (file order): the shipped config loaded without an
    # error, and the only errors later are the ones the tests provoked on purpose.
    log = tls_broker.log_text()
    startup = log.split("connection from")[0]
    assert "Error" not in startup, startup
    assert "tlsv1 alert unknown ca" in log      # the untrusted-CA client was refused by TLS
    assert "wrong version number" in log        # bulletd-cli without --tls was refused by TLS
    later_errors = [ln for ln in log.splitlines() if "Error" in ln and "unknown ca" not in ln
                    and "unexpected eof" not in ln      # the port probe closes without a handshake
                    and "wrong version number" not in ln]
    assert later_errors == [], later_errors
