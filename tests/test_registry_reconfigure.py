"""Registry.reconfigure (the daemon's SIGHUP): new settings in one call; a smaller budget evicts
idle children, never busy ones; a new model directory is scanned at once."""
from __future__ import annotations

import logging

from bulletd.daemon.registry import Registry
from _daemon_util import make_child


def _settings(model_dir, budget: int) -> dict:
    return dict(model_dir=model_dir, trust=None, allow_unsigned=True, budget_bytes=budget, keep_alive=0,
                load_on_demand=True, unload_timeout=5.0, mother_path=None)


async def test_reconfigure_fits_the_new_budget_and_rescans(tmp_path, caplog):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    make_child(one, "a", key=None, seed=1)
    make_child(one, "b", key=None, seed=2)
    make_child(two, "c", key=None, seed=3)
    reg = Registry(**_settings(one, 1 << 30))
    reg.scan()
    await reg.load("a")
    await reg.load("b")
    size = reg.children["a"].size
    busy = await reg.acquire("b")
    try:
        with caplog.at_level(logging.WARNING, logger="bulletd.registry"):
            found = await reg.reconfigure(**_settings(two, size - 1))
        # a is idle and evicted; b is busy and stays, so the budget is still exceeded: logged
        assert set(reg.children) == {"b"}
        assert "after reload" in caplog.text
        assert set(found) == {"b", "c"} and set(reg.available()) == {"b", "c"}
        assert (reg.model_dir, reg.budget, reg.unload_timeout) == (two, size - 1, 5.0)
    finally:
        reg.release(busy)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bulletd.registry"):
        await reg.reconfigure(**_settings(two, size - 1))
    assert not reg.children and "after reload" not in caplog.text     # b is idle now: evicted
    reg.close_all()
