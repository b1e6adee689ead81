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

One job per module: the connection loop and the statuses (this module), the transfer pump
(offers and chunks: pump.py), the verify/install pipeline (install.py) and the admin operations
(local install, rollback, status: admin.py). OtaReceiver is the one object; the other modules
give it their methods.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

import aiomqtt

from bulletd.mqtt_conn import TLS, Backoff, Broker, make_client
from bulletd.ota import protocol as P
from bulletd.ota.admin import AdminOps
from bulletd.ota.install import InstallPipeline
from bulletd.ota.protocol import OtaError
from bulletd.ota.pump import _Active, TransferPump
from bulletd.ota.staging import Ledger, io_error, recover

log = logging.getLogger("bulletd.ota")

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


class OtaReceiver(TransferPump, InstallPipeline, AdminOps):
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


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False
