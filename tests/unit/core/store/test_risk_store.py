"""The risk store's behaviour on SQLite and Redis alike: halts, the orders-per-minute
window under concurrency, flatten leases, the day's equity baseline."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest

from core.config import RouterOptions, Settings
from core.store.factory import StateBackend, StateOptions
from core.store.risk import new_flatten_record
from tests.conftest import STATE_BACKENDS

pytestmark = pytest.mark.parametrize("state_url", STATE_BACKENDS, indirect=True)


@pytest.fixture
async def store(data_dir, state_url, state_prefix):
    settings = Settings.from_env(
        env_file=None, environ={"DATA_DIR": str(data_dir), "STATE_URL": state_url, "STATE_PREFIX": state_prefix}
    )
    backend = StateBackend(settings, StateOptions(), RouterOptions())
    store = backend.risk_store()
    yield store
    await store.aclose()
    await backend.aclose()


async def test_halts_are_set_read_and_cleared(store):
    assert await store.halts() == {}
    await store.set_halt("main", {"reason": "news", "by": "cli", "since": 1.0, "until": None})
    await store.set_halt("*", {"reason": "all", "by": "http", "since": 2.0, "until": None})
    assert (await store.halts())["main"]["reason"] == "news" and set(await store.halts()) == {"main", "*"}
    assert await store.clear_halt("main") == ["main"]
    assert await store.clear_halt("main") == []
    assert await store.clear_halt(None) == ["*"]
    assert await store.halts() == {}


async def test_orders_per_minute_counts_at_most_the_limit_under_concurrency(store):
    results = await asyncio.gather(*(store.count_order("opm:a", 3, 60.0) for _ in range(10)))
    assert sorted(counted for counted, _ in results) == [False] * 7 + [True] * 3
    assert (await store.count_order("opm:b", 3, 60.0))[0] is True  # per key
    # The read the dashboard makes: counts what was counted, counts nothing itself.
    assert [await store.recent_orders(k, 60.0) for k in ("opm:a", "opm:a", "opm:b", "opm:none")] == [3, 3, 1, 0]
    assert await store.count_order("opm:c", 1, 0.05) == (True, 0)
    assert (await store.count_order("opm:c", 1, 0.05))[0] is False
    deadline = time.monotonic() + 5
    while not (await store.count_order("opm:c", 1, 0.05))[0]:  # the window slides on
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_a_flatten_lease_is_held_by_one_worker_until_it_goes_stale(store):
    record = new_flatten_record("main", by="cli")
    await store.save_flatten(record)
    claims = await asyncio.gather(*(store.claim_flatten(record["flatten_id"], f"w{i}", 0.3) for i in range(5)))
    owners = [c["owner"] for c in claims if c is not None]
    assert len(owners) == 1
    assert await store.claim_flatten(record["flatten_id"], owners[0], 0.3) is not None  # renewal
    assert await store.claim_flatten(record["flatten_id"], "other", 0.3) is None
    deadline = time.monotonic() + 5
    while await store.claim_flatten(record["flatten_id"], "other", 0.3) is None:  # the holder stops renewing
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    done = dict(record, state="done", owner="other")
    await store.save_flatten(done)
    assert await store.claim_flatten(record["flatten_id"], "third", 0.0) is None  # finished: not claimable
    assert [f["state"] for f in await store.flattens()] == ["done"] and await store.flattens(open_only=True) == []


async def test_the_day_baseline_is_set_once(store):
    assert await store.baseline("main", "2026-12-06", Decimal(1000)) == Decimal(1000)
    assert await store.baseline("main", "2026-12-06", Decimal(900)) == Decimal(1000)
    assert await store.baseline("main", "2026-12-07", Decimal(900)) == Decimal(900)
