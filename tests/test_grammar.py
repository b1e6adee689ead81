"""Structured output (bulletd.runtime.grammar): schema errors, the byte automaton against an
independent validator (json + jsonschema), token masks against a brute-force walk on small
random vocabularies (multi-byte Devanagari pieces, split UTF-8 pieces, byte tokens), 1,000 seeded
generations from random-weight models that all parse and validate, and masked sampling.

    pytest tests/test_grammar.py -q
"""
import datetime as dt
import json
import random
import unicodedata

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from bulletd.format import write_bullet
from bulletd.format.synth import random_lm_tensors
from bulletd.format.tokenizer import TOKEN_BYTE, TOKEN_CONTROL, TOKEN_NORMAL, VocabEntry
from bulletd.runtime import GenerationSettings, load_model
from bulletd.runtime.grammar import (GrammarError, Spans, Vocab, compact_json, compile_schema,
                                     grammar_for_request, json_grammar)
from bulletd.runtime.sampling import Sampler

INTENTS = ["HassTurnOn", "HassTurnOff", "HassToggle", "HassLightSet", "HassClimateSetTemperature",
           "HassSetPosition", "HassGetState", "HassOpenCover", "HassCloseCover", "HassLockLock",
           "HassLockUnlock"]
HOME = {
    "type": "object",
    "properties": {
        "intent": {"enum": INTENTS},
        "name": {"type": "string", "x-copy": True, "maxLength": 64},
        "area": {"type": "string", "x-copy": True, "maxLength": 64},
        "domain": {"enum": ["light", "switch", "fan", "climate", "cover", "lock", "media_player", "sensor"]},
        "brightness": {"type": "integer", "minimum": 0, "maximum": 100},
        "temperature": {"type": "number", "minimum": -50, "maximum": 100},
        "position": {"type": "integer", "minimum": 0, "maximum": 100},
    },
    "required": ["intent"],
    "anyOf": [{"required": ["name"]}, {"required": ["area"]}],
    "additionalProperties": False,
}
# the shipped home schema's copy rule: names and areas copy whole words of the utterance
HOME_WORDS = {**HOME, "properties": {k: ({**v, "x-copy": "words"} if v.get("x-copy") else v)
                                     for k, v in HOME["properties"].items()}}
CALC = {"type": "object", "properties": {"expression": {"type": "string", "maxLength": 40}},
        "required": ["expression"], "additionalProperties": False}
MIXED = {"anyOf": [
    {"type": "object", "properties": {
        "kind": {"const": "list"},
        "items": {"type": "array", "items": {"type": "integer", "minimum": -5, "maximum": 12},
                  "minItems": 1, "maxItems": 4},
        "flag": {"type": "boolean"}},
     "required": ["kind", "items"]},
    {"type": "object", "properties": {
        "kind": {"const": "point"},
        "x": {"type": "number", "exclusiveMinimum": -1.5, "maximum": 2.25},
        "label": {"type": ["string", "null"], "minLength": 1, "maxLength": 5},
        "tag": {"enum": [1, "one", True, None, 2.5]}},
     "required": ["kind", "x", "tag"]},
]}
SOURCES = ["turn on the kitchen light to 40%", "किचन की लाइट बंद करो", "set bedroom fan to 3",
           "open the garage door", "ताप 21.5 करो in the living room"]


def check_doc(schema, text: str, source: str = "") -> None:
    """Independent check of a complete document: compact JSON, properties in schema order,
    valid against the schema (jsonschema), x-copy strings substrings of the source."""
    value = json.loads(text)
    assert compact_json(value) == text or _compact(text), text
    jsonschema.validate(value, schema)
    _check_copy(schema, value, source)


def _compact(text: str) -> bool:
    """No whitespace outside strings (numbers may be spelled 2.50 where compact_json writes 2.5)."""
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in " \t\r\n":
            return False
    return True


def _check_copy(schema, value, source):
    if isinstance(value, dict):
        props = schema.get("properties", {})
        if "anyOf" in schema and not props:
            return
        assert list(value) == [k for k in props if k in value], "properties out of schema order"
        for k, v in value.items():
            sub = props[k]
            if sub.get("x-copy"):
                assert v in source, f"{k}={v!r} is not a substring of {source!r}"
                assert sub["x-copy"] != "words" or _whole_words(v, source), f"{k}={v!r} cuts a word of {source!r}"
            _check_copy(sub, v, source)


def _word(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LMN" or ch in "\u200c\u200d"


def _whole_words(v: str, source: str) -> bool:
    """v is empty, or occurs in source from the first character of a word to the last of one."""
    if not v:
        return True
    i = source.find(v)
    while i >= 0:
        j = i + len(v)
        if _word(v[0]) and _word(v[-1]) and (i == 0 or not _word(source[i - 1])) and \
                (j == len(source) or not _word(source[j])):
            return True
        i = source.find(v, i + 1)
    return False


# ---------------------------------------------------------------------------------------------
# schemas: errors name the path; the subset is accepted
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("schema, words", [
    ({"type": "integer", "minimum": 5, "maximum": 1}, ["#", "minimum 5 > maximum 1"]),
    ({"type": "object", "properties": {"a": {"type": "number", "minimum": 3, "maximum": -3}}},
     ["#/properties/a", "minimum"]),
    ({"enum": []}, ["#/enum", "empty"]),
    ({"type": "string", "enum": [1, 2]}, ["#/enum", "no value"]),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]},
     ["#/required", "'b'"]),
    ({"type": "object", "properties": {"s": {"type": "string", "pattern": "x"}}},
     ["#/properties/s", "pattern"]),
    ({"type": "object", "properties": {"t": {"type": "date"}}}, ["#/properties/t/type", "date"]),
    ({"type": "string", "minLength": 5, "maxLength": 2}, ["minLength 5 > maxLength 2"]),
    ({"type": "string", "maxLength": 10 ** 6}, ["#/maxLength", "limit"]),
    ({"type": "array", "items": {"type": "integer"}, "maxItems": 1, "minItems": 3}, ["minItems"]),
    ({"type": "integer", "exclusiveMinimum": 1, "exclusiveMaximum": 2}, ["no integer"]),
    ({"type": "object", "properties": {f"p{i}": {"type": "null"} for i in range(100)}},
     ["#/properties", "limit"]),
    ({"type": "object", "properties": {"a": {"type": "null"}}, "anyOf": [{"required": ["z"]}]},
     ["#/anyOf/0/required", "'z'"]),
    ({"anyOf": [{"type": "null"}], "minimum": 3}, ["anyOf cannot be combined"]),
    ({"type": "object", "additionalProperties": {"type": "string"}}, ["additionalProperties"]),
    ({"type": "object", "properties": {"a": {"type": "string", "x-copy": "yes"}}}, ["#/properties/a/x-copy"]),
    ({"type": "object", "properties": {"a": {"type": "string", "x-copy": "word"}}}, ["#/properties/a/x-copy", "words"]),
    ({"not": {"type": "null"}}, ["no type"]),
    # a type that is not a string (found by python -m bulletd.fuzz grammar: TypeError)
    ({"type": {"type": "object"}}, ["#/type", "unsupported type"]),
    ({"type": "object", "properties": {"a": {"type": ["string", ["null"]]}}}, ["#/properties/a/type"]),
    ({"type": [{"a": 1}, "null"]}, ["unsupported type"]),
])
def test_impossible_or_unsupported_schema_names_the_path(schema, words):
    with pytest.raises(GrammarError) as e:
        compile_schema(schema)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_too_deep_and_too_large():
    s = {"type": "null"}
    for _ in range(40):
        s = {"type": "array", "items": s}
    with pytest.raises(GrammarError, match="nest deeper"):
        compile_schema(s)
    with pytest.raises(GrammarError, match="limit"):
        compile_schema({"enum": list(range(5000))})


def test_grammar_for_request():
    assert grammar_for_request(None, None) is None
    assert grammar_for_request("json", None).accepts('{"a":[1,true]}')
    assert _compact('{"a":" x "}') and not _compact('{"a": 1}')
    g = grammar_for_request(None, CALC, copy_source="x")
    assert g.accepts('{"expression":"1+2"}') and g.copy_source == "x"
    assert grammar_for_request(CALC, None).accepts('{"expression":"1+2"}')   # Ollama style
    with pytest.raises(GrammarError, match="format"):
        grammar_for_request("yaml", None)
    with pytest.raises(GrammarError):
        grammar_for_request(None, "not a schema")
    assert compile_schema(CALC)._core is compile_schema(json.loads(json.dumps(CALC)))._core  # cached


# ---------------------------------------------------------------------------------------------
# the byte automaton against json + jsonschema
# ---------------------------------------------------------------------------------------------

ACCEPT = [
    (HOME, '{"intent":"HassTurnOn","area":"kitchen","brightness":40}', True),
    (HOME, '{"intent":"HassTurnOn","name":"kitchen light","area":"the"}', True),
    (HOME, '{"intent":"HassClimateSetTemperature","area":"kitchen","temperature":-49.5}', True),
    (HOME, '{"intent":"HassTurnOn","area":"kitchen","temperature":100}', True),
    (HOME, '{"intent":"HassTurnOn"}', False),                                # neither name nor area
    (HOME, '{"intent":"HassTurnOn","area":"kitchens"}', False),              # not in the source
    (HOME, '{"area":"kitchen","intent":"HassTurnOn"}', False),               # schema order
    (HOME, '{"intent":"HassTurnOn", "area":"kitchen"}', False),              # whitespace
    (HOME, '{"intent":"HassTurnOn","area":"kitchen","brightness":101}', False),
    (HOME, '{"intent":"HassTurnOn","area":"kitchen","brightness":-0}', False),      # no "-" when minimum >= 0
    (HOME, '{"intent":"HassTurnOn","area":"kitchen","brightness":05}', False),
    (HOME, '{"intent":"HassTurnOn","area":"kitchen","brightness":4.0}', False),
    (HOME, '{"intent":"HassTurnOn","area":"kitchen","temperature":100.000001}', False),
    (HOME, '{"intent":"HassTurnOn","area":"kitchen","temperature":-50.0000001}', False),
    (HOME, '{"intent":"HassTurnOn","area":"kitchen","domain":"light","position":0}', True),
    (HOME, '{"intent":"HassTurn","area":"kitchen"}', False),
    (MIXED, '{"kind":"list","items":[-5,12,0]}', True),
    (MIXED, '{"kind":"list","items":[]}', False),
    (MIXED, '{"kind":"list","items":[1,2,3,4,5]}', False),
    (MIXED, '{"kind":"list","items":[13]}', False),
    (MIXED, '{"kind":"list","items":[1],"flag":false}', True),
    (MIXED, '{"kind":"point","x":-1.5,"tag":1}', False),
    (MIXED, '{"kind":"point","x":-1.499999,"tag":1}', True),
    (MIXED, '{"kind":"point","x":2.25,"label":null,"tag":2.5}', True),
    (MIXED, '{"kind":"point","x":2.250001,"tag":true}', False),
    (MIXED, '{"kind":"point","x":0,"label":"","tag":"one"}', False),
    (MIXED, '{"kind":"point","x":0,"label":"ab\\"c","tag":"one"}', True),
    (MIXED, '{"kind":"point","x":0,"label":"abcdef","tag":"one"}', False),
    (MIXED, '{"kind":"point","x":0,"label":"किचनकी","tag":null}', False),   # 6 characters
    (MIXED, '{"kind":"point","x":0,"label":"किचन","tag":null}', True),
    (MIXED, '{"kind":"point","x":0,"label":"\\u0915x","tag":null}', True),
    (MIXED, '{"kind":"point","x":0,"label":"\\ud800","tag":null}', False),  # lone surrogate
    (MIXED, '{"kind":"list","items":[1],"x":0}', False),
]


@pytest.mark.parametrize("schema, text, ok", ACCEPT)
def test_accepts_matches_the_validator(schema, text, ok):
    g = compile_schema(schema, copy_source=SOURCES[0])
    assert g.accepts(text) == ok
    if ok:
        check_doc(schema, text, SOURCES[0])
        for i in range(len(text.encode())):        # every prefix is viable
            assert g.is_prefix(text.encode()[:i])


def test_utf8_inside_strings():
    g = compile_schema({"type": "string"})
    assert g.accepts('"किचन"')
    for bad in [b'"\xe0\x80\x80"', b'"\xc0\xaf"', b'"\xed\xa0\x80"', b'"\xf4\x90\x80\x80"', b'"\xff"',
                b'"\x80"', b'"a\n"']:
        assert not g.is_prefix(bad), bad
    assert g.is_prefix(b'"\xe0\xa4')             # half of a Devanagari character
    assert not g.accepts(b'"\xe0\xa4"')


def test_copy_strings_refuse_quotes_backslashes_and_split_characters():
    src = 'say "hi" \\ किचन'
    g = compile_schema({"type": "object", "properties": {"n": {"type": "string", "x-copy": True}},
                        "required": ["n"]}, copy_source=src)
    assert g.accepts('{"n":"say "}') and g.accepts('{"n":"किचन"}') and g.accepts('{"n":""}')
    assert not g.is_prefix('{"n":"say \\"')
    assert not g.is_prefix('{"n":"say "h')                       # the quote closes the string
    assert not g.is_prefix('{"n":"\\')
    assert not g.is_prefix('{"n":"'.encode() + "कि".encode()[1:])  # starts inside a character
    assert not g.accepts('{"n":"'.encode() + "कि".encode()[:2] + b'"}')
    assert g.with_source("other").accepts('{"n":"other"}')
    assert not g.with_source("other").is_prefix('{"n":"say')


def test_copy_words_start_and_end_at_word_edges():
    src = "bro हॉलचे पडदे, under-cabinet lights 2x स्वयंपाकघरातील दिवा"
    g = compile_schema({"type": "object", "properties": {"n": {"type": "string", "x-copy": "words"}},
                        "required": ["n"]}, copy_source=src)
    doc = lambda v: '{"n":"' + v + '"}'
    for v in ["bro", "हॉलचे पडदे", "bro हॉलचे", "under-cabinet lights", "cabinet", "2x", "स्वयंपाकघरातील दिवा",
              "पडदे, under", ""]:
        assert g.accepts(doc(v)), v
    for v in ["ro", "ro हॉलचे", "r", "ॉलचे", "abinet"]:          # starts inside a word
        assert not g.is_prefix(doc(v)[:-2]), v
    for v in ["br", "हॉल", "हॉलचे पडद", "स्वयंपाकघर", "under-", "पडदे,", "bro "]:   # ends inside a word or after it
        assert g.is_prefix(doc(v)[:-2]) and not g.accepts(doc(v)), v
    # a Devanagari word keeps its vowel signs and virama: no cut between a consonant and its matra
    assert not g.accepts(doc("स्वयंपाकघरातील दिव"))
    assert not g.is_prefix(doc("x")[:-2]) and not g.is_prefix(doc("दिवा दिवा")[:-2])
    # a copy only grows where it can still end at a word end within maxLength (no dead ends)
    short = compile_schema({"type": "object", "properties": {"n": {"type": "string", "x-copy": "words",
                                                                  "maxLength": 4}}, "required": ["n"]},
                           copy_source="kitchen 40% ab")
    assert short.accepts(doc("40")) and short.accepts(doc("ab"))
    assert not short.is_prefix(doc("40%")[:-2]) and not short.is_prefix(doc("k")[:-2])
    assert compile_schema({"type": "string", "x-copy": "words"}, copy_source="40% ab").is_prefix('"40%')
    assert not compile_schema({"type": "string", "x-copy": "words"}, copy_source="ab 40%").is_prefix('"40%')
    plain = compile_schema({"type": "object", "properties": {"n": {"type": "string", "x-copy": True}},
                            "required": ["n"]}, copy_source=src)
    assert plain.accepts(doc("ro हॉलचे")) and plain.accepts(doc("हॉल"))     # true: any substring


def test_copy_spans_allow_only_the_listed_strings_of_their_property():
    src = "yo the floor lamp, on rihgt away in the स्वयंपाकघरातील"
    g = compile_schema(HOME_WORDS, copy_source=src,
                       copy_spans={"name": ["floor lamp", "the floor lamp"], "area": ["स्वयंपाकघरातील"]})
    doc = lambda k, v: '{"intent":"HassTurnOn","' + k + '":"' + v + '"}'
    for v in ["floor lamp", "the floor lamp"]:
        assert g.accepts(doc("name", v)), v
    for v in ["floor", "lamp", "rihgt away", "rihgt", "yo", "the floor lamp, on"]:   # words, but not listed
        assert not g.accepts(doc("name", v)), v
    assert not g.is_prefix(doc("name", "l")[:-2]) and not g.is_prefix(doc("name", "r")[:-2])
    assert g.is_prefix(doc("name", "the fl")[:-2]) and not g.accepts(doc("name", "the fl"))
    assert g.accepts(doc("area", "स्वयंपाकघरातील")) and not g.accepts(doc("area", "rihgt away"))
    # a property the mapping does not name copies by its own rule (whole words)
    free = g.with_source(src, {"name": ["floor lamp"]})
    assert free.accepts(doc("area", "rihgt away")) and not free.accepts(doc("area", "ihgt"))
    assert free.copy_spans == {"name": ("floor lamp",)}
    assert compile_schema(HOME_WORDS, copy_source=src).accepts(doc("name", "rihgt away"))   # no spans: words
    # the walker's candidate bytes: what continues a listed span (and the closing quote)
    w = g._walker()
    s = w.start
    for b in doc("name", "the floor")[:-2].encode():
        s = w.step(s, b)
    assert w.copy_bytes(s) == {0x22, ord(" ")}
    for b in b" lamp":
        s = w.step(s, b)
    assert w.copy_bytes(s) == {0x22}


def test_values_limit_enum_and_number_properties():
    g = compile_schema(HOME_WORDS, copy_source="set the lamp to 40 now",
                       values={"intent": ["HassLightSet", "HassTurnOn"], "brightness": [40, 4]})
    assert g.values == {"intent": ("HassLightSet", "HassTurnOn"), "brightness": (40, 4)}
    doc = lambda i, b=None: '{"intent":"' + i + '","name":"lamp"' + ("" if b is None else f',"brightness":{b}') + "}"
    for d, ok in [(doc("HassLightSet", 40), True), (doc("HassLightSet", 4), True), (doc("HassTurnOn"), True),
                  (doc("HassLightSet", 41), False), (doc("HassLightSet", 400), False), (doc("HassTurnOff"), False),
                  (doc("HassLightSet", 0), False)]:
        assert g.accepts(d) is ok, d
    assert g.is_prefix('{"intent":"HassTu') and not g.is_prefix('{"intent":"HassLo')
    free = compile_schema(HOME_WORDS, copy_source="set the lamp to 40 now")   # the same schema, no limits
    assert free.accepts(doc("HassTurnOff")) and free.accepts(doc("HassLightSet", 41))
    t = compile_schema({"type": "object", "properties": {"t": {"type": "number", "minimum": -50, "maximum": 100}},
                        "required": ["t"]}, values={"t": [22.5, 22, -3]})
    for v, ok in [("22.5", True), ("22", True), ("-3", True), ("22.0", False), ("2", False), ("22.55", False)]:
        assert t.accepts('{"t":' + v + "}") is ok, v


@pytest.mark.parametrize("values, words", [
    ({"intent": ["Nope"]}, ["not one of the property's values"]),
    ({"brightness": [101]}, ["not a number the property takes"]),
    ({"brightness": [4.5]}, ["not a number the property takes"]),
    ({"brightness": ["4"]}, ["not a number the property takes"]),
    ({"intent": []}, ["non-empty list"]),
    (["HassTurnOn"], ["mapping"]),
])
def test_bad_values_are_clear_errors(values, words):
    with pytest.raises(GrammarError) as e:
        compile_schema(HOME, copy_source="x", values=values)
    for w in words:
        assert w in str(e.value), str(e.value)


@pytest.mark.parametrize("spans, words", [
    ({"name": ["lamp x"]}, ["does not occur"]),
    ({"name": []}, ["non-empty list"]),
    ({"name": "floor lamp"}, ["non-empty list"]),
    ({"name": [""]}, ["empty"]),
    ({"name": ['a"b']}, ["escapes"]),
    ({"name": ["floor lamp " * 6]}, ["length limits"]),
    (["floor lamp"], ["mapping"]),
])
def test_bad_copy_spans_are_clear_errors(spans, words):
    src = 'turn on the floor lamp a"b ' + "floor lamp " * 6
    with pytest.raises(GrammarError) as e:
        compile_schema(HOME_WORDS, copy_source=src, copy_spans=spans)
    for w in words:
        assert w in str(e.value), str(e.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10 ** 12, 10 ** 12)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=10)


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_json_format_accepts_any_compact_value(value):
    assert json_grammar().accepts(compact_json(value))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='{}[]",:0123456789.-eEtrufalsn\\ aé', max_size=14))
def test_json_format_accepts_only_json(text):
    if json_grammar().accepts(text):
        json.loads(text)
        assert text == text.strip()


@settings(max_examples=200, deadline=None)
@given(st.integers(-60, 120), st.integers(0, 999), st.sampled_from(INTENTS), st.booleans())
def test_home_numbers_match_the_range(whole, frac, intent, use_frac):
    num = f"{whole}.{frac}" if use_frac else str(whole)
    text = f'{{"intent":"{intent}","area":"kitchen","temperature":{num}}}'
    ok = -50 <= float(num) <= 100
    assert compile_schema(HOME, copy_source=SOURCES[0]).accepts(text) == ok


# ---------------------------------------------------------------------------------------------
# token masks against brute force, on small random byte-level vocabularies
# ---------------------------------------------------------------------------------------------

def random_vocab(seed: int, n_pieces: int = 300) -> list[VocabEntry]:
    """<unk> <s> </s>, the 256 bytes, then pieces cut from JSON calls, Devanagari text (whole and
    split characters) and random bytes."""
    rng = random.Random(seed)
    v = [VocabEntry(b"<unk>", 0.0, TOKEN_CONTROL), VocabEntry(b"<s>", 0.0, TOKEN_CONTROL),
         VocabEntry(b"</s>", 0.0, TOKEN_CONTROL)]
    v += [VocabEntry(bytes([b]), 0.0, TOKEN_BYTE) for b in range(256)]
    corpus = ('{"intent":"HassTurnOn","area":"kitchen","brightness":40}{"expression":"17*23"}'
              '{"kind":"point","x":-1.25,"label":null,"tag":"one"}[true,false,null,{"a":[]}]'
              + "".join(SOURCES)).encode()
    seen = set()
    while len(v) < 259 + n_pieces:
        r = rng.random()
        if r < 0.7:
            i = rng.randrange(len(corpus))
            piece = corpus[i:i + rng.randint(2, 9)]
        else:
            piece = bytes(rng.randrange(256) for _ in range(rng.randint(2, 4)))
        if piece in seen or len(piece) < 2:
            continue
        seen.add(piece)
        v.append(VocabEntry(piece, -float(len(v)), TOKEN_NORMAL))
    return v


def _brute_row(g, text: bytes, vocab, stop_ids):
    """Allowed ids by brute force: a token is allowed iff text + its bytes is still a viable
    prefix of the byte automaton (each token's bytes stepped one by one from the state of text,
    on a walker of its own), or it is a stop id and the document is complete."""
    complete = g.accepts(text)
    w = g._walker()
    s0 = w.start
    for b in text:
        s0 = w.step(s0, b)
    assert s0 >= 0
    allowed = []
    for tid, e in enumerate(vocab):
        if e.type == TOKEN_CONTROL:
            if tid in stop_ids and complete:
                allowed.append(tid)
            continue
        s = s0
        for b in e.piece:
            s = w.step(s, b)
            if s < 0:
                break
        if s >= 0:
            allowed.append(tid)
    return allowed, complete


@pytest.mark.parametrize("schema, seed", [(HOME, 0), (HOME, 1), (CALC, 2), (MIXED, 3), (None, 4), (HOME_WORDS, 5),
                                          (HOME_WORDS, 6)])
def test_masks_match_brute_force(schema, seed):
    vocab = random_vocab(seed)
    rng = random.Random(seed)
    source = SOURCES[seed % len(SOURCES)]
    g = json_grammar().with_source(source) if schema is None else compile_schema(schema, copy_source=source)
    voc = Vocab([None if e.type == TOKEN_CONTROL else e.piece for e in vocab], f"test{seed}")
    stop_ids = {2}
    checked = 0
    for walk in range(12):
        run = g.runner(voc, stop_ids)
        state, text = run.start, b""
        for step in range(60):
            row = run.row(state)
            want, complete = _brute_row(g, text, vocab, stop_ids)
            assert row.ids.tolist() == want, (text, set(row.ids.tolist()) ^ set(want))
            assert row.final == complete
            checked += 1
            if row.done or not len(row.ids):
                break
            # prefer short, structural tokens so walks reach deep states; sometimes any token
            ids = row.ids.tolist()
            if rng.random() < 0.6:
                ids = [t for t in ids if len(vocab[t].piece) > 1 and t not in stop_ids] or ids
            t = rng.choice(ids)
            if t in stop_ids:
                break
            state = row.next_state(t)
            text += vocab[t].piece
            assert g.is_prefix(text)
        if schema is not None and g.accepts(text):
            check_doc(schema, text.decode(), source)
    assert checked >= 25


# ---------------------------------------------------------------------------------------------
# generation: 1,000 seeded runs from random-weight models all parse and validate
# ---------------------------------------------------------------------------------------------

ARCH = dict(dim=32, n_layers=1, n_heads=2, n_kv_heads=2, hidden_dim=64, vocab_size=0, max_seq_len=384,
            norm_eps=1e-5, rope_theta=10000.0, tied_embeddings=True)


def write_model(path, seed: int, vocab=None):
    vocab = vocab or random_vocab(seed)
    arch = dict(ARCH, vocab_size=len(vocab))
    write_bullet(path, kind="lm", arch=arch, tensors=random_lm_tensors(arch, seed=seed), vocab=vocab,
                 tokenizer={"kind": "bpe", "bos_id": 1, "eos_id": 2, "add_dummy_prefix": False},
                 provenance={"name": f"g{seed}", "version": "1.0.0",
                             "created": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc).isoformat(),
                             "training": {"kind": "random", "seed": seed}})
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("grammar")
    return [write_model(d / f"m{i}.bullet", seed=10 + i) for i in range(2)]


@pytest.mark.parametrize("schema, n", [(HOME, 400), (CALC, 250), (MIXED, 350), (HOME_WORDS, 200)])
def test_seeded_generations_parse_and_validate(models, schema, n):
    for k, path in enumerate(models):
        m = load_model(path)
        for i in range(n // len(models)):
            src = SOURCES[i % len(SOURCES)]
            g = compile_schema(schema, copy_source=src)
            st_ = GenerationSettings(max_tokens=300, temperature=[0.0, 0.7, 1.0, 1.5][i % 4], top_k=[0, 40][i % 2],
                                     top_p=[1.0, 0.9][i % 3 == 0], repetition_penalty=[1.0, 1.3][i % 2], seed=i)
            gen = m.generate(src + "\n=>", st_, grammar=g)
            text = "".join(gen)
            assert gen.finish_reason == "stop", (text, gen.finish_reason)
            assert text == gen.text
            check_doc(schema, text, src)
        m.close()


def test_json_format_generations(models):
    m = load_model(models[0])
    g = json_grammar()
    for i in range(30):
        gen = m.generate("x", GenerationSettings(max_tokens=60, temperature=1.0, seed=i), grammar=g)
        text = "".join(gen)
        if gen.finish_reason == "stop":
            json.loads(text)
        else:
            assert gen.finish_reason == "length" and g.is_prefix(text)


def test_finish_reasons(models):
    m = load_model(models[0])
    g = compile_schema(HOME, copy_source=SOURCES[0])
    gen = m.generate("x", GenerationSettings(max_tokens=3, temperature=1.0, seed=1), grammar=g)
    text = "".join(gen)
    assert gen.finish_reason == "length" and len(gen.tokens) == 3 and g.is_prefix(text)
    # a complete top-level number may be extended: the stop id is allowed there and ends it
    gi = compile_schema({"type": "integer", "minimum": 0, "maximum": 9})
    for seed in range(10):
        gen = m.generate("x", GenerationSettings(max_tokens=10, temperature=1.0, seed=seed), grammar=gi)
        text = "".join(gen)
        assert gen.finish_reason == "stop" and text in [str(i) for i in range(10)], (text, gen.finish_reason)
    # the token that completes the document is also the last max_tokens allows: "stop" wins
    gc = compile_schema(CALC)
    full = m.generate("x", GenerationSettings(max_tokens=300, temperature=0.0), grammar=gc)
    text = "".join(full)
    assert full.finish_reason == "stop"
    exact = m.generate("x", GenerationSettings(max_tokens=len(full.tokens), temperature=0.0), grammar=gc)
    assert "".join(exact) == text and exact.finish_reason == "stop"
    short = m.generate("x", GenerationSettings(max_tokens=len(full.tokens) - 1, temperature=0.0), grammar=gc)
    assert text.startswith("".join(short)) and short.finish_reason == "length"
    with pytest.raises(Exception, match="Grammar"):
        m.generate("x", GenerationSettings(), grammar={"type": "string"})


def test_masked_sampling_rules():
    logits = np.array([5.0, 1.0, 4.0, 3.0, -2.0, 0.5], dtype=np.float32)
    allowed = np.array([1, 3, 4], dtype=np.int32)
    s = Sampler(GenerationSettings(temperature=0.0, repetition_penalty=1.0).validate())
    assert s.sample_masked_numpy(logits, allowed) == 3
    s = Sampler(GenerationSettings(temperature=0.0, repetition_penalty=10.0).validate())
    assert s.sample_masked_numpy(logits, allowed, seen=[3, 0]) == 1        # 3.0 / 10 < 1.0
    for seed in range(20):
        st_ = GenerationSettings(temperature=1.0, top_k=2, top_p=1.0, seed=seed).validate()
        a, b = Sampler(st_), Sampler(st_)
        x = a.sample_masked_numpy(logits, allowed, seen=[4])
        assert x in (1, 3)
        assert b.sample_masked(logits, allowed, seen=[4]) == x                # native == NumPy


# ---------------------------------------------------------------------------------------------
# the native decode loop under a grammar gives the ids of the per-token and NumPy paths
# ---------------------------------------------------------------------------------------------

def _gen_mode(path, monkeypatch, mode, grammar, prompt, **kw):
    from bulletd import kernels
    with monkeypatch.context() as mp:
        if mode == "numpy":
            mp.setenv("BULLET_SAMPLER", "numpy")
        if mode != "batched":
            mp.setattr(kernels.NativeSession, "has_decode_grammar", property(lambda self: False))
        m = load_model(path, backend="native")
        s = m.new_session()
        g = m.generate(prompt, GenerationSettings(**kw), session=s, grammar=grammar)
        pieces = list(g)
        out = dict(tokens=g.tokens, text=g.text, joined="".join(pieces), reason=g.finish_reason,
                   cached=list(s.tokens))
        m.close()
        return out


PARITY = [
    dict(max_tokens=300, temperature=0.0),
    dict(max_tokens=300, temperature=0.8, top_k=40, top_p=0.95, repetition_penalty=1.1, seed=1),
    dict(max_tokens=300, temperature=1.5, top_k=0, top_p=1.0, repetition_penalty=1.5, seed=2),
    dict(max_tokens=7, temperature=1.0, seed=3),
    dict(max_tokens=300, temperature=1.2, top_k=5, seed=4, stream=False),
    dict(max_tokens=300, temperature=1.0, seed=5, stop=['"a']),
]


@pytest.mark.parametrize("kw", PARITY)
@pytest.mark.parametrize("schema", [HOME, MIXED, HOME_WORDS])
def test_native_grammar_decode_parity(models, monkeypatch, kw, schema):
    from bulletd import kernels
    if kernels.token_automaton(4) is None:
        pytest.skip(f"native module not built: {kernels.native_error()}")
    src = SOURCES[kw.get("seed", 0) % len(SOURCES)]
    for path in models:
        g = compile_schema(schema, copy_source=src)
        runs = {mode: _gen_mode(path, monkeypatch, mode, g, src + "\n=>", **kw)
                for mode in ("batched", "per_token", "numpy")}
        # a batch may have run tokens past a stop string (wasted work, still valid cache entries)
        cb, cp = runs["batched"].pop("cached"), runs["per_token"].pop("cached")
        assert cp == runs["numpy"].pop("cached")
        assert runs["batched"] == runs["per_token"] == runs["numpy"]
        assert cb[:len(cp)] == cp and (cb == cp or runs["batched"]["reason"] == "stop")
        r = runs["batched"]
        assert r["joined"] == r["text"]
        if r["reason"] == "stop" and "stop" not in kw:
            check_doc(schema, r["text"], src)


SPANS = {"name": ["kitchen light", "the kitchen light", "light to"], "area": ["kitchen"]}


@pytest.mark.parametrize("kw", PARITY[:3])
def test_native_grammar_decode_parity_with_copy_spans(models, monkeypatch, kw):
    """Per-request copy spans: the native loop, the per-token path and NumPy agree, and every
    finished document's name and area are among the spans."""
    from bulletd import kernels
    if kernels.token_automaton(4) is None:
        pytest.skip(f"native module not built: {kernels.native_error()}")
    src = SOURCES[0]
    for path in models:
        g = compile_schema(HOME_WORDS, copy_source=src, copy_spans=SPANS)
        runs = {mode: _gen_mode(path, monkeypatch, mode, g, src + "\n=>", **kw)
                for mode in ("batched", "per_token", "numpy")}
        for r in runs.values():
            r.pop("cached")
        assert runs["batched"] == runs["per_token"] == runs["numpy"]
        r = runs["batched"]
        if r["reason"] == "stop":
            check_doc(HOME_WORDS, r["text"], src)
            v = json.loads(r["text"])
            assert all(v[k] in SPANS[k] for k in SPANS if k in v), v


VALUES = {"intent": ["HassLightSet", "HassGetState"], "brightness": [40, 7]}


@pytest.mark.parametrize("kw", PARITY[:3])
def test_native_grammar_decode_parity_with_values(models, monkeypatch, kw):
    from bulletd import kernels
    if kernels.token_automaton(4) is None:
        pytest.skip(f"native module not built: {kernels.native_error()}")
    src = SOURCES[0]
    for path in models:
        g = compile_schema(HOME_WORDS, copy_source=src, copy_spans=SPANS, values=VALUES)
        runs = {mode: _gen_mode(path, monkeypatch, mode, g, src + "\n=>", **kw)
                for mode in ("batched", "per_token", "numpy")}
        for r in runs.values():
            r.pop("cached")
        assert runs["batched"] == runs["per_token"] == runs["numpy"]
        r = runs["batched"]
        if r["reason"] == "stop":
            v = json.loads(r["text"])
            assert v["intent"] in VALUES["intent"] and v.get("brightness", 40) in VALUES["brightness"], v


def test_limited_requests_never_reuse_rows_of_unlimited_ones(models):
    """Rows of the schema's shared table were built without limits (a token may spell any intent);
    a request with values must not take them: every sampled call keeps to its values."""
    m = load_model(models[1])
    src = SOURCES[0]
    for i in range(20):     # fill the shared rows, unlimited
        "".join(m.generate(src + "\n=>", GenerationSettings(max_tokens=300, temperature=1.5, seed=i),
                           grammar=compile_schema(HOME_WORDS, copy_source=src)))
    seen = set()
    for i in range(40):
        g = compile_schema(HOME_WORDS, copy_source=src, values=VALUES)
        gen = m.generate(src + "\n=>", GenerationSettings(max_tokens=300, temperature=1.5, seed=i), grammar=g)
        text = "".join(gen)
        assert gen.finish_reason == "stop", text
        v = json.loads(text)
        assert v["intent"] in VALUES["intent"] and v.get("brightness", 40) in VALUES["brightness"], v
        seen.add(v["intent"])
    m.close()
    assert seen == set(VALUES["intent"]), seen


def test_seeded_generations_keep_to_the_copy_spans(models):
    m = load_model(models[0])
    seen = set()
    for i in range(60):
        src = SOURCES[0]
        g = compile_schema(HOME_WORDS, copy_source=src, copy_spans=SPANS)
        gen = m.generate(src + "\n=>", GenerationSettings(max_tokens=300, temperature=1.5, seed=i), grammar=g)
        text = "".join(gen)
        assert gen.finish_reason == "stop", text
        check_doc(HOME_WORDS, text, src)
        v = json.loads(text)
        for k in SPANS:
            if k in v:
                assert v[k] in SPANS[k], v
                seen.add(v[k])
    m.close()
    assert len(seen) >= 3, seen      # random weights reach several spans, and nothing else


def test_numpy_backend_generations_validate(models):
    m = load_model(models[1], backend="numpy")
    for i in range(6):
        src = SOURCES[i % len(SOURCES)]
        gen = m.generate(src + "\n=>", GenerationSettings(max_tokens=300, temperature=1.0, seed=i),
                         grammar=compile_schema(HOME, copy_source=src))
        text = "".join(gen)
        assert gen.finish_reason == "stop"
        check_doc(HOME, text, src)


def test_bullet_run_schema_and_format(models, tmp_path):
    import subprocess
    import sys
    (tmp_path / "home.json").write_text(json.dumps(HOME))
    (tmp_path / "bad.json").write_text(json.dumps({"type": "object", "properties": {"a": {"enum": []}}}))
    run = lambda *a: subprocess.run([sys.executable, "-m", "bulletd.cli_bullet", "run", str(models[0]), *a],
                                    capture_output=True, text=True, timeout=60)
    src = "turn on the kitchen light"
    r = run("-p", src + "\n=>", "--schema", str(tmp_path / "home.json"), "--seed", "3", "--quiet-prompt")
    assert r.returncode == 0, r.stderr
    check_doc(HOME, r.stdout.strip(), src)
    assert "finish stop" in r.stderr
    r = run("-p", "x", "--schema", str(tmp_path / "home.json"), "--copy-source", "bedroom", "--seed", "1",
            "--quiet-prompt", "-t", "0")
    assert r.returncode == 0, r.stderr
    check_doc(HOME, r.stdout.strip(), "bedroom")
    r = run("-p", "x", "--format", "json", "-n", "40", "--quiet-prompt", "--seed", "2")
    assert r.returncode == 0 and json_grammar().is_prefix(r.stdout.rstrip("\n"))
    r = run("-p", "x", "--schema", str(tmp_path / "bad.json"))
    assert r.returncode == 1 and "#/properties/a/enum" in r.stderr and "empty" in r.stderr


def test_two_threads_share_a_grammar_and_its_caches(models, monkeypatch):
    """Requests on two threads expand rows of one grammar at once; a small MAX_STATES makes the
    caches start afresh between requests. Every output still validates."""
    import threading
    from bulletd.runtime import grammar as G
    monkeypatch.setattr(G, "MAX_STATES", 300)
    m = load_model(models[0])
    errors, outs = [], []

    def work(k):
        try:
            for i in range(25):
                src = SOURCES[(i + k) % len(SOURCES)]
                g = compile_schema(MIXED if i % 2 else HOME, copy_source=src)
                gen = m.generate(src, GenerationSettings(max_tokens=300, temperature=1.2, seed=100 * k + i),
                                 grammar=g)
                outs.append((g.schema, "".join(gen), src, gen.finish_reason))
        except Exception as exc:       # reported below, with the thread's traceback lost but its error kept
            errors.append(exc)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    assert len(outs) == 50
    for schema, text, src, reason in outs:
        assert reason == "stop"
        check_doc(schema, text, src)
    m.close()


def test_a_vocabulary_that_cannot_spell_the_document_is_a_clear_error(tmp_path):
    vocab = [VocabEntry(b"<unk>", 0.0, TOKEN_CONTROL), VocabEntry(b"<s>", 0.0, TOKEN_CONTROL),
             VocabEntry(b"</s>", 0.0, TOKEN_CONTROL)] + [VocabEntry(p, 0.0, TOKEN_NORMAL)
                                                         for p in (b"a", b"b", b"{", b'"', b"x")]
    m = load_model(write_model(tmp_path / "v.bullet", 1, vocab=vocab))
    gen = m.generate("ab", GenerationSettings(max_tokens=20, temperature=0.0),
                     grammar=compile_schema({"type": "object", "properties": {"k": {"type": "null"}},
                                             "required": ["k"]}))
    with pytest.raises(Exception, match="vocabulary"):
        "".join(gen)


def test_native_automaton_refuses_bad_rows(models):
    from bulletd import kernels
    from bulletd.errors import ModelError
    a = kernels.token_automaton(10)
    if a is None:
        pytest.skip(f"native module not built: {kernels.native_error()}")
    with pytest.raises(ValueError, match="ascending"):
        a.set(0, np.array([3, 2], np.int32), np.array([1, 1], np.int32), False)
    with pytest.raises(ValueError, match="outside"):
        a.set(0, np.array([3, 10], np.int32), np.array([1, 1], np.int32), False)
    with pytest.raises(ValueError, match="length"):
        a.set(0, np.array([3], np.int32), np.array([1, 1], np.int32), False)
    with pytest.raises(ValueError, match="another vocab"):
        kernels.token_automaton(11, a)
    a.set(0, np.array([3, 4], np.int32), np.array([1, -1], np.int32), False)
    assert a.has(0) and not a.has(1) and a.rows == 1
    m = load_model(models[0], backend="native")
    s = m.new_session()
    logits = np.array(s.prefill([1, 5], 0), dtype=np.float32)
    with pytest.raises(ModelError, match="another vocab size"):
        s._impl.decode_grammar(logits, -1, 2, 4, np.zeros(4), np.zeros(0, np.int64), 0.0, 0, 1.0, 1.0,
                               np.array([2], np.int64), a, 0)
    b = kernels.token_automaton(m.arch["vocab_size"])
    with pytest.raises(ModelError, match="no row"):
        s._impl.decode_grammar(logits, -1, 2, 4, np.zeros(4), np.zeros(0, np.int64), 0.0, 0, 1.0, 1.0,
                               np.array([2], np.int64), b, 0)
    m.close()


# ---------------------------------------------------------------------------------------------
# random schemas of the subset: every document the automaton completes validates, and the
# token rows of the states on the way match brute force
# ---------------------------------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers(-20, 20) | st.sampled_from(["a", "kitchen", "é\"x", ""])


@st.composite
def leaf_schemas(draw):
    kind = draw(st.sampled_from(["boolean", "null", "integer", "number", "string", "enum", "const", "copy"]))
    if kind in ("boolean", "null"):
        return {"type": kind}
    if kind in ("integer", "number"):
        a = draw(st.integers(-150, 150))
        b = draw(st.integers(a, 160))
        s = {"type": kind}
        if draw(st.booleans()):
            s["minimum"] = a if kind == "integer" else a / 4
        if draw(st.booleans()):
            s["maximum"] = b if kind == "integer" else b / 4 + 0.5
        return s
    if kind == "string":
        lo = draw(st.integers(0, 3))
        return {"type": "string", "minLength": lo, "maxLength": draw(st.integers(lo, 6))}
    if kind == "copy":
        return {"type": "string", "x-copy": draw(st.sampled_from([True, "words"])), "maxLength": draw(st.integers(0, 8))}
    if kind == "enum":
        return {"enum": draw(st.lists(scalars, min_size=1, max_size=4))}
    return {"const": draw(scalars)}


def _objects(children):
    @st.composite
    def build(draw):
        names = draw(st.lists(st.sampled_from(["a", "b", "ab", "name", "x"]), min_size=0, max_size=3, unique=True))
        props = {n: draw(children) for n in names}
        req = [n for n in names if draw(st.booleans())]
        return {"type": "object", "properties": props, "required": req}
    return build()


random_schemas = st.recursive(
    leaf_schemas(),
    lambda children: (st.builds(lambda it, k: {"type": "array", "items": it, "maxItems": k}, children,
                                st.integers(0, 3))
                      | _objects(children)
                      | st.builds(lambda a, b: {"anyOf": [a, b]}, _objects(children), _objects(children))),
    max_leaves=5)


def _complete(g, w, s, text: bytes, rng, limit=400):
    """Extend text to a complete document by a random walk over the bytes the states take
    (string contents: a few letters and the quote). Returns the bytes, or None."""
    src_bytes = list(set(g._src)) or [0x61]
    for _ in range(limit):
        if w.tables.final[s] and rng.random() < 0.5:
            return text
        first = w.tables.first[s]
        choices = sorted(first) if first is not None else [0x61, 0x22, 0xC3, 0xA9] + src_bytes
        rng.shuffle(choices)
        for b in choices:
            t = w.step(s, b)
            if t >= 0:
                s, text = t, text + bytes([b])
                break
        else:
            return text if w.tables.final[s] else None
    return text if w.tables.final[s] else None


@settings(max_examples=60, deadline=None)
@given(random_schemas, st.integers(0, 2 ** 16))
def test_random_schemas_complete_to_valid_documents(schema, seed):
    try:
        g = compile_schema(schema, copy_source="the kitchen light é")
    except GrammarError:
        return      # e.g. an enum whose values are all filtered out
    rng = random.Random(seed)
    vocab = random_vocab(seed % 3, n_pieces=120)
    voc = Vocab([None if e.type == TOKEN_CONTROL else e.piece for e in vocab], f"hyp{seed % 3}")
    run = g.runner(voc, {2})
    w = g._walker()
    for _ in range(3):
        text = _complete(g, w, w.start, b"", rng)
        if text is None:
            continue
        value = json.loads(text)
        jsonschema.validate(value, schema)
        assert compact_json(value) == text.decode() or _compact(text.decode())
        _check_copy_any(schema, value, g.copy_source)
        # rows along the document's token-free path: each prefix's state against brute force
        for cut in sorted({0, len(text) // 2, len(text)}):
            s = w.start
            for b in text[:cut]:
                s = w.step(s, b)
            want, complete = _brute_row(g, text[:cut], vocab, {2})
            assert run.row(s).ids.tolist() == want


def _check_copy_any(schema, value, source):
    if isinstance(schema, dict) and "anyOf" in schema and "properties" not in schema:
        for alt in schema["anyOf"]:     # some alternative explains the value completely
            try:
                jsonschema.validate(value, alt)
                _check_copy_any(alt, value, source)
                return
            except (jsonschema.ValidationError, AssertionError, KeyError):
                continue
        raise AssertionError(f"no alternative of {schema} explains {value!r}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        assert list(value) == [k for k in props if k in value], "not in schema order, or not a property"
        for k, v in value.items():
            _check_copy_any(props[k], v, source)
    elif isinstance(value, list):
        for v in value:
            _check_copy_any(schema["items"], v, source)
    elif isinstance(value, str) and schema.get("x-copy"):
        assert value in source
        assert schema["x-copy"] != "words" or _whole_words(value, source), (value, source)


# ---------------------------------------------------------------------------------------------
# "x-copy": "spans": free ASCII punctuation between whole copies of the request's spans
# ---------------------------------------------------------------------------------------------

CALC_SPANS = {"type": "object", "properties": {"expression": {"type": "string", "maxLength": 40, "x-copy": "spans"}},
              "required": ["expression"]}
CALC_SPAN_LIST = ["17", "23", "fifty nine", "२४", "2", "2", "3.5"]


def _spans_ok(value: str, spans) -> bool:
    """value is ASCII punctuation and spaces between whole spans, each used at most as often as
    listed, never two spans side by side (an independent backtracking check)."""
    def go(i, left, after_span):
        if i == len(value):
            return True
        c = value[i]
        if c.isascii() and not c.isalnum() and c not in '"\\' and c.isprintable():
            return go(i + 1, left, False)
        if after_span:
            return False
        for k, x in enumerate(left):
            if value.startswith(x, i) and go(i + len(x), left[:k] + left[k + 1:], True):
                return True
        return False
    return go(0, list(spans), False)


def test_copy_spans_take_whole_spans_each_once():
    g = compile_schema(CALC_SPANS, copy_source="anything", spans=CALC_SPAN_LIST)
    assert g.spans == tuple(CALC_SPAN_LIST)
    doc = lambda e: json.dumps({"expression": e}, ensure_ascii=False, separators=(",", ":"))
    for e, ok in [(" 17 * 23 ", True), ("(fifty nine + 2) ^ 2", True), ("२४ / 3.5 - 17", True), ("", True),
                  ("  (  ) ", True), (" 17 * 233 ", False), (" 1 * 23 ", False), (" 17 * 17 ", False),
                  ("2^2^2", False), (" fifty ", False), ("1723", False), ("17 23", True), ("3.5.", True),
                  ("३", False), ("fifty nine2", False), ("x", False), (" 17 \\n", False), ("2" * 41, False)]:
        assert g.accepts(doc(e)) == ok == _spans_ok(e, CALC_SPAN_LIST), e
    assert g.is_prefix('{"expression":" fif') and not g.is_prefix('{"expression":" fix')
    assert g.is_prefix('{"expression":"२') and not g.is_prefix('{"expression":"१')
    assert not compile_schema(CALC_SPANS).is_prefix('{"expression":"1')      # no spans: punctuation only
    assert compile_schema(CALC_SPANS, spans=CALC_SPAN_LIST).with_source("x", spans=["9"]).accepts('{"expression":"9+9"}') is False
    assert compile_schema(CALC_SPANS).with_source("x", spans=["9", "9"]).accepts('{"expression":"9+9"}')
    short = {"type": "string", "maxLength": 6, "x-copy": "spans"}       # a span starts only where it fits
    assert compile_schema(short, spans=["12345"]).is_prefix('" 1') and not compile_schema(short, spans=["12345"]).is_prefix('"  1')
    for bad in ("17", [""], ["a\"b"], ["a\\b"], ["a\nb"], [17], ["1"] * 257):
        with pytest.raises(GrammarError, match="span"):
            compile_schema(CALC_SPANS, spans=bad)


# the rules a request may add: numbers that must be used, arithmetic syntax, allowed and needed operators
ARITH_SPANS = ["17", "23", "fifty nine", "two", "2", "3", "4.5", "17"]
ARITH_NEED = [[0], [1], [2], [3, 4]]     # 17, 23, fifty nine once each, "two" or its 2 once; the rest optional
ARITH = {"type": "object", "properties": {"expression": {"type": "string", "maxLength": 60, "x-copy": "spans"}},
         "required": ["expression"]}


def _arith_ok(value: str, spans, need, ops="+-*/^%", needed="", max_depth=8, tail=()) -> bool:
    """An independent check of Spans(spans, need, arithmetic=True, operators=ops, needed=needed):
    cut value into tokens every way (each span index at most once), then parse them."""
    if "  " in value:
        return False

    def cuts(i, used):
        if i == len(value):
            yield [], used
            return
        c = value[i]
        if c in " +-*/^%()":
            for rest, u in cuts(i + 1, used):
                yield ([] if c == " " else [c]) + rest, u
            return
        for k, x in enumerate(spans):
            if k not in used and value.startswith(x, i):
                for rest, u in cuts(i + len(x), used | {k}):
                    yield [k] + rest, u

    def parses(t):
        pos, depth = 0, 0

        def operand():
            nonlocal pos, depth
            if pos < len(t) and t[pos] == "-" and "-" in ops:
                pos += 1
                if not (pos < len(t) and isinstance(t[pos], int)):
                    raise ValueError
            if pos < len(t) and isinstance(t[pos], int):
                pos += 1
            elif pos < len(t) and t[pos] == "(":
                depth += 1
                if depth > max_depth:
                    raise ValueError
                pos += 1
                expr()
                if not (pos < len(t) and t[pos] == ")"):
                    raise ValueError
                pos += 1
                depth -= 1
            else:
                raise ValueError
            while pos < len(t) and t[pos] == "%":
                if "%" not in ops:
                    raise ValueError
                pos += 1

        def expr():
            nonlocal pos
            operand()
            while pos < len(t) and isinstance(t[pos], str) and t[pos] in "+-*/^":
                if t[pos] not in ops:
                    raise ValueError
                pos += 1
                operand()
        try:
            expr()
        except ValueError:
            return False
        return pos == len(t)

    def in_order(t):        # a tail span, a closing parenthesis: only after every other group's span
        last = {i for k in tail for i in need[k]}
        seen = set()
        for x in t:
            if tail and (x == ")" or x in last) and not all(seen & set(g) for k, g in enumerate(need) if k not in tail):
                return False
            if isinstance(x, int):
                seen.add(x)
        return True

    for t, used in cuts(0, frozenset()):
        if all(len(used & set(g)) == 1 for g in need) and all(op in t for op in needed) and parses(t) and in_order(t):
            return True
    return False


def _random_expression(rng, spans, need, ops) -> str:
    """Mostly well-formed expressions over the spans (a few with their rules broken)."""
    binary = [c for c in ops if c != "%"] or ["+"]
    left = list(range(len(spans)))
    rng.shuffle(left)
    picks = [g[rng.randrange(len(g))] for g in need if rng.random() < 0.95]
    picks += [k for k in left if k not in picks and all(k not in g for g in need) and rng.random() < 0.3]
    rng.shuffle(picks)
    if not picks:
        picks = [rng.randrange(len(spans))]

    def build(items):
        if len(items) == 1:
            x = spans[items[0]]
            return ("-" if rng.random() < 0.1 else "") + x + (" %" if rng.random() < (0.3 if "%" in ops else 0.05) else "")
        k = rng.randint(1, len(items) - 1)
        a, b = build(items[:k]), build(items[k:])
        e = f"{a} {rng.choice(binary if rng.random() < 0.9 else '+-*/^%,!')} {b}"
        return f"( {e} )" if rng.random() < 0.3 else e
    out = build(picks)
    if rng.random() < 0.2:
        i = rng.randrange(len(out) + 1)
        out = out[:i] + rng.choice([" ", "(", ")", "-", "2", "x"]) + out[i:]
    return out


@pytest.mark.parametrize("ops, needed, tail", [("+-*/^%", "", ()), ("*%", "%", ()), ("+/", "", ()), ("-", "", ()),
                                               ("+-*/^%", "", (3,)), ("+/", "", (1, 3))])
def test_spans_need_and_arithmetic_match_an_independent_check(ops, needed, tail):
    sp = Spans(ARITH_SPANS, need=ARITH_NEED, arithmetic=True, operators=ops, needed=needed, tail=tail)
    g = compile_schema(ARITH, copy_source="x", spans=sp)
    assert g.spans == tuple(ARITH_SPANS)
    doc = lambda e: json.dumps({"expression": e}, ensure_ascii=False, separators=(",", ":"))
    rng = random.Random(ops)
    cases = [_random_expression(rng, ARITH_SPANS, ARITH_NEED, ops) for _ in range(400)]
    cases += [" 17 * 23 * fifty nine * two ", "17*23*fifty nine*2", "(17+23)/fifty nine-two", "17 * 23 * fifty nine",
              "17 * 23 * fifty nine * two * 2", "17*17*23*fifty nine*2", "-17*-23*-fifty nine*-2", "--17*23*fifty nine*2",
              "( 17 * 23 * fifty nine * 2 )", "( 17 * 23 * fifty nine * 2", "(17) * 23 * fifty nine * 2 %",
              "17 *  23 * fifty nine * 2", "17 23 * fifty nine * 2", "((((((((( 17 ))))))))) * 23 * fifty nine * 2",
              "17 % * 23 * fifty nine * 2", "", " ", "17*23*fifty nine*2*", "( 17 + 23 + fifty nine ) / two",
              "( 17 + 23 ) / two + fifty nine", "( 17 + fifty nine + two ) / 23", "( 17 + 23 + fifty nine ) / 2 %"]
    agree = accepted = 0
    for e in cases:
        want = _arith_ok(e, ARITH_SPANS, ARITH_NEED, ops, needed, tail=tail) and len(e) <= 60
        assert g.accepts(doc(e)) == want, (ops, e)
        accepted += want
    assert accepted >= (8 if tail else 20)      # the cases hold well-formed expressions, not only bad ones
    for bad in (dict(need=[[9]]), dict(need=[[]]), dict(need="0"), dict(operators="+x"), dict(operators="+", needed="-"),
                dict(need=[[0]], tail=[1]), dict(tail="0")):
        with pytest.raises(GrammarError):
            Spans(ARITH_SPANS, arithmetic=True, **bad)


@pytest.mark.parametrize("seed, tail", [(0, ()), (1, ()), (2, (3,)), (3, (1, 3))])
def test_spans_need_never_walk_into_a_dead_end(seed, tail):
    """Every prefix the rules allow can still be completed: a random walk over the allowed bytes
    always has a next byte or a complete document, up to maxLength."""
    rng = random.Random(seed)
    sp = Spans(ARITH_SPANS, need=ARITH_NEED, arithmetic=True, operators="+-*/%", needed="%", tail=tail)
    g = compile_schema(CALC_SPANS, copy_source="x", spans=sp)        # maxLength 40: tight for these rules
    w = g._walker()
    alphabet = sorted(set(b" +-*/^%()\"") | {x for s in ARITH_SPANS for x in s.encode()})
    finished = 0
    for walk in range(40):
        state, text = w.step(w.start, 0x7B), b"{"
        for b in b'"expression":"':
            state = w.step(state, b)
            text += bytes((b,))
        while True:
            nxt = [b for b in alphabet if w.step(state, b) >= 0]
            assert nxt, text
            b = rng.choice(nxt)
            state = w.step(state, b)
            text += bytes((b,))
            if b == 0x22 and g.accepts(text + b"}"):
                finished += 1
                assert _arith_ok(json.loads(text + b"}")["expression"], ARITH_SPANS, ARITH_NEED, "+-*/%", "%", tail=tail)
                break
    assert finished == 40


def _rules():
    return Spans(ARITH_SPANS, need=ARITH_NEED, arithmetic=True, operators="+-*/%", needed="%", tail=[3])


@pytest.mark.parametrize("seed, rules", [(7, False), (8, False), (9, True), (10, True)])
def test_copy_spans_masks_match_brute_force(seed, rules):
    vocab = random_vocab(seed)
    rng = random.Random(seed)
    g = compile_schema(CALC_SPANS, copy_source=SOURCES[0], spans=_rules() if rules else CALC_SPAN_LIST)
    voc = Vocab([None if e.type == TOKEN_CONTROL else e.piece for e in vocab], f"spans{seed}")
    checked = 0
    for walk in range(12):
        run = g.runner(voc, {2})
        state, text = run.start, b""
        for step in range(40):
            row = run.row(state)
            want, complete = _brute_row(g, text, vocab, {2})
            assert row.ids.tolist() == want, (text, set(row.ids.tolist()) ^ set(want))
            checked += 1
            if row.done or not len(row.ids):
                break
            ids = [t for t in row.ids.tolist() if t != 2 or rng.random() < 0.2]
            t = rng.choice(ids or row.ids.tolist())
            if t == 2:
                break
            state = row.next_state(t)
            text += vocab[t].piece
        if g.accepts(text):
            e = json.loads(text)["expression"]
            assert _arith_ok(e, ARITH_SPANS, ARITH_NEED, "+-*/%", "%", tail=[3]) if rules else _spans_ok(e, CALC_SPAN_LIST)
    assert checked >= 25


@pytest.mark.parametrize("rules", [False, True])
@pytest.mark.parametrize("kw", PARITY[:4])
def test_native_grammar_decode_parity_with_spans(models, monkeypatch, kw, rules):
    from bulletd import kernels
    if kernels.token_automaton(4) is None:
        pytest.skip(f"native module not built: {kernels.native_error()}")
    for path in models:
        g = compile_schema(CALC_SPANS, copy_source="x", spans=_rules() if rules else CALC_SPAN_LIST)
        runs = {mode: _gen_mode(path, monkeypatch, mode, g, "what is 17 times 23\n=>", **kw)
                for mode in ("batched", "per_token", "numpy")}
        for r in runs.values():
            r.pop("cached")
        assert runs["batched"] == runs["per_token"] == runs["numpy"]
        r = runs["batched"]
        if r["reason"] == "stop":
            e = json.loads(r["text"])["expression"]
            assert _arith_ok(e, ARITH_SPANS, ARITH_NEED, "+-*/%", "%", tail=[3]) if rules else _spans_ok(e, CALC_SPAN_LIST), e
