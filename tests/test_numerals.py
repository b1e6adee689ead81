"""bulletd.agents.numerals: the calc child's numbers as typed (digits in both scripts, English and
Marathi number words, typos) read back into the calc tool's syntax."""
import pytest

from bulletd.agents.numerals import lookup, plain, words_value
from bulletd.errors import RequestError
from trainer.agentdata.numbers import en_words, mr_words, to_deva


@pytest.mark.parametrize("expr, want", [
    (" 17 * 23 ", "17*23"),
    ("17*23", "17*23"),
    (" ( ६ + ७ ) / २.५ ", "(6+7)/2.5"),
    (" fifty nine + four hundred thirteen ", "59+413"),
    (" twenty-five - eighty one ", "25-81"),            # a hyphen between letters joins words
    (" two thousand and five * 3 ", "2005*3"),
    (" one hundred and five % * 80 ", "105%*80"),
    (" तीनशे पंचवीस + दोन हजार पाच ", "325+2005"),
    (" शंभर - एक हजार ", "100-1000"),
    (" 2 thousand / four ", "2000/4"),
    (" ninety nine thousand nine hundred ninety nine ", "99999"),
    (" तीन लाख पाच हजार ", "305000"),
    (" thirtene + egihty + fourty ", "13+80+40"),       # typos within the allowance
    (" सतरा−five ", "17−5"),
])
def test_plain(expr, want):
    assert plain(expr) == want


def test_every_number_word_reads_back():
    for n in range(10000):
        assert words_value(en_words(n)) == n, en_words(n)
        assert words_value(mr_words(n)) == n, mr_words(n)
        assert plain(to_deva(str(n))) == str(n)


@pytest.mark.parametrize("expr, word", [
    (" seventeen + banana ", "'banana'"),
    (" nine fifty ", "'fifty'"),                       # not an order a number is said in
    (" fifty sixty ", "'sixty'"),
    (" thousand ", "'thousand'"),
    (" two thousand three thousand ", "'thousand'"),
    (" the + 2 ", "'the'"),                            # short words are never guessed
    (" 1 two ", "'two'"),
])
def test_not_a_number(expr, word):
    with pytest.raises(RequestError) as e:
        plain(expr)
    assert e.value.code == "calc_error" and word in e.value.message


def test_lookup_typos():
    assert lookup("egihty") == ("tens", 80) and lookup("EIGHTY") == ("tens", 80)
    assert lookup("seventene") == ("teen", 17)          # two edits allowed from seven letters
    assert lookup("sevn") == ("unit", 7)
    assert lookup("thre") == ("unit", 3)
    assert lookup("fiv") is None                        # under four letters: exact only
    assert lookup("sixteenn") == ("teen", 16)
    assert lookup("nineteen") == ("teen", 19) and lookup("ninteen") == ("teen", 19)
    assert lookup("eighyt") == ("tens", 80)             # as near to "eight": the one as long wins
    assert lookup("ninet") is None                      # "nine" and "ninety": as near, neither as long


def test_other_phrases_are_left_to_the_calc_tool():
    from bulletd.agents.calc import evaluate
    assert plain(" 1 2 + 3 ") == "1 2+3"
    with pytest.raises(RequestError) as e:
        evaluate(plain(" 1 2 + 3 "))
    assert e.value.code == "calc_error" and "'2'" in e.value.message
