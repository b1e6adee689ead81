"""MQTT transport (aiomqtt): request/response, streaming, status with Last Will, fleet mode.

Topics (prefix `bullet` by default):
  <prefix>/<device>/req                 requests to this daemon
  $share/<group>/<prefix>/fleet/req     fleet requests, split by the broker between daemons
  <prefix>/<device>/status              retained JSON status; the Last Will sets it offline

Replies go to the request's Response Topic with its Correlation Data (MQTT v5), or to the
payload's `reply_to` with its `id` echoed (MQTT 3.1.1 clients). Payload encoding follows the
request: JSON when Content Type is application/json (or the payload starts with `{`), else
msgpack. The daemon connects with a fixed client id, clean_start=False and a session expiry so
that QoS 1 requests queued during a short outage are delivered after the reconnect; it always
resubscribes after a reconnect (a restarted broker forgets the session). The loop never blocks
the local socket API: connection attempts back off from reconnect_min to reconnect_max.

A QoS 1 request is acknowledged (PUBACK) only once it is served: after its final reply was
published (or, for a request that gets no reply, once it was dropped). A daemon killed while it
holds a request therefore leaves it unacknowledged in its broker session, and the broker delivers
it again when the daemon (or its restart) reconnects with that session. paho acknowledges on
receipt unless told otherwise; aiomqtt has no option for it, so the transport switches its paho
client to manual acknowledgement.

Fleet mode subscribes to the shared subscription on a second connection (client id
`<client id>-fleet`) without a persistent session. A broker keeps giving a persistent session
its turn of a shared subscription while the session's client is gone (Mosquitto 2.0 queues them
for it), so a member that died would take its share of every later fleet request with it; with
no session, its subscription ends when its connection does and the others get everything. The
requests it held when it died are lost with it (MQTT 5 lets a broker hand them to another
member, Mosquitto 2.0 does not): their requesters see no reply until their own timeout.
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import ssl
import time
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from bulletd.errors import RequestError
from bulletd.mqtt_conn import Backoff, Broker, make_client
from bulletd.mqtt_direct import direct_queue
from bulletd.tasks import cancel_and_wait
from bulletd.daemon.protocol import (CT_JSON, CT_MSGPACK, Peer, check_topic, decode_payload, encode_payload,
                                     error_from_exc, error_reply, reply_id)

log = logging.getLogger("bulletd.mqtt")

OUTBOX_MAX = 2000
DEDUP_SECONDS = 120.0
DEDUP_MAX = 10000
# A flood must not become thousands of tasks and pending replies at once (their memory stays
# with the allocator afterwards): at most `serve_max` messages are served at a time, the rest
# wait as received, up to BACKLOG_BYTES of payload; past that a request is answered busy at once.
SERVE_MIN = 64
BACKLOG_BYTES = 8 << 20


class MQTTTransport:
    def __init__(self, daemon):
        self.d = daemon
        cfg = daemon.cfg
        self.mc = cfg.mqtt
        self.v5 = self.mc.protocol == "5"
        pre, dev = self.mc.prefix, cfg.device
        self.req_topic = f"{pre}/{dev}/req"
        self.status_topic = f"{pre}/{dev}/status"
        self.fleet_topic = f"$share/{self.mc.fleet.group}/{pre}/fleet/req" if self.mc.fleet.enabled else None
        self.client_id = cfg.mqtt_client_id
        self.max_bytes = cfg.limits.max_request_bytes
        self.connected = False
        self.connects = 0
        # per link ("main", "fleet"): connection attempts (a message's ack goes only to the
        # connection it arrived on), the client, whether it is connected
        self.attempt = {"main": 0, "fleet": 0}
        self.clients: dict[str, aiomqtt.Client] = {}
        self.fleet_connected = False
        self.last_error: str | None = None
        self.client: aiomqtt.Client | None = None
        self.task: asyncio.Task | None = None
        self.fleet_task: asyncio.Task | None = None
        self.status_task: asyncio.Task | None = None
        self.stopping = False
        self.outbox: collections.deque = collections.deque()
        self.serving: set[asyncio.Task] = set()
        self.serve_max = max(SERVE_MIN, 2 * (cfg.workers + cfg.max_queue))
        self.backlog: collections.deque = collections.deque()   # messages waiting for a serving slot
        self.backlog_bytes = 0
        self.status_dirty = asyncio.Event()
        self.counts = {"received": 0, "replied": 0, "dropped": 0, "publish_errors": 0, "duplicates": 0}
        # (reply topic, correlation data or id) of recent requests: a QoS 1 redelivery after a
        # reconnect must not produce a second final reply
        self.recent: collections.OrderedDict = collections.OrderedDict()

    # ------------------------------------------------------------------ public
    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="bulletd-mqtt")
        if self.fleet_topic:
            self.fleet_task = asyncio.create_task(self._run_fleet(), name="bulletd-mqtt-fleet")
        self.status_task = asyncio.create_task(self._status_loop(), name="bulletd-mqtt-status")

    def state(self) -> dict:
        return {"enabled": True, "state": "connected" if self.connected else "disconnected",
                "broker": f"{self.mc.host}:{self.mc.port}", "protocol": self.mc.protocol,
                "client_id": self.client_id, "req_topic": self.req_topic, "fleet_topic": self.fleet_topic,
                **({"fleet_state": "connected" if self.fleet_connected else "disconnected"}
                   if self.fleet_topic else {}),
                "status_topic": self.status_topic, "connects": self.connects, "last_error": self.last_error,
                "outbox": len(self.outbox), "backlog": len(self.backlog), **self.counts}

    def mark_status_dirty(self) -> None:
        self.status_dirty.set()

    async def stop(self, graceful: bool = True) -> None:
        """Publish `offline` ourselves (a clean disconnect discards the Last Will), then leave."""
        self.stopping = True
        end = time.monotonic() + 5.0
        while (self.serving or self.backlog) and time.monotonic() < end:
            if self.serving:   # a finished task starts a waiting message: look again
                await asyncio.wait(self.serving, timeout=end - time.monotonic(),
                                   return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.sleep(0.01)
        if graceful and self.connected and self.client is not None:
            try:
                await self._publish_status("offline")
            except Exception as exc:
                log.warning("could not publish the offline status: %s", exc)
        await cancel_and_wait((self.status_task, self.task, self.fleet_task), what="MQTT task")
        self.connected = self.fleet_connected = False

    # ------------------------------------------------------------------ connection
    def _make_client(self) -> aiomqtt.Client:
        mc = self.mc
        kw: dict[str, Any] = {}
        offline = json.dumps({"state": "offline", "device": self.d.cfg.device, "reason": "connection lost"}).encode()
        if self.v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = mc.session_expiry
            kw.update(protocol=aiomqtt.ProtocolVersion.V5, clean_start=False, properties=props)
        else:
            kw.update(protocol=aiomqtt.ProtocolVersion.V311, clean_session=False)
        client = make_client(
            Broker.from_config(mc), self.client_id, timeout=10,
            will=aiomqtt.Will(self.status_topic, offline, qos=1, retain=True),
            # messages go straight to _dispatch from paho's read callback (see bulletd.mqtt_direct)
            queue_type=direct_queue(self._dispatch),
            # one reply publish per serving task is normal, not a sign of trouble worth a warning each
            pending_calls=self.serve_max + 16, **kw)
        client._client.manual_ack_set(True)   # see the module doc: ack once served
        self.clients["main"] = client
        return client

    def _make_fleet_client(self) -> aiomqtt.Client:
        """The fleet link: a clean session that ends with its connection (module doc)."""
        kw: dict[str, Any] = ({"protocol": aiomqtt.ProtocolVersion.V5, "clean_start": True} if self.v5
                              else {"protocol": aiomqtt.ProtocolVersion.V311, "clean_session": True})
        client = make_client(Broker.from_config(self.mc), f"{self.client_id}-fleet", timeout=10,
                             queue_type=direct_queue(lambda m: self._dispatch(m, "fleet")), **kw)
        client._client.manual_ack_set(True)
        self.clients["fleet"] = client
        return client

    async def _run_fleet(self) -> None:
        backoff = Backoff(self.mc.reconnect_min, self.mc.reconnect_max)
        try:
            client = self._make_fleet_client()
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.error("MQTT fleet link disabled: cannot set up the client: %s", exc)
            return
        while not self.stopping:
            self.attempt["fleet"] += 1
            try:
                async with client:
                    backoff.reset()
                    sub = ({"options": SubscribeOptions(qos=self.mc.qos, retainAsPublished=True)} if self.v5
                           else {"qos": self.mc.qos})
                    await client.subscribe(self.fleet_topic, **sub)
                    self.fleet_connected = True
                    log.info("MQTT fleet link connected as %s-fleet; subscribed to %s", self.client_id,
                             self.fleet_topic)
                    async for _ in client.messages:
                        pass
            except aiomqtt.MqttError as exc:
                if self.fleet_connected:
                    log.warning("MQTT fleet link lost: %s; reconnecting", exc)
            finally:
                self.fleet_connected = False
            if self.stopping:
                break
            await backoff.sleep()

    async def _run(self) -> None:
        backoff = Backoff(self.mc.reconnect_min, self.mc.reconnect_max)
        try:
            client = self._make_client()
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.error("MQTT disabled: cannot set up the client: %s", exc)
            self.last_error = str(exc)
            return
        while not self.stopping:
            self.attempt["main"] += 1   # before the CONNACK: a redelivery may follow it in the same read
            try:
                async with client:
                    self.client = client
                    self.last_error = None
                    backoff.reset()
                    # v5: Retain As Published keeps the retain flag of a request published
                    # with retain while we are subscribed, so that it is dropped too
                    sub = ({"options": SubscribeOptions(qos=self.mc.qos, retainAsPublished=True)} if self.v5
                           else {"qos": self.mc.qos})
                    await client.subscribe(self.req_topic, **sub)
                    self.connected = True   # `status` says connected once requests can arrive
                    self.connects += 1
                    log.info("MQTT connected to %s:%d as %s; subscribed to %s", self.mc.host, self.mc.port,
                             self.client_id, self.req_topic)
                    await self._publish_status("online")
                    await self._flush_outbox()
                    async for _ in client.messages:   # never yields (see _dispatch); raises
                        pass                              # MqttError when the connection is lost
            except aiomqtt.MqttError as exc:
                was = self.connected
                self.connected = False
                self.last_error = str(exc)
                if was:
                    log.warning("MQTT connection lost: %s; reconnecting", exc)
                else:
                    log.info("MQTT connect to %s:%d failed: %s; retry in %.1f s", self.mc.host, self.mc.port,
                             exc, backoff.delay)
            except asyncio.CancelledError:
                self.connected = False
                raise
            finally:
                self.connected = False
            if self.stopping:
                break
            await backoff.sleep()

    def _dispatch(self, msg: aiomqtt.Message, link: str = "main") -> None:
        """Every incoming message, on the loop thread: serve it in its own task, or let it wait
        for a slot (see SERVE_MIN, BACKLOG_BYTES)."""
        self.counts["received"] += 1
        conn = (link, self.attempt[link])
        if len(self.serving) < self.serve_max:
            self._start(msg, conn)
            return
        size = _size(msg)
        if self.backlog_bytes + size > BACKLOG_BYTES:
            self._start(msg, conn, refuse=True)
            return
        self.backlog.append((msg, conn))
        self.backlog_bytes += size

    def _start(self, msg: aiomqtt.Message, conn: tuple, refuse: bool = False) -> None:
        t = asyncio.create_task(self._serve_guarded(msg, conn, refuse))
        self.serving.add(t)
        t.add_done_callback(self._served)

    def _served(self, t: asyncio.Task) -> None:
        self.serving.discard(t)
        while self.backlog and len(self.serving) < self.serve_max:
            msg, conn = self.backlog.popleft()
            self.backlog_bytes -= _size(msg)
            self._start(msg, conn)

    def _ack(self, msg: aiomqtt.Message, conn: tuple) -> None:
        """PUBACK a served QoS 1 request, on the connection it came in on. After a reconnect the
        broker delivers an unacknowledged request again (a restarted broker does not), and the
        copy is acknowledged when it is dropped as a repeat."""
        link, n = conn
        if msg.qos > 0 and n == self.attempt[link] and link in self.clients:
            self.clients[link]._client.ack(msg.mid, msg.qos)   # off line: paho refuses it

    async def _status_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.status_dirty.wait(), self.mc.status_interval)
            except asyncio.TimeoutError:
                pass
            self.status_dirty.clear()
            if self.connected and not self.stopping:
                try:
                    await self._publish_status("online")
                except Exception as exc:
                    log.debug("status publish failed: %s", exc)

    def _status_payload(self, state: str) -> bytes:
        s = self.d.status()
        s["state"] = state
        s["time"] = round(time.time(), 3)
        for k in ("errors", "trust", "socket", "connections"):
            s.pop(k, None)
        return json.dumps(s, separators=(",", ":"), default=str).encode()

    async def _publish_status(self, state: str) -> None:
        props = None
        if self.v5:
            props = Properties(PacketTypes.PUBLISH)
            props.ContentType = CT_JSON
        await self.client.publish(self.status_topic, self._status_payload(state), qos=1, retain=True,
                                  properties=props, timeout=5)

    # ------------------------------------------------------------------ replies
    async def _send(self, topic: str, obj: dict, ct: str, corr: bytes | None) -> None:
        payload = encode_payload(obj, ct)
        if not self.connected or self.client is None:
            if len(self.outbox) >= OUTBOX_MAX:
                self.counts["dropped"] += 1
                self.outbox.popleft()
            self.outbox.append((topic, payload, ct, corr))
            return
        await self._publish(topic, payload, ct, corr)

    async def _publish(self, topic: str, payload: bytes, ct: str, corr: bytes | None) -> None:
        props = None
        if self.v5:
            props = Properties(PacketTypes.PUBLISH)
            props.ContentType = ct
            props.MessageExpiryInterval = self.mc.reply_expiry
            if corr is not None:
                props.CorrelationData = corr
        try:
            await self.client.publish(topic, payload, qos=self.mc.qos, properties=props, timeout=5)
        except aiomqtt.MqttError as exc:
            # paho keeps a QoS>0 message that failed this way and sends it after the reconnect;
            # sending it again here would duplicate a final reply, so it is only counted
            self.counts["publish_errors"] += 1
            log.info("reply publish to %s failed (%s); paho delivers it after the reconnect if it can", topic, exc)

    async def _flush_outbox(self) -> None:
        while self.outbox and self.connected:
            topic, payload, ct, corr = self.outbox.popleft()
            await self._publish(topic, payload, ct, corr)

    def _seen(self, key: tuple) -> bool:
        now = time.monotonic()
        while self.recent and (len(self.recent) > DEDUP_MAX or next(iter(self.recent.values())) < now - DEDUP_SECONDS):
            self.recent.popitem(last=False)
        if key in self.recent:
            return True
        self.recent[key] = now
        return False

    def _check_reply_topic(self, topic, what: str) -> str:
        """check_topic, and never a topic of the home's devices: a requester picks its reply topic,
        and a reply published under zigbee2mqtt/... or tasmota/.../cmnd/... (a Tasmota Backlog
        runs the reply's text as commands), or on bulletd's own Home Assistant command topic,
        would act with bulletd's broker rights. Refused: any topic whose first level is the first
        level of a command or state topic of the home file (unless that is bulletd's own prefix:
        then the topics themselves)."""
        topic = check_topic(topic, what)
        link = self.d.home_link
        if link is None:
            return topic
        home = link.home
        devices = set(home.command_topics) | set(home.state_topics) | {link.ha_command_topic}
        first = topic.split("/", 1)[0]
        roots = {t.split("/", 1)[0] for t in devices} - {self.mc.prefix}
        if topic in devices or first in roots:
            raise RequestError("forbidden", f"{what}: {topic!r} is in the home's device topics "
                               f"({first}/...); replies go elsewhere")
        return topic

    async def _serve_guarded(self, msg: aiomqtt.Message, conn: tuple, refuse: bool = False) -> None:
        try:
            await self._serve(msg, refuse)
        except asyncio.CancelledError:
            raise   # not acknowledged: the broker delivers it again to the next session
        except Exception:   # a bug: log it with its traceback; the transport keeps serving
            log.exception("serving a message on %s failed", getattr(msg.topic, "value", msg.topic))
        self._ack(msg, conn)

    async def _serve(self, msg: aiomqtt.Message, refuse: bool = False) -> None:
        if msg.retain:
            # a retained request would run again at every new subscription: never serve one
            log.info("dropped a retained message on %s (requests must not be retained)", msg.topic.value)
            self.counts["dropped"] += 1
            return
        props = msg.properties
        rt = getattr(props, "ResponseTopic", None) if props is not None else None
        corr = getattr(props, "CorrelationData", None) if props is not None else None
        ct_in = getattr(props, "ContentType", None) if props is not None else None
        payload = msg.payload if isinstance(msg.payload, (bytes, bytearray)) else str(msg.payload or "").encode()
        ct = CT_JSON if ct_in == CT_JSON or payload[:1] == b"{" else CT_MSGPACK
        try:
            if len(payload) > self.max_bytes:
                raise RequestError("too_large", f"payload of {len(payload)} bytes is larger than the limit "
                                   f"{self.max_bytes} (limits.max_request_bytes)")
            obj, ct = decode_payload(bytes(payload), ct_in)
        except RequestError as exc:
            if rt is None:
                log.info("dropped a bad request on %s with no Response Topic: %s", msg.topic.value, exc.message)
                self.counts["dropped"] += 1
                return
            try:
                rt = self._check_reply_topic(rt, "ResponseTopic")
            except RequestError:
                return
            await self._send(rt, {**error_reply(exc.code, exc.message), "seq": 0}, ct, corr)
            self.counts["replied"] += 1
            return
        rid = reply_id(obj, (str, int))   # no bytes: a JSON reply cannot carry them
        reply_to = rt if rt is not None else obj.get("reply_to")
        try:
            reply_to = self._check_reply_topic(reply_to, "ResponseTopic" if rt is not None else "reply_to")
        except RequestError as exc:
            log.info("dropped a request on %s: no usable reply topic (%s)", msg.topic.value, exc.message)
            self.counts["dropped"] += 1
            return
        key = (reply_to, corr if corr is not None else rid)
        if key[1] is not None and self._seen(key):
            log.info("dropped a repeated request %r for %s (a QoS 1 redelivery; correlation data and ids "
                     "must be unique)", key[1], reply_to)
            self.counts["duplicates"] += 1
            return
        seq = 0

        def stamp(m: dict) -> dict:
            if rid is not None:
                m["id"] = rid
            m["seq"] = seq
            return m

        async def emit(chunk: dict) -> None:
            nonlocal seq
            await self._send(reply_to, stamp({**chunk, "final": False}), ct, corr)
            seq += 1

        peer = Peer("mqtt", self.mc.allow_admin, f"mqtt:{reply_to}")
        try:
            if refuse:
                final = error_reply("busy", f"more MQTT requests are waiting than bulletd keeps "
                                            f"({BACKLOG_BYTES >> 20} MB); try again later")
            else:
                final = await self.d.handle(obj, emit, peer)
        except Exception as exc:   # a bug: still exactly one final reply
            log.exception("serving a request on %s failed", msg.topic.value)
            final = error_from_exc(exc)
        await self._send(reply_to, stamp(final), ct, corr)
        self.counts["replied"] += 1


def _size(msg: aiomqtt.Message) -> int:
    p = msg.payload
    return len(p) if isinstance(p, (bytes, bytearray, str)) else 16
