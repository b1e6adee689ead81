"""Numbers as people type them, read back into the calc tool's syntax.

The calc child copies an utterance's numbers as typed (ASCII or Devanagari digits, English or Marathi
number words, typos included) and writes ASCII operators between them; copying is far easier for a
small model than converting "four hundred thirteen" digit by digit. plain() turns that expression
into a plain one before the calc tool sees it:

    from bulletd.agents.numerals import plain
    plain(" fifty nine + four hundred thirtene ")    # "59+413"
    plain("( ६ + सतरा ) * two thousand and five")     # "(6+17)*2005"
    plain(" 17 * 23 ")                                # "17*23"

Words: English 0..999999 ("twenty-five", "two hundred and five", "three thousand forty"), Marathi
0..9999999 (a word for each number to 100, "तीनशे", "शंभर", "हजार", "लाख"), digits before a scale
word ("2 thousand"). A word that is no number word is taken for the nearest one when a single one
is within one edit (two for words of seven letters or more; of two as near, the one as long).
Otherwise, and for words in an order no number is said in ("nine fifty"), RequestError
("calc_error") names the word.
"""
from __future__ import annotations

import re
from functools import lru_cache

from bulletd.errors import RequestError

DEVA_DIGITS = "०१२३४५६७८९"
_TO_ASCII = str.maketrans(DEVA_DIGITS, "0123456789")

EN_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
           "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
EN_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]

# Marathi has a distinct word for every number 0..100
MR_0_100 = (
    "शून्य एक दोन तीन चार पाच सहा सात आठ नऊ दहा अकरा बारा तेरा चौदा पंधरा सोळा सतरा अठरा एकोणीस वीस "
    "एकवीस बावीस तेवीस चोवीस पंचवीस सव्वीस सत्तावीस अठ्ठावीस एकोणतीस तीस एकतीस बत्तीस तेहेतीस चौतीस "
    "पस्तीस छत्तीस सदतीस अडतीस एकोणचाळीस चाळीस एक्केचाळीस बेचाळीस त्रेचाळीस चव्वेचाळीस पंचेचाळीस "
    "सेहेचाळीस सत्तेचाळीस अठ्ठेचाळीस एकोणपन्नास पन्नास एक्कावन्न बावन्न त्रेपन्न चोपन्न पंचावन्न "
    "छप्पन्न सत्तावन्न अठ्ठावन्न एकोणसाठ साठ एकसष्ठ बासष्ठ त्रेसष्ठ चौसष्ठ पासष्ठ सहासष्ठ सदुसष्ठ "
    "अडुसष्ठ एकोणसत्तर सत्तर एक्काहत्तर बाहत्तर त्र्याहत्तर चौऱ्याहत्तर पंच्याहत्तर शहात्तर "
    "सत्त्याहत्तर अठ्ठ्याहत्तर एकोणऐंशी ऐंशी एक्क्याऐंशी ब्याऐंशी त्र्याऐंशी चौऱ्याऐंशी पंच्याऐंशी "
    "शहाऐंशी सत्त्याऐंशी अठ्ठ्याऐंशी एकोणनव्वद नव्वद एक्क्याण्णव ब्याण्णव त्र्याण्णव चौऱ्याण्णव "
    "पंच्याण्णव शहाण्णव सत्त्याण्णव अठ्ठ्याण्णव नव्व्याण्णव शंभर").split()
assert len(MR_0_100) == 101
MR_HUNDREDS = {1: "एकशे", 2: "दोनशे", 3: "तीनशे", 4: "चारशे", 5: "पाचशे", 6: "सहाशे", 7: "सातशे",
               8: "आठशे", 9: "नऊशे"}

# word -> (kind, value); kinds: "unit" 0..9, "teen" 10..19, "tens" 20..90, "word" a Marathi 0..99,
# "hundreds" a Marathi h*100 ("तीनशे"), "hundred" (x100), "thousand" (x1000), "lakh" (x100000)
WORDS: dict[str, tuple[str, int]] = {}
for _i, _w in enumerate(EN_ONES):
    WORDS[_w] = ("unit" if _i < 10 else "teen", _i)
for _i, _w in enumerate(EN_TENS):
    if _w:
        WORDS[_w] = ("tens", _i * 10)
for _i, _w in enumerate(MR_0_100[:100]):
    WORDS[_w] = ("word", _i)
for _h, _w in MR_HUNDREDS.items():
    WORDS[_w] = ("hundreds", _h * 100)
WORDS.update({"शंभर": ("hundreds", 100), "hundred": ("hundred", 100), "thousand": ("thousand", 1000),
              "हजार": ("thousand", 1000), "लाख": ("lakh", 100000)})
FILLER = {"and", "आणि"}            # "two hundred and five"

_OPS = "+-*/^%()×÷−"
_NUMBER = re.compile(r"[0-9०-९]+(?:\.[0-9०-९]+)?|\.[0-9०-९]+")
_HAS_WORD = re.compile(r"[^\W\d_]|[०-९]")


def _err(msg: str) -> RequestError:
    return RequestError("calc_error", msg)


def _distance(a: str, b: str, limit: int) -> int:
    """Edit distance with adjacent transpositions (optimal string alignment); limit + 1 when larger."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2, prev = None, list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


@lru_cache(maxsize=8192)
def lookup(word: str) -> tuple[str, int] | None:
    """The number word `word` stands for: exact, or the single nearest within the typo allowance."""
    w = word.casefold()
    if w in WORDS:
        return WORDS[w]
    if len(w) < 4:
        return None
    limit = 1 if len(w) < 7 else 2
    best, hits = limit + 1, []
    for cand in WORDS:
        d = _distance(w, cand, limit)
        if d < best:
            best, hits = d, [cand]
        elif d == best and d <= limit:
            hits.append(cand)
    if len(hits) > 1:       # a tie goes to the word of the same length (two letters swapped)
        hits = [h for h in hits if len(h) == len(w)]
    return WORDS[hits[0]] if len(hits) == 1 else None


def words_value(phrase: str) -> int:
    """The value of a phrase of number words (English or Marathi, digits allowed before a scale word)."""
    total = 0          # thousands and lakhs already closed
    group = 0          # hundreds of the current group
    small = None       # the part below a hundred; None before any number
    last = None        # kind of the previous word
    for raw in phrase.split():
        if raw.casefold() in FILLER:
            continue
        if _NUMBER.fullmatch(raw):
            kind, v = "digits", raw.translate(_TO_ASCII)
            if "." in v:
                raise _err(f"{phrase!r}: a decimal number inside number words")
            v = int(v)
        else:
            hit = lookup(raw)
            if hit is None:
                raise _err(f"{raw!r} in {phrase!r} is not a number word")
            kind, v = hit
        bad = _err(f"{phrase!r} is not a number (at {raw!r})")
        if kind in ("unit", "teen", "tens", "word", "digits"):
            if small is not None:
                if not (last == "tens" and kind == "unit" and v > 0):
                    raise bad
                small += v
            else:
                small = v
        elif kind == "hundreds":
            if small is not None or group:
                raise bad
            group = v
        elif kind == "hundred":
            if small is None or group or small == 0 or small > 99:
                raise bad
            group, small = small * 100, None
        else:                                       # thousand, lakh
            part = group + (small or 0)
            if part == 0 or (total and total <= part * v):
                raise bad
            total += part * v
            group, small = 0, None
        last = kind
    if last is None:
        raise _err(f"{phrase!r} holds no number")
    return total + group + (small or 0)


def _number(phrase: str) -> str:
    p = phrase.strip()
    if _NUMBER.fullmatch(p):
        return p.translate(_TO_ASCII)
    if _HAS_WORD.search(p):
        return str(words_value(p))
    return p            # left to the calc tool, which says what is wrong with it


def plain(expr: str) -> str:
    """`expr` in the calc tool's syntax: numbers in ASCII digits, no spaces around operators.
    RequestError("calc_error") for words that are no number."""
    if not isinstance(expr, str):
        return expr
    out, buf = [], []
    for i, ch in enumerate(expr):
        joiner = ch == "-" and 0 < i < len(expr) - 1 and expr[i - 1].isalpha() and expr[i + 1].isalpha()
        if ch in _OPS and not joiner:
            if "".join(buf).strip():
                out.append(_number("".join(buf)))
            buf = []
            out.append(ch)
        else:
            buf.append(" " if joiner else ch)
    if "".join(buf).strip():
        out.append(_number("".join(buf)))
    return "".join(out)
