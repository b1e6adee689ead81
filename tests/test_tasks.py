"""cancel_and_wait ends tasks that lose a cancellation (as Python 3.11's asyncio.wait_for can)."""
import asyncio
import logging

from bulletd.tasks import cancel_and_wait


async def _swallows_once(log: list):
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        log.append("lost")          # a cancellation that never reaches the caller
    await asyncio.sleep(30)         # carries on, as the OTA receiver did into its message loop


async def test_a_task_that_loses_one_cancellation_still_ends():
    seen: list = []
    t = asyncio.create_task(_swallows_once(seen))
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    left = await cancel_and_wait([t], every=0.05, limit=5.0)
    assert left == set() and t.cancelled() and seen == ["lost"]
    assert loop.time() - t0 < 2.0


async def test_a_single_cancel_and_await_would_hang_on_the_same_task():
    """The case cancel_and_wait exists for: one cancel, then waiting, does not end it."""
    seen: list = []
    t = asyncio.create_task(_swallows_once(seen))
    await asyncio.sleep(0)
    t.cancel()
    done, _ = await asyncio.wait([t], timeout=0.3)
    assert not done and seen == ["lost"]
    await cancel_and_wait([t], every=0.05)
    assert t.cancelled()


async def test_a_task_that_never_ends_is_given_up_on_and_named(caplog):
    release = asyncio.Event()

    async def stubborn():
        while not release.is_set():
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                pass

    t = asyncio.create_task(stubborn(), name="stubborn-one")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="bulletd"):
        left = await cancel_and_wait([t], every=0.05, limit=0.3, what="test task")
    assert left == {t} and not t.done()
    assert "stubborn-one" in caplog.text and "1 test task(s) did not end" in caplog.text
    release.set()   # let it go, so that the test leaves nothing running
    t.cancel()
    await asyncio.wait([t], timeout=1.0)
    assert t.done()


async def test_finished_and_failing_tasks_are_fine_and_their_errors_retrieved():
    async def fails():
        raise RuntimeError("boom")

    async def quick():
        return 1

    unretrieved: list = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, ctx: unretrieved.append(ctx.get("message")))
    a, b = asyncio.create_task(fails()), asyncio.create_task(quick())
    await asyncio.sleep(0.01)          # both ended before the call
    assert a.done() and b.done()
    assert await cancel_and_wait([a, b, None]) == set()
    c = asyncio.create_task(asyncio.sleep(30))
    assert await cancel_and_wait([c]) == set() and c.cancelled()
    # an unretrieved exception is reported when its task is destroyed: make that happen now
    del a
    import gc
    gc.collect()
    await asyncio.sleep(0)
    loop.set_exception_handler(None)
    assert not [m for m in unretrieved if m and "never retrieved" in m], unretrieved
