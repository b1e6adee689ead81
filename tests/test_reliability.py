"""python -m bulletd.reliability --quick: load, a fleet with a member SIGKILLed, the broker and
the daemon SIGKILLed and restarted, and a network partition, each against real Mosquitto and
bulletd processes; every request must end with exactly one final reply or a client-side
DaemonUnavailable, none lost, none answered twice (docs/RELIABILITY.md)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bulletd.reliability.harness import slope_per_hour
from bulletd.reliability.scenarios import _evenness

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("load", "fleet", "broker-kill", "daemon-kill", "partition")   # the soak is long by nature


def test_slope_and_evenness():
    assert slope_per_hour([0, 1800, 3600], [10, 11, 12]) == pytest.approx(2.0)
    assert slope_per_hour([0, 60, 120], [5, 5, 5]) == 0.0
    assert _evenness({"a": 10, "b": 10, "c": 10}, ["a", "b", "c"]) == 0.0
    assert _evenness({"a": 12, "b": 9, "c": 9}, ["a", "b", "c"]) == pytest.approx(0.2)
    assert _evenness({"a": 30}, ["a", "b", "c"]) == pytest.approx(2.0)


@pytest.mark.timeout(240)
def test_quick_run_loses_nothing_and_answers_nothing_twice():
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    # two runs side by side: most of each step is waiting (streams at a fixed rate, restarts)
    halves = [STEPS[::2], STEPS[1::2]]
    procs = [subprocess.Popen([sys.executable, "-m", "bulletd.reliability", "--quick", "--json", "--only", ",".join(h)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for h in halves]
    out, err = {}, ""
    for p in procs:
        stdout, stderr = p.communicate(timeout=230)
        out.update(json.loads(stdout)["steps"])
        err += stderr[-2000:]
    assert sorted(out) == sorted(STEPS)
    for step, s in out.items():
        if step == "partition" and s.get("skipped"):
            # needs root and network namespaces (scripts/setup.sh --test installs iproute2)
            assert os.geteuid() != 0 or s["skipped"].startswith("ip netns add failed"), s
            continue
        assert s["ok"] is True, (step, s, err)
        assert s["requests"] > 0 and s["lost"] == 0 and s["duplicates"] == 0, (step, s)
        assert s["final"] + s["unavailable"] == s["requests"], (step, s)
    load = out["load"]
    assert load["final"] == load["requests"] == 100 and load["unavailable"] == 0
    assert load["codes"].get("ok", 0) > 0 and load["p50_ms"] <= load["p99_ms"]
    assert load["queue_peak"] <= load["queue_capacity"]
    fleet = out["fleet"]
    assert fleet["deviation_before"] <= 0.2 and fleet["deviation_after"] <= 0.2
    assert fleet["answered_by_killed_after"] == 0 and sum(fleet["split_after"].values()) > 0
    # the chaos runs really broke something: requests were cut off, and served again after
    assert out["broker-kill"]["unavailable"] > 0 and out["broker-kill"]["mqtt_ok"] > 0
    assert out["daemon-kill"]["by_transport"]["mqtt"]["final"] == out["daemon-kill"]["by_transport"]["mqtt"]["requests"]


def test_the_fuzz_step_runs_every_fuzz_target():
    from bulletd.fuzz import TARGETS
    from bulletd.reliability.__main__ import FUZZ_TARGETS
    assert sorted(FUZZ_TARGETS) == sorted(TARGETS)
