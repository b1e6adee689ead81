"""Numbers as people type them: ASCII digits, Devanagari digits (२४), English words
("forty two") and Marathi words ("बेचाळीस"), 0..9999.

    from trainer.agentdata.numbers import say
    say(42, "en_words") -> "forty two";  say(42, "mr_words") -> "बेचाळीस";  say(42, "deva") -> "४२"
"""
from __future__ import annotations

DEVA_DIGITS = "०१२३४५६७८९"
_TO_DEVA = str.maketrans("0123456789", DEVA_DIGITS)

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

KINDS = ("digits", "deva", "en_words", "mr_words")


def to_deva(s: str) -> str:
    return s.translate(_TO_DEVA)


def en_words(n: int) -> str:
    if not 0 <= n <= 9999:
        raise ValueError(f"en_words: {n} out of 0..9999")
    if n < 20:
        return EN_ONES[n]
    if n < 100:
        t, o = divmod(n, 10)
        return EN_TENS[t] + ("" if o == 0 else " " + EN_ONES[o])
    if n < 1000:
        h, r = divmod(n, 100)
        return EN_ONES[h] + " hundred" + ("" if r == 0 else " " + en_words(r))
    k, r = divmod(n, 1000)
    return en_words(k) + " thousand" + ("" if r == 0 else " " + en_words(r))


def mr_words(n: int) -> str:
    if not 0 <= n <= 9999:
        raise ValueError(f"mr_words: {n} out of 0..9999")
    if n <= 100:
        return MR_0_100[n]
    if n < 1000:
        h, r = divmod(n, 100)
        return (MR_HUNDREDS[h] if r else ("शंभर" if h == 1 else MR_HUNDREDS[h].removesuffix("शे") + "शे")) + \
            ("" if r == 0 else " " + MR_0_100[r])
    k, r = divmod(n, 1000)
    return MR_0_100[k] + " हजार" + ("" if r == 0 else " " + mr_words(r))


def say(n, kind: str) -> str:
    """n (int, or a float with a short decimal part for the digit kinds) in the given spelling."""
    if kind == "digits":
        return _num(n)
    if kind == "deva":
        return to_deva(_num(n))
    if not float(n).is_integer():
        raise ValueError(f"{kind}: only whole numbers have words, got {n}")
    return en_words(int(n)) if kind == "en_words" else mr_words(int(n))


def _num(n) -> str:
    if isinstance(n, float):
        return f"{n:.6f}".rstrip("0").rstrip(".")
    return str(n)
