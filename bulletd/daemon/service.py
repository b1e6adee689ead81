"""The daemon core: one `Daemon` holding config, registry, router and scheduler, answering
request maps from any transport with `handle()` (chunks through `emit`, one final reply as the
return value), plus the run loop: capture signals, start up, serve, drain, shut down.

    python -m bulletd.daemon --config /etc/bulletd/bulletd.yaml
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
import traceback
from pathlib import Path
from typing import Any, Awaitable, Callable

from bulletd import __version__
from bulletd.errors import BulletError, RequestError
from bulletd.daemon.config import Config, ConfigError, load_config
from bulletd.daemon.lifecycle import Notifier, setup_logging
from bulletd.daemon.protocol import ADMIN_OPS, Peer, Request, error_from_exc, error_reply, parse_request, wire_error
from bulletd.daemon.registry import Registry, load_trust_store
from bulletd.daemon.scheduler import Scheduler
from bulletd.router import Router, load_mother, no_route_error
from bulletd.tasks import cancel_and_wait

log = logging.getLogger("bulletd")

EmitChunk = Callable[[dict], Awaitable[None]]


class Daemon:
    def __init__(self, cfg: Config, config_path: str | None = None):
        self.cfg = cfg
        self.config_path = config_path
        self.cli_overrides: dict = {}        # command-line flags, applied again after each reload
        self.notifier = Notifier()
        self.started = time.time()
        self.accepting = False
        self.stop_event = asyncio.Event()
        self.reload_event = asyncio.Event()
        self.inflight = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.counts: dict[str, int] = {"requests": 0, "ok": 0}
        self.errors: dict[str, int] = {}
        self.scheduler = Scheduler(cfg.workers, cfg.max_queue)
        self.router = Router(None)
        self.mother_info: dict | None = None
        self.registry = self._make_registry(cfg)
        self.ota = None                  # bulletd.ota receiver, built in run() (its recovery first)
        self.socket_server = None
        self.mqtt = None
        self.home = None                 # bulletd.agents.home.HomeConfig (tools.home.file)
        self.home_link = None            # bulletd.agents.link.HomeLink: states in, commands out
        self._tasks: list[asyncio.Task] = []
        self._trimmed_at = 0                 # request count at the last trim_memory()

    # ------------------------------------------------------------------ setup
    def _mother_path(self, cfg: Config) -> str | None:
        m = cfg.router.mother
        if not m:
            p = cfg.models / "mother.bullet"
            return str(p) if p.exists() else None
        p = Path(m)
        if not p.is_absolute() and "/" not in m:
            p = cfg.models / (m if m.endswith(".bullet") else m + ".bullet")
        return str(p)

    def _make_registry(self, cfg: Config) -> Registry:
        trust = load_trust_store(cfg.trust.keys)
        if trust is None and not cfg.trust.allow_unsigned:
            log.warning("no trust store found at %s: signed children cannot be verified and unsigned "
                        "ones are refused (trust.allow_unsigned is false)", ", ".join(cfg.trust.keys))
        return Registry(**self._registry_settings(cfg, trust), executor=None, on_change=self._child_changed)

    def _registry_settings(self, cfg: Config, trust: Any) -> dict:
        """The registry's settings from a config: at start and at every reload."""
        return dict(model_dir=cfg.models, trust=trust, allow_unsigned=cfg.trust.allow_unsigned,
                    budget_bytes=int(cfg.registry.memory_budget_mb * (1 << 20)), keep_alive=cfg.registry.keep_alive,
                    load_on_demand=cfg.registry.load_on_demand, unload_timeout=cfg.registry.unload_timeout,
                    mother_path=self._mother_path(cfg))

    def _child_changed(self, name: str, child: Any) -> None:
        if self.mqtt is not None:
            self.mqtt.mark_status_dirty()
        if child is None:
            return      # keep its examples: an evicted child stays routable (it reloads on demand)
        if self.router.set_examples(name, child.header.get("examples")) and self.router.routable_by(name) == "examples":
            log.info("child %s is routable by its %d header examples", name, len(child.header["examples"]))

    async def load_mother(self) -> None:
        path = self.registry.mother_path
        if not path:
            self.router.set_mother(None)
            self.mother_info = None
            return
        from bulletd.daemon.registry import verify_trust
        loop = asyncio.get_running_loop()
        try:
            signer = await loop.run_in_executor(None, lambda: verify_trust(
                path, trust=self.registry.trust, allow_unsigned=self.cfg.trust.allow_unsigned))
            mother = await loop.run_in_executor(None, load_mother, path)
        except (BulletError, OSError) as exc:
            log.error("mother %s not loaded: %s; routing uses examples and the fallback only", path, exc)
            self.router.set_mother(None)
            self.mother_info = {"path": path, "error": str(exc)}
            return
        self.router.set_mother(mother)
        self.mother_info = {"path": path, "name": mother.name, "version": mother.version, "signer": signer,
                            "labels": mother.labels, "threshold": mother.threshold, "size": mother.size}
        log.info("mother %s v%s loaded: %d labels, threshold %.2f", mother.name, mother.version,
                 len(mother.labels), mother.threshold)

    async def preload(self) -> None:
        if not self.cfg.models.is_dir():
            log.warning("model dir %s does not exist (yet): no children until it is created", self.cfg.models)
        self.registry.scan()
        if not self.cfg.registry.preload:
            return
        for name in sorted(self.registry.known):
            try:
                await self.registry.load(name)
            except RequestError as exc:
                log.error("child %s not loaded: %s (%s)", name, exc.message, exc.code)
        # children never loaded (budget) are still routable once loaded on demand

    # ------------------------------------------------------------------ requests
    async def handle(self, obj: Any, emit: EmitChunk, peer: Peer, *, req: Request | None = None) -> dict:
        """Answer one request map. Returns the final reply (never raises)."""
        self.counts["requests"] += 1
        try:
            if req is None:
                if not isinstance(obj, dict):
                    raise RequestError("bad_request", f"expected a map as the request, found {type(obj).__name__}")
                req = parse_request(obj, self.cfg.limits)
            if not self.accepting and req.op not in ("ping", "status", "list"):
                raise RequestError("shutting_down", "the daemon is stopping and takes no new requests")
            if req.op in ADMIN_OPS and not peer.admin:
                raise RequestError("forbidden", f"{req.op} is an admin command; {peer.who or peer.transport} "
                                   "is not an admin (see socket.admin_uids / admin_groups, mqtt.allow_admin)")
            self.inflight += 1
            self.idle.clear()
            try:
                reply = await getattr(self, "op_" + req.op)(req, emit, peer)
            finally:
                self.inflight -= 1
                if self.inflight == 0:
                    self.idle.set()
            reply.setdefault("ok", True)
            reply["final"] = True
            self.counts["ok"] += 1
            return reply
        except BulletError as exc:   # RequestError, or a typed error from below: its wire code
            err = wire_error(exc)
            self.errors[err.code] = self.errors.get(err.code, 0) + 1
            log.info("request from %s failed: %s: %s", peer.who or peer.transport, err.code, err.message)
            return error_reply(err.code, err.message)
        except Exception as exc:   # a bug: log with traceback, answer internal, keep serving
            self.errors["internal"] = self.errors.get("internal", 0) + 1
            log.error("internal error serving %s: %s\n%s", peer.who or peer.transport, exc, traceback.format_exc())
            return error_from_exc(exc)

    async def op_ping(self, req: Request, emit: EmitChunk, peer: Peer) -> dict:
        return {"pong": True, "version": __version__, "device": self.cfg.device}

    def _threads(self, req: Request, child: str) -> None:
        """The threads this request's steps run on: its own `threads` (at most
        scheduler.max_threads), else the child's in scheduler.child_threads, else scheduler.threads."""
        asked, cap = req.generation.threads, self.cfg.max_threads
        if asked > cap:
            raise RequestError("bad_request", f"threads: at most {cap} on this device (scheduler.max_threads), "
                               f"found {asked}")
        n = asked or self.cfg.threads_for(child)
        req.generation.threads = n
        if req.settings is not None:
            req.settings["threads"] = n

    async def op_generate(self, req: Request, emit: EmitChunk, peer: Peer) -> dict:
        decision = self.route(req.prompt, req.child)
        self._threads(req, decision.child)
        self.scheduler.admit()
        try:
            lease = await self.registry.acquire(decision.child)
            try:
                limit = self.cfg.scheduler.max_deadline
                deadline = min(req.deadline or self.cfg.scheduler.default_deadline, limit)
                from bulletd.agents.agent import agent_spec
                spec = agent_spec(lease.child.header)
                if spec is not None:
                    out = await self._agent(req, lease, spec, deadline)
                else:
                    async def emit_text(text: str) -> None:
                        await emit({"text": text})

                    grammar = None
                    if req.format is not None or req.schema is not None:
                        grammar = self._grammar_thunk(req)
                    out = await self.scheduler.generate(lease, req.prompt, req.generation, stream=req.stream,
                                                        emit=emit_text, deadline=deadline, grammar=grammar)
                    if grammar is not None and "text" in out:
                        try:
                            out["json"] = json.loads(out["text"])
                        except ValueError:
                            pass      # cut short by max_tokens: finish_reason says "length"
            finally:
                self.registry.release(lease)
        finally:
            self.scheduler.release()
        out["child"] = lease.child.name
        out["version"] = lease.child.version
        out["threads"] = req.generation.threads
        out["device"] = self.cfg.device
        out["route"] = {"reason": decision.reason, "confidence": round(float(decision.confidence), 6)}
        return out

    def _grammar_thunk(self, req: Request):
        """Structured output for a plain child: the grammar is compiled on the worker thread."""
        from bulletd.agents.agent import make_grammar
        from bulletd.agents.tools import check_schema
        if req.schema is not None:
            check_schema(req.schema, "the request's")
        return lambda: make_grammar(req.schema, req.format, req.prompt)

    async def _agent(self, req: Request, lease, spec: dict, deadline: float) -> dict:
        """An agent child: generation + tool on a worker (run_agent), then acting on the loop."""
        from bulletd.agents.agent import AgentContext, run_agent
        act = req.act and spec["tool"] == "home"
        link = self.home_link
        if act:
            if not self.cfg.tools.home.act:
                raise RequestError("forbidden", "the request asks to act, but acting is off in this daemon's "
                                   "config (tools.home.act: false); without act the reply is a dry run")
            if link is None or not link.connected:
                raise RequestError("act_failed", "acting needs tools.home.file and a connection to the MQTT "
                                   "broker (mqtt.host); nothing was published")
        ctx = AgentContext(home=self.home, states=link.states if link else None, cancel=lease.cancel_event)
        model, header = lease.model, lease.child.header
        try:
            out, timing = await self.scheduler.call(lease, lambda: run_agent(
                model, req.prompt, req.settings, ctx, child_header=header, fmt=req.format, schema=req.schema),
                deadline)
        except BulletError as exc:
            if link is not None and spec["tool"] == "home":
                err = wire_error(exc)
                link.note(req.prompt, error_reply(err.code, err.message))
            raise
        if act and out["actions"] and out["actions"][0]["service"] != "get_state":
            try:
                out["result"] = {**out["result"], **await link.act(out["actions"])}
            except RequestError as exc:
                link.note(req.prompt, error_reply(exc.code, exc.message))
                raise
        if link is not None and spec["tool"] == "home":
            link.note(req.prompt, {**out, "ok": True})
        out["timing"] = timing
        return out

    def route_hints(self) -> dict:
        """The router's hints (Router.decide), for prompts the mother is unsure of: the home child
        takes those that name something of the home (tools.home.route_names), then the calc child
        those that read as arithmetic (tools.calc.route_sums)."""
        from bulletd.agents.calcinput import is_arithmetic
        hints = {}
        name = self.cfg.tools.home.route_names
        if name and self.home is not None:
            hints[name] = self.home.names_something
        name = self.cfg.tools.calc.route_sums
        if name and name not in hints:
            hints[name] = is_arithmetic
        return hints

    def route_claims(self) -> dict:
        """The router's claims (Router.decide), over the mother's sure choice: the home child
        (tools.home.route_names) takes a prompt that commands something of the home
        (tools.home.route_commands)."""
        name = self.cfg.tools.home.route_names
        if name and self.home is not None and self.cfg.tools.home.route_commands:
            return {name: self.home.commands_something}
        return {}

    def route(self, prompt: str, child: str | None):
        available = self.registry.available()
        if child is not None and child not in available:
            self.registry.scan()
            available = self.registry.available()
            if child not in available:
                raise RequestError("unknown_child", f"no child named {child!r} is installed "
                                   f"(installed: {', '.join(sorted(available)) or 'none'})")
        r = self.cfg.router
        d = self.router.decide(prompt, available, child=child, threshold=r.threshold, fallback=r.fallback,
                               centroid_threshold=r.centroid_threshold, hints=self.route_hints(),
                               claims=self.route_claims())
        if d.child is None:
            raise no_route_error(d, r.fallback)
        return d

    async def op_route(self, req: Request, emit: EmitChunk, peer: Peer) -> dict:
        r = self.cfg.router
        available = self.registry.available()
        if req.child is not None and req.child not in available:
            raise RequestError("unknown_child", f"no child named {req.child!r} is installed")
        d = self.router.decide(req.prompt, available, child=req.child, threshold=r.threshold,
                               fallback=r.fallback, centroid_threshold=r.centroid_threshold,
                               hints=self.route_hints(), claims=self.route_claims())
        m = self.router.mother
        thr = m.threshold if (m is not None and r.threshold < 0) else r.threshold
        return {"decision": d.as_dict(), "threshold": thr, "fallback": r.fallback or None,
                "centroid_threshold": r.centroid_threshold, "mother": bool(m)}

    async def op_list(self, req: Request, emit: EmitChunk, peer: Peer) -> dict:
        self.registry.scan()
        from bulletd.ota import daemon_glue
        return {"children": daemon_glue.annotate(self, self.registry.listing(
            self.router.routable_by, include_available=bool(req.args.get("all", True)) if req.args else True))}

    async def op_children(self, req: Request, emit: EmitChunk, peer: Peer) -> dict:
        return await self.op_list(req, emit, peer)

    def status(self) -> dict:
        import psutil
        reg = self.registry
        mi = psutil.Process().memory_info()
        from bulletd.ota import daemon_glue
        return {
            "state": "online" if self.accepting else "stopping",
            "device": self.cfg.device, "version": __version__, "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 1),
            "children": sorted(reg.children), "available": sorted(reg.available()),
            "memory": {"rss": mi.rss, "children_bytes": reg.used_bytes(), "budget_bytes": reg.budget,
                       "evictions": reg.evictions},
            "workers": self.scheduler.workers, "inflight": self.scheduler.inflight,   # generations admitted
            "queue": {"admitted": self.scheduler.inflight, "capacity": self.scheduler.capacity,
                      "rejected": self.scheduler.rejected},
            "requests": dict(self.counts), "errors": dict(self.errors),
            "mother": self.mother_info,
            "mqtt": self.mqtt.state() if self.mqtt is not None else {"enabled": False},
            "socket": self.cfg.socket_path,
            "connections": self.socket_server.state() if self.socket_server is not None else None,
            "trust": {"allow_unsigned": self.cfg.trust.allow_unsigned, "keys": list(self.cfg.trust.keys)},
            "ota": daemon_glue.status(self),
            "tools": {"home": self.home_link.state() if self.home_link is not None else None},
        }

    async def op_status(self, req: Request, emit: EmitChunk, peer: Peer) -> dict:
        return {"status": self.status()}

    async def op_load(self, req: Request, emit: EmitChunk, peer: Peer) -> dict:
        a = req.args
        target = a.get("path") or a.get("name") or a.get("target")
        if not isinstance(target, str) or not target:
            raise RequestError("bad_request", "load: expected 'name' (in model_dir) or 'path' (a .bullet file)")
        as_name = a.get("as")
        if as_name is not None and not isinstance(as_name, str):
            raise RequestError("bad_request", f"as: expected a name, found {as_name!r}")
        swap = a.get("swap", False)
        if not isinstance(swap, bool):
            raise RequestError("bad_request", f"swap: expected true or false, found {swap!r}")
        child = await self.registry.load(target, name=as_name, swap=swap)
        return {"child": child.info(self.router.routable_by(child.name))}

    async def op_unload(self, req: Request, emit: EmitChunk, peer: Peer) -> dict:
        a = req.args
        name = a.get("name") or a.get("child")
        if not isinstance(name, str) or not name:
            raise RequestError("bad_request", "unload: expected 'name'")
        mode = a.get("mode", self.cfg.registry.unload_mode)
        timeout = a.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0):
            raise RequestError("bad_request", f"timeout: expected seconds >= 0, found {timeout!r}")
        return {"unloaded": await self.registry.unload(name, mode=mode, timeout=timeout)}

    async def op_swap(self, req: Request, emit: EmitChunk, peer: Peer) -> dict:
        name, path = req.args.get("name"), req.args.get("path")
        if not isinstance(name, str) or not isinstance(path, str):
            raise RequestError("bad_request", "swap: expected 'name' and 'path'")
        return {"swapped": await self.registry.swap(name, path)}

    async def op_rollback(self, req: Request, emit: EmitChunk, peer: Peer) -> dict:
        name = req.args.get("name")
        if not isinstance(name, str):
            raise RequestError("bad_request", "rollback: expected 'name'")
        from bulletd.ota import daemon_glue
        return {"rolled_back": await daemon_glue.rollback(self, name)}

    async def op_install(self, req: Request, emit: EmitChunk, peer: Peer) -> dict:
        path, sig, force = req.args.get("path"), req.args.get("sig"), req.args.get("force", False)
        if not isinstance(path, str) or not isinstance(force, bool) or not isinstance(sig, (str, type(None))):
            raise RequestError("bad_request", "install: expected 'path', optional 'sig' and 'force' (bool)")
        from bulletd.ota import daemon_glue
        return {"installed": await daemon_glue.install(self, path, sig=sig, force=force)}

    async def op_reload(self, req: Request, emit: EmitChunk, peer: Peer) -> dict:
        await self.reload()
        return {"reloaded": True, "config": self.config_path}

    # ------------------------------------------------------------------ lifecycle
    async def reload(self) -> None:
        """SIGHUP: re-read the config file and apply what can change while running."""
        self.notifier.reloading()
        try:
            new = load_config(self.config_path) if self.config_path else self.cfg
        except ConfigError as exc:
            log.error("reload failed, keeping the running config: %s", exc)
            self.notifier.notify("READY=1", "STATUS=reload failed; running with the previous config")
            raise RequestError("bad_request", f"reload failed: {exc}") from None
        if self.cli_overrides:
            from bulletd.daemon.config import override
            new = override(new, **self.cli_overrides)
        old = self.cfg
        if new.socket != old.socket:
            log.warning("socket settings changed; they take effect at the next restart")
        self.cfg = new
        reg = self.registry
        try:
            trust = load_trust_store(new.trust.keys)
        except BulletError as exc:
            self.cfg = old
            log.error("reload failed, keeping the running config: trust.keys: %s", exc)
            self.notifier.notify("READY=1", "STATUS=reload failed; running with the previous config")
            raise RequestError("bad_request", f"reload failed: trust.keys: {exc}") from None
        self.scheduler.resize(new.workers, new.max_queue)
        await reg.reconfigure(**self._registry_settings(new, trust))
        await self.load_mother()
        if new.registry.preload:
            # children added to model_dir since the start: load them so that the ones whose
            # header carries examples become routable (evicted ones stay on disk)
            for name in sorted(set(reg.known) - reg.ever_loaded):
                try:
                    await reg.load(name)
                except RequestError as exc:
                    log.error("child %s not loaded: %s (%s)", name, exc.message, exc.code)
        if new.mqtt != old.mqtt or new.device != old.device:
            log.info("MQTT settings changed; reconnecting")
            await self._restart_mqtt()
        if new.tools.home.file or old.tools.home.file:
            await self._restart_home()         # the home file is read again, also under the same name
        log.info("configuration reloaded from %s", self.config_path or "(defaults)")
        self.notifier.notify("READY=1", f"STATUS={self.status_line()}")

    def status_line(self) -> str:
        m = "mqtt " + (self.mqtt.state()["state"] if self.mqtt else "off")
        return (f"serving {len(self.registry.children)} children, {self.inflight} in flight; {m}; "
                f"socket {self.cfg.socket_path}")

    async def _restart_mqtt(self) -> None:
        if self.mqtt is not None:
            await self.mqtt.stop(graceful=True)
            self.mqtt = None
        if self.cfg.mqtt.host:
            from bulletd.daemon.mqtt import MQTTTransport
            self.mqtt = MQTTTransport(self)
            self.mqtt.start()

    def _start_home(self) -> None:
        """tools.home: load the home file, start the link (states, acting, discovery)."""
        from bulletd.agents.home import HomeConfig, HomeConfigError
        from bulletd.agents.link import HomeLink
        f = self.cfg.tools.home.file
        if not f:
            self.home, self.home_link = None, None
            return
        try:
            self.home = HomeConfig.load(f)
        except HomeConfigError as exc:      # checked with the config; the file changed since
            log.error("home tool off: %s", exc)
            self.home, self.home_link = None, None
            return
        self.home_link = HomeLink(self, self.home)
        self.home_link.start()

    async def _restart_home(self) -> None:
        if self.home_link is not None:
            await self.home_link.stop()
        self._start_home()

    def _make_ota(self) -> None:
        if not self.cfg.ota.enabled:
            return
        try:
            from bulletd.ota import daemon_glue
            self.ota = daemon_glue.make_receiver(self)
        except Exception as exc:   # OTA is an extra: it must never stop the daemon serving
            log.error("OTA receiver off: %s", exc, exc_info=True)
            self.ota = None

    async def _keepalive_loop(self) -> None:
        while True:
            r = self.cfg.registry
            periods = [p / 4 for p in (r.keep_alive, r.session_idle) if p > 0] or [5.0]
            await asyncio.sleep(max(0.25, min(min(periods), 5.0)))
            self.registry.expire_idle()
            self.registry.release_sessions(r.session_idle)
            self._trim_when_idle()

    def _trim_when_idle(self) -> None:
        """After requests, once nothing is in flight: give the heap's free pages back (a burst
        of requests would otherwise leave the RSS at its peak)."""
        n = self.counts["requests"]
        if self.inflight or n == self._trimmed_at:
            return
        self._trimmed_at = n
        from bulletd.daemon.lifecycle import trim_memory
        trim_memory()

    async def _watchdog_loop(self, period: float) -> None:
        # a healthy loop pings at half the period; a wedged loop (CPU work on it, a deadlock)
        # stops pinging and systemd restarts us, which is the point of the watchdog
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(period / 2)

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(10)
            self.notifier.status(self.status_line())

    async def run(self) -> int:
        """Capture signals, start up, serve, drain, shut down. Returns the exit code."""
        loop = asyncio.get_running_loop()
        for sig, ev in ((signal.SIGTERM, self.stop_event), (signal.SIGINT, self.stop_event),
                        (signal.SIGHUP, self.reload_event)):
            loop.add_signal_handler(sig, ev.set)
        from bulletd.daemon.socket_server import SocketServer
        self.notifier.status("starting: loading children")
        self._make_ota()                     # finishes an interrupted install before the scan
        await self.load_mother()
        await self.preload()
        self.socket_server = SocketServer(self)
        await self.socket_server.start()     # fails fast (exit 1) if the path is taken
        self.accepting = True
        if self.cfg.mqtt.host:
            from bulletd.daemon.mqtt import MQTTTransport
            self.mqtt = MQTTTransport(self)
            self.mqtt.start()                 # connects and retries in the background
        self._start_home()
        if self.ota is not None:
            from bulletd.ota import daemon_glue
            ota_task = daemon_glue.start(self)    # its own MQTT connection (big chunks never delay replies)
            if ota_task is not None:
                self._tasks.append(ota_task)
        self._tasks.append(asyncio.create_task(self._keepalive_loop()))
        if self.notifier.watchdog_period:
            self._tasks.append(asyncio.create_task(self._watchdog_loop(self.notifier.watchdog_period)))
        if self.notifier.enabled:
            self._tasks.append(asyncio.create_task(self._status_loop()))
        log.info("bulletd %s ready: socket %s, %d children loaded (%s), mother %s, mqtt %s", __version__,
                 self.cfg.socket_path, len(self.registry.children), ", ".join(sorted(self.registry.children)) or "-",
                 (self.mother_info or {}).get("name", "none"),
                 f"{self.cfg.mqtt.host}:{self.cfg.mqtt.port}" if self.cfg.mqtt.host else "off")
        self.notifier.ready(self.status_line())
        while not self.stop_event.is_set():
            waiter = asyncio.create_task(self.reload_event.wait())
            stopper = asyncio.create_task(self.stop_event.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if self.reload_event.is_set() and not self.stop_event.is_set():
                self.reload_event.clear()
                log.info("SIGHUP: reloading configuration")
                try:
                    await self.reload()
                except RequestError:
                    pass
        await self.shutdown()
        return 0

    async def shutdown(self) -> None:
        """Stop accepting, drain in-flight requests under drain_timeout, cancel the rest (they
        still get a final error reply), then close transports and children one by one."""
        log.info("stopping: %d request(s) in flight, draining for up to %.1f s", self.inflight,
                 self.cfg.drain_timeout)
        self.notifier.stopping(f"stopping: draining {self.inflight} request(s)")
        self.accepting = False
        if self.socket_server is not None:
            self.socket_server.stop_listening()
        try:
            await asyncio.wait_for(self.idle.wait(), self.cfg.drain_timeout)
        except asyncio.TimeoutError:
            n = self.registry.cancel_all("shutting_down")
            log.warning("drain timeout: cancelled %d running request(s)", n)
            try:
                await asyncio.wait_for(self.idle.wait(), 5.0)
            except asyncio.TimeoutError:
                log.error("%d request(s) did not finish after cancellation", self.inflight)
        await cancel_and_wait(self._tasks, what="background task")
        if self.home_link is not None:
            await self.home_link.stop()
        if self.mqtt is not None:
            await self.mqtt.stop(graceful=True)
        if self.socket_server is not None:
            await self.socket_server.close()
        self.scheduler.shutdown()
        self.registry.close_all()
        log.info("stopped")
        self.notifier.close()


def run_daemon(cfg: Config, config_path: str | None, overrides: dict | None = None) -> int:
    setup_logging(cfg.log_level)
    from bulletd.daemon.lifecycle import tune_malloc
    tune_malloc()

    async def main() -> int:
        try:
            d = Daemon(cfg, config_path)
        except (BulletError, OSError) as exc:   # e.g. an unreadable or malformed trusted key
            log.error("cannot start: %s", exc)
            return 1
        d.cli_overrides = overrides or {}
        try:
            return await d.run()
        except (BulletError, OSError) as exc:
            log.error("cannot start: %s", exc)
            d.notifier.notify(f"STATUS=failed: {exc}", "ERRNO=1")
            return 1
    return asyncio.run(main())
