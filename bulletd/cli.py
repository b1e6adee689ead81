"""`bulletd-cli`: talk to a running bulletd over its Unix socket (or MQTT), built on bulletd.client.

    bulletd-cli status
    bulletd-cli list                      # alias: ps; --json for machine-readable output
    bulletd-cli load child_models/stories.bullet [--as NAME] [--swap]
    bulletd-cli unload stories [--cancel] [--timeout 5]
    bulletd-cli route "how long to boil an egg"
    bulletd-cli reload                    # re-read the config file (like SIGHUP)
    bulletd-cli generate "Once upon a time" [--child stories] [--max-tokens 64] [--no-stream]
    bulletd-cli ask "turn on the kitchen light" [--act] [--child home]   # an agent: call, actions, result
    bulletd-cli rollback stories          # back to the version the last install replaced
    bulletd-cli install new.bullet [--force]   # a signed file, like an OTA push; --force: older version
    bulletd-cli bench [--quick] [--json] [--broker HOST:PORT]   # same as python -m bulletd.bench.daemon

Exit status: 0 ok, 1 the daemon answered an error (its code is printed), 2 bad usage,
3 the daemon (or broker) cannot be reached, 141 standard output was closed early (`| head`).
With --json an error is printed on standard output as {"ok": false, "error": {"code", "message"}}
(code: the daemon's error code, "unreachable" for exit 3, "usage" for exit 2).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from bulletd.client import Client, DaemonError
from bulletd.errors import TransportError, plain, stdout_gone

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


def _home_line(h: dict | None) -> str:
    if not h:
        return "off (tools.home.file)"
    last = h.get("last_action") or {}
    return (f"{h.get('entities')} entities from {h.get('file')}, acting {'on' if h.get('act') else 'off'}, "
            f"{'connected' if h.get('connected') else 'not connected'}, {h.get('known_states')} states known, "
            f"{h.get('published')} command(s) published"
            + (f"; last: {last.get('text')!r} -> {last.get('summary')}" if last else ""))


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
        ("home", _home_line((s.get("tools") or {}).get("home"))),
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


def _host_port(text: str) -> tuple[str, int | None]:
    host, sep, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not sep:
        return text, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST[:PORT] with a port from 1 to 65535, got {text!r}")
    return host or "127.0.0.1", int(port)


class _Parser(argparse.ArgumentParser):
    """Usage errors as JSON when the command line asks for --json."""
    json_errors = False

    def error(self, message: str):
        if _Parser.json_errors:
            _print_json_error("usage", f"{self.prog}: {message}")
            raise SystemExit(EXIT_USAGE)
        super().error(message)


def _print_json_error(code: str, message: str) -> None:
    json.dump({"ok": False, "error": {"code": code, "message": message}}, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()


def print_answer(r: Any) -> None:
    route = r.route or {}
    print(f"child    {r.child} ({route.get('reason', '-')}"
          + (f", {route['confidence']:.2f}" if isinstance(route.get("confidence"), (int, float)) else "") + ")")
    print(f"call     {json.dumps(r.call, ensure_ascii=False, separators=(',', ':'))}")
    if r.actions:
        for i, act in enumerate(r.actions):
            data = f" {json.dumps(act['data'], ensure_ascii=False)}" if act.get("data") else ""
            print(f"{'actions' if i == 0 else '':<8} {act['service']} {act['entity_id']}{data}")
    res = r.result if isinstance(r.result, dict) else {"value": r.result}
    if "value" in res:
        exact = res.get("exact")
        line = f"{res['value']}" + (f"  (exact {exact})" if exact is not None and exact != str(res["value"]) else "")
    elif res.get("acted"):
        line = "done: " + ", ".join(f"{p['topic']} {p['payload']}" for p in res.get("published", []))
    else:
        line = res.get("message") or json.dumps(res, ensure_ascii=False)
        if r.actions and r.actions[0].get("service") != "get_state":
            line += " (add --act to carry it out)"
    print(f"result   {line}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bulletd-cli", description="Control and query a running bulletd.")
    p.add_argument("--socket", metavar="PATH", help="daemon socket (default: BULLETD_SOCKET or the daemon's default)")
    p.add_argument("--mqtt", metavar="HOST[:PORT]", type=_host_port,
                   help="talk over MQTT instead of the socket (read-only ops)")
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
    sp.add_argument("--threads", type=int, help="threads the generation's steps run on (the same text with any number)")
    sp.add_argument("--stop", action="append", help="stop string (repeatable)")
    sp.add_argument("--deadline", type=float, help="seconds the daemon may spend")
    sp.add_argument("--no-stream", action="store_true", help="print the text only at the end")
    sp = sub.add_parser("ask", help="ask an agent child: shows the routed child, the call, the actions, the result")
    sp.add_argument("text", help="the utterance, or - to read it from standard input")
    sp.add_argument("--child", help="the agent child (default: the mother routes)")
    sp.add_argument("--act", action="store_true", help="carry out the actions (needs tools.home.act in the "
                    "daemon's config); without it the reply is a dry run")
    sp.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the reply as JSON")
    sp.add_argument("--schema", metavar="JSON|@FILE", help="a JSON schema the call must follow for this request "
                    "(narrower than the child's own)")
    sp.add_argument("--deadline", type=float, help="seconds the daemon may spend")
    sp = sub.add_parser("rollback", help="return a child to the version its last install replaced")
    sp.add_argument("name")
    sp = sub.add_parser("install", help="install a signed .bullet file like an OTA push (admin)")
    sp.add_argument("file")
    sp.add_argument("--sig", help="signature file (default FILE.sig)")
    sp.add_argument("--force", action="store_true", help="allow a lower version (anti-rollback override)")
    sp = sub.add_parser("bench", help="daemon benchmark (python -m bulletd.bench.daemon)")
    from bulletd.bench.daemon import add_arguments as bench_arguments
    bench_arguments(sp, json_dest="bench_json")   # --json after `bench` as well as before it
    return p


def _client(a: argparse.Namespace) -> Client:
    if a.mqtt:
        host, port = a.mqtt
        from bulletd.mqtt_conn import read_password
        password = read_password(os.environ.get("BULLET_MQTT_PASSWORD"), a.password_file)
        return Client.mqtt(host, port or (8883 if a.tls else 1883), device=a.device, fleet=a.fleet,
                           prefix=a.prefix, username=a.username, password=password, tls=a.tls,
                           ca_file=a.cafile, timeout=a.timeout)
    return Client(a.socket, timeout=a.timeout)


def run(a: argparse.Namespace) -> int:
    if a.cmd == "bench":
        from bulletd.bench.daemon import run as bench_run
        a.json = a.json or a.bench_json
        return bench_run(a)
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
        elif a.cmd == "ask":
            text = sys.stdin.read().strip() if a.text == "-" else a.text
            schema = None
            if a.schema:
                try:
                    schema = json.loads(open(a.schema[1:], encoding="utf-8").read() if a.schema.startswith("@")
                                        else a.schema)
                except (OSError, ValueError) as exc:
                    print(f"bulletd-cli: --schema: {exc}", file=sys.stderr)
                    return EXIT_USAGE
            r = c.ask(text, a.child, act=a.act, deadline=a.deadline, schema=schema)
            json.dump(r.raw, out, indent=2, ensure_ascii=False) if a.json else print_answer(r)
        elif a.cmd == "generate":
            prompt = sys.stdin.read() if a.text == "-" else a.text
            settings = {"max_tokens": a.max_tokens, "temperature": a.temperature, "top_k": a.top_k,
                        "top_p": a.top_p, "repetition_penalty": a.repetition_penalty, "seed": a.seed,
                        "threads": a.threads, "stop": a.stop, "deadline": a.deadline}
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
    argv = sys.argv[1:] if argv is None else list(argv)
    _Parser.json_errors = "--json" in argv
    a = build_parser().parse_args(argv)
    json_errors = a.json or getattr(a, "bench_json", False)

    def fail(status: int, code: str, message: str) -> int:
        if json_errors:
            _print_json_error(code, message)
        else:
            print(f"bulletd-cli: {message}", file=sys.stderr)
        return status
    try:
        rc = run(a)
        sys.stdout.flush()        # a pipe closed early shows here, not at interpreter exit
        return rc
    except BrokenPipeError:       # `bulletd-cli list | head`: the reader left, nothing to say
        return stdout_gone()
    except TransportError as exc:  # DaemonUnavailable, or the bench's broker
        return fail(EXIT_DOWN, "unreachable", str(exc))
    except DaemonError as exc:
        return fail(EXIT_ERROR, exc.code, exc.message if json_errors else f"error {exc.code}: {exc.message}")
    except OSError as exc:        # a file named on the command line (--password-file, ...)
        return fail(EXIT_USAGE, "usage", plain(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
