"""Loaded models, sessions and generation: the runtime API the daemon uses.

Owns `load_model` (open + validate a .bullet, pick the backend), `Model`, `Session` (one KV
cache, thread-safe) and `Generation` (an iterator of text deltas with finish_reason, tokens,
prompt_tokens and text). The contract is docs/ARCHITECTURE.md, "bulletd.runtime".

Backends:
    native  bulletd._native through bulletd.kernels: the whole forward step in one C++ call with
            the GIL released; a prompt is one prefill call (matrix-matrix work).
    numpy   bulletd.runtime.reference: the NumPy oracle, the fallback without the native module.
load_model(..., backend="auto") uses native when the module imports, unless the environment sets
BULLET_BACKEND=numpy (or =native to insist on it); an explicit backend argument wins.

The numpy backend keeps bq4 weights as the environment's BULLET_NUMPY_WEIGHTS says (an explicit
numpy_weights argument wins; `model.numpy_weights` tells which is in use, None on native):
    mapped  (default) in the mapped file; each product dequantises its matrix on the fly:
            private memory is the KV caches and temporaries; several times slower per token
    f32     dequantised once at load: 4 bytes per weight (6.4x the bq4 bytes) of private memory
Both give bit-identical logits (bulletd.runtime.reference).

    from bulletd.runtime import load_model, GenerationSettings
    m = load_model("child.bullet")
    g = m.generate("Once upon a time", GenerationSettings(max_tokens=32, temperature=0))
    print("".join(g), g.finish_reason)
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

from ..errors import BadPrompt, BulletError, ContextOverflow, FormatError, ModelError
from ..format import arch as _arch
from .reference import ReferenceModel, check_arch, expected_shapes
from .sampling import GenerationSettings, Sampler

BACKENDS = ("auto", "native", "numpy")
NUMPY_WEIGHTS = ("mapped", "f32")   # BULLET_NUMPY_WEIGHTS; the first is the default
FINISH_REASONS = ("length", "stop", "eos", "cancelled")


def _native_kernels():
    """The bulletd.kernels module when the native model is usable, else None (and why)."""
    try:
        from .. import kernels
    except ImportError as exc:
        return None, f"bulletd.kernels does not import: {exc}"
    ok = getattr(kernels, "native_available", None)
    if ok is None or not ok():
        why = getattr(kernels, "native_error", None)
        return None, f"the native module is unavailable ({why() if callable(why) else why or 'not built'})"
    if not hasattr(kernels, "NativeModel"):
        return None, "bulletd.kernels offers no native model"
    return kernels, ""


def _choose_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ModelError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        env = os.environ.get("BULLET_BACKEND", "auto").strip().lower() or "auto"
        if env not in BACKENDS:
            raise ModelError(f"BULLET_BACKEND must be one of {', '.join(BACKENDS)}, got {env!r}")
        backend = env
    if backend == "auto":
        kernels, _ = _native_kernels()
        return "native" if kernels is not None else "numpy"
    if backend == "native":
        kernels, why = _native_kernels()
        if kernels is None:
            raise ModelError(f"backend 'native' was requested but {why}; "
                             f"use backend='numpy' (BULLET_BACKEND=numpy) or rebuild the project")
    return backend


def _choose_numpy_weights(numpy_weights: str) -> str:
    """"mapped" or "f32": the argument, or for "auto" BULLET_NUMPY_WEIGHTS (default "mapped")."""
    if numpy_weights == "auto":
        env = os.environ.get("BULLET_NUMPY_WEIGHTS", "").strip().lower()
        if env and env not in NUMPY_WEIGHTS:
            raise ModelError(f"BULLET_NUMPY_WEIGHTS must be one of {', '.join(NUMPY_WEIGHTS)}, "
                             f"got {os.environ['BULLET_NUMPY_WEIGHTS']!r}")
        return env or NUMPY_WEIGHTS[0]
    if numpy_weights not in NUMPY_WEIGHTS:
        raise ModelError(f"numpy_weights must be auto or one of {', '.join(NUMPY_WEIGHTS)}, "
                         f"got {numpy_weights!r}")
    return numpy_weights


def check_lm_file(bf) -> dict:
    """Validate what the forward pass relies on, before any native code sees the tensors:
    the kind, the arch, every tensor's presence, dtype, logical shape and raw array shape.
    Returns the normalised arch. Raises ModelError naming the tensor and the mismatch."""
    if bf.kind != "lm":
        raise ModelError(f"{bf.path}: kind is {bf.kind!r}; only 'lm' files generate text")
    try:
        arch = check_arch(bf.arch)
    except ModelError as exc:
        raise ModelError(f"{bf.path}: {exc}") from None
    # the KV cache is sized by max_seq_len, which no tensor bounds: a hostile header could ask for
    # terabytes (the cap: bulletd.format.arch.max_kv_bytes)
    kv = _arch.kv_cache_bytes(arch)
    try:
        limit = _arch.max_kv_bytes()
    except ValueError as exc:
        raise ModelError(str(exc)) from None
    if kv > limit:
        raise ModelError(f"{bf.path}: a session's KV cache for max_seq_len {arch['max_seq_len']} would take "
                         f"{kv:_} bytes, above the limit of {limit:_} (BULLET_MAX_KV_BYTES)")
    if len(bf.vocab) != arch["vocab_size"]:
        raise ModelError(f"{bf.path}: the vocabulary has {len(bf.vocab)} tokens, arch.vocab_size "
                         f"is {arch['vocab_size']}")
    for name, shape in expected_shapes(arch).items():
        info = bf.tensors.get(name)
        if info is None:
            raise ModelError(f"{bf.path}: tensor {name} is missing (expected shape {shape})")
        if tuple(info.shape) != shape:
            raise ModelError(f"{bf.path}: tensor {name} has shape {tuple(info.shape)}, expected {shape}")
        if info.dtype not in ("f32", "f16", "bq4"):
            raise ModelError(f"{bf.path}: tensor {name} has dtype {info.dtype!r}, expected bq4, f16 or f32")
        if len(shape) == 1 and info.dtype == "bq4":
            raise ModelError(f"{bf.path}: tensor {name} is a vector and cannot be bq4")
        raw = bf.tensor(name)
        if info.dtype == "bq4":
            want = _arch.bq4_matrix_shape(*shape)
            if raw.dtype != np.uint8 or tuple(raw.shape) != want:
                raise ModelError(f"{bf.path}: bq4 tensor {name} maps to {raw.dtype} {tuple(raw.shape)}, "
                                 f"expected uint8 {want}")
        elif tuple(raw.shape) != shape:
            raise ModelError(f"{bf.path}: tensor {name} maps to shape {tuple(raw.shape)}, expected {shape}")
    return arch


class Model:
    """One loaded lm file. Serves any number of sessions; weights are shared, read-only."""

    def __init__(self, bf, backend: str = "auto", kernel: str = "auto", owns_file: bool = False,
                 numpy_weights: str = "auto"):
        self.bf = bf
        self._owns_file = owns_file     # close the BulletFile in close() only if load_model opened it
        self._idle: Session | None = None   # one idle session kept for generate(session=None)
        self._idle_lock = threading.Lock()
        self.path = bf.path
        self.header = bf.header
        self.arch = check_lm_file(bf)
        self.name = bf.name
        self.version = bf.version
        self.tokenizer = bf.tokenizer
        tk = bf.header.get("tokenizer", {})
        stop = set()
        if self.tokenizer.eos_id is not None:
            stop.add(int(self.tokenizer.eos_id))
        for i in tk.get("stop_ids", []) or []:
            if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < self.arch["vocab_size"]:
                stop.add(i)
        self.stop_ids = frozenset(stop)   # sampling one of these ends generation with "eos"
        self.threads = 1    # threads a forward step runs on when the settings say 0 (native backend)
        # NumPy loads numpy.random on first use, 50-100 ms of imports: at load, not in a request
        import numpy.random  # noqa: F401
        self.backend = _choose_backend(backend)
        self.kernel_path = "numpy"
        self.numpy_weights: str | None = None   # "mapped" | "f32" on the numpy backend
        self._ref: ReferenceModel | None = None
        self._native = None
        if self.backend == "native":
            kernels, _ = _native_kernels()
            self._kernels = kernels
            tensors = {name: bf.tensor(name) for name in expected_shapes(self.arch)}
            cfg = _arch.native_config(self.arch)   # the same KV cap as above
            try:
                self._native = kernels.NativeModel(cfg, tensors, kernel)
            except (ValueError, RuntimeError, TypeError, ModelError) as exc:
                raise ModelError(f"{bf.path}: the native model rejected the file: {exc}") from exc
            self.kernel_path = str(self._native.kernel_path)
        else:
            if kernel != "auto":
                raise ModelError(f"kernel {kernel!r} was requested but the backend is numpy")
            weights = _choose_numpy_weights(numpy_weights)   # checked only where it matters
            self._ref = ReferenceModel.from_bullet(bf, weights=weights)
            self.numpy_weights = weights

    # -- sessions -------------------------------------------------------------------------
    def new_session(self) -> "Session":
        return Session(self)

    def _take_session(self) -> "Session":
        """The idle session if there is one (its cache may hold a reusable prompt prefix), else a
        new one. Saves allocating and zeroing a KV cache per request."""
        with self._idle_lock:
            s, self._idle = self._idle, None
        return s if s is not None else self.new_session()

    def _give_back(self, s: "Session") -> None:
        with self._idle_lock:
            if self._idle is None and (self._native is not None or self._ref is not None):
                self._idle = s

    def release_idle(self) -> None:
        """Drop the idle session kept for generate(session=None) (frees its KV cache)."""
        with self._idle_lock:
            self._idle = None

    @property
    def context(self) -> int:
        return self.arch["max_seq_len"]

    # -- generation -----------------------------------------------------------------------
    def encode_prompt(self, prompt: str) -> list[int]:
        """Prompt text -> ids (BOS first). BadPrompt for a non-string or empty prompt,
        ContextOverflow for one that leaves no position to generate in."""
        if not isinstance(prompt, str):
            raise BadPrompt(f"prompt must be a string, got {type(prompt).__name__}")
        if not prompt:
            raise BadPrompt("prompt is empty; send at least one character")
        ids = self.tokenizer.encode(prompt, bos=True)
        self._check_prompt_len(ids)
        return ids

    def _check_prompt_len(self, ids) -> None:
        ctx = self.context
        if len(ids) >= ctx:
            raise ContextOverflow(f"the prompt is {len(ids)} tokens; this model's context is "
                                  f"{ctx} tokens and generation needs at least one free position")

    def generate(self, prompt: str, settings: GenerationSettings | None = None, session=None,
                 cancel: threading.Event | None = None, grammar=None) -> "Generation":
        """Generate a continuation of `prompt`. Settings and prompt are checked now (BadSettings,
        BadPrompt, ContextOverflow); the returned Generation yields str deltas as tokens decode.
        grammar (bulletd.runtime.grammar.Grammar): every token keeps the text a prefix of a valid
        document; generation ends with "stop" as soon as the document is complete."""
        settings = (settings or GenerationSettings()).fit(self.context)
        ids = self.encode_prompt(prompt)
        return Generation(self, ids, settings, session, cancel, grammar)

    def generate_ids(self, prompt_ids, settings: GenerationSettings | None = None, session=None,
                     cancel: threading.Event | None = None, grammar=None) -> "Generation":
        """Like generate, from token ids (BOS included if wanted). ModelError for bad ids."""
        settings = (settings or GenerationSettings()).fit(self.context)
        ids = _check_ids(prompt_ids, self.arch["vocab_size"])
        self._check_prompt_len(ids)
        return Generation(self, ids, settings, session, cancel, grammar)

    @property
    def grammar_vocab(self):
        """The vocabulary's byte trie for structured output (built on first use, shared by models
        with the same vocabulary)."""
        v = self.__dict__.get("_grammar_vocab")
        if v is None:
            from .grammar import Vocab
            v = self._grammar_vocab = Vocab.of(self.bf.vocab)
        return v

    def close(self) -> None:
        self.release_idle()
        self._native = None
        self._ref = None
        if self._owns_file:
            self.bf.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        how = f"weights={self.numpy_weights}" if self.numpy_weights else f"kernel={self.kernel_path}"
        return f"<Model {self.name} {self.version} backend={self.backend} {how}>"


def _check_ids(tokens, vocab_size: int) -> list[int]:
    if isinstance(tokens, (str, bytes)) or not hasattr(tokens, "__len__"):
        raise ModelError(f"token ids must be a list of integers, got {type(tokens).__name__}")
    out = []
    for i, t in enumerate(tokens):
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
            raise ModelError(f"token at index {i} must be an integer id, got {t!r}")
        if not 0 <= t < vocab_size:
            raise ModelError(f"token id {int(t)} at index {i} is outside 0..{vocab_size - 1}")
        out.append(int(t))
    if not out:
        raise ModelError("no tokens to process: an empty prompt cannot be run")
    return out


class Session:
    """One KV cache on one model. forward/prefill are serialised by a lock, so a session may be
    shared between threads; different sessions run in parallel (the native call drops the GIL).

    `tokens` lists the ids whose keys/values the cache holds (positions 0..len-1); generate()
    reuses the longest common prefix with a new prompt instead of recomputing it."""

    def __init__(self, model: Model):
        self.model = model
        self.lock = threading.Lock()
        self.tokens: list[int] = []
        if model.backend == "native":
            k = model._kernels
            try:
                self._impl = k.NativeSession(model._native)
            except (ValueError, RuntimeError, MemoryError, ModelError) as exc:
                raise ModelError(f"cannot create a native session: {exc}") from exc
            kvb = getattr(self._impl, "kv_cache_bytes", None)
            self.kv_bytes = int(kvb() if callable(kvb) else kvb) if kvb is not None else self._kv_estimate()
        else:
            self._impl = model._ref.new_session()
            self.kv_bytes = self._impl.kv_bytes

    def set_threads(self, n: int) -> None:
        """Threads each forward step runs on (1..64; the native backend splits the matrix products
        and attention heads among them, at most one per CPU this process may use: more would wait
        for each other; the NumPy backend always runs one). ModelError otherwise."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 64:
            raise ModelError(f"threads must be an integer from 1 to 64, got {n!r}")
        n = min(n, _cpus())
        if self.model.backend == "native" and n != getattr(self._impl, "threads", 1):
            self._impl.set_threads(n)

    def _kv_estimate(self) -> int:
        return _arch.kv_cache_bytes(self.model.arch)

    # unlocked versions, used by Generation while it holds the lock
    def _run(self, ids: list[int], pos: int) -> np.ndarray:
        a = self.model.arch
        if isinstance(pos, bool) or not isinstance(pos, (int, np.integer)):
            raise ModelError(f"position must be an integer, got {pos!r}")
        if pos < 0 or pos > len(self.tokens):
            raise ModelError(f"position {pos} is invalid: the cache holds positions 0..{len(self.tokens) - 1}, "
                             f"the next free one is {len(self.tokens)}")
        if pos + len(ids) > a["max_seq_len"]:
            raise ContextOverflow(f"positions {pos}..{pos + len(ids) - 1} run past the context of "
                             f"{a['max_seq_len']} tokens")
        # the cache is valid only up to pos from here on, whatever happens below
        del self.tokens[pos:]
        try:
            if len(ids) == 1:
                logits = self._impl.forward(ids[0], pos)
            else:
                logits = self._impl.prefill(ids, pos)
        except BulletError:
            raise
        except (ValueError, RuntimeError, IndexError) as exc:
            raise ModelError(f"forward pass failed at position {pos}: {exc}") from exc
        self.tokens.extend(ids)
        return np.asarray(logits, dtype=np.float32)

    def forward(self, token: int, pos: int) -> np.ndarray:
        """Logits (vocab,) float32 for one token at `pos` (pos <= number of cached tokens)."""
        ids = _check_ids([token], self.model.arch["vocab_size"])
        with self.lock:
            return self._run(ids, pos)

    def prefill(self, tokens, pos: int = 0) -> np.ndarray:
        """Run tokens at positions pos.. in one call; logits of the last one."""
        ids = _check_ids(tokens, self.model.arch["vocab_size"])
        with self.lock:
            return self._run(ids, pos)

    def _prefill_reusing(self, ids: list[int]) -> np.ndarray:
        """Prefill `ids` from position 0, skipping the prefix already in the cache (at least the
        last prompt token is recomputed, since its logits are needed)."""
        n = 0
        limit = min(len(self.tokens), len(ids) - 1)
        while n < limit and self.tokens[n] == ids[n]:
            n += 1
        return self._run(ids[n:], n)

    def reset(self) -> None:
        with self.lock:
            self.tokens.clear()


class Generation:
    """Iterator of text deltas. After it ends: finish_reason, tokens (generated ids; the EOS /
    stop id that ended it is excluded, the tokens that spelled a stop string are included),
    prompt_tokens (ids, BOS included), text (everything yielded),
    and timings: prefill_s, ttft_s (start to first token chosen), decode_s.

    The session's lock is held from the first next() until the generation ends or is closed, so
    two generations on one session run one after the other. A set `cancel` Event ends it with
    finish_reason "cancelled" before the next batch of tokens (one token on the NumPy paths, about
    _BATCH_S of work with the native decode loop; the tokens of a batch already run are kept).

    With a grammar (bulletd.runtime.grammar) every draw is among the tokens the automaton allows
    (`grammar` holds the request's TokenRun), and the generation ends with "stop" as soon as the
    document is complete: when nothing can extend it, or at a stop id, which the grammar allows
    only there ("eos" does not happen)."""

    def __init__(self, model: Model, prompt_ids: list[int], settings: GenerationSettings,
                 session: Session | None, cancel: threading.Event | None, grammar=None):
        if session is not None and session.model is not model:
            raise ModelError("the session belongs to another model")
        self.grammar = None     # the request's TokenRun when a grammar constrains it
        self._grammar_done = False
        if grammar is not None:
            from .grammar import Grammar
            if not isinstance(grammar, Grammar):
                raise ModelError(f"grammar must be a bulletd.runtime.grammar.Grammar, got "
                                 f"{type(grammar).__name__}")
            self.grammar = grammar.runner(model.grammar_vocab, model.stop_ids)
        self.model = model
        self.settings = settings
        self.session = session          # None: take the model's idle session when the run starts
        self._owns_session = session is None
        self.cancel = cancel
        self.prompt_tokens = list(prompt_ids)
        self.tokens: list[int] = []
        self.text = ""
        self._finish: str | None = None
        self.prefill_s = self.ttft_s = self.decode_s = 0.0
        self._it = self._run()

    def __iter__(self):
        return self

    def __next__(self) -> str:
        return next(self._it)

    @property
    def finish_reason(self) -> str | None:
        """"length" | "stop" | "eos" | "cancelled"; None while running. A consumer that stops
        iterating after setting `cancel` (or calls close()) sees "cancelled"."""
        if self._finish is None and self._cancelled():
            return "cancelled"
        return self._finish

    @finish_reason.setter
    def finish_reason(self, value: str) -> None:
        self._finish = value

    def close(self) -> None:
        """Stop early: releases the session now rather than when the object is collected."""
        self._it.close()
        if self._finish is None:
            self._finish = "cancelled"

    def _cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def _run(self):
        m = self.model
        if self._owns_session:
            self.session = m._take_session()
        try:
            yield from self._generate()
        finally:
            if self._owns_session:
                m._give_back(self.session)

    def _generate(self):
        m, s = self.model, self.settings
        tok = m.tokenizer
        stops = s.stop
        with self.session.lock:
            t0 = time.perf_counter()
            if self._cancelled():
                self.finish_reason = "cancelled"
                return
            self.session.set_threads(s.threads or m.threads)
            logits = self.session._prefill_reusing(self.prompt_tokens)
            self.prefill_s = time.perf_counter() - t0
            pos = len(self.prompt_tokens)
            src = self._sampled(logits, pos, Sampler(s))
            dec = tok.stream_decoder()
            dec.push_many(self.prompt_tokens)   # prime the decoder: the prompt's text is not output,
            #                                     but it decides leading-space stripping and UTF-8 state
            out = ""        # decoded generated text
            emitted = 0     # out[:emitted] has been yielded
            t_dec = None
            stop_ids, context, max_tokens = m.stop_ids, m.context, s.max_tokens
            try:
                while True:
                    if self._cancelled():
                        self.finish_reason = "cancelled"
                        break
                    batch = next(src)           # ids drawn (and run) together
                    if t_dec is None:
                        t_dec = time.perf_counter()
                        self.ttft_s = t_dec - t0
                    # the ids of this batch the generation keeps, and why it ends if it does: an
                    # end-of-sequence id is dropped; max_tokens or the context keeps the id reaching it
                    take, reason = len(batch), None
                    n0 = len(self.tokens)
                    if stop_ids.isdisjoint(batch):
                        # the first j where max_tokens or the context is reached, by arithmetic
                        j = max(0, min(max_tokens - n0 - 1, context - pos))
                        if j < take:
                            take, reason = j + 1, "length"
                    else:
                        for j, nxt in enumerate(batch):
                            if nxt in stop_ids:   # with a grammar: only where the document is complete
                                take, reason = j, "stop" if self.grammar is not None else "eos"
                                break
                            if n0 + j + 1 >= max_tokens or pos + j >= context:
                                take, reason = j + 1, "length"
                                break
                    if self._grammar_done and take == len(batch):
                        reason = "stop"   # the document is complete and nothing can extend it
                    ids = batch[:take] if take < len(batch) else batch
                    if not stops:
                        self.tokens.extend(ids)
                        out += dec.push_many(ids)
                        safe = len(out)
                    else:
                        # one id at a time: a stop string ends the generation at the id that
                        # completes it, and text that may begin one is held back
                        safe = len(out)
                        for nxt in ids:
                            self.tokens.append(nxt)
                            out += dec.push(nxt)
                            cut, hold = _scan_stops(out, emitted, stops)
                            if cut is not None:
                                out = out[:cut]
                                reason = "stop"
                                break
                            safe = len(out) - hold
                    if reason is not None:
                        self.finish_reason = reason
                        break
                    if safe > emitted:
                        delta = out[emitted:safe]
                        emitted = safe
                        self.text += delta
                        yield delta
                    pos += take   # the ids are (or the last is about to be) run at pos..pos+take-1
            finally:
                src.close()
            if self._finish != "stop":
                out += dec.flush()
                if stops:
                    cut, _ = _scan_stops(out, emitted, stops)
                    if cut is not None:
                        out = out[:cut]
                        if self._finish != "cancelled":
                            self._finish = "stop"
            if t_dec is not None:
                self.decode_s = time.perf_counter() - t_dec
            if len(out) > emitted:
                delta = out[emitted:]
                self.text += delta
                yield delta

    def _sampled(self, logits: np.ndarray, pos: int, sampler: Sampler):
        """The drawn token ids, in lists (one per native batch, else one id each); each id is
        run through the model before the next one is drawn. The consumer stops resuming when it
        has what it wants, and never asks for more than max_tokens or the context allows (the
        next draw after one at the context's last position is refused by the model).

        With the native backend and sampler, draws and forward passes run in batches inside one
        native call each (the GIL is free meanwhile). The first batch is one token, so the first
        token comes at once (and ttft_s times one token). Later batches hold about _BATCH_S of
        work at the speed the last call ran (at most _MAX_BATCH tokens); when streaming, or when
        stop strings may end the generation early, they also grow at most 4x per call (1, 4, 16 ..),
        so the first pieces come at once. A cancel waits at most one batch. Tokens drawn beyond
        what the consumer takes are wasted work but stay valid in the cache (session.tokens lists
        them).
        Otherwise one draw and one forward call per token. Both give the same ids for one seed."""
        m, s, sess = self.model, self.settings, self.session
        seen_set = set(self.prompt_tokens)
        seen = sorted(seen_set)      # distinct ids so far, for the repetition penalty
        if self.grammar is not None:
            yield from self._sampled_grammar(logits, pos, sampler, seen_set, seen)
            return
        native = sampler._native is not None and getattr(sess._impl, "has_decode", False)
        if not native:
            seen_arr = np.array(seen, dtype=np.int64)
            while True:
                try:   # the sampler refuses NaN/inf logits (checked once, inside it)
                    nxt = sampler.sample(logits, seen_arr, unique=True)
                except ValueError as exc:
                    raise ModelError(f"{m.path}: the model produced non-finite logits at position "
                                     f"{pos - 1} (weights with NaN or infinite values?)") from exc
                yield [nxt]
                if nxt not in seen_set:
                    seen_set.add(nxt)
                    seen_arr = np.append(seen_arr, nxt)
                logits = sess._run([nxt], pos)
                pos += 1
        buf = np.require(logits, dtype=np.float32, requirements=["C", "W", "O"])
        stop_ids = np.array(sorted(m.stop_ids), dtype=np.int64)
        no_coins = np.zeros(_MAX_BATCH, dtype=np.float64)
        pending, produced, batch = -1, 0, 1
        ramp = s.stream or bool(s.stop)
        while True:
            # draws the context allows: each one after the first needs a free position, and so
            # does the pending token
            room = m.context - pos + (0 if pending >= 0 else 1)
            n = min(batch, s.max_tokens - produced, room)
            if n <= 0:
                return
            coins = sampler.rng.random(n) if s.temperature != 0.0 else no_coins
            t0 = time.perf_counter()
            toks, end, new_pos = sess._impl.decode(
                buf, pending, pos, n, coins, np.array(seen, dtype=np.int64), s.temperature, s.top_k, s.top_p,
                s.repetition_penalty, stop_ids)
            took, ran = time.perf_counter() - t0, new_pos - pos
            pos = _took(sess, pending, toks, pos, new_pos, seen, seen_set)
            if toks:
                yield toks
            produced += len(toks)
            if end == "nonfinite":
                raise ModelError(f"{m.path}: the model produced non-finite logits at position "
                                 f"{pos - 1} (weights with NaN or infinite values?)")
            if end == "stop_id" or not toks:
                return
            pending = toks[-1]
            batch = _next_batch(batch, ramp, took, ran)


    def _grammar_row(self, state: int):
        """The state's row; ModelError when the vocabulary cannot go on (no byte fallback)."""
        row = self.grammar.row(state)
        if not row.final and row.ids.size == 0:
            raise ModelError(f"{self.model.path}: no token of this model's vocabulary can continue the "
                             f"document (the vocabulary lacks bytes the grammar needs)")
        return row

    def _sampled_grammar(self, logits: np.ndarray, pos: int, sampler: Sampler, seen_set: set, seen: list):
        """_sampled under a grammar: each draw is among the tokens the current state allows;
        the token that completes the document (no token can extend it) is the last one, and
        sets _grammar_done. One draw and one forward call per token."""
        m, sess, run = self.model, self.session, self.grammar
        state = run.start
        row = self._grammar_row(state)
        if row.done:          # a grammar whose only document is empty cannot be built; be safe
            self._grammar_done = True
            return
        auto = None
        if sampler._native is not None and getattr(sess._impl, "has_decode_grammar", False):
            auto = run.native()
        if auto is not None:
            yield from self._decode_grammar(logits, pos, sampler, seen_set, seen, state, auto)
            return
        seen_arr = np.array(seen, dtype=np.int64)
        while True:
            try:
                nxt = sampler.sample_masked(logits, row.ids, seen_arr)
            except ValueError as exc:
                raise ModelError(f"{m.path}: the model produced non-finite logits at position "
                                 f"{pos - 1} (weights with NaN or infinite values?)") from exc
            state = row.next_state(nxt)
            if state >= 0:
                row = self._grammar_row(state)
                if row.done:
                    self._grammar_done = True
            yield [nxt]
            if state < 0 or self._grammar_done:
                return
            if nxt not in seen_set:
                seen_set.add(nxt)
                seen_arr = np.append(seen_arr, nxt)
            logits = sess._run([nxt], pos)
            pos += 1


    def _decode_grammar(self, logits, pos, sampler, seen_set, seen, state, auto):
        """_sampled_grammar on the native loop: batches as in _sampled, each one native call that
        draws among the allowed ids and follows the automaton; it comes back early when it reaches
        a state not expanded yet (expanded here, then the loop goes on) or the document is
        complete. Coins drawn for draws that did not happen are kept for the next call, so the
        ids equal the one-call-per-token path's for one seed."""
        m, s, sess = self.model, self.settings, self.session
        buf = np.require(logits, dtype=np.float32, requirements=["C", "W", "O"])
        stop_ids = np.array(sorted(m.stop_ids), dtype=np.int64)
        no_coins = np.zeros(_MAX_BATCH, dtype=np.float64)
        spare = np.zeros(0, dtype=np.float64)
        pending, produced, batch = -1, 0, 1
        ramp = s.stream or bool(s.stop)
        while True:
            room = m.context - pos + (0 if pending >= 0 else 1)
            n = min(batch, s.max_tokens - produced, room)
            if n <= 0:
                return
            if s.temperature != 0.0:
                coins = spare[:n] if spare.size >= n else np.concatenate([spare, sampler.rng.random(n - spare.size)])
            else:
                coins = no_coins
            t0 = time.perf_counter()
            toks, end, new_pos, state = sess._impl.decode_grammar(
                buf, pending, pos, n, coins, np.array(seen, dtype=np.int64), s.temperature, s.top_k, s.top_p,
                s.repetition_penalty, stop_ids, auto, state)
            took, ran = time.perf_counter() - t0, new_pos - pos
            if s.temperature != 0.0:
                spare = np.concatenate([coins[len(toks):n], spare[n:]]) if spare.size > n else coins[len(toks):n]
            pos = _took(sess, pending, toks, pos, new_pos, seen, seen_set)
            if end == "nonfinite":
                raise ModelError(f"{m.path}: the model produced non-finite logits at position "
                                 f"{pos - 1} (weights with NaN or infinite values?)")
            if end == "expand":
                if state < 0:
                    raise ModelError("the grammar automaton has no next state for a drawn token")
                if self._grammar_row(state).done:
                    end = "complete"
            if end == "complete":
                self._grammar_done = True
            if toks:
                yield toks
            produced += len(toks)
            if end in ("stop_id", "complete") or not toks:
                return
            pending = toks[-1]
            batch = _next_batch(batch, ramp, took, ran)


# A native decode call after the first holds about _BATCH_S seconds of work at the speed the last
# call ran, and at most _MAX_BATCH tokens: a cancel or deadline waits about that long at most, and
# a streaming consumer gets its pieces about that far apart. Python's work per call (the seen ids,
# the coins, detokenising, one yield) is then a small share of a call, even for a fast child.
_BATCH_S = 0.01
_MAX_BATCH = 256
_FIRST_BATCH = 16   # while the speed is unknown


def _next_batch(batch: int, ramp: bool, took: float, ran: int) -> int:
    """Draws for the next native call, after one that ran `ran` forward passes in `took` seconds
    (none yet: _FIRST_BATCH); with `ramp` at most 4x the last batch."""
    n = _FIRST_BATCH if ran <= 0 or took <= 0.0 else int(_BATCH_S * ran / took)
    n = max(1, min(_MAX_BATCH, n))
    return min(n, 4 * batch) if ramp else n


def _cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _took(sess, pending: int, toks: list, pos: int, new_pos: int, seen: list, seen_set: set) -> int:
    """Record one native batch: the ids it ran (the pending one first) in the session, the new ids
    in seen. Returns the next position."""
    ran = new_pos - pos
    if pending >= 0:
        sess.tokens.append(pending)
        ran -= 1
    sess.tokens.extend(toks[:ran])
    new = set(toks)
    new -= seen_set
    if new:   # the order of `seen` does not matter: the penalty applies once per distinct id
        seen_set |= new
        seen.extend(new)
    return new_pos


def _scan_stops(out: str, emitted: int, stops) -> tuple[int | None, int]:
    """Find the earliest stop string in out[emitted:] (a match cannot start earlier: text that
    could begin a stop string is never emitted). Returns (cut, hold): cut = where the text ends
    if a stop string was found, else None; hold = how many trailing characters to keep back
    because they could be the start of a stop string split across tokens."""
    best = None
    for st in stops:
        i = out.find(st, emitted)
        if i >= 0 and (best is None or i < best):
            best = i
    if best is not None:
        return best, 0
    hold = 0
    tail = out[emitted:]
    for st in stops:
        for k in range(min(len(st) - 1, len(tail)), hold, -1):
            if tail.endswith(st[:k]):
                hold = k
                break
    return None, hold


def load_model(source, backend: str = "auto", kernel: str = "auto", numpy_weights: str = "auto") -> Model:
    """Open a .bullet lm file (path or an open BulletFile) and build the chosen backend.

    Raises FormatError for a malformed file, ModelError when the file is well-formed but cannot
    be run (wrong kind, inconsistent shapes, native module missing with backend='native').
    kernel: "auto" or a native kernel path name (e.g. "scalar") to force one, native backend only.
    numpy_weights: "auto" (BULLET_NUMPY_WEIGHTS, default "mapped"), "mapped" or "f32": how the
    numpy backend keeps bq4 weights (module docstring)."""
    from ..format import BulletFile
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if not p.exists():
            raise FormatError(f"{p}: no such model file")
        bf = BulletFile.open(p)
        try:
            return Model(bf, backend, kernel, owns_file=True, numpy_weights=numpy_weights)
        except BaseException:
            bf.close()
            raise
    if isinstance(source, BulletFile):
        return Model(source, backend, kernel, numpy_weights=numpy_weights)
    raise ModelError(f"load_model expects a path or a BulletFile, got {type(source).__name__}")
