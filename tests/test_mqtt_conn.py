"""bulletd.mqtt_conn: the one way every MQTT connection is set up (credentials, the password file,
TLS, TCP_NODELAY, reconnect backoff). A real Mosquitto with a password file checks the login and
the socket option; a scan of the source checks that no connection is set up anywhere else."""
from __future__ import annotations

import asyncio
import os
import re
import socket
import ssl
import subprocess
from pathlib import Path

import aiomqtt
import pytest

from bulletd.daemon.config import Config, MQTTConfig, TLSConfig, override
from bulletd.mqtt_conn import TLS, Backoff, Broker, make_client, read_password

ROOT = Path(__file__).resolve().parent.parent


def test_backoff_doubles_up_to_the_ceiling_with_jitter_and_resets():
    b = Backoff(0.5, 3.0)
    got = [b.next() for _ in range(6)]
    for d, base in zip(got, (0.5, 1.0, 2.0, 3.0, 3.0, 3.0)):
        assert 0.8 * base <= d <= 1.2 * base
    b.reset()
    assert 0.4 <= b.next() <= 0.6
    exact = Backoff(0.2, 1.0, jitter=0.0)
    assert [exact.next() for _ in range(4)] == [0.2, 0.4, 0.8, 1.0]


async def test_backoff_sleep_is_capped_by_a_deadline():
    b = Backoff(5.0, 10.0, jitter=0.0)
    t0 = asyncio.get_running_loop().time()
    await b.sleep(at_most=0.05)
    assert asyncio.get_running_loop().time() - t0 < 1.0
    assert b.delay == 10.0


def test_password_file_wins_and_is_read_stripped(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    assert read_password("inline", str(pw)) == "s3cret"
    assert read_password("inline", None) == "inline"
    assert read_password("", "") is None
    kw = Broker(username="u", password="inline", password_file=str(pw)).options()
    assert (kw["username"], kw["password"]) == ("u", "s3cret")
    assert "username" not in Broker(password="x").options()     # no user: no credentials sent
    with pytest.raises(OSError):
        Broker(username="u", password_file=str(tmp_path / "missing")).options()


def test_daemon_and_ota_connections_take_the_same_credentials_and_tls(tmp_path):
    """The daemon's transport and its OTA receiver are built from one `mqtt:` section: same user,
    password (from the file), TLS settings and TCP_NODELAY."""
    from bulletd.ota.daemon_glue import receiver_config
    assert issubclass(TLSConfig, TLS)     # one TLS vocabulary: the config's keys are TLS's fields
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    cfg = override(Config(), **{"mqtt.host": "broker.lan", "mqtt.port": 8883, "mqtt.username": "pi1",
                                "mqtt.password_file": str(pw), "mqtt.tls": TLSConfig(enabled=True, insecure=True)})
    daemon_kw = Broker.from_config(cfg.mqtt).options()
    ota_kw = receiver_config(cfg).broker().options()
    for kw in (daemon_kw, ota_kw):
        assert (kw["username"], kw["password"], kw["tls_insecure"]) == ("pi1", "s3cret", True)
        assert kw["socket_options"] == ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
        ctx = kw["tls_context"]
        assert isinstance(ctx, ssl.SSLContext) and not ctx.check_hostname
        assert ctx.verify_mode == ssl.CERT_REQUIRED
    plain = receiver_config(override(Config(), **{"mqtt.host": "h"})).broker().options()
    assert "tls_context" not in plain and "username" not in plain
    assert Broker.from_config(MQTTConfig(host="h")).tls is None


async def test_a_client_logs_in_with_the_password_file_and_nagle_off(tmp_path):
    from conftest import _wait_port, free_port
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "dev1", "s3cret"], check=True,
                   capture_output=True)
    os.chmod(pw, 0o600)
    port = free_port()
    conf = tmp_path / "m.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {pw}\n"
                    "persistence false\nuser root\n")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        secret = tmp_path / "secret"
        secret.write_text("s3cret\n")
        client = make_client(Broker("127.0.0.1", port, username="dev1", password_file=str(secret)),
                             "conn-test", pending_calls=99)
        assert client.pending_calls_threshold == 99
        async with client:
            sock = client._client.socket()
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        secret.write_text("wrong\n")
        with pytest.raises(aiomqtt.MqttError):
            async with make_client(Broker("127.0.0.1", port, username="dev1", password_file=str(secret)),
                                   "conn-test-2"):
                pass
    finally:
        proc.terminate()
        proc.wait(10)


def test_no_connection_is_set_up_outside_mqtt_conn():
    """Every product connection goes through make_client: no other module builds an
    aiomqtt.Client, sets TCP_NODELAY, reads a password file or builds a TLS context (the
    benchmarks' own measuring clients excepted)."""
    patterns = [r"aiomqtt\.Client\(", r"TCP_NODELAY", r"open\([^)]*password_file",
                r"create_default_context", r"TLSParameters", r"random\.uniform\(0\.8"]
    found = []
    for path in sorted((ROOT / "bulletd").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "bulletd/mqtt_conn.py" or rel.startswith("bulletd/bench/"):
            continue
        text = path.read_text(encoding="utf-8")
        found += [f"{rel}: {p}" for p in patterns if re.search(p, text)]
    assert not found, found
