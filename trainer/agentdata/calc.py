"""Calc agent data: arithmetic questions (English, Marathi; digits in both scripts, number words in
both languages) -> {"expression": ...}, with the exact answer.

The expression copies the utterance's numbers as typed (ASCII or Devanagari digits, English or
Marathi words, typos included) between ASCII operators (+ - * / ^, postfix %, parentheses), one
space around every item: "fifty nine plus ४" -> " fifty nine + ४ ". Copying is what a small model
does well; bulletd.agents.numerals.plain reads the numbers back ("59+4") before the calc tool runs.

Operations: plus, minus, times, divided by, "x percent of y" (`x%*y`), half / double / quarter,
squared / cubed / power, average, sums of lists, parentheses. Numbers: digits uniform over their
count, 0..99999 (a decimal now and then); words 0..9999, uniform over 0..19, 20..99, hundreds and
thousands ("twenty-five", "two thousand and five", "तीनशे पंचवीस").

Line: {"text", "call": {"expression"}, "answer": number, "category": "digits"|"words"|"mr_digits"|
"mr_words"|"deva_digits", "kind": operation}. Training lines get context noise
(trainer.agentdata.noise) and typos in English number and operator words. The test split uses its
own templates (frames, word orders, fillers) and swaps two letters of an English word now and then
(number words too); a fifth of its lines use operator verbs that training never has ("add 3 and
4", "गुण"), reported apart as "<category>-novel".
"""
from __future__ import annotations

import random
from fractions import Fraction

from bulletd.agents.numerals import lookup
from trainer.agentdata import check_split
from trainer.agentdata.noise import add_noise, typo
from trainer.agentdata.numbers import EN_TENS, en_words, say

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
                    ("calculate {a} plus {b}", "{a}+{b}"), ("what's {a} + {b}", "{a}+{b}"),
                    ("sum of {a} and {b}", "{a}+{b}"), ("{a} more than {b}", "{b}+{a}"),
                    ("increase {a} by {b}", "{a}+{b}"), ("{a} plus {b} equals", "{a}+{b}"),
                    ("total of {a} and {b}", "{a}+{b}"), ("what does {a} plus {b} make", "{a}+{b}"),
                    ("{a} and {b} combined", "{a}+{b}"), ("{a} increased by {b}", "{a}+{b}"),
                    ("can you do {a} plus {b}", "{a}+{b}"), ("{a} plus {b} gives", "{a}+{b}"),
                    ("need {a} plus {b}", "{a}+{b}"), ("{a} with {b} more", "{a}+{b}")],
            "sub": [("what is {a} minus {b}", "{a}-{b}"), ("{a} minus {b}", "{a}-{b}"), ("{a} - {b}", "{a}-{b}"),
                    ("calculate {a} minus {b}", "{a}-{b}"), ("{a} less {b}", "{a}-{b}"),
                    ("{b} less than {a}", "{a}-{b}"), ("difference between {a} and {b}", "{a}-{b}"),
                    ("decrease {a} by {b}", "{a}-{b}"), ("{a} minus {b} equals", "{a}-{b}"),
                    ("{a} reduced by {b}", "{a}-{b}"), ("remove {b} from {a}", "{a}-{b}"),
                    ("can you do {a} minus {b}", "{a}-{b}"), ("{a} minus {b} gives", "{a}-{b}"),
                    ("need {a} minus {b}", "{a}-{b}"), ("{a} less than {b}", "{b}-{a}")],
            "mul": [("what is {a} times {b}", "{a}*{b}"), ("{a} times {b}", "{a}*{b}"), ("{a} x {b}", "{a}*{b}"),
                    ("{a} multiplied by {b}", "{a}*{b}"), ("{a} * {b}", "{a}*{b}"), ("what's {a} times {b}", "{a}*{b}"),
                    ("{a} into {b}", "{a}*{b}"), ("{a} multiplied with {b}", "{a}*{b}"),
                    ("calculate {a} times {b}", "{a}*{b}"), ("{a} times {b} equals", "{a}*{b}"),
                    ("{a} lots of {b}", "{a}*{b}"), ("{a} groups of {b}", "{a}*{b}"),
                    ("can you do {a} times {b}", "{a}*{b}"), ("{a} times {b} gives", "{a}*{b}"),
                    ("need {a} multiplied by {b}", "{a}*{b}")],
            "div": [("what is {a} divided by {b}", "{a}/{b}"), ("{a} divided by {b}", "{a}/{b}"), ("{a} / {b}", "{a}/{b}"),
                    ("calculate {a} divided by {b}", "{a}/{b}"), ("ratio of {a} to {b}", "{a}/{b}"),
                    ("{a} per {b}", "{a}/{b}"), ("quotient of {a} and {b}", "{a}/{b}"),
                    ("{a} shared among {b}", "{a}/{b}"), ("{a} divided by {b} equals", "{a}/{b}"),
                    ("{a} split into {b}", "{a}/{b}"), ("{a} split between {b}", "{a}/{b}"),
                    ("can you do {a} divided by {b}", "{a}/{b}"), ("{a} divided by {b} gives", "{a}/{b}"),
                    ("need {a} divided by {b}", "{a}/{b}")],
            "pct": [("what is {a} percent of {b}", "{a}%*{b}"), ("{a}% of {b}", "{a}%*{b}"),
                    ("{a} percent of {b}", "{a}%*{b}"), ("{a} per cent of {b}", "{a}%*{b}"),
                    ("what's {a}% of {b}", "{a}%*{b}"), ("{a} pc of {b}", "{a}%*{b}"),
                    ("{a} percentage of {b}", "{a}%*{b}"), ("need {a} percent of {b}", "{a}%*{b}"),
                    ("{a} percent of {b} gives", "{a}%*{b}"), ("{a} pct of {b}", "{a}%*{b}")],
            "half": [("half of {a}", "{a}/2"), ("what is half of {a}", "{a}/2"), ("half {a}", "{a}/2"),
                     ("one half of {a}", "{a}/2"), ("{a} divided in half", "{a}/2"), ("need half of {a}", "{a}/2"), ("{a} in half", "{a}/2")],
            "double": [("double {a}", "{a}*2"), ("twice {a}", "{a}*2"), ("what is double {a}", "{a}*2"),
                       ("double of {a}", "{a}*2"), ("two times {a}", "{a}*2"), ("twice of {a}", "{a}*2"), ("need double {a}", "{a}*2"),
                       ("{a} times two", "{a}*2")],
            "quarter": [("a quarter of {a}", "{a}/4"), ("what is a quarter of {a}", "{a}/4"),
                        ("quarter of {a}", "{a}/4"), ("one quarter of {a}", "{a}/4"), ("{a} quartered", "{a}/4")],
            "square": [("{a} squared", "{a}^2"), ("what is {a} squared", "{a}^2"), ("square of {a}", "{a}^2"),
                       ("square {a}", "{a}^2"), ("{a} square", "{a}^2"), ("{a} to the power of two", "{a}^2"),
                       ("need {a} squared", "{a}^2"), ("{a} squared gives", "{a}^2")],
            "cube": [("{a} cubed", "{a}^3"), ("what is {a} cubed", "{a}^3"), ("cube of {a}", "{a}^3"),
                     ("cube {a}", "{a}^3"), ("{a} cube", "{a}^3")],
            "pow": [("{a} to the power of {b}", "{a}^{b}"), ("{a} to the power {b}", "{a}^{b}"), ("{a} ^ {b}", "{a}^{b}"),
                    ("{a} power {b}", "{a}^{b}"), ("{a} exponent {b}", "{a}^{b}"), ("power {b} of {a}", "{a}^{b}")],
            "avg": [("average of {L}", "({S})/{n}"), ("what is the average of {L}", "({S})/{n}"),
                    ("mean of {L}", "({S})/{n}"), ("avg of {L}", "({S})/{n}"), ("average {L}", "({S})/{n}"),
                    ("{L} average", "({S})/{n}"), ("need the average of {L}", "({S})/{n}"),
                    ("the mean of {L} please", "({S})/{n}")],
            "sum": [("sum of {L}", "{S}"), ("what is the sum of {L}", "{S}"), ("total of {L}", "{S}"),
                    ("total {L}", "{S}"), ("sum {L}", "{S}"), ("{L} summed", "{S}"), ("need the sum of {L}", "{S}"),
                    ("{L} all summed", "{S}")],
            "paren": [("({a} plus {b}) times {c}", "({a}+{b})*{c}"), ("({a} + {b}) * {c}", "({a}+{b})*{c}"),
                      ("{a} times ({b} plus {c})", "{a}*({b}+{c})"), ("({a} minus {b}) divided by {c}", "({a}-{b})/{c}"),
                      ("{a} plus {b}, all times {c}", "({a}+{b})*{c}"), ("({a} minus {b}) times {c}", "({a}-{b})*{c}"),
                      ("{a} divided by ({b} plus {c})", "{a}/({b}+{c})"), ("({a} + {b}) / {c}", "({a}+{b})/{c}"),
                      ("{a} minus {b}, all divided by {c}", "({a}-{b})/{c}")],
            "chain": [("{a} plus {b} minus {c}", "{a}+{b}-{c}"), ("{a} times {b} plus {c}", "{a}*{b}+{c}"),
                      ("{a} + {b} * {c}", "{a}+{b}*{c}"), ("{a} minus {b} plus {c}", "{a}-{b}+{c}"),
                      ("{a} times {b} minus {c}", "{a}*{b}-{c}"), ("{a} plus {b} times {c}", "{a}+{b}*{c}"),
                      ("{a} divided by {b} plus {c}", "{a}/{b}+{c}"), ("{a} - {b} + {c}", "{a}-{b}+{c}")],
        },
        "mr": {
            "add": [("{a} अधिक {b}", "{a}+{b}"), ("{a} अधिक {b} किती", "{a}+{b}"), ("{a} आणि {b} ची बेरीज", "{a}+{b}"),
                    ("{a} + {b} किती", "{a}+{b}"), ("{a} प्लस {b}", "{a}+{b}"), ("{a} आणि {b} यांची बेरीज", "{a}+{b}"),
                    ("{a} अधिक {b} बरोबर", "{a}+{b}"), ("{a} + {b}", "{a}+{b}"), ("{a} अधिक {b} किती येतात", "{a}+{b}"),
                    ("{a} अधिक {b} सांगशील", "{a}+{b}")],
            "sub": [("{a} वजा {b}", "{a}-{b}"), ("{a} वजा {b} किती", "{a}-{b}"), ("{a} - {b} किती", "{a}-{b}"),
                    ("{a} उणे {b}", "{a}-{b}"), ("{a} मायनस {b}", "{a}-{b}"), ("{a} आणि {b} यातील फरक", "{a}-{b}"),
                    ("{a} वजा {b} बरोबर", "{a}-{b}"), ("{a} वजा {b} किती येतात", "{a}-{b}"), ("{a} वजा {b} सांगशील", "{a}-{b}")],
            "mul": [("{a} गुणिले {b}", "{a}*{b}"), ("{a} गुणिले {b} किती", "{a}*{b}"), ("{a} गुणा {b}", "{a}*{b}"),
                    ("{a} x {b} किती", "{a}*{b}"), ("{a} इंटू {b}", "{a}*{b}"), ("{a} गुणिले {b} बरोबर", "{a}*{b}"),
                    ("{a} * {b}", "{a}*{b}"), ("{a} गुणिले {b} किती येतात", "{a}*{b}"), ("{a} गुणिले {b} सांगशील", "{a}*{b}")],
            "div": [("{a} भागिले {b}", "{a}/{b}"), ("{a} भागिले {b} किती", "{a}/{b}"), ("{a} / {b} किती", "{a}/{b}"),
                    ("{a} भागीले {b}", "{a}/{b}"), ("{a} भागिले {b} बरोबर", "{a}/{b}"), ("{a} ÷ {b}", "{a}/{b}"),
                    ("{a} भागिले {b} किती येतात", "{a}/{b}"), ("{a} भागिले {b} सांगशील", "{a}/{b}")],
            "pct": [("{b} चे {a} टक्के", "{a}%*{b}"), ("{b} चे {a} टक्के किती", "{a}%*{b}"), ("{b} च्या {a}%", "{a}%*{b}"),
                    ("{b} च्या {a} टक्के", "{a}%*{b}"), ("{a} टक्के {b} चे", "{a}%*{b}")],
            "half": [("{a} चे अर्धे", "{a}/2"), ("{a} चे अर्धे किती", "{a}/2"), ("{a} चे निम्मे", "{a}/2"),
                     ("{a} निम्मे", "{a}/2")],
            "double": [("{a} ची दुप्पट", "{a}*2"), ("{a} ची दुप्पट किती", "{a}*2"), ("{a} दुप्पट", "{a}*2"),
                       ("दुप्पट {a}", "{a}*2")],
            "quarter": [("{a} चा पाव भाग", "{a}/4"), ("{a} चा एक चतुर्थांश", "{a}/4"), ("{a} चा पाव", "{a}/4"),
                        ("{a} चे पाव", "{a}/4")],
            "square": [("{a} चा वर्ग", "{a}^2"), ("{a} चा वर्ग किती", "{a}^2"), ("{a} वर्ग", "{a}^2"),
                       ("{a} स्क्वेअर", "{a}^2")],
            "cube": [("{a} चा घन", "{a}^3"), ("{a} चा घन किती", "{a}^3"), ("{a} घन", "{a}^3"), ("{a} क्यूब", "{a}^3")],
            "pow": [("{a} चा {b} वा घात", "{a}^{b}"), ("{a} ची घात {b}", "{a}^{b}"), ("{a} चा {b} घात", "{a}^{b}"),
                    ("{a} घात {b}", "{a}^{b}"), ("{a} ^ {b}", "{a}^{b}")],
            "avg": [("{L} यांची सरासरी", "({S})/{n}"), ("{L} ची सरासरी किती", "({S})/{n}"), ("{L} सरासरी", "({S})/{n}"),
                    ("सरासरी {L}", "({S})/{n}"), ("{L} यांची सरासरी काय", "({S})/{n}")],
            "sum": [("{L} यांची बेरीज", "{S}"), ("{L} ची बेरीज किती", "{S}"), ("{L} बेरीज", "{S}"),
                    ("{L} यांची टोटल", "{S}")],
            "paren": [("({a} अधिक {b}) गुणिले {c}", "({a}+{b})*{c}"), ("{a} गुणिले ({b} अधिक {c})", "{a}*({b}+{c})"),
                      ("({a} वजा {b}) भागिले {c}", "({a}-{b})/{c}"), ("({a} वजा {b}) गुणिले {c}", "({a}-{b})*{c}"),
                      ("{a} भागिले ({b} अधिक {c})", "{a}/({b}+{c})")],
            "chain": [("{a} अधिक {b} वजा {c}", "{a}+{b}-{c}"), ("{a} गुणिले {b} अधिक {c}", "{a}*{b}+{c}"),
                      ("{a} वजा {b} अधिक {c}", "{a}-{b}+{c}"), ("{a} गुणिले {b} वजा {c}", "{a}*{b}-{c}"),
                      ("{a} अधिक {b} गुणिले {c}", "{a}+{b}*{c}")],
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
PRE = {"train": {"en": ["", "", "", "", "please ", "hey, ", "quick: ", "what's ", "so ", "ok ", "solve ",
                          "i need ", "pls calculate ", "calc ", "can you calculate ", "do this: ", "question: ",
                          "i want to know ", "help me with ", "let's see, ", "figure this: ", "mind doing ",
                          "hi there, ", "just calculate ", "math: ", "ok so ", "umm ", "and now ",
                          "what will be "],
                   "mr": ["", "", "", "", "जरा ", "सांग, ", "सांगा ", "बघ ", "एक मिनिट, ", "आता ", "हे बघ ",
                          "एक प्रश्न: ", "सांगशील का ", "पटकन ", "मित्रा, ", "गणित: ", "प्लीज ", "ऐक ना, "]},
       "test": {"en": ["", "tell me ", "could you work out: ", "yo "], "mr": ["", "मला सांग ", "अरे "]}}
POST = {"train": {"en": ["", "", "", "", "?", " please", " =", " ?", " equals?", " = ?", " pls", " now", "!",
                         " thx", " correct?", " exactly", " in total", " if possible", " please and thank u",
                         " soon pls", " real quick", " i think", " ok?", " buddy", " again", " ty", " is what?"],
                  "mr": ["", "", "", "", "?", " ना", " किती?", " काय?", " ?", " हो", " सांग ना", " पटकन",
                         " प्लीज", " येतील?", " बरोबर?", " किती येतं", " धन्यवाद"]},
        "test": {"en": ["", " for me", " thanks!", " quickly"], "mr": ["", " लगेच", " बरं"]}}

KINDS = list(T["train"]["en"])
KIND_WEIGHTS = {"add": 4, "sub": 4, "mul": 4, "div": 3, "pct": 3, "half": 1, "double": 1, "quarter": 1,
                "square": 2, "cube": 1, "pow": 2, "avg": 2, "sum": 2, "paren": 3, "chain": 2}


def _num(rng: random.Random, kind: str, role: str, spelling: str):
    """An operand. Digits: uniform over the digit count 1..5 (0..99999), now and then a decimal.
    Words: uniform over 0..19, 20..99, 100..999, 1000..9999. Powers and percentages stay small."""
    words = spelling.endswith("words")
    if kind == "pow" and role == "b":
        return rng.randint(2, 6)
    if kind == "pct" and role == "a" and rng.random() < 0.5:
        return rng.choice([5, 10, 12, 15, 18, 20, 25, 30, 40, 50, 75, rng.randint(1, 99)])
    top = {"square": 3, "cube": 2, "pow": 2, "pct": 3}.get(kind, 5 if role != "list" else 4) if role in ("a", "list") else 5
    if words:
        lo, hi = rng.choice([(0, 19), (20, 99), (100, 999), (1000, 9999)][:top - 1 if top < 5 else 4])
        return rng.randint(lo, hi)
    if rng.random() < 0.08:
        return round(rng.uniform(0, 10 ** rng.randint(1, 3)), rng.choice([1, 2]))
    d = rng.randint(1, top)
    return rng.randint(0 if d == 1 else 10 ** (d - 1), 10 ** d - 1)


def show(rng: random.Random, v, spelling: str, joined: bool = True) -> str:
    """v as typed: say(), and for English words now and then a hyphen ("twenty-five") or, when
    `joined`, an "and" ("two hundred and five"; never in a list, where "and" ends the list)."""
    if spelling != "en_words":
        return say(v, spelling)
    v = int(v)
    if joined and v > 100 and v % 100 and rng.random() < 0.25:
        text = en_words(v - v % 100) + " and " + en_words(v % 100)
    else:
        text = en_words(v)
    if rng.random() < 0.25:
        for t in EN_TENS[2:]:
            text = text.replace(t + " ", t + "-")
    return text


def spaced(pattern: str, numbers: dict) -> str:
    """The call's expression: the numbers as typed, ASCII operators, one space around every item
    (so every number and word is the same token it is in the utterance)."""
    out = []
    for ch in pattern:
        out.append(f" {ch} " if ch in "+-*/^%()" else ch)
    text = "".join(out)
    for k, v in numbers.items():
        text = text.replace("{" + k + "}", v)
    return " " + " ".join(text.split()) + " "


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


SPELLINGS = {"en": ["digits", "en_words"], "mr": ["deva", "deva", "digits", "mr_words", "mr_words"]}
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


def _number_typo(rng: random.Random, shown: str) -> str:
    """shown with a typo in one English number word that plain() still reads the same; else shown."""
    words = shown.replace("-", " - ").split(" ")
    idx = [i for i, w in enumerate(words) if w.isascii() and w.isalpha() and len(w) >= 4]
    if not idx:
        return shown
    i = rng.choice(idx)
    bad = typo(rng, words[i])
    if lookup(bad) != lookup(words[i]):
        return shown
    words[i] = bad
    return " ".join(words).replace(" - ", "-")


def _word_typo(rng: random.Random, text: str, keep) -> str:
    """text with a typo in one English word of four letters or more outside the numbers (an
    operator or frame word), when the typo reads as no number word."""
    words = text.split(" ")
    kept = {w for k in keep for w in k.split(" ")}
    idx = [i for i, w in enumerate(words) if w.isascii() and w.isalpha() and len(w) >= 4 and w not in kept]
    if not idx:
        return text
    i = rng.choice(idx)
    bad = typo(rng, words[i])
    if lookup(bad) is None:
        words[i] = bad
    return " ".join(words)


NUMBER_TYPO = 0.15  # share of training lines with a typo in a number word
WORD_TYPO = 0.2     # ... and in an operator or frame word (besides the noise's own typos)
PSEUDO = 0.3        # ... and with one to three made-up words (a frame word the model never saw)

_CONSONANTS, _VOWELS = "bcdfghjklmnprstvwyz", "aeiou"
_MR_CONSONANTS = "कखगघचजझटडणतथदधनपफबभमयरलवशसह"
_MR_SIGNS = ["", "ा", "ि", "ी", "ु", "ू", "े", "ो", "ं"]


def pseudo_word(rng: random.Random, lang: str) -> str:
    """A made-up word of two or three syllables that reads as no number word and no word of the
    test split (so a frame the model never saw is just more words to pass over)."""
    from trainer.agentdata.home import banned_words

    while True:
        k = rng.randint(2, 3)
        if lang == "en":
            w = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(k)) + rng.choice(["", "", "n", "s", "k"])
        else:
            w = "".join(rng.choice(_MR_CONSONANTS) + rng.choice(_MR_SIGNS) for _ in range(k))
        if lookup(w) is None and w not in banned_words():
            return w


def _pseudo_words(rng: random.Random, text: str, keep, lang: str) -> str:
    """text with one to three made-up words before, after or between its words, never inside a
    number (`keep`)."""
    spans = [(i, i + len(k)) for k in keep if k for i in [text.find(k)] if i >= 0]
    for _ in range(rng.randint(1, 3)):
        cuts = [0, len(text)] + [i for i, ch in enumerate(text) if ch == " " and not any(a < i < b for a, b in spans)]
        i = rng.choice(cuts)
        w = pseudo_word(rng, lang if rng.random() < 0.8 else rng.choice(["en", "mr"]))
        text = (w + " " + text) if i == 0 else (text + " " + w) if i == len(text) else text[:i] + " " + w + text[i:]
        spans = [(i, i + len(k)) for k in keep if k for i in [text.find(k)] if i >= 0]
    return text


def _ambiguous(text: str, shown: dict, used) -> bool:
    """A number that ends in "hundred" or "thousand" followed by " and " and another number reads
    as one number ("eight hundred and three"): such a line has two readings."""
    return any(shown[r].replace("-", " ").split()[-1] in ("hundred", "thousand") and shown[r] + " and " in text
               for r in used)


def _one(rng: random.Random, split: str) -> dict:
    pool = "novel" if split == "test" and rng.random() < NOVEL_SHARE else split
    lang = rng.choices(["en", "mr"], weights=[5, 4])[0]
    spelling = rng.choice(SPELLINGS[lang])
    kind = rng.choices(KINDS, weights=[KIND_WEIGHTS[k] for k in KINDS])[0]
    text_t, expr_t = rng.choice(T[pool][lang][kind])
    if spelling.endswith("words") and any(ch in text_t for ch in "+-*/^%x()÷") and "{L}" not in text_t:
        # symbols with number words read oddly; use digits for those templates
        spelling = "digits" if lang == "en" else "deva"
    vals = {r: _num(rng, kind, r, spelling) for r in "abc"}
    if kind in ("half", "quarter") and rng.random() < 0.7 and isinstance(vals["a"], int):
        vals["a"] -= vals["a"] % (2 if kind == "half" else 4)
    shown = {r: show(rng, vals[r], spelling) for r in "abc"}
    text, pattern = text_t, expr_t
    lst = None
    if "{L}" in text_t:
        k = rng.randint(2, 5 if spelling.endswith("words") else 6)
        items = [_num(rng, kind, "list", spelling) for _ in range(k)]
        for i, v in enumerate(items):
            vals[f"l{i}"] = v
            shown[f"l{i}"] = show(rng, v, spelling, joined=False)
        sep, last = (", ", " and ") if lang == "en" else (", ", " आणि ")
        if rng.random() < 0.3:
            last = sep
        lst = sep.join(shown[f"l{i}"] for i in range(k - 1)) + last + shown[f"l{k - 1}"]
        text = text.replace("{L}", lst)
        pattern = pattern.replace("{S}", "+".join("{l%d}" % i for i in range(k))).replace("{n}", str(k))
    used = [r for r in shown if "{" + r + "}" in pattern]
    if split == "train" and spelling == "en_words" and rng.random() < NUMBER_TYPO:
        r = rng.choice(used)
        shown[r] = _number_typo(rng, shown[r])
        if lst is not None:
            lst = text = None          # rebuilt below
    if "{L}" in text_t and text is None:
        k = len(used)
        lst = sep.join(shown[f"l{i}"] for i in range(k - 1)) + last + shown[f"l{k - 1}"]
        text = text_t.replace("{L}", lst)
    for r in "abc":
        text = text.replace("{" + r + "}", shown[r])
    expr = pattern
    for r in used:
        expr = expr.replace("{" + r + "}", _ascii(vals[r]))
    call = spaced(pattern, {r: shown[r] for r in used})
    if spelling == "en_words" and _ambiguous(text, shown, used):
        return _one(rng, split)
    text = rng.choice(PRE[split][lang]) + text + rng.choice(POST[split][lang])
    if split == "test" and rng.random() < 0.25:
        text = _typo(rng, text)
    if split == "train":
        from trainer.agentdata.home import banned_words

        keep = [shown[r] for r in used] + ([lst] if lst else [])
        text = add_noise(rng, text, keep, banned_words(), p=NOISE)
        if lang == "en" and rng.random() < WORD_TYPO:
            text = _word_typo(rng, text, keep)
        if rng.random() < PSEUDO:
            text = _pseudo_words(rng, text, keep, lang)
    try:
        value = evaluate(expr)
    except ZeroDivisionError:
        return _one(rng, split)
    answer = int(value) if value.denominator == 1 else float(value)
    return {"text": text, "call": {"expression": call}, "answer": answer,
            "category": CATEGORY[(lang, spelling)] + ("-novel" if pool == "novel" else ""), "kind": kind}


def generate(split: str = "train", n: int = 1000, seed: int = 0):
    check_split(split)
    rng = random.Random(f"calc/{split}/{seed}")
    for _ in range(n):
        yield _one(rng, split)
