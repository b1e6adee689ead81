"""Attacks of docs/SECURITY.md that no other test file covers: races on the model file while
bulletd verifies and maps it (TOCTOU), and path traversal through every name field a request or
an OTA message carries."""
import os
import time

import pytest

from _daemon_util import DaemonProc, make_child, make_keys, raw_request
from bulletd.daemon import registry as R
from bulletd.errors import RequestError
from bulletd.signing import TrustStore


@pytest.fixture
def signed(tmp_path):
    key, trust = make_keys(tmp_path)
    models = tmp_path / "models"
    models.mkdir()
    good = make_child(models, "good", key=key, seed=1)
    # the same name, version and size, other weights, unsigned: what an attacker wants served
    other = tmp_path / "other"
    other.mkdir()
    evil = make_child(other, "good", key=None, seed=2)
    assert evil.stat().st_size == good.stat().st_size
    return {"good": good, "evil": evil, "trust": TrustStore(trust), "models": models, "key": key,
            "trust_dir": trust}


def _race(monkeypatch, action):
    """Run `action` right after the signature check passed and before the file is mapped."""
    real = R.verify_trust

    def verify_then_race(path, **kw):
        out = real(path, **kw)
        action()
        return out
    monkeypatch.setattr(R, "verify_trust", verify_then_race)


def _open(path, trust):
    model, header, signer, closer = R.open_child(str(path), trust=trust, allow_unsigned=False)
    closer()
    return header


def test_untouched_signed_file_loads(signed):
    assert _open(signed["good"], signed["trust"])["provenance"]["name"] == "good"


def test_a_file_renamed_over_the_verified_one_is_refused(signed, monkeypatch):
    _race(monkeypatch, lambda: os.replace(signed["evil"], signed["good"]))
    with pytest.raises(RequestError, match="changed while it was being verified") as e:
        _open(signed["good"], signed["trust"])
    assert e.value.code == "untrusted"


def test_a_symlink_repointed_after_verification_is_refused(signed, monkeypatch):
    link = signed["models"] / "alias.bullet"
    link.symlink_to(signed["good"].name)
    (signed["models"] / "alias.bullet.sig").symlink_to(signed["good"].name + ".sig")

    def repoint():
        tmp = signed["models"] / ".alias.tmp"
        tmp.symlink_to(signed["evil"])
        os.replace(tmp, link)
    _race(monkeypatch, repoint)
    with pytest.raises(RequestError, match="changed while it was being verified"):
        _open(link, signed["trust"])


def test_bytes_written_in_place_with_the_mtime_set_back_are_refused(signed, monkeypatch):
    """Same inode, same size, same mtime: only the ctime tells (the owner of a file may set
    its mtime with utime, never its ctime)."""
    good = signed["good"]

    def overwrite():
        st = good.stat()
        time.sleep(0.01)
        with open(good, "r+b") as f:
            f.write(signed["evil"].read_bytes())
        os.utime(good, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert good.stat().st_mtime_ns == st.st_mtime_ns and good.stat().st_ino == st.st_ino
    _race(monkeypatch, overwrite)
    with pytest.raises(RequestError, match="changed while it was being verified"):
        _open(good, signed["trust"])


TRAVERSALS = ["../good", "..", "a/../../good", "/etc/passwd", "good\x00x", "..\\good", ".hidden", "g" * 65]


def test_path_traversal_in_every_name_field_is_refused(tmp_path, signed):
    """Every request field that names a child, read or admin (this test is an admin peer),
    refuses a path-like name with bad_request before any file is touched; nothing outside the
    model dir is loaded, written or removed. (OTA manifest names, device ids and group names:
    tests/test_ota_units.py, test_manifest_checks_refuse_unsafe_names_and_unknown_keys and
    test_topic_words_refuse_wildcards.)"""
    bait = tmp_path / "good.bullet"                       # one level up from the model dir
    bait.write_bytes(signed["good"].read_bytes())
    (tmp_path / "good.bullet.sig").write_bytes(signed["good"].with_suffix(".bullet.sig").read_bytes())
    before = sorted(p.name for p in tmp_path.rglob("*"))
    trust_dir = next(tmp_path.glob("test-trusted"))
    (tmp_path / "run").mkdir()
    d = DaemonProc(tmp_path / "run", {"model_dir": str(signed["models"]), "trust": {"keys": [str(trust_dir)]},
                                      "device_id": "t1"})
    d.start()
    try:
        for bad in TRAVERSALS:
            requests = [{"op": "generate", "child": bad, "prompt": "x", "max_tokens": 1},
                        {"op": "route", "child": bad, "prompt": "x"},
                        {"op": "load", "name": "good", "as": bad},
                        {"op": "unload", "name": bad},
                        {"op": "swap", "name": bad, "path": str(bait)},
                        {"op": "rollback", "name": bad}]
            if "/" not in bad and bad:
                requests.append({"op": "load", "name": bad})          # a bare name: looked up in model_dir
            for req in requests:
                (final,) = [r for r in raw_request(d.sock, req) if r.get("final")]
                assert final["ok"] is False, (req, final)
                code = final["error"]["code"]
                assert code == "bad_request" or (code == "unknown_child" and bad == ".hidden"), (req, final)
        (final,) = raw_request(d.sock, {"op": "list"})
        assert [(c["name"], c["path"]) for c in final["children"]] == [("good", str(signed["good"]))], final
        (final,) = raw_request(d.sock, {"op": "generate", "child": "good", "prompt": "x", "max_tokens": 1})
        assert final["ok"] is True
    finally:
        d.stop()
    after = sorted(p.name for p in tmp_path.rglob("*") if "run" not in p.parts)
    assert after == before


def test_the_threat_model_names_only_tests_that_exist():
    """docs/SECURITY.md cites each mitigation's test as file::function: every one must exist."""
    import re
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    refs = set(re.findall(r"`(test_\w+\.py)::(test_\w+)`", (root / "docs" / "SECURITY.md").read_text()))
    assert len(refs) > 40
    missing = [f"{f}::{fn}" for f, fn in sorted(refs)
               if not re.search(rf"^(async )?def {fn}\(", (root / "tests" / f).read_text(), re.M)]
    assert missing == []


def test_a_symlink_repointed_out_of_the_model_dir_after_the_scan_is_not_loaded(signed, tmp_path):
    """scan() skips symlinks that lead out of the model dir; one re-pointed after the scan to a
    file outside (here one that even carries a trusted signature, as an older version would) is
    refused when it is loaded, and the daemon keeps serving."""
    models = signed["models"]
    outside = make_child(tmp_path / "other", "alias", key=signed["key"], seed=3)
    (models / "alias.bullet").symlink_to("good.bullet")
    (models / "alias.bullet.sig").symlink_to("good.bullet.sig")
    (tmp_path / "run").mkdir()
    d = DaemonProc(tmp_path / "run", {"model_dir": str(models), "trust": {"keys": [str(signed["trust_dir"])]},
                                      "device_id": "t1", "registry": {"preload": False}})
    d.start()
    try:
        (final,) = raw_request(d.sock, {"op": "list"})
        assert sorted(c["name"] for c in final["children"]) == ["alias", "good"]
        for suffix in ("", ".sig"):
            tmp = models / f".re{suffix}"
            tmp.symlink_to(f"{outside}{suffix}")
            os.replace(tmp, models / f"alias.bullet{suffix}")
        (final,) = [r for r in raw_request(d.sock, {"op": "generate", "child": "alias", "prompt": "x",
                                                     "max_tokens": 1}) if r.get("final")]
        assert final["ok"] is False and final["error"]["code"] == "untrusted", final
        assert "outside the model dir" in final["error"]["message"]
        (final,) = [r for r in raw_request(d.sock, {"op": "generate", "child": "good", "prompt": "x",
                                                     "max_tokens": 1}) if r.get("final")]
        assert final["ok"] is True
    finally:
        d.stop()
