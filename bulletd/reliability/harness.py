"""The parts every reliability run is made of: a Mosquitto broker and bulletd daemons as real
processes (SIGKILL and restart included), signed REFERENCE-shaped children made at run time,
MQTT and socket requesters that count every final reply per request, and a sampler of the
daemons' RSS, open descriptors and queues.

The requesters speak the wire protocol themselves (docs/DAEMON.md) instead of going through
bulletd.client, because they must see what the client hides: a second final reply to one request.
They treat a dropped connection the way bulletd.client does: every request still waiting on it
ends as "unavailable" (the client raises DaemonUnavailable), and so does a request whose publish
or frame could not be sent.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

MB = 1 << 20
FRAME = struct.Struct("!I")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


async def wait_for(cond, timeout: float, what: str, step: float = 0.05) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        await asyncio.sleep(step)
    raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")


def _netns_prefix(netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns] if netns else []


# ---------------------------------------------------------------------- processes


class Broker:
    """mosquitto on HOST:PORT (in network namespace NETNS when given), without persistence: a
    SIGKILL forgets every session, as a broker restarted after a crash does."""

    def __init__(self, tmp: Path, host: str = "127.0.0.1", port: int = 0, netns: str | None = None):
        self.host, self.netns = host, netns
        self.port = port or free_port()
        self.conf = tmp / f"mosquitto-{self.port}.conf"
        # max_queued_messages: the default 1000 per client would drop requests queued for a
        # daemon that is down or busy with a burst; the runs measure bulletd, not that limit
        self.conf.write_text(f"listener {self.port} {host}\nallow_anonymous true\npersistence false\n"
                             "set_tcp_nodelay true\nmax_queued_messages 100000\n")
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def start(self, timeout: float = 10.0) -> "Broker":
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen(_netns_prefix(self.netns) + [exe, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + timeout
        while not port_open(self.host, self.port):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"mosquitto did not listen on {self.host}:{self.port}")
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def restart(self) -> None:
        self.kill()
        self.restarts += 1
        self.start()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Kit:
    """A trust folder and a model dir of signed random REFERENCE-shaped BQ4 children."""
    dir: Path
    models: Path
    trust: Path
    children: list[str]


def make_kit(tmp: Path, n_children: int = 2) -> Kit:
    from bulletd.format.synth import REFERENCE, write_random_lm
    from bulletd.signing import generate_keypair, sign_file
    models = tmp / "models"
    models.mkdir(parents=True, exist_ok=True)
    priv, pub = generate_keypair("reliability", tmp / "key")
    names = []
    for i in range(n_children):
        name = f"ref{i}"
        sign_file(write_random_lm(models / f"{name}.bullet", REFERENCE, seed=i, name=name), priv)
        names.append(name)
    return Kit(tmp, models, pub, names)


class Daemon:
    """bulletd as a real process with its own config, socket and log (in NETNS when given)."""

    def __init__(self, tmp: Path, kit: Kit, name: str, broker: Broker | None, *, workers: int = 2,
                 max_queue: int = 0, fleet: bool = False, mqtt_host: str | None = None, netns: str | None = None,
                 keepalive: int = 30, mqtt_extra: dict | None = None, mqtt_port: int | None = None):
        self.name, self.netns = name, netns
        self.sock = str(tmp / f"{name}.sock")
        self.log_path = tmp / f"{name}.log"
        cfg: dict[str, Any] = {
            "device_id": name, "model_dir": str(kit.models), "log_level": "info",
            "socket": {"path": self.sock, "max_connections": 512, "max_per_uid": 512},
            "trust": {"keys": [str(kit.trust)]},
            "scheduler": {"workers": workers, "max_queue": max_queue},
            "ota": {"enabled": False},
        }
        if broker is not None:
            cfg["mqtt"] = {"host": mqtt_host or broker.host, "port": mqtt_port or broker.port, "keepalive": keepalive,
                           "reconnect_min": 0.2, "reconnect_max": 2.0,
                           "fleet": {"enabled": fleet, "group": "reliability"}, **(mqtt_extra or {})}
        self.cfg_path = tmp / f"{name}.json"
        self.cfg_path.write_text(json.dumps(cfg))
        self.mqtt = broker is not None
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def start(self) -> "Daemon":
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        env["PYTHONUNBUFFERED"] = "1"
        log = open(self.log_path, "ab")
        pre = _netns_prefix(self.netns)   # `ip netns exec` execs the daemon: the pid stays the daemon's
        self.proc = subprocess.Popen(pre + [sys.executable, "-m", "bulletd.daemon", "--config", str(self.cfg_path)],
                                     stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        self.starts += 1
        return self

    async def ready(self, timeout: float = 60.0, mqtt: bool = True) -> None:
        """Wait until the socket answers and (with MQTT) the daemon is connected."""
        async def ok() -> bool:
            try:
                st = await status(self.sock)
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
                return False
            m = st["mqtt"]
            return not (mqtt and self.mqtt) or (m.get("state") == "connected"
                                                and m.get("fleet_state", "connected") == "connected")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bulletd {self.name} exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if await ok():
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"bulletd {self.name} not ready within {timeout:g} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.terminate()
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
            return None


async def status(sock: str, timeout: float = 5.0) -> dict:
    """The daemon's `status` over its socket."""
    async def go() -> dict:
        r, w = await asyncio.open_unix_connection(sock)
        try:
            body = msgpack.packb({"op": "status", "id": "status"})
            w.write(FRAME.pack(len(body)) + body)
            (n,) = FRAME.unpack(await r.readexactly(4))
            return msgpack.unpackb(await r.readexactly(n), raw=False)["status"]
        finally:
            w.close()
    return await asyncio.wait_for(go(), timeout)


class DelayProxy:
    """A TCP proxy on loopback that holds every byte for `delay` s in each direction, in order:
    latency at the application level, for machines whose kernel has no netem qdisc. It delays; it
    cannot drop packets (TCP below it retransmits them)."""

    def __init__(self, upstream_port: int, delay: float, host: str = "127.0.0.1"):
        self.host, self.up, self.delay = host, upstream_port, delay
        self.port = free_port(host)
        self.server: asyncio.AbstractServer | None = None
        self.tasks: set[asyncio.Task] = set()

    async def start(self) -> "DelayProxy":
        self.server = await asyncio.start_server(self._conn, self.host, self.port)
        return self

    async def _conn(self, r1: asyncio.StreamReader, w1: asyncio.StreamWriter) -> None:
        try:
            r2, w2 = await asyncio.open_connection(self.host, self.up)
        except OSError:
            w1.close()
            return
        for r, w in ((r1, w2), (r2, w1)):
            t = asyncio.create_task(self._pump(r, w))
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)

    async def _pump(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        q: asyncio.Queue = asyncio.Queue()

        async def later() -> None:
            while True:
                due, data = await q.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if not data:
                    break
                w.write(data)
                await w.drain()

        writer = asyncio.create_task(later())
        try:
            while True:
                data = await r.read(65536)
                q.put_nowait((time.monotonic() + self.delay, data))
                if not data:
                    break
            await writer
        except (OSError, asyncio.CancelledError):
            writer.cancel()
        finally:
            w.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in list(self.tasks):
            t.cancel()


# ---------------------------------------------------------------------- accounting


@dataclass
class Req:
    key: Any
    via: str
    t0: float
    sent: bool = False
    finals: int = 0
    code: str | None = None
    device: str | None = None
    t1: float | None = None
    unavailable: bool = False   # what bulletd.client reports as DaemonUnavailable

    @property
    def resolved(self) -> bool:
        return self.finals > 0 or self.unavailable


class Tally:
    """Every request of a run and every final reply it got."""

    def __init__(self):
        self.reqs: dict[Any, Req] = {}
        self.open = 0
        self.changed = asyncio.Event()

    def new(self, via: str, key: Any = None) -> Req:
        r = Req(uuid.uuid4().hex if key is None else key, via, time.monotonic())
        self.reqs[r.key] = r
        self.open += 1
        return r

    def _close(self, r: Req) -> None:
        self.open -= 1
        self.changed.set()

    def final(self, key: Any, obj: dict) -> None:
        r = self.reqs.get(key)
        if r is None:
            return
        r.finals += 1
        if r.finals == 1:
            r.t1 = time.monotonic()
            r.code = "ok" if obj.get("ok") else str((obj.get("error") or {}).get("code"))
            r.device = obj.get("device")
            if not r.unavailable:
                self._close(r)

    def unavailable(self, r: Req) -> None:
        if not r.resolved:
            r.unavailable = True
            self._close(r)

    async def settle(self, timeout: float) -> None:
        """Wait until every request has its final reply or was reported unavailable."""
        end = time.monotonic() + timeout
        while self.open > 0 and time.monotonic() < end:
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), min(1.0, max(0.01, end - time.monotonic())))
            except asyncio.TimeoutError:
                pass

    def summary(self, reqs: list[Req] | None = None) -> dict:
        reqs = list(self.reqs.values()) if reqs is None else reqs
        codes: dict[str, int] = {}
        for r in reqs:
            if r.finals:
                codes[r.code] = codes.get(r.code, 0) + 1
        lat = sorted((r.t1 - r.t0) * 1000 for r in reqs if r.code == "ok")
        busy = sorted((r.t1 - r.t0) * 1000 for r in reqs if r.code == "busy")
        return {
            "requests": len(reqs),
            "sent": sum(r.sent for r in reqs),
            "final": sum(r.finals > 0 for r in reqs),
            "duplicates": sum(max(0, r.finals - 1) for r in reqs),
            "unavailable": sum(r.unavailable and not r.finals for r in reqs),
            "lost": sum(r.sent and not r.finals and not r.unavailable for r in reqs),
            "codes": dict(sorted(codes.items())),
            "p50_ms": round(_pct(lat, 50), 1) if lat else None,
            "p99_ms": round(_pct(lat, 99), 1) if lat else None,
            "busy_p99_ms": round(_pct(busy, 99), 1) if busy else None,
        }


def _pct(xs: list[float], p: float) -> float:
    i = min(len(xs) - 1, max(0, int(round(p / 100 * (len(xs) - 1)))))
    return xs[i]


def slope_per_hour(ts: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over ts (seconds), per hour."""
    n = len(ts)
    if n < 2:
        return 0.0
    mt, my = sum(ts) / n, sum(ys) / n
    den = sum((t - mt) ** 2 for t in ts)
    return 0.0 if den == 0 else sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / den * 3600


def gen_request(i: int, children: list[str], max_tokens: int) -> dict:
    return {"op": "generate", "child": children[i % len(children)], "prompt": "Once upon a time",
            "max_tokens": max_tokens, "seed": i, "temperature": 0.8}


# ---------------------------------------------------------------------- requesters


class MQTTPeer:
    """One MQTT v5 requester: its own connection and reply topic; requests carry unique
    Correlation Data. It reconnects when the connection drops (a new clean session, as a fresh
    bulletd.client would); every request waiting then ends unavailable."""

    def __init__(self, tally: Tally, host: str, port: int, req_topic: str, name: str):
        self.tally, self.host, self.port, self.req_topic = tally, host, port, req_topic
        self.cid = f"rel-{name}-{uuid.uuid4().hex[:6]}"
        self.reply_topic = f"bullet/reply/{self.cid}"
        self.client: Any = None
        self.waiting: dict[bytes, Req] = {}
        self.ready = asyncio.Event()
        self.closing = False
        self.task: asyncio.Task | None = None
        self.drops = 0
        self.unrouted = 0   # PUBACKs saying no daemon was subscribed

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    def _deliver(self, msg: Any) -> None:
        try:
            obj = msgpack.unpackb(bytes(msg.payload), raw=False)
        except Exception:
            return
        if not isinstance(obj, dict) or not obj.get("final"):
            return
        corr = getattr(msg.properties, "CorrelationData", None) if msg.properties else None
        self.waiting.pop(corr, None)
        self.tally.final(corr, obj)

    async def _run(self) -> None:
        import aiomqtt
        from bulletd.mqtt_conn import Broker, Publisher, make_client
        from bulletd.mqtt_direct import direct_queue
        while not self.closing:
            client = make_client(Broker(self.host, self.port, keepalive=10), self.cid, pending_calls=100000,
                                 protocol=aiomqtt.ProtocolVersion.V5, timeout=10,
                                 queue_type=direct_queue(self._deliver))
            pub = Publisher(client)
            try:
                async with client:
                    await client.subscribe(self.reply_topic, qos=1)
                    self.client, self.pub = client, pub
                    self.ready.set()
                    async for _ in client.messages:
                        pass
            except aiomqtt.MqttError:
                pass
            finally:
                self.ready.clear()
                self.client = None
                self._drop()
            if not self.closing:
                await asyncio.sleep(0.1)

    def _drop(self) -> None:
        if self.waiting:
            self.drops += 1
        for r in self.waiting.values():
            self.tally.unavailable(r)
        self.waiting.clear()

    async def send(self, obj: dict) -> Req:
        import aiomqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        from bulletd.mqtt_conn import NO_MATCHING_SUBSCRIBERS
        corr = uuid.uuid4().hex.encode()
        r = self.tally.new("mqtt", corr)
        if self.client is None:
            self.tally.unavailable(r)
            return r
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.reply_topic
        props.CorrelationData = corr
        props.MessageExpiryInterval = 300
        self.waiting[corr] = r
        try:
            rc = await self.pub.publish(self.req_topic, msgpack.packb({**obj, "id": corr.decode()}),
                                        properties=props)
        except aiomqtt.MqttError:
            rc = None
        if rc == 0:
            r.sent = True
        else:   # not delivered, or delivered to no daemon (bulletd.client: DaemonUnavailable)
            self.waiting.pop(corr, None)
            self.tally.unavailable(r)
            if rc == NO_MATCHING_SUBSCRIBERS:
                self.unrouted += 1
        return r

    async def close(self) -> None:
        self.closing = True
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass


class SocketPeer:
    """One Unix-socket requester: one connection, several requests in flight, replies matched by
    id. A dropped connection ends its waiting requests unavailable; the next request connects
    again."""

    def __init__(self, tally: Tally, path: str):
        self.tally, self.path = tally, path
        self.w: asyncio.StreamWriter | None = None
        self.task: asyncio.Task | None = None
        self.waiting: dict[str, Req] = {}
        self.lock = asyncio.Lock()
        self.drops = 0

    async def _connect(self) -> bool:
        async with self.lock:
            if self.w is not None:
                return True
            try:
                r, w = await asyncio.open_unix_connection(self.path, limit=64 * MB)
            except OSError:
                return False
            self.w = w
            self.task = asyncio.create_task(self._read(r, w))
            return True

    async def _read(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                (n,) = FRAME.unpack(await r.readexactly(4))
                obj = msgpack.unpackb(await r.readexactly(n), raw=False)
                if isinstance(obj, dict) and obj.get("final"):
                    self.waiting.pop(obj.get("id"), None)
                    self.tally.final(obj.get("id"), obj)
        except (asyncio.IncompleteReadError, OSError, ValueError):
            pass
        finally:
            if self.w is w:
                self.w = None
            w.close()
            if self.waiting:
                self.drops += 1
            for q in list(self.waiting.values()):
                self.tally.unavailable(q)
            self.waiting.clear()

    async def send(self, obj: dict) -> Req:
        r = self.tally.new("socket")
        if not await self._connect():
            self.tally.unavailable(r)
            return r
        self.waiting[r.key] = r
        body = msgpack.packb({**obj, "id": r.key})
        try:
            self.w.write(FRAME.pack(len(body)) + body)
            await self.w.drain()
            r.sent = True
        except (OSError, AttributeError):
            self.waiting.pop(r.key, None)
            self.tally.unavailable(r)
        return r

    async def close(self) -> None:
        if self.w is not None:
            self.w.close()
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass


async def start_mqtt_peers(tally: Tally, broker: Broker, topic: str, n: int, host: str | None = None,
                           timeout: float = 20.0) -> list[MQTTPeer]:
    peers = [MQTTPeer(tally, host or broker.host, broker.port, topic, str(i)) for i in range(n)]
    for p in peers:
        p.start()
    await wait_for(lambda: all(p.ready.is_set() for p in peers), timeout, f"{n} MQTT requesters to connect")
    return peers


# ---------------------------------------------------------------------- sampling


@dataclass
class Sampler:
    """Every `period` s: RSS and open descriptors of each daemon, its admitted queue and MQTT
    backlog (from `status`). Keeps the maxima and, with `series`, every sample."""
    daemons: list[Daemon]
    period: float = 0.5
    series: bool = False
    peak_rss: dict = field(default_factory=dict)
    peak_fds: dict = field(default_factory=dict)
    peak_admitted: dict = field(default_factory=dict)
    peak_backlog: dict = field(default_factory=dict)
    capacity: dict = field(default_factory=dict)
    samples: list = field(default_factory=list)   # (t, name, rss, fds)
    task: asyncio.Task | None = None

    def start(self) -> "Sampler":
        self.t0 = time.monotonic()
        self.task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        import psutil
        while True:
            for d in self.daemons:
                pid = d.pid
                if pid is None:
                    continue
                try:
                    p = psutil.Process(pid)
                    rss, fds = p.memory_info().rss, p.num_fds()
                except psutil.Error:
                    continue
                n = d.name
                self.peak_rss[n] = max(self.peak_rss.get(n, 0), rss)
                self.peak_fds[n] = max(self.peak_fds.get(n, 0), fds)
                if self.series:
                    self.samples.append((time.monotonic() - self.t0, n, rss, fds))
                try:
                    st = await status(d.sock, timeout=2.0)
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, KeyError):
                    continue
                self.peak_admitted[n] = max(self.peak_admitted.get(n, 0), st["queue"]["admitted"])
                self.capacity[n] = st["queue"]["capacity"]
                self.peak_backlog[n] = max(self.peak_backlog.get(n, 0), st["mqtt"].get("backlog", 0) or 0)
            await asyncio.sleep(self.period)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
