"""bulletd's connection to the home: device states in, device commands out, and (optionally)
Home Assistant MQTT discovery. Its own MQTT connection (client id `<mqtt client id>-home`), so
that state traffic never mixes with requests.

- Subscribes to every state_topic of the home file; retained states arrive at once, later ones as
  they change (bulletd.agents.home.StateStore keeps the last of each).
- act(actions) publishes the resolved Home Assistant service calls on their entities' command
  topics in the entity's payload style, QoS 1. The publish site refuses every topic that is not a
  command_topic of the home file, whatever the call said. At most
  tools.home.max_actions_per_minute commands go out in any 60 s; a request that would pass the
  limit is refused as a whole (rate_limited) and publishes nothing.
- With tools.home.discovery: retained discovery configs under <discovery_prefix>/ announce a
  device with sensors (state, loaded children, requests, last action) and a text entity; text
  sent to its command topic <prefix>/<device>/ha/command is a home request with act: true.
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from typing import Any

from bulletd.agents.home import HomeConfig, StateStore, command
from bulletd.errors import RequestError
from bulletd.mqtt_conn import Backoff, Broker, make_client
from bulletd.tasks import cancel_and_wait

log = logging.getLogger("bulletd.home")

WINDOW_S = 60.0


class HomeLink:
    def __init__(self, daemon: Any, home: HomeConfig):
        self.d = daemon
        self.home = home
        self.tcfg = daemon.cfg.tools.home
        self.states = StateStore(home)
        cfg = daemon.cfg
        self.client_id = f"{cfg.mqtt_client_id}-home"
        pre, dev = cfg.mqtt.prefix, cfg.device
        self.ha_command_topic = f"{pre}/{dev}/ha/command"
        self.last_action_topic = f"{pre}/{dev}/last_action"
        self.status_topic = f"{pre}/{dev}/status"
        self.connected = False
        self.client: Any = None
        self.task: asyncio.Task | None = None
        self.jobs: set[asyncio.Task] = set()
        self.sent: collections.deque[float] = collections.deque()    # times of published commands
        self.counts = {"published": 0, "refused": 0, "rate_limited": 0, "state_messages": 0, "ha_commands": 0}
        self.last_action: dict | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if not self.d.cfg.mqtt.host:
            log.info("home: %d entities from %s; no mqtt.host, so no states and no acting",
                     len(self.home.entities), self.home.source)
            return
        self.task = asyncio.create_task(self._run(), name="bulletd-home")

    async def stop(self) -> None:
        await cancel_and_wait([*self.jobs, self.task] if self.task else list(self.jobs), what="home link task")
        self.connected = False

    def state(self) -> dict:
        return {"file": self.home.source, "entities": len(self.home.entities), "act": self.tcfg.act,
                "connected": self.connected, "known_states": len(self.states.states),
                "max_actions_per_minute": self.tcfg.max_actions_per_minute, "discovery": self.tcfg.discovery,
                "last_action": self.last_action, **self.counts}

    async def _run(self) -> None:
        import aiomqtt
        mc = self.d.cfg.mqtt
        backoff = Backoff(mc.reconnect_min, mc.reconnect_max)
        while True:
            try:
                client = make_client(Broker.from_config(mc), self.client_id, timeout=10)
                async with client:
                    self.client = client
                    self.connected = True
                    backoff.reset()
                    topics = sorted(self.home.state_topics)
                    if self.tcfg.discovery:
                        topics.append(self.ha_command_topic)
                    if topics:
                        await client.subscribe([(t, 1) for t in topics])
                    log.info("home: connected as %s, watching %d state topic(s)", self.client_id,
                             len(self.home.state_topics))
                    if self.tcfg.discovery:
                        await self._announce()
                    async for msg in client.messages:
                        self._on_message(msg)
            except aiomqtt.MqttError as exc:
                log.info("home: MQTT connection %s: %s; retry in %.1f s",
                         "lost" if self.connected else "failed", exc, backoff.delay)
            except (OSError, ValueError) as exc:
                log.error("home: MQTT client cannot start: %s", exc)
                return
            finally:
                self.connected = False
            await backoff.sleep()

    def _on_message(self, msg: Any) -> None:
        topic = msg.topic.value
        payload = bytes(msg.payload) if isinstance(msg.payload, (bytes, bytearray)) else str(msg.payload).encode()
        if topic == self.ha_command_topic and self.tcfg.discovery:
            if msg.retain:
                return                      # a command must never run again at a resubscribe
            t = asyncio.create_task(self._ha_command(payload))
            self.jobs.add(t)
            t.add_done_callback(self.jobs.discard)
            return
        if self.states.update(topic, payload):
            self.counts["state_messages"] += 1

    # ------------------------------------------------------------------ acting
    def _admit(self, n: int) -> None:
        now = time.monotonic()
        while self.sent and self.sent[0] < now - WINDOW_S:
            self.sent.popleft()
        limit = self.tcfg.max_actions_per_minute
        if len(self.sent) + n > limit:
            self.counts["rate_limited"] += 1
            wait = WINDOW_S - (now - self.sent[0]) if self.sent else WINDOW_S
            raise RequestError("rate_limited", f"{n} action(s) now would exceed tools.home.max_actions_per_minute "
                               f"({limit}; {len(self.sent)} in the last minute); nothing was published; "
                               f"try again in {max(wait, 0.1):.0f} s")
        self.sent.extend([now] * n)

    async def _publish_command(self, topic: str, payload: bytes) -> None:
        """The only place device commands leave bulletd: the topic must be a configured command topic."""
        if topic not in self.home.command_topics:
            self.counts["refused"] += 1
            log.error("home: refused to publish on %r: not a command_topic of %s", topic, self.home.source)
            raise RequestError("bad_call", f"{topic!r} is not a command topic of the home file; nothing published")
        await self.client.publish(topic, payload, qos=1, timeout=5)
        self.counts["published"] += 1

    async def act(self, actions: list[dict]) -> dict:
        """Publish each action's device command; {"acted": True, "published": [...]}."""
        import aiomqtt
        cmds = []
        for a in actions:
            e = self.home.entities.get(a.get("entity_id"))
            if e is None or not e.command_topic:
                raise RequestError("bad_call", f"{a.get('entity_id')!r} is not an entity bulletd may command")
            cmds.append(command(e, a))
        if not self.connected or self.client is None:
            raise RequestError("act_failed", "not connected to the MQTT broker; nothing was published")
        self._admit(len(cmds))
        published: list[dict] = []
        for topic, payload in cmds:
            try:
                await self._publish_command(topic, payload)
            except aiomqtt.MqttError as exc:
                raise RequestError("act_failed", f"publishing on {topic} failed ({exc}) after {len(published)} of "
                                   f"{len(cmds)} command(s)") from None
            published.append({"topic": topic, "payload": payload.decode()})
        log.info("home: published %s", ", ".join(f"{p['topic']} {p['payload']}" for p in published))
        return {"acted": True, "published": published, "message": f"published {len(published)} command(s)"}

    def note(self, text: str, reply: dict) -> None:
        """Remember the last agent request with actions (for status and Home Assistant)."""
        err = reply.get("error") or {}
        acts = reply.get("actions") or []
        summary = (f"error {err.get('code')}: {err.get('message')}" if err else
                   "; ".join(f"{a['service']} {a['entity_id']}" for a in acts) or "nothing to do")
        self.last_action = {"text": text[:200], "summary": summary[:255], "ok": not err,
                            "acted": bool((reply.get("result") or {}).get("acted")), "ts": round(time.time(), 3)}
        if self.tcfg.discovery and self.connected:
            t = asyncio.create_task(self.client.publish(self.last_action_topic, json.dumps(self.last_action),
                                                        qos=1, retain=True, timeout=5))
            self.jobs.add(t)
            t.add_done_callback(lambda f: (self.jobs.discard(f), f.cancelled() or f.exception()))

    # ------------------------------------------------------------------ Home Assistant
    async def _ha_command(self, payload: bytes) -> None:
        from bulletd.daemon.protocol import Peer
        text = payload.decode("utf-8", "replace").strip()
        if not text:
            return
        self.counts["ha_commands"] += 1
        req = {"op": "generate", "prompt": text, "act": True}
        if self.tcfg.child:
            req["child"] = self.tcfg.child

        async def emit(_: dict) -> None:
            return None
        reply = await self.d.handle(req, emit, Peer("mqtt", False, "homeassistant text command"))
        if not reply.get("ok"):
            self.note(text, reply)         # a successful agent request noted itself in the daemon

    def discovery_messages(self) -> list[tuple[str, dict]]:
        from bulletd import __version__
        dev, dp = self.d.cfg.device, self.tcfg.discovery_prefix
        uid = f"bullet_{dev}"
        device = {"identifiers": [uid], "name": f"Bullet {dev}", "manufacturer": "Bullet OS", "model": "bulletd",
                  "sw_version": __version__}
        avail = {"availability_topic": self.status_topic, "availability_template": "{{ value_json.state }}",
                 "payload_available": "online", "payload_not_available": "offline"}
        out = []
        for key, name, topic, template, extra in (
                ("state", "State", self.status_topic, "{{ value_json.state }}", {}),
                ("children", "Loaded children", self.status_topic, "{{ value_json.children | length }}",
                 {"state_class": "measurement"}),
                ("requests", "Requests", self.status_topic, "{{ value_json.requests.requests }}",
                 {"state_class": "total_increasing"}),
                ("last_action", "Last action", self.last_action_topic, "{{ value_json.summary }}",
                 {"json_attributes_topic": self.last_action_topic})):
            cfg = {"name": name, "unique_id": f"{uid}_{key}", "object_id": f"{uid}_{key}", "state_topic": topic,
                   "value_template": template, "device": device, **extra}
            if topic == self.status_topic and key != "state":
                cfg.update(avail)
            out.append((f"{dp}/sensor/{uid}/{key}/config", cfg))
        out.append((f"{dp}/text/{uid}/command/config",
                    {"name": "Command", "unique_id": f"{uid}_command", "object_id": f"{uid}_command",
                     "command_topic": self.ha_command_topic, "max": 255, "mode": "text", "device": device,
                     **avail}))
        return out

    async def _announce(self) -> None:
        for topic, cfg in self.discovery_messages():
            await self.client.publish(topic, json.dumps(cfg, separators=(",", ":")), qos=1, retain=True, timeout=5)
        log.info("home: announced to Home Assistant under %s/", self.tcfg.discovery_prefix)
