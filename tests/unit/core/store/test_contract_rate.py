"""The ``RateStore`` protocol as the rate limiter uses it (``core.web.ratelimit``), on the
stores the SQLite and Redis backends open: theoretical arrival times, and several keys
checked and charged in one step."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import STATE_BACKENDS

pytestmark = pytest.mark.parametrize("state_url", STATE_BACKENDS, indirect=True)


async def test_the_store_keeps_theoretical_arrival_times(backend):
    store = backend.rate_store()
    await store.before_serving()
    try:
        now = datetime.now(UTC)
        default = now - timedelta(days=1)
        assert await store.get("k", default) == default
        await store.set("k", now + timedelta(seconds=30))
        assert abs((await store.get("k", default)) - (now + timedelta(seconds=30))) < timedelta(milliseconds=5)
    finally:
        await store.after_serving()


async def test_reserve_charges_every_key_or_none_and_release_gives_back(backend):
    store = backend.rate_store()
    try:
        now = time.time()
        a, b = ("a", 1.0, 2.5), ("b", 1.0, 1.5)  # a: 2 in 2.5 s; b: 1 in 1.5 s (a margin: the stored times are rounded)
        assert await store.reserve([a, b], now) == 0.0
        assert await store.reserve([a, b], now) == pytest.approx(0.5, abs=0.01)  # b is spent: neither is charged
        assert await store.reserve([a], now) == 0.0  # a was not charged by the refusal
        assert await store.reserve([a], now) == pytest.approx(0.5, abs=0.01)
        await store.release([b], now)
        assert await store.reserve([b], now) == 0.0
    finally:
        await store.after_serving()
