"""The daemon benchmark command runs end to end and reports every figure (no speed is asserted:
figures are the benchmark's output, not a test's)."""
import json
import os
import subprocess
import sys

import pytest

from _daemon_util import ROOT


@pytest.mark.timeout(300)
def test_bench_quick_json_reports_every_figure():
    r = subprocess.run([sys.executable, "-m", "bulletd.bench.daemon", "--quick", "--json"], capture_output=True,
                       text=True, timeout=280, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    j = json.loads(r.stdout)
    for child in ("small", "ref0"):
        t = j[f"throughput_{child}"]
        assert t["raw_tokens_per_s"] > 0 and t["mqtt_tokens_per_s"] > 0 and t["tokens"] > 0
        assert "socket_overhead_ms" in t and "overhead_ms" in t
        u = t["under_load"]           # two requests in flight to the one-worker daemon
        assert u["in_flight"] == 2 and u["raw_tokens_per_s"] > 0 and u["mqtt_tokens_per_s"] > 0
        assert u["rounds"] >= 3 and "overhead_pct" in u
        assert 0 < u["worker_cpu_ms"] <= u["worker_ms"] + 0.5 and 0 < t["worker_cpu_ms"] <= t["worker_ms"] + 0.5
        assert t["worker_ms"] <= t["daemon_ms"] + 0.01
        fl = t["broker_floor"]        # the echo through the same broker, no model behind it
        assert fl["round_trip_ms"] > 0 and fl["raw_ms"] > 0 and 0 < fl["floor_pct"] < 100
    assert j["first_chunk_small"]["prompt_tokens"] == 16 and j["first_chunk_small"]["mqtt_first_chunk_ms"] > 0
    cc = j["concurrency"]
    assert cc["two_tokens_per_s"] > 0 and "runtime_alone_speedup" in cc
    if len(os.sched_getaffinity(0)) < 2:
        assert "core_speeds" not in cc     # one core: no per-core comparison to make
    else:
        assert len(cc["core_speeds"]) == 2 and all(len(x) >= 2 and min(x.values()) > 0 for x in cc["core_speeds"])
        # each ceiling (before, after) is the two fastest cores' sum over the fastest
        assert len(cc["core_ceilings"]) == 2
        for speeds, ceiling in zip(cc["core_speeds"], cc["core_ceilings"]):
            top = sorted(speeds.values(), reverse=True)
            assert abs(ceiling - (top[0] + top[1]) / top[0]) < 0.01
    assert set(j["rss"]["children_loaded"]) >= {"ref0", "ref1", "ref2", "ref3"}
    assert j["rss"]["rss_mb"] > 10
    assert 4.5 < j["load_unload"]["size_mb"] < 5.5 and j["load_unload"]["load_ms"] > 0


def test_route_bench_on_the_shipped_children():
    r = subprocess.run([sys.executable, "-m", "bulletd.bench.daemon", "--route", str(ROOT / "child_models"),
                        "--json"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    if not (ROOT / "child_models" / "mother.bullet").exists():
        pytest.fail("child_models/ has no mother.bullet")
    assert j["mother"] is True and j["prompts"] > 0 and 0 <= j["accuracy"] <= 1 and j["mean_ms"] > 0
