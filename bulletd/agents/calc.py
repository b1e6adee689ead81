"""The calc tool: exact arithmetic on a short expression, with a hand-written parser (never eval).

    from bulletd.agents.calc import evaluate
    evaluate("15%*80").value        # 12
    evaluate("1/3").as_result()     # {"value": 0.333333333333, "exact": "1/3"}

Syntax: numbers (digits with an optional decimal point), + - * / (also × ÷ and the minus sign
U+2212), ^ power (right-associative; -2^2 is -4), postfix % (percent: 15% = 15/100), parentheses,
unary minus and plus, spaces. There is no modulo operator and no implicit multiplication.

Arithmetic is on fractions.Fraction. A power with a fractional exponent is exact when the root is
(81^0.5 = 9), else a float (2^0.5); those results carry "exact": null. Limits keep a hostile
expression cheap: its length, a number's digits, nesting depth, the exponent, and the size of
every intermediate value (numerator and denominator at most MAX_BITS bits). Every failure is a
RequestError with code calc_error and a message saying what was wrong and where.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Context, Decimal
from fractions import Fraction

from bulletd.errors import RequestError

MAX_LENGTH = 256          # characters in an expression
MAX_DIGITS = 40           # digits in one number literal
MAX_DEPTH = 40            # nested parentheses and unary signs
MAX_EXPONENT = 4096       # |integer exponent|
MAX_ROOT = 64             # largest root taken exactly (the denominator of a fractional exponent)
MAX_BITS = 1000           # numerator and denominator of every value (|value| < ~1e301)
SIG_DIGITS = 12           # significant digits of a non-integer result's value
INT64 = 2**63

_TOKEN = re.compile(r"\s*(?:([0-9]+\.?[0-9]*|\.[0-9]+)|(.))", re.S)
_SYNONYMS = {"×": "*", "÷": "/", "−": "-"}


def _err(msg: str) -> RequestError:
    return RequestError("calc_error", msg)


@dataclass(frozen=True)
class CalcResult:
    value: Fraction | float        # a float only for inexact roots
    exact: bool

    def as_result(self) -> dict:
        """The tool result: {"value": int or float, "exact": str or None}."""
        v = self.value
        if not self.exact:
            return {"value": float(f"{v:.{SIG_DIGITS}g}"), "exact": None}
        if v.denominator == 1:     # msgpack has no integers beyond 64 bits: larger ones are floats
            return {"value": v.numerator if -INT64 <= v.numerator < INT64 else float(v), "exact": str(v.numerator)}
        return {"value": _round_sig(v), "exact": exact_string(v)}


def _round_sig(v: Fraction) -> float:
    ctx = Context(prec=SIG_DIGITS)
    return float(ctx.divide(Decimal(v.numerator), Decimal(v.denominator)))


def exact_string(v: Fraction) -> str:
    """An integer, a terminating decimal ("0.125"), or a fraction "p/q" when it does not terminate."""
    if v.denominator == 1:
        return str(v.numerator)
    d = v.denominator
    twos = fives = 0
    while d % 2 == 0:
        d //= 2
        twos += 1
    while d % 5 == 0:
        d //= 5
        fives += 1
    if d != 1:
        return f"{v.numerator}/{v.denominator}"
    places = max(twos, fives)
    scaled = abs(v.numerator) * 10**places // v.denominator
    s = str(scaled).rjust(places + 1, "0")
    return ("-" if v < 0 else "") + s[:-places] + "." + s[-places:]


def _tokens(expr: str) -> list[tuple[str, str, int]]:
    """(kind, text, column) with kind "num" or "op"; a final ("end", "", len)."""
    out, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m.group(1):
            if sum(c.isdigit() for c in m.group(1)) > MAX_DIGITS:
                raise _err(f"a number at column {m.start(1) + 1} has more than {MAX_DIGITS} digits")
            out.append(("num", m.group(1), m.start(1)))
        elif m.group(2):
            c = _SYNONYMS.get(m.group(2), m.group(2))
            if c not in "+-*/^%()":
                raise _err(f"unexpected character {m.group(2)!r} at column {m.start(2) + 1} "
                           "(expected a number, + - * / ^ %, or parentheses)")
            out.append(("op", c, m.start(2)))
        pos = m.end()
    out.append(("end", "", len(expr)))
    return out


def _check(v: Fraction) -> Fraction:
    if v.numerator.bit_length() > MAX_BITS or v.denominator.bit_length() > MAX_BITS:
        raise _err(f"a value has more than {MAX_BITS} bits (about {int(MAX_BITS * math.log10(2))} digits); "
                   "the result is too large to compute")
    return v


def _iroot(n: int, k: int) -> int | None:
    """The exact k-th root of n >= 0, or None."""
    if n < 2:
        return n
    r = int(round(n ** (1.0 / k))) if n.bit_length() < 1000 else 1 << (n.bit_length() // k)
    for _ in range(200):              # Newton's method from a close start
        nr = ((k - 1) * r + n // r ** (k - 1)) // k
        if abs(nr - r) <= 1:
            break
        r = nr
    for c in (r - 1, r, r + 1):
        if c >= 0 and c**k == n:
            return c
    return None


class _Parser:
    def __init__(self, expr: str):
        self.toks = _tokens(expr)
        self.i = 0
        self.depth = 0
        self.inexact = False

    def peek(self) -> tuple[str, str, int]:
        return self.toks[self.i]

    def take(self) -> tuple[str, str, int]:
        t = self.toks[self.i]
        self.i += 1
        return t

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _err(f"the expression is nested more than {MAX_DEPTH} levels deep")

    def expr(self):
        v = self.term()
        while self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            w = self.term()
            v = self.num(v + w if op == "+" else v - w)
        return v

    def term(self):
        v = self.unary()
        while self.peek()[1] in ("*", "/"):
            _, op, col = self.take()
            w = self.unary()
            if op == "*":
                v = self.num(v * w)
            else:
                if w == 0:
                    raise _err(f"division by zero (the divisor after column {col + 1} is 0)")
                v = self.num(v / w)
        return v

    def unary(self):
        if self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            self.nest()
            v = self.unary()
            self.depth -= 1
            return -v if op == "-" else v
        return self.power()

    def power(self):
        base = self.postfix()
        if self.peek()[1] == "^":
            col = self.take()[2]
            self.nest()
            exp = self.unary()            # right-associative; 2^-1 is allowed
            self.depth -= 1
            return self.pow(base, exp, col)
        return base

    def postfix(self):
        v = self.primary()
        while self.peek()[1] == "%":
            self.take()
            v = self.num(v / 100)
        return v

    def primary(self):
        kind, text, col = self.take()
        if kind == "num":
            return Fraction(text)
        if text == "(":
            self.nest()
            v = self.expr()
            self.depth -= 1
            k2, t2, c2 = self.take()
            if t2 != ")":
                raise _err(f"expected ')' at column {c2 + 1} to close '(' at column {col + 1}, found "
                           + (repr(t2) if t2 else "the end"))
            return v
        if kind == "end":
            raise _err("the expression ends where a number was expected")
        raise _err(f"expected a number or '(' at column {col + 1}, found {text!r}")

    def num(self, v):
        if isinstance(v, float):
            if not math.isfinite(v):
                raise _err("the result is too large to compute")
            return v
        return _check(v)

    def pow(self, base, exp, col: int):
        where = f"the power at column {col + 1}"
        if isinstance(base, float) or isinstance(exp, float):
            try:
                r = float(base) ** float(exp)
            except (OverflowError, ZeroDivisionError):
                raise _err(f"{where} is too large or divides by zero") from None
            if isinstance(r, complex):
                raise _err(f"{where} has no real value")
            return self.num(r)
        if base == 0 and exp < 0:
            raise _err(f"division by zero ({where} raises 0 to a negative exponent)")
        p, q = exp.numerator, exp.denominator
        if abs(p) > MAX_EXPONENT:
            if base in (0, 1):
                return base
            if base == -1 and q == 1:
                return Fraction(-1 if p % 2 else 1)
            raise _err(f"{where} has an exponent larger than {MAX_EXPONENT}")
        if q > 1:
            if base < 0 and q % 2 == 0:
                raise _err(f"{where} takes an even root of a negative number (no real value)")
            sign = -1 if base < 0 else 1
            rn = _iroot(abs(base.numerator), q) if q <= MAX_ROOT else None
            rd = _iroot(base.denominator, q) if rn is not None else None
            if rn is None or rd is None:
                self.inexact = True
                return self.num(sign * float(abs(base)) ** (p / q))
            base = Fraction(sign * rn, rd)
        bits = max(base.numerator.bit_length(), base.denominator.bit_length())
        if bits * abs(p) > MAX_BITS + abs(p):
            raise _err(f"{where} would have more than {MAX_BITS} bits; the result is too large to compute")
        return self.num(base ** p)


def evaluate(expr: str) -> CalcResult:
    """Evaluate an expression exactly. RequestError("calc_error") when it is malformed or too big."""
    if not isinstance(expr, str):
        raise _err(f"expected the expression as a string, found {type(expr).__name__}")
    m = re.search(r"[0-9]{%d,}" % (MAX_DIGITS + 1), expr)
    if m:
        raise _err(f"a number at column {m.start() + 1} has {len(re.match(r'[0-9]+', expr[m.start():]).group())} "
                   f"digits; the limit is {MAX_DIGITS}")
    if len(expr) > MAX_LENGTH:
        raise _err(f"the expression has {len(expr)} characters; the limit is {MAX_LENGTH}")
    if not expr.strip():
        raise _err("the expression is empty")
    p = _Parser(expr)
    v = p.expr()
    kind, text, col = p.peek()
    if kind != "end":
        raise _err(f"unexpected {text!r} at column {col + 1} (an operator is missing before it, or a "
                   "parenthesis does not match)")
    if isinstance(v, float):
        return CalcResult(v, exact=False)
    return CalcResult(v, exact=True)


def run(call: dict) -> dict:
    """The calc tool on a validated call {"expression": ...}: its result map."""
    return evaluate(call["expression"]).as_result()
