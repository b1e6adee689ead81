"""Child names follow one rule (bulletd.names) in every part that takes one: the daemon's request
parser, the registry's scan of the model directory, the OTA receiver's manifest check, the
client and `bullet eval`'s model directory. Each part is driven through its own entry point, so
a part that grows its own copy of the rule, and lets it drift, fails here."""
from __future__ import annotations

import pytest

from bulletd.client import DaemonError, _child
from bulletd.daemon.config import LimitsConfig
from bulletd.daemon.protocol import parse_request
from bulletd.daemon.registry import Registry
from bulletd.errors import RequestError
from bulletd.names import name_problem
from bulletd.ota import OtaConfig, OtaError, OtaReceiver
from bulletd.signing import TrustStore, load_private_key, read_signature, sign_manifest
from _ota_util import Keys, make_child

# names a file can have: the model directory's scan sees them
FILE_NAMES = ["kid", "a+b", "v1.2_x-y", "A", "9lives", "a" * 64, "a" * 65, "a..b", "-a", ".a",
              "_a", "+a", "a b", "a*b", "a#b", "ä"]
# names only a request or a manifest can carry
OTHER_NAMES = ["", "a/b", "../x", "x\\y", "a\x00b", 7, None]


def _daemon_accepts(name) -> bool:
    try:
        parse_request({"op": "route", "prompt": "x", "child": name}, LimitsConfig())
        return True
    except RequestError as exc:
        assert exc.code == "bad_request"
        return False


def _client_accepts(name) -> bool:
    try:
        _child(name)
        return True
    except DaemonError as exc:
        assert exc.code == "bad_request"
        return False


@pytest.fixture(scope="module")
def ota(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("names")
    keys = Keys(tmp)
    rx = OtaReceiver(OtaConfig(device="d"), TrustStore(keys.trust), tmp / "m", tmp / "ota",
                     smoke=lambda p: {})
    f = make_child(tmp / "kid.bullet", keys.key)
    manifest = read_signature(str(f) + ".sig")["manifest"]
    key = load_private_key(keys.key)

    def accepts(name) -> bool:
        try:
            rx._check_manifest(sign_manifest(dict(manifest, name=name), key))
            return True
        except OtaError as exc:
            assert exc.reason == "bad_offer", exc
            return False
    return accepts


@pytest.mark.parametrize("name", FILE_NAMES + OTHER_NAMES)
def test_daemon_client_and_ota_agree_on_names(name, ota):
    rule = name is not None and name_problem(name) is None
    if name is None or name == "":
        # "no child" in a request (route through the mother), not a name
        assert _daemon_accepts(name)
    else:
        assert _daemon_accepts(name) == rule
    if name is not None and name != "":
        assert _client_accepts(name) == rule
    if name is not None:
        assert ota(name) == rule
    assert _client_accepts(None) and _client_accepts("")    # no name: the mother routes


def test_the_rule_takes_plus_and_refuses_double_dots_everywhere(ota):
    for accepts in (_daemon_accepts, _client_accepts, ota):
        assert accepts("a+b")
        assert not accepts("a..b")
        assert not accepts("a" * 65)


def test_registry_and_eval_scan_the_same_names(tmp_path):
    from bulletd.evaluate.core import Models
    for n in FILE_NAMES:
        (tmp_path / f"{n}.bullet").write_bytes(b"")
    reg = Registry(model_dir=tmp_path, trust=None, allow_unsigned=True, budget_bytes=1 << 30,
                   keep_alive=0, load_on_demand=True, unload_timeout=1, mother_path=None)
    want = {n for n in FILE_NAMES if name_problem(n) is None and not n.startswith(".")}
    assert set(reg.scan()) == want
    assert set(Models(tmp_path).paths) == want
