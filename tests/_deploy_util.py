"""Helpers for the deployment tests (tests/test_deploy*.py): paths, a TLS broker built from the
shipped example config, and running the installer into a temporary root.

The broker helper starts the real mosquitto with deploy/mosquitto/bulletd.conf and
deploy/mosquitto/acl, changing only what a test must change: listener ports (free loopback
ports), the certificate/password/ACL paths (files made at test time), and `user root` so the
broker can read files in pytest's private temporary folder instead of dropping to the mosquitto
user.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from conftest import _wait_port, free_port   # one implementation for every broker the tests start

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "bulletd.service"
INSTALL = DEPLOY / "install.sh"
MOSQ_DIR = DEPLOY / "mosquitto"



def mosquitto_exe() -> str:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(exe):
        raise RuntimeError("mosquitto is not installed (apt-get install mosquitto mosquitto-clients)")
    return exe


def make_certs(directory: Path, host: str = "localhost", *ips: str) -> Path:
    """Run the shipped make-certs.sh (the command the guide tells users to run)."""
    out = subprocess.run(["sh", str(MOSQ_DIR / "make-certs.sh"), str(directory), host, *ips],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"make-certs.sh failed ({out.returncode}): {out.stderr}")
    return directory


def make_passwords(path: Path, users: dict[str, str]) -> Path:
    """mosquitto_passwd -b, exactly as docs/DEPLOY.md shows (first user with -c)."""
    exe = shutil.which("mosquitto_passwd")
    if exe is None:
        raise RuntimeError("mosquitto_passwd is not installed (apt-get install mosquitto)")
    first = True
    for user, pw in users.items():
        cmd = [exe, "-c", "-b", str(path), user, pw] if first else [exe, "-b", str(path), user, pw]
        subprocess.run(cmd, check=True, capture_output=True, timeout=30)
        first = False
    return path


class TLSBroker:
    """mosquitto running the shipped bulletd.conf + acl on two free loopback ports."""

    def __init__(self, workdir: Path, users: dict[str, str]):
        self.workdir = workdir
        self.certs = make_certs(workdir / "certs", "localhost", "127.0.0.1")
        self.passwd = make_passwords(workdir / "bulletd.passwd", users)
        self.acl = workdir / "bulletd.acl"
        shutil.copy(MOSQ_DIR / "acl", self.acl)
        self.tls_port = free_port()
        self.plain_port = free_port()
        self.log = workdir / "mosquitto.log"
        self.conf = workdir / "bulletd.conf"
        self.conf.write_text(self._test_conf((MOSQ_DIR / "bulletd.conf").read_text()))
        self.proc = subprocess.Popen([mosquitto_exe(), "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_port(self.tls_port)
            _wait_port(self.plain_port)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {self.log_text()}")

    def _test_conf(self, text: str) -> str:
        swaps = {
            r"^listener 8883$": f"listener {self.tls_port} 127.0.0.1",
            r"^listener 1883 127\.0\.0\.1$": f"listener {self.plain_port} 127.0.0.1",
            r"/etc/mosquitto/certs": str(self.certs),
            r"/etc/mosquitto/bulletd\.passwd": str(self.passwd),
            r"/etc/mosquitto/bulletd\.acl": str(self.acl),
        }
        for pattern, repl in swaps.items():
            text, n = re.subn(pattern, repl, text, flags=re.M)
            if n == 0:
                raise AssertionError(f"deploy/mosquitto/bulletd.conf no longer contains {pattern!r}")
        return text + (f"\n# test only\nuser root\npersistence false\nlog_dest file {self.log}\n"
                       "log_type error\nlog_type warning\nlog_type notice\n")

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else "(no log)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def wait_for(pred, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def stop_daemon(d: subprocess.Popen, log) -> None:
    """SIGTERM a daemon the test started, wait for its clean exit (kill it if it hangs), close
    its log file. The caller then asserts on d.returncode and the log."""
    d.send_signal(signal.SIGTERM)
    try:
        d.wait(timeout=30)
    finally:
        if d.poll() is None:
            d.kill()
        log.close()
