"""The reliability runs. Each starts what it needs in a temporary folder (broker, daemons,
signed REFERENCE-shaped children), drives requests, breaks something on schedule, and returns
its figures with `ok` saying whether the invariants held:

  every request gets exactly one final reply, or its requester saw the connection fail
  (unavailable: bulletd.client's DaemonUnavailable); none is lost, none answered twice.
"""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path
from typing import Awaitable, Callable

from bulletd.reliability.harness import (MB, Broker, Daemon, Kit, MQTTPeer, Sampler, SocketPeer, Tally, gen_request,
                                         make_kit, slope_per_hour, start_mqtt_peers, status)

Event = tuple[float, Callable[[], Awaitable[None]]]


async def _stream(tally: Tally, peers: list, rate: float, duration: float, make: Callable[[int], dict],
                  events: list[Event] = ()) -> None:
    """Send `rate` requests a second for `duration` s, round-robin over `peers`, running each
    event (t, coroutine function) at its time without holding up the stream."""
    t0 = time.monotonic()
    pending = sorted(events, key=lambda e: e[0])
    tasks: set[asyncio.Task] = set()
    i = 0
    while True:
        now = time.monotonic() - t0
        while pending and pending[0][0] <= now:
            t = asyncio.create_task(pending.pop(0)[1]())
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        if now >= duration:
            break
        peer = peers[i % len(peers)]
        t = asyncio.create_task(peer.send(make(i)))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        i += 1
        await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
    if tasks:
        await asyncio.gather(*tasks)


async def _close(peers: list) -> None:
    await asyncio.gather(*(p.close() for p in peers))


def _invariants(s: dict, *, allow_unavailable: bool = True) -> bool:
    return (s["lost"] == 0 and s["duplicates"] == 0 and s["final"] + s["unavailable"] == s["requests"]
            and (allow_unavailable or s["unavailable"] == 0))


async def _idle_rss(d: Daemon, settle: float) -> int:
    import psutil
    await asyncio.sleep(settle)
    return psutil.Process(d.pid).memory_info().rss


# ---------------------------------------------------------------------- load


async def load(tmp: Path, *, requests: int = 1000, mqtt_clients: int = 50, socket_clients: int = 50,
               max_tokens: int = 16, workers: int = 2, max_queue: int = 1024, children: int = 2,
               timeout: float = 900.0, idle: float = 6.0) -> dict:
    """REQUESTS generation requests at once, spread over MQTT_CLIENTS + SOCKET_CLIENTS requesters,
    against one bulletd on REFERENCE-shaped children."""
    kit = make_kit(tmp, children)
    broker = Broker(tmp).start()
    d = Daemon(tmp, kit, "load", broker, workers=workers, max_queue=max_queue).start()
    peers: list = []
    try:
        await d.ready()
        tally = Tally()
        warm = SocketPeer(tally, d.sock)
        await asyncio.gather(*(warm.send(gen_request(i, kit.children, max_tokens)) for i in range(len(kit.children))))
        await tally.settle(60)
        await warm.close()
        rss_idle = await _idle_rss(d, idle / 3)
        tally = Tally()
        peers = await start_mqtt_peers(tally, broker, f"bullet/{d.name}/req", mqtt_clients)
        peers += [SocketPeer(tally, d.sock) for _ in range(socket_clients)]
        sampler = Sampler([d], period=0.25).start()
        t0 = time.monotonic()
        await asyncio.gather(*(peers[i % len(peers)].send(gen_request(i, kit.children, max_tokens))
                               for i in range(requests)))
        await tally.settle(timeout)
        wall = time.monotonic() - t0
        await asyncio.sleep(1.0)             # a second final reply would arrive by now
        await sampler.stop()
        s = tally.summary()
        st = await status(d.sock)
        out = {**s, "mqtt_clients": mqtt_clients, "socket_clients": socket_clients, "max_tokens": max_tokens,
               "workers": workers, "children": children, "wall_s": round(wall, 2),
               "throughput_rps": round(s["codes"].get("ok", 0) / wall, 1),
               "tokens_per_s": round(s["codes"].get("ok", 0) * max_tokens / wall, 1),
               "by_transport": {v: tally.summary([r for r in tally.reqs.values() if r.via == v])
                                for v in ("mqtt", "socket")},
               "queue_capacity": st["queue"]["capacity"], "queue_peak": sampler.peak_admitted.get(d.name, 0),
               "mqtt_backlog_peak": sampler.peak_backlog.get(d.name, 0),
               "rss_idle_mb": round(rss_idle / MB, 1), "rss_peak_mb": round(sampler.peak_rss.get(d.name, 0) / MB, 1),
               "rss_after_mb": round(await _idle_rss(d, idle) / MB, 1)}
        out["ok"] = (_invariants(s, allow_unavailable=False) and out["queue_peak"] <= out["queue_capacity"])
        return out
    finally:
        await _close(peers)
        d.stop()
        broker.stop()


# ---------------------------------------------------------------------- fleet


def _evenness(counts: dict[str, int], names: list[str]) -> float:
    """The largest deviation from an even split, as a fraction of the even share."""
    total = sum(counts.get(n, 0) for n in names)
    if total == 0:
        return 1.0
    even = total / len(names)
    return max(abs(counts.get(n, 0) - even) for n in names) / even


async def fleet(tmp: Path, *, members: int = 3, rate: float = 20.0, duration: float = 40.0, clients: int = 10,
                max_tokens: int = 32, workers: int = 1, max_queue: int = 64, settle: float = 30.0,
                mqtt_extra: dict | None = None) -> dict:
    """A steady stream to the fleet topic ($share/...): the split between MEMBERS daemons, then
    one of them SIGKILLed half-way: the others take its share, nothing is answered twice."""
    kit = make_kit(tmp, 1)
    broker = Broker(tmp).start()
    ds = [Daemon(tmp, kit, f"fleet{i}", broker, workers=workers, max_queue=max_queue, fleet=True,
                 mqtt_extra=mqtt_extra).start() for i in range(members)]
    peers: list = []
    kill_at = duration / 2
    killed: dict = {}
    try:
        await asyncio.gather(*(d.ready() for d in ds))
        tally = Tally()
        peers = await start_mqtt_peers(tally, broker, "bullet/fleet/req", clients)
        t0 = time.monotonic()

        async def kill() -> None:
            ds[0].kill()
            killed["t"] = time.monotonic()

        await _stream(tally, peers, rate, duration, lambda i: gen_request(i, kit.children, max_tokens),
                      [(kill_at, kill)])
        await tally.settle(settle)
        await asyncio.sleep(1.0)
        reqs = list(tally.reqs.values())
        # requests sent well before the kill, and those sent after it (the ones in flight at the
        # kill belong to neither half)
        before = [r for r in reqs if r.t0 < killed["t"] - 2.0]
        after = [r for r in reqs if r.t0 > killed["t"]]

        def by_device(rs) -> dict:
            c: dict[str, int] = {}
            for r in rs:
                if r.finals:
                    c[str(r.device)] = c.get(str(r.device), 0) + 1
            return dict(sorted(c.items()))

        names = [d.name for d in ds]
        b, a = by_device(before), by_device(after)
        s = tally.summary()
        out = {**s, "members": members, "rate": rate, "duration_s": duration,
               "split_before": b, "split_after": a,
               "deviation_before": round(_evenness(b, names), 3),
               "deviation_after": round(_evenness(a, names[1:]), 3),
               "killed": names[0], "answered_by_killed_after": a.get(names[0], 0),
               "after_kill": tally.summary(after), "elapsed_s": round(time.monotonic() - t0, 1)}
        # a request the killed member held (admitted, unanswered) dies with it: nothing on the
        # broker is left to deliver it again (see bulletd.daemon.mqtt); its requester's timeout
        # ends it (DaemonUnavailable). Every other request must get exactly one final reply.
        held = [r for r in reqs if r.sent and not r.finals and not r.unavailable and r.t0 < killed["t"]]
        out["held_by_killed"] = len(held)
        out["lost"] = s["lost"] - len(held)
        out["ok"] = (out["lost"] == 0 and s["duplicates"] == 0 and out["deviation_before"] <= 0.2
                     and out["deviation_after"] <= 0.2 and out["after_kill"]["unavailable"] == 0
                     and out["after_kill"]["lost"] == 0)
        return out
    finally:
        await _close(peers)
        for d in ds:
            d.stop()
        broker.stop()


# ---------------------------------------------------------------------- chaos


async def _chaos(tmp: Path, kit: Kit, broker: Broker, d: Daemon, *, rate: float, duration: float,
                 events: list[Event], mqtt_clients: int, socket_clients: int, max_tokens: int,
                 settle: float = 120.0, mqtt_host: str | None = None) -> tuple[dict, Tally]:
    tally = Tally()
    peers: list = await start_mqtt_peers(tally, broker, f"bullet/{d.name}/req", mqtt_clients, host=mqtt_host)
    peers += [SocketPeer(tally, d.sock) for _ in range(socket_clients)]
    try:
        await _stream(tally, peers, rate, duration, lambda i: gen_request(i, kit.children, max_tokens), events)
        await tally.settle(settle)
        await asyncio.sleep(1.0)
        s = tally.summary()
        s["by_transport"] = {v: tally.summary([r for r in tally.reqs.values() if r.via == v])
                             for v in ("mqtt", "socket")}
        s["unrouted"] = sum(p.unrouted for p in peers if isinstance(p, MQTTPeer))
        return s, tally
    finally:
        await _close(peers)


async def broker_kill(tmp: Path, *, cycles: int = 50, period: float = 2.0, down: float = 0.2, rate: float = 20.0,
                      mqtt_clients: int = 5, socket_clients: int = 5, max_tokens: int = 8) -> dict:
    """The broker SIGKILLed and restarted on its port CYCLES times under a request stream."""
    kit = make_kit(tmp, 1)
    broker = Broker(tmp).start()
    d = Daemon(tmp, kit, "bk", broker).start()
    try:
        await d.ready()

        async def cycle() -> None:
            broker.kill()
            await asyncio.sleep(down)
            await asyncio.to_thread(broker.start)

        events = [(1.0 + k * period, cycle) for k in range(cycles)]
        duration = cycles * period + 3.0
        s, tally = await _chaos(tmp, kit, broker, d, rate=rate, duration=duration, events=events,
                                mqtt_clients=mqtt_clients, socket_clients=socket_clients, max_tokens=max_tokens)
        st = await status(d.sock)
        s.update(cycles=cycles, rate=rate, duration_s=duration, daemon_connects=st["mqtt"]["connects"],
                 mqtt_ok=sum(1 for r in tally.reqs.values() if r.via == "mqtt" and r.code == "ok"))
        s["ok"] = _invariants(s) and st["mqtt"]["state"] == "connected" and s["mqtt_ok"] > 0
        return s
    finally:
        d.stop()
        broker.stop()


async def daemon_kill(tmp: Path, *, cycles: int = 10, period: float = 4.0, rate: float = 20.0,
                      mqtt_clients: int = 5, socket_clients: int = 5, max_tokens: int = 32) -> dict:
    """bulletd SIGKILLed and restarted CYCLES times under a request stream over MQTT and the socket."""
    kit = make_kit(tmp, 1)
    broker = Broker(tmp).start()
    d = Daemon(tmp, kit, "dk", broker).start()
    try:
        await d.ready()

        async def cycle() -> None:
            d.kill()
            d.start()

        events = [(2.0 + k * period, cycle) for k in range(cycles)]
        duration = cycles * period + 3.0
        s, _ = await _chaos(tmp, kit, broker, d, rate=rate, duration=duration, events=events,
                            mqtt_clients=mqtt_clients, socket_clients=socket_clients, max_tokens=max_tokens)
        s.update(cycles=cycles, rate=rate, duration_s=duration)
        s["ok"] = _invariants(s)
        return s
    finally:
        d.stop()
        broker.stop()


def netns_available() -> str | None:
    """None when network namespaces and veth pairs work here, else why not."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    name = f"bulletrel{time.monotonic_ns() % 100000}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode != 0:
        return f"ip netns add failed: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def netem_available(dev: str) -> str | None:
    """None when the netem qdisc can be attached to DEV, else the kernel's answer."""
    r = subprocess.run(["tc", "qdisc", "add", "dev", dev, "root", "netem", "delay", "1ms"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return f"tc qdisc add ... netem: {r.stderr.strip() or r.returncode}"
    subprocess.run(["tc", "qdisc", "del", "dev", dev, "root"], capture_output=True)
    return None


class Veth:
    """Network namespace NS holding one end of a veth pair: 10.R.0.1 here, 10.R.0.2 inside."""

    def __init__(self, tag: int):
        self.ns = f"bulletrel{tag}"
        self.host_dev, self.ns_dev = f"brl{tag}a", f"brl{tag}b"
        self.host_ip, self.ns_ip = f"10.{200 + tag % 50}.0.1", f"10.{200 + tag % 50}.0.2"

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def up(self) -> "Veth":
        self._ip("netns", "add", self.ns)
        self._ip("link", "add", self.host_dev, "type", "veth", "peer", "name", self.ns_dev)
        self._ip("link", "set", self.ns_dev, "netns", self.ns)
        self._ip("addr", "add", f"{self.host_ip}/24", "dev", self.host_dev)
        self._ip("link", "set", self.host_dev, "up")
        self._ip("-n", self.ns, "addr", "add", f"{self.ns_ip}/24", "dev", self.ns_dev)
        self._ip("-n", self.ns, "link", "set", self.ns_dev, "up")
        self._ip("-n", self.ns, "link", "set", "lo", "up")
        return self

    def link(self, up: bool) -> None:
        self._ip("link", "set", self.host_dev, "up" if up else "down")

    def down(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_dev], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


async def partition(tmp: Path, *, seconds: float = 10.0, rate: float = 10.0, mqtt_clients: int = 5,
                    socket_clients: int = 2, max_tokens: int = 8, tail: float = 10.0) -> dict:
    """bulletd in its own network namespace, reaching the broker over a veth pair; the link is
    taken down for SECONDS under a request stream, then brought back."""
    why = netns_available()
    if why:
        return {"ok": None, "skipped": why}
    veth = Veth(int(time.time()) % 50).up()
    try:
        netem = netem_available(veth.host_dev)
        kit = make_kit(tmp, 1)
        broker = Broker(tmp, host=veth.host_ip).start()
        d = Daemon(tmp, kit, "part", broker, netns=veth.ns).start()
        try:
            await d.ready()

            async def cut() -> None:
                veth.link(False)
                await asyncio.sleep(seconds)
                veth.link(True)

            duration = 3.0 + seconds + tail
            s, _ = await _chaos(tmp, kit, broker, d, rate=rate, duration=duration, events=[(3.0, cut)],
                                mqtt_clients=mqtt_clients, socket_clients=socket_clients, max_tokens=max_tokens)
            st = await status(d.sock)
            s.update(partition_s=seconds, rate=rate, duration_s=duration, daemon_connects=st["mqtt"]["connects"],
                     netem=netem or "available")
            s["ok"] = _invariants(s)
            return s
        finally:
            d.stop()
            broker.stop()
    finally:
        veth.down()


async def delay(tmp: Path, *, delay_s: float = 0.2, rate: float = 10.0, duration: float = 20.0,
                mqtt_clients: int = 5, max_tokens: int = 8) -> dict:
    """bulletd reaching the broker through a TCP proxy that delays every byte by DELAY_S each
    way (application-level latency: used because netem is not available everywhere)."""
    from bulletd.reliability.harness import DelayProxy
    kit = make_kit(tmp, 1)
    broker = Broker(tmp).start()
    proxy = await DelayProxy(broker.port, delay_s).start()
    d = Daemon(tmp, kit, "delay", broker, mqtt_port=proxy.port).start()
    try:
        await d.ready()
        s, _ = await _chaos(tmp, kit, broker, d, rate=rate, duration=duration, events=[],
                            mqtt_clients=mqtt_clients, socket_clients=0, max_tokens=max_tokens)
        s.update(delay_ms=round(delay_s * 1000), rate=rate, duration_s=duration)
        # every MQTT request crosses the delayed link twice (request in, reply out)
        s["ok"] = _invariants(s, allow_unavailable=False) and (s["p50_ms"] or 0) >= 2 * delay_s * 1000
        return s
    finally:
        d.stop()
        await proxy.close()
        broker.stop()


def netfilter_loss(ns: str, dev: str, loss: float) -> str | None:
    """Drop LOSS % of the packets in and out of DEV inside namespace NS with netfilter's random
    `statistic` match (iptables): packet loss where the kernel has no netem qdisc. None when the
    rules are in place, else why not. The rules go with the namespace."""
    if shutil.which("iptables") is None:
        return "iptables is not installed"
    for chain, opt in (("INPUT", "-i"), ("OUTPUT", "-o")):
        r = subprocess.run(["ip", "netns", "exec", ns, "iptables", "-A", chain, opt, dev, "-m", "statistic",
                            "--mode", "random", "--probability", f"{loss / 100:.6f}", "-j", "DROP"],
                           capture_output=True, text=True)
        if r.returncode:
            return f"iptables -m statistic: {r.stderr.strip() or r.returncode}"
    return None


def netfilter_dropped(ns: str) -> int:
    """Packets the loss rules of namespace NS have dropped so far."""
    r = subprocess.run(["ip", "netns", "exec", ns, "iptables", "-L", "-v", "-x", "-n"],
                       capture_output=True, text=True)
    return sum(int(line.split()[0]) for line in r.stdout.splitlines()
               if "statistic mode random" in line and line.split()[0].isdigit())


async def netem(tmp: Path, *, loss: float = 5.0, delay_ms: int = 200, rate: float = 10.0, duration: float = 30.0,
                mqtt_clients: int = 5, max_tokens: int = 8) -> dict:
    """bulletd in its own network namespace behind a veth pair with LOSS % packet loss and
    DELAY_MS delay in each direction (tc netem) under a request stream. Where the kernel has no
    netem qdisc, the loss comes from netfilter's random drop on the namespace's end of the pair
    (both directions) and the delay is left to the `delay` step (a TCP proxy); the result says
    which method ran and how many packets were dropped."""
    why = netns_available()
    if why:
        return {"ok": None, "skipped": why}
    veth = Veth(int(time.time()) % 50 + 1).up()
    try:
        no_netem = netem_available(veth.host_dev)
        if no_netem is None:
            method = "tc netem"
            rule = ["root", "netem", "delay", f"{delay_ms}ms", "loss", f"{loss}%"]
            subprocess.run(["tc", "qdisc", "add", "dev", veth.host_dev, *rule], check=True, capture_output=True)
            subprocess.run(["ip", "netns", "exec", veth.ns, "tc", "qdisc", "add", "dev", veth.ns_dev, *rule],
                           check=True, capture_output=True)
        else:
            method, delay_ms = "netfilter random drop (no netem qdisc in this kernel)", 0
            why = netfilter_loss(veth.ns, veth.ns_dev, loss)
            if why:
                return {"ok": None, "skipped": f"the kernel has no netem qdisc ({no_netem}) and {why}"}
        kit = make_kit(tmp, 1)
        broker = Broker(tmp, host=veth.host_ip).start()
        d = Daemon(tmp, kit, "netem", broker, netns=veth.ns).start()
        try:
            await d.ready(timeout=120)
            s, _ = await _chaos(tmp, kit, broker, d, rate=rate, duration=duration, events=[],
                                mqtt_clients=mqtt_clients, socket_clients=0, max_tokens=max_tokens)
            s.update(loss_pct=loss, delay_ms=delay_ms, rate=rate, duration_s=duration, method=method)
            if method.startswith("netfilter"):
                s["dropped_packets"] = netfilter_dropped(veth.ns)
            s["ok"] = _invariants(s) and s.get("dropped_packets", 1) > 0
            return s
        finally:
            d.stop()
            broker.stop()
    finally:
        veth.down()


# ---------------------------------------------------------------------- soak


async def soak(tmp: Path, *, duration: float = 1800.0, rate: float = 5.0, mqtt_clients: int = 5,
               socket_clients: int = 5, max_tokens: int = 16, period: float = 5.0) -> dict:
    """A steady stream for DURATION s; RSS and open descriptors sampled every PERIOD s, with
    their least-squares slopes after the first tenth (warm-up)."""
    kit = make_kit(tmp, 2)
    broker = Broker(tmp).start()
    d = Daemon(tmp, kit, "soak", broker).start()
    try:
        await d.ready()
        sampler = Sampler([d], period=period, series=True).start()
        s, _ = await _chaos(tmp, kit, broker, d, rate=rate, duration=duration, events=[],
                            mqtt_clients=mqtt_clients, socket_clients=socket_clients, max_tokens=max_tokens)
        await sampler.stop()
        pts = [(t, rss, fds) for t, _, rss, fds in sampler.samples if t >= duration / 10]
        ts = [p[0] for p in pts]
        s.update(duration_s=duration, rate=rate, samples=len(pts),
                 rss_first_mb=round(pts[0][1] / MB, 1) if pts else None,
                 rss_last_mb=round(pts[-1][1] / MB, 1) if pts else None,
                 rss_slope_mb_per_h=round(slope_per_hour(ts, [p[1] / MB for p in pts]), 2),
                 fds_first=pts[0][2] if pts else None, fds_last=pts[-1][2] if pts else None,
                 fds_slope_per_h=round(slope_per_hour(ts, [p[2] for p in pts]), 2))
        s["ok"] = _invariants(s, allow_unavailable=False)
        return s
    finally:
        d.stop()
        broker.stop()
