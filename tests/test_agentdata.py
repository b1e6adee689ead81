"""The agent data generators (trainer/agentdata): determinism, calls that hold what the utterance
says, numbers in every spelling, the example home's `expect`, and train/test pools that never
meet (no test template, verb or filler word appears in training output)."""
import json
import random
import re
from fractions import Fraction
from pathlib import Path

import pytest

from trainer.agentdata import TEMPLATE, calc, home, numbers, routing, training_text
from bulletd.agents.numerals import plain
from trainer.agentdata.cli import run as cli_run

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def example_home(shared_dir):
    p = ROOT / "examples" / "home.yaml"
    if not p.is_file():
        p = shared_dir / "home" / "example_home.yaml"
    return home.Home.load(p)


# -- numbers -------------------------------------------------------------------------------------

def test_number_spellings():
    assert numbers.say(42, "en_words") == "forty two"
    assert numbers.say(17, "mr_words") == "सतरा"
    assert numbers.say(325, "mr_words") == "तीनशे पंचवीस"
    assert numbers.say(2024, "en_words") == "two thousand twenty four"
    assert numbers.say(24, "deva") == "२४"
    assert numbers.say(22.5, "digits") == "22.5"
    assert len(set(numbers.MR_0_100)) == 101           # a distinct Marathi word for every number to 100
    assert len({numbers.en_words(n) for n in range(10000)}) == 10000
    with pytest.raises(ValueError):
        numbers.say(2.5, "en_words")


# -- home ----------------------------------------------------------------------------------------

def _words(text):
    return set(re.findall(r"[\w\u0900-\u097f']+", text.casefold()))


def _template_words(pool):
    out = set()
    for lang in pool.values():
        for tpls in lang.values():
            for t in tpls:
                t = t[0] if isinstance(t, tuple) else t
                out |= _words(re.sub(r"\{\w+\}", " ", t))
    return out


def _filler_words(pre, post, split):
    return set().union(*(_words(f) for d in (pre[split], post[split]) for fs in d.values() for f in fs))


def _vocabulary_words():
    out = set()
    for lst in (home.EN_AREAS, home.MR_AREAS, home.EN_ADJ, home.PEOPLE_EN, home.PEOPLE_MR):
        for w in lst:
            out |= _words(w)
    for d in (home.EN_DEVICES, home.EN_PLURAL, home.EN_SINGULAR, home.MR_PLURAL, home.MIXED_WORD):
        for ws in d.values():
            out |= set().union(*(_words(w) for w in ws))
    for ws in home.MR_DEVICES.values():
        out |= set().union(*(_words(w) for w, _ in ws))
    for forms in home.MR_ADJ:
        out |= set().union(*(_words(w) for w in forms))
    return out


def test_home_lines_are_deterministic_and_calls_copy_the_utterance():
    a = list(home.generate("train", 400, seed=5))
    assert a == list(home.generate("train", 400, seed=5))
    assert a != list(home.generate("train", 400, seed=6))
    intents = set()
    for line in a:
        call = line["call"]
        intents.add(call["intent"])
        assert list(call) == [k for k in home.KEY_ORDER if k in call]          # contract key order
        assert "name" in call or "area" in call
        for k in ("name", "area"):
            if k in call:
                assert call[k] in line["text"], (k, line)                       # copied verbatim
        assert line["category"] in ("en", "mr", "mixed")
        t = training_text(line["text"], call)
        assert t == TEMPLATE.format(text=line["text"]) + json.dumps(call, ensure_ascii=False, separators=(",", ":"))
    assert intents == set(home.INTENTS)


def test_home_training_calls_name_whole_words():
    """The grammar lets a name or area copy only whole words ("x-copy": "words"): training calls
    name exactly that, case endings included ("स्वयंपाकघरातील"), and the data has those endings,
    names made of unknown words, and chatter words that are no word of any template."""
    from bulletd.runtime.grammar import compile_schema

    lines = list(home.generate("train", 3000, seed=4))
    endings = 0
    for x in lines:
        g = compile_schema(home.SCHEMA, copy_source=x["text"])
        assert g.accepts(json.dumps(x["call"], ensure_ascii=False, separators=(",", ":"))), x
        endings += any(x["call"].get("area", "").endswith(e) for e in home.LOCATIVE)
    assert endings > 30
    rng = random.Random(1)
    added = set()
    for i in range(300):
        keep = ["बागेतले दिवे", "२०"]
        text = home.chatter(rng, "जरा बागेतले दिवे २० वर ठेव", keep, p=1.0)
        assert all(k in text for k in keep), text
        added |= _words(text) - _words("जरा बागेतले दिवे २० वर ठेव")
    assert len(added) > 100 and not added & home.banned_words()


def test_home_resolve_strips_marathi_case_endings(example_home):
    assert home.resolve({"intent": "HassTurnOff", "area": "स्वयंपाकघरातील", "domain": "light"}, example_home) == \
        home.resolve({"intent": "HassTurnOff", "area": "स्वयंपाकघर", "domain": "light"}, example_home)
    assert home.resolve({"intent": "HassTurnOn", "name": "बेडरूममधला दिवाला"}, example_home) == \
        [{"service": "light.turn_on", "entity_id": "light.bedroom"}]


def test_home_numbers_come_in_every_spelling():
    lines = [x for x in home.generate("train", 3000, seed=1) if x["kind"] in ("light_set", "temp_set", "position")]
    texts = " ".join(x["text"] for x in lines)
    assert re.search(r"[०-९]", texts) and re.search(r"\d", texts)
    bright = [x for x in lines if "brightness" in x["call"]]
    assert any(numbers.en_words(x["call"]["brightness"]) in x["text"] for x in bright if x["category"] == "en")
    assert any(numbers.mr_words(x["call"]["brightness"]) in x["text"] for x in bright)
    for x in lines:   # the value in the call is the value in the text, whatever the spelling
        v = x["call"].get("brightness", x["call"].get("temperature", x["call"].get("position")))
        spelled = [numbers.say(v, "digits"), numbers.say(v, "deva")]
        if float(v).is_integer():
            spelled += [numbers.en_words(int(v)), numbers.mr_words(int(v))]
        assert any(s in x["text"] for s in spelled), x


def test_home_test_split_never_uses_training_templates_or_fillers():
    for lang in ("en", "mr", "mixed"):
        for action in home.T["train"][lang]:
            train = set(home.T["train"][lang][action])
            assert not set(home.T["test"][lang][action]) & train and not set(home.T["novel"][lang][action]) & train
    markers = (_template_words(home.T["test"]) | _template_words(home.T["novel"])
               | _filler_words(home.PRE, home.POST, "test")) \
        - _template_words(home.T["train"]) - _filler_words(home.PRE, home.POST, "train") - _vocabulary_words()
    assert {"kill", "activate", "विझव", "पेटव", "kindly", "अरे", "needs", "आता"} <= markers
    for line in home.generate("train", 4000, seed=2):
        hit = _words(line["text"]) & markers
        assert not hit, (hit, line["text"])


def test_home_expect_on_the_example_home(example_home):
    assert home.resolve({"intent": "HassTurnOff", "name": "kitchen light"}, example_home) == \
        [{"service": "light.turn_off", "entity_id": "light.kitchen_ceiling"}]
    assert home.resolve({"intent": "HassLightSet", "name": "floor lamp", "brightness": 40}, example_home) == \
        [{"service": "light.turn_on", "entity_id": "light.floor_lamp", "data": {"brightness_pct": 40}}]
    assert [c["entity_id"] for c in home.resolve({"intent": "HassTurnOn", "area": "किचन", "domain": "light"},
                                                 example_home)] == ["light.kitchen_ceiling", "light.kitchen_counter"]
    with pytest.raises(ValueError):
        home.resolve({"intent": "HassTurnOn", "name": "spaceship"}, example_home)
    names = {n for e in example_home.entities for n in e.names} | {n for ns in example_home.areas.values() for n in ns}
    lines = list(home.generate("test", 1500, seed=3, home=example_home))
    cats = {x["category"] for x in lines}
    assert cats == {"en", "mr", "mixed", "en-novel", "mr-novel", "mixed-novel"}
    for x in lines:
        assert x["expect"] == home.resolve(x["call"], example_home) and x["expect"]
        for k in ("name", "area"):
            if k in x["call"]:
                assert x["call"][k] in names and x["call"][k] in x["text"]
    assert sum(bool(x.get("typo")) for x in lines) > 100


# -- calc ----------------------------------------------------------------------------------------

def test_calc_lines_answer_their_expression():
    lines = list(calc.generate("train", 3000, seed=4))
    assert lines == list(calc.generate("train", 3000, seed=4))
    kinds = {x["kind"] for x in lines}
    assert kinds == set(calc.KINDS)
    assert {x["category"] for x in lines} == {"digits", "words", "mr_digits", "deva_digits", "mr_words"}
    for x in lines:
        e = x["call"]["expression"]           # the numbers as typed, one space around every item
        assert e == " " + " ".join(e.split()) + " ", e
        p = plain(e)
        assert re.fullmatch(r"[0-9.+\-*/^%()]+", p), (e, p)                      # ASCII, no spaces
        v = calc.evaluate(p)
        assert abs(float(v) - x["answer"]) <= 1e-9 * max(1, abs(x["answer"]))
    digits = [len(n) for x in lines for n in re.findall(r"[0-9]+", plain(x["call"]["expression"]))]
    assert max(digits) == 5 and sum(d >= 4 for d in digits) > len(digits) / 6     # long numbers are common
    assert sum(bool(re.search("[\u0905-\u0939]", x["call"]["expression"]))
               for x in lines if x["category"] == "mr_words") > 100              # Marathi words copied as typed
    assert calc.evaluate("15%*80") == 12 and calc.evaluate("(2+3)*4^2") == 80
    assert calc.evaluate("7/4") == Fraction(7, 4) and calc.evaluate("-2^2") == -4


def test_calc_test_split_never_uses_training_templates_or_fillers():
    for lang in ("en", "mr"):
        for kind in calc.KINDS:
            train = {t for t, _ in calc.T["train"][lang][kind]}
            for pool in ("test", "novel"):
                assert not {t for t, _ in calc.T[pool][lang][kind]} & train
    markers = (_template_words(calc.T["test"]) | _template_words(calc.T["novel"])
               | _filler_words(calc.PRE, calc.POST, "test")) \
        - _template_words(calc.T["train"]) - _filler_words(calc.PRE, calc.POST, "train")
    num_words = {w for n in range(1000) for w in _words(numbers.en_words(n) + " " + numbers.mr_words(n))}
    markers = {w for w in markers - num_words - {"and", "आणि"} if not w.isdigit()}   # list separators, numbers
    assert {"subtract", "divide", "product", "मिळव", "होतात", "much"} <= markers
    for line in calc.generate("train", 4000, seed=2):
        assert not _words(line["text"]) & markers, line["text"]


# -- routing and the command line -----------------------------------------------------------------

def test_routing_lines_and_disjoint_reject_pools(tmp_path):
    src = tmp_path / "m.jsonl"
    src.write_text("".join(json.dumps({"text": f"ओळ क्रमांक {i} येथे आहे"}, ensure_ascii=False) + "\n"
                           for i in range(50)), encoding="utf-8")
    lines = list(routing.generate("train", 600, seed=1, sources={"marathi": src}))
    assert {x["child"] for x in lines} == {"home", "calc", "marathi", None}
    for x, y in (("train", "test"), ("dev", "test"), ("train", "dev")):
        assert not set(routing.NONE_FRAMES[x]) & set(routing.NONE_FRAMES[y]), (x, y)
        for child in ("fortunes", "marathi"):
            assert not set(routing.REQUESTS[x][child]) & set(routing.REQUESTS[y][child]), (x, y, child)
    test_texts = {x["text"] for x in routing.generate("test", 600, seed=1, sources={"marathi": src})
                  if x["child"] == "marathi" and x["category"] == "marathi"}
    train_texts = {x["text"] for x in lines if x["child"] == "marathi" and x["category"] == "marathi"}
    assert test_texts and train_texts and not test_texts & train_texts       # other corpus records
    train_none = {x["text"] for x in routing.generate("train", 3000, seed=1) if x["child"] is None}
    test_none = {x["text"] for x in routing.generate("test", 1500, seed=7) if x["child"] is None}
    assert len(train_none) > 300 and test_none and not train_none & test_none
    with pytest.raises(ValueError, match="routing sources"):
        list(routing.generate("train", 1, sources={"recipes": src}))
    dev = list(routing.generate("dev", 600, seed=3, sources={"marathi": src}))
    dev_texts = {x["text"] for x in dev if x["category"] == "marathi"}
    assert dev_texts and not dev_texts & (train_texts | test_texts)   # a third slice of the corpus
    dev_none = {x["text"] for x in dev if x["child"] is None}
    assert dev_none and not dev_none & test_none
    # dev re-phrases home commands and sums in frames of its own: the threshold meets unseen phrasings
    for dev_pool, train_pool in ((routing.DEV_HOME_EN, routing.HOME_EN), (routing.DEV_HOME_MR, routing.HOME_MR)):
        assert not set(routing._strings(dev_pool)) & set(routing._strings(train_pool))
    assert not set(routing.DEV_CALC_FRAMES) & set(routing.CALC_FRAMES)
    dev_agent = " | ".join(x["text"] for x in dev if x["child"] in ("home", "calc"))
    train_agent = " | ".join(x["text"] for x in lines if x["child"] in ("home", "calc"))
    for mark in ("if you can", "असू दे", "comes to what"):      # words of dev frames alone
        assert mark in dev_agent and mark not in train_agent, mark


def test_routing_train_and_dev_pools_hold_no_word_of_the_test_phrasings():
    """Each pool the mother's training and dev lines are phrased from avoids the words that only
    the test split's phrasings of its label use (the home and calc test and novel verbs, the
    reject and request test frames): the test figures stay on unseen phrasings."""
    banned = {lab: routing.banned_words(lab) for lab in ("home", "calc", "none", "fortunes", "marathi")}
    assert {"disable", "activate", "kill"} <= banned["home"] and {"raised", "much", "multiply"} <= banned["calc"]
    assert {"sunny", "wake", "headlines", "उठव", "थंडी"} <= banned["none"] and "predict" in banned["fortunes"]
    for lab, pools in routing.train_pools().items():
        words = banned[lab] if lab else routing.banned_words()
        for text in routing._strings(pools):
            assert not routing._words(text) & words, (lab, text, routing._words(text) & words)
    lines = list(routing.generate("train", 3000, seed=2))
    for lab in ("home", "calc"):
        for x in lines:
            if x["child"] == lab:
                assert not routing._words(x["text"]) & banned[lab], x


def test_cli_writes_training_lines(tmp_path):
    import argparse

    out = tmp_path / "h.jsonl"
    args = argparse.Namespace(kind="home", split="train", n=50, seed=1, home=None, source=None,
                              for_training=True, output=str(out))
    assert cli_run(args) == 0
    recs = [json.loads(s) for s in out.read_text(encoding="utf-8").splitlines()]
    assert len(recs) == 50 and all(set(r) == {"text"} and "\n=>{\"intent\":" in r["text"] for r in recs)
    args.kind, args.output = "routing", str(tmp_path / "r.jsonl")
    assert cli_run(args) == 0
    labels = {json.loads(s)["label"] for s in (tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines()}
    assert labels == {"home", "calc", routing.REJECT}


def test_training_corpus_pieces_leave_out_test_only_words(tmp_path):
    """A corpus piece in the mother's training lines holds no word that only the test split's
    phrasings use ("would", "check": otherwise a sign of fortunes alone); the test split's corpus
    lines stay as the corpus has them. A fifth of the Marathi training pieces are 1-3 words."""
    src = tmp_path / "f.jsonl"
    src.write_text("".join(json.dumps({"text": f"you would check the old oak tree {i} times before noon"}) + "\n"
                           for i in range(40)), encoding="utf-8")
    mr = tmp_path / "m.jsonl"
    mr.write_text("".join(json.dumps({"text": f"ओळ क्रमांक {i} येथे आहे आणि पुढे खूप मजकूर आहे"}, ensure_ascii=False)
                          + "\n" for i in range(40)), encoding="utf-8")
    assert {"would", "check"} <= set().union(*map(routing.banned_words, ("home", "calc", "none", "fortunes")))
    train = [x for x in routing.generate("train", 1500, seed=1, sources={"fortunes": src, "marathi": mr})
             if x["category"] in ("fortunes", "marathi")]
    fortunes = [x["text"] for x in train if x["category"] == "fortunes"]
    assert fortunes and not any({"would", "check"} & routing._words(t) for t in fortunes)
    assert any("oak tree" in t for t in fortunes)
    short = [t for t in (x["text"] for x in train if x["category"] == "marathi") if len(t.split()) <= 3]
    assert 0.1 < len(short) / sum(x["category"] == "marathi" for x in train) < 0.35
    test = [x["text"] for x in routing.generate("test", 600, seed=1, sources={"fortunes": src})
            if x["category"] == "fortunes"]
    assert any("would check" in t for t in test)
