"""The calc tool: exact results, the syntax of the agents contract, limits and hostile input,
and property tests of the parser against Python's own fractions arithmetic."""
from fractions import Fraction

import pytest
from hypothesis import given, settings, strategies as st

from bulletd.agents.calc import MAX_BITS, evaluate, exact_string, run
from bulletd.errors import RequestError


def val(expr):
    return run({"expression": expr})


@pytest.mark.parametrize("expr,value,exact", [
    ("17*23", 391, "391"),
    ("15%*80", 12, "12"),
    ("2^10", 1024, "1024"),
    ("2^3^2", 512, "512"),            # right-associative
    ("-2^2", -4, "-4"),               # unary minus binds looser than ^
    ("(-2)^2", 4, "4"),
    ("2^-2", 0.25, "0.25"),
    ("1/3", 0.333333333333, "1/3"),
    ("2/3", 0.666666666667, "2/3"),
    ("0.1+0.2", 0.3, "0.3"),          # exact, not 0.30000000000000004
    ("7 ÷ 2 × 3", 10.5, "10.5"),
    ("10 − 4", 6, "6"),
    ("1 + 2 * 3 - 4 / 2", 5, "5"),
    ("(1 + 2) * 3", 9, "9"),
    ("50%", 0.5, "0.5"),
    ("(100+20)%*5", 6, "6"),
    ("--3", 3, "3"),
    ("3.", 3, "3"),
    (".5*4", 2, "2"),
    ("81^0.5", 9, "9"),
    ("8^(1/3)", 2, "2"),
    ("(27/8)^(2/3)", 2.25, "2.25"),
    ("(-8)^(1/3)", -2, "-2"),
    ("12345678901234567890*10", float(123456789012345678900), "123456789012345678900"),
    ("1/1024", 0.0009765625, "0.0009765625"),
    ("0^0", 1, "1"),
])
def test_values(expr, value, exact):
    r = val(expr)
    assert r["exact"] == exact
    assert r["value"] == value
    assert type(r["value"]) is type(value)


def test_large_integers_are_floats_with_the_exact_string():
    r = val("2^100")
    assert r["exact"] == str(2**100)
    assert isinstance(r["value"], float) and r["value"] == float(2**100)   # msgpack has no bigints


def test_irrational_roots_are_approximate():
    r = val("2^0.5")
    assert r["exact"] is None
    assert abs(r["value"] - 2 ** 0.5) < 1e-11


@pytest.mark.parametrize("expr,words", [
    ("9^9^9", "exponent"),
    ("1/0", "division by zero"),
    ("5/(3-3)", "division by zero"),
    ("0^-1", "division by zero"),
    ("1" * 10_000, "digits"),
    ("1+" * 200 + "1", "characters"),
    ("(" * 30 + "1" + ")" * 30, "1"),                 # fine: within the depth limit
    ("(" * 60 + "1" + ")" * 60, "nested"),
    ("-" * 100 + "1", "nested"),
    ("2^1000*2^1000", "bits"),
    ("10^300*10^300", "bits"),
    ("1/3^700", "bits"),
    ("(-1)^0.5", "negative"),
    ("", "empty"),
    ("   ", "empty"),
    ("2+", "ends"),
    ("(1+2", "expected ')'"),
    ("1+2)", "unexpected ')'"),
    ("2(3)", "unexpected '('"),
    ("3 % 2", "unexpected '2'"),                         # no modulo
    ("__import__('os')", "unexpected character"),
    ("1e5", "unexpected character"),
    ("2**3", "expected a number"),
    ("1..2", "unexpected"),
    ("١٢", "unexpected character"),                     # only ASCII digits
])
def test_errors_and_limits(expr, words):
    if words == "1":
        assert val(expr)["value"] == 1
        return
    with pytest.raises(RequestError) as e:
        val(expr)
    assert e.value.code == "calc_error"
    assert words in e.value.message, e.value.message


def test_power_towers_and_big_exponents_stay_cheap():
    import time
    t = time.perf_counter()
    for expr in ("9^9^9", "2^4096", "2^4095", "(3/7)^4000", "1^99999999", "(-1)^99999999", "0^99999999",
                 "(2^999)^999", "((2^30)^30)^30"):
        try:
            val(expr)
        except RequestError as e:
            assert e.code == "calc_error"
    assert val("1^99999999")["value"] == 1 and val("(-1)^99999999")["value"] == -1
    assert time.perf_counter() - t < 1.0


def test_exact_string():
    assert exact_string(Fraction(-1, 8)) == "-0.125"
    assert exact_string(Fraction(1, 20)) == "0.05"
    assert exact_string(Fraction(-7, 3)) == "-7/3"
    assert exact_string(Fraction(123, 1)) == "123"


# ---------------------------------------------------------------- properties against fractions

def _num():
    ints = st.integers(0, 10**6).map(str)
    decs = st.tuples(st.integers(0, 999), st.integers(0, 999)).map(lambda t: f"{t[0]}.{t[1]:03d}")
    return st.one_of(ints, decs)


def _tree():
    # (ours, python) string pairs; python uses Fraction literals and ** for ^, x/100 for x%
    leaf = _num().map(lambda s: (s, f"Fraction('{s}')"))

    def extend(sub):
        return st.one_of(
            st.tuples(sub, st.sampled_from("+-*/"), sub).map(
                lambda t: (f"({t[0][0]}){t[1]}({t[2][0]})", f"({t[0][1]}){t[1]}({t[2][1]})")),
            st.tuples(sub, st.sampled_from("+-*/"), sub).map(        # no parentheses: precedence
                lambda t: (f"{t[0][0]} {t[1]} {t[2][0]}", f"{t[0][1]} {t[1]} {t[2][1]}")),
            sub.map(lambda a: (f"-{a[0]}", f"-{a[1]}")),
            sub.map(lambda a: (f"({a[0]})%", f"(({a[1]})/100)")),
            st.tuples(sub, st.integers(-3, 4)).map(
                lambda t: (f"({t[0][0]})^{t[1]}" if t[1] >= 0 else f"({t[0][0]})^({t[1]})",
                           f"({t[0][1]})**({t[1]})")),
        )
    return st.recursive(leaf, extend, max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(_tree())
def test_matches_python_fractions(pair):
    ours, py = pair
    try:
        want = eval(py, {"Fraction": Fraction})   # the test's own generated string, never user input
    except ZeroDivisionError:
        with pytest.raises(RequestError) as e:
            evaluate(ours)
        assert e.value.code == "calc_error"
        return
    try:
        got = evaluate(ours)
    except RequestError as e:
        # only the size limit may refuse what Python computes
        assert "bits" in e.message or "characters" in e.message, (ours, e.message)
        assert max(abs(want.numerator).bit_length(), want.denominator.bit_length()) > MAX_BITS \
            or len(ours) > 256 or "bits" in e.message
        return
    assert got.exact and got.value == want, ours


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789.+-*/^%() ×÷x", max_size=60))
def test_arbitrary_strings_never_crash(s):
    try:
        r = evaluate(s).as_result()
    except RequestError as e:
        assert e.code == "calc_error" and e.message
        return
    assert isinstance(r["value"], (int, float))
