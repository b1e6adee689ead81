"""Text baselines for `bullet eval` on text sets: what a child's bits per byte is compared with.

All three see the same streams: the training split and the evaluated text are each their lines
joined by "\\n" with a final "\\n" (`join_lines`), so the line ends cost something in every model,
as the end of a document costs the child its end token.

- `CharKN`: a character n-gram model (default order 5) with interpolated, modified Kneser-Ney
  smoothing (Chen and Goodman's three discounts per order, estimated from count-of-counts).
  Orders below the highest use continuation counts (how many distinct characters precede a
  string), the lowest interpolates with a uniform distribution over the training alphabet plus
  one slot for every unseen character. An unseen character costs that slot's probability plus
  8 bits per UTF-8 byte to spell it out.
- `lzma_cost`: bits the evaluated text adds to an xz stream of the training text (preset
  9 | EXTREME, `xz -9e`): compressed(train + text) - compressed(train).
- `ppmd_cost`: the same with PPMd (variant H, order 8, 256 MiB model; the `pyppmd` package, an
  optional extra: `ppmd_available()` says whether it is installed).
"""
from __future__ import annotations

import lzma
import math
from collections import Counter

PAD = "\n"      # history before the first character of a stream: as if a line had just ended

PPMD_ORDER = 8
PPMD_MEMORY = 256 << 20


def join_lines(lines) -> str:
    return "".join(line + "\n" for line in lines)


def estimate_discounts(count_of_counts: dict[int, int]) -> tuple[float, float, float]:
    """Chen and Goodman's modified Kneser-Ney discounts (D1, D2, D3+) from n_k = the number of
    n-grams seen exactly k times: Y = n1 / (n1 + 2 n2), D_k = k - (k + 1) Y n_{k+1} / n_k.
    Degenerate counts (tiny corpora) fall back to D_k = min(k, 0.5 k + ...) kept inside (0, k]."""
    n = [count_of_counts.get(k, 0) for k in range(5)]
    y = n[1] / (n[1] + 2 * n[2]) if n[1] + 2 * n[2] > 0 else 0.5
    out = []
    for k in (1, 2, 3):
        d = k - (k + 1) * y * n[k + 1] / n[k] if n[k] > 0 else 0.5 * k
        out.append(min(float(k), max(0.05 * k, d)))
    return out[0], out[1], out[2]


class CharKN:
    """Interpolated modified Kneser-Ney over characters.

        kn = CharKN(train_text, order=5)
        kn.prob("a", "xyzw")          # P(a | the last order-1 characters of the history)
        kn.cost_bits("some text\\n")  # -log2 P of the text after a PAD history, in bits

    `discounts` fixes (D1, D2, D3+) for every order instead of estimating them (tests)."""

    def __init__(self, text: str, order: int = 5, discounts: tuple[float, float, float] | None = None):
        if order < 1:
            raise ValueError(f"order must be at least 1, got {order}")
        if not text:
            raise ValueError("the training text is empty")
        self.order = order
        s = PAD * (order - 1) + text
        top = Counter(s[i:i + order] for i in range(len(text)))
        self.counts: list[dict[str, int]] = [{} for _ in range(order + 1)]   # by n-gram length
        self.counts[order] = dict(top)
        for k in range(order - 1, 0, -1):                 # continuation counts N1+(. g)
            cont: Counter = Counter()
            for g in self.counts[k + 1]:
                cont[g[1:]] += 1
            self.counts[k] = dict(cont)
        self.alphabet = frozenset(s)
        self.vocab = len(self.alphabet) + 1               # + the slot of unseen characters
        self.discounts: list[tuple[float, float, float]] = [(0.0, 0.0, 0.0)]
        self.context: list[dict[str, tuple[int, int, int, int]]] = [{}]
        for k in range(1, order + 1):
            cc = Counter(self.counts[k].values())
            self.discounts.append(tuple(discounts) if discounts is not None else estimate_discounts(cc))
            ctx: dict[str, list[int]] = {}
            for g, c in self.counts[k].items():
                st = ctx.get(g[:-1])
                if st is None:
                    st = ctx[g[:-1]] = [0, 0, 0, 0]
                st[0] += c
                st[min(c, 3)] += 1
            self.context.append({h: tuple(v) for h, v in ctx.items()})

    def prob(self, ch: str, history: str) -> float:
        """P(ch | history); an unseen character gets the probability of the unseen slot."""
        n = self.order - 1
        h = (PAD * n + history)[len(history):] if n else ""
        return self._p(ch, h, self.order)

    def _p(self, ch: str, h: str, k: int) -> float:
        p = 1.0 / self.vocab
        for j in range(1, k + 1):                         # from the unigram up to order k
            hj = h[len(h) - (j - 1):] if j > 1 else ""
            st = self.context[j].get(hj)
            if st is None:
                continue                                  # unseen context: the lower order stands
            total, n1, n2, n3 = st
            d1, d2, d3 = self.discounts[j]
            c = self.counts[j].get(hj + ch, 0)
            disc = 0.0 if c == 0 else (d1 if c == 1 else d2 if c == 2 else d3)
            gamma = (d1 * n1 + d2 * n2 + d3 * n3) / total
            p = max(c - disc, 0.0) / total + gamma * p
        return p

    def cost_bits(self, text: str) -> float:
        """Bits to code `text` after a PAD history, each character given the previous order-1."""
        n = self.order - 1
        s = PAD * n + text
        bits = 0.0
        for i, ch in enumerate(text):
            p = self._p(ch, s[i:i + n], self.order)
            bits -= math.log2(p)
            if ch not in self.alphabet:
                bits += 8 * len(ch.encode("utf-8"))
        return bits


def _xz(data: bytes) -> int:
    return len(lzma.compress(data, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME))


def lzma_cost(train: bytes, text: bytes) -> int:
    """Bytes `text` adds to the xz -9e stream of `train`."""
    return _xz(train + text) - _xz(train)


def ppmd_available() -> bool:
    try:
        import pyppmd  # noqa: F401
    except ImportError:
        return False
    return True


def _ppmd(data: bytes) -> int:
    import pyppmd
    enc = pyppmd.Ppmd7Encoder(PPMD_ORDER, PPMD_MEMORY)
    return len(enc.encode(data) + enc.flush())


def ppmd_cost(train: bytes, text: bytes) -> int:
    """Bytes `text` adds to the PPMd (order 8) stream of `train`. ImportError without pyppmd."""
    return _ppmd(train + text) - _ppmd(train)


def text_baselines(train_lines: list[str], lines: list[str], *, order: int = 5) -> dict:
    """Bits per byte of `lines` under each baseline trained on / primed with `train_lines`.
    PPMd is None (with a `ppmd_note`) when pyppmd is not installed."""
    train = join_lines(train_lines)
    text = join_lines(lines)
    tb, xb = train.encode("utf-8"), text.encode("utf-8")
    nbytes = len(xb)
    out: dict = {"bytes": nbytes, "train_bytes": len(tb)}
    kn = CharKN(train, order)
    out[f"kn{order}"] = kn.cost_bits(text) / nbytes
    out["xz"] = 8 * lzma_cost(tb, xb) / nbytes
    if ppmd_available():
        out["ppmd8"] = 8 * ppmd_cost(tb, xb) / nbytes
    else:
        out["ppmd8"] = None
        out["ppmd_note"] = "pyppmd is not installed (pip install 'bullet-os[eval]')"
    return out
