"""Client API for bulletd: async and blocking, over the Unix socket or MQTT, with streaming.

Three lines from any program on the device (the socket) or across the network (MQTT):

    from bulletd.client import Client
    with Client() as c:                                     # or Client.mqtt("broker", device="pi1")
        print(c.generate("Once upon a time", max_tokens=32).text)

Streaming:

    with Client() as c:
        s = c.stream("Once upon a time", child="stories")
        for piece in s:
            print(piece, end="", flush=True)
        print(s.result.finish_reason)

Async:

    async with AsyncClient.socket() as c:
        r = await c.generate("hello")
        async for piece in c.stream("hello"): ...

Error replies raise DaemonError (a RequestError: .code is the stable wire code); a daemon that
cannot be reached raises DaemonUnavailable (a TransportError) with the path or broker tried.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import os
import queue
import re
import select
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterator

import msgpack

from bulletd.errors import RequestError, TransportError
from bulletd.mqtt_conn import NO_MATCHING_SUBSCRIBERS, TLS, Broker, Publisher, make_client
from bulletd.mqtt_direct import direct_queue
from bulletd.names import name_problem

FRAME = struct.Struct("!I")
MAX_REPLY_FRAME = 64 << 20


class DaemonError(RequestError):
    """The daemon answered with an error reply."""

    def __init__(self, code: str, message: str, reply: dict | None = None):
        super().__init__(code, message)
        self.reply = reply or {}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class DaemonUnavailable(TransportError):
    """The daemon (or the broker) cannot be reached, or stopped answering."""


@dataclass
class Result:
    """The final reply of a generation."""
    text: str
    child: str | None
    finish_reason: str | None
    tokens: int
    prompt_tokens: int
    timing: dict = field(default_factory=dict)
    route: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)

    @classmethod
    def from_reply(cls, reply: dict, text: str | None = None) -> "Result":
        return cls(text=reply.get("text", "") if text is None else text, child=reply.get("child"),
                   finish_reason=reply.get("finish_reason"), tokens=int(reply.get("tokens", 0) or 0),
                   prompt_tokens=int(reply.get("prompt_tokens", 0) or 0), timing=reply.get("timing") or {},
                   route=reply.get("route") or {}, raw=reply)


@dataclass
class Answer:
    """The final reply of an agent request: the call, its result and the actions."""
    call: Any
    result: Any
    actions: list
    text: str
    child: str | None
    route: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)

    @classmethod
    def from_reply(cls, reply: dict) -> "Answer":
        return cls(call=reply.get("call"), result=reply.get("result"), actions=list(reply.get("actions") or []),
                   text=reply.get("text", ""), child=reply.get("child"), route=reply.get("route") or {},
                   timing=reply.get("timing") or {}, raw=reply)


def _check(reply: dict) -> dict:
    if not isinstance(reply, dict):
        raise DaemonUnavailable(f"unexpected reply of type {type(reply).__name__} from the daemon")
    if reply.get("ok") is False:
        err = reply.get("error") or {}
        raise DaemonError(str(err.get("code", "internal")), str(err.get("message", "(no message)")), reply)
    return reply


def _piece(reply: dict, parts: list[str]) -> "Result | str":
    """One reply of a stream: the Result when it is the final one (the text is parts and its
    own), else its text, kept in parts."""
    if reply.get("final"):
        return Result.from_reply(_check(reply), "".join(parts) + reply.get("text", ""))
    text = reply.get("text", "")
    if text:
        parts.append(text)
    return text


def _child(name: str | None) -> str | None:
    """A child name passed to a request: refused here, by the daemon's own rule (bulletd.names),
    with the error the daemon would answer. None or "" is no name (the mother routes)."""
    why = None if name is None or name == "" else name_problem(name)
    if why is not None:
        raise DaemonError("bad_request", f"child: {why}")
    return name


# ---------------------------------------------------------------------- transports


class _SocketTransport:
    def __init__(self, path: str | None):
        from bulletd.daemon.config import client_socket_path
        self.path = path or client_socket_path()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.waiting: dict[Any, asyncio.Queue] = {}
        self.task: asyncio.Task | None = None
        self.ids = itertools.count(1)
        self.closed_exc: BaseException | None = None
        self.refusal: str | None = None   # why the daemon turned this connection away, if it said

    async def open(self) -> None:
        try:
            self.reader, self.writer = await asyncio.open_unix_connection(self.path, limit=MAX_REPLY_FRAME)
        except FileNotFoundError:
            raise DaemonUnavailable(f"bulletd is not running: no socket at {self.path} "
                                    "(start it with `bulletd`, or pass --socket / set BULLETD_SOCKET)") from None
        except ConnectionRefusedError:
            raise DaemonUnavailable(f"bulletd is not running: {self.path} refuses connections "
                                    "(a stale socket of a stopped daemon)") from None
        except PermissionError:
            raise DaemonUnavailable(f"permission denied on {self.path}: join the socket's group "
                                    "(socket.group) or run as the daemon's user") from None
        except OSError as exc:
            raise DaemonUnavailable(f"cannot reach bulletd at {self.path}: {exc.strerror or exc}") from None
        self.task = asyncio.create_task(self._read_loop())

    async def _read_loop(self) -> None:
        try:
            while True:
                (n,) = FRAME.unpack(await self.reader.readexactly(FRAME.size))
                if n > MAX_REPLY_FRAME:
                    raise DaemonUnavailable(f"reply frame of {n} bytes is too large")
                obj = msgpack.unpackb(await self.reader.readexactly(n), raw=False)
                if not isinstance(obj, dict):
                    continue
                q = self.waiting.get(obj.get("id"))
                if q is None and obj.get("id") is None and obj.get("ok") is False:
                    err = obj.get("error") or {}
                    if err.get("code") == "busy":   # turned away before any request was read
                        self.refusal = str(err.get("message") or "busy")
                        continue
                    if len(self.waiting) == 1:      # an error before the daemon read our id
                        q = next(iter(self.waiting.values()))
                if q is not None:
                    q.put_nowait(obj)
        except (asyncio.IncompleteReadError, ConnectionError, DaemonUnavailable) as exc:
            self.closed_exc = exc
        finally:
            for q in self.waiting.values():
                q.put_nowait(None)

    async def send(self, obj: dict) -> asyncio.Queue:
        rid = obj.setdefault("id", f"c{next(self.ids)}")
        if self.closed_exc is not None and not self.waiting:
            # bulletd closes connections that stay idle (socket.idle_timeout): nothing was
            # lost with this one, so connect again
            await self.close()
            self.closed_exc = None
            await self.open()
        q: asyncio.Queue = asyncio.Queue()
        q.key = rid  # type: ignore[attr-defined]
        if self.closed_exc is not None:
            raise DaemonUnavailable(self.lost())
        self.waiting[rid] = q
        body = msgpack.packb(obj, use_bin_type=True)
        try:
            self.writer.write(FRAME.pack(len(body)) + body)
            await self.writer.drain()
        except OSError:
            # the daemon closed the connection while the request was on its way (a frame over its
            # limit, a full connection table): its reason, if it sent one, is still to be read
            if self.task is not None:
                await asyncio.wait({self.task}, timeout=2.0)
            got = [q.get_nowait() for _ in range(q.qsize())]
            if not any(isinstance(m, dict) for m in got):
                self.waiting.pop(rid, None)
                raise DaemonUnavailable(self.lost()) from None
            for m in got:
                q.put_nowait(m)
        return q

    def done(self, rid: Any) -> None:
        self.waiting.pop(rid, None)

    def lost(self) -> str:
        if self.refusal:
            return f"cannot reach bulletd: it refused the connection on {self.path} ({self.refusal})"
        return f"cannot reach bulletd: it closed the connection on {self.path} before the final reply"

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except Exception:
                pass
        if self.task is not None:
            self.task.cancel()


class _MQTTTransport:
    def __init__(self, host: str, port: int, device: str | None, fleet: bool, prefix: str, protocol: str,
                 username: str | None, password: str | None, tls: bool, ca_file: str | None,
                 json_payloads: bool, client_id: str | None):
        import aiomqtt
        self.aiomqtt = aiomqtt
        self.host, self.port = host, port
        self.device, self.fleet, self.prefix = device, fleet, prefix
        self.v5 = protocol == "5"
        self.cid = client_id or f"bulletc-{uuid.uuid4().hex[:12]}"
        self.reply_topic = f"{prefix}/reply/{self.cid}"
        self.req_topic = f"{prefix}/fleet/req" if fleet else f"{prefix}/{device}/req"
        self.json = json_payloads
        self.broker = Broker(host, port, username=username, password=password,
                             tls=TLS(ca_file=ca_file or "") if tls else None)
        self.client: Any = None
        self.waiting: dict[Any, asyncio.Queue] = {}
        self.task: asyncio.Task | None = None
        self.ids = itertools.count(1)
        self.path = f"mqtt://{host}:{port}/{self.req_topic}"

    async def open(self) -> None:
        aiomqtt = self.aiomqtt
        # aiomqtt binds the running loop at construction, so the client is made here
        self.client = make_client(self.broker, self.cid, protocol=(
            aiomqtt.ProtocolVersion.V5 if self.v5 else aiomqtt.ProtocolVersion.V311), timeout=10,
            queue_type=direct_queue(self._deliver))
        self.pub = Publisher(self.client)
        try:
            await self.client.__aenter__()
            await self.client.subscribe(self.reply_topic, qos=1)
        except self.aiomqtt.MqttError as exc:
            why = re.sub(r"^\[Errno \d+\] ", "", str(exc))
            raise DaemonUnavailable(f"cannot reach the MQTT broker {self.host}:{self.port}: {why}") from None
        self.task = asyncio.create_task(self._read_loop())

    def _deliver(self, msg: Any) -> None:
        """A reply, straight from paho's read callback (bulletd.mqtt_direct): to its waiter."""
        payload = bytes(msg.payload)
        try:
            obj = json.loads(payload) if payload[:1] == b"{" else msgpack.unpackb(payload, raw=False)
        except Exception:
            return
        if not isinstance(obj, dict):
            return
        corr = getattr(msg.properties, "CorrelationData", None) if msg.properties else None
        key = corr if (self.v5 and corr is not None) else obj.get("id")
        q = self.waiting.get(key)
        if q is not None:
            q.put_nowait(obj)

    async def _read_loop(self) -> None:
        try:
            async for _ in self.client.messages:   # never yields (see _deliver); ends when the
                pass                                # connection is lost
        except self.aiomqtt.MqttError:
            pass
        finally:
            for q in self.waiting.values():
                q.put_nowait(None)

    async def send(self, obj: dict) -> asyncio.Queue:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        rid = obj.setdefault("id", f"{self.cid}-{next(self.ids)}")
        q: asyncio.Queue = asyncio.Queue()
        props = None
        if self.v5:
            corr = uuid.uuid4().bytes
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = self.reply_topic
            props.CorrelationData = corr
            props.ContentType = "application/json" if self.json else "application/msgpack"
            props.MessageExpiryInterval = int(obj.get("deadline") or 120) + 5
            key: Any = corr
        else:
            obj["reply_to"] = self.reply_topic
            key = rid
        self.waiting[key] = q
        payload = json.dumps(obj).encode() if self.json else msgpack.packb(obj, use_bin_type=True)
        try:
            rc = await self.pub.publish(self.req_topic, payload, properties=props)
        except self.aiomqtt.MqttError as exc:
            self.waiting.pop(key, None)
            raise DaemonUnavailable(f"could not publish the request to {self.req_topic}: {exc}") from None
        if rc == NO_MATCHING_SUBSCRIBERS:
            self.waiting.pop(key, None)
            raise DaemonUnavailable(f"no bulletd is subscribed to {self.req_topic}: the broker dropped the request "
                                    "(the daemon is not running, or not connected yet)")
        q.key = key  # type: ignore[attr-defined]
        return q

    def done(self, key: Any) -> None:
        self.waiting.pop(key, None)

    def lost(self) -> str:
        return f"the connection to the MQTT broker {self.host}:{self.port} was lost before the final reply"

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.client is None:
            return
        try:
            await self.client.__aexit__(None, None, None)
        except Exception:
            pass


# ---------------------------------------------------------------------- async client


_EXPIRED = object()   # put in a request's queue when its time is up


class AsyncStream:
    """`async for piece in stream` yields text; `stream.result` holds the final Result after."""

    def __init__(self, client: "AsyncClient", req: dict, timeout: float):
        self.c, self.req, self.timeout = client, req, timeout
        self.result: Result | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self._gen()

    async def _gen(self) -> AsyncIterator[str]:
        parts: list[str] = []
        async for m in self.c._replies(self.req, self.timeout):
            piece = _piece(m, parts)
            if isinstance(piece, Result):
                self.result = piece
                return
            if piece:
                yield piece


class AsyncClient:
    def __init__(self, transport: Any, timeout: float = 300.0):
        self.t = transport
        self.timeout = timeout

    @classmethod
    def socket(cls, path: str | None = None, timeout: float = 300.0) -> "AsyncClient":
        return cls(_SocketTransport(path), timeout)

    @classmethod
    def mqtt(cls, host: str = "127.0.0.1", port: int = 1883, *, device: str | None = None, fleet: bool = False,
             prefix: str = "bullet", protocol: str = "5", username: str | None = None,
             password: str | None = None, tls: bool = False, ca_file: str | None = None,
             json_payloads: bool = False, client_id: str | None = None, timeout: float = 300.0) -> "AsyncClient":
        if not fleet and not device:
            import socket as _s
            device = _s.gethostname().split(".")[0]
        return cls(_MQTTTransport(host, port, device, fleet, prefix, protocol, username, password, tls, ca_file,
                                  json_payloads, client_id), timeout)

    async def __aenter__(self) -> "AsyncClient":
        await self.t.open()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.t.close()

    async def _replies(self, req: dict, timeout: float | None) -> AsyncIterator[dict]:
        q = await self.t.send(dict(req))
        key = q.key  # type: ignore[attr-defined]
        limit = timeout or self.timeout
        # one timer for the whole request that drops _EXPIRED into the queue (asyncio.wait_for
        # would start a task for every reply: a streamed request gets hundreds)
        timer = asyncio.get_running_loop().call_later(limit, q.put_nowait, _EXPIRED)
        try:
            while True:
                m = q.get_nowait() if not q.empty() else await q.get()
                if m is _EXPIRED:
                    raise DaemonUnavailable(f"no final reply from bulletd within {limit:g} s")
                if m is None:
                    raise DaemonUnavailable(self.t.lost())
                yield m
                if m.get("final"):
                    return
        finally:
            timer.cancel()
            self.t.done(key)

    async def request(self, op: str, timeout: float | None = None, **fields: Any) -> dict:
        """Send one request map and return its final reply (DaemonError on an error reply)."""
        req = {"op": op, **{k: v for k, v in fields.items() if v is not None}}
        final = None
        async for m in self._replies(req, timeout):
            if m.get("final"):
                final = m
        return _check(final)

    async def generate(self, prompt: str, child: str | None = None, timeout: float | None = None,
                       **settings: Any) -> Result:
        r = await self.request("generate", timeout=timeout, prompt=prompt, child=_child(child), stream=False,
                               **settings)
        return Result.from_reply(r)

    async def ask(self, text: str, child: str | None = None, act: bool = False, timeout: float | None = None,
                  **settings: Any) -> Answer:
        """An agent request: the routed (or named) agent child's call, its result and the actions
        (carried out only with act=True and tools.home.act in the daemon's config)."""
        r = await self.request("generate", timeout=timeout, prompt=text, child=_child(child), act=True if act else None,
                               stream=False, **settings)
        if "call" not in r:
            raise DaemonError("bad_request", f"child {r.get('child')!r} is not an agent (its reply has no call)", r)
        return Answer.from_reply(r)

    def stream(self, prompt: str, child: str | None = None, timeout: float | None = None,
               **settings: Any) -> AsyncStream:
        req = {"op": "generate", "prompt": prompt, "stream": True,
               **({"child": _child(child)} if child else {}), **{k: v for k, v in settings.items() if v is not None}}
        return AsyncStream(self, req, timeout or self.timeout)

    async def route(self, prompt: str, child: str | None = None) -> dict:
        return await self.request("route", prompt=prompt, child=_child(child))

    async def load(self, target: str, as_name: str | None = None, swap: bool = False) -> dict:
        """Load a child; a loaded name is error `exists` unless swap=True replaces it."""
        key = "path" if ("/" in target or target.endswith(".bullet")) else "name"
        if key == "path":
            target = os.path.abspath(target)
        else:
            _child(target)
        return (await self.request("load", **{key: target, "as": _child(as_name), "swap": swap or None}))["child"]

    async def unload(self, name: str, mode: str | None = None, timeout: float | None = None) -> dict:
        return (await self.request("unload", name=_child(name), mode=mode, timeout=timeout))["unloaded"]

    async def list(self) -> list[dict]:
        return (await self.request("list"))["children"]

    async def status(self) -> dict:
        return (await self.request("status"))["status"]

    async def ping(self) -> dict:
        return await self.request("ping")


# ---------------------------------------------------------------------- blocking socket


_LEAD = object()   # in a waiting thread's queue: the reader left; take over reading


def _readable(sock: socket.socket, timeout: float) -> bool:
    """Whether sock has data (or EOF) within timeout seconds (poll: no limit on fd numbers)."""
    p = select.poll()
    p.register(sock, select.POLLIN)
    return bool(p.poll(max(0, int(timeout * 1000 + 0.999))))


class _SyncSocket:
    """The blocking client's connection to bulletd's socket, driven by the calling threads
    themselves: a request is written and its replies read by the thread that asked, with no event
    loop thread in between (each hand-off between threads costs a wake-up, which on a small VM
    takes longer than a short generation's tokens). Several threads may share it: one at a time
    reads the socket and hands replies meant for the others to their queues."""

    def __init__(self, path: str | None):
        from bulletd.daemon.config import client_socket_path
        self.path = path or client_socket_path()
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self.wlock = threading.Lock()      # one frame written at a time
        self.rlock = threading.Lock()      # held by the thread reading the socket
        self.mu = threading.Lock()         # waiting, closed
        self.waiting: dict[Any, queue.SimpleQueue] = {}
        self.ids = itertools.count(1)
        self.closed = False
        self.refusal: str | None = None

    def open(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.path)
        except FileNotFoundError:
            s.close()
            raise DaemonUnavailable(f"bulletd is not running: no socket at {self.path} "
                                    "(start it with `bulletd`, or pass --socket / set BULLETD_SOCKET)") from None
        except ConnectionRefusedError:
            s.close()
            raise DaemonUnavailable(f"bulletd is not running: {self.path} refuses connections "
                                    "(a stale socket of a stopped daemon)") from None
        except PermissionError:
            s.close()
            raise DaemonUnavailable(f"permission denied on {self.path}: join the socket's group "
                                    "(socket.group) or run as the daemon's user") from None
        except OSError as exc:
            s.close()
            raise DaemonUnavailable(f"cannot reach bulletd at {self.path}: {exc.strerror or exc}") from None
        self.sock, self.buf, self.closed = s, bytearray(), False

    def close(self) -> None:
        with self.mu:
            if self.sock is not None:
                self.sock.close()
                self.sock = None
            self._lost()

    def lost(self) -> str:
        if self.refusal:
            return f"cannot reach bulletd: it refused the connection on {self.path} ({self.refusal})"
        return f"cannot reach bulletd: it closed the connection on {self.path} before the final reply"

    def _lost(self) -> None:   # with mu held
        self.closed = True
        for q in self.waiting.values():
            q.put(None)

    def replies(self, req: dict, timeout: float) -> Iterator[dict]:
        """The replies to one request, up to its final one; DaemonUnavailable when the connection
        is lost or no final reply comes within `timeout` seconds."""
        rid = req.setdefault("id", f"c{next(self.ids)}")
        q: queue.SimpleQueue = queue.SimpleQueue()
        with self.mu:
            if not self.waiting and not self.closed and self.rlock.acquire(blocking=False):
                try:
                    self._idle_read()
                finally:
                    self.rlock.release()
            if self.closed and not self.waiting:
                # bulletd closes connections that stay idle (socket.idle_timeout): nothing was
                # lost with this one, so connect again
                if self.sock is not None:
                    self.sock.close()
                    self.sock = None
                self.open()
            if self.closed:
                raise DaemonUnavailable(self.lost())
            self.waiting[rid] = q
        end = time.monotonic() + timeout
        sent = True
        try:
            body = msgpack.packb(req, use_bin_type=True)
            try:
                with self.wlock:
                    self.sock.sendall(FRAME.pack(len(body)) + body)
            except OSError:
                # the daemon closed the connection while the request was on its way (a frame
                # over its limit, a full connection table): its reason, if it sent one, is
                # still to be read
                sent, end = False, min(end, time.monotonic() + 2.0)
            while True:
                m = self._next(q, end)
                if m is _LEAD:
                    continue
                if m is None or (m is _EXPIRED and not sent):
                    raise DaemonUnavailable(self.lost())
                if m is _EXPIRED:
                    raise DaemonUnavailable(f"no final reply from bulletd within {timeout:g} s")
                yield m
                if m.get("final"):
                    return
        finally:
            with self.mu:
                self.waiting.pop(rid, None)
                self._hand_over()

    def _idle_read(self) -> None:   # with mu and rlock held, no request waiting
        """Read what came while no request waited (a late reply, a refusal), and notice a
        connection that bulletd closed meanwhile."""
        try:
            while _readable(self.sock, 0.0):
                data = self.sock.recv(1 << 16)
                if not data:
                    self.closed = True
                    return
                self.buf += data
        except OSError:
            self.closed = True
            return
        while len(self.buf) >= FRAME.size:
            (n,) = FRAME.unpack_from(self.buf)
            if len(self.buf) < FRAME.size + n:
                return
            try:
                obj = msgpack.unpackb(bytes(self.buf[FRAME.size:FRAME.size + n]), raw=False)
            except Exception:
                obj = None
            del self.buf[:FRAME.size + n]
            if isinstance(obj, dict) and obj.get("id") is None and (obj.get("error") or {}).get("code") == "busy":
                self.refusal = str(obj["error"].get("message") or "busy")

    def _next(self, q: queue.SimpleQueue, end: float) -> Any:
        """The next item of this request's queue: a reply, None (connection lost), _LEAD or
        _EXPIRED (past `end`). Reads the socket itself unless another thread does."""
        while True:
            try:
                return q.get_nowait()
            except queue.Empty:
                pass
            left = end - time.monotonic()
            if left <= 0:
                return _EXPIRED
            if not self.rlock.acquire(blocking=False):
                try:        # another thread reads; it hands over when it leaves
                    return q.get(timeout=left)
                except queue.Empty:
                    continue
            try:
                try:
                    return q.get_nowait()   # put there before the last reader left
                except queue.Empty:
                    pass
                m = self._read(end)
                if m is not None and self._route(m, q):
                    return m
            finally:
                self.rlock.release()
                with self.mu:
                    self._hand_over(q)

    def _hand_over(self, me: queue.SimpleQueue | None = None) -> None:   # with mu held
        """Wake the other waiting threads: one of them takes over reading."""
        for q in self.waiting.values():
            if q is not me:
                q.put(_LEAD)

    def _read(self, end: float) -> dict | None:
        """One reply map from the socket (None when it is not a map); None put into every queue
        when the connection ends."""
        while True:
            if len(self.buf) >= FRAME.size:
                (n,) = FRAME.unpack_from(self.buf)
                if n > MAX_REPLY_FRAME:
                    with self.mu:
                        self._lost()
                    return None
                if len(self.buf) >= FRAME.size + n:
                    body = bytes(self.buf[FRAME.size:FRAME.size + n])
                    del self.buf[:FRAME.size + n]
                    obj = msgpack.unpackb(body, raw=False)
                    return obj if isinstance(obj, dict) else None
            sock = self.sock
            if sock is None:
                return None
            left = end - time.monotonic()
            if left <= 0:
                return None
            try:
                ready = _readable(sock, left)
                data = sock.recv(1 << 16) if ready else None
            except OSError:
                data = b""
            if data is None:
                return None
            if not data:
                with self.mu:
                    self._lost()
                return None
            self.buf += data

    def _route(self, obj: dict, mine: queue.SimpleQueue) -> bool:
        """True when the reply answers the caller's request (queue `mine`); a reply to another
        thread's request goes into its queue."""
        with self.mu:
            q = self.waiting.get(obj.get("id"))
            if q is None and obj.get("id") is None and obj.get("ok") is False:
                err = obj.get("error") or {}
                if err.get("code") == "busy":   # turned away before any request was read
                    self.refusal = str(err.get("message") or "busy")
                    return False
                if len(self.waiting) == 1:      # an error before the daemon read our id
                    q = next(iter(self.waiting.values()))
            if q is mine:
                return True
            if q is not None:
                q.put(obj)
            return False


# ---------------------------------------------------------------------- blocking client


class Stream:
    """Blocking stream: iterate for text pieces; `.result` afterwards."""

    def __init__(self, client: "Client", astream: AsyncStream | None = None, replies: Iterator[dict] | None = None):
        self.c, self.a, self.replies = client, astream, replies
        self.result: Result | None = None

    def __iter__(self) -> Iterator[str]:
        if self.replies is not None:
            parts: list[str] = []
            for m in self.replies:
                piece = _piece(m, parts)
                if isinstance(piece, Result):
                    self.result = piece
                    return
                if piece:
                    yield piece
            return
        q: queue.Queue = queue.Queue()

        async def pump() -> None:
            try:
                async for piece in self.a:
                    q.put(("piece", piece))
                q.put(("done", self.a.result))
            except BaseException as exc:
                q.put(("error", exc))
        self.c._submit(pump())
        while True:
            kind, val = q.get()
            if kind == "piece":
                yield val
            elif kind == "done":
                self.result = val
                return
            else:
                raise val


class Client:
    """Blocking client. Over the socket the calling thread writes its request and reads the
    replies itself (_SyncSocket); over MQTT an AsyncClient runs on a private event loop thread."""

    def __init__(self, socket_path: str | None = None, *, timeout: float = 300.0, _async: AsyncClient | None = None):
        self.timeout = timeout
        self._s: _SyncSocket | None = None
        self._a = _async
        if _async is None:
            self._s = _SyncSocket(socket_path)
            self._s.open()
            return
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bulletd-client", daemon=True)
        self._thread.start()
        try:
            self._call(self._a.__aenter__())
        except BaseException:
            self._stop()
            raise

    @classmethod
    def mqtt(cls, host: str = "127.0.0.1", port: int = 1883, **kw: Any) -> "Client":
        timeout = kw.pop("timeout", 300.0)
        return cls(timeout=timeout, _async=AsyncClient.mqtt(host, port, timeout=timeout, **kw))

    def _submit(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _call(self, coro: Any) -> Any:
        return self._submit(coro).result()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def close(self) -> None:
        if self._s is not None:
            self._s.close()
            return
        if self._loop.is_closed():
            return
        try:
            self._call(self._a.__aexit__(None, None, None))
        finally:
            self._stop()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, op: str, timeout: float | None = None, **fields: Any) -> dict:
        """Send one request map and return its final reply (DaemonError on an error reply)."""
        if self._s is None:
            return self._call(self._a.request(op, timeout=timeout, **fields))
        req = {"op": op, **{k: v for k, v in fields.items() if v is not None}}
        final = None
        for m in self._s.replies(req, timeout or self.timeout):
            if m.get("final"):
                final = m
        return _check(final)

    def generate(self, prompt: str, child: str | None = None, timeout: float | None = None, **settings: Any) -> Result:
        return Result.from_reply(self.request("generate", timeout=timeout, prompt=prompt, child=_child(child),
                                              stream=False, **settings))

    def stream(self, prompt: str, child: str | None = None, timeout: float | None = None, **settings: Any) -> Stream:
        if self._s is None:
            return Stream(self, self._a.stream(prompt, child, timeout, **settings))
        req = {"op": "generate", "prompt": prompt, "stream": True,
               **({"child": _child(child)} if child else {}), **{k: v for k, v in settings.items() if v is not None}}
        return Stream(self, replies=self._s.replies(req, timeout or self.timeout))

    def ask(self, text: str, child: str | None = None, act: bool = False, timeout: float | None = None,
            **settings: Any) -> Answer:
        """An agent request (AsyncClient.ask)."""
        if self._s is None:
            return self._call(self._a.ask(text, child, act, timeout, **settings))
        r = self.request("generate", timeout=timeout, prompt=text, child=_child(child), act=True if act else None,
                         stream=False, **settings)
        if "call" not in r:
            raise DaemonError("bad_request", f"child {r.get('child')!r} is not an agent (its reply has no call)", r)
        return Answer.from_reply(r)

    def route(self, prompt: str, child: str | None = None) -> dict:
        return self.request("route", prompt=prompt, child=_child(child))

    def load(self, target: str, as_name: str | None = None, swap: bool = False) -> dict:
        """Load a child; a loaded name is error `exists` unless swap=True replaces it."""
        key = "path" if ("/" in target or target.endswith(".bullet")) else "name"
        if key == "path":
            target = os.path.abspath(target)
        else:
            _child(target)
        return self.request("load", **{key: target, "as": _child(as_name), "swap": swap or None})["child"]

    def unload(self, name: str, mode: str | None = None, timeout: float | None = None) -> dict:
        return self.request("unload", name=_child(name), mode=mode, timeout=timeout)["unloaded"]

    def list(self) -> list[dict]:
        return self.request("list")["children"]

    def status(self) -> dict:
        return self.request("status")["status"]

    def ping(self) -> dict:
        return self.request("ping")
