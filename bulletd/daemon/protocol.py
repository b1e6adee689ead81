"""The request/reply maps shared by the MQTT and Unix-socket transports, and their encodings.

A request is a map (msgpack, or JSON when the Content Type says so or the payload starts with
`{`). Every request gets exactly one final reply; a streaming generation sends chunk replies
before it. docs/DAEMON.md is the reference; this module is the executable version:

    chunk:  {"id": ..., "seq": n, "final": false, "text": "..."}
    final:  {"id": ..., "seq": n, "final": true, "ok": true, ...result...}
    error:  {"id": ..., "seq": n, "final": true, "ok": false,
             "error": {"code": "<stable code>", "message": "..."}}
"""
from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass, field
from typing import Any

import msgpack

from bulletd.errors import BadPrompt, BadSettings, BulletError, ContextOverflow, RequestError
from bulletd.runtime.sampling import LIMITS as SETTING_LIMITS, GenerationSettings, check_setting, check_stop
from bulletd.names import check_name

# Stable wire codes. Clients may switch on them; never rename one.
ERROR_CODES = {
    "bad_request": "the request is malformed, has a wrong type, a missing field or an absurd setting",
    "unknown_child": "no child of that name is installed",
    "busy": "the work queue is full (or the child is busy and cannot be unloaded now)",
    "too_long": "the prompt (plus max_tokens) does not fit the child's context",
    "too_large": "the payload or frame is larger than limits.max_request_bytes",
    "timeout": "the request's deadline passed before it finished",
    "cancelled": "the request was cancelled (its child was unloaded with cancel, or the daemon stopped)",
    "forbidden": "an admin command from a peer that is not an admin",
    "untrusted": "a child's signature is missing, bad or made by an unknown key",
    "bad_model": "a child file is malformed or of the wrong kind",
    "no_route": "no explicit child, the mother is unsure or absent, and no fallback is configured",
    "no_memory": "the child does not fit the memory budget even after evicting idle children",
    "not_found": "a file to load does not exist",
    "exists": "a child of that name is already loaded from another file (load with swap to replace it)",
    "shutting_down": "the daemon is stopping and takes no new requests",
    "internal": "a bug; the daemon logged a traceback",
    # agents (tools): docs/DAEMON.md, "Agents and tools"
    "bad_call": "the agent's call failed its schema, is incomplete, or does not apply to what it names",
    "no_such_entity": "the home has no area or entity of that name",
    "ambiguous": "the name fits more than one entity or area; nothing was done",
    "out_of_range": "a value is outside its range (0..100, or the entity's min_temp..max_temp)",
    "calc_error": "the expression is malformed, divides by zero or exceeds the calculator's limits",
    "rate_limited": "acting now would exceed tools.home.max_actions_per_minute; nothing was published",
    "act_failed": "the device commands could not be published (no broker connection)",
    # install and rollback answer with the OTA receiver's reasons (docs/OTA.md)
    "unsigned": "install: the file has no signature (.sig)",
    "bad_signature": "install: the signature does not verify",
    "unknown_key": "install: the file is signed by a key that is not trusted",
    "hash_mismatch": "install: the file's SHA-256 differs from its signed manifest",
    "size_mismatch": "install: the file's size differs from its signed manifest",
    "bad_file": "install: the file is signed but not a valid .bullet file",
    "name_mismatch": "install: the file's header name/version differ from its signed manifest",
    "bad_version": "install: the version is not an integer or dotted integers",
    "downgrade": "install: the version is not higher than the installed or highest ever installed one",
    "replay": "install: this exact file already got a verdict (use force to install it again)",
    "no_space": "install: not enough free space to stage the file",
    "smoke_test_failed": "install: the file did not reproduce its verification vectors",
    "swap_failed": "install: the daemon could not load the new file; the previous version stays",
    "io_error": "install: reading or writing the OTA staging area failed",
    "bad_offer": "install/rollback: malformed manifest, or no previous version to roll back to",
}

GENERATE_OPS = ("generate",)
READ_OPS = ("generate", "route", "list", "status", "ping", "children")
ADMIN_OPS = ("load", "unload", "reload", "swap", "rollback", "install")
ALL_OPS = READ_OPS + ADMIN_OPS

CT_MSGPACK = "application/msgpack"
CT_JSON = "application/json"

FRAME_HDR = struct.Struct("!I")

# Requests are shallow maps; anything deeper than this is refused before any code walks it
# recursively (repr in an error message, the JSON encoder of a reply).
MAX_DEPTH = 32


# ---------------------------------------------------------------- decoding


def decode_payload(payload: bytes, content_type: str | None = None) -> tuple[dict, str]:
    """Payload bytes -> (request map, content type to answer in). RequestError(bad_request)."""
    ct = (content_type or "").split(";")[0].strip().lower()
    as_json = ct in (CT_JSON, "text/json") or (not ct and payload[:1] in (b"{", b" ", b"\n"))
    if as_json:
        obj = decode_json(payload)
        ct = CT_JSON
    else:
        obj = decode_msgpack(payload, "payload")
        ct = CT_MSGPACK
    if not isinstance(obj, dict):
        raise RequestError("bad_request", f"expected a map as the request, found {type(obj).__name__}")
    return obj, ct


def decode_json(payload: bytes) -> Any:
    try:
        obj = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RequestError("bad_request", f"payload is not valid UTF-8 (bad byte at offset {exc.start})") from None
    except ValueError as exc:
        raise RequestError("bad_request", f"payload is not valid JSON: {exc}") from None
    except RecursionError:   # the C decoder stops at the interpreter's recursion limit
        raise RequestError("bad_request", f"payload is nested more than {MAX_DEPTH} levels deep") from None
    check_unicode(obj, "payload")
    return obj


_SURROGATE = re.compile("[\ud800-\udfff]")


def check_unicode(obj: Any, what: str) -> None:
    """RequestError(bad_request) when a string (key or value) holds a lone UTF-16 surrogate, as
    JSON's "\ud800" escape makes: such text has no UTF-8, so no reply could carry it back."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, str):
            if not o.isascii() and _SURROGATE.search(o):
                raise RequestError("bad_request", f"{what} has a string with a lone UTF-16 surrogate "
                                   "(an unpaired \\ud800-\\udfff escape); strings must be valid Unicode")
        elif isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, list):
            stack.extend(o)


def decode_msgpack(body: bytes, what: str) -> Any:
    """One msgpack object. RequestError(bad_request), in words, for anything else."""
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except msgpack.StackError:   # its own limit (1024 levels)
        raise RequestError("bad_request", f"{what} is nested more than {MAX_DEPTH} levels deep") from None
    except msgpack.ExtraData:
        raise RequestError("bad_request", f"{what} has extra bytes after the msgpack map") from None
    except Exception:  # msgpack raises several unrelated types for garbage
        raise RequestError("bad_request", f"{what} is not valid msgpack (truncated or malformed); send "
                           "msgpack, or JSON with Content Type application/json") from None
    return obj


def check_depth(obj: Any, what: str) -> None:
    """RequestError(bad_request) when lists/maps nest deeper than MAX_DEPTH (no recursion)."""
    level = [obj]
    for _ in range(MAX_DEPTH):
        nxt = []
        for o in level:
            if isinstance(o, dict):
                nxt.extend(v for v in o.values() if isinstance(v, (dict, list)))
            elif isinstance(o, list):
                nxt.extend(v for v in o if isinstance(v, (dict, list)))
        if not nxt:
            return
        level = nxt
    raise RequestError("bad_request", f"{what} is nested more than {MAX_DEPTH} levels deep")


def encode_payload(obj: dict, content_type: str) -> bytes:
    if content_type == CT_JSON:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=_json_default).encode()
    return msgpack.packb(obj, use_bin_type=True)


def _json_default(o: Any) -> Any:
    if isinstance(o, bytes):
        return o.hex()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def split_frames(buf: bytearray, max_frame: int) -> tuple[list[bytes], int | None]:
    """Take the whole frames (4-byte big-endian length, then the body) off the front of `buf`.
    Returns (bodies, too_large): too_large is the length a frame at the front declares when it
    exceeds max_frame (the stream cannot be resynchronised after it), else None. An incomplete
    frame stays in buf."""
    bodies: list[bytes] = []
    while len(buf) >= FRAME_HDR.size:
        (n,) = FRAME_HDR.unpack_from(buf)
        if n > max_frame:
            return bodies, n
        if len(buf) < FRAME_HDR.size + n:
            break
        bodies.append(bytes(buf[FRAME_HDR.size:FRAME_HDR.size + n]))
        del buf[:FRAME_HDR.size + n]
    return bodies, None


def pack_frame(obj: dict) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return FRAME_HDR.pack(len(body)) + body


# ---------------------------------------------------------------- requests

@dataclass
class Peer:
    """Who sent a request: the transport, whether it may use admin commands, and for logs who it is."""
    transport: str             # "socket" | "mqtt"
    admin: bool = False
    who: str = ""              # uid=.. pid=.. or the MQTT reply topic, for logs


@dataclass
class Request:
    op: str
    id: Any = None
    child: str | None = None
    prompt: str = ""
    settings: dict = field(default_factory=dict)   # the settings the request chose (GenerationSettings keywords)
    generation: GenerationSettings | None = None   # generate: those over the defaults, validated
    stream: bool = False
    deadline: float | None = None                  # seconds from arrival
    args: dict = field(default_factory=dict)       # admin arguments (path, name, mode, ...)
    reply_to: str | None = None                    # MQTT 3.1.1: topic from the payload
    act: bool = False                              # agents: carry out the resolved actions
    format: str | None = None                      # structured output: "json" (any JSON value)
    schema: dict | None = None                     # structured output: a JSON schema (grammar subset)


MAX_ID = 128                            # characters of a string id
ID_MIN, ID_MAX = -(1 << 63), (1 << 64) - 1   # an integer id: what msgpack can carry


def reply_id(obj: Any, kinds: tuple[type, ...] = (str, int, bytes)) -> str | int | bytes | None:
    """The id a request's replies carry: its own when parse_request would accept it, else None
    (a request refused for its id still gets an error reply that every encoding can carry)."""
    rid = obj.get("id") if isinstance(obj, dict) else None
    if not isinstance(rid, kinds):
        return None
    if isinstance(rid, int) and not ID_MIN <= rid <= ID_MAX:
        return None
    if isinstance(rid, str) and len(rid) > MAX_ID:
        return None
    return rid


def parse_request(obj: dict, limits: Any, *, default_op: str = "generate") -> Request:
    """Validate a request map; raise RequestError(bad_request / too_large) naming the field."""
    check_depth(obj, "request")
    op = obj.get("op", default_op)
    if not isinstance(op, str) or op not in ALL_OPS:
        raise RequestError("bad_request", f"op: expected one of {', '.join(ALL_OPS)}, found {op!r}")
    rid = obj.get("id")
    if rid is not None and not isinstance(rid, (str, int, bytes)):
        raise RequestError("bad_request", f"id: expected a string or integer, found {type(rid).__name__}")
    if isinstance(rid, str) and len(rid) > MAX_ID:
        raise RequestError("bad_request", f"id: expected at most {MAX_ID} characters, found {len(rid)}")
    if isinstance(rid, int) and not ID_MIN <= rid <= ID_MAX:
        raise RequestError("bad_request", "id: expected an integer that fits 64 bits (a JSON request may "
                                          "carry any size, a msgpack reply cannot)")
    req = Request(op=op, id=rid)
    reply_to = obj.get("reply_to")
    if reply_to is not None:
        req.reply_to = check_topic(reply_to, "reply_to")
    child = obj.get("child")
    if child is not None and child != "":
        req.child = check_name(child)
    if op in ("generate", "route"):
        prompt = obj.get("prompt")
        if prompt is None:
            raise RequestError("bad_request", "prompt: missing (expected a string)")
        if not isinstance(prompt, str):
            raise RequestError("bad_request", f"prompt: expected a string, found {type(prompt).__name__}")
        if len(prompt) > limits.max_prompt_chars:
            raise RequestError("too_long", f"prompt: {len(prompt)} characters, more than the limit "
                               f"{limits.max_prompt_chars} (limits.max_prompt_chars)")
        req.prompt = prompt
    if op == "generate":
        stream = obj.get("stream", False)
        if not isinstance(stream, bool):
            raise RequestError("bad_request", f"stream: expected true or false, found {stream!r}")
        req.stream = stream
        req.settings, req.generation = _parse_settings(obj, limits, stream)
        act = obj.get("act", False)
        if not isinstance(act, bool):
            raise RequestError("bad_request", f"act: expected true or false, found {act!r}")
        req.act = act
        fmt = obj.get("format")
        if fmt is not None and fmt != "json":
            raise RequestError("bad_request", f"format: expected \"json\" (or a schema in 'schema'), found {fmt!r}")
        req.format = fmt
        schema = obj.get("schema")
        if schema is not None and not isinstance(schema, dict):
            raise RequestError("bad_request", f"schema: expected a JSON schema object, found {type(schema).__name__}")
        if schema is not None and fmt is not None:
            raise RequestError("bad_request", "format and schema: send one of them, not both")
        req.schema = schema
    dl = obj.get("deadline", obj.get("timeout"))
    if dl is not None:
        if isinstance(dl, bool) or not isinstance(dl, (int, float)) or not _finite(dl) or dl <= 0:
            found = "a number too large for a float" if isinstance(dl, int) and not _finite(dl) else repr(dl)[:40]
            raise RequestError("bad_request", f"deadline: expected seconds > 0, found {found}")
        req.deadline = float(dl)
    if op in ADMIN_OPS or op == "children":
        req.args = {k: v for k, v in obj.items() if k not in ("op", "id")}
    return req


def _parse_settings(obj: dict, limits: Any, stream: bool) -> tuple[dict, GenerationSettings]:
    """The settings the request chose, and the GenerationSettings they make, checked against
    this daemon's caps (limits.max_tokens, limits.max_stop_strings) and the runtime's table
    (bulletd.runtime.sampling.LIMITS). RequestError(bad_request) naming the field."""
    chosen = {k: obj[k] for k in (*SETTING_LIMITS, "stop") if obj.get(k) is not None}
    try:
        if "max_tokens" in chosen:
            chosen["max_tokens"] = check_setting("max_tokens", chosen["max_tokens"], limits.max_tokens,
                                                 f"{limits.max_tokens} (limits.max_tokens)")
        if "stop" in chosen:
            chosen["stop"] = check_stop(chosen["stop"], limits.max_stop_strings, " (limits.max_stop_strings)")
        gs = GenerationSettings(**chosen, stream=stream).validate()
    except BulletError as exc:
        raise wire_error(exc) from None
    return {k: getattr(gs, k) for k in chosen}, gs


def _finite(v: int | float) -> bool:
    """A finite number that fits a float (JSON integers may have hundreds of digits)."""
    if isinstance(v, int):
        return -1e308 < v < 1e308
    return math.isfinite(v)


def check_topic(topic: Any, what: str) -> str:
    if not isinstance(topic, str) or not topic or len(topic) > 512:
        raise RequestError("bad_request", f"{what}: expected a topic string of 1-512 characters, found {topic!r}")
    if any(c in topic for c in "+#\x00") or topic.startswith("$"):
        raise RequestError("bad_request", f"{what}: {topic!r} is not a publishable topic (no wildcards, no $)")
    return topic


# ---------------------------------------------------------------- replies


def error_reply(code: str, message: str) -> dict:
    return {"final": True, "ok": False, "error": {"code": code, "message": message}}


# Typed errors from below the daemon (the runtime, the format) and their wire codes: the one place
# where they meet. The first class an error is an instance of decides.
WIRE_CODES: tuple[tuple[type, str], ...] = (
    (ContextOverflow, "too_long"),
    (BulletError, "bad_request"),      # BadSettings, BadPrompt, other ModelErrors, ...
)


def wire_error(exc: BulletError) -> RequestError:
    """The RequestError the daemon answers for `exc` (a RequestError is its own answer)."""
    if isinstance(exc, RequestError):
        return exc
    for cls, code in WIRE_CODES:
        if isinstance(exc, cls):
            return RequestError(code, str(exc))
    raise TypeError(f"no wire code for {type(exc).__name__}")   # BulletError is in the table


def request_code(exc: BaseException) -> str | None:
    """The wire code of an error a request can cause (a RequestError, BadSettings, BadPrompt,
    ContextOverflow) for the tools that report codes as bulletd would (`bullet run`, `bullet
    eval`); None for any other error."""
    if isinstance(exc, (RequestError, BadSettings, BadPrompt, ContextOverflow)):
        return wire_error(exc).code
    return None


def error_from_exc(exc: BaseException) -> dict:
    """The final reply for an exception that escaped a request's handling: a RequestError's
    code, else internal (a bug)."""
    if isinstance(exc, RequestError):
        return error_reply(exc.code, exc.message)
    return error_reply("internal", f"internal error: {exc or type(exc).__name__} (a bug; the daemon "
                       "log has the traceback)")
