"""Ed25519 signatures over whole files, the trust store, and the `bullet` command."""
import json
import os
import stat
import subprocess
import sys

import pytest

from bulletd.errors import TrustError
from bulletd.signing import (TrustStore, generate_keypair, make_manifest, sign_file, sign_manifest,
                             load_private_key, verify_file, verify_manifest)
from _format_util import micro_file, tiny_file


@pytest.fixture
def keys(tmp_path):
    return generate_keypair("dev", tmp_path / "keys")


@pytest.fixture
def signed(tmp_path, keys):
    f = micro_file(tmp_path / "m.bullet", name="tiny")
    sign_file(f, keys[0])
    return f


def test_keygen_writes_private_key_only_owner_can_read(keys):
    priv, pub = keys
    assert stat.S_IMODE(os.stat(priv).st_mode) == 0o600
    pem_kind = lambda p: p.read_text().splitlines()[0].strip("-").split(" ", 1)[1]   # "-----BEGIN X-----" -> X
    assert pem_kind(priv) == "PRIVATE " + "KEY" and pem_kind(pub) == "PUBLIC KEY"
    with pytest.raises(TrustError, match="refusing to overwrite"):
        generate_keypair("dev", priv.parent)


def test_sign_and_verify(signed, keys):
    m = verify_file(signed, keys[1])
    assert m["name"] == "tiny" and m["size"] == signed.stat().st_size
    assert verify_file(signed, keys[1].parent)["sha256"] == m["sha256"]   # directory trust store


def test_tampering_with_any_single_byte_is_caught(signed, keys):
    trust = TrustStore(keys[1])
    raw = signed.read_bytes()
    fd = os.open(signed, os.O_RDWR)
    try:
        for i in range(len(raw)):
            os.pwrite(fd, bytes([raw[i] ^ 0x01]), i)
            with pytest.raises(TrustError) as e:
                verify_file(signed, trust)
            assert e.value.code == "hash_mismatch"
            os.pwrite(fd, raw[i:i + 1], i)
    finally:
        os.close(fd)
    assert verify_file(signed, trust)["size"] == len(raw)


def test_unknown_key_bad_signature_and_unsigned(signed, tmp_path, keys):
    other = generate_keypair("other", tmp_path / "other")
    with pytest.raises(TrustError, match="not in the trust store") as e:
        verify_file(signed, other[1])
    assert e.value.code == "unknown_key"
    sig = json.loads((signed.parent / (signed.name + ".sig")).read_text())
    sig["manifest"]["version"] = "9.9.9"
    (signed.parent / (signed.name + ".sig")).write_text(json.dumps(sig))
    with pytest.raises(TrustError, match="does not verify") as e:
        verify_file(signed, keys[1])
    assert e.value.code == "bad_signature"
    os.unlink(str(signed) + ".sig")
    with pytest.raises(TrustError, match="no signature") as e:
        verify_file(signed, keys[1])
    assert e.value.code == "unsigned"


def test_truncated_or_extended_file_is_a_size_mismatch(signed, keys):
    signed.write_bytes(signed.read_bytes() + b"x")
    with pytest.raises(TrustError) as e:
        verify_file(signed, keys[1])
    assert e.value.code == "size_mismatch"


def test_manifest_can_be_checked_before_download(signed, keys):
    sm = sign_manifest(make_manifest(signed), load_private_key(keys[0]))
    assert verify_manifest(sm, TrustStore(keys[1]))["sha256"] == sm["manifest"]["sha256"]
    sm["manifest"]["size"] += 1
    with pytest.raises(TrustError):
        verify_manifest(sm, TrustStore(keys[1]))


def test_openssl_reads_the_keys(keys):
    if not os.path.exists("/usr/bin/openssl"):
        pytest.skip("openssl is not installed")
    out = subprocess.run(["openssl", "pkey", "-in", str(keys[0]), "-noout", "-text"], capture_output=True, text=True)
    assert out.returncode == 0 and "ED25519" in out.stdout.upper()


def _bullet(*args):
    return subprocess.run([sys.executable, "-m", "bulletd.cli_bullet", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_bullet_command_keygen_sign_verify_inspect(tmp_path):
    f = tiny_file(tmp_path / "c.bullet", name="cli")
    r = _bullet("keygen", "k", "--dir", tmp_path)
    assert r.returncode == 0, r.stderr
    assert _bullet("sign", f, "--key", tmp_path / "k.key").returncode == 0
    r = _bullet("verify", f, "--trust", tmp_path / "k.pub.pem")
    assert r.returncode == 0 and r.stdout.startswith("OK: cli"), r.stderr
    r = _bullet("inspect", f, "--json", "--trust", tmp_path)
    info = json.loads(r.stdout)
    assert info["name"] == "cli" and info["checksum"] == "ok" and info["signature"].endswith("(valid)")
    assert any(t["name"] == "blk.0.wq" and t["dtype"] == "bq4" for t in info["tensors"])
    b = bytearray(f.read_bytes())
    b[-30] ^= 0xFF
    f.write_bytes(bytes(b))
    r = _bullet("verify", f, "--trust", tmp_path / "k.pub.pem")
    assert r.returncode != 0 and "hash_mismatch" in r.stderr
    r = _bullet("verify", tmp_path / "missing.bullet", "--trust", tmp_path / "k.pub.pem")
    assert r.returncode == 1 and "missing.bullet: no such file" in r.stderr
    assert ".sig" not in r.stderr and "Errno" not in r.stderr


def test_bullet_sign_with_a_public_key_leaves_the_signature_alone(tmp_path, keys):
    f = tiny_file(tmp_path / "c.bullet", name="cli")
    sig = sign_file(f, keys[0])
    before = sig.read_bytes()
    for bad in (keys[1], tmp_path / "nokey.key", f):   # public key, no file, not a key
        r = _bullet("sign", f, "--key", bad)
        assert r.returncode == 1 and "[bad_key]" in r.stderr and "Traceback" not in r.stderr
        assert sig.read_bytes() == before
    assert "is a public key; signing needs the private key" in _bullet("sign", f, "--key", keys[1]).stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.bullet", "c.bullet.sig", "keys"]


def test_model_output_replaces_file_and_sig_only_when_both_are_whole(tmp_path, keys):
    """ModelOutput: a bad key writes nothing; a failure while writing keeps the old pair; success
    replaces the file and its .sig together; an unsigned file drops the .sig it would contradict."""
    from bulletd.signing import ModelOutput
    f = micro_file(tmp_path / "m.bullet", name="tiny")
    sign_file(f, keys[0])
    old = (f.read_bytes(), (tmp_path / "m.bullet.sig").read_bytes())

    def pair():
        return f.read_bytes(), (tmp_path / "m.bullet.sig").read_bytes()
    with pytest.raises(TrustError, match="is a public key"):
        ModelOutput(f, keys[1])
    with pytest.raises(RuntimeError, match="half way"):
        with ModelOutput(f, keys[0]) as out:
            out.tmp.write_bytes(b"half a file")
            raise RuntimeError("half way")
    assert pair() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys", "m.bullet", "m.bullet.sig"]
    with ModelOutput(f, keys[0], name="tiny", version="2") as out:
        tiny_file(out.tmp, name="tiny", version="2")
    assert pair() != old and verify_file(f, TrustStore(keys[1]))["version"] == "2"
    with ModelOutput(f) as out:                         # unsigned over signed
        tiny_file(out.tmp, name="tiny", version="3")
    assert out.removed_sig and not (tmp_path / "m.bullet.sig").exists()
    with pytest.raises(TrustError, match="output folder .* does not exist"):
        ModelOutput(tmp_path / "no" / "x.bullet")


def test_bullet_output_closed_early_ends_quietly(tmp_path):
    """`bullet inspect FILE | head`: the reader leaves; no traceback, no error line, status 141."""
    f = tiny_file(tmp_path / "c.bullet", name="cli")
    p = subprocess.Popen([sys.executable, "-m", "bulletd.cli_bullet", "inspect", str(f)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()                                    # the reader is gone before the first line
    err = p.stderr.read().decode()
    assert p.wait(60) == 141 and err == ""
