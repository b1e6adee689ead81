"""The README's first command: bulletd on the shipped child_models/ (signatures checked against
child_models/release.pub.pem) answers through the mother, and each child reproduces its
temperature-0 golden output through the daemon."""
import json

import pytest

from _daemon_util import ROOT, DaemonProc

MODELS = ROOT / "child_models"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    for f in ("mother.bullet", "release.pub.pem", "golden.json"):
        if not (MODELS / f).exists():
            pytest.fail(f"child_models/{f} is missing: the shipped children are part of the repository")
    d = DaemonProc(tmp_path_factory.mktemp("shipped"),
                   {"model_dir": str(MODELS), "trust": {"keys": [str(MODELS / "release.pub.pem")]}}).start()
    yield d
    d.stop()


def test_every_shipped_child_loads_signed_and_is_routable(shipped):
    golden = json.loads((MODELS / "golden.json").read_text())
    with shipped.client() as c:
        kids = {k["name"]: k for k in c.list()}
        st = c.status()
    assert set(golden) <= set(kids)
    for name in golden:
        assert kids[name].get("loaded", True) and kids[name]["signer"], kids[name]
        assert kids[name]["routable_by"] == "mother"
    assert st["mother"]["name"] == "mother" and set(st["mother"]["labels"]) >= set(golden)


def test_golden_outputs_through_the_daemon(shipped):
    golden = json.loads((MODELS / "golden.json").read_text())
    with shipped.client() as c:
        for name, g in golden.items():
            r = c.generate(g["prompt"], child=name, max_tokens=g["max_tokens"], temperature=0.0,
                           repetition_penalty=g["repetition_penalty"], top_k=0, top_p=1.0)
            assert r.text == g["text"], (name, r.text, g["text"])
            assert r.tokens == len(g["ids"]) and r.finish_reason == g["finish_reason"]


@pytest.mark.parametrize("prompt, child", [("Once upon a time", "fortunes"),
                                           ("You will have a long and happy life", "fortunes"),
                                           ("ही फाइल उघडता आली नाही", "marathi"),
                                           ("what is 6 times 7", "calc")])
def test_the_mother_routes_a_first_request(shipped, prompt, child):
    with shipped.client() as c:
        r = c.generate(prompt, max_tokens=16, seed=1)
    assert r.child == child and r.route["reason"] == "mother" and r.route["confidence"] >= 0.5


def test_the_mother_routes_a_home_command_to_the_home_agent(shipped):
    # the daemon has no home file here, so only the decision is asked for
    with shipped.client() as c:
        d = c.route("turn off the bedroom fan")["decision"]
    assert d["child"] == "home" and d["reason"] == "mother" and d["confidence"] >= 0.5, d


def test_a_request_no_child_serves_gets_no_route(shipped):
    # a weather question: the mother's reject label wins, so no child answers it confidently
    from bulletd.client import DaemonError
    with shipped.client() as c:
        with pytest.raises(DaemonError) as e:
            c.generate("आज हवामान कसे आहे", max_tokens=8)
    assert e.value.code == "no_route"
