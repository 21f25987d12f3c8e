"""One behavioural suite for every shared store, run against SQLite and Redis.

Each store must give the same answers whichever backend holds it: the replay cache,
tokens, rate limits and the journal (admission, dedup, lanes, heartbeats and claims).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from core.config import RouterOptions, Settings
from core.store.factory import StateBackend, StateOptions
from tests.conftest import STATE_BACKENDS

pytestmark = pytest.mark.parametrize("state_url", STATE_BACKENDS, indirect=True)


@pytest.fixture
async def backend(data_dir, state_url, state_prefix):
    settings = Settings.from_env(
        env_file=None, environ={"DATA_DIR": str(data_dir), "STATE_URL": state_url, "STATE_PREFIX": state_prefix}
    )
    state = StateBackend(settings, StateOptions(), RouterOptions(worker_stale_after=0.5))
    yield state
    await state.aclose()


async def test_replay_cache_accepts_a_key_once_even_concurrently(backend):
    cache = backend.replay_cache()
    try:
        results = await asyncio.gather(*(cache.add_if_absent("sig-1", time.time() + 60) for _ in range(10)))
        assert sorted(results) == [False] * 9 + [True]
        assert await cache.add_if_absent("sig-forever", None) is True
        assert await cache.add_if_absent("sig-forever", None) is False
        assert await cache.add_if_absent("sig-2", time.time() + 60) is True
    finally:
        await cache.close()


async def test_tokens_issue_verify_revoke_list_and_expire(backend):
    store = backend.token_store()
    try:
        token, info = await store.issue(ttl=3600, label="strategy-a")
        assert (await store.verify(token)).label == "strategy-a"
        assert await store.verify(token + "x") is None
        listed = await store.list()
        assert [i.label for i in listed] == ["strategy-a"] and listed[0].last_used_at is not None
        assert all(token not in repr(i) for i in listed)
        assert await store.revoke(token) is True
        assert await store.verify(token) is None and await store.revoke(token) is False

        short, _ = await store.issue(ttl=3600, label="short")
        assert await store.revoke_id("0" * 3) is False  # never a guess
        by_id = next(i.id for i in await store.list() if i.label == "short")
        assert await store.revoke_id(by_id) is True and await store.verify(short) is None
    finally:
        await store.close()


async def test_tokens_keep_the_accounts_they_were_issued_for(backend):
    store = backend.token_store()
    try:
        scoped, info = await store.issue(ttl=3600, label="bots", accounts=("Bob", "alice", "bob"))
        assert info.accounts == ("alice", "bob")
        default_only, _ = await store.issue(ttl=3600, label="plain")
        every, _ = await store.issue(ttl=3600, label="all", accounts=("*",))
        assert (await store.verify(scoped)).scope == frozenset({"alice", "bob"})
        assert (await store.verify(default_only)).scope == frozenset()  # the default account only
        assert (await store.verify(every)).scope is None  # every account
        assert {i.label: i.accounts for i in await store.list()} == {
            "bots": ("alice", "bob"),
            "plain": (),
            "all": ("*",),
        }
        with pytest.raises(ValueError, match="account"):
            await store.issue(ttl=3600, accounts=("no spaces",))
    finally:
        await store.close()


async def test_tokens_keep_their_scopes_and_refuse_unknown_ones(backend):
    store = backend.token_store()
    try:
        ops, info = await store.issue(ttl=3600, label="ops", accounts=("bob",), scopes=("control", "control"))
        assert info.scopes == ("control",)
        plain, plain_info = await store.issue(ttl=3600, label="plain")
        assert plain_info.scopes == ()
        assert (await store.verify(ops)).scopes == ("control",) and (await store.verify(plain)).scopes == ()
        assert {i.label: i.scopes for i in await store.list()} == {"ops": ("control",), "plain": ()}
        with pytest.raises(ValueError, match="unknown scope.*'admin'.*known scopes are control"):
            await store.issue(ttl=3600, label="nope", scopes=("admin",))
        assert [i.label for i in await store.list()] == ["ops", "plain"]  # nothing stored for the refused one
    finally:
        await store.close()


async def test_a_redis_token_stored_before_scopes_reads_as_no_scopes(backend):
    if not backend.is_redis:
        pytest.skip("the SQLite file from before scopes: tests/unit/core/store/test_tokens.py")
    store = backend.token_store()
    try:
        token, info = await store.issue(ttl=3600, label="old", scopes=("control",))
        digest = next(d for d in await store.client.smembers(store._index) if d.startswith(info.id))
        await store.client.hdel(store._key(digest), "scopes")  # a hash as the version before scopes wrote it
        assert (await store.verify(token)).scopes == ()
    finally:
        await store.close()


async def test_expired_token_is_refused_and_removed(backend):
    store = backend.token_store()
    store._clock = lambda: 1_000.0  # issued long ago
    try:
        token, _ = await store.issue(ttl=10, label="old")
        store._clock = time.time
        assert await store.verify(token) is None
        assert [i.label for i in await store.list()] == []
    finally:
        await store.close()


async def test_rate_store_counts_a_moving_window_refunds_and_expiring_counters(backend):
    store = backend.rate_store(durable=True)  # limits' storage interface (core.web.ratelimit)
    assert [await store.acquire_entry("k", 2, 60) for _ in range(3)] == [True, True, False]
    start, count = await store.get_moving_window("k", 2, 60)
    assert count == 2 and time.time() - 5 < start <= time.time()
    await store.refund("k")
    assert await store.acquire_entry("k", 2, 60) is True
    assert await store.acquire_entry("other", 2, 60) is True
    assert await store.incr("c", 60) == 1
    assert await store.incr("c", 60) == 2
    assert (await store.get("c"), await store.get("absent")) == (2, 0)


def _admit(journal, alert_id=None, body_hash="b" * 64, at=None, lane="acct|BTC/USDT", owner="w1", window=60.0):
    at = at or time.time()
    return journal.admit(
        explicit_id=alert_id,
        body_hash=body_hash,
        received_at=at,
        dedup_window=window,
        principal="hmac",
        account="acct",
        symbol="BTCUSDT",
        side="buy",
        amount="1",
        payload={"alert_id": alert_id},
        owner=owner,
        lane=lane,
    )


async def test_journal_admission_dedups_explicit_ids_and_resends_atomically(backend):
    journal = backend.journal()
    try:
        results = await asyncio.gather(*(_admit(journal, "same-id") for _ in range(8)))
        assert sorted(r.duplicate for r in results) == [False] + [True] * 7
        assert len({r.alert_id for r in results}) == 1
        t = time.time()
        first = await _admit(journal, body_hash="c" * 64, at=t)
        resend = await _admit(journal, body_hash="c" * 64, at=t + 5)
        later = await _admit(journal, body_hash="c" * 64, at=t + 120)
        assert not first.duplicate and resend.duplicate and resend.alert_id == first.alert_id
        assert not later.duplicate and later.alert_id != first.alert_id
        assert later.seq > first.seq
        row = await journal.get(first.alert_id)
        assert row["duplicates"] == 1 and row["state"] == "received"
    finally:
        await journal.aclose()


async def test_journal_states_orders_and_lanes(backend):
    journal = backend.journal()
    try:
        a = await _admit(journal, "lane-a")
        b = await _admit(journal, "lane-b")
        assert await journal.earlier_unfinished("acct|BTC/USDT", b.seq) is True
        assert await journal.earlier_unfinished("acct|BTC/USDT", a.seq) is False
        attempt = await journal.order_started(
            "lane-a", client_order_id="tvabc", account="acct", exchange="binance", route="rest", request={"amount": "1"}
        )
        await journal.order_finished(
            attempt, "filled", response={"order_id": "1"}, alert_id="lane-a", alert_state="filled", http_status=200
        )
        assert await journal.earlier_unfinished("acct|BTC/USDT", b.seq) is False
        row = await journal.get("lane-a")
        assert row["state"] == "filled" and row["result"] == {"order_id": "1"}
        assert [(o["state"], o["client_order_id"]) for o in row["orders"]] == [("filled", "tvabc")]
        await journal.set_state(
            "lane-b", "rejected", error_code="amount_below_minimum", error_message="too small", http_status=422
        )
        row = await journal.get("lane-b")
        assert (row["state"], row["error_code"], row["http_status"]) == ("rejected", "amount_below_minimum", 422)
        stats = await journal.stats()
        assert stats["alerts"]["filled"] == 1 and stats["alerts"]["rejected"] == 1
        listed = await journal.list(limit=10)
        assert {r["alert_id"] for r in listed} == {"lane-a", "lane-b"}
    finally:
        await journal.aclose()


async def test_orphans_of_a_dead_worker_are_claimed_by_exactly_one_worker(backend):
    journal = backend.journal()
    try:
        await journal.heartbeat("alive")
        await _admit(journal, "of-alive", owner="alive")
        await _admit(journal, "of-dead", owner="dead")
        done = await _admit(journal, "finished", owner="dead")
        await journal.set_state(done.alert_id, "filled")
        for worker in ("w-a", "w-b", "w-c"):  # claimers heartbeat first, as the engine does
            await journal.heartbeat(worker)
        claims = await asyncio.gather(journal.claim_orphans("w-a", 0.5), journal.claim_orphans("w-b", 0.5))
        claimed = [row["alert_id"] for rows in claims for row in rows]
        assert claimed == ["of-dead"]
        assert (await journal.get("of-dead"))["owner"] == ("w-a" if claims[0] else "w-b")
        await journal.retire("alive")  # a clean stop hands its alerts over at once
        assert [r["alert_id"] for r in await journal.claim_orphans("w-c", 0.5)] == ["of-alive"]
    finally:
        await journal.aclose()
