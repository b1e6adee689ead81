"""python -m bulletd.reliability: every reliability figure of docs/RELIABILITY.md, in one run.

    python -m bulletd.reliability                 # everything, full scale (hours: fuzzing, the soak)
    python -m bulletd.reliability --quick         # every step small (CI)
    python -m bulletd.reliability --only load,fleet --json
    python -m bulletd.reliability --skip fuzz,soak

Steps: sanitize (the native tests under ASan + UBSan, tests/test_sanitize.py), fuzz (python -m
bulletd.fuzz), load, load-busy, fleet, broker-kill, daemon-kill, partition, delay, netem, soak. Each run starts its
own Mosquitto and bulletd processes in a temporary folder. The partition needs root, `ip`
(iproute2) and network namespaces; netem (5 % loss) uses the kernel's netem qdisc, or netfilter's
random drop (iptables) where the kernel has none, and `delay` adds 200 ms each way with a TCP proxy. A step that cannot run here says why. Exit status 1 when a step broke an invariant (a request lost or answered
twice, an uneven fleet, a failing sanitizer or fuzz run).
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
import time
from pathlib import Path

from bulletd.reliability import scenarios as S

ROOT = Path(__file__).resolve().parent.parent.parent
FUZZ_TARGETS = ("bullet", "tokenizer", "request", "ota", "grammar", "gguf")

# (full, quick) keyword arguments of each scenario
SCALES = {
    "load": ({"requests": 1000, "mqtt_clients": 50, "socket_clients": 50, "max_tokens": 32},
             {"requests": 100, "mqtt_clients": 5, "socket_clients": 5, "max_tokens": 8, "idle": 1.0}),
    # the same burst against the default queue (workers + 4 x workers): the rest are answered busy
    "load-busy": ({"requests": 1000, "mqtt_clients": 50, "socket_clients": 50, "max_tokens": 32, "max_queue": 0},
                  {"requests": 100, "mqtt_clients": 5, "socket_clients": 5, "max_tokens": 8, "max_queue": 0,
                   "idle": 1.0}),
    "fleet": ({"duration": 60.0, "rate": 20.0}, {"duration": 5.0, "rate": 20.0, "clients": 4}),
    "broker-kill": ({"cycles": 50}, {"cycles": 3, "period": 1.5}),
    "daemon-kill": ({"cycles": 10}, {"cycles": 2, "period": 3.0, "max_tokens": 16}),
    "partition": ({"seconds": 10.0}, {"seconds": 2.0, "rate": 10.0, "tail": 3.0}),
    "delay": ({}, {"duration": 4.0}),
    "netem": ({}, {}),
    "soak": ({"duration": 1800.0}, {"duration": 8.0, "period": 1.0}),
}
RUNS = {"load": S.load, "load-busy": S.load, "fleet": S.fleet, "broker-kill": S.broker_kill, "daemon-kill": S.daemon_kill,
        "partition": S.partition, "delay": S.delay, "netem": S.netem, "soak": S.soak}
STEPS = ("sanitize", "fuzz", *RUNS)


def _tail(text: str, n: int = 6) -> list[str]:
    return [ln for ln in text.strip().splitlines()[-n:]]


def sanitize(quick: bool) -> dict:
    test = ROOT / "tests" / "test_sanitize.py"
    if not test.exists():
        return {"ok": None, "skipped": f"{test} is not here (a source checkout has it)"}
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)], cwd=ROOT,
                       capture_output=True, text=True)
    return {"ok": r.returncode == 0, "seconds": round(time.monotonic() - t0, 1), "output": _tail(r.stdout)}


def fuzz(quick: bool, runs: int) -> dict:
    t0 = time.monotonic()
    out: dict = {"targets": {}}
    cmds = ([("all", ["--all", "--quick"])] if quick else [(t, [t, "--runs", str(runs)]) for t in FUZZ_TARGETS])
    ok = True
    for name, args in cmds:
        r = subprocess.run([sys.executable, "-m", "bulletd.fuzz", *args], capture_output=True, text=True)
        out["targets"][name] = {"rc": r.returncode, "output": _tail(r.stdout + r.stderr)}
        ok = ok and r.returncode == 0
    out.update(ok=ok, seconds=round(time.monotonic() - t0, 1))
    return out


def run_step(step: str, quick: bool, args) -> dict:
    if step == "sanitize":
        return sanitize(quick)
    if step == "fuzz":
        return fuzz(quick, args.fuzz_runs)
    kw = dict(SCALES[step][1 if quick else 0])
    tmp = Path(tempfile.mkdtemp(prefix=f"bullet-rel-{step}-"))
    try:
        return asyncio.run(RUNS[step](tmp, **kw))
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _line(step: str, r: dict) -> str:
    if r.get("skipped"):
        return f"{step:12} skipped: {r['skipped']}"
    verdict = {True: "ok", False: "FAILED", None: "-"}[r.get("ok")]
    if "requests" in r:
        s = (f"{r['requests']} requests: {r['final']} final, {r['unavailable']} unavailable, "
             f"{r['lost']} lost, {r['duplicates']} duplicated")
        if r.get("p50_ms") is not None:
            s += f"; ok p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms"
        if "throughput_rps" in r:
            s += f"; {r['throughput_rps']} req/s; RSS {r['rss_idle_mb']} -> peak {r['rss_peak_mb']} -> {r['rss_after_mb']} MB"
            s += f"; queue peak {r['queue_peak']}/{r['queue_capacity']}"
        if "deviation_before" in r:
            s += (f"; split {r['split_before']} ({r['deviation_before']:.0%} off even), after the kill "
                  f"{r['split_after']} ({r['deviation_after']:.0%}); held by the killed member {r['held_by_killed']}")
        if "rss_slope_mb_per_h" in r:
            s += f"; RSS slope {r['rss_slope_mb_per_h']} MB/h, fds slope {r['fds_slope_per_h']}/h"
        return f"{step:12} {verdict:6} {s}"
    return f"{step:12} {verdict:6} {r.get('seconds', '')} s " + " | ".join(r.get("output", [])[-1:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bulletd.reliability", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="steps: " + ", ".join(STEPS))
    ap.add_argument("--quick", action="store_true", help="every step small (CI)")
    ap.add_argument("--only", default="", help="comma-separated steps to run")
    ap.add_argument("--skip", default="", help="comma-separated steps to leave out")
    ap.add_argument("--fuzz-runs", type=int, default=1_000_000, help="executions per fuzz target (full mode)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folders (logs, configs)")
    a = ap.parse_args(argv)
    only = [s for s in a.only.split(",") if s]
    skip = {s for s in a.skip.split(",") if s}
    bad = [s for s in [*only, *skip] if s not in STEPS]
    if bad:
        ap.error(f"unknown step(s) {', '.join(bad)}; steps are {', '.join(STEPS)}")
    steps = [s for s in (only or STEPS) if s not in skip]
    results: dict = {}
    for step in steps:
        t0 = time.monotonic()
        try:
            results[step] = run_step(step, a.quick, a)
        except Exception as exc:   # a run that could not be carried out is a failure, with its reason
            results[step] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        results[step].setdefault("seconds", round(time.monotonic() - t0, 1))
        if not a.json:
            r = results[step]
            print(_line(step, r) if "error" not in r else f"{step:12} FAILED {r['error']}", flush=True)
    if a.json:
        print(json.dumps({"quick": a.quick, "machine": {"cpus": os.cpu_count()}, "steps": results}, indent=1))
    return 1 if any(r.get("ok") is False for r in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
