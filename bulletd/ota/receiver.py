"""The device side of OTA: receive signed chunked pushes, verify, install atomically, hot swap.

    receiver = OtaReceiver(config, trust_store, models_dir, ota_dir, install_hook=hook)
    await receiver.run()          # its own MQTT connection; reconnects forever; cancel to stop

State machine of one push (docs/OTA.md has the full table):

    offer --verify manifest, version, space--> receiving --all chunks--> received
          --size, SHA-256, signature--> verified --format, smoke test--> install (journal)
          --install_hook (hot swap)--> installed
    any step may end in rejected(reason); a transfer without progress ends in stalled, its
    partial file kept so that a new offer of the same file resumes it.

The receiver pulls: it asks the pusher for chunk numbers on <p>/<dev>/ota/need, keeping at most
`window` requests in flight, and gets each chunk on <p>/<dev>/ota/data. It writes chunks with
pwrite into a preallocated .part, fsyncs and saves its bitmap every window, and re-asks for
chunks that do not come within chunk_timeout. Run standalone with `python -m bulletd.ota receive`.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

import aiomqtt

from bulletd.errors import BulletError, FormatError, TrustError
from bulletd.mqtt_conn import TLS, Backoff, Broker, make_client
from bulletd.names import name_problem
from bulletd.ota import protocol as P
from bulletd.ota.protocol import OtaError
from bulletd.ota.staging import (Ledger, Transfer, atomic_write, failpoint, fsync_dir, io_error,
                                 link_or_copy, recover, run_journal, TMP_SUFFIX)

log = logging.getLogger("bulletd.ota")

SHA_RE = re.compile(r"^[0-9a-f]{64}$")
# outcomes that judge the file's content; a later offer of the same bytes is a replay
CONTENT_VERDICTS = ("installed", "smoke_test_failed", "bad_file", "name_mismatch", "swap_failed")
# reasons whose file is signed and whole but bad: kept in rejected/ for a person to look at
SET_ASIDE = ("smoke_test_failed", "bad_file", "name_mismatch", "swap_failed")

InstallHook = Callable[[str, Path, dict], Awaitable[None]]


@dataclass(frozen=True)
class OtaConfig:
    device: str
    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = "bullet"
    groups: tuple[str, ...] = ()           # fleet groups whose offers this device takes
    username: str | None = None
    password: str | None = None
    window: int = 8                        # chunk requests in flight (flow control)
    chunk_timeout: float = 2.0             # re-ask for requested chunks after this silence (s)
    stall_timeout: float = 60.0            # no chunk for this long: the push is stalled (s)
    max_file_size: int = 64 << 20          # children are 1-15 MB; refuses anything absurd
    min_free_bytes: int = 1 << 20          # keep this much free on the staging filesystem
    partial_ttl: float = 7 * 86400.0       # drop partial transfers older than this at start (s)
    keep_rejected: int = 2                 # set-aside files kept per child
    require_vectors: bool = False          # refuse children without verification vectors
    smoke_test: bool = True
    keepalive: int = 15
    reconnect_max: float = 5.0             # backoff ceiling between broker connection tries (s)
    tls: TLS | None = None                 # None: plain TCP

    @classmethod
    def from_mapping(cls, m: dict, *, device: str, host: str = "127.0.0.1", port: int = 1883,
                     prefix: str = "bullet") -> "OtaConfig":
        """Build from the daemon config's `ota:` section; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        extra = set(m) - known
        if extra:
            raise ValueError(f"ota config: unknown keys {sorted(extra)}; known: {sorted(known)}")
        kw = dict(device=device, host=host, port=port, prefix=prefix)
        kw.update(m)
        if "groups" in kw:
            kw["groups"] = tuple(kw["groups"] or ())
        return cls(**kw)

    def broker(self) -> Broker:
        return Broker(self.host, self.port, username=self.username, password=self.password,
                      tls=self.tls, keepalive=self.keepalive)

    def __post_init__(self):
        P.check_topic_word("device id", self.device)
        for g in self.groups:
            P.check_topic_word("fleet group", g)
        if self.window < 1 or self.window > 256:
            raise ValueError(f"ota window must be 1..256, found {self.window}")


@dataclass
class _Active:
    """The transfer being received now and its request bookkeeping."""
    transfer: Transfer
    push_id: str
    signed: dict
    force: bool = False
    inflight: dict = field(default_factory=dict)     # seq -> time asked
    last_chunk: float = field(default_factory=time.monotonic)
    last_status: float = 0.0
    started: float = field(default_factory=time.monotonic)
    duplicates: int = 0
    bad_chunks: int = 0
    finishing: bool = False
    flushing: asyncio.Future | None = None           # the background fsync of a window
    label: str = ""                                  # the file as the sender knows it, for messages

    def plain(self, message: str) -> str:
        """A message with the staging paths replaced by the file the sender gave us."""
        t = self.transfer
        m = self.signed["manifest"]
        label = self.label or f"{m['name']} {m['version']}"
        sig = t.part.with_name(f"{t.sha256}.sig")
        return message.replace(str(sig), label + ".sig").replace(str(t.part), label)


class OtaReceiver:
    """Receives pushes for one device. See the module docstring for the protocol.

    Arguments:
      config        OtaConfig (device id, broker, limits)
      trust         bulletd.signing.TrustStore: the keys a child must be signed by
      models_dir    where live children are: <name>.bullet and <name>.bullet.sig
      ota_dir       the receiver's own state (staging/, previous/, rejected/, ledger.json)
      install_hook  async fn(name, live_path, manifest) called after the files are installed;
                    the daemon swaps the child in. If it raises, the install is undone
                    (previous version restored) and the push is rejected with swap_failed.
      smoke         fn(path) -> dict, raising on failure; default bulletd.ota.smoke.smoke_test
    """

    def __init__(self, config: OtaConfig, trust, models_dir, ota_dir,
                 install_hook: InstallHook | None = None, smoke=None):
        self.config = config
        self.trust = trust
        self.models_dir = Path(models_dir)
        self.ota_dir = Path(ota_dir)
        self.staging = self.ota_dir / "staging"
        self.previous = self.ota_dir / "previous"
        self.rejected = self.ota_dir / "rejected"
        self.install_hook = install_hook
        if smoke is None and config.smoke_test:
            from bulletd.ota.smoke import smoke_test

            def smoke(path):
                return smoke_test(path, require_vectors=config.require_vectors)
        self.smoke = smoke
        self.ledger = Ledger(self.ota_dir / "ledger.json")
        self.active: _Active | None = None
        self.client: aiomqtt.Client | None = None
        self.connected = asyncio.Event() if _loop_running() else None
        self.finals: dict[str, dict] = {}       # push_id -> final status (idempotent re-offers)
        self.events: collections.deque = collections.deque(maxlen=200)  # recent statuses
        self._lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task] = set()
        self.recovered = recover(self.ota_dir, self.models_dir, self.ledger)
        for a in self.recovered:
            log.warning("OTA recovery: %s", a)
        self._expire_partials()

    def _ensure_dirs(self) -> None:
        """Made on first use, not at start: a daemon run on a read-only or shared model
        directory (e.g. the repository's child_models/) leaves no trace until a push arrives."""
        try:
            for d in (self.models_dir, self.staging, self.previous, self.rejected):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise io_error(f"creating the OTA directories under {self.ota_dir}", exc) from exc

    def _install_lock(self) -> asyncio.Lock:
        # one install at a time (a push and a local install/rollback never interleave)
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    # ------------------------------------------------------------------------------------------
    # topics

    def topic(self, leaf: str) -> str:
        return P.device_topic(self.config.prefix, self.config.device, leaf)

    def offer_topics(self) -> list[str]:
        return [self.topic("offer")] + [P.fleet_offer_topic(self.config.prefix, g)
                                        for g in self.config.groups]

    # ------------------------------------------------------------------------------------------
    # the connection loop

    async def run(self) -> None:
        """Connect, serve offers and chunks, reconnect with backoff; runs until cancelled."""
        if self.connected is None:
            self.connected = asyncio.Event()
        c = self.config
        state_offline = P.pack(self._presence(online=False))
        backoff = Backoff(0.2, c.reconnect_max)
        ticker = asyncio.create_task(self._ticker())
        resume = asyncio.create_task(self._finish_complete_transfers())
        try:
            while True:
                client = make_client(
                    c.broker(), f"bulletd-{c.device}-ota", protocol=aiomqtt.ProtocolVersion.V5,
                    will=aiomqtt.Will(self.topic("state"), state_offline, qos=1, retain=True),
                    max_queued_incoming_messages=4096,
                    pending_calls=64)   # a window of publishes is normal here
                try:
                    async with client:
                        self.client = client
                        for t in self.offer_topics():
                            await client.subscribe(t, qos=1)
                        await client.subscribe(self.topic("data"), qos=1)
                        await self._publish_presence()
                        self.connected.set()
                        backoff.reset()
                        log.info("OTA receiver %s connected to %s:%s", c.device, c.host, c.port)
                        if self.active and not self.active.finishing:
                            self.active.inflight.clear()   # ask again for whatever was lost
                            await self._pump()
                        try:
                            async for msg in client.messages:
                                await self._dispatch(msg)
                        except asyncio.CancelledError:
                            # a graceful exit drops the Will: say offline ourselves, briefly
                            await asyncio.wait({asyncio.create_task(self._publish(
                                self.topic("state"), self._presence(online=False), retain=True))},
                                timeout=1.0)
                            raise
                except aiomqtt.MqttError as exc:
                    log.warning("OTA connection to %s:%s lost: %s", c.host, c.port, exc)
                finally:
                    self.client = None
                    self.connected.clear()
                await backoff.sleep()
        finally:
            ticker.cancel()
            resume.cancel()
            for t in list(self._tasks):
                t.cancel()
            a = self.active
            if a is not None and (a.flushing is None or a.flushing.done()):
                try:   # keep what arrived; a flush still running on its thread does the same
                    a.transfer.flush()
                except OtaError as exc:
                    log.warning("OTA: %s", exc)
                a.transfer.close()

    async def _dispatch(self, msg) -> None:
        topic = msg.topic.value
        body = None
        try:
            body = P.unpack(msg.payload, topic)
            if topic == self.topic("data"):
                await self._on_chunk(body, topic)
            else:
                await self._on_offer(body, topic)
        except OtaError as exc:
            # a malformed message is the sender's problem; say so once, keep serving
            log.warning("OTA: %s", exc)
            if topic != self.topic("data"):
                push_id = body.get("push_id") if isinstance(body, dict) else None
                await self._status(str(push_id) if push_id else None, P.REJECTED,
                                   reason=exc.reason, message=exc.message)
        except Exception:  # a bug: log it with a traceback, keep the receiver alive
            log.exception("OTA: internal error handling a message on %s", topic)

    async def _publish(self, topic: str, msg: dict, *, retain: bool = False, qos: int = 1) -> bool:
        client = self.client
        if client is None:
            return False
        try:
            await client.publish(topic, P.pack(msg), qos=qos, retain=retain)
            return True
        except aiomqtt.MqttError as exc:
            log.warning("OTA: publish to %s failed: %s", topic, exc)
            return False

    def _presence(self, online: bool = True) -> dict:
        return {"v": P.PROTOCOL_VERSION, "type": "state", "device": self.config.device,
                "online": online, "groups": list(self.config.groups),
                "children": {n: e.get("version") for n, e in self.ledger.children.items()},
                "busy": self.active.push_id if self.active else None, "ts": time.time()}

    async def _publish_presence(self) -> None:
        await self._publish(self.topic("state"), self._presence(), retain=True)

    async def _status(self, push_id, state, *, reason=None, message="", manifest=None,
                      have=0, total=0, **extra) -> dict:
        m = manifest or {}
        st = P.make_status(self.config.device, push_id, state, name=m.get("name"),
                           version=m.get("version"), sha256=m.get("sha256"), reason=reason,
                           message=message, have=have, total=total, **extra)
        self.events.append(st)
        if state in P.FINAL_STATES and push_id:
            self.finals[push_id] = st
            while len(self.finals) > 256:   # bounded: older pushes are in the ledger anyway
                self.finals.pop(next(iter(self.finals)))
        if state in P.FINAL_STATES and m.get("name"):
            self.ledger.last[m["name"]] = {k: st[k] for k in ("push_id", "state", "version",
                                                              "reason", "message", "ts")}
            try:
                self.ledger.save()
            except OSError as exc:
                log.error("OTA: cannot save the ledger: %s", exc)
        level = logging.WARNING if state == P.REJECTED else logging.INFO
        log.log(level, "OTA %s %s %s: %s%s", push_id, m.get("name"), m.get("version"), state,
                f" ({reason}: {message})" if reason else "")
        await self._publish(self.topic("status"), st, retain=True)
        return st

    # ------------------------------------------------------------------------------------------
    # offers

    def installed_version(self, name: str):
        """The version of the live child NAME (from its .sig, else the ledger), or None."""
        sig = self.models_dir / f"{name}.bullet.sig"
        if sig.exists():
            try:
                return json.loads(sig.read_text())["manifest"]["version"]
            except (OSError, ValueError, KeyError, TypeError):
                pass
        entry = self.ledger.children.get(name)
        return entry.get("version") if entry else None

    def check_admissible(self, manifest: dict, *, force: bool = False) -> None:
        """Anti-rollback and replay rules. Raises OtaError(replay / downgrade / bad_version)."""
        name, version, sha = manifest["name"], manifest["version"], manifest["sha256"]
        key = P.version_key(version, f"offer of {name}")
        if force:
            return
        seen = self.ledger.seen.get(sha)
        if seen and seen.get("outcome") == "name_mismatch" and \
                (seen.get("name"), seen.get("version")) != (name, version):
            seen = None   # the manifest was wrong, not the file: a correct offer of it is new
        if seen and seen.get("outcome") in CONTENT_VERDICTS:
            raise OtaError("replay", f"{name} {version} (sha256 {sha[:12]}) was offered before "
                                     f"and ended {seen.get('outcome')}")
        floor = []
        inst = self.installed_version(name)
        if inst is not None:
            floor.append((P.version_key(inst, "installed version"), f"installed {inst}"))
        hw = (self.ledger.children.get(name) or {}).get("high_water")
        if hw is not None:
            floor.append((P.version_key(hw, "highest version"), f"highest ever installed {hw}"))
        for k, what in floor:
            if key <= k:
                raise OtaError("downgrade", f"{name} {version} is not higher than the {what}")

    def _check_manifest(self, signed: dict) -> dict:
        try:
            from bulletd.signing import verify_manifest
            manifest = verify_manifest(signed, self.trust)
        except TrustError as exc:
            code = exc.code if exc.code in P.REASONS else "bad_signature"
            raise OtaError(code, str(exc)) from exc
        why = name_problem(manifest.get("name"))
        if why is not None:
            raise OtaError("bad_offer", f"manifest name is not a safe file name: {why}")
        if not SHA_RE.match(str(manifest.get("sha256"))):
            raise OtaError("bad_offer", "manifest sha256 is not 64 lower-case hex digits")
        if manifest["size"] > self.config.max_file_size:
            raise OtaError("too_large", f"{manifest['name']} is {manifest['size']} bytes, more "
                                        f"than max_file_size {self.config.max_file_size}")
        return manifest

    async def _on_offer(self, msg: dict, topic: str) -> None:
        P.check_offer(msg, topic)
        push_id = msg["push_id"]
        if push_id in self.finals:   # the pusher asks again: repeat the verdict, do nothing else
            await self._publish(self.topic("status"), self.finals[push_id], retain=True)
            return
        for sha, seen in self.ledger.seen.items():
            if seen.get("push_id") == push_id and seen.get("outcome") == "installed":
                await self._status(push_id, P.INSTALLED, manifest=dict(seen, sha256=sha),
                                   message="already installed by this push")
                return
        signed = msg["signed"]
        try:
            manifest = self._check_manifest(signed)
            if self.active and self.active.transfer.sha256 == manifest["sha256"]:
                # the same file offered again (pusher restarted, or broker lost messages): go on
                a = self.active
                a.push_id = push_id
                a.inflight.clear()
                a.last_chunk = time.monotonic()
                if not a.finishing and msg["chunk_size"] != a.transfer.chunk_size:
                    # the new pusher numbers chunks differently: re-map what is durable
                    await self._settle(a)
                    a.transfer.close()
                    a.transfer = self._rechunk(a.transfer, msg["chunk_size"], signed, push_id)
                    a.transfer.open()
                if not a.finishing:
                    await self._status(push_id, P.RECEIVING, manifest=manifest,
                                       have=a.transfer.have, total=a.transfer.total,
                                       message="resuming")
                    await self._pump()
                return
            self.check_admissible(manifest)
            if self.active:
                idle = time.monotonic() - self.active.last_chunk
                if self.active.finishing or idle < self.config.chunk_timeout * 3:
                    # not a verdict: the pusher keeps offering and gets its turn
                    await self._status(push_id, P.WAITING, reason="busy", manifest=manifest,
                                       message=f"receiving {self.active.transfer.name} "
                                               f"{self.active.transfer.version} (push "
                                               f"{self.active.push_id}); offer again later")
                    return
                await self._stall(self.active, "superseded by a new offer")
            await self._status(push_id, P.OFFERED, manifest=manifest)
            self._start(push_id, signed, manifest, msg["chunk_size"])
        except OtaError as exc:
            await self._status(push_id, P.REJECTED, reason=exc.reason, message=exc.message,
                               manifest=signed.get("manifest") if isinstance(signed, dict) else None)
            return
        a = self.active
        await self._status(push_id, P.RECEIVING, manifest=manifest, have=a.transfer.have,
                           total=a.transfer.total,
                           message="resuming" if a.transfer.have else "")
        await self._publish_presence()
        if a.transfer.complete:
            self._finish(a)
        else:
            await self._pump()

    def _start(self, push_id: str, signed: dict, manifest: dict, chunk_size: int) -> None:
        sha = manifest["sha256"]
        # one partial per child: an older offer of the same name is abandoned
        for offer in self.staging.glob("*.offer"):
            other = offer.name.split(".", 1)[0]
            if other == sha:
                continue
            try:
                if json.loads(offer.read_text())["signed"]["manifest"]["name"] == manifest["name"]:
                    for p in self.staging.glob(f"{other}.*"):
                        p.unlink(missing_ok=True)
            except (OSError, ValueError, KeyError, TypeError):
                pass
        transfer = None
        if (self.staging / f"{sha}.offer").exists():
            try:
                transfer = Transfer.load(self.staging, sha)
                if transfer.chunk_size != chunk_size:
                    # the bitmap counts chunks of the old size; keep the bytes that are whole
                    transfer = self._rechunk(transfer, chunk_size, signed, push_id)
                transfer.open()
            except OtaError as exc:
                log.warning("OTA: cannot resume %s (%s); starting over", sha[:12], exc)
                for p in self.staging.glob(f"{sha}.*"):
                    p.unlink(missing_ok=True)
                transfer = None
        if transfer is None:
            self._check_space(manifest["size"])
            transfer = Transfer.create(self.staging, signed, chunk_size, push_id)
        self.active = _Active(transfer=transfer, push_id=push_id, signed=signed)

    def _rechunk(self, old: Transfer, chunk_size: int, signed: dict, push_id: str) -> Transfer:
        """A resumed offer with another chunk size: mark the new chunks wholly covered by old
        durable chunks as present, rewrite the bitmap and offer record."""
        record = dict(old.record, chunk_size=chunk_size, push_id=push_id)
        new = Transfer(self.staging, record)
        for seq in range(new.total):
            lo, hi = seq * chunk_size, min(new.size, (seq + 1) * chunk_size)
            first, last = lo // old.chunk_size, (hi - 1) // old.chunk_size
            new.bits[seq] = int(all(old.bits[first:last + 1]))
        try:
            atomic_write(new.offer_path, json.dumps(record).encode())
            atomic_write(new.bits_path, bytes(new.bits))
        except OSError as exc:
            raise io_error(f"re-chunking {new.part}", exc) from exc
        return new

    def _check_space(self, size: int) -> None:
        self._ensure_dirs()
        try:
            st = os.statvfs(self.staging)
        except OSError as exc:
            raise io_error(f"statvfs {self.staging}", exc) from exc
        free = st.f_bavail * st.f_frsize
        if free < size + self.config.min_free_bytes:
            raise OtaError("no_space", f"staging {self.staging} has {free} bytes free; the file "
                                       f"needs {size} + {self.config.min_free_bytes} reserve")

    # ------------------------------------------------------------------------------------------
    # chunks

    async def _pump(self) -> None:
        """Ask for missing chunks so that `window` requests are in flight."""
        a = self.active
        if a is None or a.finishing or self.client is None:
            return
        room = self.config.window - len(a.inflight)
        # ask in batches of half a window: fewer, fuller "need" messages keep the pipe busy
        # even through a broker that leaves Nagle on (mosquitto's default)
        if room < max(1, self.config.window // 2):
            return
        seqs = a.transfer.missing(room, skip=set(a.inflight))
        if not seqs:
            return
        now = time.monotonic()
        for s in seqs:
            a.inflight[s] = now
        await self._publish(self.topic("need"),
                            P.make_need(a.push_id, self.config.device, seqs, a.transfer.have,
                                        a.transfer.total))

    async def _on_chunk(self, msg: dict, topic: str) -> None:
        P.check_chunk(msg, topic)
        a = self.active
        if a is None or a.finishing or msg["push_id"] != a.push_id:
            return  # a late chunk of a finished or superseded push
        t = a.transfer
        seq, data = msg["seq"], msg["data"]
        if not 0 <= seq < t.total:
            log.warning("OTA: chunk %d outside 0..%d of push %s", seq, t.total - 1, a.push_id)
            return
        a.inflight.pop(seq, None)
        if len(data) != t.expected_len(seq) or P.chunk_crc(data) != msg["crc"]:
            # damaged in transit: drop it; _pump asks for it again right away
            a.bad_chunks += 1
            log.warning("OTA: chunk %d of push %s damaged (len %d, expected %d, crc %s); "
                        "asking again", seq, a.push_id, len(data), t.expected_len(seq),
                        "ok" if P.chunk_crc(data) == msg["crc"] else "wrong")
            await self._pump()
            return
        a.last_chunk = time.monotonic()
        try:
            if not t.write_chunk(seq, data):
                a.duplicates += 1
            failpoint("after_chunk")
        except OtaError as exc:
            await self._reject(a, exc, keep_partial=False)
            return
        if t.complete:
            self._finish(a)   # its first step waits for the flushes and makes the last one
            return
        if t.dirty >= self.config.window and (a.flushing is None or a.flushing.done()):
            # fsync on a worker thread: the daemon's loop keeps serving requests meanwhile
            a.flushing = asyncio.ensure_future(asyncio.to_thread(t.commit_flush, t.begin_flush()))
            a.flushing.add_done_callback(lambda f, a=a: self._flush_done(a, f))
        if time.monotonic() - a.last_status > 0.5:
            a.last_status = time.monotonic()
            await self._status(a.push_id, P.RECEIVING, manifest=a.signed["manifest"],
                               have=t.have, total=t.total)
        await self._pump()

    async def _ticker(self) -> None:
        """Re-ask for chunks that did not come; declare a push stalled after stall_timeout."""
        while True:
            await asyncio.sleep(min(0.25, self.config.chunk_timeout / 4))
            a = self.active
            if a is None or a.finishing:
                continue
            now = time.monotonic()
            if now - a.last_chunk > self.config.stall_timeout:
                await self._stall(a, f"no chunk for {self.config.stall_timeout:.0f} s")
                continue
            late = [s for s, t0 in a.inflight.items() if now - t0 > self.config.chunk_timeout]
            if late and self.client is not None:
                for s in late:
                    del a.inflight[s]
                await self._pump()

    def _flush_done(self, a: _Active, fut: asyncio.Future) -> None:
        if fut.cancelled() or fut.exception() is None:
            return
        exc = fut.exception()
        if self.active is a and not a.finishing:
            if not isinstance(exc, OtaError):
                exc = OtaError("internal", f"internal error: {exc}")
            task = asyncio.ensure_future(self._reject(a, exc, keep_partial=False))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _settle(self, a: _Active) -> None:
        """Wait for a running background flush, then flush what is left (on a thread)."""
        if a.flushing is not None:
            try:
                await a.flushing
            except OtaError:
                pass
        await asyncio.to_thread(a.transfer.flush)

    async def _settle_quietly(self, a: _Active) -> None:
        try:
            await self._settle(a)
        except OtaError as exc:
            log.warning("OTA: %s", exc)

    async def _stall(self, a: _Active, why: str) -> None:
        await self._settle_quietly(a)
        a.transfer.close()
        if self.active is a:
            self.active = None
        await self._status(a.push_id, P.STALLED, reason="timeout", message=why + "; the partial "
                           "file is kept and a new offer resumes it",
                           manifest=a.signed["manifest"], have=a.transfer.have,
                           total=a.transfer.total)
        await self._publish_presence()

    async def _reject(self, a: _Active, exc: OtaError, *, keep_partial: bool) -> None:
        t = a.transfer
        if keep_partial:
            await self._settle_quietly(a)
            t.close()
        else:
            t.remove()
        if self.active is a:
            self.active = None
        await self._status(a.push_id, P.REJECTED, reason=exc.reason, message=exc.message,
                           manifest=a.signed["manifest"], have=t.have, total=t.total)
        await self._publish_presence()

    # ------------------------------------------------------------------------------------------
    # verify, smoke test, install, swap

    def _finish(self, a: _Active) -> None:
        a.finishing = True
        task = asyncio.create_task(self._finish_push(a))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish_complete_transfers(self) -> None:
        """After a restart, a transfer that was wholly received is installed without waiting
        for the pusher (its manifest is signed; every check runs again)."""
        await asyncio.sleep(0)
        for offer in sorted(self.staging.glob("*.offer")):
            sha = offer.name.split(".", 1)[0]
            if self.active is not None:
                return
            try:
                t = Transfer.load(self.staging, sha)
            except OtaError:
                continue
            if not t.complete:
                continue
            a = _Active(transfer=t, push_id=t.record.get("push_id", "resumed"),
                        signed=t.record["signed"])
            try:
                manifest = self._check_manifest(a.signed)
                self.check_admissible(manifest)
            except OtaError as exc:
                await self._reject(a, exc, keep_partial=False)
                continue
            self.active = a
            a.finishing = True
            await self._finish_push(a)

    async def _finish_push(self, a: _Active) -> None:
        t = a.transfer
        manifest = a.signed["manifest"]
        try:
            async with self._install_lock():
                await self._settle(a)
                elapsed = time.monotonic() - a.started
                await self._status(a.push_id, P.RECEIVED, manifest=manifest, have=t.have,
                                   total=t.total, duplicates=a.duplicates,
                                   bad_chunks=a.bad_chunks, seconds=round(elapsed, 3))
                t.close()
                failpoint("after_received")
                manifest = await asyncio.to_thread(self._verify, t, a.signed)
                await self._status(a.push_id, P.VERIFIED, manifest=manifest,
                                   have=t.have, total=t.total)
                failpoint("after_verified")
                smoke_info = await asyncio.to_thread(self._inspect_and_smoke, t, manifest, a.force)
                failpoint("after_smoke")
                swap_s = await self._install(t, manifest, a.push_id)
        except OtaError as exc:
            await self._verdict(a, exc)
            return
        except Exception as exc:  # a bug: the push fails cleanly, the daemon lives on
            log.exception("OTA: internal error finishing push %s", a.push_id)
            await self._verdict(a, OtaError("internal", f"internal error: {exc} (a bug; the "
                                                        "daemon log has the traceback)"))
            return
        finally:
            if self.active is a:
                self.active = None
        await self._status(a.push_id, P.INSTALLED, manifest=manifest, have=t.total,
                           total=t.total, smoke=smoke_info, swap_seconds=round(swap_s, 4),
                           message=f"{manifest['name']} {manifest['version']} is live")
        await self._publish_presence()

    async def _verdict(self, a: _Active, exc: OtaError) -> None:
        """A push failed after it was fully received: record, set aside or delete, report."""
        exc = OtaError(exc.reason, a.plain(exc.message))
        t = a.transfer
        m = a.signed["manifest"]
        if exc.reason in CONTENT_VERDICTS:
            self.ledger.note_seen(m["sha256"], {"name": m["name"], "version": m["version"],
                                                "push_id": a.push_id, "outcome": exc.reason,
                                                "reason": exc.reason, "ts": time.time()})
        if exc.reason in SET_ASIDE and t.part.exists():
            self._set_aside(t, m, exc)
        t.remove()
        if self.active is a:
            self.active = None
        await self._status(a.push_id, P.REJECTED, reason=exc.reason, message=exc.message,
                           manifest=m, have=t.have, total=t.total)
        await self._publish_presence()

    def _set_aside(self, t: Transfer, m: dict, exc: OtaError) -> None:
        base = f"{m['name']}-{m['version']}.{exc.reason}"
        try:
            self.rejected.mkdir(parents=True, exist_ok=True)
            os.replace(t.part, self.rejected / f"{base}.bullet")
            atomic_write(self.rejected / f"{base}.json",
                         json.dumps({"manifest": m, "reason": exc.reason, "message": exc.message,
                                     "ts": time.time()}, indent=1).encode())
            kept = sorted(self.rejected.glob(f"{m['name']}-*.bullet"),
                          key=lambda p: p.stat().st_mtime)
            for old in kept[: max(0, len(kept) - self.config.keep_rejected)]:
                old.unlink(missing_ok=True)
                old.with_suffix(".json").unlink(missing_ok=True)
        except OSError as exc2:
            log.warning("OTA: cannot set %s aside: %s", t.part, exc2)

    def _verify(self, t: Transfer, signed: dict) -> dict:
        """Size, SHA-256 of every byte and the signature, through the one signing contract."""
        from bulletd.signing import verify_file
        sig = self.staging / f"{t.sha256}.sig"
        try:
            atomic_write(sig, (json.dumps(signed, indent=1, sort_keys=True) + "\n").encode())
        except OSError as exc:
            raise io_error(f"writing {sig}", exc) from exc
        try:
            return verify_file(t.part, self.trust, sig_path=sig)
        except TrustError as exc:
            code = exc.code if exc.code in P.REASONS else "bad_signature"
            raise OtaError(code, str(exc)) from exc

    def _inspect_and_smoke(self, t: Transfer, manifest: dict, force: bool) -> dict:
        from bulletd.format import BulletFile
        try:
            with BulletFile.open(t.part) as bf:
                name, version = bf.name, bf.version
        except FormatError as exc:
            raise OtaError("bad_file", str(exc)) from exc
        if name != manifest["name"] or P.version_key(version, "header version") != \
                P.version_key(manifest["version"], "manifest version"):
            raise OtaError("name_mismatch", f"header says {name} {version}, the signed manifest "
                                            f"says {manifest['name']} {manifest['version']}")
        self.check_admissible(manifest, force=force)  # the ledger may have moved meanwhile
        if self.smoke is None:
            return {"skipped": True}
        try:
            return self.smoke(t.part)
        except BulletError as exc:
            raise OtaError("smoke_test_failed", str(exc)) from exc

    async def _install(self, t: Transfer, manifest: dict, push_id: str) -> float:
        """Rename the verified files into place under a journal, then let the daemon swap.
        Returns the seconds the swap took."""
        name = manifest["name"]
        live = self.models_dir / f"{name}.bullet"
        # the ledger entry as it was: a swap that fails puts it back whole, so a version that
        # never went live raises no high-water mark
        before = dict(self.ledger.children[name]) if name in self.ledger.children else None
        had_previous = await asyncio.to_thread(self._install_files, t, manifest, push_id)
        failpoint("after_install")
        t0 = time.monotonic()
        if self.install_hook is not None:
            try:
                await self.install_hook(name, live, manifest)
            except Exception as exc:
                log.warning("OTA: swapping %s %s in failed (%s); restoring the previous version",
                            name, manifest["version"], exc)
                await asyncio.to_thread(self._undo_install, name, manifest, had_previous, before)
                raise OtaError("swap_failed", f"the daemon could not load {name} "
                                              f"{manifest['version']}: {exc}") from exc
        return time.monotonic() - t0

    def _install_files(self, t: Transfer, manifest: dict, push_id: str) -> bool:
        name = manifest["name"]
        live = self.models_dir / f"{name}.bullet"
        live_sig = self.models_dir / f"{name}.bullet.sig"
        prev = self.previous / f"{name}.bullet"
        prev_sig = self.previous / f"{name}.bullet.sig"
        staged_sig = self.staging / f"{t.sha256}.sig"
        moves = []
        had_previous = live.exists()
        try:
            self._ensure_dirs()
            if had_previous:
                # keep the live pair as "previous" (hard links: no copy, no space)
                prev_sig.unlink(missing_ok=True)
                link_or_copy(live, prev.with_name(prev.name + TMP_SUFFIX))
                moves.append((str(prev.with_name(prev.name + TMP_SUFFIX)), str(prev)))
                if live_sig.exists():
                    link_or_copy(live_sig, prev_sig.with_name(prev_sig.name + TMP_SUFFIX))
                    moves.append((str(prev_sig.with_name(prev_sig.name + TMP_SUFFIX)),
                                  str(prev_sig)))
            # the .sig first: a crash between the two renames is finished by the journal anyway
            moves += [(str(staged_sig), str(live_sig)), (str(t.part), str(live))]
            hw = (self.ledger.children.get(name) or {}).get("high_water")
            if hw is None or P.version_key(manifest["version"]) > P.version_key(hw):
                hw = manifest["version"]
            entry = {"version": manifest["version"], "sha256": manifest["sha256"],
                     "push_id": push_id, "high_water": hw, "installed_at": time.time()}
            journal = {"op": "install", "name": name, "moves": moves,
                       "ledger": {"children": {name: entry},
                                  "seen": {manifest["sha256"]: {
                                      "name": name, "version": manifest["version"],
                                      "push_id": push_id, "outcome": "installed",
                                      "reason": None, "ts": time.time()}}}}
            failpoint("before_journal")
            atomic_write(self.ota_dir / "install.json", json.dumps(journal).encode())
            failpoint("after_journal")
            run_journal(self.ota_dir / "install.json", self.ledger)
            failpoint("after_rename")
            for p in (t.bits_path, t.offer_path):
                p.unlink(missing_ok=True)
            fsync_dir(self.staging)
        except OSError as exc:
            raise io_error(f"installing {name} into {self.models_dir}", exc) from exc
        return had_previous

    def _undo_install(self, name: str, manifest: dict, had_previous: bool,
                      before: dict | None) -> None:
        """The daemon refused the new file: put the previous pair back (or remove the new one
        when there was none), keep the rejected file aside, and restore the ledger entry of
        NAME as it was before the install (None: there was none)."""
        live = self.models_dir / f"{name}.bullet"
        live_sig = self.models_dir / f"{name}.bullet.sig"
        base = self.rejected / f"{name}-{manifest['version']}.swap_failed"
        moves = [(str(live), str(base) + ".bullet")]
        if had_previous:
            for src, dst in ((self.previous / f"{name}.bullet", live),
                             (self.previous / f"{name}.bullet.sig", live_sig)):
                link_or_copy(src, src.with_name(src.name + TMP_SUFFIX))
                moves.append((str(src.with_name(src.name + TMP_SUFFIX)), str(dst)))
        else:
            moves.append((str(live_sig), str(base) + ".bullet.sig"))
        atomic_write(self.ota_dir / "install.json",
                     json.dumps({"op": "undo", "name": name, "moves": moves,
                                 "ledger": {"children": {name: before}}}).encode())
        run_journal(self.ota_dir / "install.json", self.ledger)

    # ------------------------------------------------------------------------------------------
    # local admin operations (bulletd-cli install / rollback)

    async def install_local(self, path, sig_path=None, *, force: bool = False,
                            _link: bool = False, label: str = "") -> dict:
        """Install a signed file from the local disk, the same way as a push. `force` skips
        the anti-rollback and replay rules (never the signature). Messages name the file as
        `label` (default: path). Returns the final status."""
        from bulletd.signing import read_signature
        path = Path(path)
        try:
            signed = read_signature(sig_path or str(path) + ".sig")
        except TrustError as exc:
            raise OtaError(exc.code if exc.code in P.REASONS else "bad_signature", str(exc))
        manifest = self._check_manifest(signed)
        self.check_admissible(manifest, force=force)
        push_id = f"local-{int(time.time() * 1000):x}"
        sha = manifest["sha256"]
        for p in self.staging.glob(f"{sha}.*"):
            p.unlink(missing_ok=True)
        self._check_space(manifest["size"])
        record = {"signed": signed, "chunk_size": P.MAX_CHUNK, "push_id": push_id,
                  "created": time.time(), "local": True}
        t = Transfer(self.staging, record)
        try:
            await asyncio.to_thread(self._stage_copy, path, t, _link)
        except OSError as exc:
            t.remove()
            raise io_error(f"copying {path} into staging", exc) from exc
        a = _Active(transfer=t, push_id=push_id, signed=signed, force=force, finishing=True,
                    label=label or str(path))
        await self._finish_push(a)
        return self.finals[push_id]

    @staticmethod
    def _stage_copy(src: Path, t: Transfer, link: bool = False) -> None:
        """Copy (or, for our own previous/ files, hard-link) src into staging, durably. An
        administrator's file is copied: a later edit of it must never change the live child."""
        tmp = t.part.with_name(t.part.name + TMP_SUFFIX)
        if link:
            link_or_copy(src, tmp)
        else:
            shutil.copyfile(src, tmp)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, t.part)
        t.bits = bytearray([1] * t.total)

    async def rollback(self, name: str) -> dict:
        """Return NAME to the version an install replaced (kept in previous/). The version
        rolled back from becomes the new previous, so a second rollback undoes the first."""
        prev = self.previous / f"{name}.bullet"
        if name_problem(name) is not None or not prev.exists():
            raise OtaError("bad_offer", f"no previous version of {name!r} is kept in "
                                        f"{self.previous}")
        tmp = self.ota_dir / f"rollback-{name}.bullet{TMP_SUFFIX}"
        link_or_copy(prev, tmp)
        sig = self.previous / f"{name}.bullet.sig"
        try:
            return await self.install_local(tmp, sig, force=True, _link=True,
                                            label=f"the previous version of {name}")
        finally:
            tmp.unlink(missing_ok=True)

    def status(self) -> dict:
        """For `bulletd-cli list` / status: the live versions and the last push of each child."""
        return {"device": self.config.device,
                "children": {n: dict(e) for n, e in self.ledger.children.items()},
                "last": {n: dict(e) for n, e in self.ledger.last.items()},
                "active": None if self.active is None else {
                    "push_id": self.active.push_id, "name": self.active.transfer.name,
                    "version": self.active.transfer.version, "have": self.active.transfer.have,
                    "total": self.active.transfer.total}}

    def _expire_partials(self) -> None:
        now = time.time()
        for offer in self.staging.glob("*.offer"):
            try:
                created = json.loads(offer.read_text()).get("created", 0)
            except (OSError, ValueError):
                created = 0
            if now - created > self.config.partial_ttl:
                sha = offer.name.split(".", 1)[0]
                for p in self.staging.glob(f"{sha}.*"):
                    p.unlink(missing_ok=True)
                log.info("OTA: dropped partial transfer %s older than %.0f s", sha[:12],
                         self.config.partial_ttl)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False
