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
