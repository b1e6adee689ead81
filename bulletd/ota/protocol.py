"""The OTA wire protocol: topics, message maps, reason codes and their validation.

Both ends import this module (the device-side receiver in bulletd.ota.receiver and the
pusher in bulletd.ota.push), so the protocol is written down exactly once.
docs/OTA.md describes the same protocol for people; keep the two in step.

Topics (prefix configurable, default "bullet"):

    <p>/<device>/ota/offer          pusher -> device   a signed offer (one device)
    <p>/fleet/ota/<group>/offer     pusher -> devices  a signed offer (every device of a group)
    <p>/<device>/ota/need           device -> pusher   "send me these chunk numbers"
    <p>/<device>/ota/data           pusher -> device   one chunk
    <p>/<device>/ota/status         device -> all      push progress and outcome (retained)
    <p>/<device>/ota/state          device -> all      presence: groups, children (retained, Last Will)

Every payload is a msgpack map with "v": 1 and a "type".
"""
from __future__ import annotations

import time
import zlib
from typing import Any

import msgpack

from bulletd.errors import BulletError

PROTOCOL_VERSION = 1
CONTENT_TYPE = "application/msgpack"

# Chunk sizes the receiver accepts. The upper bound keeps one chunk message well below a broker
# max_packet_size of 1 MiB (deploy/mosquitto sets that; paho does not check it, and an oversize
# packet gets the client disconnected); the lower bound keeps the chunk count sane.
MIN_CHUNK = 1024
MAX_CHUNK = 512 * 1024
MAX_CHUNKS = 1 << 16

# Push states, in the order a successful push goes through them.
OFFERED = "offered"
RECEIVING = "receiving"
RECEIVED = "received"
VERIFIED = "verified"
INSTALLED = "installed"
REJECTED = "rejected"
STALLED = "stalled"  # the transfer stopped; the partial file is kept and resumes on a new offer
WAITING = "waiting"  # another push is being received (reason busy); the pusher offers again
FINAL_STATES = (INSTALLED, REJECTED)

# Reason codes carried by "rejected" (and "stalled") statuses. Stable: tools match on them.
REASONS = {
    "bad_offer": "the offer map is malformed (missing or wrongly typed field)",
    "unsigned": "the offer carries no signed manifest",
    "bad_signature": "the manifest signature does not verify",
    "unknown_key": "the manifest is signed by a key that is not in the trust store",
    "hash_mismatch": "the received file's SHA-256 differs from the signed manifest",
    "size_mismatch": "the received file's size differs from the signed manifest",
    "bad_file": "the file is signed but is not a valid .bullet file",
    "name_mismatch": "the file's header name/version differ from the signed manifest",
    "bad_version": "the version is not an integer or dotted integers",
    "downgrade": "the version is not higher than the installed (or highest ever installed) one",
    "replay": "this exact file (SHA-256) was offered before",
    "too_large": "the file is larger than the receiver's max_file_size",
    "no_space": "the staging or models filesystem has no room for the file",
    "smoke_test_failed": "the new child did not reproduce its verification vectors",
    "swap_failed": "the daemon could not swap the new child in; the previous version stays",
    "busy": "another push is being received (state waiting, not final: offer again)",
    "timeout": "no chunk arrived within the stall timeout",
    "io_error": "reading or writing the staging area failed",
    "internal": "a bug in the receiver (logged with a traceback)",
}


class OtaError(BulletError):
    """An OTA push is refused. `reason` is one of REASONS; the message says what and where."""

    def __init__(self, reason: str, message: str):
        if reason not in REASONS:
            raise ValueError(f"unknown OTA reason code {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message


# ----------------------------------------------------------------------------------------------
# topics

def device_topic(prefix: str, device: str, leaf: str) -> str:
    """<prefix>/<device>/ota/<leaf> for leaf in offer, need, data, status, state."""
    return f"{prefix}/{device}/ota/{leaf}"


def fleet_offer_topic(prefix: str, group: str) -> str:
    return f"{prefix}/fleet/ota/{group}/offer"


def check_topic_word(what: str, value: str) -> str:
    """A device id or group name becomes one topic level: no wildcards, no slashes, not empty."""
    if not isinstance(value, str) or not value or any(c in value for c in "/+#\0") \
            or value.startswith("$"):
        raise ValueError(f"{what} must be a non-empty topic level without / + # $ or NUL, "
                         f"found {value!r}")
    return value


# ----------------------------------------------------------------------------------------------
# encoding

def pack(msg: dict) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)


def unpack(payload: bytes, where: str) -> dict:
    """Decode one OTA payload; OtaError("bad_offer") with the topic when it is not a v1 map."""
    try:
        msg = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise OtaError("bad_offer", f"{where}: payload is not msgpack ({exc})") from exc
    if not isinstance(msg, dict):
        raise OtaError("bad_offer", f"{where}: expected a msgpack map, found {type(msg).__name__}")
    if msg.get("v") != PROTOCOL_VERSION:
        raise OtaError("bad_offer", f"{where}: expected protocol v={PROTOCOL_VERSION}, "
                                    f"found v={msg.get('v')!r}")
    return msg


def _field(msg: dict, key: str, types, where: str):
    if key not in msg:
        raise OtaError("bad_offer", f"{where}: field {key!r} is missing")
    value = msg[key]
    # bool is a subclass of int: True must not pass as a chunk number
    if not isinstance(value, types) or (isinstance(value, bool) and types is int):
        raise OtaError("bad_offer", f"{where}: field {key!r} should be {types.__name__}, "
                                    f"found {value!r:.60}")
    return value


def n_chunks_for(size: int, chunk_size: int) -> int:
    return max(1, -(-size // chunk_size))


def chunk_crc(data: bytes) -> int:
    """CRC-32 of a chunk: catches transmission damage early. Security rests on the signed
    SHA-256 of the whole file, not on this."""
    return zlib.crc32(data) & 0xFFFFFFFF


def make_offer(push_id: str, signed: dict, chunk_size: int) -> dict:
    size = int(signed["manifest"]["size"])
    return {"v": PROTOCOL_VERSION, "type": "offer", "push_id": push_id, "signed": signed,
            "chunk_size": chunk_size, "n_chunks": n_chunks_for(size, chunk_size),
            "sent": time.time()}


def check_offer(msg: dict, where: str) -> dict:
    """Validate the unsigned envelope of an offer (the signature is checked by the receiver)."""
    if msg.get("type") != "offer":
        raise OtaError("bad_offer", f"{where}: expected type 'offer', found {msg.get('type')!r}")
    push_id = _field(msg, "push_id", str, where)
    if not 1 <= len(push_id) <= 64:
        raise OtaError("bad_offer", f"{where}: push_id must be 1..64 characters")
    if "signed" not in msg or msg["signed"] in (None, {}):
        raise OtaError("unsigned", f"{where}: the offer carries no signed manifest")
    signed = _field(msg, "signed", dict, where)
    manifest = signed.get("manifest")
    if not isinstance(manifest, dict) or not isinstance(signed.get("signature"), str):
        raise OtaError("unsigned", f"{where}: 'signed' must hold 'manifest' (map) and "
                                   f"'signature' (base64 text)")
    size = manifest.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise OtaError("bad_offer", f"{where}: manifest size must be a positive integer, "
                                    f"found {size!r}")
    chunk_size = _field(msg, "chunk_size", int, where)
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise OtaError("bad_offer", f"{where}: chunk_size {chunk_size} outside "
                                    f"[{MIN_CHUNK}, {MAX_CHUNK}]")
    n = _field(msg, "n_chunks", int, where)
    if n != n_chunks_for(size, chunk_size):
        raise OtaError("bad_offer", f"{where}: n_chunks {n} does not match size {size} / "
                                    f"chunk_size {chunk_size} = {n_chunks_for(size, chunk_size)}")
    if n > MAX_CHUNKS:
        raise OtaError("bad_offer", f"{where}: {n} chunks is more than the limit {MAX_CHUNKS}")
    return msg


def make_need(push_id: str, device: str, seqs: list[int], have: int, total: int) -> dict:
    return {"v": PROTOCOL_VERSION, "type": "need", "push_id": push_id, "device": device,
            "seqs": list(seqs), "have": have, "total": total}


def check_need(msg: dict, where: str) -> dict:
    if msg.get("type") != "need":
        raise OtaError("bad_offer", f"{where}: expected type 'need', found {msg.get('type')!r}")
    _field(msg, "push_id", str, where)
    seqs = _field(msg, "seqs", list, where)
    if len(seqs) > 1024 or not all(isinstance(s, int) and not isinstance(s, bool) for s in seqs):
        raise OtaError("bad_offer", f"{where}: seqs must be at most 1024 integers")
    return msg


def make_chunk(push_id: str, seq: int, data: bytes, crc: int | None = None) -> dict:
    return {"v": PROTOCOL_VERSION, "type": "chunk", "push_id": push_id, "seq": seq,
            "crc": chunk_crc(data) if crc is None else crc, "data": data}


def check_chunk(msg: dict, where: str) -> dict:
    if msg.get("type") != "chunk":
        raise OtaError("bad_offer", f"{where}: expected type 'chunk', found {msg.get('type')!r}")
    _field(msg, "push_id", str, where)
    _field(msg, "seq", int, where)
    _field(msg, "crc", int, where)
    _field(msg, "data", bytes, where)
    return msg


def make_status(device: str, push_id: str | None, state: str, *, name=None, version=None,
                sha256=None, reason=None, message="", have=0, total=0, **extra) -> dict:
    if reason is not None and reason not in REASONS:
        raise ValueError(f"unknown OTA reason code {reason!r}")
    msg = {"v": PROTOCOL_VERSION, "type": "status", "device": device, "push_id": push_id,
           "state": state, "name": name, "version": version, "sha256": sha256, "reason": reason,
           "message": message, "have": have, "total": total, "ts": time.time()}
    msg.update(extra)
    return msg


def version_key(version: Any, where: str = "version") -> tuple[int, ...]:
    """Order versions: an int, or text of dot-separated integers ("3", "1.2.10").

    Raises OtaError("bad_version") for anything else, so "1.2-beta" is refused rather than
    compared in some surprising way.
    """
    if isinstance(version, bool):
        raise OtaError("bad_version", f"{where}: expected an integer or dotted integers, "
                                      f"found {version!r}")
    if isinstance(version, int):
        if version < 0:
            raise OtaError("bad_version", f"{where}: version must not be negative, found {version}")
        return (version,)
    if isinstance(version, str):
        parts = version.strip().lstrip("vV").split(".")
        if parts and all(p.isdigit() and p.isascii() for p in parts):
            key = [int(p) for p in parts]
            while len(key) > 1 and key[-1] == 0:  # "2" == "2.0" == "2.0.0"
                key.pop()
            return tuple(key)
    raise OtaError("bad_version", f"{where}: expected an integer or dotted integers such as "
                                  f"'1.4.2', found {version!r}")
