"""The home link on its own against a real Mosquitto: the publish site refuses topics outside the
home file, a sensor cannot be commanded, the actions limit is all-or-nothing, retained states
arrive at subscribe, and Home Assistant discovery with its text command entity."""
import asyncio
import json
import time
from types import SimpleNamespace

import aiomqtt
import pytest

from _daemon_util import ROOT
from bulletd.agents.home import HomeConfig
from bulletd.agents.link import HomeLink
from bulletd.daemon.config import Config, override
from bulletd.errors import RequestError

pytestmark = pytest.mark.timeout(60)
EXAMPLE = ROOT / "examples" / "home.yaml"


class FakeDaemon:
    """What the link uses of the daemon: its config, and handle() for Home Assistant commands."""

    def __init__(self, broker, **home):
        self.cfg = override(Config(), **{"mqtt.host": broker.host, "mqtt.port": broker.port, "device_id": "lk",
                                         "mqtt.reconnect_min": 0.1,
                                         **{f"tools.home.{k}": v for k, v in home.items()}})
        self.handled: list[dict] = []

    async def handle(self, obj, emit, peer):
        self.handled.append(obj)
        return {"ok": False, "final": True, "error": {"code": "no_route", "message": "test"}}


async def connected(link, timeout=10):
    end = time.monotonic() + timeout
    while not link.connected:
        assert time.monotonic() < end, "the link did not connect"
        await asyncio.sleep(0.02)


async def collect(broker, topic, n, timeout=5.0):
    got = []
    async with aiomqtt.Client(broker.host, broker.port) as c:
        await c.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(timeout):
                async for m in c.messages:
                    got.append((m.topic.value, bytes(m.payload), m.retain))
                    if len(got) >= n:
                        break
        except TimeoutError:
            pass
    return got


async def test_publish_site_and_limit(broker):
    home = HomeConfig.load(EXAMPLE)
    link = HomeLink(FakeDaemon(broker, file=str(EXAMPLE), act=True, max_actions_per_minute=2), home)
    link.start()
    try:
        await connected(link)
        seen = []
        async with aiomqtt.Client(broker.host, broker.port) as c:
            await c.subscribe("#", qos=1)

            async def read():
                async for m in c.messages:
                    seen.append((m.topic.value, bytes(m.payload)))
            reader = asyncio.create_task(read())
            await asyncio.sleep(0.2)
            with pytest.raises(RequestError) as e:                # not a command topic: refused at the site
                await link._publish_command("zigbee2mqtt/evil/set", b'{"state":"ON"}')
            assert e.value.code == "bad_call" and link.counts["refused"] == 1
            with pytest.raises(RequestError) as e:                # a sensor has no command topic
                await link.act([{"service": "light.turn_on", "entity_id": "sensor.outdoor_temperature"}])
            assert e.value.code == "bad_call"
            with pytest.raises(RequestError) as e:                # not in the home at all
                await link.act([{"service": "light.turn_on", "entity_id": "light.hacked"}])
            assert e.value.code == "bad_call"
            three = [{"service": "light.turn_on", "entity_id": i}
                     for i in ("light.office", "light.hallway", "light.balcony")]
            with pytest.raises(RequestError) as e:                # 3 > 2: none of them goes out
                await link.act(three)
            assert e.value.code == "rate_limited"
            r = await link.act(three[:2])
            assert r["acted"] and [p["topic"] for p in r["published"]] == ["zigbee2mqtt/office_light/set",
                                                                          "zigbee2mqtt/hallway/set"]
            with pytest.raises(RequestError) as e:
                await link.act(three[2:])
            assert e.value.code == "rate_limited" and "max_actions_per_minute" in e.value.message
            await asyncio.sleep(0.5)
            reader.cancel()
        assert seen == [("zigbee2mqtt/office_light/set", b'{"state":"ON"}'),
                        ("zigbee2mqtt/hallway/set", b'{"state":"ON"}')]
    finally:
        await link.stop()


async def test_retained_states_and_discovery(broker):
    async with aiomqtt.Client(broker.host, broker.port) as c:
        await c.publish("tasmota/tv/stat/POWER", b"ON", qos=1, retain=True)
        await c.publish("zigbee2mqtt/front_lock", b'{"state":"LOCK","battery":80}', qos=1, retain=True)
    home = HomeConfig.load(EXAMPLE)
    d = FakeDaemon(broker, file=str(EXAMPLE), discovery=True, discovery_prefix="ha")
    link = HomeLink(d, home)
    link.start()
    try:
        await connected(link)
        end = time.monotonic() + 5
        while len(link.states.states) < 2 and time.monotonic() < end:
            await asyncio.sleep(0.02)
        assert link.states.states["media_player.living_room_tv"]["state"] == "ON"
        assert link.states.states["lock.front_door"]["attributes"] == {"state": "LOCK", "battery": 80}
        got = await collect(broker, "ha/#", 5)
        cfgs = {t: json.loads(p) for t, p, retain in got if retain}
        assert set(cfgs) == {f"ha/sensor/bullet_lk/{k}/config" for k in ("state", "children", "requests",
                                                                         "last_action")} | {"ha/text/bullet_lk/command/config"}
        text = cfgs["ha/text/bullet_lk/command/config"]
        assert text["command_topic"] == "bullet/lk/ha/command" and text["device"]["identifiers"] == ["bullet_lk"]
        assert cfgs["ha/sensor/bullet_lk/state/config"]["state_topic"] == "bullet/lk/status"
        async with aiomqtt.Client(broker.host, broker.port) as c:
            await c.publish("bullet/lk/ha/command", "turn on the tv".encode(), qos=1)
        end = time.monotonic() + 5
        while not d.handled and time.monotonic() < end:
            await asyncio.sleep(0.02)
        assert d.handled == [{"op": "generate", "prompt": "turn on the tv", "act": True}]
        got = await collect(broker, "bullet/lk/last_action", 1)
        last = json.loads(got[0][1])
        assert last["text"] == "turn on the tv" and last["ok"] is False and "no_route" in last["summary"]
    finally:
        await link.stop()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_agent_bench_runs():
    """The shipped bench (python -m bulletd.bench.agents) end to end, with few repetitions."""
    from bulletd.bench.agents import CALL, run
    r = run(2, None)
    assert r["call"] == CALL and r["tokens"] > 0
    for k in ("in_process", "mqtt_dry_run", "mqtt_act"):
        assert r[k]["n"] == 2 and r[k]["median_ms"] > 0
