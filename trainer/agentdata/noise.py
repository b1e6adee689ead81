"""Context noise for the training split: everyday words around and inside a request.

A child trained from scratch on a few dozen templates learns the templates: an unseen frame ("how
much is 7 plus 8", "the fan needs to be on") throws it. Training lines therefore get, now and
then, a few common words before, after, or between the words of the request (never inside a name,
an area or a number), and typos in words of four or more letters outside them. The words come from
COMMON minus every word of the test split's templates and fillers (`banned`), so the held-out
phrasings stay unseen.
"""
from __future__ import annotations

import random

COMMON = ("the a an and or but so if then now just also very really okay hey well oh ah hmm um "
          "your my we our i it are was be do did can will should shall may might must what why when which "
          "this that these those here some any all more many one two time today again still maybe sure yes "
          "no friend little bit kind nice good great actually basically literally honestly seriously "
          "dear sir madam buddy man guys folks system assistant computer bullet alright cool fine super "
          "आता जरा बघ ना हो रे गं की पण आणि तर मग तुला आपण कधी कुठे हे ते थोडा लवकर नक्की खरं छान अहो "
          "बाबा मित्रा ऐका ऐक बरं हां अच्छा चल").split()


def typo(rng: random.Random, word: str) -> str:
    j = rng.randrange(1, len(word) - 1)
    op = rng.randrange(3)
    if op == 0:
        return word[:j] + word[j + 1] + word[j] + word[j + 2:]
    return word[:j] + word[j + 1:] if op == 1 else word[:j] + word[j] + word[j:]


def _protected(text: str, keep) -> list[tuple[int, int]]:
    spans = []
    for k in keep:
        if not k:
            continue
        i = text.find(k)
        while i >= 0:
            spans.append((i, i + len(k)))
            i = text.find(k, i + 1)
    return spans


def add_noise(rng: random.Random, text: str, keep, banned: set, p: float = 0.5) -> str:
    """text with (probability p) noise words and typos; `keep` substrings stay intact."""
    if rng.random() >= p:
        return text
    words = [w for w in COMMON if w not in banned]
    spans = _protected(text, keep)

    def free(pos):        # a cut at char pos does not split a kept span
        return not any(a < pos < b for a, b in spans)

    def inside(a, b):
        return any(x < b and a < y for x, y in spans)

    r = rng.random()
    if r < 0.35:
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 3))) + " " + text
    elif r < 0.6:
        text = text + " " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 3)))
    elif r < 0.85:
        cuts = [i for i, ch in enumerate(text) if ch == " " and free(i)]
        if cuts:
            i = rng.choice(cuts)
            text = text[:i] + " " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 2))) + text[i:]
    if rng.random() < 0.3:
        spans = _protected(text, keep)
        pos, out = 0, []
        for w in text.split(" "):
            out.append((pos, w))
            pos += len(w) + 1
        cand = [(a, w) for a, w in out if w.isascii() and w.isalpha() and len(w) >= 4 and not inside(a, a + len(w))]
        if cand:
            a, w = rng.choice(cand)
            text = text[:a] + typo(rng, w) + text[a + len(w):]
    return text
