"""Numbers as people type them: ASCII digits, Devanagari digits (२४), English words
("forty two") and Marathi words ("बेचाळीस"), 0..9999. The word tables are bulletd's
(bulletd.agents.numerals), which reads them back.

    from trainer.agentdata.numbers import say
    say(42, "en_words") -> "forty two";  say(42, "mr_words") -> "बेचाळीस";  say(42, "deva") -> "४२"
"""
from __future__ import annotations

from bulletd.agents.numerals import DEVA_DIGITS, EN_ONES, EN_TENS, MR_0_100, MR_HUNDREDS  # noqa: F401

_TO_DEVA = str.maketrans("0123456789", DEVA_DIGITS)

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
