"""How every MQTT connection of Bullet OS is set up: the daemon's transport (bulletd.daemon.mqtt),
the OTA receiver and pusher (bulletd.ota), the home link (bulletd.agents.link) and the client
API (bulletd.client).

    broker = Broker(host, port, username=..., password_file=..., tls=TLS(ca_file=...))
    client = make_client(broker, "bulletd-pi1", protocol=aiomqtt.ProtocolVersion.V5, ...)
    backoff = Backoff(0.5, 30.0)
    while True:
        try:
            async with client: backoff.reset(); ...
        except aiomqtt.MqttError: ...
        await backoff.sleep()

One TLS vocabulary (`ca_file`, `cert_file`, `key_file`, `insecure`: the daemon config's
`mqtt.tls` keys), the password file read in one place (it wins over a password), Nagle off on
every socket (paho leaves it on, and each small request, reply or "need" would then wait for a
delayed ACK, about 40 ms), and one reconnect rule: the delay starts at `lo`, doubles per failed
attempt up to `hi`, with +/- `jitter` so that devices do not retry in step.
"""
from __future__ import annotations

import asyncio
import random
import socket
import ssl
from dataclasses import dataclass
from typing import Any

NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


@dataclass(frozen=True)
class TLS:
    ca_file: str = ""          # "" -> the system CA store
    cert_file: str = ""        # client certificate (mutual TLS), optional
    key_file: str = ""
    insecure: bool = False     # skip the host name check (testing only)


@dataclass(frozen=True)
class Broker:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    password_file: str | None = None   # read when connecting; wins over password
    tls: Any = None                    # TLS (or anything with its four fields), None: plain TCP
    keepalive: int = 60

    @classmethod
    def from_config(cls, mc) -> "Broker":
        """From the daemon config's `mqtt:` section (bulletd.daemon.config.MQTTConfig)."""
        return cls(mc.host or "127.0.0.1", mc.port, username=mc.username or None,
                   password=mc.password or None, password_file=mc.password_file or None,
                   tls=mc.tls if mc.tls.enabled else None, keepalive=mc.keepalive)

    def options(self) -> dict:
        """aiomqtt.Client keyword arguments for the credentials, TLS and TCP_NODELAY. Raises
        OSError (password, certificate or key file) or ssl.SSLError."""
        kw: dict[str, Any] = {"socket_options": NODELAY}
        if self.username:
            kw.update(username=self.username, password=read_password(self.password, self.password_file))
        if self.tls is not None:
            kw.update(tls_context=tls_context(self.tls), tls_insecure=bool(self.tls.insecure))
        return kw


def read_password(password: str | None, password_file: str | None) -> str | None:
    """The password: the first line-stripped content of password_file when one is named."""
    if password_file:
        with open(password_file, encoding="utf-8") as f:
            password = f.read().strip()
    return password or None


def tls_context(tls) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=tls.ca_file or None)
    if tls.cert_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file or None)
    if tls.insecure:
        ctx.check_hostname = False
    return ctx


def make_client(broker: Broker, identifier: str, *, pending_calls: int | None = None, **kw: Any):
    """An aiomqtt.Client for BROKER; kw are further aiomqtt.Client arguments (protocol, will,
    queue_type, ...). pending_calls raises paho's threshold for warning about queued publishes
    (a window of publishes in flight is normal for some connections)."""
    import aiomqtt
    kw.setdefault("keepalive", broker.keepalive)
    client = aiomqtt.Client(broker.host, broker.port, identifier=identifier, **broker.options(), **kw)
    if pending_calls is not None:
        client.pending_calls_threshold = pending_calls
    return client


class Backoff:
    """Reconnect delays: lo, 2*lo, 4*lo ... up to hi, each times a random factor in
    [1 - jitter, 1 + jitter]; reset() after a successful connection."""

    def __init__(self, lo: float, hi: float, jitter: float = 0.2):
        self.lo, self.hi, self.jitter = lo, hi, jitter
        self.delay = lo

    def reset(self) -> None:
        self.delay = self.lo

    def next(self) -> float:
        d = self.delay * random.uniform(1 - self.jitter, 1 + self.jitter) if self.jitter else self.delay
        self.delay = min(self.delay * 2, self.hi)
        return d

    async def sleep(self, at_most: float | None = None) -> None:
        d = self.next()
        await asyncio.sleep(d if at_most is None else max(0.0, min(d, at_most)))


NO_MATCHING_SUBSCRIBERS = 16   # MQTT v5 PUBACK reason code


class Publisher:
    """QoS 1 publishes on an aiomqtt client that return the broker's PUBACK reason code (MQTT v5;
    0 on 3.1.1). aiomqtt's own publish drops it, yet it tells a requester something no timeout
    can: 16, "No matching subscribers", means no daemon was subscribed to the request topic (not
    started yet, or resubscribing after a broker restart) and the broker dropped the request.
    Publishes go through paho as aiomqtt's do, on the event loop thread."""

    def __init__(self, client):
        self.paho = client._client
        self.waiters: dict[int, asyncio.Future] = {}
        chained = self.paho.on_publish

        def on_publish(c, userdata, mid, reason_code, properties):
            fut = self.waiters.pop(mid, None)
            if fut is not None and not fut.done():
                fut.set_result(getattr(reason_code, "value", reason_code) or 0)
            chained(c, userdata, mid, reason_code, properties)

        self.paho.on_publish = on_publish
        chained_disconnect = self.paho.on_disconnect

        def on_disconnect(*args):
            # a publish waiting for its PUBACK ends with the connection, not at its timeout
            for fut in self.waiters.values():
                if not fut.done():
                    fut.set_result(None)
            self.waiters.clear()
            chained_disconnect(*args)

        self.paho.on_disconnect = on_disconnect

    async def publish(self, topic: str, payload: bytes, *, properties=None, timeout: float = 10.0) -> int:
        import aiomqtt
        info = self.paho.publish(topic, payload, 1, False, properties)
        if info.rc != 0:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        fut = asyncio.get_running_loop().create_future()
        self.waiters[info.mid] = fut
        try:
            rc = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise aiomqtt.MqttError("Operation timed out") from None
        finally:
            self.waiters.pop(info.mid, None)
        if rc is None:
            raise aiomqtt.MqttError("Disconnected before the broker acknowledged the message")
        return rc
