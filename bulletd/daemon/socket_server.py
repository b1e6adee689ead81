"""The local control socket: a Unix stream socket carrying length-prefixed msgpack frames
(4-byte big-endian length, then one msgpack map). Requests on one connection run concurrently;
replies carry the request's `id`. Admin commands are allowed only for peers that SO_PEERCRED
identifies as root, the daemon's own user, a uid in socket.admin_uids or a member of one of
socket.admin_groups. The socket file is created with socket.mode (0660) and socket.group.
"""
from __future__ import annotations

import asyncio
import grp
import logging
import os
import socket
import stat
import struct
import time

from bulletd.errors import BulletError, RequestError
from bulletd.daemon.protocol import (FRAME_HDR, Peer, decode_msgpack, error_from_exc, error_reply, pack_frame,
                                     reply_id, split_frames)
from bulletd.tasks import cancel_and_wait

log = logging.getLogger("bulletd.socket")


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process on the other end."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", raw)


def peer_groups(pid: int, gid: int) -> set[int]:
    groups = {gid}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Groups:"):
                    groups.update(int(g) for g in line.split()[1:])
                    break
    except OSError:
        pass
    return groups


def _gid_of(group: str) -> int:
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise BulletError(f"socket.group: no group named {group!r} on this system") from None


class SocketServer:
    def __init__(self, daemon):
        self.d = daemon
        cfg = daemon.cfg
        self.path = cfg.socket_path
        self.mode = cfg.socket.mode
        self.group = cfg.socket.group
        self.admin_uids = {0, os.geteuid(), *cfg.socket.admin_uids}
        self.admin_gids = {_gid_of(g) for g in cfg.socket.admin_groups}
        self.max_frame = cfg.limits.max_request_bytes
        sc = cfg.socket
        self.max_conns = sc.max_connections
        self.max_per_uid = sc.max_per_uid
        self.admin_reserved = sc.admin_reserved
        self.idle_timeout = sc.idle_timeout
        self.frame_timeout = sc.frame_timeout
        self.server: asyncio.AbstractServer | None = None
        self.conns: set[asyncio.Task] = set()
        self.by_uid: dict[int, int] = {}                 # open connections of non-admin uids
        self.refused = 0
        self._refusal_logged: dict[tuple, list] = {}     # (uid, why) -> [last log time, not logged since]

    async def start(self) -> None:
        parent = os.path.dirname(self.path) or "."
        if not os.path.isdir(parent):
            os.makedirs(parent, mode=0o750, exist_ok=True)
        if os.path.lexists(self.path):
            st = os.lstat(self.path)
            if not stat.S_ISSOCK(st.st_mode):
                raise BulletError(f"socket path {self.path} exists and is not a socket; refusing to replace it")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self.path)
                raise BulletError(f"another bulletd is already listening on {self.path}")
            except (ConnectionRefusedError, FileNotFoundError):
                os.unlink(self.path)   # stale socket of a process that died
            finally:
                probe.close()
        # create the file with the right mode from the start (no window with a wider mode)
        old = os.umask(0o777 & ~self.mode)
        try:
            self.server = await asyncio.start_unix_server(self._client, path=self.path,
                                                          limit=self.max_frame + 1024)
        finally:
            os.umask(old)
        os.chmod(self.path, self.mode)
        if self.group:
            os.chown(self.path, -1, _gid_of(self.group))
        log.info("listening on %s (mode %o%s)", self.path, self.mode, f", group {self.group}" if self.group else "")

    def stop_listening(self) -> None:
        if self.server is not None:
            self.server.close()    # no new connections; open ones keep getting their replies

    async def close(self) -> None:
        self.stop_listening()
        await cancel_and_wait(list(self.conns), what="socket connection")
        try:
            if os.path.exists(self.path) and stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)
        except OSError:
            pass

    def state(self) -> dict:
        return {"open": len(self.conns), "max": self.max_conns, "refused": self.refused,
                "by_uid": {str(u): n for u, n in sorted(self.by_uid.items())}}

    def _is_admin(self, pid: int, uid: int, gid: int) -> bool:
        if uid in self.admin_uids:
            return True
        return bool(self.admin_gids and peer_groups(pid, gid) & self.admin_gids)

    def _refusal(self, uid: int, admin: bool) -> tuple[str, str] | None:
        """Why a new connection of `uid` is refused, or None. The last admin_reserved slots are
        for admins; a non-admin uid may hold at most max_per_uid connections."""
        others = len(self.conns) - 1
        if others >= self.max_conns:
            return "full", f"too many connections ({others}, socket.max_connections={self.max_conns})"
        if admin:
            return None
        if others >= self.max_conns - self.admin_reserved:
            return "reserved", (f"the last {self.admin_reserved} of {self.max_conns} connections are kept for "
                                "admins (socket.admin_reserved); try again later")
        if self.by_uid.get(uid, 0) >= self.max_per_uid:
            return "per_uid", (f"uid {uid} already holds {self.by_uid[uid]} connections "
                               f"(socket.max_per_uid={self.max_per_uid})")
        return None

    def _log_refusal(self, who: str, uid: int, kind: str, message: str) -> None:
        """Every refusal is counted; the log gets one line per uid and reason every 10 s."""
        self.refused += 1
        now = time.monotonic()
        entry = self._refusal_logged.setdefault((uid, kind), [-1e9, 0])
        if now - entry[0] < 10.0:
            entry[1] += 1
            return
        more = f" ({entry[1]} more refused since the last report)" if entry[1] else ""
        entry[0], entry[1] = now, 0
        log.warning("refused a connection from %s: %s%s", who, message, more)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self.conns.add(task)
        wlock = asyncio.Lock()
        pending: set[asyncio.Task] = set()
        counted_uid = None
        try:
            sock = writer.get_extra_info("socket")
            pid, uid, gid = peer_credentials(sock)
            peer = Peer("socket", self._is_admin(pid, uid, gid), f"uid={uid} pid={pid}")

            loop = asyncio.get_running_loop()
            chunks: list[bytes] = []    # stream chunks not yet written

            def flush() -> None:
                if chunks:
                    data = b"".join(chunks)
                    chunks.clear()
                    writer.write(data)

            async def send(obj: dict) -> None:
                # A chunk is written at the end of this turn of the loop, a final reply at once
                # with the chunks before it: the last chunk and the final reply of a generation
                # reach the requester in one write (one wake-up of its process instead of two).
                async with wlock:
                    if obj.get("final") is False:
                        if not chunks:
                            loop.call_soon(flush)
                        chunks.append(pack_frame(obj))
                    else:
                        chunks.append(pack_frame(obj))
                        flush()
                    await writer.drain()

            refusal = self._refusal(uid, peer.admin)
            if refusal is not None:
                self._log_refusal(peer.who, uid, *refusal)
                await asyncio.wait_for(send({**error_reply("busy", refusal[1]), "id": None, "seq": 0}),
                                       self.frame_timeout)
                return
            if not peer.admin:
                counted_uid = uid
                self.by_uid[uid] = self.by_uid.get(uid, 0) + 1
            # One timer per connection, re-armed as frames come: a frame begun must arrive whole
            # within frame_timeout; with nothing in flight and nothing begun, the connection
            # may stay silent for idle_timeout. When it fires the connection is aborted, which
            # ends the read below.
            buf = bytearray()
            began = 0.0                  # when the first byte of the frame in buf arrived
            timer: asyncio.TimerHandle | None = None
            expired: str | None = None
            reading = True

            def expire(why: str) -> None:
                nonlocal expired
                expired = why
                writer.transport.abort()

            def arm() -> None:
                nonlocal timer
                if timer is not None:
                    timer.cancel()
                    timer = None
                if not reading:
                    return
                if buf:
                    timer = loop.call_at(began + self.frame_timeout, expire, "frame")
                elif not pending:
                    timer = loop.call_at(last_active + self.idle_timeout, expire, "idle")

            def finished(t: asyncio.Task) -> None:
                nonlocal last_active
                pending.discard(t)
                last_active = loop.time()
                if not pending and not buf:
                    arm()

            last_active = loop.time()
            arm()
            while True:
                try:
                    chunk = await reader.read(1 << 16)
                except ConnectionError:
                    chunk = b""
                if not chunk:
                    break
                if not buf:
                    began = loop.time()
                buf += chunk
                bodies, n = split_frames(buf, self.max_frame)
                if bodies:
                    began = last_active = loop.time()
                for body in bodies:
                    t = asyncio.create_task(self._serve_guarded(body, peer, send))
                    pending.add(t)
                    t.add_done_callback(finished)
                if n is not None:
                    log.info("%s sent a %d-byte frame (limit %d); closing", peer.who, n, self.max_frame)
                    await send({**error_reply("too_large", f"frame of {n} bytes is larger than the limit "
                                              f"{self.max_frame} (limits.max_request_bytes)"), "id": None, "seq": 0})
                    break   # cannot resynchronise without reading it all
                arm()
            reading = False
            arm()                        # cancels the timer
            if expired == "idle":
                log.info("%s: idle for %.0f s with no request in flight; closed (socket.idle_timeout)",
                         peer.who, self.idle_timeout)
            elif expired == "frame":
                log.info("%s: a frame begun was not complete within %.1f s; closed (socket.frame_timeout)",
                         peer.who, self.frame_timeout)
            if pending:
                # the peer half-closed: finish what it asked for (replies may still get through)
                await asyncio.gather(*pending, return_exceptions=True)
        except asyncio.CancelledError:
            for t in pending:
                t.cancel()
        except (asyncio.TimeoutError, ConnectionError):
            pass   # a refused peer that does not read its refusal
        except Exception:
            log.exception("socket connection failed")
        finally:
            self.conns.discard(task)
            if counted_uid is not None:
                left = self.by_uid.get(counted_uid, 1) - 1
                if left > 0:
                    self.by_uid[counted_uid] = left
                else:
                    self.by_uid.pop(counted_uid, None)
            try:
                writer.close()
            except Exception:
                pass

    async def _serve_guarded(self, body: bytes, peer, send) -> None:
        try:
            await self._serve(body, peer, send)
        except asyncio.CancelledError:
            raise
        except Exception:   # a bug: log it with its traceback; the connection keeps serving
            log.exception("serving a request from %s failed", peer.who)

    async def _serve(self, body: bytes, peer, send) -> None:
        rid = None
        seq = 0
        try:
            obj = decode_msgpack(body, "frame")
            rid = reply_id(obj)

            async def emit(chunk: dict) -> None:
                nonlocal seq
                await send({**chunk, "id": rid, "seq": seq, "final": False})
                seq += 1

            final = await self.d.handle(obj, emit, peer)
        except RequestError as exc:
            log.info("bad frame from %s: %s", peer.who, exc.message)
            final = error_from_exc(exc)
        final["id"] = rid
        final["seq"] = seq
        try:
            await send(final)
        except (ConnectionError, RuntimeError) as exc:
            log.info("could not deliver the final reply to %s: %s", peer.who, exc)
