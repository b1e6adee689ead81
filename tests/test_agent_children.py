"""The shipped agent children (home, calc) and the mother in child_models/: signed by the release
key, within the size limits, their `agent` header, verification vectors and temperature-0 golden
calls replay through the runtime, the quickstart's requests get the right calls, and the mother
routes by task with a reject class."""
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CM = ROOT / "child_models"
AGENTS = ("home", "calc")


def _golden():
    return json.loads((CM / "agents_golden.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", AGENTS + ("mother",))
def test_shipped_signed_and_small(name):
    from bulletd.signing import verify_file

    assert verify_file(CM / f"{name}.bullet", CM / "release.pub.pem")["name"] == name
    assert (CM / f"{name}.bullet").stat().st_size <= 8_000_000
    assert (CM / f"{name}.md").is_file()
    assert sum(p.stat().st_size for p in CM.iterdir()) <= 25_000_000


@pytest.mark.parametrize("name", AGENTS)
def test_agent_header_and_vectors(name):
    from bulletd.format import BulletFile
    from bulletd.ota.smoke import smoke_test

    with BulletFile.open(CM / f"{name}.bullet") as bf:
        bf.verify_body()
        agent = bf.header["agent"]
        assert agent["tool"] == name and agent["template"] == "{text}\n=>"
        assert agent["schema"]["type"] == "object"
        assert "/" not in bf.provenance["training"]["config"]["dataset_path"]
    assert smoke_test(CM / f"{name}.bullet", require_vectors=True)["vectors"] >= 2


@pytest.mark.parametrize("name", AGENTS)
def test_golden_calls_replay(name):
    from bulletd.runtime import GenerationSettings, load_model

    gold = _golden()[name]
    card = (CM / f"{name}.md").read_text(encoding="utf-8")
    with load_model(str(CM / f"{name}.bullet")) as m:
        for g in gold:
            s = GenerationSettings(max_tokens=g["max_tokens"], temperature=0.0, repetition_penalty=1.0, top_k=0, top_p=1.0)
            gen = m.generate("{text}\n=>".format(text=g["text"]), s)
            assert "".join(gen) == g["output"] and list(gen.tokens) == g["ids"], g["text"]
            assert f"    => {g['output']}" in card


def test_quickstart_requests_get_the_right_calls():
    from bulletd.agents.numerals import plain
    from trainer.agentdata.calc import evaluate
    from trainer.agentdata.home import Home, resolve
    from trainer.agentdata.measure import first_object

    gold = {name: {g["text"]: first_object(g["output"]) for g in _golden()[name]} for name in AGENTS}
    home = Home.load(ROOT / "examples" / "home.yaml")
    assert resolve(gold["home"]["बेडरूममधला दिवा बंद कर"], home) == \
        [{"service": "light.turn_off", "entity_id": "light.bedroom"}]
    assert resolve(gold["home"]["turn off the kitchen light"], home) == \
        [{"service": "light.turn_off", "entity_id": "light.kitchen_ceiling"}]
    assert evaluate(plain(gold["calc"]["what is 17 times 23"]["expression"])) == 391
    assert evaluate(plain(gold["calc"]["६ गुणिले ७"]["expression"])) == 42
    assert evaluate(plain(gold["calc"]["सतरा अधिक पाच"]["expression"])) == 22


def test_mother_routes_by_task_and_rejects_the_rest():
    from bulletd.router import REJECT_LABEL, Router, load_mother

    r = Router(load_mother(str(CM / "mother.bullet")))
    assert {"home", "calc", "marathi", "fortunes", REJECT_LABEL} <= set(r.mother.labels)
    avail = {"home", "calc", "marathi", "fortunes"}
    want = {"बेडरूममधला दिवा बंद कर": "home", "turn off the kitchen light": "home",
            "६ गुणिले ७": "calc", "what is 17 times 23": "calc",
            "tell me my fortune": "fortunes", "फाइल जतन करा": "marathi"}
    for text, child in want.items():
        assert r.decide(text, avail).child == child, text
    for text in ("what's the weather in pune", "set an alarm for 6 am", "call mom"):
        d = r.decide(text, avail)
        assert d.child is None and d.reason == "none", (text, d.as_dict())


def test_the_card_section_from_bullet_eval(tmp_path):
    """The ship step measures the held-out set through bulletd's path (bullet eval --child) and
    writes the figures and misses into the card."""
    from trainer.agentdata.ship import _served_section, served_eval

    lines = [{"text": "बेडरूममधला दिवा बंद कर", "category": "mr",
              "expect": [{"service": "light.turn_off", "entity_id": "light.bedroom"}]},
             {"text": "turn off the kitchen light", "category": "en",
              "expect": [{"service": "light.turn_on", "entity_id": "light.kitchen_ceiling"}]}]   # a wrong expect
    (tmp_path / "home_test.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines),
                                              encoding="utf-8")
    assert served_eval("home", CM, tmp_path) is None                  # no home file: nothing to resolve on
    fname, r, home_name = served = served_eval("home", CM, tmp_path, ROOT / "examples" / "home.yaml", signed=True)
    assert fname == "home_test.jsonl" and r["signatures"] == "checked" and r["child"] == "home"
    assert home_name == "home.yaml"
    assert (r["correct"], r["n"]) == (1, 2) and r["misses"][0]["text"] == "turn off the kitchen light"
    text = _served_section(served)
    assert "| mr | 1/1 | 100.0% |" in text and "| en | 0/1 | 0.0% |" in text and "turn off the kitchen light" in text
    assert "--home home.yaml" in text and "HomeConfig.narrow" in text
    both = _served_section([served, served])                          # the example home and a random one
    assert both.count("| mr | 1/1 | 100.0% |") == 2


@pytest.mark.parametrize("text, answer", [
    ("tell me 50726 minus 46822 is how much for me", 3904),                       # alone: " ( 50726 - 46822 "
    ("मला सांग 6751, 582, 503, 8247, 82, 5555 यांची सरासरी किती होते लगेच", 3620),   # alone: 82 left out, / 5
    ("could you work out: forty eight percent of ninety five is how much for me", 45.6),   # alone: 48 * 95
    ("मला सांग आठशे सदतीस आणि चारशे एक्कावन्न यांचा गुणाकार", 837 * 451),           # alone: a sum
])
def test_calc_decoding_holds_the_call_to_the_utterance(text, answer):
    """bulletd's calc path (run_agent: every number once, an average's count last, only the
    operators the words ask for) gets right what the shipped child alone gets wrong."""
    from bulletd.agents.agent import AgentContext, run_agent
    from bulletd.runtime import load_model

    with load_model(str(CM / "calc.bullet")) as m:
        assert run_agent(m, text, {}, AgentContext())["result"]["value"] == pytest.approx(answer)
