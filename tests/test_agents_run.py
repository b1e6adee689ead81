"""run_agent in-process (the path bulletd and `bullet eval` share) on a random-weight agent child:
the header's agent block, a pinned call, the publish hook only with act, states, bad headers."""
import pytest

from _daemon_util import ROOT
from bulletd.agents.agent import AgentContext, agent_spec, run_agent
from bulletd.agents.home import HomeConfig, StateStore
from bulletd.agents.tools import TOOLS
from bulletd.errors import RequestError
from bulletd.format.synth import write_random_lm
from bulletd.runtime import load_model

ARCH = dict(dim=64, n_layers=2, n_heads=2, n_kv_heads=2, hidden_dim=128, vocab_size=320, max_seq_len=256)
CALL = {"intent": "HassTurnOff", "name": "geyser"}
PIN = {"type": "object", "properties": {"intent": {"type": "string", "const": "HassTurnOff"},
                                        "name": {"type": "string", "enum": ["geyser"]}},
       "required": ["intent", "name"]}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    p = tmp_path_factory.mktemp("run") / "home.bullet"
    write_random_lm(p, ARCH, seed=7, name="home", extra={"agent": {"tool": "home", "schema": TOOLS["home"].schema}})
    m = load_model(p)
    yield m
    m.close()


@pytest.fixture(scope="module")
def home():
    return HomeConfig.load(ROOT / "examples" / "home.yaml")


def test_pinned_call_dry_run_and_publish_hook(model, home):
    published = []
    ctx = AgentContext(home=home, publish=lambda acts: published.append(acts) or {"acted": True})
    r = run_agent(model, "please switch off the geyser", None, ctx, schema=PIN)
    assert r["call"] == CALL and r["text"] == '{"intent":"HassTurnOff","name":"geyser"}'
    assert r["actions"] == [{"service": "switch.turn_off", "entity_id": "switch.water_heater"}]
    assert r["result"]["acted"] is False and published == []          # no act: the hook is not called
    assert r["finish_reason"] == "stop" and r["tokens"] > 0
    ctx.act = True
    r = run_agent(model, "please switch off the geyser", {"seed": 1}, ctx, schema=PIN)
    assert r["result"]["acted"] is True and published == [r["actions"]]


def test_states_and_errors(model, home):
    st = StateStore(home)
    pin = {"type": "object", "properties": {"intent": {"type": "string", "const": "HassGetState"},
                                            "name": {"type": "string", "const": "tv"}}, "required": ["intent", "name"]}
    ctx = AgentContext(home=home, states=st)
    assert run_agent(model, "is the tv on", None, ctx, schema=pin)["result"]["states"][0]["known"] is False
    st.update("tasmota/tv/stat/POWER", b"ON")
    assert run_agent(model, "is the tv on", None, ctx, schema=pin)["result"]["message"] == "tv: ON"
    with pytest.raises(RequestError) as e:
        run_agent(model, "is the tv on", None, AgentContext(home=None), schema=pin)
    assert e.value.code == "bad_request" and "tools.home.file" in e.value.message
    with pytest.raises(RequestError) as e:
        run_agent(model, "   ", None, ctx)
    assert e.value.code == "bad_request"


@pytest.mark.parametrize("header,code", [
    ({}, None),
    ({"agent": {"tool": "shell"}}, "bad_model"),
    ({"agent": {"tool": "calc", "template": "no placeholder"}}, "bad_model"),
    ({"agent": {"tool": "calc", "schema": "x"}}, "bad_model"),
    ({"agent": {"tool": "calc"}}, "ok"),
])
def test_agent_spec(header, code):
    if code is None:
        assert agent_spec(header) is None
    elif code == "ok":
        assert agent_spec(header) == {"tool": "calc", "schema": TOOLS["calc"].schema, "template": "{text}\n=>"}
    else:
        with pytest.raises(RequestError) as e:
            agent_spec(header)
        assert e.value.code == code


ASK = {"type": "object", "properties": {"intent": {"type": "string", "const": "HassGetState"},
                                        "name": {"type": "string", "maxLength": 48, "x-copy": "words"}},
       "required": ["intent", "name"]}


def test_home_names_copy_only_spans_that_name_a_device(model, home):
    """Sampled hot from random weights, the name is still one of the utterance's spans that name a
    device of the home (HomeConfig.copy_spans), so every call resolves; without a home span the
    name copies any whole words."""
    text = "hey could you check the floor lamp and the bedroom fan rihgt away"
    spans = home.copy_spans(text)["name"]
    assert len(spans) >= 3, spans
    names = set()
    for seed in range(12):
        r = run_agent(model, text, {"temperature": 1.5, "seed": seed}, AgentContext(home=home), schema=ASK)
        assert r["call"]["name"] in spans, r["call"]
        assert r["actions"][0]["service"] == "get_state"
        names.add(r["call"]["name"])
    assert len(names) >= 2, names
    free = set()
    for seed in range(12):
        try:
            r = run_agent(model, text, {"temperature": 1.5, "seed": seed}, AgentContext(home=home, home_spans=False, home_narrow=False),
                          schema=ASK)
            free.add(r["call"]["name"])
        except RequestError as exc:
            assert exc.code in ("no_such_entity", "ambiguous", "bad_call"), exc
            free.add(None)
    assert free - set(spans), free      # the words rule alone copies other words too


SET = {"type": "object", "properties": {k: TOOLS["home"].schema["properties"][k] for k in ("intent", "name", "brightness")},
       "required": ["intent", "name", "brightness"]}


def test_home_intents_and_numbers_keep_to_what_the_utterance_says(model, home):
    """Sampled hot from random weights, a home call's intent applies to the named device and its
    brightness is a number the utterance says; with home_narrow off, other intents and numbers come out."""
    text = "set the floor lamp to forty two percent"
    _, values = home.narrow(SET, text)
    assert values["brightness"] == [2, 40, 42]
    narrow, free = [], []
    for seed in range(16):
        for ctx, out in ((AgentContext(home=home), narrow), (AgentContext(home=home, home_narrow=False), free)):
            try:
                out.append(run_agent(model, text, {"temperature": 1.5, "seed": seed}, ctx, schema=SET)["call"])
            except RequestError as exc:
                assert exc.code in ("no_such_entity", "ambiguous", "bad_call", "out_of_range"), exc
    assert len(narrow) == 16          # names are spans of the lamp, intents apply to a light
    for call in narrow:
        assert call["intent"] in values["intent"] and call["brightness"] in values["brightness"], call
    assert len({c["intent"] for c in narrow}) >= 2
    assert any(c["intent"] not in values["intent"] or c["brightness"] not in values["brightness"] for c in free), free
