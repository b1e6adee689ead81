"""Execution of generations off the event loop: a bounded pool of worker threads (one per core
by default; the native forward pass releases the GIL, so requests to different children run in
parallel), admission control (a full queue answers `busy` at once), deadlines, cancellation,
and streaming of decoded pieces back to the loop as they are produced.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable

from bulletd.errors import RequestError
from bulletd.daemon.registry import Lease

log = logging.getLogger("bulletd.scheduler")

Emit = Callable[[str], Awaitable[None]]

# While streaming, the first piece goes out at once and later ones at most every STREAM_GAP
# seconds, together: each chunk wakes the event loop and the requester, which on a small VM costs
# more than the tokens of a fast child take to compute
STREAM_GAP = 0.02

CANCEL_CODES = {
    "timeout": "timeout",
    "cancelled": "cancelled",
    "shutting_down": "cancelled",
    "client_gone": "cancelled",
}


class Scheduler:
    def __init__(self, workers: int, max_queue: int):
        self.workers = workers
        self.capacity = workers + max_queue
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bulletd-gen")
        self.inflight = 0          # admitted generations (running + waiting for a worker)
        self.running = 0           # generations on a worker right now
        self.completed = 0
        self.rejected = 0

    def resize(self, workers: int, max_queue: int) -> None:
        """A reload: new generations go to a pool of the new size; running ones finish on the
        old pool, which then ends its threads."""
        if workers != self.workers:
            old, self.pool = self.pool, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bulletd-gen")
            old.shutdown(wait=False)
            self.workers = workers
        self.capacity = self.workers + max_queue

    def admit(self) -> None:
        """Reserve a slot or raise RequestError(busy) at once."""
        if self.inflight >= self.capacity:
            self.rejected += 1
            raise RequestError("busy", f"all {self.workers} workers are busy and {self.capacity - self.workers} "
                               "requests are queued (scheduler.max_queue); try again shortly")
        self.inflight += 1

    def release(self) -> None:
        self.inflight -= 1
        self.completed += 1

    async def call(self, lease: Lease, fn: Callable[[], Any], deadline: float) -> tuple[Any, dict]:
        """Run fn() on a worker under the lease's deadline and cancellation (an agent request:
        generation and tool in one call). Call admit() first. Returns (fn's value, timing)."""
        loop = asyncio.get_running_loop()
        marks: dict[str, float] = {"submit": time.perf_counter()}

        def work() -> Any:                         # worker thread
            marks["start"] = time.perf_counter()
            cpu0 = time.thread_time()
            self.running += 1
            try:
                if lease.cancel_event.is_set():
                    return None
                return fn()
            finally:
                marks["cpu"] = time.thread_time() - cpu0
                marks["end"] = time.perf_counter()
                self.running -= 1

        timer = loop.call_later(deadline, lease.cancel, "timeout")
        try:
            try:
                value = await loop.run_in_executor(self.pool, work)
            except RequestError as exc:
                if lease.reason is None:
                    raise
                value = exc
        finally:
            timer.cancel()
        end = time.perf_counter()
        if lease.reason is not None:
            raise _cancel_error(lease, deadline, None)
        start = marks.get("start", end)
        return value, {"queue_ms": round((start - marks["submit"]) * 1e3, 3),
                       "total_ms": round((end - marks["submit"]) * 1e3, 3),
                       "worker_ms": round((marks.get("end", end) - start) * 1e3, 3),
                       "worker_cpu_ms": round(marks.get("cpu", 0.0) * 1e3, 3)}

    async def generate(self, lease: Lease, prompt: str, settings, *, stream: bool,
                       emit: Emit | None, deadline: float, grammar: Callable[[], Any] | None = None) -> dict:
        """Run one generation on a worker. Call admit() first (and release() after).

        settings: validated GenerationSettings (the request's, protocol.parse_request).
        Returns the result map; raises RequestError with the stable code on timeout or
        cancellation, and the runtime's typed errors as they are (the daemon's edge gives them
        their wire codes). Pieces go to `emit` (coalesced) while streaming.
        """
        loop = asyncio.get_running_loop()
        pieces: collections.deque[str] = collections.deque()
        wake = asyncio.Event()
        flag = [False]
        sent = [-STREAM_GAP]       # when the loop last sent a chunk (perf_counter)
        marks: dict[str, float] = {"submit": time.perf_counter()}

        def _wake() -> None:
            flag[0] = False
            wake.set()

        def push(piece: str) -> None:             # worker thread
            now = time.perf_counter()
            if "first" not in marks:
                marks["first"] = now
            pieces.append(piece)
            # wake the loop only when no chunk went out in the last STREAM_GAP; the loop's
            # timer collects what comes in between (a wake costs the worker a system call)
            if stream and not flag[0] and now - sent[0] >= STREAM_GAP:
                flag[0] = True
                loop.call_soon_threadsafe(_wake)

        model = lease.model
        cancel = lease.cancel_event

        def work() -> Any:                         # worker thread
            marks["start"] = time.perf_counter()
            cpu0 = time.thread_time()
            self.running += 1
            try:
                if cancel.is_set():
                    return None
                extra = {"grammar": grammar()} if grammar is not None else {}
                gen = model.generate(prompt, settings, cancel=cancel, **extra)
                for piece in gen:
                    if piece:
                        push(piece)
                    if cancel.is_set():
                        break
                return gen
            finally:
                marks["cpu"] = time.thread_time() - cpu0
                marks["end"] = time.perf_counter()
                self.running -= 1

        timer = loop.call_later(deadline, lease.cancel, "timeout")
        tick: asyncio.TimerHandle | None = None
        fut = loop.run_in_executor(self.pool, work)
        fut.add_done_callback(lambda f: wake.set())
        try:
            if stream and emit is not None:
                while True:
                    await wake.wait()
                    wake.clear()
                    done = fut.done()
                    if pieces:
                        text = "".join(pieces.popleft() for _ in range(len(pieces)))
                        sent[0] = time.perf_counter()
                        if tick is not None:
                            tick.cancel()
                        # the pieces pushed within STREAM_GAP from now did not wake the loop
                        tick = None if done else loop.call_later(STREAM_GAP, wake.set)
                        if lease.reason is None:
                            try:
                                await emit(text)
                            except Exception as exc:  # the requester is gone: stop generating
                                log.info("stream to requester failed (%s); cancelling", exc)
                                lease.cancel("client_gone")
                    if done and not pieces:
                        break
            gen = await fut
        finally:
            timer.cancel()
            if tick is not None:
                tick.cancel()
        end = time.perf_counter()
        if lease.reason is not None:
            raise _cancel_error(lease, deadline, len(getattr(gen, "tokens", []) or []) if gen is not None else 0)
        tokens = list(getattr(gen, "tokens", []) or [])
        ptoks = getattr(gen, "prompt_tokens", [])
        n_prompt = ptoks if isinstance(ptoks, int) else len(ptoks or [])
        gen_s = end - marks.get("start", end)
        out = {
            "finish_reason": getattr(gen, "finish_reason", "length"),
            "tokens": len(tokens),
            "prompt_tokens": n_prompt,
            "timing": {
                "queue_ms": round((marks.get("start", end) - marks["submit"]) * 1e3, 3),
                "first_ms": round((marks.get("first", marks.get("end", end)) - marks.get("start", end)) * 1e3, 3),
                "total_ms": round((end - marks["submit"]) * 1e3, 3),
                # the worker's own share: wall time of the generation on its thread, and that
                # thread's CPU time (the difference is time it waited: the GIL, the scheduler)
                "worker_ms": round((marks.get("end", end) - marks.get("start", end)) * 1e3, 3),
                "worker_cpu_ms": round(marks.get("cpu", 0.0) * 1e3, 3),
                "tokens_per_s": round(len(tokens) / gen_s, 2) if gen_s > 0 else 0.0,
            },
        }
        if not stream:
            out["text"] = getattr(gen, "text", "")
        return out

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _cancel_error(lease: Lease, deadline: float, ntok: int | None) -> RequestError:
    code = CANCEL_CODES.get(lease.reason, "cancelled")
    after = f" after {ntok} generated token(s)" if ntok is not None else ""
    if lease.reason == "timeout":
        msg = f"deadline of {deadline:.3g} s passed{after}"
    elif lease.reason == "shutting_down":
        msg = f"the daemon is stopping; cancelled{after}"
    elif lease.reason == "client_gone":
        msg = f"the requester stopped reading; cancelled{after}"
    else:
        msg = f"child {lease.child.name!r} was unloaded with cancel{after}"
    return RequestError(code, msg)
