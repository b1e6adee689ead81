"""`bullet eval`: set files, routing and text sets on real files (random-weight children, a
deterministic mother, fresh keys), the text baselines (Kneser-Ney by hand, normalisation,
compressor costs), greedy distinct 4-grams, and Home Assistant's matcher on the example home."""
import json
import math
import os
import random
import re
from pathlib import Path

import numpy as np
import pytest

from _daemon_util import TOPICS, make_child, make_keys, make_mother
from bulletd.cli_bullet import main
from bulletd.evaluate.baselines import CharKN, estimate_discounts, join_lines, lzma_cost, ppmd_cost, text_baselines
from bulletd.evaluate.core import distinct_share, greedy_ids, line_bits
from bulletd.evaluate.sets import EvalError, load_set
from bulletd.format.synth import write_random_lm
from bulletd.runtime import load_model

ROOT = Path(__file__).resolve().parent.parent
SHORT = dict(dim=32, n_layers=1, n_heads=2, n_kv_heads=2, hidden_dim=64, vocab_size=300, max_seq_len=16)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def run_json(capsys, *argv) -> dict:
    assert main(["eval", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    """A signed model directory: three children and a mother that routes by topic."""
    d = tmp_path_factory.mktemp("evalkit")
    key, trust = make_keys(d)
    models = d / "models"
    models.mkdir()
    for i, name in enumerate(TOPICS):
        make_child(models, name, key=key, seed=i)
    make_mother(models, TOPICS, key=key)
    return {"dir": d, "models": models, "key": key, "trust": trust}


# ------------------------------------------------------------------------------------ set files
def test_set_kinds_and_categories(tmp_path):
    p = write_jsonl(tmp_path / "c.jsonl", [{"text": "2+2", "answer": 4, "category": "digits"}, {"text": "x", "answer": 1.5}])
    kind, items = load_set(p)
    assert kind == "calc" and [(i.line, i.expected, i.category) for i in items] == [(1, 4, "digits"), (2, 1.5, None)]
    p = write_jsonl(tmp_path / "h.jsonl", [{"text": "on", "expect": [{"service": "light.turn_on", "entity_id": "light.a", "data": {}}]}])
    kind, items = load_set(p)
    assert kind == "home" and items[0].expected == [{"service": "light.turn_on", "entity_id": "light.a"}]
    assert load_set(write_jsonl(tmp_path / "r.jsonl", [{"text": "a", "child": None}]))[0] == "routing"
    assert load_set(write_jsonl(tmp_path / "t.jsonl", [{"text": "a"}]))[0] == "text"
    assert load_set(write_jsonl(tmp_path / "t.jsonl", [{"text": "a"}]), distinct=True)[0] == "distinct"


@pytest.mark.parametrize("lines, why", [
    (['{"text": "a", "answer": 1}', '{"text": "b", "child": "x"}'], "line 2: is a routing line but the set is a calc set"),
    (['{"text": "a", "answer": 1}', "{not json"], "line 2: not JSON"),
    (['{"text": "a", "answer": true}'], "line 1: answer must be a finite number"),
    (['{"text": "", "answer": 1}'], "line 1: needs a non-empty string"),
    (['{"text": "a", "expect": [{"service": "light.turn_on"}]}'], "line 1: expect[0]: entity_id must be"),
    (['["a"]'], "line 1: expected a JSON object"),
    (["", "  "], "the set has no lines"),
])
def test_bad_sets_name_the_line(tmp_path, lines, why):
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(EvalError, match=re.escape(why)):
        load_set(p)


def test_bad_set_is_a_clear_cli_error(tmp_path, kit, capsys):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "a", "answer": 1}\n{"text": "b"}\n')
    assert main(["eval", str(p), "--models", str(kit["models"])]) == 1
    err = capsys.readouterr().err
    assert "line 2: is a text line but the set is a calc set" in err


# ------------------------------------------------------------------------------------ routing
def test_routing_set_counts_the_mothers_choice(tmp_path, kit, capsys):
    rows = [{"text": "boil the eggs for ten minutes", "child": "cooking", "category": "food"},
            {"text": "is it going to rain on sunday", "child": "weather"},
            {"text": "multiply six by seven", "child": "math"},
            {"text": "bake a loaf of bread", "child": "math", "category": "food"}]    # wrong on purpose
    s = write_jsonl(tmp_path / "r.jsonl", rows)
    r = run_json(capsys, s, "--models", kit["models"], "--trust", kit["trust"])
    assert (r["kind"], r["n"], r["correct"]) == ("routing", 4, 3)
    assert r["accuracy"] == 0.75 and r["signatures"] == "checked"
    assert r["by_category"] == {"-": {"n": 2, "correct": 2, "accuracy": 1.0}, "food": {"n": 2, "correct": 1, "accuracy": 0.5}}
    [m] = r["misses"]
    assert (m["line"], m["expected"], m["got"]["child"], m["got"]["reason"]) == (4, "math", "cooking", "mother")
    # the text output shows the same
    assert main(["eval", str(s), "--models", str(kit["models"])]) == 0
    out = capsys.readouterr().out
    assert "accuracy: 3/4 = 75.00%" in out and "line 4 [food]: bake a loaf of bread" in out


def test_routing_null_means_no_route_or_fallback(tmp_path, kit, capsys):
    s = write_jsonl(tmp_path / "r.jsonl", [{"text": "bake bread with yeast", "child": None},
                                          {"text": "bake bread with yeast", "child": "cooking"}])
    r = run_json(capsys, s, "--models", kit["models"])
    assert r["correct"] == 1 and r["misses"][0]["line"] == 1          # the mother is sure: cooking
    r = run_json(capsys, s, "--models", kit["models"], "--threshold", "0.999")
    assert r["correct"] == 1 and r["misses"][0]["got"] == {"child": None, "reason": "none", "confidence": r["misses"][0]["got"]["confidence"]}
    assert r["misses"][0]["line"] == 2
    r = run_json(capsys, s, "--models", kit["models"], "--threshold", "0.999", "--fallback", "weather")
    assert r["correct"] == 1 and r["misses"][0]["got"]["reason"] == "fallback"


def test_trust_refuses_unsigned_and_foreign_files(tmp_path, kit, capsys):
    d = tmp_path / "m"
    d.mkdir()
    for f in kit["models"].iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    s = write_jsonl(tmp_path / "r.jsonl", [{"text": "bake bread", "child": "cooking"}])
    make_child(d, "stray", key=None, seed=9)                       # unsigned
    assert main(["eval", str(s), "--models", str(d), "--trust", str(kit["trust"])]) == 1
    assert "stray.bullet is not signed" in capsys.readouterr().err
    os.remove(d / "stray.bullet")
    _, other = make_keys(tmp_path, "other")
    assert main(["eval", str(s), "--models", str(d), "--trust", str(other)]) == 1
    assert "which is not in the trust store" in capsys.readouterr().err
    # without --trust the files load, and the report says signatures were not checked
    r = run_json(capsys, s, "--models", d)
    assert r["correct"] == 1 and r["signatures"].startswith("not checked")


# ------------------------------------------------------------------------------------ text sets
def _expected_bits(model, ids: list[int]) -> float:
    """Each target j scored from its own window start: 0 inside the first context, else the
    window of stride ctx/2 that first holds it (prefill of the window up to j)."""
    ctx, stride = model.context, model.context // 2
    bits = 0.0
    for j in range(1, len(ids)):
        s = 0 if j < ctx else ((j - ctx) // stride + 1) * stride
        logits = model.new_session().prefill(ids[s:j], 0).astype(np.float64)
        m = logits.max()
        bits += (m + math.log(np.exp(logits - m).sum()) - logits[ids[j]]) / math.log(2)
    return bits


def test_line_bits_within_and_beyond_the_context(tmp_path):
    path = write_random_lm(tmp_path / "short.bullet", SHORT, seed=3)
    with load_model(str(path)) as model:
        tok = model.tokenizer
        for text in ("abc", "the quick brown fox jumps over the lazy dog again and again"):
            ids = tok.encode(text, bos=True) + [tok.bos_id]
            bits, n = line_bits(model, text)
            assert n == len(ids) - 1
            assert bits == pytest.approx(_expected_bits(model, ids), rel=1e-4)
        assert len(ids) > 2 * model.context          # the long line really used windows


def test_text_set_bits_per_byte_and_baselines(tmp_path, kit, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": f"bake bread number {i} with yeast"} for i in range(200)])
    s = write_jsonl(tmp_path / "t.jsonl", [{"text": "bake bread number 7 with yeast", "category": "a"},
                                           {"text": "bake bread number 8 with yeast", "category": "b"}])
    r = run_json(capsys, s, "--models", kit["models"], "--child", "cooking", "--train", train)
    assert r["kind"] == "text" and r["children"] == {"cooking": 2}
    with load_model(str(kit["models"] / "cooking.bullet")) as model:
        bits = sum(line_bits(model, t)[0] for t in ("bake bread number 7 with yeast", "bake bread number 8 with yeast"))
    nbytes = 2 * (len("bake bread number 7 with yeast") + 1)
    assert r["bytes"] == nbytes and r["bpb"] == pytest.approx(bits / nbytes, rel=1e-6)
    assert set(r["by_category"]) == {"a", "b"}
    bl = r["baselines"]
    assert set(bl) >= {"kn5", "xz", "ppmd8", "bytes", "train_bytes"} and bl["bytes"] == nbytes
    # text that repeats the training split is cheap to every baseline; a random-weight child is not
    assert 0 < bl["kn5"] < 1 and 0 < bl["xz"] < 2.5 and 0 < bl["ppmd8"] < 2.5
    assert r["best_baseline_bpb"] == min(bl["kn5"], bl["xz"], bl["ppmd8"])
    assert r["vs_best_baseline"] == pytest.approx(r["bpb"] / r["best_baseline_bpb"] - 1)
    # routed (no --child): the mother sends these lines to cooking too
    r2 = run_json(capsys, s, "--models", kit["models"])
    assert r2["children"] == {"cooking": 2} and r2["bpb"] == pytest.approx(r["bpb"]) and r2["baselines"] is None


# ------------------------------------------------------------------------------------ baselines
def test_kneser_ney_by_hand():
    # order 2 on "abab" with a "\n" history and fixed discounts (0.5, 1.0, 1.5):
    # bigrams \na:1 ab:2 ba:1; unigram continuation counts a:2 (\na, ba), b:1 (ab); V = |{\n,a,b}| + 1 = 4
    kn = CharKN("abab", order=2, discounts=(0.5, 1.0, 1.5))
    p1 = {"a": (2 - 1.0) / 3 + 0.5 / 4, "b": (1 - 0.5) / 3 + 0.5 / 4, "\n": 0.5 / 4}   # gamma = (0.5 + 1.0) / 3
    # context "a": ab:2 -> total 2, gamma = 1.0 * 1 / 2
    assert kn.prob("b", "a") == pytest.approx((2 - 1.0) / 2 + 0.5 * p1["b"])
    assert kn.prob("a", "a") == pytest.approx(0.5 * p1["a"])
    # context "\n" (the start): \na:1 -> total 1, gamma = 0.5
    assert kn.prob("a", "") == pytest.approx((1 - 0.5) + 0.5 * p1["a"])
    # context "b": ba:1
    assert kn.prob("\n", "b") == pytest.approx(0.5 * p1["\n"])
    # an unseen context falls to the unigram; an unseen character gets the unseen slot
    assert kn.prob("b", "z") == pytest.approx(p1["b"])
    assert kn.prob("z", "z") == pytest.approx(0.5 / 4)
    # cost: -log2 of the product, + 8 bits a byte for the unseen character
    assert kn.cost_bits("ab") == pytest.approx(-math.log2(kn.prob("a", "") * kn.prob("b", "a")))
    assert kn.cost_bits("é") == pytest.approx(-math.log2(kn.prob("é", "")) + 16)


def test_discounts_follow_chen_goodman():
    d1, d2, d3 = estimate_discounts({1: 10, 2: 5, 3: 3, 4: 2})
    y = 10 / (10 + 2 * 5)
    assert (d1, d2, d3) == pytest.approx((1 - 2 * y * 5 / 10, 2 - 3 * y * 3 / 5, 3 - 4 * y * 2 / 3))


def test_kneser_ney_distributions_sum_to_one():
    rng = random.Random(0)
    text = "".join(rng.choice("aabbbcde \n") for _ in range(4000)) + "xyz"
    kn = CharKN(text, order=5)
    assert all(0 < d[0] <= 1 and 0 < d[1] <= 2 and 0 < d[2] <= 3 for d in kn.discounts[1:])
    for h in ("", "abba", "b cd", "\n\n\na", "xyz", "qqqq", "e"):
        total = sum(kn.prob(c, h) for c in kn.alphabet) + kn.prob("\u0905", h)   # + the unseen slot
        assert total == pytest.approx(1.0, abs=1e-12), h


def test_compressor_costs_are_sane():
    rng = random.Random(1)
    train = join_lines(" ".join(rng.choice(["the", "cat", "sat", "on", "a", "mat", "dog"]) for _ in range(12))
                       for _ in range(400)).encode()
    seen = train[:600]
    noise = bytes(rng.randrange(256) for _ in range(4000))
    for cost in (lzma_cost, ppmd_cost):
        assert 8 * cost(train, seen) / len(seen) < 1.0           # text already in the training split
        assert 8 * cost(train, noise) / len(noise) > 7.5         # incompressible bytes
    r = text_baselines(["abc abc abc"] * 50, ["abc abc abc"])
    assert r["bytes"] == 12 and r["kn5"] < 0.5 and r["ppmd8"] is not None


# ------------------------------------------------------------------------------------ distinct
def test_distinct_share():
    assert distinct_share([[1, 2, 3, 4, 1, 2, 3, 4]]) == (0.8, 0.8)         # 1234 2341 3412 4123 1234
    pooled, mean = distinct_share([[1, 2, 3, 4], [1, 2, 3, 4, 5]])
    assert pooled == pytest.approx(2 / 3) and mean == pytest.approx(1.0)
    assert distinct_share([[1, 2]]) == (None, None)


def test_greedy_ids_match_the_trainer_and_shift_the_context(tmp_path):
    from trainer.export import greedy_ids as trainer_greedy
    path = write_random_lm(tmp_path / "short.bullet", SHORT, seed=5)
    with load_model(str(path)) as model:
        ids = model.tokenizer.encode("hello", bos=True)
        n = model.context - len(ids)
        assert greedy_ids(model, "hello", n) == trainer_greedy(model, ids, n)
        long = greedy_ids(model, "hello", 40)
        assert len(long) == 40 and long[:n] == trainer_greedy(model, ids, n)
        # at the first shift, the last half context (ending in the token that had no room) is read again
        seq = ids + long
        k = len(ids) + n + 1
        keep = seq[k - model.context // 2:k]
        assert long[n + 1] == int(np.argmax(model.new_session().prefill(keep, 0)))


def test_distinct_set(tmp_path, kit, capsys):
    s = write_jsonl(tmp_path / "p.jsonl", [{"text": "bake a loaf of bread"}, {"text": "how cold will it be tonight"}])
    r = run_json(capsys, s, "--models", kit["models"], "--distinct", "--tokens", "50")
    assert r["kind"] == "distinct" and r["tokens"] == 100 and [o["child"] for o in r["outputs"]] == ["cooking", "weather"]
    with load_model(str(kit["models"] / "cooking.bullet")) as model:
        ids = greedy_ids(model, "bake a loaf of bread", 50)
        assert r["outputs"][0]["output"] == model.tokenizer.decode(ids)
        assert r["outputs"][0]["distinct4"] == distinct_share([ids])[0]


# ------------------------------------------------------------------------------------ hassil
def test_hassil_baseline_on_the_example_home():
    from bulletd.agents.home import HomeConfig
    from bulletd.evaluate.hassil_baseline import HassilBaseline
    home = ROOT / "examples" / "home.yaml"
    hb = HassilBaseline(HomeConfig.load(home), home)
    cases = {
        "turn on the kitchen light": [{"service": "light.turn_on", "entity_id": "light.kitchen_ceiling"}],
        "set the bedroom light to 40%": [{"service": "light.turn_on", "entity_id": "light.bedroom",
                                          "data": {"brightness_pct": 40}}],
        "open the garage door": [{"service": "cover.open_cover", "entity_id": "cover.garage_door"}],
        "unlock the back door": [{"service": "lock.unlock", "entity_id": "lock.back_door"}],
        "turn off the lights in the bedroom": [{"service": "light.turn_off", "entity_id": "light.bedroom"},
                                               {"service": "light.turn_off", "entity_id": "light.bedside"}],
        "set the living room ac to 22 degrees": [{"service": "climate.set_temperature",
                                                  "entity_id": "climate.living_room_ac", "data": {"temperature": 22}}],
        "what is the temperature in the bedroom": [{"service": "get_state", "entity_id": "climate.bedroom_ac"}],
        "are the garden lights on": [{"service": "get_state", "entity_id": "light.garden"}],
    }
    for text, want in cases.items():
        got = hb.run(text)
        assert sorted(got.get("actions", []), key=str) == sorted(want, key=str), (text, got)
    assert hb.run("could you dim the bedside lamp to 20 percent")["error"] == "no_intent"


# ------------------------------------------------------------------------------------ bullet-train split
def test_trainer_split_writes_the_runs_split(tmp_path):
    from trainer.cli import main as train_main
    from trainer.config import load_config
    from trainer.data import load_jsonl, split
    cfg_path = ROOT / "trainer" / "configs" / "tiny.yaml"
    assert train_main(["split", "--config", str(cfg_path), "-o", str(tmp_path / "s"), "--prompts", "5"]) == 0
    cfg = load_config(cfg_path)
    train, val = split(load_jsonl(cfg.dataset_path).texts, cfg.validation_fraction, cfg.seed)
    read = lambda name: [json.loads(x)["text"] for x in (tmp_path / "s" / name).read_text().splitlines()]
    assert read("train.jsonl") == train and read("val.jsonl") == val
    prompts = read("prompts.jsonl")
    assert len(prompts) == 5 and all(v.startswith(p) and 0 < len(p) <= 32 for p, v in zip(prompts, val))


# ------------------------------------------------------------------------------------ agent sets
# Random-weight agent children whose header schemas allow one call each, so that the grammar makes
# their output known: calc always asks for 17*23, home always turns on the kitchen light.
ONE_CALC = {"type": "object", "properties": {"expression": {"type": "string", "enum": ["17*23"]}},
            "required": ["expression"]}
ONE_HOME = {"type": "object", "properties": {"intent": {"type": "string", "enum": ["HassTurnOn"]},
                                             "name": {"type": "string", "enum": ["kitchen light"]}},
            "required": ["intent", "name"]}
AGENT_TOPICS = {
    "calc": ["what is seven times eight", "add two and three", "divide ten by four", "multiply six by nine",
             "17 times 23", "percent of eighty"],
    "home": ["turn on the kitchen light", "switch off the fan", "open the garage door", "lock the front door",
             "dim the bedroom lamp", "set the ac to 22 degrees"],
    "story": ["once upon a time", "tell me a story", "the dragon and the princess", "a fairy tale about a fox",
              "long ago in a castle", "the old king had three sons"],
}
HOME_YAML = ROOT / "examples" / "home.yaml"
KITCHEN_ON = {"service": "light.turn_on", "entity_id": "light.kitchen_ceiling"}


@pytest.fixture(scope="module")
def agents(tmp_path_factory):
    from _daemon_util import TINY
    d = tmp_path_factory.mktemp("agents")
    key, trust = make_keys(d)
    models = d / "models"
    models.mkdir()
    for name, seed, extra in (("calc", 1, {"agent": {"tool": "calc", "schema": ONE_CALC, "template": "{text}\n=>"}}),
                              ("home", 2, {"agent": {"tool": "home", "schema": ONE_HOME, "template": "{text}\n=>"}}),
                              ("story", 3, None)):
        write_random_lm(models / f"{name}.bullet", TINY, seed=seed, name=name, extra=extra)
        from bulletd.signing import sign_file
        sign_file(models / f"{name}.bullet", key, name=name, version="1.0.0")
    make_mother(models, AGENT_TOPICS, key=key)
    return {"models": models, "trust": trust}


def test_calc_set_through_the_mother(tmp_path, agents, capsys):
    s = write_jsonl(tmp_path / "c.jsonl", [
        {"text": "what is 17 times 23", "answer": 391, "category": "digits"},
        {"text": "how much is seventeen times twenty three", "answer": 391.0000000001, "category": "words"},  # within 1e-9
        {"text": "what is 17 times 24", "answer": 408, "category": "digits"},           # the child says 391
        {"text": "once upon a time there was a fox", "answer": 1},                     # routed to a plain child
    ])
    r = run_json(capsys, s, "--models", agents["models"], "--trust", agents["trust"])
    assert (r["kind"], r["n"], r["correct"], r["accuracy"]) == ("calc", 4, 2, 0.5)
    assert r["by_category"]["digits"] == {"n": 2, "correct": 1, "accuracy": 0.5}
    assert r["by_category"]["words"] == {"n": 1, "correct": 1, "accuracy": 1.0}
    m1, m2 = r["misses"]
    assert (m1["line"], m1["expected"], m1["got"]["call"], m1["got"]["result"]["value"]) == (3, 408, {"expression": "17*23"}, 391)
    assert (m2["line"], m2["got"]["child"], m2["got"]["error"]) == (4, "story", "not_an_agent")
    assert main(["eval", str(s), "--models", str(agents["models"])]) == 0
    out = capsys.readouterr().out
    assert "accuracy: 2/4 = 50.00%" in out and "got:      calc: 17*23 = 391" in out
    # --child sends every line to calc, the story line included
    r = run_json(capsys, s, "--models", agents["models"], "--child", "calc")
    assert r["correct"] == 2 and [m["line"] for m in r["misses"]] == [3, 4]


def test_home_set_with_the_hassil_baseline(tmp_path, agents, capsys):
    s = write_jsonl(tmp_path / "h.jsonl", [
        {"text": "turn on the kitchen light", "expect": [KITCHEN_ON], "category": "plain"},
        {"text": "switch the kitchen light on", "expect": [dict(KITCHEN_ON, data={})], "category": "plain"},
        {"text": "kitchen light on, thanks a lot mate", "expect": [KITCHEN_ON], "category": "chatty"},
        {"text": "set the kitchen light to 40%", "category": "plain",
         "expect": [dict(KITCHEN_ON, data={"brightness_pct": 40})]},              # the child cannot dim
    ])
    assert main(["eval", str(s), "--models", str(agents["models"])]) == 1
    assert "a home set needs --home FILE" in capsys.readouterr().err
    r = run_json(capsys, s, "--models", agents["models"], "--home", HOME_YAML, "--baseline", "hassil")
    assert (r["kind"], r["correct"]) == ("home", 3)
    [m] = r["misses"]
    assert m["line"] == 4 and m["got"]["actions"] == [KITCHEN_ON] and m["got"]["child"] == "home"
    b = r["baseline"]
    assert b["name"] == "hassil" and "home-assistant-intents" in b["version"]
    # Home Assistant's templates know lines 1, 2 and 4 but not the chatty one
    assert b["correct"] == 3 and [x["line"] for x in b["misses"]] == [3]
    assert b["by_category"]["chatty"] == {"n": 1, "correct": 0, "accuracy": 0.0}
    assert main(["eval", str(s), "--models", str(agents["models"]), "--home", str(HOME_YAML), "--baseline", "hassil"]) == 0
    out = capsys.readouterr().out
    assert "accuracy: child 3/4 = 75.00%; hassil 3/4 = 75.00% (hassil " in out and "hassil misses (1):" in out


def test_without_pyppmd_the_report_says_so(monkeypatch):
    import bulletd.evaluate.baselines as bl
    from bulletd.evaluate.report import format_report
    monkeypatch.setattr(bl, "ppmd_available", lambda: False)
    r = bl.text_baselines(["abc abc"] * 20, ["abc abc"])
    assert r["ppmd8"] is None and "pyppmd is not installed" in r["ppmd_note"]
    rep = {"set": "t.jsonl", "kind": "text", "n": 1, "models": "m", "signatures": "checked", "child": "x",
           "children": {"x": 1}, "bpb": 1.0, "bytes": 8, "tokens": 3, "baselines": r, "by_category": {},
           "misses": [], "best_baseline_bpb": r["kn5"], "vs_best_baseline": 0.5}
    out = format_report(rep)
    assert "ppmd8 -" in out and "ppmd8: pyppmd is not installed" in out


def test_a_line_the_child_cannot_take_is_a_miss_not_the_end(tmp_path, agents, capsys):
    s = write_jsonl(tmp_path / "c.jsonl", [{"text": "what is " + "1+" * 100 + "1", "answer": 101},
                                          {"text": "what is 17 times 23", "answer": 391}])
    r = run_json(capsys, s, "--models", agents["models"], "--child", "calc")
    assert r["correct"] == 1 and r["misses"][0]["got"]["error"] == "too_long"
