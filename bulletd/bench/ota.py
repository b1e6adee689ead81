"""OTA push figures over loopback: `python -m bulletd.bench.ota [--size-mb 5] [--repeat 3]`.

Starts a private Mosquitto and a real `bulletd` (MQTT + OTA on, one child "kid" installed),
keeps it busy with generate requests on the Unix socket, pushes signed children of about 5 MB
(the REFERENCE configuration) version after version, and prints, per push:

  push       offer sent -> "installed" status from the device (transfer + verify + smoke + swap)
  transfer   offer -> last chunk sent, and the resulting MB/s
  to live    last chunk sent -> "installed" status, and -> first reply from the new version
  failed     generate requests that failed during the pushes (target 0)

Baselines measured in the same process: the same bytes as ONE QoS1 MQTT message through the same
broker (the transport's floor), and a local copy + fsync of the file (the disk's floor).
Figures are noisy on a shared machine; the printed baselines give the scale.
"""
from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiomqtt

from bulletd.bench.daemon import _free_port
from bulletd.ota.push import DEFAULT_CHUNK, Pusher, parse_size


def _wait(pred, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            v = pred()
            if v:
                return v
        except Exception:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def _make_child(path: Path, key: Path, version: int, size_mb: float) -> Path:
    """A random child near size_mb (REFERENCE shape, layers scaled) with verification vectors."""
    from bulletd.format.synth import REFERENCE, write_random_lm
    from bulletd.ota.smoke import _greedy
    from bulletd.runtime import load_model
    from bulletd.signing import sign_file
    arch = dict(REFERENCE, n_layers=max(1, round(8 * size_mb / 5.0)))
    write_random_lm(path, arch, seed=version, name="kid", version=str(version))
    with load_model(str(path)) as m:
        vecs = []
        for prompt in ("the cat", "once upon a time"):
            ids = m.tokenizer.encode(prompt, bos=True)
            vecs.append({"prompt": prompt, "ids": ids, "expected": _greedy(m, ids, 8)})
    write_random_lm(path, arch, seed=version, name="kid", version=str(version),
                    extra={"verification": vecs})
    sign_file(path, key)
    return path


async def _raw_publish(port: int, data: bytes) -> float:
    """Seconds for one QoS1 message of len(data) bytes from a publisher to a subscriber."""
    got = asyncio.Event()
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-sub",
                              max_queued_incoming_messages=16) as sub, \
            aiomqtt.Client("127.0.0.1", port, identifier="bench-pub") as pub:
        await sub.subscribe("bench/raw", qos=1)

        async def reader():
            async for msg in sub.messages:
                if len(msg.payload) == len(data):
                    got.set()
                    return
        task = asyncio.create_task(reader())
        await asyncio.sleep(0.1)
        t0 = time.perf_counter()
        await pub.publish("bench/raw", data, qos=1, timeout=60)
        await asyncio.wait_for(got.wait(), 60)
        dt = time.perf_counter() - t0
        task.cancel()
    return dt


def _copy_fsync(src: Path, dst: Path) -> float:
    t0 = time.perf_counter()
    shutil.copyfile(src, dst)
    fd = os.open(dst, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    return time.perf_counter() - t0


class _Load:
    def __init__(self, sock: str, n: int):
        self.sock, self.stop = sock, threading.Event()
        self.ok = self.failed = 0
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]

    def _run(self):
        from bulletd.client import Client
        with Client(self.sock, timeout=60) as c:
            while not self.stop.is_set():
                try:
                    c.generate("the cat sat on", child="kid", max_tokens=8, temperature=0)
                    self.ok += 1
                except Exception as exc:   # counted and shown: this is the figure
                    self.failed += 1
                    self.errors.append(f"{type(exc).__name__}: {exc}")

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(60)


class _Watch:
    """One client asking for a single token back to back: when each reply came, which version."""

    def __init__(self, sock: str):
        self.sock, self.stop = sock, threading.Event()
        self.seen: list[tuple[float, str]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        from bulletd.client import Client
        with Client(self.sock, timeout=60) as c:
            while not self.stop.is_set():
                try:
                    r = c.generate("hi", child="kid", max_tokens=1, temperature=0)
                    self.seen.append((time.monotonic(), str(r.raw.get("version"))))
                except Exception:   # the load clients count failures; this one only watches
                    time.sleep(0.01)

    def first(self, version: str, after: float) -> float:
        return min((t for t, v in self.seen if v == version and t >= after), default=float("nan"))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(60)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bulletd.bench.ota", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=5.0)
    ap.add_argument("--chunk-size", type=parse_size, default=DEFAULT_CHUNK)
    ap.add_argument("--repeat", type=int, default=3, help="pushes (versions 2..repeat+1)")
    ap.add_argument("--clients", type=int, default=2, help="clients generating during pushes")
    ap.add_argument("--nodelay", action="store_true",
                    help="run the broker with set_tcp_nodelay true (recommended for OTA)")
    return ap


def main(argv=None) -> int:
    return run(_parser().parse_args(argv))


def run(args) -> int:
    mosq = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(mosq):
        print("bench needs mosquitto (apt-get install mosquitto)", file=sys.stderr)
        return 2
    from bulletd.signing import generate_keypair
    tmp = Path(tempfile.mkdtemp(prefix="bullet-push-bench-"))
    procs = []
    try:
        port = _free_port()
        (tmp / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                                            f"persistence false\n"
                                            + ("set_tcp_nodelay true\n" if args.nodelay else ""))
        procs.append(subprocess.Popen([mosq, "-c", str(tmp / "mosquitto.conf")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait(lambda: socket.create_connection(("127.0.0.1", port), 0.2).close() or True, 10,
              "mosquitto")
        key, pub = generate_keypair("bench", tmp / "keys")
        trust = tmp / "trust"
        trust.mkdir()
        shutil.copy(pub, trust / "bench.pem")
        print(f"making {args.repeat + 1} signed children of ~{args.size_mb} MB ...", flush=True)
        files = [_make_child(tmp / f"kid-{v}.bullet", key, v, args.size_mb)
                 for v in range(1, args.repeat + 2)]
        size = files[0].stat().st_size
        models = tmp / "models"
        models.mkdir()
        shutil.copy(files[0], models / "kid.bullet")
        shutil.copy(str(files[0]) + ".sig", models / "kid.bullet.sig")

        raw = [asyncio.run(_raw_publish(port, files[0].read_bytes())) for _ in range(3)]
        cp = [_copy_fsync(files[0], tmp / f"copy{i}") for i in range(3)]

        sock = str(tmp / "bulletd.sock")
        import yaml
        (tmp / "bulletd.yaml").write_text(yaml.safe_dump({
            "device_id": "bench", "model_dir": str(models), "socket": {"path": sock},
            "trust": {"keys": [str(trust)]}, "log_level": "warning",
            "mqtt": {"host": "127.0.0.1", "port": port}, "scheduler": {"workers": 2}}))
        log = open(tmp / "bulletd.log", "wb")
        procs.append(subprocess.Popen([sys.executable, "-m", "bulletd.daemon", "--config",
                                       str(tmp / "bulletd.yaml")], stdout=log,
                                      stderr=subprocess.STDOUT))
        from bulletd.client import Client
        def ota_up():
            with Client(sock, timeout=5) as c:
                return c.status()["ota"]["connected"]
        _wait(ota_up, 60,
              "bulletd with OTA connected")

        rows = []
        with _Load(sock, args.clients) as load, _Watch(sock) as watch:
            time.sleep(0.5)
            for f in files[1:]:
                p = Pusher(f, host="127.0.0.1", port=port, devices=("bench",),
                           chunk_size=args.chunk_size, timeout=120, reoffer=2.0)
                t0 = time.monotonic()
                out = asyncio.run(p.run())["bench"]
                if out.state != "installed":
                    print(f"push of {f.name} ended {out.state}: {out.reason} {out.message}")
                    return 1
                last = out.last_chunk_at
                wait_until = time.monotonic() + 10
                while (math.isnan(watch.first(p.manifest["version"], last))
                       and time.monotonic() < wait_until):
                    time.sleep(0.02)   # no reply from the new version yet
                serve = watch.first(p.manifest["version"], last) - last
                st = {s["state"]: s["ts"] for s in out.statuses}
                rows.append({"push": out.installed_at - t0, "transfer": last - t0,
                             "to_installed": out.installed_at - last,
                             "to_serving": serve, "chunks": out.chunks_sent,
                             "verify": st.get("verified", 0) - st.get("received", 0),
                             "smoke_swap": st.get("installed", 0) - st.get("verified", 0),
                             "swap": (out.status or {}).get("swap_seconds", float("nan"))})
            time.sleep(0.3)
        mb = size / 1e6
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(f"\nbroker: mosquitto, set_tcp_nodelay {'true' if args.nodelay else 'false (default)'}")
        print(f"OTA push over loopback: {mb:.2f} MB child, chunks of {args.chunk_size // 1024} KiB "
              f"({rows[0]['chunks']} chunks), {len(rows)} pushes, {args.clients} clients "
              f"generating throughout (median of pushes; noisy shared machine)")
        print(f"  push, offer -> installed        {med['push'] * 1e3:8.1f} ms   "
              f"({mb / med['push']:.1f} MB/s end to end)")
        print(f"  transfer, offer -> last chunk   {med['transfer'] * 1e3:8.1f} ms   "
              f"({mb / med['transfer']:.1f} MB/s)")
        print(f"  last chunk -> installed status  {med['to_installed'] * 1e3:8.1f} ms   "
              f"(device: verify {med['verify'] * 1e3:.1f} ms, smoke test + install + swap "
              f"{med['smoke_swap'] * 1e3:.1f} ms, of which swap {med['swap'] * 1e3:.1f} ms)")
        print(f"  last chunk -> serving new ver.  {med['to_serving'] * 1e3:8.1f} ms   "
              f"(first reply carrying the new version, 1-token requests back to back)")
        print(f"  requests during pushes          {load.ok + load.failed:8d}      failed: "
              f"{load.failed}" + (f"  e.g. {load.errors[0]}" if load.errors else ""))
        print("baselines (same process, same broker):")
        print(f"  one {mb:.2f} MB QoS1 message       {statistics.median(raw) * 1e3:8.1f} ms   "
              f"({mb / statistics.median(raw):.1f} MB/s)")
        print(f"  local copy + fsync              {statistics.median(cp) * 1e3:8.1f} ms   "
              f"({mb / statistics.median(cp):.1f} MB/s)")
        return 0 if load.failed == 0 else 1
    finally:
        for pr in reversed(procs):
            pr.terminate()
            try:
                pr.wait(20)
            except subprocess.TimeoutExpired:
                pr.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
