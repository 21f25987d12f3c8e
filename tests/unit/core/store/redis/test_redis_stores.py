"""What only the Redis stores promise beyond the contract suite: hashes written by earlier
versions keep working, a lost connection is ``StoreUnavailable`` (503), never redis-py's
own error, and grouped pipelines answer in order, even from a Redis that lost its scripts."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from core.errors import StoreUnavailable
from core.store.redis.backend import RedisBackend
from core.store.redis.batch import Pipelines
from tests.conftest import REDIS_TEST_URL

pytestmark = pytest.mark.parametrize("state_url", [REDIS_TEST_URL], indirect=True)


async def test_a_token_stored_before_scopes_reads_as_no_scopes(backend):
    store = backend.token_store()
    token, info = await store.issue(ttl=3600, label="old", scopes=("control",))
    digest = next(d for d in await store.client.smembers(store._index) if d.startswith(info.id))
    await store.client.hdel(store._key(digest), "scopes")  # a hash as the version before scopes wrote it
    assert (await store.verify(token)).scopes == ()


async def test_an_unreachable_redis_is_store_unavailable_for_every_store(state_url, state_prefix):
    dead = RedisBackend(
        "redis://127.0.0.1:1/0", prefix=state_prefix, retention_days=1, wait_replicas=0, worker_stale_after=1
    )
    try:
        calls = [
            dead.journal().ping(),
            dead.journal().get("x"),
            dead.token_store().verify("x"),
            dead.journal().remember_replay("x", None),
            dead.risk_store().halts(),
        ]
        for call in calls:
            with pytest.raises(StoreUnavailable, match="the state store \\(Redis\\) is unavailable"):
                await call
    finally:
        await dead.aclose()


async def test_pipelined_calls_answer_in_order_and_survive_a_redis_that_forgot_its_scripts(backend):
    client = backend.client
    pipelines = Pipelines(client)
    # A script this Redis never saw, taken for loaded: its first call meets NOSCRIPT (as after a
    # Redis restart), is loaded and sent again — it had not run.
    script = client.register_script(f"-- {uuid.uuid4().hex}\nreturn ARGV[1]")
    pipelines._loaded.add(script.sha)
    answers = await asyncio.gather(*(pipelines.call(script, [str(i)]) for i in range(20)))
    assert answers == [str(i) for i in range(20)]
    assert script.sha in pipelines._loaded


async def test_pipelined_calls_to_an_unreachable_redis_are_store_unavailable(state_url, state_prefix):
    dead = RedisBackend(
        "redis://127.0.0.1:1/0", prefix=state_prefix, retention_days=1, wait_replicas=0, worker_stale_after=1
    )
    try:
        journal = dead.journal()
        with pytest.raises(StoreUnavailable):
            await journal.record("x", state="filled")
    finally:
        await dead.aclose()
