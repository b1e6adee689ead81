"""Helpers for the OTA tests: signed tiny children with verification vectors, a real receiver
process, and a pusher that injects faults.

Everything here is real: files are written by bulletd.format and signed by bulletd.signing,
the receiver is `python -m bulletd.ota receive` in its own process, the broker is Mosquitto.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bulletd.format.synth import write_random_lm
from bulletd.signing import generate_keypair, sign_file
from bulletd.ota.push import Pusher

TINY = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=4, hidden_dim=128, vocab_size=300,
            max_seq_len=64)
ROOT = Path(__file__).resolve().parent.parent


def greedy_vectors(path, prompts=("hello there", "the cat"), n=6) -> list[dict]:
    """Verification vectors computed with the NumPy reference backend (the receiver's smoke
    test replays them on the default, native backend)."""
    from bulletd.ota.smoke import _greedy
    from bulletd.runtime import load_model
    with load_model(str(path), backend="numpy") as m:
        out = []
        for p in prompts:
            ids = m.tokenizer.encode(p, bos=True)
            out.append({"prompt": p, "ids": ids, "expected": _greedy(m, ids, n)})
    return out


def make_child(path, key, *, name="kid", version="1", seed=1, arch=TINY, bad_vectors=False,
               sign=True) -> Path:
    """A random tiny lm child with verification vectors, signed with `key` (writes .sig)."""
    path = Path(path)
    write_random_lm(path, arch, seed=seed, name=name, version=version)
    vecs = greedy_vectors(path)
    if bad_vectors:
        vecs[0]["expected"] = [(t + 1) % arch["vocab_size"] for t in vecs[0]["expected"]]
    write_random_lm(path, arch, seed=seed, name=name, version=version,
                    extra={"verification": vecs})
    if sign:
        sign_file(path, key)
    return path


class Keys:
    def __init__(self, tmp: Path):
        self.dir = tmp / "keys"
        self.key, self.pub = generate_keypair("trainer", self.dir)
        self.trust = tmp / "trust"
        self.trust.mkdir()
        (self.trust / "trainer.pem").write_bytes(self.pub.read_bytes())
        other_dir = tmp / "otherkeys"
        self.other_key, self.other_pub = generate_keypair("stranger", other_dir)


class ReceiverProc:
    """`python -m bulletd.ota receive` as a real process; stdout/stderr go to a log file."""

    def __init__(self, tmp: Path, broker, device="dev1", groups=(), extra=(), env=None,
                 preexec_fn=None, models=None, ota_dir=None, trust=None):
        self.tmp = tmp
        self.broker = broker
        self.device = device
        self.models = Path(models or tmp / f"{device}-models")
        self.ota_dir = Path(ota_dir or tmp / f"{device}-ota")
        self.trust = trust or tmp / "trust"
        self.groups = groups
        self.extra = list(extra)
        self.env = env or {}
        self.preexec_fn = preexec_fn
        self.proc: subprocess.Popen | None = None
        self.log = tmp / f"{device}-receiver.log"
        self.starts = 0

    def start(self, env=None, wait=True) -> "ReceiverProc":
        e = dict(os.environ, PYTHONUNBUFFERED="1")
        e.update(self.env)
        e.update(env or {})
        cmd = [sys.executable, "-m", "bulletd.ota", "receive", "--device", self.device,
               "--port", str(self.broker.port), "--models", str(self.models),
               "--ota-dir", str(self.ota_dir), "--trust", str(self.trust),
               "--chunk-timeout", "0.5", "--stall-timeout", "4", "--min-free", "0"]
        if self.groups:
            cmd += ["--groups", ",".join(self.groups)]
        cmd += self.extra
        self.starts += 1
        logf = open(self.log, "a")
        logf.write(f"---- start {self.starts}: {' '.join(cmd)}\n")
        logf.flush()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=logf, text=True,
                                     cwd=ROOT, env=e, preexec_fn=self.preexec_fn)
        logf.close()
        self.lines: list[str] = []
        self._ready = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()
        if wait:
            self.wait_ready()
        return self

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("READY"):
                self._ready.set()

    def wait_ready(self, timeout=20.0):
        if not self._ready.wait(timeout):
            self.kill()
            raise RuntimeError(f"receiver did not become ready; log:\n{self.log.read_text()[-3000:]}")

    def wait_exit(self, timeout=30.0) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def logtext(self) -> str:
        return self.log.read_text()

    # -- what is on disk --

    def live_manifest(self, name="kid"):
        sig = self.models / f"{name}.bullet.sig"
        if not sig.exists():
            return None
        return json.loads(sig.read_text())["manifest"]

    def ledger(self) -> dict:
        p = self.ota_dir / "ledger.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def durable_chunks(self) -> int:
        """Chunks the staging bitmap (.bits, one byte per chunk) records as durably written."""
        d = self.ota_dir / "staging"
        bits = sorted(d.glob("*.bits")) if d.exists() else []
        return sum(bits[0].read_bytes()) if len(bits) == 1 else 0

    def staging_files(self) -> list[str]:
        d = self.ota_dir / "staging"
        return sorted(p.name for p in d.iterdir()) if d.exists() else []

    def tmp_files(self) -> list[str]:
        out = []
        for d in (self.models, self.ota_dir):
            if d.exists():
                out += [str(p) for p in d.rglob("*") if p.name.endswith(".ota-tmp")]
        return out


class FaultyPusher(Pusher):
    """A Pusher whose send_chunk misbehaves on purpose.

    drop: seqs never sent the first time they are asked for (the receiver must re-ask)
    duplicate: send every chunk twice; reverse: send each window in reverse order
    corrupt_once: seqs sent once with a flipped byte and the original CRC (transit damage)
    truncate_once: seqs sent once 10 bytes short (with a CRC that matches the short data)
    forge: seqs always sent with a flipped byte and a matching CRC (only the SHA-256 can tell)
    stop_after: stop serving after this many chunks (a truncated push)
    """

    def __init__(self, *a, drop=(), duplicate=False, reverse=False, corrupt_once=(), forge=(),
                 stop_after=None, delay=0.0, truncate_once=(), **kw):
        super().__init__(*a, **kw)
        self.drop, self.duplicate, self.reverse = set(drop), duplicate, reverse
        self.corrupt_once, self.forge = set(corrupt_once), set(forge)
        self.truncate_once = set(truncate_once)
        self.stop_after, self.delay = stop_after, delay
        self.sent_total = 0
        self.sent_seqs: list[int] = []

    async def _serve_need(self, client, device, seqs):
        if self.reverse:
            seqs = list(reversed(seqs))
        for s in seqs:  # in order, so that reversing means something
            await self.send_chunk(client, device, s)

    async def send_chunk(self, client, device, seq):
        from bulletd.ota import protocol as P
        if self.stop_after is not None and self.sent_total >= self.stop_after:
            return
        if seq in self.drop:
            self.drop.discard(seq)
            return
        self.sent_total += 1   # counted before the await: concurrent windows see it at once
        if self.delay:
            await asyncio.sleep(self.delay)
        data = self.chunk(seq)
        crc = None
        if seq in self.corrupt_once:
            self.corrupt_once.discard(seq)
            crc = P.chunk_crc(data)
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        elif seq in self.truncate_once:
            self.truncate_once.discard(seq)
            data = data[:-10]
        elif seq in self.forge:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        msg = P.pack(P.make_chunk(self.push_id, seq, data, crc))
        topic = P.device_topic(self.prefix, device, "data")
        for _ in range(2 if self.duplicate else 1):
            await client.publish(topic, msg, qos=1)
        self.sent_seqs.append(seq)
        self._count(device, len(data), seq)


def still_missing(held: set, old_size: int, new_size: int, file_size: int) -> set:
    """Chunks of new_size not wholly covered by the `held` chunks of old_size: what a resumed
    push must send (the device asks for windows out of order, so `held` need not be a prefix)."""
    out = set()
    for seq in range(-(-file_size // new_size)):
        lo, hi = seq * new_size, min(file_size, (seq + 1) * new_size)
        if not all(c in held for c in range(lo // old_size, (hi - 1) // old_size + 1)):
            out.add(seq)
    return out


def push(file, broker, pusher_cls=Pusher, **kw):
    """Run one push to completion in this process; returns the Pusher (outcomes inside)."""
    kw.setdefault("devices", ("dev1",))
    kw.setdefault("timeout", 30)
    kw.setdefault("reoffer", 0.5)
    kw.setdefault("discover", 0.5)
    kw.setdefault("chunk_size", 4096)
    p = pusher_cls(file, host="127.0.0.1", port=broker.port, **kw)
    asyncio.run(p.run())
    return p


def wait_for(pred, timeout=10.0, step=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def retained(broker, topic, timeout=5.0) -> dict | None:
    """The retained msgpack map on `topic` (None when there is none), read by a fresh client."""
    import aiomqtt
    from bulletd.ota import protocol as P

    async def read():
        async with aiomqtt.Client("127.0.0.1", broker.port) as c:
            await c.subscribe(topic, qos=1)
            try:
                async with asyncio.timeout(timeout):
                    async for msg in c.messages:
                        return P.unpack(msg.payload, topic)
            except TimeoutError:
                return None
    return asyncio.run(read())


def make_mother(path, key, *, version="1", labels=("kid", "other"), seed=0, wrong_label=False):
    """A tiny router-kind file (random hidden layer, output columns set to the centroids of
    two made-up topics) with verification texts, signed with `key`."""
    import numpy as np
    from bulletd.format import router_features, write_bullet
    from bulletd.format.synth import byte_vocab
    topics = {labels[0]: ["once upon a time a cat", "the little dog ran home"],
              labels[1]: ["seven times eight is", "add three and four"]}
    dim, hidden = 128, 32
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((dim, hidden)).astype(np.float32)
    cents = []
    for lab in labels:
        h = np.mean([np.maximum(router_features(t, dim) @ w1, 0) for t in topics[lab]], axis=0)
        cents.append(h / np.linalg.norm(h))
    w2 = (np.stack(cents, axis=1) * 8.0).astype(np.float32)
    vecs = [{"text": topics[lab][0], "label": lab} for lab in labels]
    if wrong_label:
        vecs[0]["label"] = labels[1]
    write_bullet(path, kind="router", arch={"feature_dim": dim, "hidden": hidden},
                 tensors={"router.w1": ("f32", w1), "router.b1": ("f32", np.zeros(hidden, np.float32)),
                          "router.w2": ("f32", w2), "router.b2": ("f32", np.zeros(len(labels), np.float32))},
                 vocab=byte_vocab(259), tokenizer={"kind": "none"},
                 provenance={"name": "mother", "version": version, "created": "2026-01-01T00:00:00+00:00"},
                 extra={"router": {"labels": list(labels), "feature_dim": dim, "hidden": hidden,
                                   "threshold": 0.5},
                        "verification": vecs})
    sign_file(path, key)
    return Path(path)
