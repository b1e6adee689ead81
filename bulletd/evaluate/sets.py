"""Evaluation sets: JSONL, one object a line; the keys present choose the kind of the set.

    calc     {"text": ..., "answer": <number>}
    home     {"text": ..., "expect": [{"service": ..., "entity_id": ..., "data": {...}?}, ...]}
    routing  {"text": ..., "child": <name> | null}
    text     {"text": ...}
    distinct {"text": <prompt>}            (chosen by `bullet eval --distinct`, not by keys)

Every line may add "category" (a string) to group the counts. Blank lines are skipped. A line
that is not a JSON object, lacks a non-empty "text", has a value of the wrong type or is of
another kind than the first line stops the evaluation with an error naming the line: a figure
over part of a set would look like a figure over all of it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bulletd.errors import BulletError

KINDS = ("calc", "home", "routing", "text", "distinct")


class EvalError(BulletError):
    """A bad set, a bad option combination or a model directory that cannot be evaluated."""


@dataclass
class Item:
    line: int                 # 1-based line number in the set file
    text: str
    expected: Any = None      # answer (calc), expect list (home), child name or None (routing)
    category: str | None = None


def _kind_of(obj: dict) -> str:
    keys = [k for k in ("answer", "expect", "child") if k in obj]
    if len(keys) > 1:
        raise ValueError(f"has both {keys[0]!r} and {keys[1]!r}; a line is of one kind")
    return {"answer": "calc", "expect": "home", "child": "routing"}.get(keys[0] if keys else "", "text")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def check_call(c: Any, where: str) -> dict:
    """One expected service call -> {"service", "entity_id"[, "data"]} (empty data dropped)."""
    if not isinstance(c, dict):
        raise ValueError(f"{where}: expected a map with service and entity_id, found {type(c).__name__}")
    extra = sorted(set(c) - {"service", "entity_id", "data"})
    if extra:
        raise ValueError(f"{where}: unknown key(s) {', '.join(extra)} (expected service, entity_id, data)")
    for k in ("service", "entity_id"):
        if not isinstance(c.get(k), str) or not c[k]:
            raise ValueError(f"{where}: {k} must be a non-empty string, found {c.get(k)!r}")
    data = c.get("data")
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"{where}: data must be a map, found {type(data).__name__}")
    out = {"service": c["service"], "entity_id": c["entity_id"]}
    if data:
        out["data"] = data
    return out


def _item(obj: dict, kind: str, n: int) -> Item:
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"needs a non-empty string \"text\", found {text!r}")
    cat = obj.get("category")
    if cat is not None and not isinstance(cat, str):
        raise ValueError(f"category must be a string, found {cat!r}")
    exp: Any = None
    if kind == "calc":
        exp = obj["answer"]
        if not _is_number(exp):
            raise ValueError(f"answer must be a finite number, found {exp!r}")
    elif kind == "home":
        exp = obj["expect"]
        if not isinstance(exp, list):
            raise ValueError(f"expect must be a list of service calls, found {type(exp).__name__}")
        exp = [check_call(c, f"expect[{i}]") for i, c in enumerate(exp)]
    elif kind == "routing":
        exp = obj["child"]
        if exp is not None and (not isinstance(exp, str) or not exp):
            raise ValueError(f"child must be a child name or null, found {exp!r}")
    return Item(n, text, exp, cat)


def load_set(path, *, distinct: bool = False) -> tuple[str, list[Item]]:
    """Read a set file -> (kind, items). EvalError names the file and line of any problem."""
    try:
        raw = open(path, "rb").read()
    except OSError as exc:
        raise EvalError(f"cannot read the set {path}: {exc.strerror}") from None
    kind, items = ("distinct" if distinct else None), []
    for n, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            try:
                obj = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise ValueError(f"invalid UTF-8 at byte {exc.start} of the line") from None
            except json.JSONDecodeError as exc:
                raise ValueError(f"not JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"expected a JSON object, found {type(obj).__name__}")
            k = "distinct" if distinct else _kind_of(obj)
            if kind is None:
                kind = k
            elif k != kind:
                raise ValueError(f"is a {k} line but the set is a {kind} set (from its first line)")
            items.append(_item(obj, kind, n))
        except ValueError as exc:
            raise EvalError(f"{path}: line {n}: {exc}") from None
    if not items:
        raise EvalError(f"{path}: the set has no lines (expected JSONL such as {{\"text\": ..., \"answer\": 42}})")
    return kind, items


def load_texts(path) -> list[str]:
    """The "text" of every line of a JSONL file (a training split as `bullet-train split` writes
    it); blank lines are skipped, anything else without a string "text" is an error."""
    try:
        raw = open(path, "rb").read()
    except OSError as exc:
        raise EvalError(f"cannot read {path}: {exc.strerror}") from None
    out = []
    for n, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise EvalError(f"{path}: line {n}: not a JSON line (expected {{\"text\": ...}})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise EvalError(f"{path}: line {n}: expected an object with a string \"text\"")
        out.append(obj["text"])
    if not out:
        raise EvalError(f"{path}: no lines")
    return out
