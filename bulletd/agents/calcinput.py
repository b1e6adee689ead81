"""What bulletd does with a calc utterance around the child: operator words with a typo are
spelled right before the child reads them, and the call is held to the utterance's numbers and
operator words.

    from bulletd.agents.calcinput import fix_operators, number_spans, request_spans
    fix_operators("what is 35670 tiems 746")        # "what is 35670 times 746"
    number_spans("double (8293 minus 466) by 687")  # ["8293", "466", "687"]
    number_spans("fifty nine plus चारशे तेरा")        # ["fifty nine", "चारशे तेरा"]
    request_spans("average of 4, 8 and 15")       # Spans(["4", "8", "15", "3"], need=[[0], [1], [2], [3]],
                                                  #       arithmetic=True, operators="+/"): for the grammar

A number span is a whole number as bulletd.agents.numerals.plain reads it: a run of ASCII or
Devanagari digits (with a decimal part), or a run of number words of either language (typos
within plain()'s allowance included; hyphens inside, "and" after hundred or thousand: "two
hundred and five", "thirty-nine"; digits before a scale word: "5 hundred"), split where it stops
reading as one number ("nine fifty" -> "nine", "fifty"). request_spans gives the calc schema's
"x-copy": "spans" string these numbers, each to be used exactly once, the constants its operator
words ask for (CONSTANTS: 2 for a half, a double or a square, 3 for a cube, 4 for a quarter; the
count of the numbers for an average) and the operators they ask for (LICENSES), in an arithmetic
expression (bulletd.runtime.grammar.Spans; its docstring has the details).

fix_operators replaces a word that is no word of OPERATORS but one edit (a letter added, dropped,
changed, or two neighbours swapped; for a word of four letters only a swap) from exactly one of
them (of several, the one as long), and never a word that reads as a number word or is a common word (KEEP).
"""
from __future__ import annotations

import re
from functools import lru_cache

from bulletd.agents.numerals import _NUMBER, _TO_ASCII, FILLER, WORDS, _distance, lookup, words_value
from bulletd.errors import RequestError
from bulletd.runtime.grammar import MAX_SPANS, Spans, is_word_char

CONSTANTS = {"2": frozenset("half halve halved halves double doubled doubles twice square squared squares "
                             "अर्धे अर्धा निम्मे दुप्पट वर्ग स्क्वेअर".split()),
             "3": frozenset("cube cubed cubes घन क्यूब".split()),
             "4": frozenset("quarter quartered quarters fourth पाव चतुर्थांश चौथा".split())}
AVERAGE = frozenset("average mean avg सरासरी".split())
PERCENT = frozenset("percent percentage pc pct cent टक्के".split())
MAX_NUMBERS = 120       # numbers of one utterance given to the grammar (with the counts: < MAX_SPANS)
MAX_EXPRESSION = 160    # the calc schema's maxLength: the numbers are needed only where they fit
FRACTIONS = frozenset("half quarter fourth third चतुर्थांश".split())

OPERATORS = frozenset((
    "plus minus times multiply multiplied divide divided percent percentage cent half halve halved double "
    "doubled twice quarter quartered square squared cube cubed power exponent average mean total sum "
    "summed subtract difference product quotient raised fourth split combined increase increased "
    "decrease decreased reduced remove ratio "
    "अधिक वजा उणे गुणिले गुणा भागिले भागीले टक्के अर्धे निम्मे दुप्पट वर्ग घन घात सरासरी बेरीज").split())
# the operators a word asks for: an expression uses only those of its utterance's words and
# symbols (all of them when it has none of these)
LICENSES = {
    "+": "plus add added adding sum summed total combined more increase increased increases "
         "अधिक बेरीज प्लस टोटल मिळव मिळवा एकूण",
    "-": "minus subtract subtracted subtracting less difference decrease decreased reduce reduced "
         "remove take away वजा उणे मायनस फरक काढ काढा",
    "*": "times multiply multiplied multiplying product x into lots groups double doubled doubles twice "
         "percent percentage pc pct cent गुणिले गुणा गुण गुणाकार इंटू दुप्पट टक्के",
    "/": "divide divided dividing over per ratio quotient shared split half halve halved halves quarter "
         "quartered quarters fourth average mean avg भागिले भागीले भाग भागल्यावर अर्धे अर्धा निम्मे "
         "पाव चतुर्थांश चौथा सरासरी",
    "^": "power exponent raised square squared squares cube cubed cubes वर्ग घन घात स्क्वेअर क्यूब",
    "%": "percent percentage pc pct cent टक्के",
}
_LICENSED = {}
for _op, _words in LICENSES.items():
    for _w in _words.split():
        _LICENSED[_w] = _LICENSED.get(_w, "") + _op
for _w in ("average", "mean", "avg", "सरासरी"):
    _LICENSED[_w] += "+"
_SYMBOLS = {"+": "+", "-": "-", "−": "-", "*": "*", "×": "*", "/": "/", "÷": "/", "^": "^", "%": "%*"}

KEEP = frozenset("lower tower mower summer timer times tides dimes mines halls cuber plush meant means "
                 "totals powers squares cubes doubles halves".split())
_SCALES = ("hundred", "thousand", "lakh", "hundreds")


def _tokens(text: str) -> list[tuple[int, int]]:
    """(start, end) of each word of text: a maximal run of word characters (letters, marks,
    digits of any script), with a hyphen between two letters ("thirty-nine") and a point between
    two digits ("3.5") kept inside."""
    out, i, n = [], 0, len(text)
    while i < n:
        if not is_word_char(text[i]):
            i += 1
            continue
        j = i
        while j < n:
            if is_word_char(text[j]):
                j += 1
            elif 0 < j < n - 1 and ((text[j] == "-" and text[j - 1].isalpha() and text[j + 1].isalpha()) or
                                    (text[j] == "." and text[j - 1].isdigit() and text[j + 1].isdigit())):
                j += 1
            else:
                break
        out.append((i, j))
        i = j
    return out


def _kind(word: str) -> str | None:
    """"digits", "scale" (hundred, thousand, lakh, a Marathi hundreds word), "word" (another
    number word), "and", or None."""
    if _NUMBER.fullmatch(word):
        return "digits"
    if word.casefold() in _LICENSED:      # an operator word is never a number ("चौथा", fourth)
        return None
    if word.casefold() in FILLER:
        return "and" if word.isascii() else None
    kinds = [lookup(p) for p in word.split("-")]
    if any(k is None for k in kinds):
        return None
    return "scale" if kinds[-1][0] in _SCALES else "word"


def _value_ok(phrase: str) -> bool:
    if _NUMBER.fullmatch(phrase):
        return True
    try:
        words_value(re.sub(r"(?<=[^\W\d_])-(?=[^\W\d_])", " ", phrase))
        return True
    except RequestError:
        return False


def number_spans(text: str) -> list[str]:
    """The whole numbers of text, in order, each as typed (spaces inside made single)."""
    return [x for phrase, parts, _ in number_readings(text) for x in (phrase, *parts)]


def number_readings(text: str) -> list[tuple[str, tuple[str, ...], int]]:
    """The numbers of text, in order: (as typed, its parts when "and" joins it, the index of the
    word after it), for number_spans and request_spans."""
    toks = _tokens(text)
    kinds = [_kind(text[a:b]) for a, b in toks]
    out: list = []
    i = 0
    while i < len(toks):
        if kinds[i] in (None, "and"):
            i += 1
            continue
        run = [i]                 # a run of number tokens with only spaces between them
        while run[-1] + 1 < len(toks) and kinds[run[-1] + 1] is not None and \
                not text[toks[run[-1]][1]:toks[run[-1] + 1][0]].strip():
            run.append(run[-1] + 1)
        while run and kinds[run[-1]] == "and":
            run.pop()
        out += _split(text, toks, kinds, run[0], run[-1] + 1)
        i = run[-1] + 1
        while i < len(toks) and kinds[i] == "and":
            i += 1
    return out


def _split(text: str, toks: list, kinds: list, i: int, end: int) -> list:
    """The run toks[i:end] cut into the longest prefixes that read as one number; "and" joins
    only after a scale word, and a run joined by "and" also yields its parts ("eight hundred and
    three" and "eight hundred", "three": the utterance reads both ways)."""
    out = []
    while i < end:
        if kinds[i] == "and":
            i += 1
            continue
        for j in range(end, i, -1):
            if kinds[j - 1] == "and":
                continue
            if any(kinds[k] == "and" and kinds[k - 1] != "scale" for k in range(i + 1, j)):
                continue
            if kinds[i:j].count("digits") > 1 or (kinds[i] == "digits" and j - i > 1 and kinds[i + 1] != "scale"):
                continue
            phrase = " ".join(text[toks[i][0]:toks[j - 1][1]].split())
            if _value_ok(phrase):
                parts = []
                if "and" in kinds[i:j]:
                    cuts = [k for k in range(i, j) if kinds[k] == "and"]
                    for a, b in zip([i] + [k + 1 for k in cuts], cuts + [j]):
                        sub = " ".join(text[toks[a][0]:toks[b - 1][1]].split())
                        if _value_ok(sub):
                            parts.append(sub)
                out.append((phrase, tuple(parts), j))
                i = j
                break
        else:
            i += 1
    return out


def allowed_spans(text: str) -> list[str]:
    """The spans a calc call may copy (request_spans(text).items as strings)."""
    return [x.decode("utf-8") for x in request_spans(text).items]


def request_spans(text: str) -> Spans:
    """The grammar's spans for a calc utterance (bulletd.runtime.grammar.Spans), in an
    arithmetic expression with the operators its words ask for (operators()):
      - its numbers (the first MAX_NUMBERS), each used exactly once, as one of its readings
        ("eight hundred and three" whole or both parts; a "two" or the 2 it stands for: "two
        times seven" -> " seven * 2 "); a number that is not surely one (_sure: a lone word read
        through a typo, a lone "one" or "two") and "one" before a fraction word ("one half of
        8") may go unused;
      - the constant of each word that asks for one (CONSTANTS: half 2, cube 3, quarter 4...),
        and for an average word the count of the numbers (one of the counts when "and" reads two
        ways or some numbers may go unused), each used once, after every number: no parenthesis
        closes before every needed number is in ("( a + b + c ) / 3", " 8 / 2 ");
      - a percent word needs a %.
    Without numbers, or when their shortest expression would not fit MAX_EXPRESSION, the
    numbers and constants are only allowed, not needed."""
    items = number_readings(text)[:MAX_NUMBERS]
    words = [text[a:b].casefold() for a, b in _tokens(text)]
    spans: list[str] = []
    need: list[list[int]] = []
    tail: list[int] = []
    twos = []
    sure = 0
    for phrase, parts, after in items:
        if not _sure(phrase) or (after < len(words) and words[after] in FRACTIONS and _value(phrase) == 1):
            spans.append(phrase)          # allowed, not needed: "one half of 8", "hi there"
            spans += parts
            if phrase != "2" and _value(phrase) == 2:
                spans.append("2")         # "two times seven" -> " seven * 2 "
            continue
        sure += 1
        whole = len(spans)
        spans.append(phrase)
        groups = [[whole]]
        if parts:
            groups = [[whole, len(spans) + k] for k in range(len(parts))]
            spans += parts
        if phrase != "2" and _value(phrase) == 2:
            twos.append(len(need))        # its reading as the constant 2: added below
        need += groups
    said = len(items)
    for g in twos:
        need[g].append(len(spans))
        spans.append("2")
    for w in words:
        for c, asks in CONSTANTS.items():
            if w in asks:
                tail.append(len(need))
                need.append([len(spans)])
                spans.append(c)
    if AVERAGE.intersection(words) and said:
        lo = sure
        hi = sum(max(1, len(parts)) for _, parts, _ in items)
        counts = [str(k) for k in range(max(2, lo), hi + 1)]
        if counts:
            tail.append(len(need))
            need.append(list(range(len(spans), len(spans) + len(counts))))
            spans += counts
    size = sum(len(spans[g[0]]) + 3 for g in need) + 4
    if not said or size > MAX_EXPRESSION or len(spans) > MAX_SPANS:
        return Spans(spans[:MAX_SPANS])
    percent = "%" in text or bool(PERCENT.intersection(words))
    return Spans(spans, need=need, arithmetic=True, operators=operators(text), needed="%" if percent else "",
                 tail=tail)


def operators(text: str) -> str:
    """The operators the words and symbols of text ask for (LICENSES), in "+-*/^%" order; all
    of them when it has none."""
    got = set()
    for a, b in _tokens(text):
        got.update(_LICENSED.get(text[a:b].casefold(), ""))
    bounds = _tokens(text)
    k = 0
    for i, ch in enumerate(text):
        while k < len(bounds) and bounds[k][1] <= i:
            k += 1
        if ch in _SYMBOLS and not (k < len(bounds) and bounds[k][0] <= i):
            got.update(_SYMBOLS[ch])
    return "".join(op for op in "+-*/^%" if op in got) or "+-*/^%"


LOOSE = frozenset("one two एक दोन".split())     # also "a", "a couple": a lone one is no sure number


def _sure(phrase: str) -> bool:
    """phrase is surely a number: digits, or number words spelled right or of which at most half
    have a typo ("egihty eight"; a lone "there" may be a "three" with a typo, "your" a "four"),
    not a lone LOOSE word."""
    if _NUMBER.fullmatch(phrase):
        return True
    words = [w for w in phrase.casefold().replace("-", " ").split() if w not in FILLER]
    right = sum(1 for w in words if w in WORDS or _NUMBER.fullmatch(w))
    return phrase.casefold() not in LOOSE and (right == len(words) or (len(words) > 1 and 2 * right >= len(words)))


def _value(phrase: str) -> float:
    if _NUMBER.fullmatch(phrase):
        return float(phrase.translate(_TO_ASCII))
    return words_value(re.sub(r"(?<=[^\W\d_])-(?=[^\W\d_])", " ", phrase))


@lru_cache(maxsize=8192)
def _near(word: str) -> str | None:
    w = word.casefold()
    if len(w) < 4 or w in OPERATORS or w in KEEP or lookup(w) is not None:
        return None
    hits = [op for op in OPERATORS if _distance(w, op, 1) <= 1 and (len(w) >= 5 or sorted(w) == sorted(op))]
    if len(hits) > 1:       # a tie goes to the word of the same length (two letters swapped)
        hits = [h for h in hits if len(h) == len(w)]
    return hits[0] if len(hits) == 1 else None


def fix_operators(text: str) -> str:
    """text with each operator word that has a typo spelled right (see the module's docstring)."""
    out, pos = [], 0
    for a, b in _tokens(text):
        fix = _near(text[a:b])
        if fix is not None:
            out += [text[pos:a], fix]
            pos = b
    return "".join(out) + text[pos:]


UNARY = frozenset("half halve halved double doubled twice quarter quartered square squared cube cubed "
                  "अर्धे निम्मे दुप्पट वर्ग घन".split())
SYMBOLS = frozenset("+-*/×÷^%")


def is_arithmetic(text: str) -> bool:
    """The utterance reads as arithmetic: two numbers or more with an operator word or symbol
    between them, or a number with a one-number operator word (half, double, squared...), operator
    typos spelled right first. The router's hint for the calc child when the mother is unsure."""
    fixed = fix_operators(text)
    words = {fixed[a:b].casefold() for a, b in _tokens(fixed)}
    n = len(number_spans(fixed))
    if n >= 2 and (words & OPERATORS or any(c in SYMBOLS for c in fixed)):
        return True
    return n >= 1 and bool(words & UNARY)
