"""MQTT flood: what a burst of requests does to bulletd's memory, and whether it comes back.

    python -m bulletd.bench.flood                     # 2 bursts of 3,000 requests
    python -m bulletd.bench.flood --requests 1000 --rounds 3 --json

It writes a signed synthetic SMALL child, starts mosquitto on a free loopback port (or uses
--broker HOST:PORT) and one bulletd with one worker thread and a short queue, then publishes
each burst of QoS 1 requests as fast as the client can: every other one a 32-token generation
(most of them answered `busy`, the queue being full), the others cheap ops (ping, status,
route, list). It waits for every final reply, lets the daemon go idle, and prints the daemon's
RSS before the first burst, its peak during each burst, and after each burst. It exits 1 when a
request got no final reply or more than one.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bulletd.bench.daemon import _free_port, _port_open, _wait

MB = 1 << 20


class _Sampler:
    """The peak RSS of a process, sampled every 10 ms on a thread."""

    def __init__(self, pid: int):
        import psutil
        self.p = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._t: threading.Thread | None = None

    def rss(self) -> int:
        return self.p.memory_info().rss

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.01)

    def __enter__(self) -> "_Sampler":
        self.peak = self.rss()
        self._stop.clear()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


async def _burst(host: str, port: int, device: str, n: int) -> dict:
    """Publish n requests at once and wait for their final replies."""
    import aiomqtt
    import msgpack
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    reply_topic = f"bulletd-flood/{uuid.uuid4().hex[:8]}"
    finals: dict[bytes, int] = {}
    codes: dict[str, int] = {}
    done = asyncio.Event()
    cheap = ({"op": "ping"}, {"op": "status"}, {"op": "route", "prompt": "the cat sat"}, {"op": "list"})
    async with aiomqtt.Client(host, port, protocol=aiomqtt.ProtocolVersion.V5,
                              identifier=f"flood-{uuid.uuid4().hex[:8]}") as c:
        c.pending_calls_threshold = n + 10   # every publish is awaited at once on purpose
        await c.subscribe(reply_topic, qos=1)

        async def read() -> None:
            async for m in c.messages:
                obj = msgpack.unpackb(bytes(m.payload), raw=False)
                if not obj.get("final"):
                    continue
                corr = m.properties.CorrelationData
                finals[corr] = finals.get(corr, 0) + 1
                code = "ok" if obj.get("ok") else obj["error"]["code"]
                codes[code] = codes.get(code, 0) + 1
                if len(finals) == n:
                    done.set()

        reader = asyncio.create_task(read())
        t0 = time.perf_counter()

        async def send(i: int) -> None:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = reply_topic
            props.CorrelationData = i.to_bytes(4, "big")
            req = ({"prompt": "Once upon a time", "max_tokens": 32, "seed": i} if i % 2 == 0
                   else cheap[(i // 2) % len(cheap)])
            await c.publish(f"bullet/{device}/req", msgpack.packb(req), qos=1, properties=props)

        await asyncio.gather(*(send(i) for i in range(n)))
        sent = time.perf_counter() - t0
        try:
            await asyncio.wait_for(done.wait(), 120 + n / 50)
        except asyncio.TimeoutError:
            pass
        reader.cancel()
    return {"requests": n, "answered": len(finals), "repeated": sum(v - 1 for v in finals.values()),
            "codes": codes, "send_s": round(sent, 3), "total_s": round(time.perf_counter() - t0, 3)}


def _idle_rss(sampler: _Sampler, settle: float) -> int:
    """RSS after `settle` idle seconds."""
    time.sleep(settle)
    return sampler.rss()


def run(requests: int = 3000, rounds: int = 2, broker: str | None = None, settle: float = 8.0,
        keep: bool = False) -> dict:
    from bulletd.client import Client
    from bulletd.format.synth import SMALL, write_random_lm
    from bulletd.signing import generate_keypair, sign_file

    tmp = Path(tempfile.mkdtemp(prefix="bulletd-flood-"))
    procs: list[subprocess.Popen] = []
    try:
        models = tmp / "models"
        models.mkdir()
        priv, pub = generate_keypair("flood", tmp / "key")
        sign_file(write_random_lm(models / "small.bullet", SMALL, seed=1, name="small"), priv)
        if broker:
            host, _, port_s = broker.partition(":")
            host, port = host or "127.0.0.1", int(port_s or 1883)
        else:
            exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
            host, port = "127.0.0.1", _free_port()
            conf = tmp / "mosquitto.conf"
            conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                            "set_tcp_nodelay true\nmax_queued_messages 0\n")
            procs.append(subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
            _wait(lambda: _port_open(port), 10, "mosquitto")
        device = f"flood{os.getpid()}"
        sock = str(tmp / "d.sock")
        cfg = tmp / "d.yaml"
        cfg.write_text(json.dumps({
            "device_id": device, "model_dir": str(models), "log_level": "warning",
            "socket": {"path": sock}, "trust": {"keys": [str(pub)]},
            "scheduler": {"workers": 1, "max_queue": 4}, "router": {"fallback": "small"},
            "mqtt": {"host": host, "port": port}, "ota": {"enabled": False}}))
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        log = open(tmp / "d.log", "wb")
        d = subprocess.Popen([sys.executable, "-m", "bulletd.daemon", "--config", str(cfg)], env=env,
                             stdout=subprocess.DEVNULL, stderr=log)
        procs.append(d)
        _wait(lambda: os.path.exists(sock) or d.poll() is not None, 60, "the bulletd socket")
        if d.poll() is not None:
            raise RuntimeError("bulletd exited: " + (tmp / "d.log").read_text())
        with Client(sock) as c:
            _wait(lambda: c.status()["mqtt"].get("state") == "connected", 20, "bulletd MQTT connection")
        sampler = _Sampler(d.pid)
        asyncio.run(_burst(host, port, device, 20))          # warm up: first requests, first replies
        out: dict = {"requests": requests, "rounds": rounds, "idle_before": _idle_rss(sampler, settle),
                     "bursts": []}
        for _ in range(rounds):
            with sampler:
                b = asyncio.run(_burst(host, port, device, requests))
            b["peak"] = sampler.peak
            b["after"] = _idle_rss(sampler, settle)
            out["bursts"].append(b)
        with Client(sock) as c:
            st = c.status()
        out["mqtt"] = {k: st["mqtt"].get(k) for k in ("received", "replied", "dropped", "outbox", "duplicates")}
        return out
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bulletd.bench.flood", description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=3000, help="requests per burst (default 3000)")
    ap.add_argument("--rounds", type=int, default=2, help="bursts (default 2)")
    ap.add_argument("--broker", metavar="HOST:PORT", help="use this broker instead of starting mosquitto")
    ap.add_argument("--settle", type=float, default=8.0, help="seconds to let the RSS settle after a burst")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = ap.parse_args(argv)
    r = run(a.requests, a.rounds, a.broker, a.settle, a.keep)
    if a.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"bulletd RSS, {a.rounds} burst(s) of {a.requests} MQTT QoS 1 requests (one worker, queue 4):")
        print(f"  idle before:  {r['idle_before'] / MB:7.1f} MB")
        for i, b in enumerate(r["bursts"], 1):
            codes = ", ".join(f"{k} {v}" for k, v in sorted(b["codes"].items()))
            print(f"  burst {i}: peak {b['peak'] / MB:7.1f} MB, after {b['after'] / MB:7.1f} MB "
                  f"({b['answered']}/{b['requests']} answered in {b['total_s']:.1f} s: {codes})")
    bad = [b for b in r["bursts"] if b["answered"] != b["requests"] or b["repeated"]]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
