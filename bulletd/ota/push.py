"""`bullet push`: send a signed child to one device or a fleet over MQTT, in resumable chunks.

    bullet push child.bullet --device pi1 [--device pi2] [--broker HOST:PORT]
    bullet push child.bullet --fleet kitchen --chunk-size 128k --timeout 300
    python -m bulletd.bench.ota [--size-mb 5]       # push figures over a local broker

The file must be signed first (`bullet sign child.bullet --key K` writes child.bullet.sig).
The pusher publishes a signed offer; each device checks the signature, the version and its free
space before it asks for anything, then pulls chunks by number (bulletd/ota/protocol.py,
docs/OTA.md). The pusher only answers: a device that already holds part of the file (an earlier
push was interrupted) asks only for what it lacks, so running the command again resumes.
The command shows each device's progress and ends with one outcome line per device; the exit
status is 0 when every device installed the file.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt

from bulletd.errors import BulletError
from bulletd.mqtt_conn import Backoff, Broker, make_client
from bulletd.ota import protocol as P
from bulletd.signing import file_sha256, read_signature

DEFAULT_CHUNK = 128 * 1024


@dataclass
class DeviceOutcome:
    device: str
    state: str = "waiting"            # waiting, offered, receiving, ..., installed, rejected, timeout
    reason: str | None = None
    message: str = ""
    have: int = 0
    total: int = 0
    chunks_sent: int = 0               # sends, retransmissions included
    bytes_sent: int = 0
    seqs_sent: set = field(default_factory=set)   # distinct chunks sent
    first_seen: float | None = None
    last_seen: float | None = None
    received_at: float | None = None  # the device's "received" status
    installed_at: float | None = None
    last_chunk_at: float | None = None  # when the last chunk was handed to the broker
    status: dict = field(default_factory=dict)        # the device's last status message
    statuses: list = field(default_factory=list)      # every status message, in order

    @property
    def final(self) -> bool:
        return self.state in P.FINAL_STATES or self.state == "timeout"

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("device", "state", "reason", "message", "have",
                                              "total", "chunks_sent", "bytes_sent")}


class PushError(BulletError):
    """The push cannot start (unsigned file, file changed after signing, bad arguments)."""


class Pusher:
    """Serves one signed file to devices until each has a final outcome or the timeout passes.

    Subclasses may override send_chunk() (the tests inject faults there).
    """

    def __init__(self, path, *, sig_path=None, host="127.0.0.1", port=1883, prefix="bullet",
                 devices=(), fleet: str | None = None, chunk_size: int = DEFAULT_CHUNK,
                 timeout: float = 120.0, reoffer: float = 2.0, discover: float = 1.0,
                 username=None, password=None, on_event=None):
        self.path = Path(path)
        if not self.path.is_file():
            raise PushError(f"{self.path}: no such file (expected a signed .bullet file)")
        if bool(devices) == bool(fleet):
            raise PushError("name the target: --device ID (one or more) or --fleet GROUP")
        for d in devices:
            P.check_topic_word("device id", d)
        if fleet:
            P.check_topic_word("fleet group", fleet)
        if not P.MIN_CHUNK <= chunk_size <= P.MAX_CHUNK:
            raise PushError(f"chunk size {chunk_size} outside [{P.MIN_CHUNK}, {P.MAX_CHUNK}] bytes")
        sig_path = Path(sig_path or str(self.path) + ".sig")
        try:
            self.signed = read_signature(sig_path)
        except BulletError as exc:
            raise PushError(f"{self.path} is not signed ({exc}); sign it first: "
                            f"bullet sign {self.path} --key KEY") from exc
        m = self.signed.get("manifest") if isinstance(self.signed, dict) else None
        if not isinstance(m, dict) or "sha256" not in m or "size" not in m:
            raise PushError(f"{sig_path}: not a signed manifest (no manifest.sha256/size)")
        sha, size = file_sha256(self.path)
        if (sha, size) != (m["sha256"], m["size"]):
            raise PushError(f"{self.path} changed after signing: it is {size} bytes with sha256 "
                            f"{sha[:16]}..., {sig_path} says {m['size']} bytes, "
                            f"{str(m['sha256'])[:16]}...; sign it again")
        self.manifest = m
        self.data = self.path.read_bytes()
        self.host, self.port, self.prefix = host, port, prefix
        self.broker = Broker(host, port, username=username, password=password, keepalive=15)
        self.fleet = fleet
        self.chunk_size = chunk_size
        self.n_chunks = P.n_chunks_for(size, chunk_size)
        self.timeout, self.reoffer, self.discover = timeout, reoffer, discover
        self.push_id = uuid.uuid4().hex[:16]
        self.outcomes: dict[str, DeviceOutcome] = {d: DeviceOutcome(d) for d in devices}
        self.on_event = on_event or (lambda kind, outcome: None)
        self.client: aiomqtt.Client | None = None
        self.started = 0.0
        self.reconnects = 0
        self._sends: set[asyncio.Task] = set()

    # -- chunks --------------------------------------------------------------------------------

    def chunk(self, seq: int) -> bytes:
        return self.data[seq * self.chunk_size:(seq + 1) * self.chunk_size]

    async def send_chunk(self, client: aiomqtt.Client, device: str, seq: int) -> None:
        """Publish chunk `seq` to `device`. The fault-injection tests override this."""
        data = self.chunk(seq)
        await client.publish(P.device_topic(self.prefix, device, "data"),
                             P.pack(P.make_chunk(self.push_id, seq, data)), qos=1)
        self._count(device, len(data), seq)

    def _count(self, device: str, nbytes: int, seq: int) -> None:
        o = self.outcomes.get(device)
        if o is not None:
            o.chunks_sent += 1
            o.seqs_sent.add(seq)
            o.bytes_sent += nbytes
            o.last_chunk_at = time.monotonic()

    async def _serve_need(self, client, device: str, seqs: list[int]) -> None:
        try:
            await asyncio.gather(*(self.send_chunk(client, device, s) for s in seqs
                                   if 0 <= s < self.n_chunks))
        except aiomqtt.MqttError:
            pass  # the connection dropped; the device asks again after the reconnect

    # -- the session -----------------------------------------------------------------------

    def _offer_topics(self) -> list[str]:
        if self.fleet:
            return [P.fleet_offer_topic(self.prefix, self.fleet)]
        return [P.device_topic(self.prefix, d, "offer") for d in self.outcomes]

    def _needs_offer(self, now: float) -> bool:
        if self.fleet and not self.outcomes:
            return True
        for o in self.outcomes.values():
            if o.final:
                continue
            if o.last_seen is None or now - o.last_seen > 2 * self.reoffer:
                return True
        return False

    async def _offer(self, client) -> None:
        payload = P.pack(P.make_offer(self.push_id, self.signed, self.chunk_size))
        for t in self._offer_topics():
            await client.publish(t, payload, qos=1)
        for o in self.outcomes.values():
            if o.state == "waiting":
                o.state = "offered"

    def _done(self) -> bool:
        return bool(self.outcomes) and all(o.final for o in self.outcomes.values())

    async def run(self) -> dict[str, DeviceOutcome]:
        """Push until every device has a final outcome or `timeout` seconds pass."""
        self.started = time.monotonic()
        deadline = self.started + self.timeout
        backoff = Backoff(0.2, 3.0, jitter=0.0)
        while not self._done() and time.monotonic() < deadline:
            client = make_client(self.broker, f"bullet-push-{self.push_id}",
                                 protocol=aiomqtt.ProtocolVersion.V5, max_queued_incoming_messages=4096,
                                 pending_calls=64)   # a window of chunk publishes is normal
            try:
                async with client:
                    self.client = client
                    backoff.reset()
                    await self._session(client, deadline)
            except aiomqtt.MqttError as exc:
                self.reconnects += 1
                why = re.sub(r"^\[Errno \d+\] ", "", str(exc))
                self.on_event("disconnected", DeviceOutcome("-", message=why))
            finally:
                self.client = None
            if not self._done():
                await backoff.sleep(at_most=deadline - time.monotonic())
        for t in list(self._sends):
            t.cancel()
        for o in self.outcomes.values():
            if not o.final:
                o.state, o.reason = "timeout", "timeout"
                got = f", {o.have}/{_count(o.total, 'chunk')}" if o.total else ""
                o.message = f"no final status within {self.timeout:.0f} s (last: {o.status.get('state', 'no answer')}{got})"
                self.on_event("final", o)
        return self.outcomes

    async def _session(self, client, deadline: float) -> None:
        who = "+" if self.fleet else None
        targets = [who] if who else list(self.outcomes)
        for d in targets:
            await client.subscribe(P.device_topic(self.prefix, d, "need"), qos=1)
            await client.subscribe(P.device_topic(self.prefix, d, "status"), qos=1)
        if self.fleet and not self.outcomes:
            # discovery: devices announce their groups in a retained presence message
            await client.subscribe(P.device_topic(self.prefix, "+", "state"), qos=1)
        reader = asyncio.create_task(self._read(client))
        try:
            if self.fleet and not self.outcomes:
                await asyncio.wait({reader}, timeout=self.discover)
            await self._offer(client)
            last_offer = time.monotonic()
            while not self._done():
                now = time.monotonic()
                if now >= deadline:
                    return
                if reader.done():
                    reader.result()  # re-raise the connection error
                    return
                if now - last_offer >= self.reoffer and self._needs_offer(now):
                    await self._offer(client)
                    last_offer = now
                await asyncio.wait({reader}, timeout=min(0.2, deadline - now))
        finally:
            reader.cancel()
            try:
                await reader
            except (asyncio.CancelledError, aiomqtt.MqttError):
                pass

    async def _read(self, client) -> None:
        async for msg in client.messages:
            parts = msg.topic.value.split("/")
            if len(parts) < 4:
                continue
            device, leaf = parts[-3], parts[-1]
            try:
                body = P.unpack(msg.payload, msg.topic.value)
            except P.OtaError:
                continue
            if leaf == "state":
                if (self.fleet in (body.get("groups") or []) and body.get("online")
                        and device not in self.outcomes):
                    self.outcomes[device] = DeviceOutcome(device)
                continue
            if body.get("push_id") != self.push_id:
                continue  # another push, or a retained status from an earlier one
            o = self.outcomes.get(device)
            if o is None:
                if not self.fleet:
                    continue
                o = self.outcomes[device] = DeviceOutcome(device)
            now = time.monotonic()
            o.first_seen = o.first_seen or now
            o.last_seen = now
            if leaf == "need":
                try:
                    P.check_need(body, msg.topic.value)
                except P.OtaError:
                    continue
                o.have, o.total = body.get("have", o.have), body.get("total", o.total)
                task = asyncio.create_task(self._serve_need(client, device, body["seqs"]))
                self._sends.add(task)
                task.add_done_callback(self._sends.discard)
                self.on_event("progress", o)
            elif leaf == "status":
                if o.final:
                    continue
                o.status = body
                o.statuses.append(body)
                o.state = body.get("state", o.state)
                o.reason, o.message = body.get("reason"), body.get("message", "")
                o.have = body.get("have") or o.have
                o.total = body.get("total") or o.total
                if o.state == P.RECEIVED:
                    o.received_at = now
                if o.state == P.INSTALLED:
                    o.installed_at = now
                if o.state == P.STALLED:
                    o.state = "receiving"  # our own re-offer resumes it
                self.on_event("final" if o.final else "status", o)


# ----------------------------------------------------------------------------------------------
# command line

def parse_size(text: str) -> int:
    t = text.strip().lower()
    mult = 1
    if t.endswith(("k", "kib", "kb")):
        mult, t = 1024, t.rstrip("kib").rstrip("b")
    elif t.endswith(("m", "mib", "mb")):
        mult, t = 1 << 20, t.rstrip("mib").rstrip("b")
    try:
        return int(float(t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size like 131072, 128k or 1m, got {text!r}")


def parse_broker(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host:
        return text, 1883
    try:
        return host, int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HOST[:PORT], got {text!r}")


class _Printer:
    """Progress lines: a device's line is reprinted at each 10% and at every state change."""

    def __init__(self, quiet: bool, stream=sys.stderr):
        self.quiet, self.stream = quiet, stream
        self.shown: dict[str, tuple] = {}

    def __call__(self, kind: str, o: DeviceOutcome) -> None:
        if self.quiet:
            return
        if kind == "disconnected":
            print(f"  broker connection lost ({o.message}); reconnecting", file=self.stream)
            return
        pct = int(100 * o.have / o.total) // 10 * 10 if o.total else 0
        key = (o.state, pct)
        if self.shown.get(o.device) == key:
            return
        self.shown[o.device] = key
        extra = f" ({o.reason}: {o.message})" if o.reason else ""
        count = f" {o.have}/{o.total} {'chunk' if o.total == 1 else 'chunks'}" if o.total else ""
        print(f"  {o.device}: {o.state}{count}{extra}", file=self.stream, flush=True)


def _count(n: int, word: str) -> str:
    """'1 chunk', '3 chunks'."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def cmd_push(args) -> int:
    host, port = args.broker
    printer = _Printer(args.quiet or args.json)
    pusher = Pusher(args.file, sig_path=args.sig, host=host, port=port, prefix=args.prefix,
                    devices=tuple(args.device or ()), fleet=args.fleet,
                    chunk_size=args.chunk_size, timeout=args.timeout, discover=args.discover,
                    username=args.username, password=os.environ.get("BULLET_MQTT_PASSWORD"),
                    on_event=printer)
    m = pusher.manifest
    if not (args.quiet or args.json):
        target = f"fleet {args.fleet}" if args.fleet else ", ".join(args.device)
        print(f"pushing {m['name']} {m['version']} ({_count(m['size'], 'byte')}, {_count(pusher.n_chunks, 'chunk')} "
              f"of {pusher.chunk_size}) to {target} via {host}:{port}, push {pusher.push_id}",
              file=sys.stderr)
    outcomes = asyncio.run(pusher.run())
    elapsed = time.monotonic() - pusher.started
    if args.json:
        print(json.dumps({"push_id": pusher.push_id, "name": m["name"], "version": m["version"],
                          "seconds": round(elapsed, 3),
                          "devices": {d: o.as_dict() for d, o in outcomes.items()}}))
    else:
        if not outcomes:
            print(f"no device of fleet {args.fleet} answered", file=sys.stderr)
        for d, o in sorted(outcomes.items()):
            why = f" [{o.reason}] {o.message}" if o.reason else ""
            print(f"{d}: {o.state}{why} (sent {_count(o.chunks_sent, 'chunk')}, {_count(o.bytes_sent, 'byte')})")
    ok = bool(outcomes) and all(o.state == P.INSTALLED for o in outcomes.values())
    return 0 if ok else 1


def register(subparsers) -> argparse.ArgumentParser:
    """Add `push` to a `bullet` (or `bullet-train`) subcommand parser."""
    p = subparsers.add_parser("push", help="push a signed child to devices over MQTT (OTA)",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="the .bullet file (FILE.sig must exist: bullet sign)")
    tgt = p.add_mutually_exclusive_group(required=True)
    tgt.add_argument("--device", action="append", help="device id (repeat for several)")
    tgt.add_argument("--fleet", help="fleet group: every online device of the group")
    p.add_argument("--broker", type=parse_broker,
                   default=parse_broker(os.environ.get("BULLET_BROKER", "127.0.0.1:1883")),
                   help="HOST[:PORT] (default $BULLET_BROKER or 127.0.0.1:1883)")
    p.add_argument("--prefix", default="bullet", help="topic prefix (default bullet)")
    p.add_argument("--sig", help="signature file (default FILE.sig)")
    p.add_argument("--chunk-size", type=parse_size, default=DEFAULT_CHUNK,
                   help="bytes per chunk, e.g. 64k (default 128k)")
    p.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    p.add_argument("--discover", type=float, default=1.5,
                   help="seconds to collect a fleet's members before offering")
    p.add_argument("--username", help="MQTT user (password from $BULLET_MQTT_PASSWORD)")
    p.add_argument("--json", action="store_true", help="print one JSON result object")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_push)
    return p
