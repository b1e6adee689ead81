"""The home tool without a broker: the example home file, malformed files refused with key and
line, name matching (exact, aliases, Devanagari, fuzzy), resolution to Home Assistant service
calls, device payloads, states, and validation of calls against the tool schemas."""
import functools
import json
from pathlib import Path

import pytest
from hypothesis import given, settings

from bulletd.agents.home import HomeConfig, HomeConfigError, StateStore, case_stems, command, normalize, resolve
from bulletd.agents.tools import TOOLS, validate_call
from bulletd.errors import RequestError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "home.yaml"


@pytest.fixture(scope="module")
def home():
    return HomeConfig.load(EXAMPLE)


def calls(home, **call):
    return resolve(call, home)


def err(home, **call):
    with pytest.raises(RequestError) as e:
        resolve(call, home)
    return e.value.code, e.value.message


def test_example_home_loads(home):
    assert len(home.areas) == 12 and len(home.entities) == 33
    e = home.entities["light.bathroom"]
    assert (e.area, e.payload, e.dimmable, e.command_topic) == ("bathroom", "plain", False,
                                                               "tasmota/bathroom_light/cmnd/POWER")
    ac = home.entities["climate.office_heater"]
    assert (ac.min_temp, ac.max_temp) == (10, 28)
    s = home.entities["sensor.outdoor_temperature"]
    assert (s.value_key, s.unit, s.command_topic) == ("temperature", "°C", "")
    assert "zigbee2mqtt/kitchen_ceiling/set" in home.command_topics
    assert home.state_topics["zigbee2mqtt/kitchen_ceiling"] == ["light.kitchen_ceiling"]


@pytest.mark.parametrize("text,where", [
    ("areas: [{id: kitchen, names: [k]}]\nentities:\n  - {id: light.x, area: nowhere, names: [x], "
     "command_topic: a/b}\n", ("entities[0] (light.x).area", "line 3")),
    ("areas: []\nentities:\n  - {id: lamp.x, names: [x]}\n", ("entities[0].id", "line 3")),
    ("areas:\n  - id: kitchen\n    names: [kitchen]\n    colour: red\nentities: []\n",
     ("areas[0].colour", "line 4")),
    ("areas: [{id: k, names: [k]}]\nentities:\n  - id: light.a\n    area: k\n    names: [a]\n"
     "    command_topic: a/+/set\n", ("command_topic", "line 6")),
    ("areas: [{id: k, names: [k]}]\nentities:\n  - {id: light.a, area: k, names: [a]}\n",
     ("command_topic", "missing")),
    ("areas: [{id: k, names: [k]}]\nentities:\n  - {id: climate.a, area: k, names: [a], command_topic: t, "
     "min_temp: 30, max_temp: 10}\n", ("min_temp", "line 3")),
    ("areas: [{id: k, names: [k]}]\nentities:\n  - {id: light.a, area: k, names: [a], command_topic: t, "
     "dimmable: maybe}\n", ("dimmable", "true or false")),
    ("areas: [{id: k, names: [k]}]\nentities:\n  - {id: light.a, area: k, names: [a], command_topic: t, "
     "payload: xml}\n", ("payload", "json or plain")),
    ("areas: [{id: k, names: [k]}, {id: k, names: [j]}]\nentities: []\n", ("areas[1].id", "twice")),
    ("areas: [{id: k, names: [k]}]\nentites: []\n", ("entites", "unknown key")),
    ("areas: [{id: k, names: [k]\n", ("not valid YAML", "line")),
    ("- 1\n- 2\n", ("home", "expected a mapping")),
])
def test_malformed_home_is_refused_naming_key_and_line(tmp_path, text, where):
    p = tmp_path / "home.yaml"
    p.write_text(text)
    with pytest.raises(HomeConfigError) as e:
        HomeConfig.load(p)
    msg = str(e.value)
    assert str(p) in msg
    for w in where:
        assert w in msg, msg


def test_missing_home_file(tmp_path):
    with pytest.raises(HomeConfigError, match="cannot read"):
        HomeConfig.load(tmp_path / "nope.yaml")


def test_normalize():
    assert normalize("The Kitchen-Light!") == normalize("kitchen light") == "kitchenlight"
    assert normalize("बेडरूम मधला दिवा") == normalize("बेडरूममधला दिवा")       # marks kept, spaces not
    assert normalize("पंखा") != normalize("पख")
    assert normalize("Ｋｉｔｃｈｅｎ") == "ｋｉｔｃｈｅｎ".casefold()


def test_case_stems():
    assert case_stems(normalize("स्वयंपाकघरातील"))[:2] == ["स्वयंपाकघरा", "स्वयंपाकघर"]
    assert "अभ्यासिका" in case_stems(normalize("अभ्यासिकेतील"))      # the oblique े back to ा
    assert "हॉल" in case_stems("हॉलमधले") and "बाग" in case_stems("बागेतले")
    assert case_stems("हॉल") == [] and case_stems("kitchen") == []


@pytest.mark.parametrize("call, want", [
    # a Marathi case ending on an area or a name (the word as typed, whole): matched without it
    ({"intent": "HassTurnOn", "area": "स्वयंपाकघरातील", "domain": "light"},
     ["light.kitchen_ceiling", "light.kitchen_counter"]),
    ({"intent": "HassTurnOff", "area": "बागेतले", "domain": "light"}, ["light.garden"]),
    ({"intent": "HassTurnOn", "area": "अभ्यासिकेतील", "domain": "light"}, ["light.office"]),
    ({"intent": "HassClimateSetTemperature", "area": "लिव्हिंग रूमचे", "domain": "climate", "temperature": 25},
     ["climate.living_room_ac"]),
    ({"intent": "HassTurnOff", "name": "गॅरेजमधले"}, ["light.garage"]),          # an area's name, with an ending
    ({"intent": "HassLightSet", "name": "बेडरूममधला दिवाला", "brightness": 20},
     ["light.bedroom"]),
    ({"intent": "HassOpenCover", "name": "हॉलचे पडदे"}, ["cover.living_room_curtains"]),   # a name itself ending in चे
])
def test_marathi_case_endings_are_stripped(home, call, want):
    assert [a["entity_id"] for a in resolve(call, home)] == want


# ---------------------------------------------------------------- resolution, case by case

def test_light_set_area_means_its_dimmable_lights(home):
    assert calls(home, intent="HassLightSet", area="kitchen", brightness=40) == [
        {"service": "light.turn_on", "entity_id": "light.kitchen_ceiling", "data": {"brightness_pct": 40}},
        {"service": "light.turn_on", "entity_id": "light.kitchen_counter", "data": {"brightness_pct": 40}}]


def test_area_alone_means_lights_switches_fans_media(home):
    got = {(a["service"], a["entity_id"]) for a in calls(home, intent="HassTurnOff", area="living room")}
    assert got == {("light.turn_off", "light.living_room_ceiling"), ("light.turn_off", "light.floor_lamp"),
                   ("fan.turn_off", "fan.living_room"), ("media_player.turn_off", "media_player.living_room_tv")}


def test_area_and_domain_means_every_entity_of_that_domain(home):
    got = [a["entity_id"] for a in calls(home, intent="HassCloseCover", area="living room", domain="cover")]
    assert got == ["cover.living_room_curtains"]
    got = [a["entity_id"] for a in calls(home, intent="HassTurnOn", area="bedroom", domain="light")]
    assert got == ["light.bedroom", "light.bedside"]


@pytest.mark.parametrize("call,want", [
    ({"intent": "HassTurnOn", "name": "kitchen light"}, [("light.turn_on", "light.kitchen_ceiling", None)]),
    ({"intent": "HassTurnOn", "name": "geyser"}, [("switch.turn_on", "switch.water_heater", None)]),
    ({"intent": "HassTurnOff", "name": "bedroom fan"}, [("fan.turn_off", "fan.bedroom", None)]),
    ({"intent": "HassTurnOn", "name": "tv"}, [("media_player.turn_on", "media_player.living_room_tv", None)]),
    ({"intent": "HassToggle", "name": "floor lamp"}, [("light.toggle", "light.floor_lamp", None)]),
    ({"intent": "HassLightSet", "name": "bedside lamp", "brightness": 0},
     [("light.turn_on", "light.bedside", {"brightness_pct": 0})]),
    ({"intent": "HassTurnOn", "name": "office light", "brightness": 75},
     [("light.turn_on", "light.office", {"brightness_pct": 75})]),
    ({"intent": "HassClimateSetTemperature", "name": "bedroom ac", "temperature": 22},
     [("climate.set_temperature", "climate.bedroom_ac", {"temperature": 22})]),
    ({"intent": "HassClimateSetTemperature", "area": "living room", "temperature": 24.5},
     [("climate.set_temperature", "climate.living_room_ac", {"temperature": 24.5})]),
    ({"intent": "HassSetPosition", "name": "bedroom blinds", "position": 30},
     [("cover.set_cover_position", "cover.bedroom_blinds", {"position": 30})]),
    ({"intent": "HassOpenCover", "name": "garage door"}, [("cover.open_cover", "cover.garage_door", None)]),
    ({"intent": "HassCloseCover", "name": "garage door"}, [("cover.close_cover", "cover.garage_door", None)]),
    ({"intent": "HassLockLock", "name": "front door"}, [("lock.lock", "lock.front_door", None)]),
    ({"intent": "HassLockUnlock", "name": "back door"}, [("lock.unlock", "lock.back_door", None)]),
    ({"intent": "HassGetState", "name": "outside temperature"}, [("get_state", "sensor.outdoor_temperature", None)]),
    ({"intent": "HassGetState", "area": "kids room", "domain": "sensor"},
     [("get_state", "sensor.kids_room_temperature", None)]),
    # names in Devanagari and English-in-Devanagari, from the names lists
    ({"intent": "HassTurnOn", "name": "गीझर"}, [("switch.turn_on", "switch.water_heater", None)]),
    ({"intent": "HassTurnOn", "name": "झुंबर"}, [("light.turn_on", "light.dining", None)]),
    ({"intent": "HassTurnOff", "name": "पंखा", "area": "बेडरूम"}, [("fan.turn_off", "fan.bedroom", None)]),
    ({"intent": "HassTurnOn", "name": "दिवे", "area": "किचन"},
     [("light.turn_on", "light.kitchen_ceiling", None), ("light.turn_on", "light.kitchen_counter", None)]),
    # punctuation, case, articles; a name and the area it is in
    ({"intent": "HassTurnOn", "name": "The Porch Light!"}, [("light.turn_on", "light.porch", None)]),
    ({"intent": "HassTurnOn", "name": "under cabinet lights"}, [("light.turn_on", "light.kitchen_counter", None)]),
    ({"intent": "HassTurnOn", "name": "bedroom light", "area": "bedroom"}, [("light.turn_on", "light.bedroom", None)]),
    # fuzzy: a typo, a missing space in Devanagari, a spelling variant
    ({"intent": "HassTurnOn", "name": "kitchn light"}, [("light.turn_on", "light.kitchen_ceiling", None)]),
    ({"intent": "HassTurnOn", "name": "bedroom lite"}, [("light.turn_on", "light.bedroom", None)]),
    ({"intent": "HassTurnOn", "name": "बेडरूम मधला पंखा"}, [("fan.turn_on", "fan.bedroom", None)]),
    ({"intent": "HassTurnOn", "name": "coffe machine"}, [("switch.turn_on", "switch.coffee_maker", None)]),
    # the name is an area's: the area alone
    ({"intent": "HassTurnOff", "name": "garage"}, [("light.turn_off", "light.garage", None)]),
])
def test_resolution(home, call, want):
    got = [(a["service"], a["entity_id"], a.get("data")) for a in resolve(call, home)]
    assert got == want


@pytest.mark.parametrize("call,code,words", [
    ({"intent": "HassTurnOn", "name": "spaceship"}, "no_such_entity", "spaceship"),
    ({"intent": "HassTurnOn", "name": "light.hacked"}, "no_such_entity", "light.hacked"),
    ({"intent": "HassTurnOn", "name": "zigbee2mqtt/evil/set"}, "no_such_entity", "evil"),
    ({"intent": "HassTurnOn", "area": "attic"}, "no_such_entity", "attic"),
    ({"intent": "HassTurnOn", "name": "kitchen light", "area": "bedroom"}, "no_such_entity", "not in the area"),
    ({"intent": "HassLockLock", "area": "bedroom"}, "no_such_entity", "lock"),
    ({"intent": "HassTurnOn", "name": "lights"}, "ambiguous", "15 light"),
    ({"intent": "HassTurnOn", "name": "lamp"}, "ambiguous", "light"),
    ({"intent": "HassTurnOn", "name": "bedroom"}, None, None),               # an area: fine
    ({"intent": "HassClimateSetTemperature", "name": "office heater", "temperature": 35}, "out_of_range", "10..28"),
    ({"intent": "HassClimateSetTemperature", "name": "bedroom ac", "temperature": 12}, "out_of_range", "16..30"),
    ({"intent": "HassLightSet", "name": "kitchen light", "brightness": 101}, "out_of_range", "0..100"),
    ({"intent": "HassSetPosition", "name": "garage door", "position": -5}, "out_of_range", "0..100"),
    ({"intent": "HassLightSet", "name": "garage light", "brightness": 50}, "out_of_range", "not dimmable"),
    ({"intent": "HassLightSet", "area": "garden", "brightness": 50}, "out_of_range", "dimmable"),
    ({"intent": "HassLightSet", "name": "kitchen light"}, "bad_call", "brightness"),
    ({"intent": "HassTurnOn"}, "bad_call", "name or an area"),
    ({"intent": "HassExplode", "name": "tv"}, "bad_call", "intent"),
    ({"intent": "HassLockLock", "name": "kitchen light"}, "bad_call", "does not apply"),
    ({"intent": "HassTurnOn", "name": "outside temperature"}, "bad_call", "does not apply"),
    ({"intent": "HassTurnOn", "name": "tv", "domain": "sensor"}, "bad_call", "sensor"),
    ({"intent": "HassSetPosition", "name": "garage door", "position": 50.5}, "bad_call", "integer"),
])
def test_errors(home, call, code, words):
    if code is None:
        assert resolve(call, home)
        return
    c, msg = err(home, **call)
    assert c == code, msg
    assert words in msg, msg


def test_ambiguous_alias_is_never_guessed(tmp_path):
    p = tmp_path / "h.yaml"
    p.write_text("areas: [{id: a, names: [upstairs]}, {id: b, names: [downstairs]}]\nentities:\n"
                 "  - {id: light.one, area: a, names: [reading lamp], command_topic: t/1}\n"
                 "  - {id: light.two, area: b, names: [reading lamp], command_topic: t/2}\n"
                 "  - {id: light.three, area: b, names: [desk lamp 1], command_topic: t/3}\n"
                 "  - {id: light.four, area: b, names: [desk lamp 2], command_topic: t/4}\n")
    h = HomeConfig.load(p)
    assert err(h, intent="HassTurnOn", name="reading lamp")[0] == "ambiguous"
    assert [a["entity_id"] for a in resolve({"intent": "HassTurnOn", "name": "reading lamp", "area": "upstairs"}, h)] \
        == ["light.one"]
    assert err(h, intent="HassTurnOn", name="desk lamp 3")[0] == "ambiguous"    # fuzzy tie


# ---------------------------------------------------------------- payloads

@pytest.mark.parametrize("call,want", [
    ({"intent": "HassLightSet", "name": "kitchen light", "brightness": 40},
     [("zigbee2mqtt/kitchen_ceiling/set", {"state": "ON", "brightness": 102})]),
    ({"intent": "HassLightSet", "name": "kitchen light", "brightness": 100},
     [("zigbee2mqtt/kitchen_ceiling/set", {"state": "ON", "brightness": 254})]),
    ({"intent": "HassTurnOff", "name": "kitchen light"}, [("zigbee2mqtt/kitchen_ceiling/set", {"state": "OFF"})]),
    ({"intent": "HassTurnOn", "name": "garage light"}, [("tasmota/garage_light/cmnd/POWER", "ON")]),
    ({"intent": "HassTurnOff", "name": "geyser"}, [("tasmota/geyser/cmnd/POWER", "OFF")]),
    ({"intent": "HassToggle", "name": "tv"}, [("tasmota/tv/cmnd/POWER", "TOGGLE")]),
    ({"intent": "HassOpenCover", "name": "garage door"}, [("zigbee2mqtt/garage_door/set", {"state": "OPEN"})]),
    ({"intent": "HassCloseCover", "name": "hall curtains"}, [("zigbee2mqtt/living_curtains/set", {"state": "CLOSE"})]),
    ({"intent": "HassSetPosition", "name": "bedroom blinds", "position": 30},
     [("zigbee2mqtt/bedroom_blinds/set", {"position": 30})]),
    ({"intent": "HassLockUnlock", "name": "front door"}, [("zigbee2mqtt/front_lock/set", {"state": "UNLOCK"})]),
    ({"intent": "HassClimateSetTemperature", "name": "hall ac", "temperature": 23},
     [("zigbee2mqtt/living_ac/set", {"system_mode": "cool", "occupied_cooling_setpoint": 23})]),
    ({"intent": "HassTurnOff", "name": "bedroom ac"}, [("zigbee2mqtt/bedroom_ac/set", {"system_mode": "off"})]),
])
def test_device_payloads(home, call, want):
    got = []
    for a in resolve(call, home):
        topic, payload = command(home.entities[a["entity_id"]], a)
        assert topic in home.command_topics
        got.append((topic, json.loads(payload) if payload[:1] == b"{" else payload.decode()))
    assert got == want


# ---------------------------------------------------------------- states

def test_state_store(home):
    st = StateStore(home)
    ask = resolve({"intent": "HassGetState", "name": "outside temperature"}, home)
    r = st.answer(ask)
    assert r["states"][0]["known"] is False and "no state is known yet" in r["message"]
    assert st.update("zigbee2mqtt/outdoor_sensor", b'{"temperature": 31.5, "humidity": 40}') == \
        ["sensor.outdoor_temperature"]
    r = st.answer(ask)
    assert r["states"][0]["state"] == 31.5 and r["states"][0]["unit"] == "°C"
    assert "31.5 °C" in r["message"]
    st.update("tasmota/geyser/stat/POWER", b"ON")
    r = st.answer(resolve({"intent": "HassGetState", "name": "geyser"}, home))
    assert r["states"][0]["state"] == "ON"
    st.update("zigbee2mqtt/kitchen_ceiling", b'{"state":"OFF","brightness":10}')
    r = st.answer(resolve({"intent": "HassGetState", "name": "kitchen light"}, home))
    assert r["states"][0]["state"] == "OFF" and r["states"][0]["attributes"]["brightness"] == 10
    assert st.update("some/other/topic", b"ON") == []
    assert st.update("tasmota/geyser/stat/POWER", b"x" * 10000) == []         # too large: ignored


# ---------------------------------------------------------------- schemas

def test_call_validation():
    assert validate_call("home", '{"intent":"HassTurnOn","area":"kitchen"}') == {"intent": "HassTurnOn",
                                                                                 "area": "kitchen"}
    assert validate_call("calc", {"expression": "1+1"}) == {"expression": "1+1"}
    for bad, code in [('{"intent":"HassTurnOn","area":"kitchen"', "bad_call"),
                      ('{"intent":"HassFly","area":"kitchen"}', "bad_call"),
                      ('{"intent":"HassTurnOn","area":"kitchen","topic":"x/y"}', "bad_call"),
                      ('{"intent":"HassLightSet","name":"k","brightness":150}', "out_of_range"),
                      ('{"intent":"HassLightSet","name":"k","brightness":"high"}', "bad_call"),
                      ('["HassTurnOn"]', "bad_call"),
                      ('{"area":"kitchen"}', "bad_call")]:
        with pytest.raises(RequestError) as e:
            validate_call("home", bad)
        assert e.value.code == code, (bad, e.value.message)
    with pytest.raises(RequestError) as e:
        validate_call("calc", {"expression": "1" * 161})
    assert e.value.code == "bad_call"
    assert set(TOOLS["home"].schema["properties"]) == {"intent", "name", "area", "domain", "brightness",
                                                       "temperature", "position"}


# ---------------------------------------------------------------- whatever the model emits

@functools.lru_cache(maxsize=1)
def _example():
    return HomeConfig.load(EXAMPLE)


def _calls():
    from bulletd.agents.home import DOMAINS, INTENTS
    home = _example()
    names = sorted({n for e in home.entities.values() for n in e.names} | {n for a in home.areas.values()
                                                                         for n in a.names})
    from hypothesis import strategies as st
    text = st.one_of(st.sampled_from(names), st.text(max_size=20),
                     st.sampled_from(names).map(lambda n: n[:-1]), st.sampled_from(sorted(home.command_topics)),
                     st.sampled_from(sorted(home.entities)))
    num = st.one_of(st.integers(-300, 300), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3),
                    st.booleans(), st.none())
    return st.fixed_dictionaries({"intent": st.one_of(st.sampled_from(INTENTS), st.text(max_size=8))},
                                 optional={"name": text, "area": text, "domain": st.one_of(st.sampled_from(DOMAINS), text),
                                           "brightness": num, "temperature": num, "position": num})


@settings(max_examples=300, deadline=None)
@given(_calls())
def test_any_call_resolves_to_configured_commands_or_a_clear_error(call):
    from bulletd.agents.home import INTENTS
    home = _example()
    try:
        actions = resolve(call, home)
    except RequestError as e:
        assert e.code in ("bad_call", "no_such_entity", "ambiguous", "out_of_range") and e.message
        return
    assert call["intent"] in INTENTS and actions
    for a in actions:
        e = home.entities[a["entity_id"]]
        for k in ("brightness_pct", "position"):
            if k in (a.get("data") or {}):
                assert 0 <= a["data"][k] <= 100 and isinstance(a["data"][k], int)
        if "temperature" in (a.get("data") or {}):
            assert e.min_temp <= a["data"]["temperature"] <= e.max_temp
        if a["service"] != "get_state":
            topic, payload = command(e, a)
            assert topic in home.command_topics and topic == e.command_topic and payload


@pytest.mark.parametrize("text, want", [
    ("floor lamp needs to be on rihgt away", {"name": ["floor lamp"]}),              # "lamp" alone is no device
    ("set the floor lamp to 40%", {"name": ["the floor lamp", "floor lamp"]}),       # "the": the same device
    ("yo the under-cabinet lights, switch it off right away",
     {"name": ["the under-cabinet lights", "under-cabinet lights"]}),
    ("एक काम कर, ओट्यावरचे दिवे आता तीस टक्के कर", {"name": ["ओट्यावरचे दिवे"]}),   # fillers name nothing
    ("अरे प्रवेशद्वारमधले सगळे लाईट आता बंद कर आत्ता", {"area": ["प्रवेशद्वारमधले"]}),  # a case ending on an area
    ("bro counter lights ला toggle करून टाक", {"name": ["counter lights", "counter lights ला"]}),
    ("turn off the kitchn light", {"name": ["the kitchn light", "kitchn light"], "area": ["the kitchn", "kitchn"]}),
    ("turn on the jacuzzi", {}),                                                   # nothing: the caller copies freely
])
def test_copy_spans_name_what_the_home_has(home, text, want):
    assert home.copy_spans(text) == want
    for kind, spans in want.items():       # every span resolves on this home
        for s in spans:
            (home.match_area(s) if kind == "area" else home.match_name(s, set(home.entities)))


def test_copy_spans_on_a_home_never_seen(tmp_path):
    """A random home (names the child never saw): the name or area of every generated test line
    on it, widened to whole words, is among the spans of its utterance."""
    import yaml
    from trainer.agentdata import home as data

    p = tmp_path / "home.yaml"
    p.write_text(yaml.safe_dump(data.random_home(3), allow_unicode=True), encoding="utf-8")
    h = HomeConfig.load(p)
    lines = list(data.generate("test", 300, 5, data.Home.load(p)))
    for line in lines:
        spans = h.copy_spans(line["text"])
        for k in ("name", "area"):
            if k in line["call"]:
                assert data.whole_words(line["text"], line["call"][k]) in spans.get(k, []), (line, spans)
    assert not HomeConfig.load(EXAMPLE).copy_spans(lines[0]["text"]).get("name")   # not the example home's


def test_narrow_keeps_intents_of_named_things_and_numbers_said(home):
    from bulletd.agents.home import numbers_said
    schema = TOOLS["home"].schema
    spans, values = home.narrow(schema, "अरे कॉफी मशीन on करा हो")       # a switch: no lock, cover, light set
    assert spans == {"name": ["कॉफी मशीन"]}
    assert values == {"intent": ["HassTurnOn", "HassTurnOff", "HassToggle", "HassGetState"]}
    spans, values = home.narrow(schema, "the bedroom shades position at 91% for me")   # "bedroom" is part of the name
    assert set(values["intent"]) == {"HassTurnOn", "HassTurnOff", "HassSetPosition", "HassGetState",
                                     "HassOpenCover", "HassCloseCover"}
    assert values["position"] == [91] and values["brightness"] == [91] and values["temperature"] == [91]
    _, values = home.narrow(schema, "bro हीटर आता temperature twennty two कर")
    assert values["temperature"] == [2, 20, 22]
    _, values = home.narrow(schema, "turn on the jacuzzi")           # nothing named, no number said:
    assert values == {"intent": [i for i in schema["properties"]["intent"]["enum"]      # no intent that needs one
                                 if i not in ("HassLightSet", "HassClimateSetTemperature", "HassSetPosition")]}
    _, values = home.narrow(schema, "set the jacuzzi to 40")        # nothing named: every intent
    assert "intent" not in values and values["brightness"] == [40]
    assert numbers_said("kids room light आता brightness बारा कर") == {12}   # "light" is no "eight"
    assert numbers_said("२२.५ degrees, two hundred and five") == {22.5, 2, 200, 205, 5}
    assert numbers_said("४० टक्के and चाळीस") == {40}


@pytest.mark.parametrize("text, hint", [
    ("turn off the kitchn light", 2),                  # a typo within one edit: still the kitchen light
    ("the cuonter lights, trn it on for me", 2),       # two edits in a long name
    ("गीझर ऑन करून टाक", 2),
    ("set the floor lamp to 40%", 2),
    ("bedroom blinds", 1),                             # names, but says no command
    ("हॉल", 1),
    ("जवळचा दवाखाना कुठे आहे", 0),                     # दवाखाना (a clinic) is two edits from दिवाणखाना
    ("they are all staying home on the weekend", 0),   # "all" is no "hall": short names need an exact match
    ("i shall go", 0),                                 # nor is "shall"
    ("पुढचे दार लॉक कर", 2),                           # an English command word typed in Devanagari
    ("tell me a fortune", 0),
])
def test_route_hint_names_closely_and_commands(home, text, hint):
    """The router's home hint and claim: names_something when a prompt names something of the home
    (exactly, with a case ending, or within a length-aware edit distance; hint >= 1),
    commands_something when it also says a command word (hint 2); the fuzzy matching of the home
    agent's own spans stays as it is."""
    assert home.names_something(text) == (hint >= 1) and home.commands_something(text) == (hint == 2)
    assert home.named_spans("जवळचा दवाखाना कुठे आहे")          # the agent's spans still match it fuzzily
