"""Unit tests: daemon config parsing and the request protocol (no processes)."""
import json
from pathlib import Path

import msgpack
import pytest

from bulletd.daemon.config import Config, ConfigError, load_config, override
from bulletd.daemon.protocol import (CT_JSON, CT_MSGPACK, check_name, decode_payload, encode_payload,
                                     parse_request, reply_id)
from bulletd.errors import RequestError

LIMITS = Config().limits


def test_zero_config_defaults_are_socket_only_and_refuse_unsigned():
    cfg = load_config(None)
    assert cfg.mqtt.host == ""
    assert cfg.trust.allow_unsigned is False
    assert cfg.socket.mode == 0o660
    assert cfg.workers >= 1 and cfg.max_queue == 4 * cfg.workers
    assert cfg.mqtt_client_id == f"bulletd-{cfg.device}"


def test_yaml_file_sets_nested_keys_and_octal_modes(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("device_id: pi7\nsocket:\n  mode: '0640'\n  admin_uids: [1000]\n"
                 "mqtt:\n  host: broker.lan\n  port: 8883\n  tls: {enabled: true, ca_file: /etc/ca.pem}\n"
                 "  fleet: {enabled: true, group: kitchen}\nregistry: {memory_budget_mb: 12, keep_alive: 30}\n")
    cfg = load_config(p)
    assert cfg.device == "pi7" and cfg.socket.mode == 0o640 and cfg.socket.admin_uids == (1000,)
    assert cfg.mqtt.tls.enabled and cfg.mqtt.tls.ca_file == "/etc/ca.pem" and cfg.mqtt.port == 8883
    assert cfg.mqtt.fleet.group == "kitchen"
    assert cfg.registry.memory_budget_mb == 12.0 and cfg.registry.keep_alive == 30.0


@pytest.mark.parametrize("text, needle", [
    ("mqtt:\n  hots: x\n", "mqtt: unknown key(s) hots"),
    ("mqtt:\n  port: seventy\n", "mqtt.port: expected an integer, found 'seventy'"),
    ("mqtt:\n  port: 70000\n", "mqtt.port: expected 1 .. 65535, found 70000"),
    ("registry:\n  unload_mode: maybe\n", "registry.unload_mode: expected wait or cancel"),
    ("trust:\n  allow_unsigned: yes please\n", "trust.allow_unsigned: expected true or false"),
    ("- a\n- b\n", "expected a mapping at the top, found list"),
    ("device_id: a/b\n", "device_id: expected a name without / + #"),
    ("mqtt: {prefix: 'bullet/#'}\n", "mqtt.prefix: expected a topic prefix without wildcards"),
    ("log_level: loud\n", "log_level: expected debug / info / warning / error, found 'loud'"),
    ("a: [unclosed\n", "is not valid YAML"),
])
def test_bad_config_names_key_expected_and_found(tmp_path, text, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert needle in str(e.value)
    assert str(p) in str(e.value)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_override_replaces_dotted_keys_and_validates():
    cfg = override(Config(), **{"mqtt.host": "h", "mqtt.port": 1884, "trust.allow_unsigned": True})
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.trust.allow_unsigned) == ("h", 1884, True)
    with pytest.raises(ConfigError, match="mqtt.port"):
        override(Config(), **{"mqtt.port": 0})


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "..", "x\\y", "", ".hidden", "a" * 65, "a b"])
def test_child_names_with_paths_or_dots_are_rejected(name):
    with pytest.raises(RequestError) as e:
        check_name(name)
    assert e.value.code == "bad_request"
    assert "not a valid name" in e.value.message


def test_decode_payload_by_content_type_and_sniffing():
    m = {"prompt": "hi", "max_tokens": 3}
    assert decode_payload(msgpack.packb(m), None) == (m, CT_MSGPACK)
    assert decode_payload(json.dumps(m).encode(), None) == (m, CT_JSON)
    assert decode_payload(json.dumps(m).encode(), "application/json") == (m, CT_JSON)
    with pytest.raises(RequestError, match="not valid JSON"):
        decode_payload(b"{nope", None)
    with pytest.raises(RequestError, match="not valid msgpack"):
        decode_payload(b"\xc1\xc1", None)
    with pytest.raises(RequestError, match="expected a map as the request, found list"):
        decode_payload(msgpack.packb([1, 2]), None)
    assert json.loads(encode_payload({"a": b"\x01"}, CT_JSON)) == {"a": "01"}


@pytest.mark.parametrize("obj, code, needle", [
    ({"op": "frobnicate"}, "bad_request", "op: expected one of"),
    ({"prompt": 5}, "bad_request", "prompt: expected a string, found int"),
    ({}, "bad_request", "prompt: missing"),
    ({"prompt": "x", "max_tokens": "ten"}, "bad_request", "max_tokens must be an integer, got str 'ten'"),
    ({"prompt": "x", "max_tokens": 10**9}, "bad_request", "max_tokens must be between 1 and 2048 (limits.max_tokens)"),
    ({"prompt": "x", "max_tokens": 2.5}, "bad_request", "max_tokens must be an integer, got 2.5"),
    ({"prompt": "x", "temperature": float("nan")}, "bad_request", "temperature must be finite"),
    ({"prompt": "x", "temperature": -1}, "bad_request", "temperature must be between 0 and 100"),
    ({"prompt": "x", "top_p": 0}, "bad_request", "top_p must be in (0, 1]"),
    ({"prompt": "x", "stop": [1]}, "bad_request", "stop[0] must be a string, got int"),
    ({"prompt": "x", "stream": "yes"}, "bad_request", "stream: expected true or false"),
    ({"prompt": "x", "deadline": -3}, "bad_request", "deadline: expected seconds > 0"),
    ({"prompt": "x", "child": "../x"}, "bad_request", "not a valid name"),
    ({"prompt": "x", "reply_to": "a/#"}, "bad_request", "not a publishable topic"),
    ({"prompt": "x" * (LIMITS.max_prompt_chars + 1)}, "too_long", "limits.max_prompt_chars"),
    # JSON integers of any size (found by python -m bulletd.fuzz request: OverflowError, internal)
    ({"prompt": "x", "deadline": 10**400}, "bad_request", "deadline: expected seconds > 0"),
    ({"prompt": "x", "max_tokens": 10**400}, "bad_request", "max_tokens must be between 1 and 2048 (limits.max_tokens), got an integer of more than 30 digits"),
    ({"prompt": "x", "temperature": -10**400}, "bad_request", "temperature must be between 0 and 100 (0 = greedy), got an integer of more than 30 digits"),
    ({"prompt": "x", "seed": 10**309}, "bad_request", "seed must be between 0 and 2**64-1, got an integer of more than 30 digits"),
    ({"prompt": "x", "id": 1 << 64}, "bad_request", "id: expected an integer that fits 64 bits"),
    ({"prompt": "x", "id": -(1 << 63) - 1}, "bad_request", "id: expected an integer that fits 64 bits"),
    ({"prompt": "x", "id": "i" * 129}, "bad_request", "id: expected at most 128 characters"),
])
def test_parse_request_rejects_with_stable_code(obj, code, needle):
    with pytest.raises(RequestError) as e:
        parse_request(obj, LIMITS)
    assert e.value.code == code
    assert needle in e.value.message


@pytest.mark.parametrize("rid, kinds, echoed", [
    (7, (str, int, bytes), 7), ("a", (str, int), "a"), (b"k", (str, int, bytes), b"k"), (b"k", (str, int), None),
    ((1 << 64) - 1, (str, int), (1 << 64) - 1), (-(1 << 63), (str, int), -(1 << 63)),
    (1 << 64, (str, int, bytes), None), (-(1 << 63) - 1, (str, int), None), (10**400, (str, int), None),
    ("i" * 129, (str, int), None), (2.5, (str, int), None), ([1], (str, int), None)])
def test_a_reply_carries_the_id_only_when_every_encoding_can(rid, kinds, echoed):
    # found by python -m bulletd.fuzz request: a JSON id of 40 digits made the msgpack reply raise
    assert reply_id({"id": rid}, kinds) == echoed
    reply = {"ok": False, "final": True, "id": reply_id({"id": rid}, kinds), "seq": 0}
    for ct in (CT_JSON, CT_MSGPACK) if bytes not in kinds else (CT_MSGPACK,):
        encode_payload(reply, ct)
    assert reply_id([rid]) is None


def test_top_k_beyond_any_vocabulary_means_no_limit(tmp_path):
    """msgpack carries integers up to 2**64-1: a top_k past the C++ sampler's integer once
    surfaced as an internal error; any top_k larger than the vocabulary keeps every token."""
    from _format_util import micro_file
    from bulletd.runtime import GenerationSettings, load_model
    with load_model(micro_file(tmp_path / "m.bullet")) as m:
        texts = []
        for k in (2**64 - 1, 2**63, 0):
            r = parse_request({"prompt": "ab", "top_k": k, "seed": 5, "max_tokens": 4, "temperature": 0.9}, LIMITS)
            texts.append("".join(m.generate(r.prompt, GenerationSettings(**r.settings))))
    assert texts[0] == texts[1] == texts[2]


def test_parse_request_accepts_full_generate():
    r = parse_request({"id": 7, "child": "stories", "prompt": "hi", "max_tokens": 5, "temperature": 0,
                       "top_k": 0, "top_p": 1.0, "seed": 3, "stop": "END", "stream": True, "deadline": 2},
                      LIMITS)
    assert (r.op, r.id, r.child, r.stream, r.deadline) == ("generate", 7, "stories", True, 2.0)
    assert r.settings == {"max_tokens": 5, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 3, "stop": ("END",)}


def test_journal_lines_carry_the_syslog_priority():
    import logging
    from bulletd.daemon.lifecycle import JournalFormatter
    f = JournalFormatter("%(message)s")
    rec = logging.LogRecord("bulletd.mqtt", logging.WARNING, __file__, 1, "lost\nsecond line", None, None)
    assert f.format(rec) == "<4>bulletd.mqtt: lost\n<4>bulletd.mqtt: second line"
    rec = logging.LogRecord("bulletd", logging.INFO, __file__, 1, "ready", None, None)
    assert f.format(rec) == "<6>bulletd: ready"


def test_notifier_speaks_to_an_abstract_socket_and_honours_watchdog_pid():
    import os
    import socket
    from bulletd.daemon.lifecycle import Notifier
    name = f"bulletd-test-{os.getpid()}"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind("\0" + name)
    rx.settimeout(2)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())})
        assert n.enabled and n.watchdog_period == 2.0
        assert n.ready("serving")
        assert rx.recv(100).decode() == f"READY=1\nSTATUS=serving\nMAINPID={os.getpid()}"
        n.close()
    finally:
        rx.close()
    assert Notifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}).watchdog_period is None
    off = Notifier({})
    assert not off.enabled and off.notify("READY=1") is False


def test_socket_path_defaults(monkeypatch, tmp_path):
    from bulletd.daemon import config as c
    monkeypatch.setenv("BULLETD_SOCKET", str(tmp_path / "x.sock"))
    assert c.default_socket_path() == c.client_socket_path() == str(tmp_path / "x.sock")
    monkeypatch.delenv("BULLETD_SOCKET")
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path))
    assert c.default_socket_path() == str(tmp_path / "bulletd.sock")
    monkeypatch.delenv("RUNTIME_DIRECTORY")
    monkeypatch.setattr(c.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    own = str(tmp_path / "run" / "bulletd.sock")
    assert c.default_socket_path() == own
    monkeypatch.setattr(c, "SYSTEM_SOCKET", str(tmp_path / "system.sock"))
    assert c.client_socket_path() == own                        # nothing exists: name the user's
    (tmp_path / "system.sock").touch()
    assert c.client_socket_path() == str(tmp_path / "system.sock")   # the system service's


from hypothesis import given, settings, strategies as st

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                     st.text(max_size=40), st.binary(max_size=20))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                       max_leaves=8)
_keys = st.sampled_from(["op", "id", "child", "prompt", "max_tokens", "temperature", "top_k", "top_p",
                         "repetition_penalty", "seed", "stop", "stream", "deadline", "reply_to", "name", "path"])


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=8))
def test_any_request_map_parses_or_gets_a_request_error(obj):
    try:
        r = parse_request(obj, LIMITS)
    except RequestError as e:
        assert e.code in ("bad_request", "too_long") and e.message
        return
    assert r.op in ("generate", "route", "list", "status", "ping", "children", "load", "unload", "reload",
                    "swap", "rollback", "install")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([None, "application/json", "application/msgpack", "text/plain"]))
def test_any_payload_decodes_or_gets_bad_request(data, ct):
    try:
        obj, out_ct = decode_payload(data, ct)
    except RequestError as e:
        assert e.code == "bad_request"
        return
    assert isinstance(obj, dict) and out_ct in (CT_JSON, CT_MSGPACK)


def test_tools_section_and_a_malformed_home_file(tmp_path):
    from bulletd.daemon.config import ConfigError, load_config
    from bulletd.daemon.main import main
    home = tmp_path / "home.yaml"
    home.write_text("areas: [{id: kitchen, names: [kitchen]}]\nentities:\n"
                    "  - {id: light.k, area: kitchn, names: [k], command_topic: z/k/set}\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"tools:\n  home:\n    file: {home}\n    act: true\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert "tools.home.file" in str(e.value) and "entities[0] (light.k).area (line 3)" in str(e.value)
    assert main(["--check-config", "--config", str(cfg)]) == 2
    home.write_text(home.read_text().replace("kitchn", "kitchen"))
    c = load_config(cfg)
    assert c.tools.home.act is True and c.tools.home.max_actions_per_minute == 30 and not c.tools.home.discovery
    for bad, words in (("tools: {home: {max_actions_per_minute: 0}}", "max_actions_per_minute"),
                       ("tools: {home: {acting: true}}", "unknown key"),
                       ("tools: {calc: {precision: 3}}", r"tools\.calc: unknown key\(s\) precision; expected one of route_sums"),
                       ("tools: {home: {discovery_prefix: 'ha/#'}}", "discovery_prefix")):
        cfg.write_text(bad)
        with pytest.raises(ConfigError, match=words):
            load_config(cfg)


def test_every_error_code_a_reply_can_carry_is_stable_and_documented():
    """The codes install answers with (the OTA reasons), exists, and every ERROR_CODES entry
    appear in DAEMON.md's tables; the docs' client examples name shipped children."""
    import re
    from pathlib import Path
    from bulletd.daemon.protocol import ERROR_CODES
    from bulletd.ota.protocol import REASONS
    root = Path(__file__).resolve().parent.parent
    doc = (root / "docs" / "DAEMON.md").read_text()
    reachable = set(REASONS) - {"busy", "timeout"} | {"exists"}   # busy/timeout: push states only
    assert reachable <= set(ERROR_CODES), sorted(reachable - set(ERROR_CODES))
    assert [c for c in ERROR_CODES if f"`{c}`" not in doc] == []
    named = set(re.findall(r'child="([^"]+)"', doc)) | set(re.findall(r'"child": "([^"]+)"', doc))
    named.discard("nosuch")                                  # the unknown_child example
    assert named and all((root / "child_models" / f"{n}.bullet").exists() for n in named), named


def test_the_home_flag_sets_the_home_file_and_a_bad_one_exits_2(tmp_path, capsys):
    from bulletd.daemon.main import main
    example = Path(__file__).resolve().parent.parent / "examples" / "home.yaml"
    assert main(["--check-config", "--home", str(example)]) == 0
    assert json.loads(capsys.readouterr().out)["tools"]["home"]["file"] == str(example)
    bad = tmp_path / "home.yaml"
    bad.write_text("areas: [{id: kitchen, names: [kitchen]}]\nentities:\n"
                   "  - {id: light.k, area: kitchn, names: [k], command_topic: z/k/set}\n")
    assert main(["--check-config", "--home", str(bad)]) == 2
    said = capsys.readouterr()
    assert "tools.home.file" in said.err + said.out
