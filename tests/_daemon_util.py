"""Helpers for the daemon tests: tiny signed children, a deterministic mother, and the daemon
as a real subprocess (`DaemonProc`) with its own socket, config and log file.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from bulletd.format import write_bullet, router_features
from bulletd.format.synth import byte_vocab, write_random_lm
from bulletd.signing import generate_keypair, sign_file

ROOT = Path(__file__).resolve().parent.parent

# dim/heads chosen for speed: a 64-token generation takes a few ms
TINY = dict(dim=64, n_layers=2, n_heads=2, n_kv_heads=2, hidden_dim=128, vocab_size=320, max_seq_len=128)
# a REFERENCE-like child; with SLOW_ENV (the NumPy reference backend, ~100-150 tokens/s here)
# a 250-token generation lasts long enough for tests that act while it runs. The native kernels
# are too fast for that (thousands of tokens/s) and their speed is the benchmark's business.
# Weights dequantised once (f32): the default "mapped" fallback is ~4x slower per token, which
# these tests do not need and would only wait for (the logits are the same).
SLOW_ENV = {"BULLET_BACKEND": "numpy", "BULLET_NUMPY_WEIGHTS": "f32"}
SLOW = dict(dim=256, n_layers=8, n_heads=4, n_kv_heads=4, hidden_dim=768, vocab_size=512, max_seq_len=256)

TOPICS = {
    "cooking": ["how long to boil an egg", "recipe for tomato soup", "bake bread with yeast",
                "fry onions in butter", "roast a chicken in the oven", "season the pasta sauce",
                "whisk eggs and sugar", "knead the dough for pizza"],
    "weather": ["will it rain tomorrow", "forecast for the weekend", "how hot is it today",
                "is there a storm coming", "snow expected tonight", "wind speed and humidity",
                "sunny skies this afternoon", "temperature drops below zero"],
    "math": ["what is seven times eight", "solve the equation x plus two", "square root of eighty one",
             "add three numbers together", "divide one hundred by four", "prime factors of sixty",
             "integral of x squared", "multiply fractions quickly"],
}


def make_keys(directory: Path, name: str = "test") -> tuple[Path, Path]:
    """A fresh Ed25519 key pair made at test time: (private key, folder holding the public key)."""
    priv, pub = generate_keypair(name, directory / f"{name}-private")
    trust = directory / f"{name}-trusted"
    trust.mkdir(exist_ok=True)
    (trust / pub.name).write_bytes(pub.read_bytes())
    return priv, trust


def make_child(directory: Path, name: str, *, key: Path | None, arch: dict = TINY, seed: int = 0,
               version: str = "1.0.0", examples: list[str] | None = None) -> Path:
    path = directory / f"{name}.bullet"
    extra = {"examples": examples} if examples else None
    write_random_lm(path, arch, seed=seed, name=name, version=version, extra=extra)
    if key is not None:
        sign_file(path, key, name=name, version=version)
    return path


def make_mother(directory: Path, topics: dict[str, list[str]], *, key: Path | None, dim: int = 256,
                hidden: int = 64, threshold: float = 0.5, seed: int = 0) -> Path:
    """A router file that is a nearest-centroid classifier in softmax form (deterministic, no
    training): h = relu(x @ w1), w2 columns = scaled centroids of each topic's hidden vectors."""
    rng = np.random.default_rng(seed)
    labels = list(topics)
    w1 = rng.standard_normal((dim, hidden)).astype(np.float32)
    b1 = np.zeros(hidden, np.float32)
    cents = []
    for lab in labels:
        hs = [np.maximum(router_features(t, dim) @ w1, 0) for t in topics[lab]]
        c = np.mean(hs, axis=0)
        cents.append(c / np.linalg.norm(c))
    w2 = (np.stack(cents, axis=1) * 8.0).astype(np.float32)          # (hidden, n_labels)
    b2 = np.zeros(len(labels), np.float32)
    path = directory / "mother.bullet"
    write_bullet(path, kind="router", arch={"feature_dim": dim, "hidden": hidden},
                 tensors={"router.w1": ("f32", w1), "router.b1": ("f32", b1),
                          "router.w2": ("f32", w2), "router.b2": ("f32", b2)},
                 vocab=byte_vocab(259), tokenizer={"kind": "none"},
                 provenance={"name": "mother", "version": "1.0.0", "created": "2026-01-01T00:00:00+00:00"},
                 extra={"router": {"labels": labels, "feature_dim": dim, "hidden": hidden, "threshold": threshold}})
    if key is not None:
        sign_file(path, key, name="mother", version="1.0.0")
    return path


class DaemonProc:
    """`python -m bulletd.daemon --config FILE` as a real process."""

    def __init__(self, tmp: Path, config: dict, *, env: dict | None = None, name: str = "d"):
        self.tmp = tmp
        self.sock = str(tmp / f"{name}.sock")
        cfg = {"socket": {"path": self.sock}, "log_level": "debug", **config}
        cfg.setdefault("scheduler", {}).setdefault("workers", 2)
        self.cfg_path = tmp / f"{name}.yaml"
        self.cfg_path.write_text(yaml.safe_dump(cfg))
        self.log_path = tmp / f"{name}.log"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.env.pop("NOTIFY_SOCKET", None) if not (env and "NOTIFY_SOCKET" in env) else None
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True, timeout: float = 20.0) -> "DaemonProc":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "bulletd.daemon", "--config", str(self.cfg_path)],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bulletd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(self.sock)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"bulletd did not listen on {self.sock} within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def client(self, **kw):
        from bulletd.client import Client
        return Client(self.sock, **kw)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"bulletd did not stop within {timeout} s after SIGTERM:\n{self.log()}")
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def frame(obj) -> bytes:
    import msgpack
    import struct
    body = obj if isinstance(obj, (bytes, bytearray)) else msgpack.packb(obj, use_bin_type=True)
    return struct.pack("!I", len(body)) + body


def _recv_exact(s: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def read_replies(s: socket.socket, until_final: int = 1, timeout: float = 20.0) -> list[dict]:
    """Read frames (never past the last one needed) until `until_final` final replies arrived or
    the peer closed."""
    import msgpack
    import struct
    s.settimeout(timeout)
    out, finals = [], 0
    while finals < until_final:
        hdr = _recv_exact(s, 4)
        if hdr is None:
            return out
        body = _recv_exact(s, struct.unpack("!I", hdr)[0])
        if body is None:
            return out
        obj = msgpack.unpackb(body, raw=False)
        out.append(obj)
        finals += bool(obj.get("final"))
    return out


def raw_request(path: str, obj, until_final: int = 1, timeout: float = 20.0) -> list[dict]:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendall(frame(obj))
        return read_replies(s, until_final, timeout)


def make_kit(directory: Path, *, slow: bool = True) -> dict:
    """A signing key and trust folder, one signed tiny child per TOPICS entry (with its routing
    examples), a signed mother over TOPICS and, with `slow`, a signed REFERENCE-size "slow" child."""
    key, trust = make_keys(directory)
    models = directory / "models"
    models.mkdir()
    for i, (lab, ex) in enumerate(TOPICS.items()):
        make_child(models, lab, key=key, seed=i, examples=ex)
    make_mother(models, TOPICS, key=key)
    if slow:
        make_child(models, "slow", key=key, arch=SLOW, seed=9)
    return {"dir": directory, "key": key, "trust": trust, "models": models}
