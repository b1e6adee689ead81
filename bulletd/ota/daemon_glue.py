"""How bulletd runs the OTA receiver: built from the daemon config, recovery before the children
load, its own MQTT connection next to the daemon's, hot swap through Registry.swap, and the
admin operations behind `bulletd-cli rollback NAME` and `bulletd-cli install FILE [--force]`.

The daemon calls, in order: make_receiver(daemon) before it scans the model directory (this runs
the crash recovery, so the registry only ever sees whole children), start(daemon) once its own
transports are up, and rollback()/install()/annotate()/status() from its request handlers.
"""
from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from bulletd.errors import RequestError
from bulletd.mqtt_conn import read_password
from bulletd.ota.protocol import OtaError
from bulletd.ota.receiver import OtaConfig, OtaReceiver

log = logging.getLogger("bulletd.ota")


def ota_dir_for(cfg) -> Path:
    """ota.dir, or <model_dir>/.ota: on the model directory's filesystem, so that installs are
    renames; hidden, so the registry's scan never takes it for a child."""
    return Path(cfg.ota.dir) if cfg.ota.dir else cfg.models / ".ota"


def receiver_config(cfg) -> OtaConfig:
    o, m = cfg.ota, cfg.mqtt
    groups = list(o.groups)
    if m.fleet.enabled and m.fleet.group not in groups:
        groups.append(m.fleet.group)   # a device serving a fleet also takes that fleet's pushes
    return OtaConfig(device=cfg.device, host=m.host or "127.0.0.1", port=m.port, prefix=m.prefix,
                     groups=tuple(groups), username=m.username or None,
                     password=read_password(m.password, m.password_file),
                     window=o.window, chunk_timeout=o.chunk_timeout,
                     stall_timeout=o.stall_timeout,
                     max_file_size=int(o.max_file_size_mb * (1 << 20)),
                     min_free_bytes=int(o.min_free_mb * (1 << 20)),
                     require_vectors=o.require_vectors, smoke_test=o.smoke_test,
                     keepalive=m.keepalive, reconnect_max=min(m.reconnect_max, 10.0),
                     tls=m.tls if m.tls.enabled else None)


def make_receiver(daemon) -> OtaReceiver | None:
    """Build the receiver (and run its crash recovery) unless OTA is off or there is no trust
    store: without trusted keys no push could ever verify."""
    cfg = daemon.cfg
    if not cfg.ota.enabled:
        return None
    trust = daemon.registry.trust
    if trust is None or len(trust) == 0:
        log.warning("OTA receiver off: no trusted keys (trust.keys), so no push could verify")
        return None

    async def swap(name: str, path: Path, manifest: dict) -> None:
        if _is_mother(daemon, name, path):
            await _swap_mother(daemon, path, manifest)
        else:
            await daemon.registry.swap(name, str(path))

    try:
        rx = OtaReceiver(receiver_config(cfg), trust, cfg.models, ota_dir_for(cfg),
                         install_hook=swap)
    except (OSError, ValueError) as exc:
        # OTA is an extra: a read-only model dir or a bad group name must not stop serving
        log.error("OTA receiver off: %s", exc)
        return None
    for line in rx.recovered:
        log.warning("OTA recovery: %s", line)
    return rx


def _is_mother(daemon, name: str, path: Path) -> bool:
    """The pushed file is the mother: the configured mother path, or with none configured, a
    file named mother.bullet (the daemon's default mother location)."""
    mp = daemon.registry.mother_path
    if mp:
        return os.path.realpath(mp) == os.path.realpath(path)
    return name == "mother" and not daemon.cfg.router.mother


async def _swap_mother(daemon, path: Path, manifest: dict) -> None:
    """Reload the mother from the new file; a failure leaves the old mother routing."""
    from bulletd.router import load_mother
    loop = asyncio.get_running_loop()
    mother = await loop.run_in_executor(None, load_mother, str(path))   # raises: swap_failed
    daemon.registry.mother_path = str(path)
    daemon.router.set_mother(mother)
    daemon.mother_info = {"path": str(path), "name": mother.name, "version": mother.version,
                          "labels": mother.labels, "threshold": mother.threshold,
                          "size": mother.size, "signer": manifest.get("key_id")}
    log.info("mother %s v%s swapped in by OTA", mother.name, mother.version)


def start(daemon) -> asyncio.Task | None:
    """Start the receiver's connection loop when MQTT is configured."""
    rx = getattr(daemon, "ota", None)
    if rx is None or not daemon.cfg.mqtt.host:
        return None
    task = asyncio.create_task(rx.run(), name="ota-receiver")

    def ended(t: asyncio.Task) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.error("OTA receiver stopped: %r", t.exception(), exc_info=t.exception())
    task.add_done_callback(ended)
    return task


def _final(st: dict) -> dict:
    if st.get("state") != "installed":
        raise RequestError(st.get("reason") or "internal", st.get("message") or "install failed")
    return {"name": st.get("name"), "version": st.get("version"), "sha256": st.get("sha256"),
            "push_id": st.get("push_id"), "smoke": st.get("smoke"),
            "swap_seconds": st.get("swap_seconds")}


async def rollback(daemon, name: str) -> dict:
    """`bulletd-cli rollback NAME`: the on-disk previous version goes live again (signature and
    smoke test checked again); falls back to the registry's in-memory previous file."""
    rx = getattr(daemon, "ota", None)
    if rx is None or not (rx.previous / f"{name}.bullet").exists():
        return await daemon.registry.rollback(name)
    try:
        return _final(await rx.rollback(name))
    except OtaError as exc:
        raise RequestError(exc.reason, exc.message) from exc


async def install(daemon, path: str, *, sig: str | None = None, force: bool = False) -> dict:
    """`bulletd-cli install FILE [--force]`: install a signed file from local disk like a push.
    --force lets an administrator install a lower version (never an unsigned file)."""
    rx = getattr(daemon, "ota", None)
    if rx is None:
        raise RequestError("bad_request", "install: the OTA receiver is off (ota.enabled false or "
                                          "no trusted keys)")
    if not Path(path).is_file():
        raise RequestError("not_found", f"install: {path} is not a file")
    try:
        return _final(await rx.install_local(path, sig, force=force))
    except OtaError as exc:
        raise RequestError(exc.reason, exc.message) from exc


def annotate(daemon, children: list[dict]) -> list[dict]:
    """Add each child's last OTA result to a `list` reply."""
    rx = getattr(daemon, "ota", None)
    if rx is not None:
        for c in children:
            last = rx.ledger.last.get(c.get("name"))
            if last:
                c["ota"] = dict(last)
    return children


def status(daemon) -> dict:
    rx = getattr(daemon, "ota", None)
    if rx is None:
        return {"enabled": False}
    s = rx.status()
    s["enabled"] = True
    s["connected"] = bool(rx.connected and rx.connected.is_set())
    return s
