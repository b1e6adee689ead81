"""Ed25519 signing of .bullet files through detached signed manifests (FILE.sig), and the trust store.

A manifest names the file (name, version), its exact size and SHA-256, the signing key's id and
a creation time; the signature covers the manifest's canonical JSON, so it covers every byte of
the file through the hash. A manifest can be checked before a large download starts (OTA).

Keys are PEM: PKCS#8 private keys (written 0600) and SubjectPublicKeyInfo public keys, so
`openssl pkey -in KEY -text` reads both. key_id = first 16 hex digits of SHA-256(raw public key).
"""
from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import os
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import TrustError

SIG_SUFFIX = ".sig"
MANIFEST_KEYS = ("name", "version", "size", "sha256", "key_id", "created")
MAX_SIG_BYTES = 64 << 10


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(name: str, directory: str | os.PathLike = ".") -> tuple[Path, Path]:
    """Write NAME.key (private, mode 0600) and NAME.pub.pem (public) into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = directory / f"{name}.key", directory / f"{name}.pub.pem"
    if priv_path.exists():
        raise TrustError(f"{priv_path} already exists; refusing to overwrite a private key", "exists")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv_path, pub_path


def _key_kind(key) -> str:
    return type(key).__name__.replace("PrivateKey", "").replace("PublicKey", "") or "other"


def load_private_key(path: str | os.PathLike) -> Ed25519PrivateKey:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise TrustError(f"private key {path} does not exist", "bad_key") from None
    except OSError as exc:
        raise TrustError(f"cannot read the private key {path}: {exc.strerror or exc}", "bad_key") from None
    if b"-----BEGIN PUBLIC KEY-----" in data:
        raise TrustError(f"{path} is a public key; signing needs the private key (the NAME.key file "
                         "that `bullet keygen` wrote)", "bad_key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise TrustError(f"{path} is not a PEM private key without a password (make one with "
                         "`bullet keygen NAME`)", "bad_key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise TrustError(f"{path} is a {_key_kind(key)} key, not an Ed25519 key", "bad_key")
    return key


def load_public_key(path: str | os.PathLike) -> Ed25519PublicKey:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise TrustError(f"public key {path} does not exist", "bad_key") from None
    except OSError as exc:
        raise TrustError(f"cannot read the public key {path}: {exc.strerror or exc}", "bad_key") from None
    if b"PRIVATE KEY-----" in data:
        raise TrustError(f"{path} is a private key; trust needs the public key (NAME.pub.pem)", "bad_key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise TrustError(f"{path} is not a PEM public key", "bad_key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise TrustError(f"{path} is a {_key_kind(key)} key, not an Ed25519 key", "bad_key")
    return key


class TrustStore:
    """Public keys the device trusts: a PEM file or a directory of *.pem files."""

    def __init__(self, path: str | os.PathLike | None = None, keys: list[Ed25519PublicKey] | None = None):
        self.keys: dict[str, Ed25519PublicKey] = {}
        self.sources: dict[str, str] = {}
        for k in keys or []:
            self.keys[key_id(k)] = k
        if path is not None:
            p = Path(path)
            if p.is_dir():
                files = sorted(p.glob("*.pem"))
            elif p.is_file():
                files = [p]
            else:
                raise TrustError(f"trust store {p} does not exist", "no_trust_store")
            for f in files:
                k = load_public_key(f)
                kid = key_id(k)
                self.keys[kid] = k
                self.sources[kid] = f.name
        self.path = path

    def find(self, kid: str) -> Ed25519PublicKey | None:
        return self.keys.get(kid)

    def __len__(self) -> int:
        return len(self.keys)


def file_sha256(path: str | os.PathLike) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def make_manifest(path: str | os.PathLike, name: str | None = None, version: str | None = None) -> dict:
    """Manifest of a file: name and version default to the .bullet header's provenance."""
    if name is None or version is None:
        from .format import BulletFile
        with BulletFile.open(path) as bf:
            name = bf.name if name is None else name
            version = bf.version if version is None else version
    sha, size = file_sha256(path)
    return {"name": str(name), "version": str(version), "size": size, "sha256": sha,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def sign_manifest(manifest: dict, key: Ed25519PrivateKey) -> dict:
    m = {k: v for k, v in manifest.items() if k != "key_id"}
    m["key_id"] = key_id(key.public_key())
    return {"manifest": m, "signature": base64.b64encode(key.sign(canonical_json(m))).decode("ascii")}


def verify_manifest(signed, trust: TrustStore) -> dict:
    """Check a signed manifest's form and signature; returns the manifest. TrustError otherwise."""
    if not isinstance(signed, dict) or not isinstance(signed.get("manifest"), dict):
        raise TrustError("signature document must be an object with a 'manifest' object", "bad_signature")
    m = signed["manifest"]
    for k in MANIFEST_KEYS:
        if k not in m:
            raise TrustError(f"manifest lacks '{k}'", "bad_signature")
    if not isinstance(m["size"], int) or isinstance(m["size"], bool) or m["size"] < 0:
        raise TrustError(f"manifest size {m['size']!r} is not a byte count", "bad_signature")
    if not isinstance(m["sha256"], str) or len(m["sha256"]) != 64:
        raise TrustError("manifest sha256 is not 64 hex digits", "bad_signature")
    try:
        sig = base64.b64decode(signed.get("signature", ""), validate=True)
    except (ValueError, TypeError) as exc:
        raise TrustError(f"signature is not valid base64: {exc}", "bad_signature") from exc
    pub = trust.find(str(m["key_id"]))
    if pub is None:
        raise TrustError(f"signed by key {m['key_id']}, which is not in the trust store", "unknown_key")
    try:
        pub.verify(sig, canonical_json(m))
    except InvalidSignature:
        raise TrustError(f"signature of {m['name']} {m['version']} does not verify with key {m['key_id']}",
                         "bad_signature") from None
    return m


def _write_signature(path: Path, sig_path: Path, key: Ed25519PrivateKey, name: str | None,
                     version: str | None) -> None:
    signed = sign_manifest(make_manifest(path, name, version), key)
    fd, tmp = tempfile.mkstemp(prefix=f".{sig_path.name}.", suffix=".part", dir=sig_path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(signed, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, sig_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def sign_file(path: str | os.PathLike, private_key_path: str | os.PathLike | Ed25519PrivateKey, *,
              name: str | None = None, version: str | None = None) -> Path:
    """Write PATH.sig, a signed manifest of the file. The key is read first and the signature
    written to a temporary file: a bad key or a failure leaves an existing PATH.sig as it was."""
    key = private_key_path if isinstance(private_key_path, Ed25519PrivateKey) else load_private_key(private_key_path)
    sig_path = Path(str(path) + SIG_SUFFIX)
    _write_signature(Path(path), sig_path, key, name, version)
    return sig_path


class ModelOutput:
    """Write a model file (and its signature) in place of PATH only once both are whole.

        with ModelOutput("kid.bullet", key="release.key", name=..., version=...) as out:
            write_bullet(out.tmp, ...)        # build and check the new file at out.tmp
        # now kid.bullet and kid.bullet.sig are the new ones; out.removed_sig tells whether an
        # old kid.bullet.sig was dropped because the new file is unsigned (key=None)

    The key is read when the ModelOutput is made, before anything is written, so a wrong key
    (a public key, say) leaves the existing file and its .sig untouched. The new file is written
    and signed under temporary names in PATH's folder; on any error they are removed and PATH and
    PATH.sig stay as they were. On success the old PATH.sig is removed first, then the file and
    then its new .sig are renamed into place, so at no moment does a .sig sit beside a file it
    does not sign (a crash between the renames leaves the new file unsigned, never mismatched).
    """

    def __init__(self, path: str | os.PathLike, key: str | os.PathLike | None = None, *,
                 name: str | None = None, version: str | None = None):
        self.path = Path(path)
        self.sig_path = Path(str(self.path) + SIG_SUFFIX)
        self.key = load_private_key(key) if key is not None else None
        self.name, self.version = name, version
        self.removed_sig = False
        folder = self.path.parent
        if not folder.is_dir():
            raise TrustError(f"output folder {folder} does not exist (writing {self.path})", "bad_path")
        if self.path.is_dir():
            raise TrustError(f"cannot write {self.path}: it is a folder", "bad_path")
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=folder)
        os.close(fd)
        self.tmp = Path(tmp)
        self.tmp_sig = Path(tmp + SIG_SUFFIX)

    def __enter__(self) -> "ModelOutput":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._commit()
        finally:
            for p in (self.tmp, self.tmp_sig):
                if os.path.lexists(p):
                    os.unlink(p)

    def _commit(self) -> None:
        if self.tmp.stat().st_size == 0:
            raise TrustError(f"{self.path}: nothing was written", "bad_path")
        if self.key is not None:
            _write_signature(self.tmp, self.tmp_sig, self.key, self.name, self.version)
        if os.path.lexists(self.sig_path):
            os.unlink(self.sig_path)
            self.removed_sig = self.key is None
        os.replace(self.tmp, self.path)
        if self.key is not None:
            os.replace(self.tmp_sig, self.sig_path)


def read_signature(sig_path: str | os.PathLike) -> dict:
    p = Path(sig_path)
    try:
        if p.stat().st_size > MAX_SIG_BYTES:
            raise TrustError(f"{p} is larger than {MAX_SIG_BYTES} bytes; not a signature", "bad_signature")
        return json.loads(p.read_text("utf-8"))
    except FileNotFoundError:
        raise TrustError(f"no signature: {p} does not exist", "unsigned") from None
    except (OSError, ValueError) as exc:
        raise TrustError(f"{p}: unreadable signature: {exc}", "bad_signature") from exc


def verify_file(path: str | os.PathLike, trust: TrustStore | str | os.PathLike,
                sig_path: str | os.PathLike | None = None) -> dict:
    """Verify PATH against its signature (PATH.sig by default); returns the manifest.

    Checks, in order: the signature's form and key, the signature itself, the size, then the
    SHA-256 of every byte. Raises TrustError with code unsigned, bad_signature, unknown_key,
    size_mismatch or hash_mismatch."""
    if not isinstance(trust, TrustStore):
        trust = TrustStore(trust)
    m = verify_manifest(read_signature(sig_path or str(path) + SIG_SUFFIX), trust)
    size = os.path.getsize(path)
    if size != m["size"]:
        raise TrustError(f"{path} is {size} bytes, the signed manifest says {m['size']}", "size_mismatch")
    sha, _ = file_sha256(path)
    if sha != m["sha256"]:
        raise TrustError(f"{path}: SHA-256 {sha} differs from the signed {m['sha256']} (file modified)",
                         "hash_mismatch")
    return m
