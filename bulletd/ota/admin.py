"""The OTA receiver's admin operations: install a signed file from the local disk the way a push
is installed (`bulletd-cli install FILE [--force]`), roll a child back to the version an install
replaced (`bulletd-cli rollback NAME`), the status for `list`, and the expiry of old partial
transfers at start. Part of OtaReceiver (bulletd/ota/receiver.py), whose state it uses.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from pathlib import Path

from bulletd.errors import TrustError
from bulletd.names import name_problem
from bulletd.ota import protocol as P
from bulletd.ota.protocol import OtaError
from bulletd.ota.pump import _Active
from bulletd.ota.staging import Transfer, io_error, link_or_copy, TMP_SUFFIX

log = logging.getLogger("bulletd.ota")


class AdminOps:
    """Local installs, rollbacks, status (see the module docstring)."""

    async def install_local(self, path, sig_path=None, *, force: bool = False,
                            _link: bool = False, label: str = "") -> dict:
        """Install a signed file from the local disk, the same way as a push. `force` skips
        the anti-rollback and replay rules (never the signature). Messages name the file as
        `label` (default: path). Returns the final status."""
        from bulletd.signing import read_signature
        path = Path(path)
        try:
            signed = read_signature(sig_path or str(path) + ".sig")
        except TrustError as exc:
            raise OtaError(exc.code if exc.code in P.REASONS else "bad_signature", str(exc))
        manifest = self._check_manifest(signed)
        self.check_admissible(manifest, force=force)
        push_id = f"local-{int(time.time() * 1000):x}"
        sha = manifest["sha256"]
        for p in self.staging.glob(f"{sha}.*"):
            p.unlink(missing_ok=True)
        self._check_space(manifest["size"])
        record = {"signed": signed, "chunk_size": P.MAX_CHUNK, "push_id": push_id,
                  "created": time.time(), "local": True}
        t = Transfer(self.staging, record)
        try:
            await asyncio.to_thread(self._stage_copy, path, t, _link)
        except OSError as exc:
            t.remove()
            raise io_error(f"copying {path} into staging", exc) from exc
        a = _Active(transfer=t, push_id=push_id, signed=signed, force=force, finishing=True,
                    label=label or str(path))
        await self._finish_push(a)
        return self.finals[push_id]

    @staticmethod
    def _stage_copy(src: Path, t: Transfer, link: bool = False) -> None:
        """Copy (or, for our own previous/ files, hard-link) src into staging, durably. An
        administrator's file is copied: a later edit of it must never change the live child."""
        tmp = t.part.with_name(t.part.name + TMP_SUFFIX)
        if link:
            link_or_copy(src, tmp)
        else:
            shutil.copyfile(src, tmp)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, t.part)
        t.bits = bytearray([1] * t.total)

    async def rollback(self, name: str) -> dict:
        """Return NAME to the version an install replaced (kept in previous/). The version
        rolled back from becomes the new previous, so a second rollback undoes the first."""
        prev = self.previous / f"{name}.bullet"
        if name_problem(name) is not None or not prev.exists():
            raise OtaError("bad_offer", f"no previous version of {name!r} is kept in "
                                        f"{self.previous}")
        tmp = self.ota_dir / f"rollback-{name}.bullet{TMP_SUFFIX}"
        link_or_copy(prev, tmp)
        sig = self.previous / f"{name}.bullet.sig"
        try:
            return await self.install_local(tmp, sig, force=True, _link=True,
                                            label=f"the previous version of {name}")
        finally:
            tmp.unlink(missing_ok=True)

    def status(self) -> dict:
        """For `bulletd-cli list` / status: the live versions and the last push of each child."""
        return {"device": self.config.device,
                "children": {n: dict(e) for n, e in self.ledger.children.items()},
                "last": {n: dict(e) for n, e in self.ledger.last.items()},
                "active": None if self.active is None else {
                    "push_id": self.active.push_id, "name": self.active.transfer.name,
                    "version": self.active.transfer.version, "have": self.active.transfer.have,
                    "total": self.active.transfer.total}}

    def _expire_partials(self) -> None:
        now = time.time()
        for offer in self.staging.glob("*.offer"):
            try:
                created = json.loads(offer.read_text()).get("created", 0)
            except (OSError, ValueError):
                created = 0
            if now - created > self.config.partial_ttl:
                sha = offer.name.split(".", 1)[0]
                for p in self.staging.glob(f"{sha}.*"):
                    p.unlink(missing_ok=True)
                log.info("OTA: dropped partial transfer %s older than %.0f s", sha[:12],
                         self.config.partial_ttl)
