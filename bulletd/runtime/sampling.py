"""Generation settings and token sampling (NumPy, per step, no state beyond the seeded RNG).

Owns `LIMITS` (the one table of the settings' types and ranges), `GenerationSettings` (the
request's knobs, validated against it with one clear `BadSettings` each) and
`Sampler`, which turns one step's logits into a token id:

    logits -> repetition penalty over the seen tokens (CTRL / llama.cpp rule)
           -> temperature 0: argmax                       (greedy, no RNG draw)
           -> / temperature -> top-k -> softmax -> top-p -> one draw from the seeded RNG

Stop strings are text-level and live in `bulletd.runtime.generate` (they need the decoder).
Run the tests with `pytest tests/test_sampling.py -q`.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields

import numpy as np

from ..errors import BadSettings

MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 256
MAX_SEED = 2**64 - 1
TOP_K_MAX = 2**31 - 1         # a top_k past every vocabulary keeps every token (no limit)


@dataclass(frozen=True)
class Limit:
    """The type and range of one numeric setting."""
    integer: bool
    low: float
    high: float | None          # None: no upper limit
    low_open: bool              # the range excludes `low`
    rule: str                   # the range in words, for the error message


# What a request may choose, in one table (the daemon's request parser applies it too). Beyond
# these a setting is a mistake rather than a choice: softmax(logits / 100) is already uniform for
# any real model, and llama.cpp users keep the repetition penalty well below 2.
LIMITS = {
    "max_tokens": Limit(True, 1, 1 << 20, False, "between 1 and {high}"),
    "temperature": Limit(False, 0.0, 100.0, False, "between 0 and 100 (0 = greedy)"),
    "top_k": Limit(True, 0, None, False, "0 (no limit) or a positive integer"),
    "top_p": Limit(False, 0.0, 1.0, True, "in (0, 1]"),
    "repetition_penalty": Limit(False, 0.0, 10.0, True, "in (0, 10] (1 = off)"),
    "seed": Limit(True, 0, MAX_SEED, False, "between 0 and 2**64-1"),
    "threads": Limit(True, 0, 64, False, "0 (the model's default) or 1 to {high}"),
}
MAX_TEMPERATURE = LIMITS["temperature"].high
MAX_REPETITION_PENALTY = LIMITS["repetition_penalty"].high


def check_setting(name: str, value, high=None, high_is: str | None = None):
    """`value` of the numeric setting `name`, normalised to int or float; BadSettings naming the
    field, the allowed range and the value otherwise. high: a lower upper limit than the table's
    (a model's context, a daemon's cap), described as `high_is` in the message."""
    lim = LIMITS[name]
    kind = "an integer" if lim.integer else "a number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise BadSettings(name, f"{name} must be {kind}, got {type(value).__name__} {value!r}")
    if lim.integer and not isinstance(value, numbers.Integral):
        if not (isinstance(value, float) and value.is_integer()):
            raise BadSettings(name, f"{name} must be an integer, got {value!r}")
    huge = isinstance(value, numbers.Integral) and not -1e30 < value < 1e30   # JSON integers may be huge
    if huge and not lim.integer:
        raise BadSettings(name, f"{name} must be {lim.rule.format(high=high_is or lim.high)}, got an integer "
                          "of more than 30 digits")
    elif not lim.integer and not math.isfinite(float(value)):
        raise BadSettings(name, f"{name} must be finite, got {value!r}")
    v = int(value) if lim.integer else float(value)
    hi = lim.high if high is None else high
    if v < lim.low or (lim.low_open and v == lim.low) or (hi is not None and v > hi):
        rule = lim.rule.format(high=high_is or hi)
        got = "an integer of more than 30 digits" if huge else (v if lim.integer else format(v, "g"))
        raise BadSettings(name, f"{name} must be {rule}, got {got}")
    return v


def check_stop(stop, max_strings: int = MAX_STOP_STRINGS, max_is: str = "") -> tuple:
    """Stop strings as a tuple (one string is a list of one); BadSettings otherwise."""
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = (stop,)
    if not isinstance(stop, (list, tuple)):
        raise BadSettings("stop", f"stop must be a list of strings, got {type(stop).__name__}")
    if len(stop) > max_strings:
        raise BadSettings("stop", f"at most {max_strings} stop strings are allowed{max_is}, got {len(stop)}")
    for i, s in enumerate(stop):
        if not isinstance(s, str):
            raise BadSettings("stop", f"stop[{i}] must be a string, got {type(s).__name__} {s!r}")
        if not s or len(s) > MAX_STOP_CHARS:
            raise BadSettings("stop", f"stop[{i}] must have 1 to {MAX_STOP_CHARS} characters, got {len(s)}")
    return tuple(stop)


@dataclass
class GenerationSettings:
    """What a request may choose about generation. Call validate() before use."""

    max_tokens: int = 64              # tokens to generate at most (the context may end it sooner)
    temperature: float = 0.8          # 0 = greedy (argmax), no random draw
    top_k: int = 40                   # keep the k most likely tokens; 0 = no limit
    top_p: float = 0.95               # nucleus: smallest set whose probability reaches top_p; 1 = off
    repetition_penalty: float = 1.1   # > 1 discourages tokens already seen; 1 = off
    seed: int | None = None           # same seed + same settings + same prompt = same tokens
    stop: tuple = ()                  # strings that end generation; never emitted themselves
    stream: bool = True               # the daemon streams deltas; the runtime always yields them
    threads: int = 0                  # threads each forward step runs on (native backend); 0 = the
                                      # model's default (Model.threads); the tokens do not depend on it
    # the field values validate() last passed (fit() skips checking them again)
    _valid: tuple | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: dict) -> "GenerationSettings":
        """Build from a request map, rejecting unknown keys (typos should not pass silently)."""
        if not isinstance(d, dict):
            raise BadSettings("settings", f"generation settings must be a map, got {type(d).__name__}")
        known = {f.name for f in fields(cls) if f.init}
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise BadSettings(unknown[0], f"unknown generation setting(s) {', '.join(unknown)}; "
                                          f"expected some of {', '.join(sorted(known))}")
        return cls(**d).validate()

    def validate(self, context: int | None = None) -> "GenerationSettings":
        """Check every field against LIMITS; normalise types in place; return self.

        context: the model's max_seq_len; max_tokens may not exceed it.
        Raises BadSettings naming the field, the allowed range and the value.
        """
        if context is None:
            self.max_tokens = check_setting("max_tokens", self.max_tokens)
        else:
            self.max_tokens = check_setting("max_tokens", self.max_tokens, context,
                                            f"the model's context of {context} tokens")
        for name in ("temperature", "top_k", "top_p", "repetition_penalty"):
            setattr(self, name, check_setting(name, getattr(self, name)))
        self.top_k = min(self.top_k, TOP_K_MAX)   # past any vocabulary: the same as no limit
        if self.seed is not None:
            self.seed = check_setting("seed", self.seed)
        self.threads = check_setting("threads", self.threads)
        self.stop = check_stop(self.stop)
        if not isinstance(self.stream, bool):
            raise BadSettings("stream", f"stream must be true or false, got {self.stream!r}")
        self._valid = self._values()
        return self

    def fit(self, context: int) -> "GenerationSettings":
        """Settings for a model of this context: validate() unless that already passed on these
        values, then max_tokens against the context alone."""
        if self._valid is None or self._valid != self._values():
            return self.validate(context)
        if self.max_tokens > context:
            check_setting("max_tokens", self.max_tokens, context, f"the model's context of {context} tokens")
        return self

    def _values(self) -> tuple:
        return (self.max_tokens, self.temperature, self.top_k, self.top_p, self.repetition_penalty,
                self.seed, self.stop, self.stream, self.threads)


def apply_repetition_penalty(logits: np.ndarray, seen, penalty: float, unique: bool = False) -> np.ndarray:
    """CTRL / llama.cpp rule, once per distinct seen token: positive logits are divided by the
    penalty, negative ones multiplied, so the token always becomes less likely when penalty > 1.
    Returns a new float32 array; `logits` is not modified. unique=True: `seen` is already an
    int array of distinct valid ids (the generation loop keeps one, saving a np.unique per step)."""
    out = np.array(logits, dtype=np.float32)
    if penalty == 1.0 or len(seen) == 0:
        return out
    ids = seen if unique else _distinct_ids(seen, out.shape[0])
    v = out[ids]
    p = np.float32(penalty)
    out[ids] = np.where(v > 0, v / p, v * p)
    return out


def _distinct_ids(seen, n: int) -> np.ndarray:
    """Distinct ids of `seen` that index a vocabulary of n, as int64 (for the penalty)."""
    if isinstance(seen, (set, frozenset)):
        seen = list(seen)
    ids = np.unique(np.asarray(seen, dtype=np.int64))
    return ids[(ids >= 0) & (ids < n)]


def top_k_ids(logits: np.ndarray, k: int) -> np.ndarray:
    """Ids of the k largest logits, ascending; every id tied with the k-th value is kept too (so
    the result never depends on sort order). O(n): one partition, no full sort."""
    n = logits.shape[0]
    if k <= 0 or k >= n:
        return np.arange(n)
    kth = np.partition(logits, n - k)[n - k]
    return np.flatnonzero(logits >= kth)


def top_k_mask(logits: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask form of top_k_ids."""
    mask = np.zeros(logits.shape[0], dtype=bool)
    mask[top_k_ids(logits, k)] = True
    return mask


def top_p_mask(probs: np.ndarray, p: float) -> np.ndarray:
    """Boolean mask of the smallest set of most likely tokens whose total probability reaches p
    (always at least the most likely one). p >= 1 keeps everything."""
    n = probs.shape[0]
    if p >= 1.0:
        return np.ones(n, dtype=bool)
    order = np.argsort(-probs, kind="stable")
    cum = np.cumsum(probs[order])
    # the first index where the cumulative sum reaches p is the last token kept
    last = int(np.searchsorted(cum, p * cum[-1], side="left"))
    mask = np.zeros(n, dtype=bool)
    mask[order[: min(last, n - 1) + 1]] = True
    return mask


def softmax(x: np.ndarray) -> np.ndarray:
    m = np.max(x)
    e = np.exp(x - m)
    return e / e.sum()


class Sampler:
    """Chooses the next token from logits with the settings' rules and its own seeded RNG."""

    def __init__(self, settings: GenerationSettings):
        self.settings = settings
        self.rng = np.random.default_rng(settings.seed)
        from ..kernels import native_sampler
        self._native = native_sampler()

    def _penalised(self, logits: np.ndarray, seen, unique: bool = False) -> np.ndarray:
        return apply_repetition_penalty(logits, seen, self.settings.repetition_penalty, unique)

    def candidates(self, logits: np.ndarray, seen=(), unique: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(ids, probabilities) of the tokens a draw can pick, most likely first.

        Top-k works on an O(n) partition and only the k survivors are sorted, so a step costs
        little even for large vocabularies."""
        s = self.settings
        z = self._penalised(logits, seen, unique)
        if s.temperature == 0.0:
            return np.array([int(np.argmax(z))]), np.array([1.0])
        ids = top_k_ids(z, s.top_k)
        zc = z[ids].astype(np.float64) / s.temperature
        order = np.argsort(-zc, kind="stable")
        ids, zc = ids[order], zc[order]
        probs = softmax(zc)
        if s.top_p < 1.0:
            cum = np.cumsum(probs)
            last = int(np.searchsorted(cum, s.top_p * cum[-1], side="left"))
            keep = min(last, probs.shape[0] - 1) + 1
            ids, probs = ids[:keep], probs[:keep] / cum[keep - 1]
        return ids, probs

    def probabilities(self, logits: np.ndarray, seen=()) -> np.ndarray:
        """The full distribution the next draw uses (float64, sums to 1). Greedy is one-hot."""
        ids, p = self.candidates(logits, seen)
        out = np.zeros(np.asarray(logits).shape[0])
        out[ids] = p
        return out

    def sample(self, logits: np.ndarray, seen=(), unique: bool = False) -> int:
        """One token id. Temperature 0 is argmax (after the repetition penalty) with no draw.
        seen: ids so far (prompt + generated) for the repetition penalty; unique=True when it is
        already an int array of distinct valid ids.

        Runs the native sampler when it is available (BULLET_SAMPLER=numpy forces NumPy): the
        same rules and the same single draw from this sampler's RNG, without holding the GIL."""
        native = self._native
        if native is None:
            return self.sample_numpy(logits, seen, unique)
        st = self.settings
        logits = np.asarray(logits, dtype=np.float32)
        ids = seen if unique else _distinct_ids(seen, logits.shape[0])
        coin = self.rng.random() if st.temperature != 0.0 else 0.0
        t = native(logits, ids, st.temperature, st.top_k, st.top_p, st.repetition_penalty, coin)
        if t < 0:
            raise ValueError("cannot sample from logits that hold NaN or infinite values")
        return int(t)

    def sample_numpy(self, logits: np.ndarray, seen=(), unique: bool = False) -> int:
        """The NumPy reference of sample() (and its fallback)."""
        if not np.isfinite(logits).all():
            raise ValueError("cannot sample from logits that hold NaN or infinite values")
        return self._pick(self._penalised(logits, seen, unique))

    def _pick(self, z: np.ndarray) -> int:
        """Index of the token drawn from penalised logits z with the settings' rules."""
        if self.settings.temperature == 0.0:
            return int(np.argmax(z))
        # the same rules as candidates(), fused so one cumulative sum serves top-p and the draw
        st = self.settings
        ids = top_k_ids(z, st.top_k)
        zc = z[ids]
        order = np.argsort(-zc, kind="stable")
        ids = ids[order]
        w = np.exp((zc[order].astype(np.float64) - float(zc[order[0]])) / st.temperature)
        cum = np.cumsum(w)
        n = cum.shape[0]
        if st.top_p < 1.0:
            n = min(int(np.searchsorted(cum, st.top_p * cum[-1], side="left")), n - 1) + 1
        # inverse-CDF draw with one uniform number, like llama2.c's sample_mult
        coin = self.rng.random()
        i = int(np.searchsorted(cum[:n], coin * cum[n - 1], side="right"))
        return int(ids[min(i, n - 1)])

    # -- masked sampling (structured output) ------------------------------------------------
    def sample_masked(self, logits: np.ndarray, allowed: np.ndarray, seen=()) -> int:
        """One token id among `allowed` (ascending ids): every rule (penalty, greedy, top-k,
        top-p, the draw) works on the allowed tokens only, as if the others had probability 0.
        Native when available, like sample(); sample_masked_numpy is the reference."""
        native = self._native
        if native is None:
            return self.sample_masked_numpy(logits, allowed, seen)
        st = self.settings
        z = np.asarray(logits, dtype=np.float32)[allowed]
        local = _seen_in(allowed, seen)
        coin = self.rng.random() if st.temperature != 0.0 else 0.0
        i = native(z, local, st.temperature, st.top_k, st.top_p, st.repetition_penalty, coin)
        if i < 0:
            raise ValueError("cannot sample from logits that hold NaN or infinite values")
        return int(allowed[i])

    def sample_masked_numpy(self, logits: np.ndarray, allowed: np.ndarray, seen=()) -> int:
        """The NumPy reference of sample_masked()."""
        z = np.asarray(logits, dtype=np.float32)[allowed]
        if not np.isfinite(z).all():
            raise ValueError("cannot sample from logits that hold NaN or infinite values")
        z = apply_repetition_penalty(z, _seen_in(allowed, seen), self.settings.repetition_penalty, True)
        return int(allowed[self._pick(z)])


def _seen_in(allowed: np.ndarray, seen) -> np.ndarray:
    """Positions in `allowed` (ascending ids) of the ids in `seen`."""
    seen = np.asarray(list(seen) if isinstance(seen, (set, frozenset)) else seen, dtype=np.int64)
    if seen.size == 0 or allowed.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.isin(allowed, seen))
