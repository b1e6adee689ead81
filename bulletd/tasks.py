"""Ending asyncio tasks for sure.

One `Task.cancel()` is a request, not a guarantee: a coroutine can lose it. Python 3.11's
`asyncio.wait_for` (which aiomqtt uses for every publish and subscribe) returns its result
instead of raising when the cancellation arrives in the same loop iteration as the inner
future's completion, and the task then carries on as if never cancelled. A shutdown that
cancels once and awaits forever hangs in that case (seen: SIGTERM while the OTA receiver was
publishing its presence). cancel_and_wait asks again until the tasks end, up to a limit.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Iterable

log = logging.getLogger("bulletd")


async def cancel_and_wait(tasks: Iterable[asyncio.Future], *, every: float = 2.0, limit: float = 5.0,
                          what: str = "task") -> set[asyncio.Future]:
    """Cancel `tasks` and wait until they end, cancelling again every `every` seconds (long
    enough for a task's own clean-up on cancellation, such as a last publish, to finish).

    Returns the tasks still running after `limit` seconds (logged; normally none). Every
    ended task's exception is retrieved, also of tasks that had ended before the call, so none
    is reported as never retrieved (callers that care look at the tasks themselves)."""
    loop = asyncio.get_running_loop()
    given = [t for t in tasks if t is not None]
    pending = {t for t in given if not t.done()}
    end = loop.time() + limit

    def names(ts) -> str:
        return ", ".join(sorted(t.get_name() if hasattr(t, "get_name") else repr(t) for t in ts))

    rounds = 0
    while pending:
        left = end - loop.time()
        if left <= 0:
            log.error("%d %s(s) did not end after %.1f s of cancelling: %s", len(pending), what, limit,
                      names(pending))
            break
        if rounds:
            log.warning("%d %s(s) still running %.1f s after being cancelled (%s): cancelling again",
                        len(pending), what, limit - left, names(pending))
        rounds += 1
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(every, left))
    for t in given:
        if t.done() and not t.cancelled():
            t.exception()       # retrieved: the caller is stopping, not inspecting
    return pending
