"""Agent request bench: the end-to-end time of an agent request through bulletd over MQTT, beside
the same request run in-process (bulletd.agents.agent.run_agent).

    python -m bulletd.bench.agents [--quick] [--json] [--broker HOST:PORT]

Writes a signed random-weight REFERENCE-size agent child (home tool, the default schema in its
header), a small home file, starts its own Mosquitto (unless --broker) and bulletd with acting on,
and times: the first request of the child in-process (grammar compile and first masks), then
alternating in-process and MQTT requests (dry run), and MQTT requests with act (the reply comes
after the device command was published with QoS 1). A request schema pins the call so that the
random model emits a complete one (54 tokens: {"intent":"HassLightSet","area":"kitchen",...}).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bulletd.bench.daemon import _free_port, _port_open, _wait

HOME = """areas:
  - {id: kitchen, names: [kitchen]}
  - {id: bedroom, names: [bedroom]}
entities:
  - {id: light.kitchen_ceiling, area: kitchen, names: [kitchen light], command_topic: z2m/kitchen_ceiling/set, state_topic: z2m/kitchen_ceiling, payload: json}
  - {id: light.kitchen_counter, area: kitchen, names: [counter lights], command_topic: z2m/kitchen_counter/set, state_topic: z2m/kitchen_counter, payload: json}
  - {id: fan.bedroom, area: bedroom, names: [bedroom fan], command_topic: tasmota/bedroom_fan/cmnd/POWER, payload: plain}
"""
UTTERANCE = "set the kitchen lights to 40 percent"
CALL = {"intent": "HassLightSet", "area": "kitchen", "brightness": 40}


def pinned(call: dict) -> dict:
    props = {k: ({"type": "string", "enum": [v]} if isinstance(v, str) else
                 {"type": "integer", "minimum": v, "maximum": v}) for k, v in call.items()}
    return {"type": "object", "properties": props, "required": list(call)}


def _stats(ms: list[float]) -> dict:
    s = sorted(ms)
    return {"median_ms": round(statistics.median(s), 2), "p90_ms": round(s[int(0.9 * (len(s) - 1))], 2),
            "min_ms": round(s[0], 2), "n": len(s)}


def run(reps: int, broker: str | None) -> dict:
    from bulletd.agents.agent import AgentContext, run_agent
    from bulletd.agents.home import HomeConfig
    from bulletd.agents.tools import TOOLS
    from bulletd.client import Client
    from bulletd.format.synth import REFERENCE, write_random_lm
    from bulletd.runtime import load_model
    from bulletd.signing import generate_keypair, sign_file

    tmp = Path(tempfile.mkdtemp(prefix="bullet-agent-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        models = tmp / "models"
        models.mkdir()
        priv, pub = generate_keypair("bench", tmp / "key")
        path = write_random_lm(models / "home.bullet", REFERENCE, seed=12, name="home", extra={
            "agent": {"tool": "home", "schema": TOOLS["home"].schema, "template": "{text}\n=>"}})
        sign_file(path, priv)
        home_file = tmp / "home.yaml"
        home_file.write_text(HOME)
        out: dict = {"child": dict(REFERENCE), "utterance": UTTERANCE, "call": CALL}

        # in-process: the first request (grammar compile + first masks), then warm ones
        model = load_model(path)
        out["kernel"] = model.kernel_path
        ctx = AgentContext(home=HomeConfig.load(home_file))
        schema = pinned(CALL)
        t = time.perf_counter()
        r = run_agent(model, UTTERANCE, {}, ctx, schema=schema)
        out["first_request_in_process_ms"] = round((time.perf_counter() - t) * 1e3, 2)
        assert r["call"] == CALL, r
        out["tokens"] = r["tokens"]
        out["prompt_tokens"] = r["prompt_tokens"]

        if broker:
            host, _, p = broker.partition(":")
            host, port = host or "127.0.0.1", int(p or 1883)
        else:
            exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
            host, port = "127.0.0.1", _free_port()
            conf = tmp / "mosquitto.conf"
            conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                            "set_tcp_nodelay true\n")
            procs.append(subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
            _wait(lambda: _port_open(port), 10, "mosquitto")
        sock = str(tmp / "d.sock")
        cfg = tmp / "d.yaml"
        cfg.write_text(json.dumps({
            "device_id": "agentbench", "model_dir": str(models), "log_level": "warning", "socket": {"path": sock},
            "trust": {"keys": [str(pub)]}, "mqtt": {"host": host, "port": port},
            "tools": {"home": {"file": str(home_file), "act": True, "max_actions_per_minute": 100000}}}))
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        log = open(tmp / "d.log", "wb")
        procs.append(subprocess.Popen([sys.executable, "-m", "bulletd.daemon", "--config", str(cfg)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=log))
        _wait(lambda: os.path.exists(sock), 60, "the bulletd socket")
        with Client(sock) as c:
            _wait(lambda: c.status()["mqtt"].get("state") == "connected"
                  and (c.status()["tools"]["home"] or {}).get("connected"), 20, "the MQTT connections")
        raw, dry, act, worker, total = [], [], [], [], []
        with Client.mqtt(host, port, device="agentbench", timeout=60) as c:
            c.ask(UTTERANCE, child="home", schema=schema)                        # the daemon's first request
            for _ in range(reps):
                t = time.perf_counter()
                run_agent(model, UTTERANCE, {}, ctx, schema=schema)
                raw.append((time.perf_counter() - t) * 1e3)
                t = time.perf_counter()
                a = c.ask(UTTERANCE, child="home", schema=schema)
                dry.append((time.perf_counter() - t) * 1e3)
                worker.append(a.timing["worker_ms"])
                total.append(a.timing["total_ms"])
                assert a.call == CALL and len(a.actions) == 2
                t = time.perf_counter()
                a = c.ask(UTTERANCE, child="home", schema=schema, act=True)
                act.append((time.perf_counter() - t) * 1e3)
                assert a.result["acted"]
        model.close()
        out["in_process"] = _stats(raw)
        out["mqtt_dry_run"] = _stats(dry)
        out["mqtt_act"] = _stats(act)
        out["daemon_worker"] = _stats(worker)
        out["daemon_total"] = _stats(total)
        out["mqtt_overhead_ms"] = round(out["mqtt_dry_run"]["median_ms"] - out["in_process"]["median_ms"], 2)
        return out
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bulletd.bench.agents", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (noisier)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--broker", metavar="HOST:PORT", help="use this broker instead of starting mosquitto")
    a = ap.parse_args(argv)
    r = run(5 if a.quick else 20, a.broker)
    if a.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"agent request, REFERENCE random child ({r['kernel']}), {r['prompt_tokens']} prompt + {r['tokens']} "
          f"generated tokens, call {json.dumps(r['call'], separators=(',', ':'))}")
    print(f"  first request in-process (grammar compile + first masks): {r['first_request_in_process_ms']:.1f} ms")
    for key, what in (("in_process", "in-process run_agent"), ("mqtt_dry_run", "through bulletd over MQTT, dry run"),
                      ("mqtt_act", "through bulletd over MQTT, act (QoS 1 command published)"),
                      ("daemon_total", "  of the dry run: in the daemon's scheduler (queue + worker)"),
                      ("daemon_worker", "  of the dry run: run_agent on the daemon's worker")):
        s = r[key]
        print(f"  {what:<62} median {s['median_ms']:7.2f} ms  p90 {s['p90_ms']:7.2f} ms  (n={s['n']})")
    print(f"  MQTT + daemon overhead on the dry run: {r['mqtt_overhead_ms']:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
