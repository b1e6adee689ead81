"""`bulletd-cli`: talk to a running bulletd over its Unix socket (or MQTT), built on bulletd.client.

    bulletd-cli status
    bulletd-cli list                      # alias: ps; --json for machine-readable output
    bulletd-cli load child_models/stories.bullet [--as NAME] [--swap]
    bulletd-cli unload stories [--cancel] [--timeout 5]
    bulletd-cli route "how long to boil an egg"
    bulletd-cli reload                    # re-read the config file (like SIGHUP)
    bulletd-cli generate "Once upon a time" [--child stories] [--max-tokens 64] [--no-stream]
    bulletd-cli rollback stories          # back to the version the last install replaced
    bulletd-cli install new.bullet [--force]   # a signed file, like an OTA push; --force: older version
    bulletd-cli bench [--quick]           # same as python -m bulletd.daemon.bench

Exit status: 0 ok, 1 the daemon answered an error (its code is printed), 2 bad usage,
3 the daemon (or broker) cannot be reached.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from bulletd.client import Client, DaemonError, DaemonUnavailable

EXIT_ERROR, EXIT_USAGE, EXIT_DOWN = 1, 2, 3


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    s = max(0.0, time.time() - ts)
    if s < 60:
        return f"{s:.0f}s ago"
    if s < 3600:
        return f"{s / 60:.0f}m ago"
    if s < 86400:
        return f"{s / 3600:.1f}h ago"
    return f"{s / 86400:.1f}d ago"


def _size(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header)] + [fmt.format(*map(str, r)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def print_children(children: list[dict]) -> None:
    rows = []
    for c in children:
        loaded = c.get("loaded", True)
        state = "retired" if c.get("retired") else ("loaded" if loaded else "on disk")
        rows.append([c["name"], c.get("version", "-") if loaded else "-", _size(c.get("size")), state,
                     (c.get("signer") or "unsigned") if loaded else "-",
                     _ago(c.get("loaded_since")) if loaded else "-", _ago(c.get("last_used")) if loaded else "-",
                     c.get("requests", "-") if loaded else "-", c.get("active", "-") if loaded else "-",
                     c.get("routable_by") or "-"])
    print(table(rows, ["NAME", "VERSION", "SIZE", "STATE", "SIGNER", "LOADED", "LAST USED", "REQUESTS",
                       "ACTIVE", "ROUTED BY"]))


def _ota_line(o: dict) -> str:
    if not o.get("enabled"):
        return "off"
    a = o.get("active")
    busy = f", receiving {a['name']} {a['version']} {a['have']}/{a['total']}" if a else ""
    return ("connected" if o.get("connected") else "not connected") + busy + \
        f", {len(o.get('children') or {})} child(ren) installed by OTA (bulletd-cli list shows the last push)"


def print_status(s: dict) -> None:
    mem = s.get("memory", {})
    mq = s.get("mqtt", {})
    mo = s.get("mother") or {}
    q = s.get("queue", {})
    pairs = [
        ("state", s.get("state")), ("device", s.get("device")), ("version", s.get("version")),
        ("pid", s.get("pid")), ("uptime", f"{s.get('uptime_s', 0):.0f} s"),
        ("children", f"{len(s.get('children', []))} loaded of {len(s.get('available', []))} installed: "
                     f"{', '.join(s.get('children', [])) or '-'}"),
        ("mother", f"{mo.get('name')} v{mo.get('version')} ({len(mo.get('labels', []))} labels, threshold "
                   f"{mo.get('threshold')})" if mo.get("name") else (mo.get("error") or "none")),
        ("memory", f"rss {_size(mem.get('rss'))}, children {_size(mem.get('children_bytes'))} of budget "
                   f"{_size(mem.get('budget_bytes'))}, {mem.get('evictions', 0)} evictions"),
        ("workers", f"{s.get('workers')} ({s.get('inflight')} in flight, queue {q.get('admitted')}/{q.get('capacity')}, "
                    f"{q.get('rejected')} rejected busy)"),
        ("requests", ", ".join(f"{k} {v}" for k, v in (s.get("requests") or {}).items())),
        ("errors", ", ".join(f"{k} {v}" for k, v in (s.get("errors") or {}).items()) or "none"),
        ("mqtt", (f"{mq.get('state')} to {mq.get('broker')} as {mq.get('client_id')}"
                  + (f" (last error: {mq['last_error']})" if mq.get("last_error") else "")) if mq.get("enabled") else "off"),
        ("socket", s.get("socket")),
        ("ota", _ota_line(s.get("ota") or {})),
    ]
    w = max(len(k) for k, _ in pairs)
    for k, v in pairs:
        print(f"{k:<{w}}  {v}")


def print_route(r: dict) -> None:
    d = r["decision"]
    print(f"child       {d['child'] or '(none)'}")
    print(f"reason      {d['reason']}")
    print(f"confidence  {d['confidence']:.3f}  (threshold {r.get('threshold')}, fallback {r.get('fallback') or '-'})")
    print(f"time        {d['elapsed_ms']:.3f} ms")
    if d.get("scores"):
        print("mother scores:")
        for k, v in sorted(d["scores"].items(), key=lambda kv: -kv[1]):
            print(f"  {k:<20} {v:.3f}")
    if d.get("example_scores"):
        print("example centroid cosine:")
        for k, v in sorted(d["example_scores"].items(), key=lambda kv: -kv[1]):
            print(f"  {k:<20} {v:.3f}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bulletd-cli", description="Control and query a running bulletd.")
    p.add_argument("--socket", metavar="PATH", help="daemon socket (default: BULLETD_SOCKET or the daemon's default)")
    p.add_argument("--mqtt", metavar="HOST[:PORT]", help="talk over MQTT instead of the socket (read-only ops)")
    p.add_argument("--device", help="device id for --mqtt (default: this host name)")
    p.add_argument("--fleet", action="store_true", help="with --mqtt: send to the fleet topic")
    p.add_argument("--prefix", default="bullet", help="with --mqtt: topic prefix (default bullet)")
    p.add_argument("--username", help="with --mqtt: broker user name")
    p.add_argument("--password-file", metavar="FILE",
                   help="with --mqtt: file holding the broker password (or set BULLET_MQTT_PASSWORD)")
    p.add_argument("--tls", action="store_true", help="with --mqtt: connect with TLS")
    p.add_argument("--cafile", help="with --mqtt --tls: CA certificate that signed the broker's certificate")
    p.add_argument("--json", action="store_true", help="print the daemon's reply as JSON")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for a final reply")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.required = True
    sp = sub.add_parser("load", help="load a child by name (in the model dir) or path")
    sp.add_argument("target")
    sp.add_argument("--as", dest="as_name", metavar="NAME")
    sp.add_argument("--swap", action="store_true", help="replace a loaded child of that name (a hot swap)")
    sp = sub.add_parser("unload", help="unload a child")
    sp.add_argument("name")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--cancel", action="store_true", help="cancel its running requests (they get an error)")
    g.add_argument("--wait", action="store_true", help="wait for its running requests (default)")
    sp.add_argument("--wait-timeout", type=float, dest="wait_timeout", help="seconds to wait")
    for name in ("list", "ps"):
        sp = sub.add_parser(name, help="loaded and installed children")
    sub.add_parser("status", help="daemon status")
    sub.add_parser("reload", help="re-read the daemon's config file (admin; same as SIGHUP)")
    sub.add_parser("ping", help="is the daemon up?")
    sp = sub.add_parser("route", help="show the mother's decision and scores for TEXT")
    sp.add_argument("text")
    sp.add_argument("--child")
    sp = sub.add_parser("generate", help="generate text (streams to the terminal)")
    sp.add_argument("text", help="prompt, or - to read it from standard input")
    sp.add_argument("--child")
    sp.add_argument("--max-tokens", type=int)
    sp.add_argument("--temperature", type=float)
    sp.add_argument("--top-k", type=int)
    sp.add_argument("--top-p", type=float)
    sp.add_argument("--repetition-penalty", type=float)
    sp.add_argument("--seed", type=int)
    sp.add_argument("--stop", action="append", help="stop string (repeatable)")
    sp.add_argument("--deadline", type=float, help="seconds the daemon may spend")
    sp.add_argument("--no-stream", action="store_true", help="print the text only at the end")
    sp = sub.add_parser("rollback", help="return a child to the version its last install replaced")
    sp.add_argument("name")
    sp = sub.add_parser("install", help="install a signed .bullet file like an OTA push (admin)")
    sp.add_argument("file")
    sp.add_argument("--sig", help="signature file (default FILE.sig)")
    sp.add_argument("--force", action="store_true", help="allow a lower version (anti-rollback override)")
    sp = sub.add_parser("bench", help="daemon benchmark (python -m bulletd.daemon.bench)")
    sp.add_argument("bench_args", nargs=argparse.REMAINDER)
    return p


def _client(a: argparse.Namespace) -> Client:
    if a.mqtt:
        host, _, port = a.mqtt.partition(":")
        password = os.environ.get("BULLET_MQTT_PASSWORD")
        if a.password_file:
            with open(a.password_file, encoding="utf-8") as f:
                password = f.read().strip()
        return Client.mqtt(host, int(port or (8883 if a.tls else 1883)), device=a.device, fleet=a.fleet,
                           prefix=a.prefix, username=a.username, password=password, tls=a.tls,
                           ca_file=a.cafile, timeout=a.timeout)
    return Client(a.socket, timeout=a.timeout)


def run(a: argparse.Namespace) -> int:
    if a.cmd == "bench":
        from bulletd.daemon.bench import main as bench_main
        return bench_main(a.bench_args)
    out = sys.stdout
    with _client(a) as c:
        if a.cmd in ("list", "ps"):
            children = c.request("list")["children"]
            json.dump(children, out, indent=2) if a.json else print_children(children)
            for ch in ([] if a.json else children):
                if ch.get("ota"):
                    o = ch["ota"]
                    print(f"last OTA push of {ch['name']}: {o.get('version')} {o.get('state')}"
                          + (f" ({o.get('reason')}: {o.get('message')})" if o.get("reason") else "")
                          + f", {_ago(o.get('ts'))}")
        elif a.cmd in ("rollback", "install"):
            import os
            r = (c.request("rollback", name=a.name)["rolled_back"] if a.cmd == "rollback" else
                 c.request("install", path=os.path.abspath(a.file), force=a.force,
                           sig=os.path.abspath(a.sig) if a.sig else None)["installed"])
            json.dump(r, out, indent=2) if a.json else print(
                f"{a.cmd}: {r.get('name')} is now version {r.get('version')}")
        elif a.cmd == "status":
            s = c.status()
            json.dump(s, out, indent=2) if a.json else print_status(s)
        elif a.cmd == "reload":
            r = c.request("reload")
            json.dump(r, out) if a.json else print(f"reloaded {r.get('config') or '(built-in defaults)'}")
        elif a.cmd == "ping":
            r = c.ping()
            json.dump(r, out) if a.json else print(f"bulletd {r.get('version')} on {r.get('device')} is up")
        elif a.cmd == "load":
            info = c.load(a.target, a.as_name, a.swap)
            json.dump(info, out, indent=2) if a.json else print(
                f"loaded {info['name']} v{info['version']} ({_size(info['size'])}, signer "
                f"{info.get('signer') or 'unsigned'}) in {info.get('load_ms', 0):.1f} ms")
        elif a.cmd == "unload":
            mode = "cancel" if a.cancel else ("wait" if a.wait else None)
            r = c.unload(a.name, mode, a.wait_timeout)
            json.dump(r, out, indent=2) if a.json else print(
                f"unloaded {r['name']} v{r['version']} ({r['running']} running request(s), mode {r['mode']}, "
                f"{r['waited_ms']:.0f} ms)")
        elif a.cmd == "route":
            r = c.route(a.text, a.child)
            json.dump(r, out, indent=2) if a.json else print_route(r)
        elif a.cmd == "generate":
            prompt = sys.stdin.read() if a.text == "-" else a.text
            settings = {"max_tokens": a.max_tokens, "temperature": a.temperature, "top_k": a.top_k,
                        "top_p": a.top_p, "repetition_penalty": a.repetition_penalty, "seed": a.seed,
                        "stop": a.stop, "deadline": a.deadline}
            if a.no_stream or a.json:
                r = c.generate(prompt, a.child, **settings)
                if a.json:
                    json.dump(r.raw, out, indent=2)
                else:
                    print(r.text)
                res = r
            else:
                s = c.stream(prompt, a.child, **settings)
                for piece in s:
                    out.write(piece)
                    out.flush()
                out.write("\n")
                res = s.result
            if not a.json:
                t = res.timing
                print(f"[{res.child} via {res.route.get('reason')}, {res.tokens} tokens, {res.finish_reason}, "
                      f"first token {t.get('first_ms', 0):.1f} ms, {t.get('tokens_per_s', 0):.0f} tok/s]",
                      file=sys.stderr)
        if a.json:
            out.write("\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    try:
        return run(a)
    except DaemonUnavailable as exc:
        print(f"bulletd-cli: {exc}", file=sys.stderr)
        return EXIT_DOWN
    except DaemonError as exc:
        print(f"bulletd-cli: error {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
