"""The OTA receiver's transfer pump: offers admitted (signature, name, size, anti-rollback and
replay rules, free space), chunks asked for by number with at most `window` requests in flight,
written and flushed, re-asked when late; a push without progress is stalled. Part of
OtaReceiver (bulletd/ota/receiver.py), whose state it uses: config, trust, ledger, staging,
active (the _Active transfer), client, _tasks; a whole transfer goes on to the install pipeline
(bulletd/ota/install.py, `_finish`).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field

from bulletd.errors import TrustError
from bulletd.names import name_problem
from bulletd.ota import protocol as P
from bulletd.ota.protocol import OtaError
from bulletd.ota.staging import Transfer, atomic_write, failpoint, io_error

log = logging.getLogger("bulletd.ota")

SHA_RE = re.compile(r"^[0-9a-f]{64}$")
# outcomes that judge the file's content; a later offer of the same bytes is a replay
CONTENT_VERDICTS = ("installed", "smoke_test_failed", "bad_file", "name_mismatch", "swap_failed")


@dataclass
class _Active:
    """The transfer being received now and its request bookkeeping."""
    transfer: Transfer
    push_id: str
    signed: dict
    force: bool = False
    inflight: dict = field(default_factory=dict)     # seq -> time asked
    last_chunk: float = field(default_factory=time.monotonic)
    last_status: float = 0.0
    started: float = field(default_factory=time.monotonic)
    duplicates: int = 0
    bad_chunks: int = 0
    finishing: bool = False
    flushing: asyncio.Future | None = None           # the background fsync of a window
    label: str = ""                                  # the file as the sender knows it, for messages

    def plain(self, message: str) -> str:
        """A message with the staging paths replaced by the file the sender gave us."""
        t = self.transfer
        m = self.signed["manifest"]
        label = self.label or f"{m['name']} {m['version']}"
        sig = t.part.with_name(f"{t.sha256}.sig")
        return message.replace(str(sig), label + ".sig").replace(str(t.part), label)


class TransferPump:
    """Offers and chunks of the push being received (see the module docstring)."""

    def installed_version(self, name: str):
        """The version of the live child NAME (from its .sig, else the ledger), or None."""
        sig = self.models_dir / f"{name}.bullet.sig"
        if sig.exists():
            try:
                return json.loads(sig.read_text())["manifest"]["version"]
            except (OSError, ValueError, KeyError, TypeError):
                pass
        entry = self.ledger.children.get(name)
        return entry.get("version") if entry else None

    def check_admissible(self, manifest: dict, *, force: bool = False) -> None:
        """Anti-rollback and replay rules. Raises OtaError(replay / downgrade / bad_version)."""
        name, version, sha = manifest["name"], manifest["version"], manifest["sha256"]
        key = P.version_key(version, f"offer of {name}")
        if force:
            return
        seen = self.ledger.seen.get(sha)
        if seen and seen.get("outcome") == "name_mismatch" and \
                (seen.get("name"), seen.get("version")) != (name, version):
            seen = None   # the manifest was wrong, not the file: a correct offer of it is new
        if seen and seen.get("outcome") in CONTENT_VERDICTS:
            raise OtaError("replay", f"{name} {version} (sha256 {sha[:12]}) was offered before "
                                     f"and ended {seen.get('outcome')}")
        floor = []
        inst = self.installed_version(name)
        if inst is not None:
            floor.append((P.version_key(inst, "installed version"), f"installed {inst}"))
        hw = (self.ledger.children.get(name) or {}).get("high_water")
        if hw is not None:
            floor.append((P.version_key(hw, "highest version"), f"highest ever installed {hw}"))
        for k, what in floor:
            if key <= k:
                raise OtaError("downgrade", f"{name} {version} is not higher than the {what}")

    def _check_manifest(self, signed: dict) -> dict:
        try:
            from bulletd.signing import verify_manifest
            manifest = verify_manifest(signed, self.trust)
        except TrustError as exc:
            code = exc.code if exc.code in P.REASONS else "bad_signature"
            raise OtaError(code, str(exc)) from exc
        why = name_problem(manifest.get("name"))
        if why is not None:
            raise OtaError("bad_offer", f"manifest name is not a safe file name: {why}")
        if not SHA_RE.match(str(manifest.get("sha256"))):
            raise OtaError("bad_offer", "manifest sha256 is not 64 lower-case hex digits")
        if manifest["size"] > self.config.max_file_size:
            raise OtaError("too_large", f"{manifest['name']} is {manifest['size']} bytes, more "
                                        f"than max_file_size {self.config.max_file_size}")
        return manifest

    async def _on_offer(self, msg: dict, topic: str) -> None:
        P.check_offer(msg, topic)
        push_id = msg["push_id"]
        if push_id in self.finals:   # the pusher asks again: repeat the verdict, do nothing else
            await self._publish(self.topic("status"), self.finals[push_id], retain=True)
            return
        for sha, seen in self.ledger.seen.items():
            if seen.get("push_id") == push_id and seen.get("outcome") == "installed":
                await self._status(push_id, P.INSTALLED, manifest=dict(seen, sha256=sha),
                                   message="already installed by this push")
                return
        signed = msg["signed"]
        try:
            manifest = self._check_manifest(signed)
            if self.active and self.active.transfer.sha256 == manifest["sha256"]:
                # the same file offered again (pusher restarted, or broker lost messages): go on
                a = self.active
                a.push_id = push_id
                a.inflight.clear()
                a.last_chunk = time.monotonic()
                if not a.finishing and msg["chunk_size"] != a.transfer.chunk_size:
                    # the new pusher numbers chunks differently: re-map what is durable
                    await self._settle(a)
                    a.transfer.close()
                    a.transfer = self._rechunk(a.transfer, msg["chunk_size"], signed, push_id)
                    a.transfer.open()
                if not a.finishing:
                    await self._status(push_id, P.RECEIVING, manifest=manifest,
                                       have=a.transfer.have, total=a.transfer.total,
                                       message="resuming")
                    await self._pump()
                return
            self.check_admissible(manifest)
            if self.active:
                idle = time.monotonic() - self.active.last_chunk
                if self.active.finishing or idle < self.config.chunk_timeout * 3:
                    # not a verdict: the pusher keeps offering and gets its turn
                    await self._status(push_id, P.WAITING, reason="busy", manifest=manifest,
                                       message=f"receiving {self.active.transfer.name} "
                                               f"{self.active.transfer.version} (push "
                                               f"{self.active.push_id}); offer again later")
                    return
                await self._stall(self.active, "superseded by a new offer")
            await self._status(push_id, P.OFFERED, manifest=manifest)
            self._start(push_id, signed, manifest, msg["chunk_size"])
        except OtaError as exc:
            await self._status(push_id, P.REJECTED, reason=exc.reason, message=exc.message,
                               manifest=signed.get("manifest") if isinstance(signed, dict) else None)
            return
        a = self.active
        await self._status(push_id, P.RECEIVING, manifest=manifest, have=a.transfer.have,
                           total=a.transfer.total,
                           message="resuming" if a.transfer.have else "")
        await self._publish_presence()
        if a.transfer.complete:
            self._finish(a)
        else:
            await self._pump()

    def _start(self, push_id: str, signed: dict, manifest: dict, chunk_size: int) -> None:
        sha = manifest["sha256"]
        # one partial per child: an older offer of the same name is abandoned
        for offer in self.staging.glob("*.offer"):
            other = offer.name.split(".", 1)[0]
            if other == sha:
                continue
            try:
                if json.loads(offer.read_text())["signed"]["manifest"]["name"] == manifest["name"]:
                    for p in self.staging.glob(f"{other}.*"):
                        p.unlink(missing_ok=True)
            except (OSError, ValueError, KeyError, TypeError):
                pass
        transfer = None
        if (self.staging / f"{sha}.offer").exists():
            try:
                transfer = Transfer.load(self.staging, sha)
                if transfer.chunk_size != chunk_size:
                    # the bitmap counts chunks of the old size; keep the bytes that are whole
                    transfer = self._rechunk(transfer, chunk_size, signed, push_id)
                transfer.open()
            except OtaError as exc:
                log.warning("OTA: cannot resume %s (%s); starting over", sha[:12], exc)
                for p in self.staging.glob(f"{sha}.*"):
                    p.unlink(missing_ok=True)
                transfer = None
        if transfer is None:
            self._check_space(manifest["size"])
            transfer = Transfer.create(self.staging, signed, chunk_size, push_id)
        self.active = _Active(transfer=transfer, push_id=push_id, signed=signed)

    def _rechunk(self, old: Transfer, chunk_size: int, signed: dict, push_id: str) -> Transfer:
        """A resumed offer with another chunk size: mark the new chunks wholly covered by old
        durable chunks as present, rewrite the bitmap and offer record."""
        record = dict(old.record, chunk_size=chunk_size, push_id=push_id)
        new = Transfer(self.staging, record)
        for seq in range(new.total):
            lo, hi = seq * chunk_size, min(new.size, (seq + 1) * chunk_size)
            first, last = lo // old.chunk_size, (hi - 1) // old.chunk_size
            new.bits[seq] = int(all(old.bits[first:last + 1]))
        try:
            atomic_write(new.offer_path, json.dumps(record).encode())
            atomic_write(new.bits_path, bytes(new.bits))
        except OSError as exc:
            raise io_error(f"re-chunking {new.part}", exc) from exc
        return new

    def _check_space(self, size: int) -> None:
        self._ensure_dirs()
        try:
            st = os.statvfs(self.staging)
        except OSError as exc:
            raise io_error(f"statvfs {self.staging}", exc) from exc
        free = st.f_bavail * st.f_frsize
        if free < size + self.config.min_free_bytes:
            raise OtaError("no_space", f"staging {self.staging} has {free} bytes free; the file "
                                       f"needs {size} + {self.config.min_free_bytes} reserve")

    # ------------------------------------------------------------------------------------------
    # chunks

    async def _pump(self) -> None:
        """Ask for missing chunks so that `window` requests are in flight."""
        a = self.active
        if a is None or a.finishing or self.client is None:
            return
        room = self.config.window - len(a.inflight)
        # ask in batches of half a window: fewer, fuller "need" messages keep the pipe busy
        # even through a broker that leaves Nagle on (mosquitto's default)
        if room < max(1, self.config.window // 2):
            return
        seqs = a.transfer.missing(room, skip=set(a.inflight))
        if not seqs:
            return
        now = time.monotonic()
        for s in seqs:
            a.inflight[s] = now
        await self._publish(self.topic("need"),
                            P.make_need(a.push_id, self.config.device, seqs, a.transfer.have,
                                        a.transfer.total))

    async def _on_chunk(self, msg: dict, topic: str) -> None:
        P.check_chunk(msg, topic)
        a = self.active
        if a is None or a.finishing or msg["push_id"] != a.push_id:
            return  # a late chunk of a finished or superseded push
        t = a.transfer
        seq, data = msg["seq"], msg["data"]
        if not 0 <= seq < t.total:
            log.warning("OTA: chunk %d outside 0..%d of push %s", seq, t.total - 1, a.push_id)
            return
        a.inflight.pop(seq, None)
        if len(data) != t.expected_len(seq) or P.chunk_crc(data) != msg["crc"]:
            # damaged in transit: drop it; _pump asks for it again right away
            a.bad_chunks += 1
            log.warning("OTA: chunk %d of push %s damaged (len %d, expected %d, crc %s); "
                        "asking again", seq, a.push_id, len(data), t.expected_len(seq),
                        "ok" if P.chunk_crc(data) == msg["crc"] else "wrong")
            await self._pump()
            return
        a.last_chunk = time.monotonic()
        try:
            if not t.write_chunk(seq, data):
                a.duplicates += 1
            failpoint("after_chunk")
        except OtaError as exc:
            await self._reject(a, exc, keep_partial=False)
            return
        if t.complete:
            self._finish(a)   # its first step waits for the flushes and makes the last one
            return
        if t.dirty >= self.config.window and (a.flushing is None or a.flushing.done()):
            # fsync on a worker thread: the daemon's loop keeps serving requests meanwhile
            a.flushing = asyncio.ensure_future(asyncio.to_thread(t.commit_flush, t.begin_flush()))
            a.flushing.add_done_callback(lambda f, a=a: self._flush_done(a, f))
        if time.monotonic() - a.last_status > 0.5:
            a.last_status = time.monotonic()
            await self._status(a.push_id, P.RECEIVING, manifest=a.signed["manifest"],
                               have=t.have, total=t.total)
        await self._pump()

    async def _ticker(self) -> None:
        """Re-ask for chunks that did not come; declare a push stalled after stall_timeout."""
        while True:
            await asyncio.sleep(min(0.25, self.config.chunk_timeout / 4))
            a = self.active
            if a is None or a.finishing:
                continue
            now = time.monotonic()
            if now - a.last_chunk > self.config.stall_timeout:
                await self._stall(a, f"no chunk for {self.config.stall_timeout:.0f} s")
                continue
            late = [s for s, t0 in a.inflight.items() if now - t0 > self.config.chunk_timeout]
            if late and self.client is not None:
                for s in late:
                    del a.inflight[s]
                await self._pump()

    def _flush_done(self, a: _Active, fut: asyncio.Future) -> None:
        if fut.cancelled() or fut.exception() is None:
            return
        exc = fut.exception()
        if self.active is a and not a.finishing:
            if not isinstance(exc, OtaError):
                exc = OtaError("internal", f"internal error: {exc}")
            task = asyncio.ensure_future(self._reject(a, exc, keep_partial=False))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _settle(self, a: _Active) -> None:
        """Wait for a running background flush, then flush what is left (on a thread)."""
        if a.flushing is not None:
            try:
                await a.flushing
            except OtaError:
                pass
        await asyncio.to_thread(a.transfer.flush)

    async def _settle_quietly(self, a: _Active) -> None:
        try:
            await self._settle(a)
        except OtaError as exc:
            log.warning("OTA: %s", exc)

    async def _stall(self, a: _Active, why: str) -> None:
        await self._settle_quietly(a)
        a.transfer.close()
        if self.active is a:
            self.active = None
        await self._status(a.push_id, P.STALLED, reason="timeout", message=why + "; the partial "
                           "file is kept and a new offer resumes it",
                           manifest=a.signed["manifest"], have=a.transfer.have,
                           total=a.transfer.total)
        await self._publish_presence()

    async def _reject(self, a: _Active, exc: OtaError, *, keep_partial: bool) -> None:
        t = a.transfer
        if keep_partial:
            await self._settle_quietly(a)
            t.close()
        else:
            t.remove()
        if self.active is a:
            self.active = None
        await self._status(a.push_id, P.REJECTED, reason=exc.reason, message=exc.message,
                           manifest=a.signed["manifest"], have=t.have, total=t.total)
        await self._publish_presence()
