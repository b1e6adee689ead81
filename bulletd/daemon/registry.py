"""The registry of children: load/unload by name or path, trust checks, memory budget with LRU
eviction, keep-alive, reference counts (leases), atomic hot swap and rollback for OTA.

All bookkeeping runs on the event loop thread; only the file work (signature check, mapping,
model construction) runs in a worker thread. A `Child` is one loaded *version* of a file: a
request takes a `Lease` on the Child current at that moment, so a swap replaces the name's
Child for new requests while running requests finish on the old one, which is closed when its
last lease ends. See "bulletd.daemon registry" in docs/ARCHITECTURE.md.
"""
from __future__ import annotations

import asyncio
import logging
import mmap
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bulletd.errors import BulletError, FormatError, ModelError, RequestError, TrustError
from bulletd.names import check_name

log = logging.getLogger("bulletd.registry")

BULLET_SUFFIX = ".bullet"


class Lease:
    """One request's hold on a Child. `cancel_event` is handed to the generator thread."""

    __slots__ = ("child", "cancel_event", "reason", "started")

    def __init__(self, child: "Child"):
        self.child = child
        self.cancel_event = threading.Event()
        self.reason: str | None = None          # "cancelled" | "timeout" | "shutting_down"
        self.started = time.monotonic()

    @property
    def model(self) -> Any:
        return self.child.model

    def cancel(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.cancel_event.set()


@dataclass(eq=False)
class Child:
    name: str
    path: str
    model: Any                                 # bulletd.runtime model (generate, tokenizer, arch...)
    size: int
    version: str
    signer: str | None                         # key id of the verified signature, None if unsigned
    header: dict
    loaded_since: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    requests: int = 0
    load_ms: float = 0.0
    leases: set = field(default_factory=set)
    retired: bool = False
    session_released: bool = False
    _closer: Callable[[], None] | None = None

    @property
    def active(self) -> int:
        return len(self.leases)

    def info(self, routable_by: str | None = None) -> dict:
        arch = self.header.get("arch", {})
        prov = self.header.get("provenance", {})
        return {
            "name": self.name, "version": self.version, "path": self.path, "size": self.size,
            "signer": self.signer, "loaded_since": round(self.loaded_since, 3),
            "last_used": round(self.last_used, 3), "requests": self.requests, "active": self.active,
            "model_name": prov.get("name"), "load_ms": round(self.load_ms, 2),
            "arch": {k: arch.get(k) for k in ("dim", "n_layers", "vocab_size", "max_seq_len") if k in arch},
            "examples": len(self.header.get("examples") or []), "routable_by": routable_by,
            "retired": self.retired,
        }

    def close(self) -> None:
        closer, self._closer, self.model = self._closer, None, None
        if closer is not None:
            try:
                closer()
            except Exception:  # closing a mapping must never take the daemon down
                log.exception("closing %s failed", self.path)


def open_child(path: str, *, trust: Any, allow_unsigned: bool,
               inside: str | None = None) -> tuple[Any, dict, str | None, Callable[[], None]]:
    """Verify then map then build a model. Runs in a worker thread.

    The signature covers every byte, so it is checked before the file is parsed further than
    its size. `inside` (a directory): the file's real path, resolved once
    here and used from then on, must lie in it, so a symlink re-pointed after the scan cannot
    lead out of the model dir. Returns (model, header, signer key id, closer).
    """
    from bulletd.format import BulletFile

    if inside is not None:
        real = os.path.realpath(path)
        if not real.startswith(os.path.join(os.path.realpath(inside), "")):
            raise RequestError("untrusted", f"{path} is a symlink to {real}, outside the model dir")
        path = real
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise RequestError("not_found", f"no such file: {path}") from None
    except OSError as exc:
        raise RequestError("not_found", f"cannot read {path}: {exc.strerror}") from None
    signer = verify_trust(path, trust=trust, allow_unsigned=allow_unsigned)
    try:
        bf = BulletFile.open(path)
    except FormatError as exc:
        raise RequestError("bad_model", str(exc)) from None
    try:
        st2 = os.fstat(bf._fd) if hasattr(bf, "_fd") else os.stat(path)
        # ctime too: an owner can write other bytes in place and set mtime back (utime), but
        # any write or utime moves ctime
        if (st2.st_dev, st2.st_ino, st2.st_size, st2.st_mtime_ns, st2.st_ctime_ns) != \
                (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns):
            raise RequestError("untrusted", f"{path} changed while it was being verified; try again")
        if bf.kind != "lm":
            raise RequestError("bad_model", f"{path}: expected a child (kind 'lm'), found kind {bf.kind!r}")
        if signer is None:
            bf.verify_body()   # no signature: at least catch corruption
        from bulletd.runtime import load_model
        model = load_model(bf)
        _drop_resident_pages(bf)
    except FormatError as exc:
        bf.close()
        raise RequestError("bad_model", str(exc)) from None
    except ModelError as exc:
        bf.close()
        raise RequestError("bad_model", f"{path}: {exc}") from None
    except BaseException:
        bf.close()
        raise
    header = dict(bf.header)

    def closer() -> None:
        close = getattr(model, "close", None)
        if callable(close):
            close()
        bf.close()
    return model, header, signer, closer


def _drop_resident_pages(bf: Any) -> None:
    """Building the model read every page of the mapping (a kernel path may repack the weights
    into its own layout). The pages are clean and file-backed: let them leave our RSS; the ones
    still read through the mapping fault back in from the page cache on use."""
    mm = getattr(bf, "_mm", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        try:
            mm.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):
            pass


def verify_trust(path: str, *, trust: Any, allow_unsigned: bool) -> str | None:
    """Check `path` + '.sig' against the trust store. Returns the signer key id, or None when the
    file is unsigned and unsigned files are allowed. RequestError(untrusted) otherwise."""
    sig = path + ".sig"
    if not os.path.exists(sig):
        if allow_unsigned:
            return None
        raise RequestError("untrusted", f"{path} is not signed (no {Path(sig).name}); sign it with "
                           "`bullet sign`, or set trust.allow_unsigned: true for development")
    if trust is None:
        raise RequestError("untrusted", f"{path} is signed but the trust store has no keys "
                           "(trust.keys); add the signer's public key")
    from bulletd.signing import verify_file
    try:
        manifest = verify_file(path, trust, sig_path=sig)
    except TrustError as exc:
        raise RequestError("untrusted", f"{path}: {exc} ({getattr(exc, 'code', 'bad_signature')})") from None
    except BulletError as exc:
        raise RequestError("untrusted", f"{path}: signature check failed: {exc}") from None
    kid = getattr(manifest, "key_id", None)
    if kid is None and isinstance(manifest, dict):
        kid = manifest.get("key_id")
    return str(kid) if kid is not None else "?"


def load_trust_store(paths: tuple[str, ...]) -> Any:
    """One TrustStore over the existing paths (PEM files or folders of them), or None if none exist."""
    existing = [p for p in paths if os.path.exists(p)]
    if not existing:
        return None
    from bulletd.signing import TrustStore
    stores = [TrustStore(p) for p in existing]
    if len(stores) == 1:
        return stores[0]
    merged = TrustStore(keys=[k for s in stores for k in s.keys.values()])
    for s in stores:
        merged.sources.update(s.sources)
    return merged


class Registry:
    """Children by name. `acquire(name)` -> Lease; `release(lease)`; load/unload/swap/rollback."""

    def __init__(self, *, model_dir: Path, trust: Any, allow_unsigned: bool, budget_bytes: int,
                 keep_alive: float, load_on_demand: bool, unload_timeout: float,
                 mother_path: str | None, executor: Any = None,
                 on_change: Callable[[str, "Child | None"], None] | None = None):
        self._settings(model_dir=model_dir, trust=trust, allow_unsigned=allow_unsigned, budget_bytes=budget_bytes,
                       keep_alive=keep_alive, load_on_demand=load_on_demand, unload_timeout=unload_timeout,
                       mother_path=mother_path)
        self.executor = executor
        self.on_change = on_change
        self.children: dict[str, Child] = {}     # name -> current version
        self.draining: list[Child] = []          # retired versions with running requests
        self.known: dict[str, str] = {}          # name -> path of every child file found in model_dir
        self.previous: dict[str, str] = {}       # name -> path of the version before the last swap
        self.ever_loaded: set[str] = set()       # names loaded at least once (their examples are known)
        self._locks: dict[str, asyncio.Lock] = {}
        self._drained = asyncio.Event()
        self._outside_logged: set[str] = set()    # symlinks out of model_dir, warned about once
        self.evictions = 0

    def _settings(self, *, model_dir: Path, trust: Any, allow_unsigned: bool, budget_bytes: int,
                  keep_alive: float, load_on_demand: bool, unload_timeout: float, mother_path: str | None) -> None:
        self.model_dir = Path(model_dir)
        self.trust = trust
        self.allow_unsigned = allow_unsigned
        self.budget = budget_bytes
        self.keep_alive = keep_alive
        self.load_on_demand = load_on_demand
        self.unload_timeout = unload_timeout
        self.mother_path = mother_path

    # ------------------------------------------------------------------ discovery
    async def reconfigure(self, *, model_dir: Path, trust: Any, allow_unsigned: bool, budget_bytes: int,
                          keep_alive: float, load_on_demand: bool, unload_timeout: float,
                          mother_path: str | None) -> dict[str, str]:
        """Take new settings (the daemon's SIGHUP): the constructor's arguments but the executor
        and the callback. Idle children are evicted to fit a smaller budget (busy ones stay: a
        warning is logged), then model_dir is scanned again. Returns the scan."""
        self._settings(model_dir=model_dir, trust=trust, allow_unsigned=allow_unsigned, budget_bytes=budget_bytes,
                       keep_alive=keep_alive, load_on_demand=load_on_demand, unload_timeout=unload_timeout,
                       mother_path=mother_path)
        try:
            await self._make_room(0)
        except RequestError as exc:
            log.warning("after reload: %s", exc.message)
        return self.scan()

    def scan(self) -> dict[str, str]:
        """Find child files (`NAME.bullet`, not hidden, not the mother) in model_dir."""
        found: dict[str, str] = {}
        try:
            entries = sorted(os.scandir(self.model_dir), key=lambda e: e.name)
        except FileNotFoundError:
            entries = []
        except OSError as exc:
            log.warning("cannot list model_dir %s: %s", self.model_dir, exc.strerror)
            entries = []
        mother = os.path.realpath(self.mother_path) if self.mother_path else None
        inside = os.path.join(os.path.realpath(self.model_dir), "")
        for e in entries:
            if e.name.startswith(".") or not e.name.endswith(BULLET_SUFFIX) or not e.is_file():
                continue
            name = e.name[: -len(BULLET_SUFFIX)]
            if e.is_symlink() and not os.path.realpath(e.path).startswith(inside):
                if e.path not in self._outside_logged:
                    self._outside_logged.add(e.path)
                    log.warning("ignoring %s: a symlink to %s, outside the model dir", e.path,
                                os.path.realpath(e.path))
                continue
            if mother and os.path.realpath(e.path) == mother:
                continue
            try:
                check_name(name)
            except RequestError:
                log.warning("ignoring %s: its file name is not a valid child name", e.path)
                continue
            found[name] = e.path
        for name, child in self.children.items():
            found.setdefault(name, child.path)   # loaded by path from elsewhere
        self.known = found
        return found

    def available(self) -> set[str]:
        return set(self.known) | set(self.children)

    # ------------------------------------------------------------------ memory
    def used_bytes(self) -> int:
        return sum(c.size for c in self.children.values()) + sum(c.size for c in self.draining)

    async def _make_room(self, size: int, keep: str | None = None) -> None:
        if size > self.budget:
            raise RequestError("no_memory", f"child of {size} bytes is larger than the whole memory budget "
                               f"({self.budget} bytes, registry.memory_budget_mb)")
        while self.used_bytes() + size > self.budget:
            idle = [c for c in self.children.values() if c.active == 0 and c.name != keep]
            if not idle:
                raise RequestError("no_memory", f"need {size} bytes, {self.used_bytes()} of {self.budget} are in "
                                   "use by busy children; try again later or raise registry.memory_budget_mb")
            victim = min(idle, key=lambda c: c.last_used)
            log.info("evicting idle child %s (%d bytes, last used %.1f s ago) to fit %d bytes",
                     victim.name, victim.size, time.time() - victim.last_used, size)
            self.evictions += 1
            self._remove(victim)

    # ------------------------------------------------------------------ load
    def resolve(self, target: str) -> tuple[str, str]:
        """A name (looked up in model_dir) or a path -> (name, path)."""
        if "/" in target or target.endswith(BULLET_SUFFIX):
            path = os.path.abspath(target)
            if not path.endswith(BULLET_SUFFIX):
                raise RequestError("bad_request", f"path {target!r}: expected a file ending in {BULLET_SUFFIX}")
            name = check_name(Path(path).name[: -len(BULLET_SUFFIX)], "file name")
            return name, path
        check_name(target)
        path = self.known.get(target)
        if path is None:
            self.scan()
            path = self.known.get(target)
        if path is None:
            raise RequestError("unknown_child", f"no child named {target!r} is installed in {self.model_dir} "
                               f"(installed: {', '.join(sorted(self.available())) or 'none'})")
        return target, path

    async def _open(self, path: str) -> tuple[Any, dict, str | None, Callable[[], None], float]:
        t0 = time.perf_counter()
        # a file named in the model dir must stay in it, as scan() requires (an admin may still
        # load a path elsewhere)
        inside = str(self.model_dir) if os.path.dirname(os.path.abspath(path)) == \
            os.path.abspath(self.model_dir) else None
        loop = asyncio.get_running_loop()
        model, header, signer, closer = await loop.run_in_executor(
            self.executor, lambda: open_child(path, trust=self.trust, allow_unsigned=self.allow_unsigned,
                                              inside=inside))
        return model, header, signer, closer, (time.perf_counter() - t0) * 1e3

    async def load(self, target: str, *, name: str | None = None, swap: bool = False) -> Child:
        """Load a child by name or path (a no-op if that file is already loaded under the name).
        A different file under a loaded name is RequestError(exists) unless `swap` asks to
        replace it (then it is a swap)."""
        rname, path = self.resolve(target)
        if name is not None:
            rname = check_name(name)
        async with self._lock(rname):
            cur = self.children.get(rname)
            if cur is not None and os.path.realpath(cur.path) == os.path.realpath(path):
                cur.last_used = time.time()
                return cur
            if cur is not None:
                if not swap:
                    raise RequestError("exists", f"a child named {rname!r} is already loaded (from {cur.path}); "
                                       "unload it first, or ask for a swap (load with swap: true, "
                                       "bulletd-cli load PATH --as NAME --swap)")
                return await self._swap_locked(rname, path)
            size = _file_size(path)
            await self._make_room(size)
            model, header, signer, closer, ms = await self._open(path)
            child = Child(rname, path, model, size, str(header.get("provenance", {}).get("version", "0")),
                          signer, header, load_ms=ms, _closer=closer)
            self.children[rname] = child
            # other loads may have finished while this one ran: evict idle others if now over
            try:
                await self._make_room(0, keep=rname)
            except RequestError:
                pass
            self.known.setdefault(rname, path)
            self.ever_loaded.add(rname)
            log.info("loaded child %s v%s from %s (%d bytes, signer %s) in %.1f ms",
                     rname, child.version, path, size, signer or "none (unsigned)", ms)
            self._changed(rname, child)
            return child

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    def _changed(self, name: str, child: Child | None) -> None:
        if self.on_change is not None:
            try:
                self.on_change(name, child)
            except Exception:
                log.exception("registry change hook failed for %s", name)

    # ------------------------------------------------------------------ swap / rollback (OTA hooks)
    async def swap(self, name: str, path: str) -> dict:
        """Atomically replace child `name` by the verified file at `path`.

        Running requests finish on the old version; requests that start after this returns get
        the new one. The old file's path is remembered for `rollback(name)`. A file that fails
        verification or parsing leaves the current version in place (RequestError raised).
        """
        check_name(name)
        path = os.path.abspath(path)
        async with self._lock(name):
            child = await self._swap_locked(name, path)
        return {"name": name, "version": child.version, "path": child.path,
                "previous": self.previous.get(name)}

    async def _swap_locked(self, name: str, path: str) -> Child:
        old = self.children.get(name)
        size = _file_size(path)
        await self._make_room(size, keep=name)
        model, header, signer, closer, ms = await self._open(path)
        new = Child(name, path, model, size, str(header.get("provenance", {}).get("version", "0")),
                    signer, header, load_ms=ms, _closer=closer)
        if old is not None:
            new.requests = old.requests
            if os.path.realpath(old.path) != os.path.realpath(path):
                self.previous[name] = old.path
            else:
                # replaced in place (e.g. by an OTA install): no file of the old version is left
                self.previous.pop(name, None)
        self.children[name] = new        # the swap: one dict assignment on the loop thread
        self.known[name] = path
        if old is not None:
            self._retire(old)
            log.info("swapped child %s: v%s (%s) -> v%s (%s); %d request(s) finish on the old version",
                     name, old.version, old.path, new.version, path, old.active)
        self._changed(name, new)
        return new

    async def rollback(self, name: str) -> dict:
        """Swap `name` back to the file it ran before its last swap."""
        check_name(name)
        prev = self.previous.get(name)
        if prev is None:
            raise RequestError("bad_request", f"child {name!r} has no previous version to roll back to")
        if not os.path.exists(prev):
            raise RequestError("not_found", f"previous version of {name!r} is gone: {prev}")
        cur = self.children.get(name)
        async with self._lock(name):
            child = await self._swap_locked(name, prev)
        if cur is not None:
            self.previous[name] = cur.path
        return {"name": name, "version": child.version, "path": child.path, "previous": self.previous.get(name)}

    # ------------------------------------------------------------------ use
    async def acquire(self, name: str) -> Lease:
        """A lease on the current version of `name`, loading it on demand."""
        child = self.children.get(name)
        if child is None:
            if not self.load_on_demand:
                raise RequestError("unknown_child", f"child {name!r} is not loaded (registry.load_on_demand is off)")
            child = await self.load(name)
            child = self.children.get(name, child)
        lease = Lease(child)
        child.leases.add(lease)
        child.session_released = False
        child.requests += 1
        child.last_used = time.time()
        return lease

    def release(self, lease: Lease) -> None:
        child = lease.child
        child.leases.discard(lease)
        child.last_used = time.time()
        if child.retired and not child.leases:
            self._close_retired(child)

    # ------------------------------------------------------------------ unload
    async def unload(self, name: str, *, mode: str = "wait", timeout: float | None = None) -> dict:
        """Unload `name`. New requests stop getting it at once; running ones are waited for
        (mode "wait", up to `timeout`, then RequestError busy while it keeps draining) or
        cancelled with an error reply (mode "cancel")."""
        check_name(name)
        if mode not in ("wait", "cancel"):
            raise RequestError("bad_request", f"mode: expected wait or cancel, found {mode!r}")
        child = self.children.get(name)
        if child is None:
            raise RequestError("unknown_child", f"child {name!r} is not loaded "
                               f"(loaded: {', '.join(sorted(self.children)) or 'none'})")
        t0 = time.monotonic()
        running = child.active
        self._remove(child)
        if mode == "cancel":
            for lease in list(child.leases):
                lease.cancel("cancelled")
        wait_for = self.unload_timeout if timeout is None else timeout
        while child.leases:
            if time.monotonic() - t0 > wait_for:
                raise RequestError("busy", f"child {name!r} still has {child.active} running request(s) after "
                                   f"{wait_for:.1f} s; it is unloaded for new requests and closes when they end")
            self._drained.clear()
            try:
                await asyncio.wait_for(self._drained.wait(), 0.05)
            except asyncio.TimeoutError:
                pass
        log.info("unloaded child %s (mode %s, %d running request(s))", name, mode, running)
        return {"name": name, "version": child.version, "mode": mode, "running": running,
                "waited_ms": round((time.monotonic() - t0) * 1e3, 1)}

    def _remove(self, child: Child) -> None:
        if self.children.get(child.name) is child:
            del self.children[child.name]
        self._retire(child)
        self._changed(child.name, None)

    def _retire(self, child: Child) -> None:
        child.retired = True
        if child.leases:
            if child not in self.draining:
                self.draining.append(child)
        else:
            self._close_retired(child)

    def _close_retired(self, child: Child) -> None:
        if child in self.draining:
            self.draining.remove(child)
        child.close()
        self._drained.set()

    # ------------------------------------------------------------------ keep-alive
    def expire_idle(self, now: float | None = None) -> list[str]:
        if self.keep_alive <= 0:
            return []
        now = time.time() if now is None else now
        gone = [c for c in self.children.values() if c.active == 0 and now - c.last_used > self.keep_alive]
        for c in gone:
            log.info("keep-alive: unloading %s, idle for %.1f s", c.name, now - c.last_used)
            self._remove(c)
        return [c.name for c in gone]

    def release_sessions(self, idle_s: float, now: float | None = None) -> list[str]:
        """Free the cached session (KV cache kept for prompt-prefix reuse) of children idle for
        idle_s seconds. The next request simply allocates a new one."""
        if idle_s <= 0:
            return []
        now = time.time() if now is None else now
        done = []
        for c in self.children.values():
            if c.active == 0 and not c.session_released and now - c.last_used > idle_s:
                rel = getattr(c.model, "release_idle", None)
                if callable(rel):
                    rel()
                c.session_released = True
                done.append(c.name)
        return done

    def cancel_all(self, reason: str) -> int:
        n = 0
        for c in list(self.children.values()) + list(self.draining):
            for lease in list(c.leases):
                lease.cancel(reason)
                n += 1
        return n

    def close_all(self) -> None:
        for c in list(self.children.values()):
            self._remove(c)
        for c in list(self.draining):
            self._close_retired(c)

    def listing(self, routable_by: Callable[[str], str | None] | None = None, include_available: bool = False) -> list[dict]:
        rb = routable_by or (lambda n: None)
        out = [c.info(rb(c.name)) for c in sorted(self.children.values(), key=lambda c: c.name)]
        if include_available:
            for name in sorted(set(self.known) - set(self.children)):
                out.append({"name": name, "path": self.known[name], "loaded": False,
                            "size": _file_size(self.known[name], missing_ok=True), "routable_by": rb(name)})
        for c in self.draining:
            out.append(c.info(None))
        return out


def _file_size(path: str, missing_ok: bool = False) -> int:
    try:
        return os.stat(path).st_size
    except OSError as exc:
        if missing_ok:
            return 0
        raise RequestError("not_found", f"cannot read {path}: {exc.strerror}") from None
