"""What bulletd does with a calc utterance around the child: operator words with a typo are
spelled right before the child reads them, and the call may only copy whole numbers of it.

    from bulletd.agents.calcinput import fix_operators, number_spans, allowed_spans
    fix_operators("what is 35670 tiems 746")        # "what is 35670 times 746"
    number_spans("double (8293 minus 466) by 687")  # ["8293", "466", "687"]
    number_spans("fifty nine plus चारशे तेरा")        # ["fifty nine", "चारशे तेरा"]
    allowed_spans("average of 4, 8 and 15")       # ["4", "8", "15", "2", "3"]: for the grammar

A number span is a whole number as bulletd.agents.numerals.plain reads it: a run of ASCII or
Devanagari digits (with a decimal part), or a run of number words of either language (typos
within plain()'s allowance included; hyphens inside, "and" after hundred or thousand: "two
hundred and five", "thirty-nine"; digits before a scale word: "5 hundred"), split where it stops
reading as one number ("nine fifty" -> "nine", "fifty"). The calc schema's "x-copy": "spans"
string then holds these spans, each at most as often as the utterance has it, and the constants
its operator words need, each once (CONSTANTS: 2 for a half, a double, a square or a power, also
when the utterance says "two"; 3 for a cube; 4 for a quarter; for an average 2 .. the count of
numbers), between ASCII operators and spaces.

fix_operators replaces a word that is no word of OPERATORS but one edit (a letter added, dropped,
changed, or two neighbours swapped; for a word of four letters only a swap) from exactly one of
them (of several, the one as long), and never a word that reads as a number word or is a common word (KEEP).
"""
from __future__ import annotations

import re
from functools import lru_cache

from bulletd.agents.numerals import _NUMBER, _TO_ASCII, FILLER, _distance, lookup, words_value
from bulletd.errors import RequestError
from bulletd.runtime.grammar import is_word_char

CONSTANTS = {"2": frozenset("half halve halved halves double doubled doubles twice square squared squares power "
                             "exponent अर्धे अर्धा निम्मे दुप्पट वर्ग स्क्वेअर घात".split()),
             "3": frozenset("cube cubed cubes घन क्यूब".split()),
             "4": frozenset("quarter quartered quarters fourth पाव चतुर्थांश चौथा".split())}
AVERAGE = frozenset("average mean avg सरासरी".split())
MAX_NUMBERS = 120       # numbers of one utterance given to the grammar (with the counts: < MAX_SPANS)

OPERATORS = frozenset((
    "plus minus times multiply multiplied divide divided percent percentage half halve halved double "
    "doubled twice quarter quartered square squared cube cubed power exponent average mean total sum "
    "summed subtract difference product quotient raised fourth "
    "अधिक वजा उणे गुणिले गुणा भागिले भागीले टक्के अर्धे निम्मे दुप्पट वर्ग घन घात सरासरी बेरीज").split())
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
    toks = _tokens(text)
    kinds = [_kind(text[a:b]) for a, b in toks]
    spans: list[str] = []
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
        spans += _split(text, [toks[k] for k in run], [kinds[k] for k in run])
        i = run[-1] + 1
        while i < len(toks) and kinds[i] == "and":
            i += 1
    return spans


def _split(text: str, toks: list, kinds: list) -> list[str]:
    """A run cut into the longest prefixes that read as one number; "and" joins only after a
    scale word, and a run joined by "and" also yields its parts ("eight hundred and three" and
    "eight hundred", "three": the utterance reads both ways)."""
    out, i = [], 0
    while i < len(toks):
        if kinds[i] == "and":
            i += 1
            continue
        for j in range(len(toks), i, -1):
            if kinds[j - 1] == "and":
                continue
            if any(kinds[k] == "and" and kinds[k - 1] != "scale" for k in range(i + 1, j)):
                continue
            if kinds[i:j].count("digits") > 1 or (kinds[i] == "digits" and j - i > 1 and kinds[i + 1] != "scale"):
                continue
            phrase = " ".join(text[toks[i][0]:toks[j - 1][1]].split())
            if _value_ok(phrase):
                out.append(phrase)
                if "and" in kinds[i:j]:
                    parts = [k for k in range(i, j) if kinds[k] == "and"]
                    for a, b in zip([i] + [k + 1 for k in parts], parts + [j]):
                        sub = " ".join(text[toks[a][0]:toks[b - 1][1]].split())
                        if _value_ok(sub):
                            out.append(sub)
                i = j
                break
        else:
            i += 1
    return out


def allowed_spans(text: str) -> list[str]:
    """The spans a calc call may copy: the utterance's numbers (the first MAX_NUMBERS) and the
    constants its operator words need (CONSTANTS; for an average word 2 .. the number of numbers)."""
    spans = number_spans(text)[:MAX_NUMBERS]
    words = {text[a:b].casefold() for a, b in _tokens(text)}
    out = [c for c, need in CONSTANTS.items() if words & need]
    if "2" not in out and any(_value_ok(x) and _value(x) == 2 for x in spans):
        out.insert(0, "2")          # "two times seven": " seven * 2 "
    if words & AVERAGE:
        out += [str(k) for k in range(2, len(spans) + 1) if str(k) not in out]
    return spans + out


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
