"""Daemon benchmark: end-to-end figures through a real broker and a real bulletd process, each
beside a baseline measured in this same process run.

    python -m bulletd.bench.daemon            # or: bulletd-cli bench
    python -m bulletd.bench.daemon --quick --json

It writes synthetic SMALL and REFERENCE children (random weights; speed does not depend on the
values), signs them with a key made for the run, starts mosquitto on a free loopback port (or
uses --broker HOST:PORT) and bulletd, then measures:

  1. MQTT v5 loopback tokens/s for 64-token generations vs the runtime's raw tokens/s (same
     file, settings and seed, so the same tokens); overhead target <= 10 %. Beside it, the floor:
     the round trip through the same broker to a minimal paho responder that runs no model,
     paced by the same generations. Then two ways:
     a. one request at a time: each request pays the whole round trip (client -> broker ->
        bulletd -> worker thread -> bulletd -> broker -> client) on top of its generation;
     b. under load: the client keeps two requests in flight to a second bulletd that has ONE
        worker thread, so the daemon generates one request at a time, as the one-thread
        runtime does, while the next request's transport overlaps the current generation.
        Compared with the runtime generating the same requests back to back. This is the
        daemon's cost to throughput; (a) is its cost to one request's latency.
  2. time to the first streamed chunk for a 16-token prompt on SMALL (target <= 10 ms), beside
     the runtime's own time to first token.
  3. two concurrent requests to two REFERENCE children: combined tokens/s vs one (target >= 1.7x),
     beside the runtime alone on two threads and the runtime pinned to each core in turn (a
     virtual machine's cores need not be equally fast: that bounds what two at once can reach).
  4. daemon RSS with four REFERENCE children loaded and used (target <= 100 MB).
  5. load and unload time of a ~5 MB child, signature verification included.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bulletd.errors import TransportError, plain

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class _Raw:
    """The runtime alone, in this process: the baseline of every daemon figure."""

    def __init__(self, path: Path):
        from bulletd.runtime import load_model
        self.m = load_model(str(path))
        self.kernel = getattr(self.m, "kernel_path", "?")

    def run(self, prompt: str, max_tokens: int, stream: bool = False) -> tuple[int, float, float]:
        """One generation with the settings the daemon requests use (stream as the request)."""
        from bulletd.runtime import GenerationSettings
        gs = GenerationSettings(max_tokens=max_tokens, temperature=0.8, seed=1234, stream=stream)
        t0 = time.perf_counter()
        g = self.m.generate(prompt, gs)
        first = None
        for _ in g:
            if first is None:
                first = time.perf_counter() - t0
        dt = time.perf_counter() - t0
        return len(g.tokens), dt, first if first is not None else dt


def _worker_times(r, wall: list, cpu: list) -> None:
    """Append a reply's worker-thread wall and CPU milliseconds (its timing map) to the lists."""
    t = r.timing or {}
    wall.append(float(t.get("worker_ms", 0.0)))
    cpu.append(float(t.get("worker_cpu_ms", 0.0)))


async def _paired(port: tuple[str, int] | str, device: str, path: Path, child: str, prompt: str, max_tokens: int, reps: int,
                  stream: bool) -> dict:
    """Alternate raw and daemon runs (the machine's load changes by the second; pairing keeps the
    comparison fair). Returns medians of both."""
    from bulletd.client import AsyncClient
    raw = _Raw(path)
    r_tps, r_first, d_tps, d_first, ntok = [], [], [], [], 0
    ratio, extra_ms = [], []          # per pair: daemon/raw tokens/s, and the added milliseconds
    inside_ms, raw_ms = [], []        # the daemon's own time from receipt to final reply; the runtime's
    worker_ms, worker_cpu = [], []    # the generation on bulletd's worker thread: wall and CPU time
    # port: the broker's (host, port) (MQTT), or a socket path (the same measurement over the Unix socket)
    client = (AsyncClient.socket(port, timeout=60) if isinstance(port, str)
              else AsyncClient.mqtt(*port, device=device, timeout=60))
    async with client as c:
        for i in range(reps + 1):
            n, dt, first = raw.run(prompt, max_tokens, stream)
            t0 = time.perf_counter()
            t_first = None
            if stream:
                s = c.stream(prompt, child, max_tokens=max_tokens, temperature=0.8, seed=1234)
                async for _ in s:
                    if t_first is None:
                        t_first = time.perf_counter() - t0
                r = s.result
            else:
                r = await c.generate(prompt, child, max_tokens=max_tokens, temperature=0.8, seed=1234)
            ddt = time.perf_counter() - t0
            if i == 0:
                continue   # warm-up (page faults, first connection)
            ntok = r.tokens
            r_tps.append(n / dt)
            r_first.append(first)
            d_tps.append(r.tokens / ddt)
            ratio.append((r.tokens / ddt) / (n / dt))
            extra_ms.append((ddt - dt) * 1e3)
            inside_ms.append(float((r.timing or {}).get("total_ms", 0.0)))
            _worker_times(r, worker_ms, worker_cpu)
            raw_ms.append(dt * 1e3)
            if t_first is not None:
                d_first.append(t_first)
    raw.m.close()
    med = statistics.median
    return {"tokens": ntok, "raw_tokens_per_s": med(r_tps), "mqtt_tokens_per_s": med(d_tps),
            "overhead_pct": 100 * (1 - med(ratio)), "overhead_ms": med(extra_ms),
            "raw_ms": med(raw_ms), "daemon_ms": med(inside_ms), "worker_ms": med(worker_ms),
            "worker_cpu_ms": med(worker_cpu),
            "raw_first_ms": med(r_first) * 1e3, "mqtt_first_ms": med(d_first) * 1e3 if d_first else None,
            "kernel": raw.kernel}


async def _pipelined(broker: tuple[str, int], device: str, path: Path, child: str, prompt: str, max_tokens: int,
                     rounds: int, per_round: int = 16, depth: int = 2) -> dict:
    """Throughput under load: `per_round` requests with `depth` in flight (to a daemon with one
    worker), beside the runtime generating the same requests back to back in this process,
    alternating round by round. Returns medians."""
    from bulletd.client import AsyncClient
    raw = _Raw(path)
    raw_tps, d_tps, ratio, wall, cpu = [], [], [], [], []
    async with AsyncClient.mqtt(*broker, device=device, timeout=60) as c:
        gate = asyncio.Semaphore(depth)

        async def one() -> int:
            async with gate:
                r = await c.generate(prompt, child, max_tokens=max_tokens, temperature=0.8, seed=1234)
                _worker_times(r, wall, cpu)
                return r.tokens

        await asyncio.gather(*(one() for _ in range(depth)))          # warm-up
        wall.clear()
        cpu.clear()
        raw.run(prompt, max_tokens)
        for _ in range(rounds):
            t0 = time.perf_counter()
            n = sum(raw.run(prompt, max_tokens)[0] for _ in range(per_round))
            rt = n / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            ns = await asyncio.gather(*(one() for _ in range(per_round)))
            dt = sum(ns) / (time.perf_counter() - t0)
            raw_tps.append(rt)
            d_tps.append(dt)
            ratio.append(dt / rt)
    raw.m.close()
    med = statistics.median
    return {"raw_tokens_per_s": med(raw_tps), "mqtt_tokens_per_s": med(d_tps), "overhead_pct": 100 * (1 - med(ratio)),
            "worker_ms": med(wall), "worker_cpu_ms": med(cpu), "in_flight": depth, "requests_per_round": per_round, "rounds": rounds}


def _core_speeds(path: Path, prompt: str, max_tokens: int, rounds: int) -> dict | None:
    """The runtime's tokens/s pinned to each core in turn, alternating, medians. On a virtual
    machine the cores need not be equal: a vCPU whose host thread is shared runs slower, and
    then no two-request figure can reach twice one, and a daemon worker that lands on the slow
    core looks slow beside a baseline that ran on the fast one."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    raw = _Raw(path)
    per: dict[int, list[float]] = {c: [] for c in cores}
    try:
        for i in range(rounds):
            for c in cores:
                os.sched_setaffinity(0, {c})
                if i == 0:
                    raw.run(prompt, 8)
                n, dt, _ = raw.run(prompt, max_tokens)
                per[c].append(n / dt)
    finally:
        os.sched_setaffinity(0, cores)
        raw.m.close()
    speeds = {c: statistics.median(v) for c, v in per.items()}
    best = sorted(speeds.values(), reverse=True)
    return {"tokens_per_s": speeds, "two_at_once_ceiling": (best[0] + best[1]) / best[0]}


def _echo_responder(host: str, port: int, topic: str) -> None:
    """The smallest MQTT responder there is (paho, no asyncio, no model): each request on
    `topic`/req comes straight back on `topic`/rep with a reply-sized payload. Runs in its own
    process, as bulletd does, for the transport floor below."""
    import paho.mqtt.client as mqtt
    reply = b"r" * 512
    parent = os.getppid()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.on_message = lambda cl, _u, _m: cl.publish(topic + "/rep", reply, qos=1)
    c.on_connect = lambda cl, *_a: cl.subscribe(topic + "/req", qos=1)
    c.connect(host, port)
    c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.loop_start()
    while os.getppid() == parent:      # the bench is gone (killed, say): so is its responder
        time.sleep(0.2)
    c.disconnect()
    c.loop_stop()


def _echo_floor(broker: tuple[str, int], path: Path, prompt: str, max_tokens: int, reps: int) -> dict:
    """The broker round trip alone: request -> broker -> a minimal paho responder -> broker ->
    reply, with QoS 1 both ways and TCP_NODELAY, between the same runtime generations as the
    one-at-a-time daemon figure (so the processes are as idle, and wake as slowly, as there).
    A daemon behind this broker, answering a paho client, cannot do better; what it adds on top
    is its own cost (the bench's client is asyncio-based, a little slower than this one)."""
    import threading
    import paho.mqtt.client as mqtt
    topic = f"bulletd-bench/echo/{os.getpid()}"
    host, port = broker
    got = threading.Event()
    subscribed = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.on_message = lambda *_a: got.set()
    c.on_subscribe = lambda *_a: subscribed.set()
    resp = raw = None
    try:
        raw = _Raw(path)
        resp = subprocess.Popen([sys.executable, "-c", "import sys; from bulletd.bench.daemon import _echo_responder; "
                                 "_echo_responder(sys.argv[1], int(sys.argv[2]), sys.argv[3])", host, str(port), topic])
        c.connect(host, port)
        c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.loop_start()
        c.subscribe(topic + "/rep", qos=1)
        if not subscribed.wait(10):
            raise RuntimeError("the echo client could not subscribe")
        request = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.8, "seed": 1234}).encode()
        # the responder may still be connecting: ask until it answers
        deadline = time.monotonic() + 20
        while True:
            got.clear()
            c.publish(topic + "/req", request, qos=1)
            if got.wait(0.2):
                break
            if time.monotonic() > deadline or resp.poll() is not None:
                raise RuntimeError("the echo responder never answered")
        rtt, gen = [], []
        for _ in range(reps + 1):
            n, dt, _ = raw.run(prompt, max_tokens)
            got.clear()
            t0 = time.perf_counter()
            c.publish(topic + "/req", request, qos=1)
            if not got.wait(10):
                raise RuntimeError("an echo got lost")
            rtt.append((time.perf_counter() - t0) * 1e3)
            gen.append(dt * 1e3)
    finally:
        c.disconnect()
        c.loop_stop()
        if resp is not None:
            resp.terminate()
            try:
                resp.wait(10)
            except subprocess.TimeoutExpired:
                resp.kill()
                resp.wait()
        if raw is not None:
            raw.m.close()
    rtt, gen = rtt[1:], gen[1:]
    med = statistics.median
    return {"round_trip_ms": med(rtt), "raw_ms": med(gen), "floor_pct": 100 * med(r / (r + g) for r, g in zip(rtt, gen))}


def _raw_pair(paths: list[Path], prompt: str, max_tokens: int) -> tuple[float, float]:
    """The runtime alone in this process: one generation, then two on two threads at once."""
    import threading
    raws = [_Raw(p) for p in paths]
    raws[0].run(prompt, 4)
    n, dt, _ = raws[0].run(prompt, max_tokens)
    one = n / dt
    out: list[int] = []
    ths = [threading.Thread(target=lambda r=r: out.append(r.run(prompt, max_tokens)[0])) for r in raws]
    t0 = time.perf_counter()
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    two = sum(out) / (time.perf_counter() - t0)
    for r in raws:
        r.m.close()
    return one, two


async def _concurrent(sock: str, children: list[str], prompt: str, max_tokens: int, reps: int,
                      paths: list[Path] | None = None) -> dict:
    from bulletd.client import AsyncClient

    async def one(c, child):
        r = await c.generate(prompt, child, max_tokens=max_tokens, temperature=0.8, seed=99)
        return r.tokens

    single, pair, raw_ratio = [], [], []
    async with AsyncClient.socket(sock) as c:
        await one(c, children[0])
        for _ in range(reps):
            if paths:
                r1, r2 = _raw_pair(paths, prompt, max_tokens)
                raw_ratio.append(r2 / r1)
            t0 = time.perf_counter()
            n = await one(c, children[0])
            single.append(n / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            ns = await asyncio.gather(*(one(c, ch) for ch in children[:2]))
            pair.append(sum(ns) / (time.perf_counter() - t0))
    s, p = statistics.median(single), statistics.median(pair)
    return {"one_tokens_per_s": s, "two_tokens_per_s": p, "speedup": p / s,
            "runtime_alone_speedup": statistics.median(raw_ratio) if raw_ratio else None}


def route_bench(models: Path) -> dict:
    """Decision time of the daemon's router over the children's header `examples`, and how many
    of those prompts it sends to the child that carries them (they are the mother's training
    data when it was trained on them: the trainer prints the held-out accuracy)."""
    from bulletd.format import BulletFile
    from bulletd.router import Router, load_mother
    mother_path = models / "mother.bullet"
    router = Router(load_mother(str(mother_path)) if mother_path.exists() else None)
    labelled: list[tuple[str, str]] = []
    for p in sorted(models.glob("*.bullet")):
        if p == mother_path:
            continue
        with BulletFile.open(p) as bf:
            ex = [e for e in bf.header.get("examples") or [] if isinstance(e, str)]
        name = p.name[: -len(".bullet")]
        labelled += [(e, name) for e in ex]
        if router.mother is None or name not in router.mother.labels:
            router.set_examples(name, ex)
    avail = {p.name[: -len(".bullet")] for p in models.glob("*.bullet") if p != mother_path}
    if not labelled:
        return {"prompts": 0}
    for text, _ in labelled[:5]:
        router.decide(text, avail)
    times, right = [], 0
    for text, name in labelled:
        t0 = time.perf_counter()
        d = router.decide(text, avail)
        times.append((time.perf_counter() - t0) * 1e3)
        right += d.child == name
    times.sort()
    heldout = None
    if router.mother is not None:
        with BulletFile.open(mother_path) as bf:
            prov = bf.header.get("provenance", {})
            heldout = (prov.get("training") or {}).get("heldout_accuracy") if isinstance(prov.get("training"), dict) else None
    return {"prompts": len(labelled), "accuracy": right / len(labelled), "mean_ms": statistics.mean(times),
            "p99_ms": times[min(len(times) - 1, int(0.99 * len(times)))], "mother": router.mother is not None,
            "trainer_heldout_accuracy": heldout}


def _broker(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "1883")
    try:
        n = int(port)
    except ValueError:
        n = -1
    if not 0 < n < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT with a port from 1 to 65535, got {text!r}")
    return host or "127.0.0.1", n


def add_arguments(ap: argparse.ArgumentParser, json_dest: str = "json") -> None:
    """The benchmark's options, on its own parser or on `bulletd-cli bench`."""
    ap.add_argument("--broker", metavar="HOST:PORT", type=_broker,
                    help="use this broker instead of starting mosquitto")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (noisier)")
    ap.add_argument("--json", action="store_true", dest=json_dest, help="print the figures as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--route", metavar="DIR", help="only the routing figures for the children and mother in DIR")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bulletd-bench", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    a = ap.parse_args(argv)
    try:
        return run(a)
    except TransportError as exc:
        print(f"bulletd-bench: {exc}", file=sys.stderr)
        return 3
    except OSError as exc:
        print(f"bulletd-bench: {plain(exc)}", file=sys.stderr)
        return 2


def run(a: argparse.Namespace) -> int:
    """Run the benchmark with parsed options (broker, quick, json, keep, route). Raises
    TransportError when --broker cannot be reached, OSError when --route is not a folder."""
    if a.route and not Path(a.route).is_dir():
        raise FileNotFoundError(2, "no such folder (--route expects the folder of the children)", a.route)
    if a.route:
        r = route_bench(Path(a.route))
        if a.json:
            print(json.dumps(r, indent=2))
        elif not r["prompts"]:
            print(f"no child in {a.route} carries header examples: nothing to route")
        else:
            print(f"routing in {a.route} ({'mother' if r['mother'] else 'no mother: example centroids'}): "
                  f"{r['prompts']} example prompts, {100 * r['accuracy']:.1f} % to their own child; "
                  f"decision {r['mean_ms']:.3f} ms mean, {r['p99_ms']:.3f} ms p99 (target <= 1 ms)"
                  + (f"; trainer's held-out accuracy {r['trainer_heldout_accuracy']}" if r.get("trainer_heldout_accuracy") is not None else ""))
        return 0
    reps = 3 if a.quick else 7
    if a.broker:   # before minutes of setup
        try:
            socket.create_connection(a.broker, timeout=5).close()
        except OSError as exc:
            raise TransportError(f"cannot reach the broker {a.broker[0]}:{a.broker[1]}: "
                                 f"{exc.strerror or exc}") from None

    from bulletd.format.synth import REFERENCE, SMALL, write_random_lm
    from bulletd.signing import generate_keypair, sign_file
    import psutil

    tmp = Path(tempfile.mkdtemp(prefix="bulletd-bench-"))
    procs: list[subprocess.Popen] = []
    logs: list = []

    def _log(path: Path):
        f = open(path, "wb")
        logs.append(f)
        return f
    results: dict = {"cpu_count": os.cpu_count()}
    try:
        models = tmp / "models"
        models.mkdir()
        priv, pub = generate_keypair("bench", tmp / "key")
        files = {"small": (SMALL, 1)} | {f"ref{i}": (REFERENCE, 10 + i) for i in range(4)}
        for name, (arch, seed) in files.items():
            p = write_random_lm(models / f"{name}.bullet", arch, seed=seed, name=name)
            sign_file(p, priv)
        spare = write_random_lm(tmp / "spare.bullet", REFERENCE, seed=77, name="spare")
        sign_file(spare, priv)

        if a.broker:
            host, port = a.broker
        else:
            exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
            host, port = "127.0.0.1", _free_port()
            conf = tmp / "mosquitto.conf"
            # set_tcp_nodelay: without it mosquitto holds small replies for delayed ACKs (~40 ms each)
            conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n")
            procs.append(subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            _wait(lambda: _port_open(port), 10, "mosquitto")
        env = {**os.environ}
        env.pop("NOTIFY_SOCKET", None)

        def start_daemon(name: str, registry: dict, **extra) -> tuple[subprocess.Popen, str]:
            """A bulletd process on the broker and the children made above; (process, socket)."""
            sock_path, log = str(tmp / f"{name}.sock"), tmp / f"{name}.log"
            cfg = tmp / f"{name}.yaml"
            cfg.write_text(json.dumps({
                "device_id": name, "model_dir": str(models), "log_level": "warning",
                "socket": {"path": sock_path}, "trust": {"keys": [str(pub)]},
                "registry": {"memory_budget_mb": 64, **registry},
                "mqtt": {"host": host, "port": port}, **extra}))
            p = subprocess.Popen([sys.executable, "-m", "bulletd.daemon", "--config", str(cfg)], env=env,
                                 stdout=subprocess.DEVNULL, stderr=_log(log))
            procs.append(p)
            _wait(lambda: os.path.exists(sock_path) or p.poll() is not None, 60, f"the {name} socket")
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited: " + log.read_text())
            return p, sock_path

        d, sock = start_daemon("bench", {"session_idle": 1.0})
        # a second bulletd on the same broker and children with ONE worker thread: the load figure
        d1, sock1 = start_daemon("bench1", {"session_idle": 30.0, "preload": False}, scheduler={"workers": 1})
        from bulletd.client import Client
        for s_path in (sock, sock1):
            with Client(s_path) as c:
                _wait(lambda: c.status()["mqtt"].get("state") == "connected", 20, "bulletd MQTT connection")

        prompt64 = "Once upon a time there was a little robot"
        # 16-token prompt on SMALL: the byte-level synthetic vocabulary makes ~1 token per char pair
        from bulletd.format import BulletFile
        with BulletFile.open(models / "small.bullet") as bf:
            tok = bf.tokenizer
            p16 = "the cat sat"
            while len(tok.encode(p16, bos=True)) < 16:
                p16 += " on"
            while len(tok.encode(p16, bos=True)) > 16:
                p16 = p16[:-1]
            n16 = len(tok.encode(p16, bos=True))

        # 1 + 2: throughput and first chunk, raw beside daemon, both children
        for child in ("small", "ref0"):
            t = asyncio.run(_paired((host, port), "bench", models / f"{child}.bullet", child, prompt64, 64, reps, False))
            ts = asyncio.run(_paired(sock, "bench", models / f"{child}.bullet", child, prompt64, 64, reps, False))
            results[f"throughput_{child}"] = {
                "raw_tokens_per_s": round(t["raw_tokens_per_s"], 1), "mqtt_tokens_per_s": round(t["mqtt_tokens_per_s"], 1),
                "tokens": t["tokens"], "overhead_pct": round(t["overhead_pct"], 1), "overhead_ms": round(t["overhead_ms"], 2),
                "raw_ms": round(t["raw_ms"], 2), "daemon_ms": round(t["daemon_ms"], 2),
                "worker_ms": round(t["worker_ms"], 2), "worker_cpu_ms": round(t["worker_cpu_ms"], 2),
                "socket_daemon_ms": round(ts["daemon_ms"], 2),
                "kernel": t["kernel"], "socket_overhead_pct": round(ts["overhead_pct"], 1),
                "socket_overhead_ms": round(ts["overhead_ms"], 2)}
            fl = _echo_floor((host, port), models / f"{child}.bullet", prompt64, 64, reps)
            results[f"throughput_{child}"]["broker_floor"] = {k: round(v, 2) for k, v in fl.items()}
            pl = asyncio.run(_pipelined((host, port), "bench1", models / f"{child}.bullet", child, prompt64, 64, reps))
            results[f"throughput_{child}"]["under_load"] = {k: round(v, 1) if isinstance(v, float) else v
                                                            for k, v in pl.items()}
        # the one-worker daemon has done its part; it would only compete for the cores from here on
        d1.terminate()
        d1.wait(10)
        f = asyncio.run(_paired((host, port), "bench", models / "small.bullet", "small", p16, 16, reps * 2, True))
        results["first_chunk_small"] = {"prompt_tokens": n16, "raw_first_token_ms": round(f["raw_first_ms"], 2),
                                        "mqtt_first_chunk_ms": round(f["mqtt_first_ms"], 2)}
        # 3: two children at once, with each core's speed measured around it
        cs = [_core_speeds(models / "ref1.bullet", prompt64, 128, reps)]
        results["concurrency"] = {k: round(v, 2) for k, v in
                                  asyncio.run(_concurrent(sock, ["ref1", "ref2"], prompt64, 128, 2 * reps,
                                                          [models / "ref1.bullet", models / "ref2.bullet"])).items()
                                  if v is not None}
        cs.append(_core_speeds(models / "ref1.bullet", prompt64, 128, reps))
        if cs[0] and cs[1]:   # before and after the two-children figure
            results["concurrency"]["core_speeds"] = [{str(c): round(v, 1) for c, v in x["tokens_per_s"].items()} for x in cs]
            results["concurrency"]["core_ceilings"] = [round(x["two_at_once_ceiling"], 2) for x in cs]
        # 4: RSS with four REFERENCE children loaded and used
        with Client(sock) as c:
            for i in range(4):
                c.generate("hello", f"ref{i}", max_tokens=8)
            st = c.status()
            busy_rss = psutil.Process(d.pid).memory_info().rss
            time.sleep(2.0)      # registry.session_idle (1 s here) frees the cached sessions
            results["rss"] = {"children_loaded": st["children"],
                              "rss_mb": round(psutil.Process(d.pid).memory_info().rss / 2**20, 1),
                              "rss_right_after_use_mb": round(busy_rss / 2**20, 1),
                              "children_mb": round(st["memory"]["children_bytes"] / 2**20, 2)}
            # 5: load / unload a ~5 MB child with verification
            loads, unloads, size = [], [], spare.stat().st_size
            for _ in range(reps):
                t0 = time.perf_counter()
                info = c.load(str(spare))
                loads.append((time.perf_counter() - t0) * 1e3)
                t0 = time.perf_counter()
                c.unload("spare")
                unloads.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            from bulletd.signing import TrustStore, verify_file
            verify_file(spare, TrustStore(pub))
            verify_ms = (time.perf_counter() - t0) * 1e3
            results["load_unload"] = {"size_mb": round(size / 2**20, 2), "load_ms": round(statistics.median(loads), 2),
                                      "daemon_load_ms": info.get("load_ms"), "unload_ms": round(statistics.median(unloads), 2),
                                      "verify_only_ms_in_bench_process": round(verify_ms, 2)}
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        for f in logs:
            f.close()
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    if a.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"bulletd daemon benchmark ({os.cpu_count()} cores, {reps} repetitions, medians; "
          f"kernel {results['throughput_small']['kernel']})")
    for child in ("small", "ref0"):
        t = results[f"throughput_{child}"]
        print(f"  {child:5s} 64-token generation: runtime {t['raw_tokens_per_s']:8.1f} tok/s | via MQTT "
              f"{t['mqtt_tokens_per_s']:8.1f} tok/s | overhead {t['overhead_pct']:5.1f} % = {t['overhead_ms']:.2f} ms per "
              f"request, one request at a time (median of paired runs; target <= 10 %); via the Unix socket {t['socket_overhead_pct']:.1f} % = "
              f"{t['socket_overhead_ms']:.2f} ms")
        fl = t["broker_floor"]
        print(f"        the broker round trip alone (a minimal paho responder, same pacing): {fl['round_trip_ms']:.2f} ms = "
              f"{fl['floor_pct']:.1f} % of a generation here: the broker's and paho's share alone, under any daemon")
        u = t["under_load"]
        print(f"        under load ({u['in_flight']} requests in flight, one worker thread): runtime back to back "
              f"{u['raw_tokens_per_s']:8.1f} tok/s | via MQTT {u['mqtt_tokens_per_s']:8.1f} tok/s | overhead "
              f"{u['overhead_pct']:5.1f} %  (target <= 10 %; median of {u['rounds']} rounds of "
              f"{u['requests_per_round']} requests); bulletd's worker per request: {u['worker_ms']:.2f} ms wall, "
              f"{u['worker_cpu_ms']:.2f} ms CPU")
        print(f"        where the time goes (medians): runtime {t['raw_ms']:.2f} ms | bulletd's worker thread "
              f"{t['worker_ms']:.2f} ms wall, {t['worker_cpu_ms']:.2f} ms CPU | inside bulletd, receipt to final "
              f"reply {t['daemon_ms']:.2f} ms (socket requests: {t['socket_daemon_ms']:.2f} ms) | the rest is the "
              f"transport: broker, both MQTT clients, wake-ups")
    f = results["first_chunk_small"]
    print(f"  SMALL {f['prompt_tokens']}-token prompt: runtime first token {f['raw_first_token_ms']:.2f} ms | "
          f"first streamed chunk via MQTT {f['mqtt_first_chunk_ms']:.2f} ms  (target <= 10 ms)")
    cc = results["concurrency"]
    print(f"  two REFERENCE children at once: one {cc['one_tokens_per_s']:.1f} tok/s, two combined "
          f"{cc['two_tokens_per_s']:.1f} tok/s = {cc['speedup']:.2f}x  (target >= 1.7x); the runtime alone on two "
          f"threads in this process: {cc.get('runtime_alone_speedup', float('nan')):.2f}x")
    if "core_speeds" in cc:
        speeds = " | ".join(", ".join(f"core {c} {v:.0f}" for c, v in x.items()) for x in cc["core_speeds"])
        print(f"        the runtime pinned to each core (tok/s, before | after): {speeds}; a pair can reach at most "
              f"{' | '.join(f'{x:.2f}x' for x in cc['core_ceilings'])} (sum of the two cores / the faster one)")
    r = results["rss"]
    print(f"  daemon RSS with 4 REFERENCE children loaded ({r['children_mb']} MB mapped): {r['rss_mb']} MB idle, "
          f"{r['rss_right_after_use_mb']} MB while each still holds its cached session  (target <= 100 MB)")
    lu = results["load_unload"]
    print(f"  {lu['size_mb']} MB child: load with verification {lu['load_ms']:.1f} ms (daemon side {lu['daemon_load_ms']} ms), "
          f"unload {lu['unload_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
