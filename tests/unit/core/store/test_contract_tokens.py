"""The ``TokenStore`` protocol, held to the same behaviour on SQLite and Redis: issue,
verify (recording the last use), revoke by token and by id, expiry, accounts and scopes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from core.store.protocols import TokenStore
from core.store.tokens import hash_token, new_token
from tests.conftest import STATE_BACKENDS

pytestmark = pytest.mark.parametrize("state_url", STATE_BACKENDS, indirect=True)


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(backend) -> AsyncIterator[TokenStore]:
    store = backend.token_store()
    yield store
    await store.close()


async def test_issue_verify_and_list_without_the_token(store):
    token, info = await store.issue(ttl=3600, label="strategy-a")
    assert info.id == hash_token(token)[:12] and info.label == "strategy-a" and info.last_used_at is None
    assert info.expires_at == pytest.approx(info.created_at + 3600)
    verified = await store.verify(token)
    assert verified is not None and verified.id == info.id and verified.last_used_at is not None
    assert await store.verify(token + "x") is None and await store.verify("") is None
    listed = await store.list()
    assert [i.label for i in listed] == ["strategy-a"] and listed[0].last_used_at == verified.last_used_at
    assert all(token not in repr(i) for i in listed)


async def test_an_imported_token_is_the_one_stored(store):
    given = new_token()
    token, info = await store.issue(ttl=60, token=given)
    assert token == given and info.id == hash_token(given)[:12] and info.label is None
    assert await store.verify(given) is not None


async def test_tokens_are_listed_oldest_first(store):
    clock = FakeClock()
    store._clock = clock  # both stores take their clock as an argument; set here on the opened one
    for label in ("first", "second", "third"):
        await store.issue(ttl=3600, label=label)
        clock.now += 1
    assert [i.label for i in await store.list()] == ["first", "second", "third"]


async def test_revocation_by_token_and_by_id(store):
    token, _ = await store.issue(ttl=3600, label="a")
    other, other_info = await store.issue(ttl=3600, label="b")
    assert await store.revoke(token) is True
    assert await store.revoke(token) is False and await store.verify(token) is None
    guesses = ("0" * 3, other_info.id[:6], other_info.id.upper(), other_info.id + "0", "zz")
    # An id of digits only is its own upper case (one id in about 280): then that is no guess.
    for guess in (g for g in guesses if g != other_info.id):
        assert await store.revoke_id(guess) is False  # never a guess
    assert await store.verify(other) is not None
    assert await store.revoke_id(other_info.id) is True and await store.verify(other) is None
    assert await store.revoke_id(other_info.id) is False
    assert await store.list() == []


async def test_an_expired_token_is_refused_and_removed(store):
    clock = FakeClock()
    store._clock = clock
    token, _ = await store.issue(ttl=60, label="old")
    clock.now += 59
    assert await store.verify(token) is not None
    clock.now += 1
    assert await store.verify(token) is None
    assert [i.label for i in await store.list()] == []


@pytest.mark.parametrize("ttl", [0, -1])
async def test_a_lifetime_must_be_positive(store, ttl):
    with pytest.raises(ValueError, match="ttl must be a positive"):
        await store.issue(ttl=ttl)
    assert await store.list() == []


@pytest.mark.parametrize("label", ["", "-x", "a b", "a" * 65, "x\ny", "ünï"])
async def test_bad_labels_are_refused(store, label):
    with pytest.raises(ValueError, match="label"):
        await store.issue(ttl=60, label=label)
    assert await store.list() == []


async def test_tokens_keep_the_accounts_they_were_issued_for(store):
    scoped, info = await store.issue(ttl=3600, label="bots", accounts=("Bob", "alice", "bob"))
    assert info.accounts == ("alice", "bob")
    plain, _ = await store.issue(ttl=3600, label="plain")
    every, _ = await store.issue(ttl=3600, label="all", accounts=("*",))
    assert [(await store.verify(t)).accounts for t in (scoped, plain, every)] == [("alice", "bob"), (), ("*",)]
    assert {i.label: i.accounts for i in await store.list()} == {"bots": ("alice", "bob"), "plain": (), "all": ("*",)}
    with pytest.raises(ValueError, match="account 'no spaces'"):
        await store.issue(ttl=3600, accounts=("no spaces",))


async def test_tokens_keep_their_scopes_and_refuse_unknown_ones(store):
    ops, info = await store.issue(ttl=3600, label="ops", accounts=("bob",), scopes=("control", "control"))
    assert info.scopes == ("control",)
    plain, plain_info = await store.issue(ttl=3600, label="plain")
    assert plain_info.scopes == ()
    assert (await store.verify(ops)).scopes == ("control",) and (await store.verify(plain)).scopes == ()
    assert {i.label: i.scopes for i in await store.list()} == {"ops": ("control",), "plain": ()}
    with pytest.raises(ValueError, match="unknown scope.*'admin'.*known scopes are control"):
        await store.issue(ttl=3600, label="nope", scopes=("admin",))
    assert [i.label for i in await store.list()] == ["ops", "plain"]  # nothing stored for the refused one


async def test_concurrent_verifications_all_succeed(store):
    token, _ = await store.issue(ttl=3600, label="busy")
    results = await asyncio.gather(*(store.verify(token) for _ in range(20)))
    assert all(r is not None and r.label == "busy" for r in results)
    assert (await store.list())[0].last_used_at is not None
    assert time.time() - (await store.list())[0].last_used_at < 60
