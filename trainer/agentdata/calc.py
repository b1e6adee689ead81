"""Calc agent data: arithmetic questions (English, Marathi; digits in both scripts, number words in
both languages) -> {"expression": ...} in the calc tool's syntax (ASCII digits, + - * / ^, postfix
%, parentheses), with the exact answer.

Operations: plus, minus, times, divided by, "x percent of y" (`x%*y`), half / double / quarter,
squared / cubed / power, average, sums of lists, parentheses.

Line: {"text", "call": {"expression"}, "answer": number, "category": "digits"|"words"|"mr_digits"|
"mr_words"|"deva_digits", "kind": operation}. The test split uses its own templates (frames, word
orders, fillers) and typos in the non-number words; a fifth of its lines use operator verbs that
training never has ("add 3 and 4", "गुण"), reported apart as "<category>-novel".
"""
from __future__ import annotations

import random
from fractions import Fraction

from trainer.agentdata import check_split
from trainer.agentdata.noise import add_noise
from trainer.agentdata.numbers import say

SCHEMA = {
    "type": "object",
    "properties": {"expression": {"type": "string", "maxLength": 160}},
    "required": ["expression"],
    "additionalProperties": False,
}

# templates: {a} {b} {c} numbers as typed, {L} a list ("3, 4 and 5"). Expression patterns use the
# same letters with ASCII digits. Each entry: (text template, expression pattern).
T = {
    "train": {
        "en": {
            "add": [("what is {a} plus {b}", "{a}+{b}"), ("{a} plus {b}", "{a}+{b}"), ("{a} + {b}", "{a}+{b}"),
                    ("calculate {a} plus {b}", "{a}+{b}"), ("what's {a} + {b}", "{a}+{b}")],
            "sub": [("what is {a} minus {b}", "{a}-{b}"), ("{a} minus {b}", "{a}-{b}"), ("{a} - {b}", "{a}-{b}"),
                    ("calculate {a} minus {b}", "{a}-{b}")],
            "mul": [("what is {a} times {b}", "{a}*{b}"), ("{a} times {b}", "{a}*{b}"), ("{a} x {b}", "{a}*{b}"),
                    ("{a} multiplied by {b}", "{a}*{b}"), ("{a} * {b}", "{a}*{b}"), ("what's {a} times {b}", "{a}*{b}")],
            "div": [("what is {a} divided by {b}", "{a}/{b}"), ("{a} divided by {b}", "{a}/{b}"), ("{a} / {b}", "{a}/{b}"),
                    ("calculate {a} divided by {b}", "{a}/{b}")],
            "pct": [("what is {a} percent of {b}", "{a}%*{b}"), ("{a}% of {b}", "{a}%*{b}"),
                    ("{a} percent of {b}", "{a}%*{b}")],
            "half": [("half of {a}", "{a}/2"), ("what is half of {a}", "{a}/2")],
            "double": [("double {a}", "{a}*2"), ("twice {a}", "{a}*2"), ("what is double {a}", "{a}*2")],
            "quarter": [("a quarter of {a}", "{a}/4"), ("what is a quarter of {a}", "{a}/4")],
            "square": [("{a} squared", "{a}^2"), ("what is {a} squared", "{a}^2"), ("square of {a}", "{a}^2")],
            "cube": [("{a} cubed", "{a}^3"), ("what is {a} cubed", "{a}^3"), ("cube of {a}", "{a}^3")],
            "pow": [("{a} to the power of {b}", "{a}^{b}"), ("{a} to the power {b}", "{a}^{b}"), ("{a} ^ {b}", "{a}^{b}")],
            "avg": [("average of {L}", "({S})/{n}"), ("what is the average of {L}", "({S})/{n}"),
                    ("mean of {L}", "({S})/{n}")],
            "sum": [("sum of {L}", "{S}"), ("what is the sum of {L}", "{S}"), ("total of {L}", "{S}")],
            "paren": [("({a} plus {b}) times {c}", "({a}+{b})*{c}"), ("({a} + {b}) * {c}", "({a}+{b})*{c}"),
                      ("{a} times ({b} plus {c})", "{a}*({b}+{c})"), ("({a} minus {b}) divided by {c}", "({a}-{b})/{c}"),
                      ("{a} plus {b}, all times {c}", "({a}+{b})*{c}")],
            "chain": [("{a} plus {b} minus {c}", "{a}+{b}-{c}"), ("{a} times {b} plus {c}", "{a}*{b}+{c}"),
                      ("{a} + {b} * {c}", "{a}+{b}*{c}")],
        },
        "mr": {
            "add": [("{a} अधिक {b}", "{a}+{b}"), ("{a} अधिक {b} किती", "{a}+{b}"), ("{a} आणि {b} ची बेरीज", "{a}+{b}"),
                    ("{a} + {b} किती", "{a}+{b}")],
            "sub": [("{a} वजा {b}", "{a}-{b}"), ("{a} वजा {b} किती", "{a}-{b}"), ("{a} - {b} किती", "{a}-{b}")],
            "mul": [("{a} गुणिले {b}", "{a}*{b}"), ("{a} गुणिले {b} किती", "{a}*{b}"), ("{a} गुणा {b}", "{a}*{b}"),
                    ("{a} x {b} किती", "{a}*{b}")],
            "div": [("{a} भागिले {b}", "{a}/{b}"), ("{a} भागिले {b} किती", "{a}/{b}"), ("{a} / {b} किती", "{a}/{b}")],
            "pct": [("{b} चे {a} टक्के", "{a}%*{b}"), ("{b} चे {a} टक्के किती", "{a}%*{b}"), ("{b} च्या {a}%", "{a}%*{b}")],
            "half": [("{a} चे अर्धे", "{a}/2"), ("{a} चे अर्धे किती", "{a}/2")],
            "double": [("{a} ची दुप्पट", "{a}*2"), ("{a} ची दुप्पट किती", "{a}*2")],
            "quarter": [("{a} चा पाव भाग", "{a}/4"), ("{a} चा एक चतुर्थांश", "{a}/4")],
            "square": [("{a} चा वर्ग", "{a}^2"), ("{a} चा वर्ग किती", "{a}^2")],
            "cube": [("{a} चा घन", "{a}^3"), ("{a} चा घन किती", "{a}^3")],
            "pow": [("{a} चा {b} वा घात", "{a}^{b}"), ("{a} ची घात {b}", "{a}^{b}")],
            "avg": [("{L} यांची सरासरी", "({S})/{n}"), ("{L} ची सरासरी किती", "({S})/{n}")],
            "sum": [("{L} यांची बेरीज", "{S}"), ("{L} ची बेरीज किती", "{S}")],
            "paren": [("({a} अधिक {b}) गुणिले {c}", "({a}+{b})*{c}"), ("{a} गुणिले ({b} अधिक {c})", "{a}*({b}+{c})"),
                      ("({a} वजा {b}) भागिले {c}", "({a}-{b})/{c}")],
            "chain": [("{a} अधिक {b} वजा {c}", "{a}+{b}-{c}"), ("{a} गुणिले {b} अधिक {c}", "{a}*{b}+{c}")],
        },
    },
    "test": {   # the training operator words in frames and fillers training never uses
        "en": {
            "add": [("how much is {a} plus {b}", "{a}+{b}"), ("{a} plus {b} is how much", "{a}+{b}")],
            "sub": [("how much is {a} minus {b}", "{a}-{b}"), ("{a} minus {b} is how much", "{a}-{b}")],
            "mul": [("how much is {a} times {b}", "{a}*{b}"), ("{a} times {b} is how much", "{a}*{b}"),
                    ("how much is {a} multiplied by {b}", "{a}*{b}")],
            "div": [("how much is {a} divided by {b}", "{a}/{b}"), ("{a} divided by {b} is how much", "{a}/{b}")],
            "pct": [("how much is {a} percent of {b}", "{a}%*{b}"), ("{a} percent of {b} is how much", "{a}%*{b}")],
            "half": [("how much is half of {a}", "{a}/2")],
            "double": [("how much is double {a}", "{a}*2"), ("how much is twice {a}", "{a}*2")],
            "quarter": [("how much is a quarter of {a}", "{a}/4")],
            "square": [("how much is {a} squared", "{a}^2"), ("{a} squared is how much", "{a}^2")],
            "cube": [("how much is {a} cubed", "{a}^3")],
            "pow": [("how much is {a} to the power of {b}", "{a}^{b}")],
            "avg": [("how much is the average of {L}", "({S})/{n}"), ("the average of {L} is how much", "({S})/{n}")],
            "sum": [("how much is the sum of {L}", "{S}")],
            "paren": [("how much is ({a} plus {b}) times {c}", "({a}+{b})*{c}")],
            "chain": [("how much is {a} plus {b} minus {c}", "{a}+{b}-{c}")],
        },
        "mr": {
            "add": [("{a} अधिक {b} किती होतात", "{a}+{b}")],
            "sub": [("{a} वजा {b} किती होतात", "{a}-{b}")],
            "mul": [("{a} गुणिले {b} किती होतात", "{a}*{b}")],
            "div": [("{a} भागिले {b} किती होतात", "{a}/{b}")],
            "pct": [("{b} चे {a} टक्के किती होतात", "{a}%*{b}")],
            "half": [("{a} चे अर्धे किती होतात", "{a}/2")],
            "double": [("{a} ची दुप्पट किती होते", "{a}*2")],
            "quarter": [("{a} चा पाव भाग किती होतो", "{a}/4")],
            "square": [("{a} चा वर्ग किती होतो", "{a}^2")],
            "cube": [("{a} चा घन किती होतो", "{a}^3")],
            "pow": [("{a} चा {b} वा घात किती होतो", "{a}^{b}")],
            "avg": [("{L} यांची सरासरी किती होते", "({S})/{n}")],
            "sum": [("{L} यांची बेरीज किती होते", "{S}")],
            "paren": [("({a} अधिक {b}) गुणिले {c} किती होतात", "({a}+{b})*{c}")],
            "chain": [("{a} अधिक {b} वजा {c} किती होतात", "{a}+{b}-{c}")],
        },
    },
    "novel": {  # verbs training never uses; reported apart (category "<category>-novel")
        "en": {
            "add": [("add {a} and {b}", "{a}+{b}"), ("{a} and {b} added together", "{a}+{b}")],
            "sub": [("subtract {b} from {a}", "{a}-{b}"), ("take {b} away from {a}", "{a}-{b}")],
            "mul": [("multiply {a} by {b}", "{a}*{b}"), ("the product of {a} and {b}", "{a}*{b}")],
            "div": [("divide {a} by {b}", "{a}/{b}"), ("{a} over {b}", "{a}/{b}")],
            "pct": [("compute {a} percent of {b}", "{a}%*{b}")],
            "half": [("{a} halved", "{a}/2")],
            "double": [("{a} doubled", "{a}*2")],
            "quarter": [("one fourth of {a}", "{a}/4")],
            "square": [("the square of {a}", "{a}^2"), ("{a} raised to 2", "{a}^2")],
            "cube": [("the cube of {a}", "{a}^3"), ("{a} raised to 3", "{a}^3")],
            "pow": [("{a} raised to {b}", "{a}^{b}"), ("{a} raised to the {b}", "{a}^{b}")],
            "avg": [("find the average of {L}", "({S})/{n}")],
            "sum": [("add up {L}", "{S}")],
            "paren": [("multiply ({a} plus {b}) by {c}", "({a}+{b})*{c}"), ("divide ({a} minus {b}) by {c}", "({a}-{b})/{c}")],
            "chain": [("subtract {c} from {a} plus {b}", "{a}+{b}-{c}")],
        },
        "mr": {
            "add": [("{a} मध्ये {b} मिळव", "{a}+{b}"), ("{a} आणि {b} यांची एकूण बेरीज सांग", "{a}+{b}")],
            "sub": [("{a} मधून {b} वजा कर", "{a}-{b}"), ("{a} मधून {b} काढ", "{a}-{b}")],
            "mul": [("{a} ला {b} ने गुण", "{a}*{b}"), ("{a} आणि {b} यांचा गुणाकार", "{a}*{b}")],
            "div": [("{a} ला {b} ने भाग", "{a}/{b}"), ("{a} ला {b} ने भागल्यावर किती", "{a}/{b}")],
            "pct": [("{b} मधले {a} टक्के सांग", "{a}%*{b}")],
            "half": [("{a} चा अर्धा भाग सांग", "{a}/2")],
            "double": [("{a} च्या दुप्पट सांग", "{a}*2")],
            "quarter": [("{a} चा चौथा हिस्सा", "{a}/4")],
            "square": [("{a} चा वर्ग सांग", "{a}^2")],
            "cube": [("{a} चा घन सांग", "{a}^3")],
            "pow": [("{a} ला {b} वा घात सांग", "{a}^{b}")],
            "avg": [("{L} यांची सरासरी सांग", "({S})/{n}")],
            "sum": [("{L} यांची एकूण बेरीज सांग", "{S}")],
            "paren": [("({a} अधिक {b}) ला {c} ने गुण", "({a}+{b})*{c}")],
            "chain": [("{a} अधिक {b} वजा {c} सांग", "{a}+{b}-{c}")],
        },
    },
}
PRE = {"train": {"en": ["", "", "", "please ", "hey, ", "quick: "], "mr": ["", "", "", "जरा ", "सांग, "]},
       "test": {"en": ["", "tell me ", "could you work out: ", "yo "], "mr": ["", "मला सांग ", "अरे "]}}
POST = {"train": {"en": ["", "", "", "?", " please", " =", " ?"], "mr": ["", "", "", "?", " ना"]},
        "test": {"en": ["", " for me", " thanks!", " quickly"], "mr": ["", " लगेच", " बरं"]}}

KINDS = list(T["train"]["en"])
KIND_WEIGHTS = {"add": 4, "sub": 4, "mul": 4, "div": 3, "pct": 3, "half": 1, "double": 1, "quarter": 1,
                "square": 2, "cube": 1, "pow": 2, "avg": 2, "sum": 2, "paren": 3, "chain": 2}


def _num(rng: random.Random, kind: str, role: str, spelling: str):
    """An operand: small for words and powers, sometimes a decimal for digits."""
    words = spelling.endswith("words")
    if kind == "pow" and role == "b":
        return rng.randint(2, 6)
    if kind in ("square", "cube", "pow") and role == "a":
        return rng.randint(2, 30 if kind != "cube" else 15)
    if kind == "pct" and role == "a":
        return rng.choice([5, 10, 12, 15, 18, 20, 25, 30, 40, 50, 75, rng.randint(1, 99)])
    if kind == "div" and role == "b":
        return rng.randint(2, 20)
    r = rng.random()
    if not words and r < 0.08:
        return round(rng.uniform(0, 100), rng.choice([1, 2]))
    if r < 0.45:
        return rng.randint(0, 20)
    if r < 0.8:
        return rng.randint(21, 100)
    return rng.randint(101, 999 if words else 9999)


def _ascii(v) -> str:
    return say(v, "digits")


def _frac(v) -> Fraction:
    return Fraction(str(v)) if isinstance(v, float) else Fraction(v)


def evaluate(expr: str) -> Fraction:
    """Exact value of an expression this generator writes (digits, + - * / ^ %, parentheses)."""
    toks, i = [], 0
    while i < len(expr):
        c = expr[i]
        if c.isdigit() or c == ".":
            j = i
            while j < len(expr) and (expr[j].isdigit() or expr[j] == "."):
                j += 1
            toks.append(Fraction(expr[i:j]))
            i = j
        else:
            toks.append(c)
            i += 1
    pos = 0

    def peek():
        return toks[pos] if pos < len(toks) else None

    def take():
        nonlocal pos
        pos += 1
        return toks[pos - 1]

    def atom():
        t = take()
        if t == "(":
            v = expr_()
            assert take() == ")"
        else:
            assert isinstance(t, Fraction), expr
            v = t
        while peek() == "%":
            take()
            v = v / 100
        return v

    def power():            # right-associative; binds tighter than unary minus: -2^2 = -4
        b = atom()
        if peek() == "^":
            take()
            e = unary()
            if e.denominator != 1 or abs(e) > 64:
                raise ValueError(f"exponent {e} is not a small whole number")
            return b ** int(e)
        return b

    def unary():
        if peek() == "-":
            take()
            return -unary()
        return power()

    def term():
        v = unary()
        while peek() in ("*", "/"):
            v = v * unary() if take() == "*" else v / unary()
        return v

    def expr_():
        v = term()
        while peek() in ("+", "-"):
            v = v + term() if take() == "+" else v - term()
        return v

    v = expr_()
    assert pos == len(toks), expr
    return v


SPELLINGS = {"en": ["digits", "digits", "en_words"], "mr": ["deva", "digits", "mr_words", "deva"]}
CATEGORY = {("en", "digits"): "digits", ("en", "en_words"): "words", ("mr", "digits"): "mr_digits",
            ("mr", "deva"): "deva_digits", ("mr", "mr_words"): "mr_words"}


def _typo(rng: random.Random, text: str) -> str:
    words = text.split(" ")
    idx = [i for i, w in enumerate(words) if w.isascii() and w.isalpha() and len(w) >= 5]
    if not idx:
        return text
    i = rng.choice(idx)
    w = words[i]
    j = rng.randrange(1, len(w) - 1)
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    return " ".join(words)


NOVEL_SHARE = 0.2   # of the test split: lines with verbs training never uses
NOISE = 0.5         # share of training lines with context noise (trainer.agentdata.noise)


def _one(rng: random.Random, split: str) -> dict:
    pool = "novel" if split == "test" and rng.random() < NOVEL_SHARE else split
    lang = rng.choices(["en", "mr"], weights=[5, 4])[0]
    spelling = rng.choice(SPELLINGS[lang])
    kind = rng.choices(KINDS, weights=[KIND_WEIGHTS[k] for k in KINDS])[0]
    text_t, expr_t = rng.choice(T[pool][lang][kind])
    if spelling.endswith("words") and any(ch in text_t for ch in "+-*/^%x()") and "{L}" not in text_t:
        # symbols with number words read oddly; use digits for those templates
        spelling = "digits" if lang == "en" else "deva"
    vals = {r: _num(rng, kind, r, spelling) for r in "abc"}
    if kind in ("half", "quarter") and rng.random() < 0.7:
        vals["a"] = rng.randrange(2, 200, 2 if kind == "half" else 4)
    text = text_t
    expr = expr_t
    if "{L}" in text_t:
        k = rng.randint(2, 5)
        items = [_num(rng, kind, "a", spelling) for _ in range(k)]
        shown = [say(v, spelling) for v in items]
        sep, last = (", ", " and ") if lang == "en" else (", ", " आणि ")
        if rng.random() < 0.3:
            last = sep
        lst = sep.join(shown[:-1]) + last + shown[-1]
        text = text.replace("{L}", lst)
        expr = expr.replace("{S}", "+".join(_ascii(v) for v in items)).replace("{n}", str(k))
    for r in "abc":
        text = text.replace("{" + r + "}", say(vals[r], spelling))
        expr = expr.replace("{" + r + "}", _ascii(vals[r]))
    text = rng.choice(PRE[split][lang]) + text + rng.choice(POST[split][lang])
    if split == "test" and rng.random() < 0.25:
        text = _typo(rng, text)
    if split == "train":
        from trainer.agentdata.home import banned_words

        keep = [say(vals[r], spelling) for r in "abc"] + ([lst] if "{L}" in text_t else [])
        text = add_noise(rng, text, keep, banned_words(), p=NOISE)
    try:
        value = evaluate(expr)
    except ZeroDivisionError:
        return _one(rng, split)
    answer = int(value) if value.denominator == 1 else float(value)
    return {"text": text, "call": {"expression": expr}, "answer": answer,
            "category": CATEGORY[(lang, spelling)] + ("-novel" if pool == "novel" else ""), "kind": kind}


def generate(split: str = "train", n: int = 1000, seed: int = 0):
    check_split(split)
    rng = random.Random(f"calc/{split}/{seed}")
    for _ in range(n):
        yield _one(rng, split)
