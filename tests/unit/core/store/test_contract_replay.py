"""The ``ReplayCache`` protocol, held to the same behaviour on SQLite and Redis: a key is
accepted once (atomically, even concurrently), until it expires; ``None`` is for ever."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from core.store.protocols import ReplayCache
from tests.conftest import STATE_BACKENDS

pytestmark = pytest.mark.parametrize("state_url", STATE_BACKENDS, indirect=True)


@pytest.fixture
async def cache(backend) -> AsyncIterator[ReplayCache]:
    cache = backend.replay_cache()
    yield cache
    await cache.close()


async def test_a_key_is_accepted_once_even_concurrently(cache):
    results = await asyncio.gather(*(cache.add_if_absent("sig-1", time.time() + 60) for _ in range(10)))
    assert sorted(results) == [False] * 9 + [True]
    assert await cache.add_if_absent("sig-2", time.time() + 60) is True  # per key


async def test_a_key_without_expiry_is_remembered_for_ever(cache):
    assert await cache.add_if_absent("forever", None) is True
    assert await cache.add_if_absent("forever", None) is False
    assert await cache.add_if_absent("forever", time.time() + 60) is False


async def test_a_key_is_unseen_again_once_it_expires(cache):
    assert await cache.add_if_absent("short", time.time() + 0.2) is True
    assert await cache.add_if_absent("short", time.time() + 0.2) is False
    deadline = time.monotonic() + 5
    while not await cache.add_if_absent("short", time.time() + 60):  # the expiry passes; then it is new
        assert time.monotonic() < deadline, "an expired key must be accepted again"
        await asyncio.sleep(0.05)
    assert await cache.add_if_absent("short", time.time() + 60) is False  # and remembered anew


async def test_a_key_already_expired_is_not_remembered(cache):
    assert await cache.add_if_absent("stale", time.time() - 1) is True
    assert await cache.add_if_absent("stale", time.time() - 1) is True
    assert await cache.add_if_absent("stale", time.time() + 60) is True


async def test_caches_of_one_deployment_share_their_keys(backend, cache):
    other = backend.replay_cache()  # another worker's
    try:
        assert await cache.add_if_absent("shared", None) is True
        assert await other.add_if_absent("shared", None) is False
    finally:
        await other.close()
