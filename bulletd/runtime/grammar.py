"""Structured output: a JSON-schema subset compiled to an automaton over UTF-8 bytes, and the
token masks a child's vocabulary gets from it (constrained decoding).

    g = compile_schema({"type": "object", "properties": {"expression": {"type": "string"}},
                        "required": ["expression"]})
    gen = model.generate(prompt, settings, grammar=g)    # every token keeps the text a valid prefix

Layers:
  schema   -> nodes (compile time: the schema is checked here; GrammarError names the schema path)
  nodes    -> byte automaton: a state is a set of parser stacks (a stack is a tuple of frames, a
              frame a small tuple); a byte maps a state to the set of stacks it leads to. States
              are interned to ids and their byte transitions memoised, lazily, as decoding
              reaches them. Nondeterminism (anyOf, optional properties, enum prefixes) is the set.
  vocab    -> token automaton: for a byte state, the allowed token ids (sorted) and the state each
              leads to, found by walking a byte trie of the vocabulary (shared prefixes are stepped
              once). The stop ids (EOS) are allowed only where the document is complete; BOS, pad
              and other control tokens never. A state is "done" when it is complete and no token
              can extend it: generation ends there with finish_reason "stop".
Rows are cached per (grammar, vocabulary); states inside an "x-copy" string depend on the copy
source (and a request's copy_spans) and are kept per request (`TokenRun`), so repeated requests
only pay for those. A request's `values` (the only values some enum / number properties may take)
make a table of their own, shared by the requests with the same values.

Output is compact JSON: no insignificant whitespace, object properties in schema order.
The supported subset and the limits are listed in docs/ARCHITECTURE.md ("Structured output").
"""
from __future__ import annotations

import bisect
import hashlib
import json
import math
import re
import threading
import unicodedata
from collections import OrderedDict
from functools import lru_cache
from fractions import Fraction

import numpy as np

# -- limits -----------------------------------------------------------------------------------
MAX_SCHEMA_DEPTH = 16       # nesting of schemas inside schemas
MAX_NODES = 4096            # compiled nodes per schema
MAX_PROPERTIES = 64         # properties of one object
MAX_ENUM = 1024             # values of one enum
MAX_LITERAL_BYTES = 1 << 16  # total bytes of enum/const values and keys
MAX_STRING_LENGTH = 4096    # maxLength / minLength
MAX_ITEMS = 1024            # maxItems / minItems
JSON_DEPTH = 8              # nesting of objects/arrays for format "json"
INT_DIGITS = 15             # digits before the point of a generated number
FRAC_DIGITS = 6             # digits after the point of a generated "number"
MAX_STATES = 200_000        # byte states per grammar before its caches are started afresh
MAX_RUN_STATES = 1_000_000  # byte states a single request may create
LIMIT_TABLES = 64           # sets of per-request value limits whose rows are kept per grammar
MAX_SPANS = 256             # allowed spans of one request ("x-copy": "spans")

ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$comment", "$schema", "$id"})
KEYWORDS = {
    "object": {"properties", "required", "additionalProperties", "anyOf"},
    "array": {"items", "maxItems", "minItems"},
    "string": {"maxLength", "minLength", "x-copy"},
    "integer": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"},
    "number": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"},
    "boolean": set(),
    "null": set(),
}


class GrammarError(ValueError):
    """An impossible, too large or unsupported schema. The message names the schema path."""


# -- node kinds and byte tables ---------------------------------------------------------------
LIT, STR, COPY, NUM, OBJ, ARR, JOBJ, JARR, ANYOF = range(9)

# number phases
N_START, N_MINUS, N_ZERO, N_INT, N_DOT, N_FRAC, N_E, N_ESIGN, N_EXP = range(9)
N_ACCEPT = (False, False, True, True, False, True, False, False, True)

# UTF-8: lead byte -> pending code; pending code -> (lo, hi, next code) for the next byte
_UTF8 = {1: (0x80, 0xBF, 0), 2: (0x80, 0xBF, 1), 3: (0xA0, 0xBF, 1), 4: (0x80, 0x9F, 1),
         5: (0x80, 0xBF, 2), 6: (0x90, 0xBF, 2), 7: (0x80, 0x8F, 2)}
_LEAD = [0] * 256
for _b in range(0xC2, 0xE0):
    _LEAD[_b] = 1
for _b in range(0xE1, 0xF0):
    _LEAD[_b] = 2
_LEAD[0xE0], _LEAD[0xED] = 3, 4
for _b in range(0xF1, 0xF4):
    _LEAD[_b] = 5
_LEAD[0xF0], _LEAD[0xF4] = 6, 7
_HEX = frozenset(b"0123456789abcdefABCDEF")
_STRING_SPECIAL = re.compile(r'["\\\x00-\x1f]')   # what a string cannot hold unescaped
_NUMBYTES = frozenset(b"0123456789-.eE+")
_VALUE_START = frozenset(b'"-0123456789tfn{[')
_ESCAPES = frozenset(b'"\\/bfnrt')


def _path(path: str) -> str:
    return "#" + path


def compact_json(value) -> str:
    """The compact JSON text of a value, as a grammar spells it."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


# =============================================================================================
# Schema -> nodes
# =============================================================================================

class _Node:
    __slots__ = ("kind", "alts", "prefixes", "max_len", "min_len", "ci", "cf", "lo", "hi", "neg",
                 "exp", "keys", "children", "required", "req_from", "any_req", "rest", "item",
                 "max_items", "min_items", "string", "choices", "words", "prop", "spans")

    def __init__(self, kind):
        self.kind = kind
        self.prop = None        # the object property whose value the node is (per-request limits name it)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _type_of(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if _is_int(v) or (isinstance(v, float) and v.is_integer()):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


class _Compiler:
    def __init__(self):
        self.nodes: list[_Node] = []
        self.literal_bytes = 0
        self._json_value: dict[int, int] = {}

    def add(self, node: _Node) -> int:
        if len(self.nodes) >= MAX_NODES:
            raise GrammarError(f"the schema is too large: more than {MAX_NODES} grammar nodes")
        self.nodes.append(node)
        return len(self.nodes) - 1

    # -- literals -------------------------------------------------------------------------
    def literal(self, values, path: str) -> int:
        alts = []
        for v in values:
            try:
                alts.append(compact_json(v).encode())
            except (TypeError, ValueError) as exc:
                raise GrammarError(f"{_path(path)}: value {v!r} is not JSON: {exc}") from None
        alts = list(dict.fromkeys(alts))
        self.literal_bytes += sum(len(a) for a in alts)
        if self.literal_bytes > MAX_LITERAL_BYTES:
            raise GrammarError(f"{_path(path)}: the schema is too large: more than "
                               f"{MAX_LITERAL_BYTES} bytes of enum/const values and keys")
        n = _Node(LIT)
        n.alts = frozenset(alts)
        n.prefixes = frozenset(a[:i] for a in alts for i in range(1, len(a)))
        return self.add(n)

    # -- any JSON value (format "json") --------------------------------------------------
    def json_value(self, depth: int) -> int:
        if depth in self._json_value:
            return self._json_value[depth]
        alts = [self.string(None, 0, False, ""), self.number(False, None, None, False, False, True, ""),
                self.literal([True, False, None], "")]
        if depth > 0:
            inner = self.json_value(depth - 1)
            key = self.string(None, 0, False, "")
            for kind in (JOBJ, JARR):
                n = _Node(kind)
                n.item = inner
                n.string = key
                alts.append(self.add(n))
        n = _Node(ANYOF)
        n.choices = tuple(alts)
        nid = self.add(n)
        self._json_value[depth] = nid
        return nid

    def string(self, max_len, min_len, copy, path) -> int:
        n = _Node(COPY if copy else STR)
        n.max_len, n.min_len = max_len, min_len
        n.words = copy == "words"
        head, _, last = path.rpartition("/")
        n.prop = last if head.endswith("/properties") else None   # the property a request's spans name
        n.spans = copy == "spans"
        return self.add(n)

    def number(self, integer, lo, hi, lo_excl, hi_excl, free, path) -> int:
        n = _Node(NUM)
        n.exp = free
        if free:                                    # format "json": any JSON number
            n.ci = n.cf = None
            n.lo = n.hi = None
            n.neg = True
            return self.add(n)
        n.ci, n.cf = INT_DIGITS, 0 if integer else FRAC_DIGITS
        scale = 10 ** n.cf
        L = H = None
        if lo is not None:
            x = Fraction(repr(lo) if isinstance(lo, float) else lo) * scale
            L = math.floor(x) + 1 if lo_excl else math.ceil(x)
        if hi is not None:
            x = Fraction(repr(hi) if isinstance(hi, float) else hi) * scale
            H = math.ceil(x) - 1 if hi_excl else math.floor(x)
        top = 10 ** n.ci * scale - 1
        if L is not None and H is not None and L > H:
            what = "integer" if integer else f"number with at most {FRAC_DIGITS} decimals"
            raise GrammarError(f"{_path(path)}: no {what} lies between the minimum and the maximum")
        if (L is not None and L > top) or (H is not None and H < -top):
            raise GrammarError(f"{_path(path)}: the range lies beyond {INT_DIGITS} digits")
        n.lo, n.hi = L, H
        n.neg = L is None or L < 0
        return self.add(n)

    # -- schemas --------------------------------------------------------------------------
    def schema(self, s, path: str, depth: int) -> int:
        if depth > MAX_SCHEMA_DEPTH:
            raise GrammarError(f"{_path(path)}: schemas nest deeper than {MAX_SCHEMA_DEPTH} levels")
        if s is True or (isinstance(s, dict) and not (set(s) - ANNOTATIONS)):
            return self.json_value(JSON_DEPTH)
        if not isinstance(s, dict):
            raise GrammarError(f"{_path(path)}: a schema must be an object, got {type(s).__name__} {s!r}")
        t = s.get("type")
        if "const" in s or "enum" in s:
            return self.enum(s, path)
        if "anyOf" in s and not _is_required_any(s.get("anyOf")):
            rest = set(s) - ANNOTATIONS - {"anyOf"}
            if rest:
                raise GrammarError(f"{_path(path)}: anyOf cannot be combined with {', '.join(sorted(rest))} "
                                   f"here; put them inside each alternative")
            alts = s["anyOf"]
            if not isinstance(alts, list) or not alts:
                raise GrammarError(f"{_path(path)}/anyOf: must be a non-empty list of schemas")
            n = _Node(ANYOF)
            n.choices = tuple(self.schema(a, f"{path}/anyOf/{i}", depth + 1) for i, a in enumerate(alts))
            return self.add(n)
        if isinstance(t, list):
            if not t or len(set(map(str, t))) != len(t):
                raise GrammarError(f"{_path(path)}/type: a list of types must be non-empty, without repeats")
            bad = [one for one in t if not isinstance(one, str) or one not in KEYWORDS]
            if bad:
                raise GrammarError(f"{_path(path)}/type: unsupported type {bad[0]!r}")
            unknown = sorted(set(s) - ANNOTATIONS - {"type"} - set().union(*(KEYWORDS[one] for one in t)))
            if unknown:
                raise GrammarError(f"{_path(path)}: unsupported keyword(s) {', '.join(unknown)} for types "
                                   f"{', '.join(t)}")
            n = _Node(ANYOF)   # each type takes the keywords that apply to it
            n.choices = tuple(self.schema({**{k: v for k, v in s.items() if k in ANNOTATIONS or k in KEYWORDS[one]},
                                           "type": one}, path, depth + 1) for one in t)
            return self.add(n)
        if t is None:
            if "properties" in s:
                t = "object"
            elif "items" in s:
                t = "array"
            else:
                raise GrammarError(f"{_path(path)}: no type (give \"type\", \"enum\", \"const\" or \"anyOf\")")
        if not isinstance(t, str) or t not in KEYWORDS:
            raise GrammarError(f"{_path(path)}/type: unsupported type {t!r}; expected one of "
                               f"{', '.join(KEYWORDS)}")
        unknown = sorted(set(s) - ANNOTATIONS - KEYWORDS[t] - {"type"})
        if unknown:
            raise GrammarError(f"{_path(path)}: unsupported keyword(s) {', '.join(unknown)} for type {t}")
        if t == "object":
            return self.object(s, path, depth)
        if t == "array":
            return self.array(s, path, depth)
        if t == "string":
            mx = self._count(s, "maxLength", MAX_STRING_LENGTH, path)
            mn = self._count(s, "minLength", MAX_STRING_LENGTH, path) or 0
            if mx is not None and mn > mx:
                raise GrammarError(f"{_path(path)}: minLength {mn} > maxLength {mx}")
            copy = s.get("x-copy", False)
            if not isinstance(copy, bool) and copy not in ("words", "spans"):
                raise GrammarError(f"{_path(path)}/x-copy: must be true, false, \"words\" or \"spans\", got {copy!r}")
            return self.string(mx, mn, copy, path)
        if t in ("integer", "number"):
            b = {}
            for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
                if k in s:
                    if not _is_num(s[k]):
                        raise GrammarError(f"{_path(path)}/{k}: must be a finite number, got {s[k]!r}")
                    b[k] = s[k]
            lo, lo_x = b.get("minimum"), False
            if "exclusiveMinimum" in b and (lo is None or b["exclusiveMinimum"] >= lo):
                lo, lo_x = b["exclusiveMinimum"], True
            hi, hi_x = b.get("maximum"), False
            if "exclusiveMaximum" in b and (hi is None or b["exclusiveMaximum"] <= hi):
                hi, hi_x = b["exclusiveMaximum"], True
            if lo is not None and hi is not None and lo > hi:
                raise GrammarError(f"{_path(path)}: minimum {lo} > maximum {hi}")
            return self.number(t == "integer", lo, hi, lo_x, hi_x, False, path)
        if t == "boolean":
            return self.literal([True, False], path)
        return self.literal([None], path)

    def _count(self, s, key, limit, path):
        if key not in s:
            return None
        v = s[key]
        if not _is_int(v) or v < 0:
            raise GrammarError(f"{_path(path)}/{key}: must be a non-negative integer, got {v!r}")
        if v > limit:
            raise GrammarError(f"{_path(path)}/{key}: {v} is above the limit of {limit}")
        return v

    def enum(self, s, path) -> int:
        if "const" in s and "enum" in s:
            raise GrammarError(f"{_path(path)}: give const or enum, not both")
        values = [s["const"]] if "const" in s else s["enum"]
        where = f"{path}/{'const' if 'const' in s else 'enum'}"
        if not isinstance(values, list):
            raise GrammarError(f"{_path(where)}: must be a list of values")
        if not values:
            raise GrammarError(f"{_path(where)}: an empty enum allows no value")
        if len(values) > MAX_ENUM:
            raise GrammarError(f"{_path(where)}: {len(values)} values, above the limit of {MAX_ENUM}")
        extra = sorted(set(s) - ANNOTATIONS - {"type", "enum", "const", "maxLength", "minLength",
                                               "minimum", "maximum"})
        if extra:
            raise GrammarError(f"{_path(path)}: unsupported keyword(s) {', '.join(extra)} beside {where.rsplit('/', 1)[1]}")
        t = s.get("type")
        types = t if isinstance(t, list) else [t] if t is not None else None
        kept = []
        for v in values:
            vt = _type_of(v)
            if types is not None and not (vt in types or (vt == "integer" and "number" in types)):
                continue
            if isinstance(v, str) and not (s.get("minLength", 0) <= len(v) <= s.get("maxLength", len(v))):
                continue
            if _is_num(v) and not (s.get("minimum", v) <= v <= s.get("maximum", v)):
                continue
            kept.append(v)
        if not kept:
            raise GrammarError(f"{_path(where)}: no value satisfies the schema's other keywords")
        return self.literal(kept, where)

    def array(self, s, path, depth) -> int:
        n = _Node(ARR)
        n.max_items = self._count(s, "maxItems", MAX_ITEMS, path)
        n.min_items = self._count(s, "minItems", MAX_ITEMS, path) or 0
        if n.max_items is not None and n.min_items > n.max_items:
            raise GrammarError(f"{_path(path)}: minItems {n.min_items} > maxItems {n.max_items}")
        if "items" not in s:
            raise GrammarError(f"{_path(path)}: an array needs \"items\" (a schema)")
        n.item = self.schema(s["items"], f"{path}/items", depth + 1)
        return self.add(n)

    def object(self, s, path, depth) -> int:
        props = s.get("properties", {})
        if not isinstance(props, dict):
            raise GrammarError(f"{_path(path)}/properties: must be an object")
        if len(props) > MAX_PROPERTIES:
            raise GrammarError(f"{_path(path)}/properties: {len(props)} properties, above the limit of "
                               f"{MAX_PROPERTIES}")
        req = s.get("required", [])
        if not isinstance(req, list) or not all(isinstance(r, str) for r in req):
            raise GrammarError(f"{_path(path)}/required: must be a list of property names")
        names = list(props)
        for r in req:
            if r not in props:
                raise GrammarError(f"{_path(path)}/required: {r!r} is not among the properties")
        ap = s.get("additionalProperties", False)
        if not isinstance(ap, bool):
            raise GrammarError(f"{_path(path)}/additionalProperties: only true or false are supported")
        n = _Node(OBJ)
        n.keys = []
        for name in names:
            k = (compact_json(name)[1:] + ":").encode()
            self.literal_bytes += len(k)
            n.keys.append(k)
        if self.literal_bytes > MAX_LITERAL_BYTES:
            raise GrammarError(f"{_path(path)}: the schema is too large: more than {MAX_LITERAL_BYTES} "
                               f"bytes of enum/const values and keys")
        n.required = [name in req for name in names]
        n.req_from = [any(n.required[i:]) for i in range(len(names) + 1)]
        n.any_req = []
        if "anyOf" in s:
            for i, alt in enumerate(s["anyOf"]):
                bits = 0
                for r in alt["required"]:
                    if r not in props:
                        raise GrammarError(f"{_path(path)}/anyOf/{i}/required: {r!r} is not among the "
                                           f"properties")
                    bits |= 1 << names.index(r)
                n.any_req.append(bits)
        n.rest = [sum(1 << j for j in range(i, len(names))) for i in range(len(names) + 1)]
        n.children = [self.schema(props[name], f"{path}/properties/{name}", depth + 1) for name in names]
        for name, cid in zip(names, n.children):
            if self.nodes[cid].kind in (LIT, NUM):
                self.nodes[cid].prop = name
        n.choices = {}
        return self.add(n)


def _is_required_any(alts) -> bool:
    """anyOf: [{"required": [...]}, ...] inside an object schema: at least one of those sets."""
    return (isinstance(alts, list) and bool(alts) and
            all(isinstance(a, dict) and "required" in a and not (set(a) - ANNOTATIONS - {"required"})
                and isinstance(a["required"], list) and all(isinstance(r, str) for r in a["required"])
                for a in alts))


# =============================================================================================
# Nodes -> byte automaton
# =============================================================================================

class _Tables:
    """Interned byte states of one grammar and their memoised transitions (source-independent
    ones). Replaced as a whole when it grows past MAX_STATES; runs keep the one they started on."""

    def __init__(self):
        self.ids: dict[frozenset, int] = {}
        self.states: list[frozenset] = []
        self.copy: list[bool] = []      # the state has a stack inside an x-copy string
        self.vprop: list = []           # properties of enum / number values the state is inside
        self.final: list[bool] = []
        self.first: list = []           # first_bytes of the state (a frozenset), or None
        self.memo: dict[int, int] = {}  # (sid << 8 | byte) -> sid or -1, for non-copy states
        self.vocabs: dict[str, "_TokenTable"] = {}
        # byte steps of states inside limited values, per set of limits (Grammar.values), and the
        # token tables of those sets: the most recent LIMIT_TABLES of them are kept
        self.vmemos: "OrderedDict[str, dict]" = OrderedDict()
        self.limited_vocabs: "OrderedDict[str, _TokenTable]" = OrderedDict()
        self.lock = threading.Lock()


class _Core:
    """A compiled schema (vocabulary- and source-independent)."""

    def __init__(self, nodes: list[_Node], root: int, schema, key: str):
        self.nodes = nodes
        self.root = root
        self.schema = schema
        self.key = key
        self.kind = [n.kind for n in nodes]
        self.starts = [None] * len(nodes)
        for i in range(len(nodes)):
            self._start(i)
        self.tables = _Tables()
        self.lock = threading.Lock()
        self.start_stacks = frozenset((f,) for f in self.starts[root])

    def _start(self, nid: int) -> tuple:
        if self.starts[nid] is not None:
            return self.starts[nid]
        n, k = self.nodes[nid], self.kind[nid]
        if k == LIT:
            out = ((nid, b""),)
        elif k == STR:
            out = ((nid, 0, 0, 0),)
        elif k == COPY:
            out = ((nid, 0, b""),)
        elif k == NUM:
            out = ((nid, N_START, None if n.lo is None and n.hi is None else b"", 0, 0),)
        elif k == OBJ:
            out = ((nid, 0, 0, 0, b""),)
        elif k == ARR:
            out = ((nid, 0, 0),)
        elif k in (JOBJ, JARR):
            out = ((nid, 0),)
        else:
            acc = []
            for c in n.choices:
                for f in self._start(c):
                    if f not in acc:
                        acc.append(f)
            out = tuple(acc)
        self.starts[nid] = out
        return out

    def fresh_tables(self) -> _Tables:
        with self.lock:
            if len(self.tables.states) > MAX_STATES:
                self.tables = _Tables()
            return self.tables

    # -- object helpers -------------------------------------------------------------------
    @staticmethod
    def _viable(n: _Node, i: int, mask: int) -> bool:
        if not n.any_req:
            return True
        have = mask | n.rest[i]
        return any(r & have == r for r in n.any_req)

    @staticmethod
    def _can_close(n: _Node, i: int, mask: int) -> bool:
        return not n.req_from[i] and (not n.any_req or any(r & mask == r for r in n.any_req))

    def _key_choices(self, n: _Node, i: int, mask: int) -> tuple:
        key = (i, mask)
        got = n.choices.get(key)
        if got is None:
            acc = []
            for j in range(i, len(n.keys)):
                if self._viable(n, j + 1, mask | (1 << j)):
                    acc.append(j)
                if n.required[j]:
                    break
            got = n.choices[key] = tuple(acc)
        return got

    # -- number helpers -------------------------------------------------------------------
    @staticmethod
    def _num_status(n: _Node, ph: int, text: bytes) -> int:
        """0 dead, 1 straddling a bound (keep the text), 2 every completion is in range."""
        neg = text[:1] == b"-"
        body = text[1:] if neg else text
        ip, _, fp = body.partition(b".")
        S = 10 ** n.cf
        if ph == N_MINUS:
            spans = [(0, 10 ** n.ci * S - 1)]
        elif ph == N_ZERO:
            spans = [(0, S - 1)]
        elif ph == N_INT:
            v = int(ip)
            spans = [(v * 10 ** j * S, (v + 1) * 10 ** j * S - 1) for j in range(n.ci - len(ip) + 1)]
        elif ph == N_DOT:
            spans = [(int(ip) * S, int(ip) * S + S - 1)]
        else:  # N_FRAC
            r = 10 ** (n.cf - len(fp))
            base = int(ip) * S + int(fp) * r
            spans = [(base, base + r - 1)]
        if neg:
            spans = [(-b, -a) for a, b in spans]
        L, H = n.lo, n.hi
        any_in, all_in = False, True
        for a, b in spans:
            lo = a if L is None else max(a, L)
            hi = b if H is None else min(b, H)
            if lo <= hi:
                any_in = True
            if not ((L is None or a >= L) and (H is None or b <= H)):
                all_in = False
        if not any_in:
            return 0
        return 2 if all_in else 1

    @staticmethod
    def _num_value_ok(n: _Node, text: bytes) -> bool:
        neg = text[:1] == b"-"
        body = text[1:] if neg else text
        ip, _, fp = body.partition(b".")
        v = int(ip) * 10 ** n.cf + (int(fp) * 10 ** (n.cf - len(fp)) if fp else 0)
        if neg:
            v = -v
        return (n.lo is None or v >= n.lo) and (n.hi is None or v <= n.hi)

    def _num_accepting(self, fr) -> bool:
        _, ph, text, _, _ = fr
        if not N_ACCEPT[ph]:
            return False
        return text is None or self._num_value_ok(self.nodes[fr[0]], text)

    # -- the byte step ----------------------------------------------------------------------
    def feed(self, stack: tuple, b: int, out: list, src: bytes, spans=None, pieces: "Spans | None" = None) -> None:
        """Append to `out` every stack that `stack` becomes on byte b (spans: Grammar._spans, the
        per-property limits; pieces: the request's allowed spans of "x-copy": "spans" strings)."""
        if not stack:
            return
        fr = stack[-1]
        nid = fr[0]
        k = self.kind[nid]
        n = self.nodes[nid]
        up = stack[:-1]
        if k == STR:
            _, ph, cnt, u = fr
            if ph == 1:
                if u:
                    lo, hi, nu = _UTF8[u]
                    if lo <= b <= hi:
                        out.append(up + ((nid, 1, cnt, nu),))
                    return
                if b == 0x22:
                    if cnt >= n.min_len:
                        out.append(up)
                    return
                if b < 0x20:
                    return
                if n.max_len is not None:
                    if cnt >= n.max_len:
                        return
                    c2 = cnt + 1
                else:
                    c2 = cnt + 1 if cnt < n.min_len else cnt
                if b == 0x5C:
                    out.append(up + ((nid, 2, c2, 0),))
                elif b < 0x80:
                    out.append(up + ((nid, 1, c2, 0),))
                elif _LEAD[b]:
                    out.append(up + ((nid, 1, c2, _LEAD[b]),))
            elif ph == 0:
                if b == 0x22:
                    out.append(up + ((nid, 1, cnt, 0),))
            elif ph == 2:
                if b in _ESCAPES:
                    out.append(up + ((nid, 1, cnt, 0),))
                elif b == 0x75:   # \u
                    out.append(up + ((nid, 3, cnt, 0),))
            else:   # \u hex digits: ph 3..6; no surrogates (d800-dfff)
                if b not in _HEX:
                    return
                if ph == 3:
                    out.append(up + ((nid, 4, cnt, 1 if b in b"dD" else 0),))
                elif ph == 4:
                    if u and b not in b"01234567":
                        return
                    out.append(up + ((nid, 5, cnt, 0),))
                elif ph == 5:
                    out.append(up + ((nid, 6, cnt, 0),))
                else:
                    out.append(up + ((nid, 1, cnt, 0),))
        elif k == LIT:
            p = fr[1] + bytes((b,))
            whole, prefixes = n.alts, n.prefixes
            if spans and n.prop is not None and ("=", n.prop) in spans:
                whole, prefixes = spans[("=", n.prop)]     # this request's values of the property
            if p in whole:
                out.append(up)
            if p in prefixes:
                out.append(up + ((nid, p),))
        elif k == NUM:
            self._feed_num(stack, fr, n, b, out, src, spans)
        elif k == OBJ:
            _, ph, i, mask, pre = fr
            if ph == 2:      # inside a key: pre holds its bytes after the opening quote
                p = pre + bytes((b,))
                # keys are distinct and end in '":', so at most one key is complete here
                for j in self._key_choices(n, i, mask):
                    kb = n.keys[j]
                    if kb == p:
                        parent = up + ((nid, 3, j + 1, mask | (1 << j), b""),)
                        for f in self.starts[n.children[j]]:
                            out.append(parent + (f,))
                    elif kb.startswith(p):
                        out.append(up + ((nid, 2, i, mask, p),))
                return
            if ph == 0:
                if b == 0x7B:
                    out.append(up + ((nid, 1, 0, 0, b""),))
            elif ph == 1 or ph == 4:
                if b == 0x22:
                    if self._key_choices(n, i, mask):
                        out.append(up + ((nid, 2, i, mask, b""),))
                elif b == 0x7D and ph == 1 and self._can_close(n, i, mask):
                    out.append(up)
            elif ph == 3:
                if b == 0x2C:
                    if self._key_choices(n, i, mask):
                        out.append(up + ((nid, 4, i, mask, b""),))
                elif b == 0x7D and self._can_close(n, i, mask):
                    out.append(up)
        elif k == COPY:
            _, ph, content = fr
            if ph == 0:
                if b == 0x22:
                    out.append(up + ((nid, 1, Spans.START if n.spans else b""),))
                return
            if n.spans:
                (pieces or _NO_SPANS).feed(n, nid, up, content, b, out)
                return
            only = spans.get(n.prop) if spans else None
            if only is not None:          # this request lists the strings the property may be
                whole, prefixes = only
                if b == 0x22:
                    if content in whole and _chars(content) >= n.min_len:
                        out.append(up)
                    return
                c = content + bytes((b,))
                if c in prefixes and (n.max_len is None or _chars(c) <= n.max_len):
                    out.append(up + ((nid, 1, c),))
                return
            if b == 0x22:
                if _chars(content) >= n.min_len and _complete_utf8(content) and \
                        (not n.words or not content or word_span(src, content, True)):
                    out.append(up)
                return
            if b < 0x20 or b == 0x5C:
                return
            c = content + bytes((b,))
            if c in src and not (0x80 <= c[0] < 0xC0) and (n.max_len is None or _chars(c) <= n.max_len) and \
                    (not n.words or word_span(src, c, False, n.min_len, n.max_len)):
                out.append(up + ((nid, 1, c),))
        elif k == ARR:
            _, ph, cnt = fr
            if ph == 0:
                if b == 0x5B:
                    out.append(up + ((nid, 1, 0),))
                return
            if ph == 1 and b == 0x5D:
                if n.min_items == 0:
                    out.append(up)
                return
            if ph == 2:
                if b == 0x5D:
                    if cnt >= n.min_items:
                        out.append(up)
                    return
                if b != 0x2C or (n.max_items is not None and cnt >= n.max_items):
                    return
                out.extend(up + (self._arr_next(n, nid, cnt), f) for f in self.starts[n.item])
                return
            if n.max_items == 0:
                return
            for f in self.starts[n.item]:   # the first item's first byte
                self.feed(up + (self._arr_next(n, nid, cnt), f), b, out, src, spans, pieces)
        elif k == JOBJ:
            ph = fr[1]
            if ph == 0:
                if b == 0x7B:
                    out.append(up + ((nid, 1),))
            elif ph == 1 or ph == 4:
                if b == 0x22:     # a key: the string node, past its opening quote
                    out.append(up + ((nid, 2), (n.string, 1, 0, 0)))
                elif b == 0x7D and ph == 1:
                    out.append(up)
            elif ph == 2:
                if b == 0x3A:
                    out.extend(up + ((nid, 3), f) for f in self.starts[n.item])
            elif b == 0x2C:
                out.append(up + ((nid, 4),))
            elif b == 0x7D:
                out.append(up)
        elif k == JARR:
            ph = fr[1]
            if ph == 0:
                if b == 0x5B:
                    out.append(up + ((nid, 1),))
            elif ph == 2:
                if b == 0x2C:
                    out.extend(up + ((nid, 2), f) for f in self.starts[n.item])
                elif b == 0x5D:
                    out.append(up)
            else:
                if b == 0x5D:
                    out.append(up)
                    return
                for f in self.starts[n.item]:
                    self.feed(up + ((nid, 2), f), b, out, src, spans, pieces)

    @staticmethod
    def _arr_next(n: _Node, nid: int, cnt: int) -> tuple:
        # count items only as far as a limit needs it (so unbounded arrays have few states)
        c = cnt + 1
        if n.max_items is None:
            c = min(c, n.min_items)
        return (nid, 2, c)

    def _feed_num(self, stack, fr, n, b, out, src, spans) -> None:
        nid, ph, text, ni, nf = fr
        nph = -1
        if 0x30 <= b <= 0x39:
            if ph == N_START or ph == N_MINUS:
                nph, ni = (N_ZERO if b == 0x30 else N_INT), 1
            elif ph == N_INT:
                nph, ni = N_INT, ni + 1
                if n.ci is not None and ni > n.ci:
                    nph = -2
            elif ph == N_DOT or ph == N_FRAC:
                nph, nf = N_FRAC, nf + 1
                if n.cf is not None and nf > n.cf:
                    nph = -2
            elif ph >= N_E:
                nph = N_EXP
        elif b == 0x2D:
            if ph == N_START and n.neg:
                nph = N_MINUS
            elif ph == N_E:
                nph = N_ESIGN
        elif b == 0x2E:
            if (ph == N_ZERO or ph == N_INT) and n.cf != 0:
                nph = N_DOT
        elif b == 0x2B:
            if ph == N_E:
                nph = N_ESIGN
        elif b in (0x65, 0x45):
            if n.exp and ph in (N_ZERO, N_INT, N_FRAC):
                nph = N_E
        if spans and n.prop is not None and ("=", n.prop) in spans:
            whole, prefixes = spans[("=", n.prop)]          # this request's values of the property
            text = text or b""
            if nph >= 0:
                if text + bytes((b,)) in prefixes or text + bytes((b,)) in whole:
                    out.append(stack[:-1] + ((nid, nph, text + bytes((b,)), ni, nf),))
            elif nph == -1 and text in whole:
                self.feed(stack[:-1], b, out, src, spans)
            return
        if nph == -2:
            return
        if nph < 0:
            # not part of the number: it ends here if complete, and the byte goes to the parent
            if self._num_accepting(fr):
                self.feed(stack[:-1], b, out, src, spans)
            return
        if n.ci is None:          # a free number: the phase is the whole state
            out.append(stack[:-1] + ((nid, nph, None, 0, 0),))
            return
        if text is not None:
            text = text + bytes((b,))
            st = self._num_status(n, nph, text)
            if st == 0:
                return
            if st == 2:
                text = None
        out.append(stack[:-1] + ((nid, nph, text, ni, nf),))

    def first_bytes(self, stack: tuple):
        """A superset of the bytes `stack` accepts next, or None when it may accept most bytes
        (inside a string). Lets a trie walk skip children that cannot match."""
        if not stack:
            return frozenset()
        fr = stack[-1]
        nid = fr[0]
        k, n = self.kind[nid], self.nodes[nid]
        if k == STR or k == COPY:
            return frozenset(b'"') if fr[1] == 0 else None
        if k == LIT:
            p, m = fr[1], len(fr[1])
            return frozenset(a[m] for a in n.alts if len(a) > m and a.startswith(p))
        if k == NUM:
            if self._num_accepting(fr):
                up = self.first_bytes(stack[:-1])
                return None if up is None else _NUMBYTES | up
            return _NUMBYTES
        ph = fr[1]
        if k == OBJ:
            if ph == 2:
                pre, m = fr[4], len(fr[4])
                return frozenset(n.keys[j][m] for j in self._key_choices(n, fr[2], fr[3])
                                 if len(n.keys[j]) > m and n.keys[j].startswith(pre))
            return (frozenset(b"{"), frozenset(b'"}'), None, frozenset(b",}"), frozenset(b'"'))[ph]
        if k == ARR:
            if ph == 1:
                acc = set(b"]")
                for f in self.starts[n.item]:
                    c = self.first_bytes((f,))
                    if c is None:
                        return None
                    acc |= c
                return frozenset(acc)
            return frozenset(b"[") if ph == 0 else frozenset(b",]")
        if k == JOBJ:
            return (frozenset(b"{"), frozenset(b'"}'), frozenset(b":"), frozenset(b",}"), frozenset(b'"'))[ph]
        if k == JARR:
            return (frozenset(b"["), _VALUE_START | frozenset(b"]"), frozenset(b",]"))[ph]
        return None

    def stack_final(self, stack: tuple) -> bool:
        if not stack:
            return True
        if len(stack) == 1 and self.kind[stack[0][0]] == NUM:
            return self._num_accepting(stack[0])
        return False

    def stack_copy(self, stack: tuple) -> bool:
        return bool(stack) and self.kind[stack[-1][0]] == COPY and stack[-1][1] == 1


def is_word_char(ch: str) -> bool:
    """Letters, combining marks (Devanagari matras, virama) and digits of any script, and the
    zero-width (non-)joiners that Indic spellings use inside words."""
    return unicodedata.category(ch)[0] in "LMN" or ch in "\u200c\u200d"


def word_bounds(text: str) -> tuple[list[int], list[int]]:
    """Character offsets of text where a word starts and where one ends (just past its last
    character), in order; a word is a maximal run of word characters (is_word_char)."""
    starts, ends, prev = [], [], False
    for i, ch in enumerate(text):
        w = is_word_char(ch)
        if w and not prev:
            starts.append(i)
        elif prev and not w:
            ends.append(i)
        prev = w
    if prev:
        ends.append(len(text))
    return starts, ends


@lru_cache(maxsize=256)
def _word_edges(src: bytes) -> tuple[frozenset, frozenset, tuple]:
    """word_bounds of src as byte offsets: where a word starts, where one ends (also as a sorted
    tuple)."""
    text = src.decode("utf-8", "surrogatepass")
    pos = [0]
    for ch in text:
        pos.append(pos[-1] + len(ch.encode("utf-8", "surrogatepass")))
    starts, ends = word_bounds(text)
    return frozenset(pos[i] for i in starts), frozenset(pos[i] for i in ends), tuple(pos[i] for i in ends)


def _word_starts(src: bytes, content: bytes) -> list[int]:
    """Offsets where content occurs in src starting at the start of a word."""
    starts = _word_edges(src)[0]
    out = []
    i = src.find(content)
    while i >= 0:
        if i in starts:
            out.append(i)
        i = src.find(content, i + 1)
    return out


def word_span(src: bytes, content: bytes, whole: bool, min_len: int = 0, max_len: int | None = None) -> bool:
    """content occurs in src from the start of a word and ends at the end of one (whole), or can
    still grow along src to the end of one with min_len..max_len characters (so that a string
    that may grow can always be closed)."""
    _, ends, order = _word_edges(src)
    for i in _word_starts(src, content):
        j = i + len(content)
        if whole:
            if j in ends:
                return True
            continue
        for e in order[bisect.bisect_left(order, j):]:
            n = _chars(src[i:e])
            if max_len is not None and n > max_len:
                break
            if n >= min_len:
                return True
    return False


def _num_fits(n: _Node, v) -> bool:
    """v is a number the NUM node n generates: in range, with no more decimals than it writes."""
    if not _is_num(v):
        return False
    if n.ci is None:
        return True
    x = Fraction(repr(v) if isinstance(v, float) else v) * 10 ** n.cf
    return x.denominator == 1 and (n.lo is None or x >= n.lo) and (n.hi is None or x <= n.hi) \
        and len(str(abs(int(x)) // 10 ** n.cf)) <= n.ci


def _chars(b: bytes) -> int:
    return sum(1 for x in b if not 0x80 <= x < 0xC0)


def _complete_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


class Spans:
    """The allowed spans of one request, for "x-copy": "spans" strings: the string is ASCII
    punctuation and spaces (FREE) between whole copies of the spans, each span used at most once
    (a span listed twice may be used twice), a span never directly after another one.

    Rules a request may add (Spans(spans, need=..., arithmetic=True, operators=..., needed=..., tail=...)):
      need        groups of span indices: the string closes only when exactly one span of every
                  group is used, and a span is never started while another one of its groups is
                  used (an utterance's numbers, each to be used exactly once, a group holding the
                  ways to read it). A span in no group stays optional.
      arithmetic  the string is an arithmetic expression: spans are operands, the punctuation is
                  single spaces, the binary operators of `operators` (of + - * / ^), postfix %
                  when `operators` has it, a minus sign directly before an operand when it has
                  "-", and balanced parentheses (at most MAX_DEPTH deep); an operator or an
                  opening parenthesis only while some span can still follow, and the string
                  closes only after an operand with every parenthesis closed, and after each
                  operator of `needed` (a percent word needs its %).
      tail        indices of need groups that come last: their spans start, and (with
                  arithmetic) a parenthesis closes, only once every other group is used (an
                  average: " ( a + b + c ) / 3", its count last, no number left out of the sum).
    A byte is taken only where the spans still needed (the shortest of each group, an operator
    before each) and the closing parentheses fit in maxLength.

    Inside the string a frame holds (used, i, off, chars, depth, want, ops): the bit mask of used
    spans, the span being copied (i >= 0, `off` bytes of it written), or i = -1 (at the start or
    after a free byte: a span may start), -2 (just after a span: a free byte or the end must
    follow) or -3 (just after a space, arithmetic only); with arithmetic, the open parentheses
    and what comes next (1 an operand, 2 an operand after a minus sign, 0 an operator, a closing
    parenthesis or the end), and the bit mask of the `needed` operators written."""

    FREE = frozenset(c for c in range(0x20, 0x7F) if not chr(c).isalnum() and c not in b'"\\')
    START = (0, -1, 0, 0, 0, 1, 0)      # the same for every request: the step into the string is shared
    MAX_DEPTH = 8

    def __init__(self, spans=(), need=(), arithmetic: bool = False, operators: str = "+-*/^%", needed: str = "",
                 tail=()):
        if isinstance(spans, (str, bytes)) or not all(isinstance(x, str) and x for x in spans):
            raise GrammarError(f"spans must be a list of non-empty strings, got {spans!r:.200}")
        if len(spans) > MAX_SPANS:
            raise GrammarError(f"at most {MAX_SPANS} spans, got {len(spans)}")
        self.items = tuple(x.encode("utf-8", "surrogatepass") for x in spans)
        for x in self.items:
            if _STRING_SPECIAL.search(x.decode("utf-8", "surrogatepass")):
                raise GrammarError(f"a span cannot hold a quote, a backslash or a control character: {x!r:.80}")
        if isinstance(need, (str, bytes)) or not all(
                isinstance(g, (list, tuple)) and g and all(isinstance(i, int) and not isinstance(i, bool)
                                                             and 0 <= i < len(self.items) for i in g) for g in need):
            raise GrammarError(f"need must be a list of non-empty lists of span indices, got {need!r:.200}")
        self.need = tuple(tuple(sorted(set(g))) for g in need)
        self.arithmetic = bool(arithmetic)
        if not isinstance(operators, str) or not set(operators) <= set("+-*/^%"):
            raise GrammarError(f"operators must be a string of + - * / ^ %, got {operators!r:.80}")
        if not isinstance(needed, str) or not set(needed) <= set(operators):
            raise GrammarError(f"needed must be a string of operators the expression may use, got {needed!r:.80}")
        self.binary = frozenset(operators.encode()) - {0x25}
        self.percent = "%" in operators
        self.needed = tuple(dict.fromkeys(needed.encode()))
        self.masks = tuple(sum(1 << i for i in g) for g in self.need)
        if isinstance(tail, (str, bytes)) or not all(isinstance(k, int) and not isinstance(k, bool)
                                                     and 0 <= k < len(self.need) for k in tail):
            raise GrammarError(f"tail must be a list of indices of need groups, got {tail!r:.200}")
        self.tail = frozenset(i for k in tail for i in self.need[k])    # spans that come last
        self.before = tuple(m for k, m in enumerate(self.masks) if k not in set(tail))
        # block[i]: the spans that share a group with i (i may not start while one is used)
        self.block = [0] * len(self.items)
        single = set()
        for g, m in zip(self.need, self.masks):
            for i in g:
                self.block[i] |= m & ~(1 << i)
            if len(g) == 1:
                single.add(g[0])
        # copies of the same bytes are interchangeable (the first unused one is taken) when they
        # belong to the same groups; a group of one span makes them all alike ("5 times 5")
        groups: dict[tuple, list[int]] = {}
        for i, x in enumerate(self.items):
            sig = tuple(k for k, g in enumerate(self.need) if i in g and len(g) > 1)
            groups.setdefault((x, i in single, sig), []).append(i)
        self.groups = tuple((x, tuple(ix)) for (x, _, _), ix in groups.items())
        self.chars = tuple(_chars(x) for x in self.items)
        self.least = tuple(min(self.chars[i] for i in g) for g in self.need)


    def _starts(self, used: int, b: int | None = None):
        """(index, span) of each span that may start (the first unused copy of its kind, none of
        its groups used), that begins with byte b (any byte when None)."""
        for x, ix in self.groups:
            if b is None or x[0] == b:
                for i in ix:
                    if not used >> i & 1:
                        if not used & self.block[i] and (i not in self.tail or self._before_done(used)):
                            yield i, x
                        break

    def _done(self, used: int) -> bool:
        return all(used & m for m in self.masks)

    def _before_done(self, used: int) -> bool:
        return all(used & m for m in self.before)

    def _fits(self, n, f: tuple) -> bool:
        """Frame f (not inside a span) can still close within maxLength: the shortest span still
        free of each group to use, an operator before each, an operand where one is expected,
        the needed operators and the closing parentheses."""
        if n.max_len is None:
            return True
        used, i, _, chars, depth, want, ops = f
        free = lambda j: not used >> j & 1 and not used & self.block[j]
        rest = 0
        for g, m in zip(self.need, self.masks):
            if not used & m:
                k = min((self.chars[j] for j in g if free(j)), default=None)
                if k is None:
                    return False
                rest += k + 1
        if rest and i in (-1, -3) and (want or not self.arithmetic):
            rest -= 1                   # a span may come next: no separator before the first
        if self.arithmetic:
            if want and not rest:
                k = min((self.chars[j] for j in range(len(self.items)) if free(j)), default=None)
                if k is None:
                    return False
                rest += k
            rest += depth + len(self.needed) - bin(ops).count("1")
        return chars + rest <= n.max_len

    def _more(self, used: int) -> bool:
        return next(self._starts(used), None) is not None

    def _free(self, st: tuple, b: int):
        """The frame after free byte b, or None when b may not come here."""
        used, i, off, chars, depth, want, ops = st
        if not self.arithmetic:
            return (used, -1, 0, chars + 1, depth, want, ops)
        if b == 0x20:
            return None if i == -3 else (used, -3, 0, chars + 1, depth, want, ops)
        if want == 2:
            return None
        if b in self.needed:
            ops |= 1 << self.needed.index(b)
        if want:
            if b == 0x28 and depth < self.MAX_DEPTH and self._more(used):
                return (used, -1, 0, chars + 1, depth + 1, 1, ops)
            if b == 0x2D and b in self.binary and self._more(used):
                return (used, -1, 0, chars + 1, depth, 2, ops)
            return None
        if b in self.binary and self._more(used):
            return (used, -1, 0, chars + 1, depth, 1, ops)
        if b == 0x25 and self.percent:
            return (used, -1, 0, chars + 1, depth, 0, ops)
        if b == 0x29 and depth and (not self.tail or self._before_done(used)):
            return (used, -1, 0, chars + 1, depth - 1, 0, ops)
        return None

    def _can_close(self, n, st: tuple) -> bool:
        used, i, _, chars, depth, want, ops = st
        return i < 0 and chars >= n.min_len and self._done(used) and \
            (not self.arithmetic or (not depth and not want and ops + 1 == 1 << len(self.needed)))

    def feed(self, n, nid: int, up: tuple, st: tuple, b: int, out: list) -> None:
        used, i, off, chars, depth, want, ops = st
        if b == 0x22:
            if self._can_close(n, st):
                out.append(up)
            return
        c = chars + (not 0x80 <= b < 0xC0)
        if n.max_len is not None and c > n.max_len:
            return
        if i >= 0:
            x = self.items[i]
            if x[off] == b:
                out.append(up + ((nid, 1, (used | 1 << i, -2, 0, c, depth, 0, ops) if off + 1 == len(x)
                                  else (used, i, off + 1, c, depth, want, ops)),))
            return
        if b in self.FREE:
            f = self._free(st, b)
            if f is not None and self._fits(n, f):
                out.append(up + ((nid, 1, f),))
            return
        if i in (-1, -3) and (want or not self.arithmetic):
            for j, x in self._starts(used, b):
                if not self._fits(n, (used | 1 << j, -2, 0, chars + self.chars[j], depth, 0, ops)):
                    continue        # a span starts only where all of it (and what must follow) fits
                out.append(up + ((nid, 1, (used | 1 << j, -2, 0, c, depth, 0, ops) if len(x) == 1
                                  else (used, j, 1, c, depth, want, ops)),))

    def next_bytes(self, st: tuple) -> set:
        used, i, off, _, _, want, _ = st
        if i >= 0:
            return {self.items[i][off]}
        acc = {0x22} | (self.FREE if not self.arithmetic else {b for b in self.FREE if self._free(st, b) is not None})
        if i in (-1, -3) and (want or not self.arithmetic):
            acc.update(x[0] for _, x in self._starts(used))
        return acc


_NO_SPANS = Spans()


# =============================================================================================
# Grammar (public) and the per-request byte walker
# =============================================================================================

class Grammar:
    """A compiled schema, bound to a copy source (the text "x-copy" strings may copy from) and,
    optionally, per property name the only strings an x-copy string of that property may be
    (copy_spans: {"name": ["kitchen light", ...]}; each occurs in the copy source, holds no
    character JSON must escape and fits the property's length limits; a property the mapping
    does not name copies by its own rule).

    grammar.schema           the schema (None for format "json")
    grammar.copy_source      str
    grammar.copy_spans       {property: (str, ...)} or None
    grammar.values           {property: (value, ...)} or None: per request, the only values an enum
                             or a number that is the value of that property may take (each one the
                             property's schema allows)
    grammar.accepts(text)    True when text is a complete document
    grammar.is_prefix(text)  True when text (str or bytes) can still be completed
    """

    def __init__(self, core: _Core, copy_source: str = "", copy_spans: dict | None = None,
                 values: dict | None = None, spans=()):
        if not isinstance(copy_source, str):
            raise GrammarError(f"copy_source must be a string, got {type(copy_source).__name__}")
        self._core = core
        self.copy_source = copy_source
        self._src = copy_source.encode("utf-8", "surrogatepass")
        self.copy_spans = None
        self.values = None
        self._limits = ""           # the values as one key: requests with the same limits share rows
        self._spans = None          # {property: (whole spans, their non-empty prefixes)} as bytes,
        if copy_spans is not None:  # and {("=", property): (values as JSON, proper prefixes)}
            self._set_spans(copy_spans)
        if values is not None:
            self._set_values(values)
        self._pieces = spans if isinstance(spans, Spans) else Spans(spans)
        self.spans = tuple(x.decode("utf-8", "surrogatepass") for x in self._pieces.items)

    def _set_values(self, values) -> None:
        if not isinstance(values, dict):
            raise GrammarError(f"values must be a mapping of property names to lists of values, "
                               f"got {type(values).__name__}")
        table, kept = dict(self._spans or {}), {}
        for prop, vals in values.items():
            if not isinstance(vals, (list, tuple)) or not vals:
                raise GrammarError(f"values[{prop!r}]: expected a non-empty list of values, got {vals!r:.200}")
            nodes = [n for n in self._core.nodes if n.prop == prop and n.kind in (LIT, NUM)]
            texts = set()
            for v in vals:
                try:
                    t = compact_json(int(v) if _is_num(v) and float(v).is_integer() and any(
                        n.kind == NUM and n.cf == 0 for n in nodes) else v).encode()
                except (TypeError, ValueError) as exc:
                    raise GrammarError(f"values[{prop!r}]: {v!r} is not JSON: {exc}") from None
                for n in nodes:
                    if n.kind == LIT and t not in n.alts:
                        raise GrammarError(f"values[{prop!r}]: {v!r} is not one of the property's values")
                    if n.kind == NUM and not _num_fits(n, v):
                        raise GrammarError(f"values[{prop!r}]: {v!r} is not a number the property takes")
                texts.add(t)
            kept[prop] = tuple(vals)
            table[("=", prop)] = (frozenset(texts), frozenset(t[:i] for t in texts for i in range(1, len(t))))
        self.values, self._spans = kept, table
        self._limits = ";".join(f"{p}=" + ",".join(sorted(t.decode() for t in table[("=", p)][0])) for p in sorted(kept))

    def _set_spans(self, copy_spans) -> None:
        if not isinstance(copy_spans, dict):
            raise GrammarError(f"copy_spans must be a mapping of property names to lists of strings, "
                               f"got {type(copy_spans).__name__}")
        nodes = [n for n in self._core.nodes if n.kind == COPY]
        kept, table = {}, {}
        for prop, spans in copy_spans.items():
            if not isinstance(spans, (list, tuple)) or not spans or not all(isinstance(x, str) for x in spans):
                raise GrammarError(f"copy_spans[{prop!r}]: expected a non-empty list of strings, got {spans!r:.200}")
            limits = [(n.min_len, n.max_len) for n in nodes if n.prop == prop]
            for x in spans:
                if x not in self.copy_source:
                    raise GrammarError(f"copy_spans[{prop!r}]: {x!r} does not occur in the copy source")
                if not x or _STRING_SPECIAL.search(x):
                    raise GrammarError(f"copy_spans[{prop!r}]: {x!r} is empty or holds a character JSON escapes")
                if any(len(x) < lo or (hi is not None and len(x) > hi) for lo, hi in limits):
                    raise GrammarError(f"copy_spans[{prop!r}]: {x!r} is outside the property's length limits")
            whole = frozenset(x.encode("utf-8", "surrogatepass") for x in spans)
            kept[prop] = tuple(dict.fromkeys(spans))
            table[prop] = (whole, frozenset(w[:i] for w in whole for i in range(1, len(w) + 1)))
        self.copy_spans, self._spans = kept, {**(self._spans or {}), **table}

    @property
    def schema(self):
        return self._core.schema

    def with_source(self, copy_source: str, copy_spans: dict | None = None, values: dict | None = None,
                    spans=()) -> "Grammar":
        return Grammar(self._core, copy_source, copy_spans, values, spans)

    def _walker(self) -> "_Walker":
        return _Walker(self._core, self._core.fresh_tables(), self._src, self._spans, self._limits, self._pieces)

    def _walk(self, data) -> tuple["_Walker", int]:
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogatepass")
        w = self._walker()
        s = w.start
        for b in data:
            s = w.step(s, b)
            if s < 0:
                return w, -1
        return w, s

    def is_prefix(self, text) -> bool:
        return self._walk(text)[1] >= 0

    def accepts(self, text) -> bool:
        w, s = self._walk(text)
        return s >= 0 and w.tables.final[s]

    def runner(self, vocab: "Vocab", stop_ids) -> "TokenRun":
        """The token automaton of this grammar for a vocabulary, for one request."""
        return TokenRun(self, vocab, stop_ids)

    def __repr__(self) -> str:
        return f"<Grammar {self._core.key[:12]} copy_source={len(self.copy_source)} chars>"


class _Walker:
    """Byte steps of one grammar for one copy source: shared memo for states outside x-copy
    strings, a private one for states inside them (their transitions depend on the source)."""

    def __init__(self, core: _Core, tables: _Tables, src: bytes, spans: dict | None = None, limits: str = "",
                 pieces: "Spans" = None):
        self.core, self.tables, self.src, self.spans = core, tables, src, spans
        self.pieces = pieces if pieces is not None else _NO_SPANS
        # properties whose enum / number values this request limits: their states step in a memo
        # of their own, shared by the requests with the same limits
        self.limited = frozenset(k[1] for k in spans if isinstance(k, tuple)) if spans else frozenset()
        self.limits = limits
        self.vmemo = None
        if self.limited:
            with tables.lock:
                self.vmemo = tables.vmemos.get(limits)
                if self.vmemo is None:
                    self.vmemo = tables.vmemos[limits] = {}
                    while len(tables.vmemos) > LIMIT_TABLES:
                        tables.vmemos.popitem(last=False)
                else:
                    tables.vmemos.move_to_end(limits)
        self.local: dict[int, int] = {}
        self.created = 0
        self.touched_copy = False   # set when a step from a copy state was taken (walks reset it)
        self.start = self.intern(core.start_stacks)

    def intern(self, stacks: frozenset) -> int:
        t = self.tables
        sid = t.ids.get(stacks)
        if sid is None:
            with t.lock:
                sid = t.ids.get(stacks)
                if sid is None:
                    self.created += 1
                    if self.created > MAX_RUN_STATES:
                        raise GrammarError(f"the grammar is too large: one request reached more than "
                                           f"{MAX_RUN_STATES} automaton states")
                    sid = len(t.states)
                    t.states.append(stacks)
                    t.copy.append(any(self.core.stack_copy(s) for s in stacks))
                    t.vprop.append(frozenset(self.core.nodes[s[-1][0]].prop for s in stacks
                                             if s and self.core.kind[s[-1][0]] in (LIT, NUM)
                                             and self.core.nodes[s[-1][0]].prop is not None))
                    t.final.append(any(self.core.stack_final(s) for s in stacks))
                    first = set()
                    for s in stacks:
                        c = self.core.first_bytes(s)
                        if c is None:
                            first = None
                            break
                        first |= c
                    t.first.append(None if first is None else frozenset(first))
                    t.ids[stacks] = sid
        return sid

    def copy_bytes(self, sid: int):
        """The bytes that can follow in a state whose stacks are all inside x-copy strings (a few,
        read off the source), or None when some stack is elsewhere (then any byte may)."""
        acc = set()
        src = self.src
        for st in self.tables.states[sid]:
            if not self.core.stack_copy(st):
                return None
            content = st[-1][2]
            acc.add(0x22)
            if self.core.nodes[st[-1][0]].spans:
                acc |= self.pieces.next_bytes(content)
                continue
            only = self.spans.get(self.core.nodes[st[-1][0]].prop) if self.spans else None
            if only is not None:
                m = len(content)
                acc.update(w[m] for w in only[0] if len(w) > m and w.startswith(content))
                continue
            if self.core.nodes[st[-1][0]].words:
                starts = _word_starts(src, content) if content else _word_edges(src)[0]
                acc.update(src[j] for j in (i + len(content) for i in starts) if j < len(src))
                continue
            if not content:
                acc.update(x for x in src if not 0x80 <= x < 0xC0)
                continue
            i = src.find(content)
            while i >= 0:
                j = i + len(content)
                if j < len(src):
                    acc.add(src[j])
                i = src.find(content, i + 1)
        return acc

    def step(self, sid: int, b: int) -> int:
        t = self.tables
        key = sid << 8 | b
        if t.copy[sid]:
            self.touched_copy = True
            memo = self.local
        elif self.limited and not self.limited.isdisjoint(t.vprop[sid]):
            memo = self.vmemo
        else:
            memo = t.memo
        r = memo.get(key)
        if r is not None:
            return r
        out: list = []
        feed, src, spans, pieces = self.core.feed, self.src, self.spans, self.pieces
        for st in t.states[sid]:
            feed(st, b, out, src, spans, pieces)
        r = self.intern(frozenset(out)) if out else -1
        memo[key] = r
        return r


# =============================================================================================
# Vocabulary -> token automaton
# =============================================================================================

class Vocab:
    """A vocabulary's byte trie (built once per distinct vocabulary) and its key."""

    _cache: "OrderedDict[str, Vocab]" = OrderedDict()
    _lock = threading.Lock()

    def __init__(self, pieces: list[bytes | None], key: str):
        self.key = key
        self.size = len(pieces)
        # trie as parallel lists: children[node] = [(byte, child), ...], ends[node] = [token ids]
        children: list[dict] = [{}]
        ends: list[list[int]] = [[]]
        for tid, p in enumerate(pieces):
            if not p:
                continue
            node = 0
            for b in p:
                nxt = children[node].get(b)
                if nxt is None:
                    nxt = len(children)
                    children[node][b] = nxt
                    children.append({})
                    ends.append([])
                node = nxt
            ends[node].append(tid)
        self.children = [tuple(sorted(c.items())) for c in children]
        self.child_map = children
        self.pieces = [p or b"" for p in pieces]
        self._strings: dict[tuple, tuple] = {}
        self._lock = threading.Lock()
        self.ends = [tuple(e) for e in ends]
        self.nodes = len(children)

    def string_table(self, ph: int, u: int) -> tuple:
        """Every token's bytes run through JSON string content from substate (ph, u) (see
        _str_sim): arrays kind (0 dead, 1 stays inside, 2 closes the string), chars (characters
        begun), sub (the substate after it, ph * 8 + u, for kind 1), q (index of the closing
        quote, for kind 2). Built once per substate."""
        key = (ph, u)
        t = self._strings.get(key)
        if t is None:
            dead = (0, 0, 0, 0)
            rows = [_str_sim(p, ph, u) if p else dead for p in self.pieces]
            a = np.array(rows, dtype=np.int32).reshape(len(rows), 4)
            t = (a[:, 0].astype(np.int8), a[:, 1].copy(), a[:, 2].copy(), a[:, 3].copy())
            with self._lock:
                t = self._strings.setdefault(key, t)
        return t

    @classmethod
    def of(cls, vocab_entries) -> "Vocab":
        """The Vocab of a list of VocabEntry (control tokens carry no bytes)."""
        from ..format.tokenizer import TOKEN_CONTROL
        pieces = [None if e.type == TOKEN_CONTROL else bytes(e.piece) for e in vocab_entries]
        h = hashlib.sha256()
        for p in pieces:
            h.update(b"\xff" if p is None else len(p).to_bytes(4, "little") + p)
        key = h.hexdigest()
        with cls._lock:
            v = cls._cache.get(key)
            if v is not None:
                cls._cache.move_to_end(key)
                return v
        v = cls(pieces, key)
        with cls._lock:
            cls._cache[key] = v
            while len(cls._cache) > 8:
                cls._cache.popitem(last=False)
        return v


def _str_sim(piece: bytes, ph: int, u: int) -> tuple:
    """piece through string content from substate (ph, u), with _Core.feed's rules for STR:
    (kind, chars, ph * 8 + u after it, index of the closing quote)."""
    chars = 0
    plain = False
    for i, b in enumerate(piece):
        if ph == 1 and not u and not plain:
            # the common case, in C: the rest is whole characters with nothing to escape
            plain = True
            try:
                text = piece[i:].decode("utf-8")
            except UnicodeDecodeError:
                text = None
            if text is not None and not _STRING_SPECIAL.search(text):
                return 1, chars + len(text), 8, 0
        if ph == 1:
            if u:
                lo, hi, nu = _UTF8[u]
                if not lo <= b <= hi:
                    return 0, 0, 0, 0
                u = nu
                continue
            if b == 0x22:
                return 2, chars, 0, i
            if b < 0x20:
                return 0, 0, 0, 0
            if b == 0x5C:
                ph = 2
            elif b >= 0x80:
                if not _LEAD[b]:
                    return 0, 0, 0, 0
                u = _LEAD[b]
            chars += 1
        elif ph == 2:
            if b in _ESCAPES:
                ph = 1
            elif b == 0x75:
                ph = 3
            else:
                return 0, 0, 0, 0
        else:
            if b not in _HEX:
                return 0, 0, 0, 0
            if ph == 3:
                ph, u = 4, (1 if b in b"dD" else 0)
            elif ph == 4:
                if u and b not in b"01234567":
                    return 0, 0, 0, 0
                ph, u = 5, 0
            else:
                ph = ph + 1 if ph == 5 else 1
    return 1, chars, ph * 8 + u, 0


class Row:
    """One state's allowed tokens: ids (int32, ascending), next (int32 state per id; -1 for a stop
    id), final (a stop id is allowed), done (final and nothing can extend the document)."""

    __slots__ = ("ids", "next", "final", "done", "shared", "native")

    def __init__(self, ids, nxt, final, done, shared):
        self.ids, self.next, self.final, self.done, self.shared = ids, nxt, final, done, shared
        self.native = None

    def next_state(self, token: int) -> int:
        i = int(np.searchsorted(self.ids, token))
        if i >= len(self.ids) or self.ids[i] != token:
            raise KeyError(token)
        return int(self.next[i])


class _TokenTable:
    """Rows shared by every request of one (grammar, vocabulary, stop ids)."""

    def __init__(self):
        self.rows: dict[int, Row] = {}
        self.native = None      # the native automaton holding the shared rows (lazily)
        self.lock = threading.Lock()

    def add(self, sid: int, row: Row) -> Row:
        with self.lock:
            got = self.rows.setdefault(sid, row)
            if got is row and self.native is not None:
                self.native.set(sid, row.ids, row.next, row.done)
        return got

    def native_base(self, vocab_size: int):
        with self.lock:
            if self.native is None:
                from .. import kernels
                a = kernels.token_automaton(vocab_size)
                if a is None:
                    return None
                for sid, row in self.rows.items():
                    a.set(sid, row.ids, row.next, row.done)
                self.native = a
            return self.native


class TokenRun:
    """The token automaton for one request: rows of the shared table, plus rows of states whose
    walk stepped inside an x-copy string (they depend on this request's source)."""

    def __init__(self, grammar: Grammar, vocab: Vocab, stop_ids):
        self.grammar = grammar
        self.vocab = vocab
        self.stop_ids = np.array(sorted(int(i) for i in stop_ids), dtype=np.int32)
        self.walker = grammar._walker()
        t = self.walker.tables
        key = vocab.key + ":" + ",".join(map(str, self.stop_ids))
        with t.lock:
            if self.walker.limited:
                # requests with the same value limits share rows, never with other requests: a row
                # that steps inside a limited value holds only the values of its limits
                key += ":" + self.walker.limits
                table = t.limited_vocabs.get(key)
                if table is None:
                    table = t.limited_vocabs[key] = _TokenTable()
                    while len(t.limited_vocabs) > LIMIT_TABLES:
                        t.limited_vocabs.popitem(last=False)
                else:
                    t.limited_vocabs.move_to_end(key)
            else:
                table = t.vocabs.get(key)
                if table is None:
                    table = t.vocabs[key] = _TokenTable()
        self.table = table
        self.local: dict[int, Row] = {}
        self.start = self.walker.start
        self._native = None

    def row(self, sid: int) -> Row:
        r = self.local.get(sid)
        if r is None:
            r = self.table.rows.get(sid)
            if r is None:
                r = self._expand(sid)
        return r

    def _expand(self, sid: int) -> Row:
        w = self.walker
        stacks = w.tables.states[sid]
        if len(stacks) == 1:
            (stack,) = stacks
            if stack and w.core.kind[stack[-1][0]] == STR and stack[-1][1] != 0:
                return self._finish(sid, *self._string_row(stack))
        w.touched_copy = False
        step = w.step
        children, ends, cmap = self.vocab.children, self.vocab.ends, self.vocab.child_map
        copy, first = w.tables.copy, w.tables.first
        ids: list[int] = []
        nxt: list[int] = []
        todo = [(0, sid)]
        while todo:
            node, s = todo.pop()
            kids = children[node]
            if len(kids) > 4:     # try only the bytes the state can take (most states take few)
                few = w.copy_bytes(s) if copy[s] else first[s]
                if few is not None and len(few) < len(kids):
                    m = cmap[node]
                    kids = [(b, m[b]) for b in few if b in m]
            for b, c in kids:
                t = step(s, b)
                if t < 0:
                    continue
                e = ends[c]
                if e:
                    ids.extend(e)
                    nxt.extend([t] * len(e))
                if children[c]:
                    todo.append((c, t))
        return self._finish(sid, np.array(ids, dtype=np.int32), np.array(nxt, dtype=np.int32))

    def _string_row(self, stack: tuple) -> tuple:
        """The row of a state inside a (non-copy) string, from the vocabulary's string table
        instead of a trie walk: the tokens that stay inside need only their character count
        checked; the few that close the string walk on from the state after it."""
        w = self.walker
        w.touched_copy = False
        nid, ph, cnt, u = stack[-1]
        n = w.core.nodes[nid]
        up = stack[:-1]
        kind, chars, sub, q = self.vocab.string_table(ph, u)
        inside = kind == 1
        total = cnt + chars
        if n.max_len is not None:
            inside &= total <= n.max_len
        else:
            total = np.minimum(total, n.min_len)
        ids = np.flatnonzero(inside).astype(np.int32)
        key = total[ids].astype(np.int64) * 64 + sub[ids]
        uniq, inv = np.unique(key, return_inverse=True)
        to = np.array([w.intern(frozenset((up + ((nid, int(k) % 64 // 8, int(k) // 64, int(k) % 8),),)))
                       for k in uniq.tolist()], dtype=np.int32)
        nxt = to[inv.reshape(-1)] if ids.size else np.zeros(0, np.int32)
        more_ids, more_next = [], []
        after = None
        pieces = self.vocab.pieces
        for t in np.flatnonzero(kind == 2).tolist():
            c = cnt + int(chars[t])
            if n.max_len is not None and c > n.max_len:
                continue
            if (c if n.max_len is not None else min(c, n.min_len)) < n.min_len:
                continue
            if after is None:
                after = w.intern(frozenset((up,)))
            s = after
            for b in pieces[t][int(q[t]) + 1:]:
                s = w.step(s, b)
                if s < 0:
                    break
            if s >= 0:
                more_ids.append(t)
                more_next.append(s)
        if more_ids:
            ids = np.concatenate([ids, np.array(more_ids, np.int32)])
            nxt = np.concatenate([nxt, np.array(more_next, np.int32)])
        return ids, nxt

    def _finish(self, sid: int, a: np.ndarray, b: np.ndarray) -> Row:
        w = self.walker
        final = w.tables.final[sid]
        for x in self.stop_ids:           # a stop id ends generation: never a piece of the text
            keep = a != x
            if not keep.all():
                a, b = a[keep], b[keep]
        done = final and not a.size
        if final:
            a = np.concatenate([a, self.stop_ids])
            b = np.concatenate([b, np.full(self.stop_ids.size, -1, dtype=np.int32)])
        if a.size > 1 and not (a[1:] > a[:-1]).all():
            order = np.argsort(a, kind="stable")
            a, b = a[order], b[order]
        row = Row(a, b, final, done, not w.touched_copy)
        if row.shared:
            return self.table.add(sid, row)
        self.local[sid] = row
        if self._native is not None:
            self._native.set(sid, row.ids, row.next, row.done)
        return row

    def native(self):
        """The native automaton of this request (the shared rows as its base), or None when the
        native decode loop is unavailable."""
        if self._native is None:
            base = self.table.native_base(self.vocab.size)
            if base is None:
                return None
            from .. import kernels
            a = kernels.token_automaton(self.vocab.size, base)
            for sid, row in self.local.items():
                a.set(sid, row.ids, row.next, row.done)
            self._native = a
        return self._native

    def advance(self, sid: int, token: int) -> int:
        return self.row(sid).next_state(token)


# =============================================================================================
# Public constructors (cached)
# =============================================================================================

_CORES: "OrderedDict[str, _Core]" = OrderedDict()
_CORES_LOCK = threading.Lock()
_CORES_MAX = 64


def _core_for(key: str, build) -> _Core:
    with _CORES_LOCK:
        c = _CORES.get(key)
        if c is not None:
            _CORES.move_to_end(key)
            return c
    c = build()
    with _CORES_LOCK:
        c = _CORES.setdefault(key, c)
        while len(_CORES) > _CORES_MAX:
            _CORES.popitem(last=False)
    return c


def compile_schema(schema: dict, *, copy_source: str = "", copy_spans: dict | None = None,
                   values: dict | None = None, spans=()) -> Grammar:
    """The grammar of a JSON schema (the subset in docs/ARCHITECTURE.md). GrammarError for an
    impossible, too large or unsupported schema; the message names the schema path. copy_spans,
    values: see Grammar; `spans`: the request's allowed spans for "x-copy": "spans" strings."""
    if not isinstance(schema, dict):
        raise GrammarError(f"#: a schema must be an object, got {type(schema).__name__}")
    try:
        key = "schema:" + compact_json(schema)
    except (TypeError, ValueError) as exc:
        raise GrammarError(f"#: the schema is not JSON: {exc}") from None

    return Grammar(_core_for(key, lambda: _build_core(schema, key)), copy_source, copy_spans, values, spans)


def _build_core(schema: dict, key: str | None = None) -> _Core:
    """Compile without the cache (compile_schema caches; the bench times this)."""
    key = key or "schema:" + compact_json(schema)
    c = _Compiler()
    root = c.schema(schema, "", 0)
    return _Core(c.nodes, root, json.loads(key[7:]), key)


def json_grammar() -> Grammar:
    """Any JSON value (format "json"), objects and arrays nested at most JSON_DEPTH deep."""
    def build():
        c = _Compiler()
        root = c.json_value(JSON_DEPTH)
        return _Core(c.nodes, root, None, "json")

    return Grammar(_core_for("json", build))


def grammar_for_request(fmt, schema, *, copy_source: str = "", spans=()) -> Grammar | None:
    """The grammar of a request's `format` / `schema` fields: None when neither is given;
    format "json" alone = any JSON value; a schema (or a schema given as format, as Ollama
    allows) = that schema. GrammarError for anything else."""
    if isinstance(fmt, dict):
        if schema is not None:
            raise GrammarError("give the schema either as format or as schema, not both")
        fmt, schema = "json", fmt
    if fmt is not None and fmt != "json":
        raise GrammarError(f"format must be \"json\" (or a schema), got {fmt!r}")
    if schema is not None:
        return compile_schema(schema, copy_source=copy_source, spans=spans)
    if fmt == "json":
        return json_grammar().with_source(copy_source, spans=spans)
    return None
