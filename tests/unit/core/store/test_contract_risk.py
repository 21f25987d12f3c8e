"""The ``RiskStore`` protocol, held to the same behaviour on SQLite and Redis: halts, the
orders-per-minute window under concurrency, flatten records and their leases, the day's
equity baseline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from core.store.protocols import RiskStore
from core.store.risk import ALL, new_flatten_record
from core.store.states import FlattenState
from tests.conftest import STATE_BACKENDS

pytestmark = pytest.mark.parametrize("state_url", STATE_BACKENDS, indirect=True)


@pytest.fixture
async def store(backend) -> AsyncIterator[RiskStore]:
    store = backend.risk_store()
    yield store
    await store.aclose()


async def test_halts_are_set_read_and_cleared(store):
    assert await store.halts() == {}
    await store.set_halt("main", {"reason": "news", "by": "cli", "since": 1.0, "until": None})
    await store.set_halt(ALL, {"reason": "all", "by": "http", "since": 2.0, "until": None})
    await store.set_halt("main", {"reason": "again", "by": "cli", "since": 3.0, "until": 9.0})  # replaces
    halts = await store.halts()
    assert set(halts) == {"main", ALL} and halts["main"] == {"reason": "again", "by": "cli", "since": 3.0, "until": 9.0}
    assert await store.clear_halt("main") == ["main"]
    assert await store.clear_halt("main") == []
    assert await store.clear_halt(None) == [ALL]
    assert await store.clear_halt(None) == []
    assert await store.halts() == {}


async def test_a_halt_set_by_one_worker_is_read_by_another(backend, store):
    other = backend.risk_store()
    try:
        await store.set_halt("main", {"reason": "news", "by": "cli", "since": 1.0, "until": None})
        assert set(await other.halts()) == {"main"}
    finally:
        await other.aclose()


async def test_orders_per_minute_counts_at_most_the_limit_under_concurrency(store):
    results = await asyncio.gather(*(store.count_order("opm:a", 3, 60.0) for _ in range(10)))
    assert sorted(counted for counted, _ in results) == [False] * 7 + [True] * 3
    assert sorted(seen for counted, seen in results if counted) == [0, 1, 2]
    assert all(seen == 3 for counted, seen in results if not counted)
    assert (await store.count_order("opm:b", 3, 60.0))[0] is True  # per key
    # The read the dashboard makes: counts what was counted, counts nothing itself.
    assert [await store.recent_orders(k, 60.0) for k in ("opm:a", "opm:a", "opm:b", "opm:none")] == [3, 3, 1, 0]
    assert await store.count_order("opm:c", 1, 0.05) == (True, 0)
    assert (await store.count_order("opm:c", 1, 0.05))[0] is False
    deadline = time.monotonic() + 5
    while not (await store.count_order("opm:c", 1, 0.05))[0]:  # the window slides on
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_flattens_are_stored_newest_first_and_filtered_open(store):
    records = []
    for i, state in enumerate((FlattenState.DONE, FlattenState.PENDING, FlattenState.RUNNING, FlattenState.FAILED)):
        record = new_flatten_record("main" if i % 2 else None, by="cli") | {"state": state.value}
        record["requested_at"] += i  # distinct, growing request times
        await store.save_flatten(record)
        records.append(record)
    assert records[0]["account"] == ALL and records[1]["account"] == "main"
    assert [f["flatten_id"] for f in await store.flattens()] == [r["flatten_id"] for r in reversed(records)]
    assert [f["flatten_id"] for f in await store.flattens(limit=2)] == [
        records[3]["flatten_id"],
        records[2]["flatten_id"],
    ]
    assert [f["state"] for f in await store.flattens(open_only=True)] == ["running", "pending"]
    progressed = records[2] | {"steps": {"flatten-x": "filled"}}
    await store.save_flatten(progressed)  # its progress replaces the record
    assert next(f for f in await store.flattens() if f["flatten_id"] == progressed["flatten_id"]) == progressed


async def test_a_flatten_lease_is_held_by_one_worker_until_it_goes_stale(store):
    record = new_flatten_record("main", by="cli")
    assert record["state"] == FlattenState.PENDING and record["owner"] is None
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
    done = dict(record, state=FlattenState.DONE.value, owner="other")
    await store.save_flatten(done)
    assert await store.claim_flatten(record["flatten_id"], "third", 0.0) is None  # finished: not claimable
    assert await store.claim_flatten("no-such-flatten", "third", 0.0) is None
    assert [f["state"] for f in await store.flattens()] == ["done"] and await store.flattens(open_only=True) == []


async def test_the_day_baseline_is_set_once(store):
    assert await store.baseline("main", "2026-12-06", Decimal(1000)) == Decimal(1000)
    assert await store.baseline("main", "2026-12-06", Decimal(900)) == Decimal(1000)
    assert await store.baseline("main", "2026-12-07", Decimal(900)) == Decimal(900)
    assert await store.baseline("other", "2026-12-07", Decimal("12.5")) == Decimal("12.5")
