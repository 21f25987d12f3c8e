"""What only the Redis stores promise beyond the contract suite: hashes written by earlier
versions keep working, a lost connection is ``StoreUnavailable`` (503), never redis-py's
own error, and grouped pipelines answer in order, even from a Redis that lost its scripts,
share a read only among the calls queued for one round trip, and wait for replicas only
for journal writes."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.exceptions import ResponseError

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


async def test_identical_shared_reads_queued_for_one_round_trip_run_once(backend):
    client = backend.client
    pipelines = Pipelines(client)
    key = f"{backend.prefix}:shared-count"
    # A "read" that counts its runs: the calls queued before the pipeline is sent share one run.
    script = client.register_script("return redis.call('INCR', KEYS[1])")
    first = [pipelines.call(script, [], [key], share=("count", key)) for _ in range(5)]
    unshared = pipelines.call(script, [], [key])
    assert await asyncio.gather(*first, unshared) == [1, 1, 1, 1, 1, 2]
    # Asked once that pipeline is gone: a run of its own, which sees every write before it.
    assert await pipelines.call(script, [], [key], share=("count", key)) == 3
    assert await pipelines.command("GET", key, share=("GET", key)) == "3"


async def test_a_caller_cancelled_while_sharing_a_read_leaves_the_others_their_answer(backend):
    pipelines = Pipelines(backend.client)
    key = f"{backend.prefix}:shared-cancel"
    await pipelines.command("SET", key, "v")
    gone = pipelines.command("GET", key, share=("GET", key))
    kept = pipelines.command("GET", key, share=("GET", key))
    gone.cancel()
    assert await kept == "v"


async def test_replicas_are_waited_for_only_in_a_round_trip_carrying_a_journal_write(backend, monkeypatch):
    pipelines = Pipelines(backend.client, wait_replicas=1)
    sent: list[list[str]] = []
    execute = pipelines._execute

    async def recording(commands):
        sent.append([str(command[0]) for command in commands])
        if sent[-1][-1] != "WAIT":
            return await execute(commands)
        return [*(await execute(commands[:-1])), 0]  # this Redis has no replica: WAIT answers 0, as it would

    monkeypatch.setattr(pipelines, "_execute", recording)
    key = f"{backend.prefix}:waited"
    assert await pipelines.command("GET", key) is None
    assert await pipelines.command("SET", key, "1", durable=True) == "OK"
    assert await asyncio.gather(pipelines.command("GET", key), pipelines.command("INCR", key, durable=True)) == ["1", 2]
    assert sent == [["GET"], ["SET", "WAIT"], ["GET", "INCR", "WAIT"]]


async def test_every_kind_of_reply_reaches_its_caller(backend):
    pipelines = Pipelines(backend.client)
    key = f"{backend.prefix}:kinds"
    replies = await asyncio.gather(
        pipelines.command("HSET", key, "a", "ü", "b", "2"),
        pipelines.command("HGETALL", key),
        pipelines.command("INCR", key),  # a hash: an error reply, for this call only
        pipelines.command("HLEN", key),
        return_exceptions=True,
    )
    assert replies[0] == 2 and dict(replies[1]) == {"a": "ü", "b": "2"} and replies[3] == 2
    assert isinstance(replies[2], ResponseError) and "WRONGTYPE" in str(replies[2])
    text = f"{backend.prefix}:text"
    assert await pipelines.command("SET", text, "line\r\n$3\r\n*1 ü", durable=True) == "OK"
    assert await pipelines.command("GET", text) == "line\r\n$3\r\n*1 ü"
    assert await pipelines.command("SET", text, 1796613214.0436718) == "OK"
    assert float(await pipelines.command("GET", text)) == 1796613214.0436718
