"""The ``RateStore`` protocol as the rate limiter uses it (``core.web.ratelimit``), on the
stores the SQLite and Redis backends open and on the memory store of a single worker: a
moving window checked and charged in one step, its newest entry given back, and plain
expiring counters."""

from __future__ import annotations

import pytest

from core.web.ratelimit import MemoryRateStorage
from tests.conftest import STATE_BACKENDS

pytestmark = pytest.mark.parametrize("state_url", STATE_BACKENDS, indirect=True)


@pytest.fixture(params=["backend", "memory"])
async def store(request, backend):
    store = backend.backend.rate_store() if request.param == "backend" else MemoryRateStorage()
    yield store
    await store.after_serving()


async def test_the_window_admits_its_limit_and_no_more(store):
    assert [await store.acquire_entry("k", 3, 60) for _ in range(4)] == [True, True, True, False]
    oldest, count = await store.get_moving_window("k", 3, 60)
    assert count == 3 and oldest > 0
    assert await store.acquire_entry("other", 3, 60)  # keys are independent


async def test_an_amount_above_the_limit_is_refused_without_charging(store):
    assert not await store.acquire_entry("k", 2, 60, amount=3)
    assert (await store.get_moving_window("k", 2, 60))[1] == 0


async def test_refund_gives_back_the_newest_entry(store):
    assert await store.acquire_entry("k", 2, 60)
    assert await store.acquire_entry("k", 2, 60)
    assert not await store.acquire_entry("k", 2, 60)
    await store.refund("k")
    assert (await store.get_moving_window("k", 2, 60))[1] == 1
    assert await store.acquire_entry("k", 2, 60)


async def test_plain_counters_count_up_from_nothing(store):
    assert await store.get("c") == 0
    assert await store.incr("c", 60) == 1
    assert await store.incr("c", 60, amount=2) == 3
    assert await store.get("c") == 3
