"""Layered errors: the runtime raises typed errors, wire codes are given at the daemon's edge by
one table (bulletd.daemon.protocol.wire_error), and generation settings have one table of types
and ranges (bulletd.runtime.sampling.LIMITS) that the request parser and the runtime share.

Run: pytest tests/test_error_layers.py -q
"""
import subprocess
import sys

import pytest

from bulletd.daemon import protocol
from bulletd.daemon.config import LimitsConfig as Limits
from bulletd.errors import BadPrompt, BadSettings, BulletError, ContextOverflow, ModelError, RequestError
from bulletd.runtime.sampling import LIMITS, GenerationSettings


@pytest.mark.parametrize("exc,code", [
    (ContextOverflow("positions 3..9 do not fit"), "too_long"),                     # no word "context"
    (ModelError("the context of 40 tokens is full of NaN logits"), "bad_request"),  # no substring rule
    (BadSettings("top_p", "top_p must be in (0, 1], got 2"), "bad_request"),
    (BadPrompt("prompt is empty"), "bad_request"),
    (BulletError("something a user can fix"), "bad_request"),
    (RequestError("busy", "all workers are busy"), "busy"),
])
def test_wire_codes_come_from_the_type_not_the_message(exc, code):
    err = protocol.wire_error(exc)
    assert (err.code, err.message) == (code, str(exc))


def _beyond(name: str):
    """A value just outside the setting's range."""
    lim = LIMITS[name]
    if lim.high is not None:
        return lim.high + 1
    return lim.low - 1


@pytest.mark.parametrize("name", sorted(LIMITS))
@pytest.mark.parametrize("how", ["range", "type"])
def test_request_parser_and_runtime_apply_the_same_table(name, how):
    value = _beyond(name) if how == "range" else "x"
    limits = Limits(max_tokens=1 << 21)        # the daemon's own cap above the table's
    with pytest.raises(BadSettings) as rt:
        GenerationSettings(**{name: value}).validate()
    with pytest.raises(RequestError) as wire:
        protocol.parse_request({"prompt": "hi", name: value}, limits)
    assert rt.value.field == name
    assert (wire.value.code, wire.value.message) == ("bad_request", str(rt.value))


def test_values_the_table_allows_pass_both_layers():
    limits = Limits(max_tokens=1 << 20)
    top = {n: lim.high for n, lim in LIMITS.items() if lim.high is not None}
    req = protocol.parse_request({"prompt": "hi", **top}, limits)   # seed 2**64-1 included
    assert req.settings == top
    assert req.generation == GenerationSettings(**top, stream=False).validate()


def test_the_daemons_caps_name_its_config_key():
    with pytest.raises(RequestError, match=r"max_tokens must be between 1 and 16 \(limits.max_tokens\), got 17"):
        protocol.parse_request({"prompt": "hi", "max_tokens": 17}, Limits(max_tokens=16))
    with pytest.raises(RequestError, match=r"at most 2 stop strings are allowed \(limits.max_stop_strings\)"):
        protocol.parse_request({"prompt": "hi", "stop": ["a", "b", "c"]}, Limits(max_stop_strings=2))


def test_validated_settings_are_checked_against_a_context_only():
    gs = GenerationSettings(max_tokens=50, temperature=0.5).validate()
    assert gs.fit(64) is gs
    with pytest.raises(BadSettings, match="max_tokens must be between 1 and the model's context of 40"):
        gs.fit(40)
    gs.temperature = -1.0                      # changed after validation: checked again
    with pytest.raises(BadSettings, match="temperature must be between 0 and 100"):
        gs.fit(64)
    with pytest.raises(BadSettings, match="top_k must be 0"):
        GenerationSettings(top_k=-2).fit(64)   # never validated: fit validates


def test_transports_take_peer_from_the_protocol_without_importing_the_service():
    code = ("import sys, bulletd.daemon.mqtt, bulletd.daemon.socket_server; "
            "assert 'bulletd.daemon.service' not in sys.modules, 'a transport imports the service'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    from bulletd.daemon import mqtt, service, socket_server
    assert mqtt.Peer is socket_server.Peer is service.Peer is protocol.Peer   # service uses it too
