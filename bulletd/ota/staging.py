"""The OTA receiver's files: staging transfers, the install journal, the ledger, and recovery.

Layout under the OTA state directory (default <state_dir>/ota):

    staging/<sha>.part     the file being received, preallocated to its full size
    staging/<sha>.bits     one byte per chunk, 1 = durably written (saved with os.replace
                           after the .part is fsynced, so a set bit never lies)
    staging/<sha>.offer    JSON: the signed manifest, chunk size, push id (written first)
    staging/<sha>.sig      the detached signature, written just before the install
    previous/<name>.bullet (+ .sig)   the version an install replaced, for `rollback`
    rejected/<name>-<version>.<reason>.bullet (+ .json)   files set aside with their reason
    ledger.json            installed version, highest version ever installed, files seen
    install.json           the install journal: present only while files are being renamed

Crash safety rests on two rules. A file reaches the models directory only by rename, after it
was verified and fsynced. The renames of one install (new file, its .sig, and the hard links
that keep the previous version) are listed in install.json first, and recover() finishes them
after a crash, so the live child is always the old pair or the new pair, never a mix.
Every temporary file ends in ".ota-tmp" and recover() deletes those it finds.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

from bulletd.ota.protocol import OtaError, n_chunks_for

log = logging.getLogger("bulletd.ota")

TMP_SUFFIX = ".ota-tmp"
SPACE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


_FAIL_HITS: dict[str, int] = {}


def failpoint(name: str) -> None:
    """Fault injection for the crash tests: BULLETD_OTA_FAILPOINTS="a,b@3" makes the process
    SIGKILL itself when it reaches point a, or point b for the third time. Costs one
    environment lookup when unset."""
    points = os.environ.get("BULLETD_OTA_FAILPOINTS")
    if not points:
        return
    hits = _FAIL_HITS[name] = _FAIL_HITS.get(name, 0) + 1
    for p in points.split(","):
        point, _, nth = p.partition("@")
        if point == name and hits == int(nth or 1):
            import signal
            os.kill(os.getpid(), signal.SIGKILL)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write, fsync, rename over, fsync the directory: readers see the old or the new bytes."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def io_error(what: str, exc: OSError) -> OtaError:
    """Translate an OSError: a full disk or a file-size limit is no_space, the rest io_error."""
    if exc.errno in SPACE_ERRNOS:
        return OtaError("no_space", f"{what}: {exc.strerror} ({errno.errorcode.get(exc.errno)})")
    return OtaError("io_error", f"{what}: {exc}")


def sha256_file(path: Path, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(bufsize):
            h.update(block)
    return h.hexdigest()


def link_or_copy(src: Path, dst: Path) -> None:
    """Make dst the same bytes as src, durably. A hard link costs no space; another filesystem
    falls back to a copy with fsync."""
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copyfile(src, dst)
        fd = os.open(dst, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ----------------------------------------------------------------------------------------------
# one transfer

class Transfer:
    """A file being received into staging: preallocated .part, chunk bitmap, offer record."""

    def __init__(self, staging: Path, record: dict):
        self.staging = staging
        self.record = record
        manifest = record["signed"]["manifest"]
        self.sha256: str = manifest["sha256"]
        self.name: str = manifest["name"]
        self.version = manifest["version"]
        self.size: int = manifest["size"]
        self.chunk_size: int = record["chunk_size"]
        self.total: int = n_chunks_for(self.size, self.chunk_size)
        self.part = staging / f"{self.sha256}.part"
        self.bits_path = staging / f"{self.sha256}.bits"
        self.offer_path = staging / f"{self.sha256}.offer"
        self.bits = bytearray(self.total)
        self.fd: int | None = None
        self.dirty = 0  # chunks written since the last flush

    # -- creation and loading --

    @classmethod
    def create(cls, staging: Path, signed: dict, chunk_size: int, push_id: str) -> "Transfer":
        """Record the offer, then preallocate the .part. Raises OtaError(no_space / io_error)."""
        record = {"signed": signed, "chunk_size": chunk_size, "push_id": push_id,
                  "created": time.time()}
        t = cls(staging, record)
        try:
            atomic_write(t.offer_path, json.dumps(record).encode())
            fd = os.open(t.part, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o640)
            try:
                # allocate every block now: a full disk shows up here, before any download
                os.posix_fallocate(fd, 0, t.size)
            except OSError:
                os.close(fd)
                raise
            t.fd = fd
            atomic_write(t.bits_path, bytes(t.bits))
        except OSError as exc:
            t.remove()
            raise io_error(f"preallocating {t.size} bytes for {t.part}", exc) from exc
        return t

    @classmethod
    def load(cls, staging: Path, sha: str) -> "Transfer":
        """Reopen a transfer left by an earlier run. Raises OtaError("io_error") if any of its
        three files is missing or inconsistent (the caller then deletes it)."""
        offer_path = staging / f"{sha}.offer"
        try:
            record = json.loads(offer_path.read_text())
            t = cls(staging, record)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise OtaError("io_error", f"{offer_path}: unreadable offer record ({exc})") from exc
        if t.sha256 != sha:
            raise OtaError("io_error", f"{offer_path}: records sha256 {t.sha256}, not {sha}")
        try:
            bits = t.bits_path.read_bytes()
            part_size = t.part.stat().st_size
        except OSError as exc:
            raise OtaError("io_error", f"{t.part}: transfer files missing ({exc})") from exc
        if len(bits) != t.total or any(b not in (0, 1) for b in bits):
            raise OtaError("io_error", f"{t.bits_path}: expected {t.total} bytes of 0/1, "
                                       f"found {len(bits)} bytes")
        if part_size != t.size:
            raise OtaError("io_error", f"{t.part}: size {part_size}, expected {t.size}")
        t.bits = bytearray(bits)
        return t

    def open(self) -> None:
        if self.fd is None:
            try:
                self.fd = os.open(self.part, os.O_RDWR)
            except OSError as exc:
                raise io_error(f"opening {self.part}", exc) from exc

    # -- chunks --

    @property
    def have(self) -> int:
        return sum(self.bits)

    @property
    def complete(self) -> bool:
        return all(self.bits)

    def missing(self, limit: int | None = None, skip: set[int] = frozenset()) -> list[int]:
        out = []
        for i, b in enumerate(self.bits):
            if not b and i not in skip:
                out.append(i)
                if limit is not None and len(out) >= limit:
                    break
        return out

    def expected_len(self, seq: int) -> int:
        if seq == self.total - 1:
            return self.size - seq * self.chunk_size
        return self.chunk_size

    def write_chunk(self, seq: int, data: bytes) -> bool:
        """pwrite one chunk at seq * chunk_size. False when it was already here (a duplicate).
        The bit is set in memory only; flush() makes it durable."""
        if self.bits[seq]:
            return False
        self.open()
        try:
            view = memoryview(data)
            off = seq * self.chunk_size
            while view:
                n = os.pwrite(self.fd, view, off)
                view, off = view[n:], off + n
        except OSError as exc:
            raise io_error(f"writing chunk {seq} of {self.part}", exc) from exc
        self.bits[seq] = 1
        self.dirty += 1
        return True

    def begin_flush(self) -> bytes | None:
        """Snapshot the bitmap for a flush (on the event loop). Every chunk in the snapshot was
        written before it was taken, so the fsync that follows covers it."""
        if not self.dirty:
            return None
        snap = bytes(self.bits)
        self.dirty = 0
        return snap

    def commit_flush(self, snap: bytes) -> None:
        """fsync the data, then save the snapshot (may run on a worker thread): a bit is set on
        disk only for durable data."""
        try:
            os.fsync(self.fd)
            atomic_write(self.bits_path, snap)
        except OSError as exc:
            self.dirty += 1   # the next flush tries again
            raise io_error(f"saving progress of {self.part}", exc) from exc
        failpoint("after_flush")

    def flush(self) -> None:
        snap = self.begin_flush()
        if snap is not None:
            self.commit_flush(snap)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def remove(self) -> None:
        self.close()
        for p in (self.part, self.bits_path, self.offer_path,
                  self.staging / f"{self.sha256}.sig"):
            try:
                p.unlink()
            except FileNotFoundError:
                pass


# ----------------------------------------------------------------------------------------------
# ledger

class Ledger:
    """What was installed and what was seen, saved atomically as JSON.

    children[name] = {"version", "sha256", "push_id", "high_water", "installed_at"}: the live
    version, and the highest version ever installed (anti-rollback holds even after a local
    rollback). seen[sha256] = {"name", "version", "push_id", "outcome", "reason", "ts"}: every
    file that got a final outcome (replay detection). last[name] = the last status of a push.
    """

    MAX_SEEN = 512

    def __init__(self, path: Path):
        self.path = path
        self.data = {"children": {}, "seen": {}, "last": {}}
        if path.exists():
            try:
                loaded = json.loads(path.read_text())
                for key in self.data:
                    if isinstance(loaded.get(key), dict):
                        self.data[key] = loaded[key]
            except (OSError, ValueError) as exc:
                # the file is only ever replaced atomically, so this means outside damage
                log.error("OTA ledger %s is unreadable (%s); starting a new one", path, exc)

    @property
    def children(self) -> dict:
        return self.data["children"]

    @property
    def seen(self) -> dict:
        return self.data["seen"]

    @property
    def last(self) -> dict:
        return self.data["last"]

    def note_seen(self, sha: str, record: dict) -> None:
        self.seen[sha] = record
        if len(self.seen) > self.MAX_SEEN:
            oldest = sorted(self.seen, key=lambda k: self.seen[k].get("ts", 0))
            for k in oldest[: len(self.seen) - self.MAX_SEEN]:
                del self.seen[k]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(self.data, sort_keys=True, indent=1).encode())


# ----------------------------------------------------------------------------------------------
# the install journal and recovery

def run_journal(journal: Path, ledger: Ledger) -> None:
    """Finish (roll forward) the renames listed in the journal, apply its ledger update,
    then delete it. Idempotent: a rename whose source is gone was already done."""
    data = json.loads(journal.read_text())
    dirs = set()
    for src, dst in data["moves"]:
        if os.path.exists(src):
            if os.path.exists(dst) and os.path.samefile(src, dst):
                # rename() between two links of one file does nothing and keeps both names
                # (after an undone install, previous/ and the live file are such links)
                os.unlink(src)
            else:
                os.replace(src, dst)
            failpoint("journal_move")
        dirs.add(os.path.dirname(dst))
        dirs.add(os.path.dirname(src))
    for d in dirs:
        fsync_dir(Path(d))
    update = data.get("ledger") or {}
    for name, entry in (update.get("children") or {}).items():
        if entry is None:
            ledger.children.pop(name, None)   # an undone first install
        else:
            ledger.children[name] = entry
    for sha, entry in (update.get("seen") or {}).items():
        ledger.note_seen(sha, entry)
    ledger.save()
    journal.unlink()
    fsync_dir(journal.parent)


def recover(ota_dir: Path, models_dir: Path, ledger: Ledger) -> list[str]:
    """Bring the OTA area to a clean state after any crash. Returns a list of what it did.

    1. finish an interrupted install (install.json);
    2. delete every *.ota-tmp file in staging, previous/ and the models directory;
    3. delete staged files that do not form a consistent transfer (offer + part + bits);
    Consistent transfers stay: a new offer of the same file resumes them.
    """
    actions = []
    staging = ota_dir / "staging"
    journal = ota_dir / "install.json"
    if journal.exists():
        try:
            run_journal(journal, ledger)
            actions.append("finished an interrupted install")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # a journal is written atomically, so it is whole; this is outside damage
            log.error("OTA install journal %s cannot be replayed (%s); removing it", journal, exc)
            journal.unlink(missing_ok=True)
            actions.append(f"dropped a damaged journal: {exc}")
    for d in (staging, ota_dir / "previous", ota_dir / "rejected", ota_dir, models_dir):
        if not d.is_dir():
            continue
        for p in d.iterdir():
            if p.name.endswith(TMP_SUFFIX):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                actions.append(f"removed {p}")
    if staging.is_dir():
        groups: dict[str, list[Path]] = {}
        for p in staging.iterdir():
            groups.setdefault(p.name.split(".", 1)[0], []).append(p)
        for sha, files in sorted(groups.items()):
            try:
                Transfer.load(staging, sha).close()
            except OtaError as exc:
                for p in files:
                    if p.is_dir():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink(missing_ok=True)
                actions.append(f"removed inconsistent staging set {sha[:12]}: {exc}")
                continue
            sig = staging / f"{sha}.sig"
            if sig.exists():  # written by an install that never reached its journal
                sig.unlink()
                actions.append(f"removed {sig}")
            for p in files:
                if p.suffix not in (".part", ".bits", ".offer", ".sig"):
                    p.unlink(missing_ok=True)
                    actions.append(f"removed stray {p}")
        fsync_dir(staging)
    return actions
