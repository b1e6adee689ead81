"""The tools an agent child may call: their default schemas (what the grammar and the header use)
and the validation of a finished call (jsonschema).

    from bulletd.agents.tools import TOOLS, validate_call
    TOOLS["calc"].schema                     # {"type": "object", "properties": {"expression": ...}, ...}
    call = validate_call("home", '{"intent":"HassTurnOn","area":"kitchen"}')

A call that fails the schema is RequestError("bad_call"); a number outside its minimum/maximum
is "out_of_range". The schemas stay inside the grammar's subset (objects with properties in a
fixed order, enums, strings with maxLength, numbers with bounds); validation adds what the grammar
implies: no properties beyond the listed ones.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bulletd.agents.home import DOMAINS, INTENTS
from bulletd.errors import RequestError

NAME_MAX = 48


@dataclass(frozen=True)
class Tool:
    name: str
    schema: dict
    description: str


CALC_SCHEMA = {
    "type": "object",
    "properties": {"expression": {"type": "string", "maxLength": 160, "x-copy": "spans"}},
    "required": ["expression"],
}

HOME_SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"type": "string", "enum": list(INTENTS)},
        "name": {"type": "string", "maxLength": NAME_MAX, "x-copy": "words"},
        "area": {"type": "string", "maxLength": NAME_MAX, "x-copy": "words"},
        "domain": {"type": "string", "enum": list(DOMAINS)},
        "brightness": {"type": "integer", "minimum": 0, "maximum": 100},
        "temperature": {"type": "number", "minimum": -50, "maximum": 100},
        "position": {"type": "integer", "minimum": 0, "maximum": 100},
    },
    "required": ["intent"],
}

TOOLS: dict[str, Tool] = {
    "calc": Tool("calc", CALC_SCHEMA, "exact arithmetic on an expression"),
    "home": Tool("home", HOME_SCHEMA, "a Home Assistant intent resolved against the home config"),
}

_RANGE = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def closed(schema: Any) -> Any:
    """The schema with additionalProperties: false on every object that lists its properties."""
    if isinstance(schema, dict):
        out = {k: closed(v) for k, v in schema.items()}
        if out.get("type") == "object" and "properties" in out:
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [closed(v) for v in schema]
    return schema


def parse_call(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise RequestError("bad_call", f"the model's output is not a complete JSON document ({exc}): "
                           f"{text[:200]!r}") from None


def check_schema(schema: Any, what: str) -> Any:
    """The jsonschema validator class for `schema`; RequestError(bad_request) if it is no schema."""
    import jsonschema
    if not isinstance(schema, dict):
        raise RequestError("bad_request", f"{what} schema: expected a JSON object, found {type(schema).__name__}")
    try:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise RequestError("bad_request", f"{what} schema is not a valid JSON schema: {exc.message}") from None
    return cls


def check(value: Any, schema: dict, what: str) -> None:
    """jsonschema validation; RequestError(out_of_range | bad_call) naming the failing path."""
    import jsonschema
    cls = check_schema(schema, what)
    err = jsonschema.exceptions.best_match(cls(schema).iter_errors(value))
    if err is None:
        return
    path = "/".join(map(str, err.absolute_path)) or "(the call)"
    code = "out_of_range" if err.validator in _RANGE else "bad_call"
    raise RequestError(code, f"{path}: {err.message} ({what} schema)")


def validate_call(tool: str, call: Any, schema: dict | None = None) -> dict:
    """Parse (if text) and validate a call against the tool's schema (or `schema`) -> the call."""
    if isinstance(call, str):
        call = parse_call(call)
    check(call, closed(schema if schema is not None else TOOLS[tool].schema), f"the {tool} tool's")
    if not isinstance(call, dict):
        raise RequestError("bad_call", f"expected a JSON object as the call, found {type(call).__name__}")
    return call
