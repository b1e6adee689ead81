"""The OTA receiver's verify/install pipeline: a whole transfer is checked (size, SHA-256,
signature; then the header and the smoke test), renamed into place under a journal, and handed to
the install hook (the daemon's hot swap); a failure after the transfer is a verdict (recorded,
the file set aside or deleted). Part of OtaReceiver (bulletd/ota/receiver.py), whose state it
uses: config, trust, ledger, staging, previous, rejected, models_dir, ota_dir, active,
install_hook, smoke, _tasks.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time

from bulletd.errors import BulletError, FormatError, TrustError
from bulletd.ota import protocol as P
from bulletd.ota.protocol import OtaError
from bulletd.ota.pump import CONTENT_VERDICTS, _Active
from bulletd.ota.staging import (Transfer, atomic_write, failpoint, fsync_dir, io_error, link_or_copy,
                                 run_journal, TMP_SUFFIX)

log = logging.getLogger("bulletd.ota")

# reasons whose file is signed and whole but bad: kept in rejected/ for a person to look at
SET_ASIDE = ("smoke_test_failed", "bad_file", "name_mismatch", "swap_failed")


class InstallPipeline:
    """From a whole transfer to a live child, or a verdict (see the module docstring)."""

    def _finish(self, a: _Active) -> None:
        a.finishing = True
        task = asyncio.create_task(self._finish_push(a))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish_complete_transfers(self) -> None:
        """After a restart, a transfer that was wholly received is installed without waiting
        for the pusher (its manifest is signed; every check runs again)."""
        await asyncio.sleep(0)
        for offer in sorted(self.staging.glob("*.offer")):
            sha = offer.name.split(".", 1)[0]
            if self.active is not None:
                return
            try:
                t = Transfer.load(self.staging, sha)
            except OtaError:
                continue
            if not t.complete:
                continue
            a = _Active(transfer=t, push_id=t.record.get("push_id", "resumed"),
                        signed=t.record["signed"])
            try:
                manifest = self._check_manifest(a.signed)
                self.check_admissible(manifest)
            except OtaError as exc:
                await self._reject(a, exc, keep_partial=False)
                continue
            self.active = a
            a.finishing = True
            await self._finish_push(a)

    async def _finish_push(self, a: _Active) -> None:
        t = a.transfer
        manifest = a.signed["manifest"]
        try:
            async with self._install_lock():
                await self._settle(a)
                elapsed = time.monotonic() - a.started
                await self._status(a.push_id, P.RECEIVED, manifest=manifest, have=t.have,
                                   total=t.total, duplicates=a.duplicates,
                                   bad_chunks=a.bad_chunks, seconds=round(elapsed, 3))
                t.close()
                failpoint("after_received")
                manifest = await asyncio.to_thread(self._verify, t, a.signed)
                await self._status(a.push_id, P.VERIFIED, manifest=manifest,
                                   have=t.have, total=t.total)
                failpoint("after_verified")
                smoke_info = await asyncio.to_thread(self._inspect_and_smoke, t, manifest, a.force)
                failpoint("after_smoke")
                swap_s = await self._install(t, manifest, a.push_id)
        except OtaError as exc:
            await self._verdict(a, exc)
            return
        except Exception as exc:  # a bug: the push fails cleanly, the daemon lives on
            log.exception("OTA: internal error finishing push %s", a.push_id)
            await self._verdict(a, OtaError("internal", f"internal error: {exc} (a bug; the "
                                                        "daemon log has the traceback)"))
            return
        finally:
            if self.active is a:
                self.active = None
        await self._status(a.push_id, P.INSTALLED, manifest=manifest, have=t.total,
                           total=t.total, smoke=smoke_info, swap_seconds=round(swap_s, 4),
                           message=f"{manifest['name']} {manifest['version']} is live")
        await self._publish_presence()

    async def _verdict(self, a: _Active, exc: OtaError) -> None:
        """A push failed after it was fully received: record, set aside or delete, report."""
        exc = OtaError(exc.reason, a.plain(exc.message))
        t = a.transfer
        m = a.signed["manifest"]
        if exc.reason in CONTENT_VERDICTS:
            self.ledger.note_seen(m["sha256"], {"name": m["name"], "version": m["version"],
                                                "push_id": a.push_id, "outcome": exc.reason,
                                                "reason": exc.reason, "ts": time.time()})
        if exc.reason in SET_ASIDE and t.part.exists():
            self._set_aside(t, m, exc)
        t.remove()
        if self.active is a:
            self.active = None
        await self._status(a.push_id, P.REJECTED, reason=exc.reason, message=exc.message,
                           manifest=m, have=t.have, total=t.total)
        await self._publish_presence()

    def _set_aside(self, t: Transfer, m: dict, exc: OtaError) -> None:
        base = f"{m['name']}-{m['version']}.{exc.reason}"
        try:
            self.rejected.mkdir(parents=True, exist_ok=True)
            os.replace(t.part, self.rejected / f"{base}.bullet")
            atomic_write(self.rejected / f"{base}.json",
                         json.dumps({"manifest": m, "reason": exc.reason, "message": exc.message,
                                     "ts": time.time()}, indent=1).encode())
            kept = sorted(self.rejected.glob(f"{m['name']}-*.bullet"),
                          key=lambda p: p.stat().st_mtime)
            for old in kept[: max(0, len(kept) - self.config.keep_rejected)]:
                old.unlink(missing_ok=True)
                old.with_suffix(".json").unlink(missing_ok=True)
        except OSError as exc2:
            log.warning("OTA: cannot set %s aside: %s", t.part, exc2)

    def _verify(self, t: Transfer, signed: dict) -> dict:
        """Size, SHA-256 of every byte and the signature, through the one signing contract."""
        from bulletd.signing import verify_file
        sig = self.staging / f"{t.sha256}.sig"
        try:
            atomic_write(sig, (json.dumps(signed, indent=1, sort_keys=True) + "\n").encode())
        except OSError as exc:
            raise io_error(f"writing {sig}", exc) from exc
        try:
            return verify_file(t.part, self.trust, sig_path=sig)
        except TrustError as exc:
            code = exc.code if exc.code in P.REASONS else "bad_signature"
            raise OtaError(code, str(exc)) from exc

    def _inspect_and_smoke(self, t: Transfer, manifest: dict, force: bool) -> dict:
        from bulletd.format import BulletFile
        try:
            with BulletFile.open(t.part) as bf:
                name, version = bf.name, bf.version
        except FormatError as exc:
            raise OtaError("bad_file", str(exc)) from exc
        if name != manifest["name"] or P.version_key(version, "header version") != \
                P.version_key(manifest["version"], "manifest version"):
            raise OtaError("name_mismatch", f"header says {name} {version}, the signed manifest "
                                            f"says {manifest['name']} {manifest['version']}")
        self.check_admissible(manifest, force=force)  # the ledger may have moved meanwhile
        if self.smoke is None:
            return {"skipped": True}
        try:
            return self.smoke(t.part)
        except BulletError as exc:
            raise OtaError("smoke_test_failed", str(exc)) from exc

    async def _install(self, t: Transfer, manifest: dict, push_id: str) -> float:
        """Rename the verified files into place under a journal, then let the daemon swap.
        Returns the seconds the swap took."""
        name = manifest["name"]
        live = self.models_dir / f"{name}.bullet"
        # the ledger entry as it was: a swap that fails puts it back whole, so a version that
        # never went live raises no high-water mark
        before = dict(self.ledger.children[name]) if name in self.ledger.children else None
        had_previous = await asyncio.to_thread(self._install_files, t, manifest, push_id)
        failpoint("after_install")
        t0 = time.monotonic()
        if self.install_hook is not None:
            try:
                await self.install_hook(name, live, manifest)
            except Exception as exc:
                log.warning("OTA: swapping %s %s in failed (%s); restoring the previous version",
                            name, manifest["version"], exc)
                await asyncio.to_thread(self._undo_install, name, manifest, had_previous, before)
                raise OtaError("swap_failed", f"the daemon could not load {name} "
                                              f"{manifest['version']}: {exc}") from exc
        return time.monotonic() - t0

    def _install_files(self, t: Transfer, manifest: dict, push_id: str) -> bool:
        name = manifest["name"]
        live = self.models_dir / f"{name}.bullet"
        live_sig = self.models_dir / f"{name}.bullet.sig"
        prev = self.previous / f"{name}.bullet"
        prev_sig = self.previous / f"{name}.bullet.sig"
        staged_sig = self.staging / f"{t.sha256}.sig"
        moves = []
        had_previous = live.exists()
        try:
            self._ensure_dirs()
            if had_previous:
                # keep the live pair as "previous" (hard links: no copy, no space)
                prev_sig.unlink(missing_ok=True)
                link_or_copy(live, prev.with_name(prev.name + TMP_SUFFIX))
                moves.append((str(prev.with_name(prev.name + TMP_SUFFIX)), str(prev)))
                if live_sig.exists():
                    link_or_copy(live_sig, prev_sig.with_name(prev_sig.name + TMP_SUFFIX))
                    moves.append((str(prev_sig.with_name(prev_sig.name + TMP_SUFFIX)),
                                  str(prev_sig)))
            # the .sig first: a crash between the two renames is finished by the journal anyway
            moves += [(str(staged_sig), str(live_sig)), (str(t.part), str(live))]
            hw = (self.ledger.children.get(name) or {}).get("high_water")
            if hw is None or P.version_key(manifest["version"]) > P.version_key(hw):
                hw = manifest["version"]
            entry = {"version": manifest["version"], "sha256": manifest["sha256"],
                     "push_id": push_id, "high_water": hw, "installed_at": time.time()}
            journal = {"op": "install", "name": name, "moves": moves,
                       "ledger": {"children": {name: entry},
                                  "seen": {manifest["sha256"]: {
                                      "name": name, "version": manifest["version"],
                                      "push_id": push_id, "outcome": "installed",
                                      "reason": None, "ts": time.time()}}}}
            failpoint("before_journal")
            atomic_write(self.ota_dir / "install.json", json.dumps(journal).encode())
            failpoint("after_journal")
            run_journal(self.ota_dir / "install.json", self.ledger)
            failpoint("after_rename")
            for p in (t.bits_path, t.offer_path):
                p.unlink(missing_ok=True)
            fsync_dir(self.staging)
        except OSError as exc:
            raise io_error(f"installing {name} into {self.models_dir}", exc) from exc
        return had_previous

    def _undo_install(self, name: str, manifest: dict, had_previous: bool,
                      before: dict | None) -> None:
        """The daemon refused the new file: put the previous pair back (or remove the new one
        when there was none), keep the rejected file aside, and restore the ledger entry of
        NAME as it was before the install (None: there was none)."""
        live = self.models_dir / f"{name}.bullet"
        live_sig = self.models_dir / f"{name}.bullet.sig"
        base = self.rejected / f"{name}-{manifest['version']}.swap_failed"
        moves = [(str(live), str(base) + ".bullet")]
        if had_previous:
            for src, dst in ((self.previous / f"{name}.bullet", live),
                             (self.previous / f"{name}.bullet.sig", live_sig)):
                link_or_copy(src, src.with_name(src.name + TMP_SUFFIX))
                moves.append((str(src.with_name(src.name + TMP_SUFFIX)), str(dst)))
        else:
            moves.append((str(live_sig), str(base) + ".bullet.sig"))
        atomic_write(self.ota_dir / "install.json",
                     json.dumps({"op": "undo", "name": name, "moves": moves,
                                 "ledger": {"children": {name: before}}}).encode())
        run_journal(self.ota_dir / "install.json", self.ledger)
