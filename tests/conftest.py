"""Shared fixtures: the steering repo's shared/ folder, and a real Mosquitto broker.

`shared_dir` skips a test with a clear reason when ../shared is absent (a user's fresh clone);
with BULLET_REQUIRE_SHARED=1 (set by .ci/run) the absence is a failure instead.
"""
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("BULLET_SHARED", ROOT.parent / "shared"))


def _need(path: Path, what: str) -> Path:
    if path.exists():
        return path
    msg = f"{what} not found at {path} (the steering repo's shared/ folder is not beside this checkout)"
    if os.environ.get("BULLET_REQUIRE_SHARED") == "1":
        pytest.fail(msg + "; BULLET_REQUIRE_SHARED=1 makes this a failure")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _need(SHARED, "shared/")


@pytest.fixture(scope="session")
def stories260k(shared_dir) -> Path:
    return _need(shared_dir / "models" / "stories260K.bin", "stories260K.bin")


@pytest.fixture(scope="session")
def marathi_corpus(shared_dir) -> Path:
    return _need(shared_dir / "data" / "marathi.jsonl", "marathi.jsonl")


@pytest.fixture(scope="session")
def english_corpus(shared_dir) -> Path:
    return _need(shared_dir / "data" / "fortunes_en.jsonl", "fortunes_en.jsonl")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"mosquitto did not listen on 127.0.0.1:{port} within {timeout} s")


class Broker:
    """A real mosquitto process on a free loopback port. restart() keeps the port."""

    def __init__(self, workdir: Path, extra_conf: str = ""):
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(exe):
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.exe = exe
        self.port = free_port()
        self.host = "127.0.0.1"
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            f"set_tcp_nodelay true\nlog_dest file {self.log}\nlog_type error\nlog_type warning\n{extra_conf}"
        )
        self.proc = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        _wait_port(self.port)

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop(kill=True)
        self.start()


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path)
    yield b
    b.stop()
