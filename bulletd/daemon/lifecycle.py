"""Process lifecycle helpers: sd_notify without libsystemd, the watchdog period, and
journald-friendly logging to stderr.

sd_notify: one datagram per message to $NOTIFY_SOCKET (a path, or "@name" for the abstract
namespace). With no NOTIFY_SOCKET every call is a no-op, so the daemon runs the same by hand.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import time


class Notifier:
    """READY=1 / STATUS= / WATCHDOG=1 / STOPPING=1 / RELOADING=1 to systemd (or a test stand-in)."""

    def __init__(self, env: dict | None = None):
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self.addr: str | None = None
        self.sock: socket.socket | None = None
        if addr:
            self.addr = "\0" + addr[1:] if addr.startswith("@") else addr
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        # watchdog: only when it is meant for us (WATCHDOG_PID unset or our pid)
        self.watchdog_period: float | None = None
        usec = env.get("WATCHDOG_USEC")
        wpid = env.get("WATCHDOG_PID")
        if usec and (not wpid or wpid == str(os.getpid())):
            try:
                v = int(usec)
                if v > 0:
                    self.watchdog_period = v / 1e6
            except ValueError:
                logging.getLogger("bulletd").warning("ignoring WATCHDOG_USEC=%r (not an integer)", usec)

    @property
    def enabled(self) -> bool:
        return self.sock is not None

    def notify(self, *lines: str) -> bool:
        if self.sock is None:
            return False
        try:
            self.sock.sendto("\n".join(lines).encode("utf-8", "replace"), self.addr)
            return True
        except OSError as exc:
            # systemd gone or the socket full: log once per call, never fail the daemon
            logging.getLogger("bulletd").debug("sd_notify failed: %s", exc)
            return False

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def reloading(self) -> bool:
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={int(time.monotonic() * 1e6)}")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def tune_malloc() -> bool:
    """glibc: give large blocks (a session's KV cache is megabytes) back to the system when
    they are freed, and cap per-thread arenas. Without this, freed caches of finished requests
    stay in the heap and the RSS only grows. No-op elsewhere (musl, macOS)."""
    import ctypes
    import ctypes.util
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8
    ok = mallopt(M_MMAP_THRESHOLD, 256 * 1024) == 1
    ok &= mallopt(M_ARENA_MAX, 2) == 1
    return bool(ok)


def trim_memory() -> bool:
    """glibc: hand the free pages of the heap back to the system (malloc_trim). A burst of
    requests leaves freed memory in the heap that malloc keeps otherwise. No-op elsewhere."""
    import ctypes
    import ctypes.util
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    return bool(trim(0))


_PRIO = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    """`<prio>logger: message` lines: journald reads the priority prefix, no timestamp needed."""

    def format(self, record: logging.LogRecord) -> str:
        msg = super().format(record)
        prio = _PRIO.get(record.levelno, 6)
        return "\n".join(f"<{prio}>{record.name}: {line}" for line in msg.splitlines() or [""])


def _stderr_is_journal() -> bool:
    js = os.environ.get("JOURNAL_STREAM")
    if not js:
        return False
    try:
        dev, ino = (int(x) for x in js.split(":"))
        st = os.fstat(sys.stderr.fileno())
        return (st.st_dev, st.st_ino) == (dev, ino)
    except (ValueError, OSError):
        return False


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if _stderr_is_journal():
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # aiomqtt logs "Future exception was never retrieved" noise on broker drops; keep it quiet
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    logging.getLogger("mqtt").setLevel(logging.WARNING)
