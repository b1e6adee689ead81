"""bulletd.agents.calcinput: the number spans a calc call may copy, operator typos spelled right
before the child reads them, and both on bulletd's calc path (run_agent with a random-weight child:
whatever it writes, the expression copies only whole numbers of the utterance)."""
import itertools
import json
import random
import re

import pytest

from bulletd.agents.agent import AgentContext, run_agent
from bulletd.agents.calcinput import allowed_spans, fix_operators, number_spans, request_spans
from bulletd.agents.numerals import plain
from bulletd.agents.tools import TOOLS
from bulletd.errors import RequestError
from bulletd.format.synth import write_random_lm
from bulletd.runtime import load_model
from bulletd.runtime.grammar import MAX_SPANS, compile_schema
from trainer.agentdata import calc
from trainer.agentdata.numbers import en_words, mr_words, to_deva


@pytest.mark.parametrize("text, spans", [
    ("divide (8293 minus 466) by 687", ["8293", "466", "687"]),
    ("what is 17 times 23", ["17", "23"]),
    ("fifty nine plus चारशे तेरा?", ["fifty nine", "चारशे तेरा"]),
    ("२४ चे ३.६ टक्के", ["२४", "३.६"]),
    ("2.5 times three hundred and twenty-five", ["2.5", "three hundred and twenty-five", "three hundred", "twenty-five"]),
    ("the sum of forty-two, 7 and 3.25", ["forty-two", "7", "3.25"]),
    ("twenty and five", ["twenty", "five"]),                # "and" joins only after hundred or thousand
    ("nine fifty", ["nine", "fifty"]),                      # no number is said in that order: two numbers
    ("5 hundred plus 2", ["5 hundred", "2"]),               # digits before a scale word
    ("17 23", ["17", "23"]),
    ("sxiteen divided by there  thousand six", ["sxiteen", "there thousand six"]),   # typos read back
    ("दोन हजार पाच भागिले पाच", ["दोन हजार पाच", "पाच"]),
    ("what time is it", []),
    ("seventeen, and", ["seventeen"]),
])
def test_number_spans(text, spans):
    assert number_spans(text) == spans


def _copyable(line) -> bool:
    """The line's right call, its numbers copied from the (fixed) utterance as typed (a number
    the generator wrote with a typo in the text is its span there), is a document of bulletd's
    grammar for the utterance."""
    text = fix_operators(line["text"])
    sp = request_spans(text)
    g = compile_schema(TOOLS["calc"].schema, copy_source=text, spans=sp)
    spans = [x.decode() for x in sp.items]
    toks = []
    for w in line["call"]["expression"].split():          # " ( forty-two + 7 ) / 2 "
        if w not in "+-*/^%()" and toks and toks[-1] not in "+-*/^%()":
            toks[-1] += " " + w
        else:
            toks.append(w)
    choices = [[t] if t in "+-*/^%()" else sorted({x for x in spans if plain(x) == plain(t)}, key=lambda x: x != t)
               for t in toks]
    for pick in itertools.islice(itertools.product(*choices), 64):
        if g.accepts(json.dumps({"expression": " " + " ".join(pick) + " "}, ensure_ascii=False, separators=(",", ":"))):
            return True
    return False


def test_rules_never_block_the_right_call():
    """Every held-out line's right call passes bulletd's rules for its utterance (each number
    used once, the constants its words ask for, the operators its words ask for), typos
    included. Training lines carry noise that can damage an operator word past the fix ("hlf",
    "cued"): a few of those lose their constant or their operator."""
    test = list(calc.generate("test", 600, seed=11))
    assert [line["text"] for line in test if not _copyable(line)] == []
    train = list(calc.generate("train", 600, seed=11))
    assert sum(map(_copyable, train)) >= 0.99 * len(train)


def test_every_number_is_one_span():
    rng = random.Random(3)
    for _ in range(300):
        v = rng.randint(0, 9999)
        for shown in (en_words(v), mr_words(v), to_deva(str(v)), str(v)):
            assert number_spans(f"what is {shown} plus 7") == [shown, "7"]


def _rules(text):
    sp = request_spans(text)
    return [x.decode() for x in sp.items], [list(g) for g in sp.need], sp.arithmetic and \
        "".join(sorted(chr(b) for b in sp.binary) + ["%"] * sp.percent), bytes(sp.needed).decode(), sorted(sp.tail)


@pytest.mark.parametrize("text, spans, need, ops, needed, tail", [
    ("what is 17 times 23", ["17", "23"], [[0], [1]], "*", "", []),            # no "( 17 * 23 ) / 2"
    ("5 times 5", ["5", "5"], [[0], [1]], "*", "", []),
    ("average of 4, 8 and 15", ["4", "8", "15", "3"], [[0], [1], [2], [3]], "+/", "", [3]),   # divided by the count
    ("mean of 1, 2, 3, 4, 5, 6", ["1", "2", "3", "4", "5", "6", "6"], [[0], [1], [2], [3], [4], [5], [6]], "+/", "", [6]),
    ("hi there, the mean of 691, 72 and 3", ["there", "691", "72", "3", "3", "4"], [[1], [2], [3], [4, 5]], "+/", "", [4, 5]),
    ("two times seven", ["two", "2", "seven"], [[2]], "*", "", []),           # a lone "two" may go unused: " seven * 2 "
    ("one half of 8", ["one", "8", "2"], [[1], [2]], "/", "", [2]),            # the "one" may go unused
    ("half of two", ["two", "2", "2"], [[2]], "/", "", [2]),
    ("9 squared", ["9", "2"], [[0], [1]], "^", "", [1]),
    ("5 cubed", ["5", "3"], [[0], [1]], "^", "", [1]),
    ("२४ चा पाव भाग", ["२४", "4"], [[0], [1]], "/", "", [1]),
    ("sum of eight hundred and three", ["eight hundred and three", "eight hundred", "three"], [[0, 1], [0, 2]], "+", "", []),
    ("what is 15 percent of 80", ["15", "80"], [[0], [1]], "*%", "%", []),
    ("15% of 80", ["15", "80"], [[0], [1]], "*%", "%", []),
    ("(3 + 4) * 2", ["3", "4", "2"], [[0], [1], [2]], "*+", "", []),
    ("7 raised to 3", ["7", "3"], [[0], [1]], "^", "", []),
    ("७९०७३ मधून ३ काढ", ["७९०७३", "३"], [[0], [1]], "-", "", []),
    ("17 and 23", ["17", "23"], [[0], [1]], "*+-/^%", "", []),                  # no operator word: any operator
    ("४८ चा चौथा हिस्सा", ["४८", "4"], [[0], [1]], "/", "", [1]),                 # an operator word is no number
    ("hello", [], [], False, "", []),
])
def test_request_spans(text, spans, need, ops, needed, tail):
    assert _rules(text) == (spans, need, ops, needed, tail)     # tail: constants and an average's count come last


def test_allowed_spans_fall_back_when_the_numbers_do_not_fit():
    assert allowed_spans("average of 4, 8 and 15") == ["4", "8", "15", "3"]
    many = request_spans("average of " + ", ".join(["12"] * 500))      # a long average still gets a grammar
    assert not many.arithmetic and not many.need and len(many.items) <= MAX_SPANS
    assert compile_schema(TOOLS["calc"].schema, spans=many).accepts(json.dumps({"expression": "+".join(["12"] * 50)}, separators=(",", ":")))


@pytest.mark.parametrize("text, fixed", [
    ("what is 35670 tiems 746", "what is 35670 times 746"),
    ("8293 minsu 466", "8293 minus 466"),
    ("how much is doubel 8760", "how much is double 8760"),
    ("tiwce 801", "twice 801"),
    ("the avergae of 3, 4", "the average of 3, 4"),
    ("sixty percnet of seventy", "sixty percent of seventy"),
    ("5 plsu 4", "5 plus 4"),                               # four letters: two swapped
    ("५ गुनिले ७", "५ गुणिले ७"),
    ("what time is it", "what time is it"),                 # "time": four letters, not a swap
    ("5 lower than 7", "5 lower than 7"),                   # common words are kept
    ("fourty minus fiften", "fourty minus fiften"),         # number words are never touched
    ("sevne plus nien", "sevne plus nien"),
    ("5 timse 4 and 5 tmies 3", "5 times 4 and 5 times 3"),
    ("7 squarde", "7 squared"),                             # of "squared" and "square", the one as long
])
def test_fix_operators(text, fixed):
    assert fix_operators(text) == fixed


ARCH = dict(dim=64, n_layers=2, n_heads=2, n_kv_heads=2, hidden_dim=128, vocab_size=320, max_seq_len=256)


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    p = tmp_path_factory.mktemp("calc") / "calc.bullet"
    write_random_lm(p, ARCH, seed=5, name="calc", extra={"agent": {"tool": "calc", "schema": TOOLS["calc"].schema}})
    m = load_model(p)
    yield m
    m.close()


def test_calc_calls_copy_only_whole_numbers(child, monkeypatch):
    """Whatever a (random) child writes, the call holds only whole numbers of the fixed utterance."""
    from bulletd.agents import agent
    assert TOOLS["calc"].schema["properties"]["expression"]["x-copy"] == "spans"
    monkeypatch.setattr(agent, "run_tool", lambda tool, call, ctx: ({}, []))   # any expression is kept
    seen = set()
    for seed in range(12):
        out = run_agent(child, "what is 17 tiems 4663 minsu 466", {"seed": seed, "temperature": 1.5, "max_tokens": 230}, AgentContext())
        expr = json.loads(out["text"])["expression"]
        left = ["17", "4663", "466"]
        for w in re.split(r"[ -/:-@\[-`{-~]+", expr):
            if not w:
                continue
            assert w in left, (expr, w)
            left.remove(w)          # each at most once
            seen.add(w)
    assert len(seen) >= 3           # the random child does copy numbers


@pytest.mark.parametrize("text, want", [
    ("१२ गुणिले ७", True), ("सात अधिक नऊ", True), ("9+4", True), ("3 tiems 4", True),
    ("४० निम्मे", True), ("double 8", True), ("what is eighteen squared", True),
    ("send 500 rupees to ravi", False), ("wake me at 6 30", False), ("call 98220 12345", False),
    ("5 plus", False), ("tell me a fortune", False), ("half the lights", False)])
def test_is_arithmetic_is_the_calc_childs_routing_hint(text, want):
    from bulletd.agents.calcinput import is_arithmetic
    assert is_arithmetic(text) is want
