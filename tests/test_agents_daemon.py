"""Agents in bulletd against a real Mosquitto and real daemon processes: random-weight agent
children (signed, header key `agent`) whose output a request `schema` pins through the grammar,
the example home acted on end to end with fake devices (MQTT subscribers that record what they
receive), dry run vs act, act refused by the config, calls outside the home that act on nothing,
ambiguous and unknown names, state questions before and after a retained state, the actions
limit, calc, structured output for plain children, mosquitto_rr by hand, bulletd-cli ask."""
import asyncio
import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiomqtt
import pytest

from _daemon_util import ROOT, DaemonProc, make_child, make_keys
from conftest import Broker
from bulletd.agents.home import HomeConfig
from bulletd.agents.tools import TOOLS
from bulletd.client import Client, DaemonError

pytestmark = pytest.mark.timeout(180)

EXAMPLE = ROOT / "examples" / "home.yaml"
AGENT_ARCH = dict(dim=64, n_layers=2, n_heads=2, n_kv_heads=2, hidden_dim=128, vocab_size=320, max_seq_len=256)


def pin(call: dict) -> dict:
    """A schema that admits exactly `call` (the grammar then makes any model emit it)."""
    props = {}
    for k, v in call.items():
        if isinstance(v, str):
            props[k] = {"type": "string", "enum": [v]}
        else:
            props[k] = {"type": "integer", "minimum": v, "maximum": v}
    return {"type": "object", "properties": props, "required": list(call)}


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    d = tmp_path_factory.mktemp("agents")
    key, trust = make_keys(d)
    models = d / "models"
    models.mkdir()
    examples = {"home": ["turn on the kitchen light", "switch off the bedroom fan", "open the garage door",
                         "lock the front door", "set the bedroom ac to 22"],
                "calc": ["what is 17 times 23", "15 percent of 80", "divide 100 by 4", "2 to the power 10"]}
    for name, tool, seed in (("home", "home", 3), ("calc", "calc", 4)):
        p = models / f"{name}.bullet"
        from bulletd.format.synth import write_random_lm
        from bulletd.signing import sign_file
        write_random_lm(p, AGENT_ARCH, seed=seed, name=name, extra={
            "examples": examples[name],
            "agent": {"tool": tool, "schema": TOOLS[tool].schema, "template": "{text}\n=>"}})
        sign_file(p, key, name=name, version="1.0.0")
    make_child(models, "plain", key=key, arch=AGENT_ARCH, seed=5)
    return {"dir": d, "models": models, "trust": trust, "key": key}


@pytest.fixture(scope="module")
def mbroker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("agents-broker"))
    yield b
    b.stop()


def start(tmp, kit, broker, *, device, act=True, limit=30, name=None, home=EXAMPLE, router=None, **home_extra):
    cfg = {"model_dir": str(kit["models"]), "trust": {"keys": [str(kit["trust"])]}, "device_id": device,
           "mqtt": {"host": broker.host, "port": broker.port, "reconnect_min": 0.1, "reconnect_max": 0.5},
           "tools": {"home": {"file": str(home), "act": act, "max_actions_per_minute": limit, **home_extra}}}
    if router:
        cfg["router"] = router
    d = DaemonProc(tmp, cfg, name=name or device).start()
    end = time.monotonic() + 20
    with d.client() as c:
        while time.monotonic() < end:
            s = c.status()
            if s["mqtt"].get("state") == "connected" and (s["tools"]["home"] or {}).get("connected"):
                return d
            time.sleep(0.05)
    d.stop()
    raise AssertionError(f"daemon {device} not connected:\n{d.log()}")


@pytest.fixture(scope="module")
def actd(tmp_path_factory, kit, mbroker):
    d = start(tmp_path_factory.mktemp("actd"), kit, mbroker, device="acting")
    yield d
    d.stop()


class Devices:
    """Fake devices: one subscriber to everything, recording each message outside bulletd's own
    request/reply/status topics."""

    def __init__(self, broker):
        self.b = broker
        self.msgs: list[tuple[str, bytes]] = []

    async def __aenter__(self):
        self.c = aiomqtt.Client(self.b.host, self.b.port, identifier=f"dev-{uuid.uuid4().hex[:6]}")
        await self.c.__aenter__()
        await self.c.subscribe("#", qos=1)
        self.task = asyncio.create_task(self._read())
        await asyncio.sleep(0.2)        # retained messages of earlier tests arrive now: forget them
        self.msgs.clear()
        return self

    async def _read(self):
        try:
            async for m in self.c.messages:
                t = m.topic.value
                if t.startswith(("bullet/", "homeassistant/")) or m.retain:
                    continue
                self.msgs.append((t, bytes(m.payload)))
        except aiomqtt.MqttError:
            pass

    async def __aexit__(self, *exc):
        self.task.cancel()
        try:
            await self.c.__aexit__(None, None, None)
        except Exception:
            pass

    def decoded(self):
        return [(t, json.loads(p) if p[:1] == b"{" else p.decode()) for t, p in self.msgs]

    async def settle(self, n=None, timeout=5.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end and (n is None or len(self.msgs) < n):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)        # and nothing more


def ask(broker, device, text, call, act=False, child="home", **kw):
    with Client.mqtt(broker.host, broker.port, device=device, timeout=60) as c:
        return c.ask(text, child=child, act=act, schema=pin(call), **kw)


def ask_error(broker, device, text, call, act=False, **kw):
    with pytest.raises(DaemonError) as e:
        ask(broker, device, text, call, act=act, **kw)
    return e.value.code, e.value.message


# ---------------------------------------------------------------- the example home, end to end

async def test_dry_run_then_act(mbroker, actd):
    call = {"intent": "HassLightSet", "area": "kitchen", "brightness": 40}
    async with Devices(mbroker) as dev:
        r = await asyncio.to_thread(ask, mbroker, "acting", "set the kitchen lights to 40", call)
        assert r.call == call and r.child == "home"
        assert r.text == json.dumps(call, separators=(",", ":"))
        want = [{"service": "light.turn_on", "entity_id": "light.kitchen_ceiling", "data": {"brightness_pct": 40}},
                {"service": "light.turn_on", "entity_id": "light.kitchen_counter", "data": {"brightness_pct": 40}}]
        assert r.actions == want
        assert r.result["acted"] is False and "dry run" in r.result["message"]
        await dev.settle()
        assert dev.msgs == []                                      # a dry run publishes nothing
        r = await asyncio.to_thread(ask, mbroker, "acting", "set the kitchen lights to 40", call, act=True)
        assert r.actions == want and r.result["acted"] is True
        await dev.settle(2)
        assert sorted(dev.decoded()) == [("zigbee2mqtt/kitchen_ceiling/set", {"state": "ON", "brightness": 102}),
                                         ("zigbee2mqtt/kitchen_counter/set", {"state": "ON", "brightness": 102})]


@pytest.mark.parametrize("text,call,want", [
    ("switch on the geyser", {"intent": "HassTurnOn", "name": "geyser"}, [("tasmota/geyser/cmnd/POWER", "ON")]),
    ("गीझर बंद कर", {"intent": "HassTurnOff", "name": "गीझर"}, [("tasmota/geyser/cmnd/POWER", "OFF")]),
    ("bedroom blinds to 30", {"intent": "HassSetPosition", "name": "bedroom blinds", "position": 30},
     [("zigbee2mqtt/bedroom_blinds/set", {"position": 30})]),
    ("open the garage door", {"intent": "HassOpenCover", "name": "garage door"},
     [("zigbee2mqtt/garage_door/set", {"state": "OPEN"})]),
    ("lock the front door", {"intent": "HassLockLock", "name": "front door"},
     [("zigbee2mqtt/front_lock/set", {"state": "LOCK"})]),
    ("bedroom ac to 22", {"intent": "HassClimateSetTemperature", "name": "bedroom ac", "temperature": 22},
     [("zigbee2mqtt/bedroom_ac/set", {"system_mode": "cool", "occupied_cooling_setpoint": 22})]),
    ("turn off the bedroom", {"intent": "HassTurnOff", "area": "bedroom"},
     [("tasmota/bedroom_fan/cmnd/POWER", "OFF"), ("zigbee2mqtt/bedroom_light/set", {"state": "OFF"}),
      ("zigbee2mqtt/bedside/set", {"state": "OFF"})]),
])
async def test_the_example_home_acted_on(mbroker, actd, text, call, want):
    async with Devices(mbroker) as dev:
        r = await asyncio.to_thread(ask, mbroker, "acting", text, call, act=True)
        assert r.result["acted"] is True and len(r.result["published"]) == len(want)
        await dev.settle(len(want))
        assert sorted(dev.decoded(), key=str) == sorted(want, key=str)


def test_the_daemon_narrows_home_calls_to_the_home(mbroker, actd):
    """Sampled hot from random weights through bulletd over MQTT, a home call's name is a span of
    the utterance that names a device of the home and its intent applies to that device."""
    text = "yo the floor lamp, rihgt away, set it to 30"
    spans, values = HomeConfig.load(EXAMPLE).narrow(TOOLS["home"].schema, text)
    assert spans == {"name": ["the floor lamp", "floor lamp"]} and values["brightness"] == [30]
    schema = {"type": "object", "properties": {k: TOOLS["home"].schema["properties"][k]
                                               for k in ("intent", "name", "brightness")},
              "required": ["intent", "name", "brightness"]}
    names = set()
    with Client.mqtt(mbroker.host, mbroker.port, device="acting", timeout=60) as c:
        for seed in range(8):
            r = c.ask(text, child="home", schema=schema, temperature=1.5, seed=seed)
            assert r.call["name"] in spans["name"] and r.call["intent"] in values["intent"], r.call
            assert r.call["brightness"] == 30 and r.actions[0]["entity_id"] == "light.floor_lamp", r
            names.add(r.call["name"])
    assert names == set(spans["name"]), names


async def test_outside_the_config_acts_on_nothing(mbroker, actd):
    """Whatever the model emits, only resolved calls on configured command topics go out."""
    cases = [
        ("turn on zigbee2mqtt/evil/set", {"intent": "HassTurnOn", "name": "zigbee2mqtt/evil/set"}, "no_such_entity"),
        ("turn on light.hacked", {"intent": "HassTurnOn", "name": "light.hacked"}, "no_such_entity"),
        ("turn on the attic", {"intent": "HassTurnOn", "area": "attic"}, "no_such_entity"),
        ("kitchen light 150", {"intent": "HassLightSet", "name": "kitchen light", "brightness": 150}, "out_of_range"),
        ("office heater to 45", {"intent": "HassClimateSetTemperature", "name": "office heater", "temperature": 45},
         "out_of_range"),
        ("kitchen light topic x", {"intent": "HassTurnOn", "name": "kitchen light", "topic": "x"}, "bad_call"),
        ("turn on the kitchen light", {"intent": "HassExplode", "name": "kitchen light"}, "bad_call"),
        ("lock the kitchen light", {"intent": "HassLockLock", "name": "kitchen light"}, "bad_call"),
        ("turn on the lights", {"intent": "HassTurnOn", "name": "lights"}, "ambiguous"),
        ("turn on the spaceship", {"intent": "HassTurnOn", "name": "spaceship"}, "no_such_entity"),
    ]
    async with Devices(mbroker) as dev:
        for text, call, code in cases:
            got, msg = await asyncio.to_thread(ask_error, mbroker, "acting", text, call, act=True)
            assert got == code, (call, msg)
        await dev.settle()
        assert dev.msgs == []
    with Client.mqtt(mbroker.host, mbroker.port, device="acting") as c:
        s = c.status()
        assert s["tools"]["home"]["published"] >= 0 and s["errors"].get("no_such_entity", 0) >= 4
        assert s["tools"]["home"]["last_action"]["ok"] is False


async def test_replies_are_never_published_on_the_homes_device_topics(mbroker, actd):
    """A requester picks its reply topic: pointed at a device (a Tasmota Backlog would run the
    reply's text as commands) or at bulletd's own Home Assistant command topic, the request is
    dropped, and nothing is published there."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    bad = ["tasmota/geyser/cmnd/Backlog", "zigbee2mqtt/garage_door/set", "zigbee2mqtt/kitchen_ceiling",
           "bullet/acting/ha/command"]
    seen: list[str] = []
    async with Devices(mbroker) as dev, aiomqtt.Client(mbroker.host, mbroker.port) as spy, \
            aiomqtt.Client(mbroker.host, mbroker.port, protocol=aiomqtt.ProtocolVersion.V5) as c:
        await spy.subscribe("bullet/acting/ha/command", qos=1)

        async def watch():
            async for m in spy.messages:
                seen.append(m.topic.value)
        w = asyncio.create_task(watch())
        for i, topic in enumerate(bad):
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = topic
            await c.publish("bullet/acting/req", json.dumps({"id": f"x;POWER ON;{i}", "prompt": "turn on the geyser",
                                                             "child": "plain", "max_tokens": 2}),
                            qos=1, properties=props)
        await c.publish("bullet/acting/req", json.dumps({"id": "v311", "prompt": "hi", "child": "plain", "max_tokens": 2,
                                                         "reply_to": "tasmota/garage_light/cmnd/POWER"}), qos=1)
        await dev.settle(timeout=2.0)
        w.cancel()
        assert dev.msgs == [] and seen == []
    log = actd.log()
    assert log.count("no usable reply topic") >= len(bad) + 1 and "in the home's device topics" in log


async def test_state_questions_before_and_after_a_retained_state(mbroker, actd):
    call = {"intent": "HassGetState", "name": "outside temperature"}
    r = await asyncio.to_thread(ask, mbroker, "acting", "what is the outside temperature", call)
    assert r.actions == [{"service": "get_state", "entity_id": "sensor.outdoor_temperature"}]
    assert r.result["states"][0]["known"] is False and "no state is known yet" in r.result["message"]
    async with aiomqtt.Client(mbroker.host, mbroker.port) as c:
        await c.publish("zigbee2mqtt/outdoor_sensor", json.dumps({"temperature": 31.5, "humidity": 40}),
                        qos=1, retain=True)
    end = time.monotonic() + 10
    while True:
        r = await asyncio.to_thread(ask, mbroker, "acting", "what is the outside temperature", call, act=True)
        if r.result["states"][0]["known"] or time.monotonic() > end:
            break
        await asyncio.sleep(0.1)
    st = r.result["states"][0]
    assert st["state"] == 31.5 and st["unit"] == "°C" and "31.5 °C" in r.result["message"]


async def test_act_refused_when_the_config_disallows_it(tmp_path, kit, mbroker):
    d = start(tmp_path, kit, mbroker, device="noact", act=False)
    try:
        call = {"intent": "HassTurnOn", "name": "kitchen light"}
        async with Devices(mbroker) as dev:
            code, msg = await asyncio.to_thread(ask_error, mbroker, "noact", "turn on the kitchen light", call, act=True)
            assert code == "forbidden" and "tools.home.act" in msg
            r = await asyncio.to_thread(ask, mbroker, "noact", "turn on the kitchen light", call)   # dry run is fine
            assert r.actions == [{"service": "light.turn_on", "entity_id": "light.kitchen_ceiling"}]
            await dev.settle()
            assert dev.msgs == []
    finally:
        d.stop()


async def test_actions_per_minute_are_limited(tmp_path, kit, mbroker):
    d = start(tmp_path, kit, mbroker, device="limited", limit=3)
    try:
        area = {"intent": "HassTurnOn", "area": "kitchen", "domain": "light"}          # 2 actions
        async with Devices(mbroker) as dev:
            r = await asyncio.to_thread(ask, mbroker, "limited", "kitchen lights on", area, act=True)
            assert len(r.result["published"]) == 2
            code, msg = await asyncio.to_thread(ask_error, mbroker, "limited", "kitchen lights on", area, act=True)
            assert code == "rate_limited" and "max_actions_per_minute" in msg
            one = {"intent": "HassTurnOn", "name": "geyser"}
            r = await asyncio.to_thread(ask, mbroker, "limited", "geyser on", one, act=True)      # the 3rd fits
            assert r.result["acted"]
            code, _ = await asyncio.to_thread(ask_error, mbroker, "limited", "geyser on", one, act=True)
            assert code == "rate_limited"
            r = await asyncio.to_thread(ask, mbroker, "limited", "geyser on", one)      # a dry run is not limited
            assert r.result["acted"] is False
            await dev.settle(3)
            assert len(dev.msgs) == 3
    finally:
        d.stop()


# ---------------------------------------------------------------- calc, plain children, by hand

def test_calc_agent_and_socket(actd):
    with actd.client() as c:
        r = c.ask("what is 17 times 23", child="calc", schema=pin({"expression": "17*23"}))
        assert r.call == {"expression": "17*23"} and r.result == {"value": 391, "exact": "391"} and r.actions == []
        r = c.ask("सतरा plus egihty-one", child="calc", schema=pin({"expression": " सतरा + egihty-one "}))
        assert r.call == {"expression": "17+81"} and r.result["value"] == 98          # numbers as typed, read back
        with pytest.raises(DaemonError) as e:
            c.ask("x", child="calc", schema=pin({"expression": " seventeen + banana "}))
        assert e.value.code == "calc_error" and "'banana'" in e.value.message
        with pytest.raises(DaemonError) as e:
            c.ask("one over zero", child="calc", schema=pin({"expression": "1/0"}))
        assert e.value.code == "calc_error" and "division by zero" in e.value.message
        with pytest.raises(DaemonError) as e:             # cut short: never a half call
            c.ask("what is 17 times 23", child="calc", max_tokens=8)
        assert e.value.code == "bad_call" and "max_tokens (8)" in e.value.message
        for bad in ({"type": "object", "properties": {"a": {"type": "wat"}}},          # not a JSON schema
                    {"type": "integer", "minimum": 5, "maximum": 1},                     # impossible
                    {"type": "object", "properties": {"expression": {"type": "string", "pattern": "x"}}}):
            with pytest.raises(DaemonError) as e:                                        # unsupported keyword
                c.ask("x", child="calc", schema=bad)
            assert e.value.code == "bad_request", bad
        with pytest.raises(DaemonError) as e:
            long = "+".join(["12"] * 50)                  # ~150 tokens: far longer than the deadline
            c.ask(long, child="calc", schema=pin({"expression": long}), max_tokens=200, deadline=0.001)
        assert e.value.code == "timeout"
        assert c.ask("2+2", child="calc", schema=pin({"expression": "2+2"})).result["value"] == 4   # still serving


def test_agent_children_are_routed(actd):
    """Without `child`, the request is routed (here by the children's header examples) and an
    agent child's reply is still a call."""
    with actd.client() as c:
        r = c.ask("turn on the kitchen light please", schema=pin({"intent": "HassTurnOn", "name": "kitchen light"}))
        assert r.child == "home" and r.route["reason"] == "examples"
        assert r.actions == [{"service": "light.turn_on", "entity_id": "light.kitchen_ceiling"}]
        r = c.ask("what is 17 times 23", schema=pin({"expression": "17*23"}))
        assert r.child == "calc" and r.result["value"] == 391


def test_plain_child_structured_output(actd):
    with actd.client() as c:
        r = c.generate("a json value:", child="plain", format="json", max_tokens=60, temperature=0.8, seed=3)
        if r.finish_reason == "stop":
            assert json.loads(r.text) == r.raw["json"]
        schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9},
                                                   "ok": {"type": "boolean"}}, "required": ["n", "ok"]}
        r = c.generate("x", child="plain", schema=schema, max_tokens=40, seed=1)
        assert r.finish_reason == "stop" and set(r.raw["json"]) == {"n", "ok"}
        with pytest.raises(DaemonError) as e:
            c.generate("x", child="plain", format="yaml")
        assert e.value.code == "bad_request"
        with pytest.raises(DaemonError) as e:
            c.generate("x", child="plain", schema={"type": "number", "minimum": 3, "maximum": 2})
        assert e.value.code == "bad_request" and "schema" in e.value.message


def test_mosquitto_rr_by_hand(mbroker, actd):
    assert shutil.which("mosquitto_rr"), "mosquitto_rr is part of mosquitto-clients"
    req = {"prompt": "what is 6 times 7", "child": "calc", "schema": pin({"expression": "6*7"})}
    out = subprocess.run(["mosquitto_rr", "-V", "5", "-h", mbroker.host, "-p", str(mbroker.port),
                          "-t", "bullet/acting/req", "-e", "me/replies", "-m", json.dumps(req), "-W", "20"],
                         capture_output=True, text=True, timeout=30)
    reply = json.loads(out.stdout)
    assert reply["ok"] and reply["call"] == {"expression": "6*7"} and reply["result"]["value"] == 42
    # the documented command, an agent routed by name with the header's own schema
    out = subprocess.run(["mosquitto_rr", "-V", "5", "-h", mbroker.host, "-p", str(mbroker.port),
                          "-t", "bullet/acting/req", "-e", "me/replies", "-W", "20",
                          "-m", '{"prompt": "turn on the kitchen light", "child": "home"}'],
                         capture_output=True, text=True, timeout=30)
    reply = json.loads(out.stdout)
    assert reply["final"] and ("call" in reply if reply["ok"] else reply["error"]["code"] in
                               ("bad_call", "no_such_entity", "ambiguous", "out_of_range"))


def test_cli_ask(mbroker, actd):
    cli = [sys.executable, "-m", "bulletd.cli", "--socket", actd.sock, "ask"]
    call = {"intent": "HassLightSet", "name": "office light", "brightness": 75}
    cmd = [*cli, "office light to 75 percent", "--child", "home", "--schema", json.dumps(pin(call))]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "child    home (explicit, 1.00)",
        'call     {"intent":"HassLightSet","name":"office light","brightness":75}',
        'actions  light.turn_on light.office {"brightness_pct": 75}',
        "result   dry run: 1 action(s) resolved, nothing published (add --act to carry it out)"]
    out = subprocess.run([*cmd, "--act"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == 'result   done: zigbee2mqtt/office_light/set {"state":"ON","brightness":190}'
    out = subprocess.run([*cli, "6 times 7", "--child", "calc", "--schema", json.dumps(pin({"expression": "6*7"})),
                          "--json"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    reply = json.loads(out.stdout)
    assert reply["child"] == "calc" and reply["result"] == {"value": 42, "exact": "42"} and reply["actions"] == []
    out = subprocess.run([*cli, "hi", "--child", "plain"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 1 and "not an agent" in out.stderr
    out = subprocess.run([*cli, "hi", "--child", "calc", "--schema", "{nope"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 2 and "--schema" in out.stderr


def test_reload_reads_the_home_file_again(tmp_path, kit, mbroker):
    import signal
    home = tmp_path / "home.yaml"
    home.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    d = start(tmp_path, kit, mbroker, device="reloading", home=home)
    try:
        call = {"intent": "HassTurnOn", "name": "aquarium"}
        code, _ = ask_error(mbroker, "reloading", "turn on the aquarium", call)
        assert code == "no_such_entity"
        good = home.read_text(encoding="utf-8") + (
            "  - {id: switch.aquarium, area: living_room, names: [aquarium], command_topic: tasmota/aquarium/cmnd/POWER,"
            " payload: plain}\n")
        home.write_text(good + "  - {id: switch.bad, area: nowhere, names: [bad], command_topic: t}\n", encoding="utf-8")
        d.signal(signal.SIGHUP)          # a broken home file: the running config stays
        time.sleep(1.0)
        assert "tools.home.file" in d.log() and ask_error(mbroker, "reloading", "turn on the aquarium", call)[0] \
            == "no_such_entity"
        home.write_text(good, encoding="utf-8")
        d.signal(signal.SIGHUP)
        end = time.monotonic() + 10
        while True:
            try:
                r = ask(mbroker, "reloading", "turn on the aquarium", call)
                break
            except DaemonError:
                assert time.monotonic() < end, d.log()
                time.sleep(0.2)
        assert r.actions == [{"service": "switch.turn_on", "entity_id": "switch.aquarium"}]
    finally:
        d.stop()


async def test_home_assistant_discovery_and_text_commands(tmp_path, kit, mbroker):
    d = start(tmp_path, kit, mbroker, device="hass", discovery=True, child="home")
    try:
        seen: dict[str, bytes] = {}
        async with aiomqtt.Client(mbroker.host, mbroker.port) as c:
            await c.subscribe("homeassistant/+/bullet_hass/#", qos=1)
            await c.subscribe("bullet/hass/last_action", qos=1)
            await c.subscribe("bullet/hass/status", qos=1)

            async def read():
                async for m in c.messages:
                    seen[m.topic.value] = bytes(m.payload)
            reader = asyncio.create_task(read())
            end = time.monotonic() + 10
            while len([t for t in seen if t.startswith("homeassistant/")]) < 5 and time.monotonic() < end:
                await asyncio.sleep(0.05)
            text_cfg = json.loads(seen["homeassistant/text/bullet_hass/command/config"])
            assert text_cfg["command_topic"] == "bullet/hass/ha/command"
            state_cfg = json.loads(seen["homeassistant/sensor/bullet_hass/state/config"])
            assert json.loads(seen[state_cfg["state_topic"]])["state"] == "online"
            # a text command is a home request with act: true; the random child's own (unpinned)
            # call is whatever it is, and the last action says what became of it
            await c.publish(text_cfg["command_topic"], b"turn on the kitchen light", qos=1)
            while "bullet/hass/last_action" not in seen and time.monotonic() < end + 10:
                await asyncio.sleep(0.05)
            reader.cancel()
        last = json.loads(seen["bullet/hass/last_action"])
        assert last["text"] == "turn on the kitchen light" and last["summary"]
        with d.client() as c:
            st = c.status()
            assert st["tools"]["home"]["ha_commands"] == 1 and st["requests"]["requests"] >= 2
    finally:
        d.stop()


def test_a_prompt_naming_the_home_goes_to_home_when_nothing_else_claims_it(tmp_path, kit, mbroker, actd):
    """'हॉल' is far from every child's examples (no route on its own) but names an area of the
    example home: bulletd routes it to the home child (reason names); tools.home.route_names ""
    turns that off."""
    with actd.client() as c:
        d = c.route("हॉल")["decision"]
        assert (d["child"], d["reason"]) == ("home", "names"), d
        assert c.route("zzz qqq")["decision"]["child"] is None
        d = c.route("१२ गुणिले ७")["decision"]          # arithmetic: the calc child's hint
        assert (d["child"], d["reason"]) == ("calc", "names"), d
    off = start(tmp_path, kit, mbroker, device="no-hints", route_names="")
    try:
        with off.client() as c:
            assert c.route("हॉल")["decision"]["child"] is None
            assert c.route("१२ गुणिले ७")["decision"]["child"] == "calc"    # tools.calc.route_sums stays on
    finally:
        off.stop()


def test_a_home_command_goes_to_home_even_when_the_mother_leans_elsewhere(tmp_path, kit, mbroker):
    """A prompt that names something of the example home and says a command word goes to the home
    child even when the mother is sure of another child (reason names); tools.home.route_commands
    false leaves it to the mother. A clinic (दवाखाना) is not the living room (दिवाणखाना): the
    hint's fuzzy match is length-aware, so that request stays unrouted."""
    from _daemon_util import make_mother
    mdir = tmp_path / "mother"
    mdir.mkdir()
    prompt = "kindly the floor lamp on for me"
    clinic = "जवळचा दवाखाना कुठे आहे"       # the mother is torn: only a hint could route it
    mother = make_mother(mdir, {"plain": [prompt, "kindly a fortune for me", "something wise for me kindly", clinic],
                                "calc": ["what is 17 times 23", "15 percent of 80", "divide 100 by 4", clinic],
                                "home": ["zzz qqq", "xxyy zz"]},
                         key=kit["key"], threshold=0.95)
    router = {"mother": str(mother)}
    d = start(tmp_path, kit, mbroker, device="claims", router=router)
    try:
        with d.client() as c:
            r = c.route(prompt)["decision"]
            assert (r["child"], r["reason"]) == ("home", "names") and r["scores"]["plain"] >= 0.95, r
            assert c.route("kindly a fortune for me")["decision"]["child"] == "plain"
            r = c.route(clinic)["decision"]
            assert r["child"] is None and r["confidence"] < 0.95, r
            assert c.route("हॉल")["decision"]["child"] == "home"          # names it: the mother is unsure
    finally:
        d.stop()
    off = start(tmp_path, kit, mbroker, device="no-claims", router=router, route_commands=False)
    try:
        with off.client() as c:
            r = c.route(prompt)["decision"]
            assert (r["child"], r["reason"]) == ("plain", "mother"), r
    finally:
        off.stop()
