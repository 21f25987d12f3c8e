"""Replay keys in the journal, held to the same behaviour on SQLite and Redis: a key is
remembered in the same step as the admission it came with (a conflict admits nothing), or
on its own (``remember_replay``); accepted once, atomically, even concurrently, until it
expires; ``None`` is for ever; shared by every journal of a deployment."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from core.store.protocols import Journal
from tests.conftest import STATE_BACKENDS
from tests.unit.core.store.test_contract_journal import admit

pytestmark = pytest.mark.parametrize("state_url", STATE_BACKENDS, indirect=True)


@pytest.fixture
async def journal(backend) -> AsyncIterator[Journal]:
    journal = backend.journal()
    yield journal
    await journal.aclose()


async def test_a_key_is_accepted_once_even_concurrently(journal):
    results = await asyncio.gather(*(journal.remember_replay("sig-1", time.time() + 60) for _ in range(10)))
    assert sorted(results) == [False] * 9 + [True]
    assert await journal.remember_replay("sig-2", time.time() + 60) is True  # per key


async def test_a_key_without_expiry_is_remembered_for_ever(journal):
    assert await journal.remember_replay("forever", None) is True
    assert await journal.remember_replay("forever", None) is False
    assert await journal.remember_replay("forever", time.time() + 60) is False


async def test_a_key_is_unseen_again_once_it_expires(journal):
    assert await journal.remember_replay("short", time.time() + 0.2) is True
    assert await journal.remember_replay("short", time.time() + 0.2) is False
    deadline = time.monotonic() + 5
    while not await journal.remember_replay("short", time.time() + 60):  # the expiry passes; then it is new
        assert time.monotonic() < deadline, "an expired key must be accepted again"
        await asyncio.sleep(0.05)
    assert await journal.remember_replay("short", time.time() + 60) is False  # and remembered anew


async def test_a_key_already_expired_is_not_remembered(journal):
    assert await journal.remember_replay("stale", time.time() - 1) is True
    assert await journal.remember_replay("stale", time.time() - 1) is True
    assert await journal.remember_replay("stale", time.time() + 60) is True


async def test_journals_of_one_deployment_share_their_keys(backend, journal):
    other = backend.journal()  # another worker's
    try:
        assert await journal.remember_replay("shared", None) is True
        assert await other.remember_replay("shared", None) is False
        assert (await admit(other, "shared-1", replay_key="shared")).replayed
    finally:
        await other.aclose()


async def test_an_admission_remembers_its_key_and_a_replay_admits_nothing(journal):
    first = await admit(journal, "r-1", replay_key="sig-r", replay_expires_at=time.time() + 60)
    assert not first.replayed and not first.duplicate and first.seq > 0
    # The same request again, or its signature on another id: refused, nothing admitted or counted.
    again = await admit(journal, "r-1", replay_key="sig-r")
    other = await admit(journal, "r-other", replay_key="sig-r")
    assert again.replayed and other.replayed and not again.duplicate and again.alert_id == ""
    assert await journal.get("r-other") is None and (await journal.get("r-1"))["duplicates"] == 0
    assert await journal.remember_replay("sig-r", None) is False
    # A duplicate with a new signature is answered as one, and its signature remembered too.
    resend = await admit(journal, "r-1", replay_key="sig-r2")
    assert resend.duplicate and not resend.replayed and resend.state == "received"
    assert (await admit(journal, "r-1", replay_key="sig-r2")).replayed


async def test_concurrent_admissions_of_one_key_admit_exactly_one_alert(journal):
    results = await asyncio.gather(*(admit(journal, f"race-{i}", replay_key="sig-race") for i in range(8)))
    admitted = [r for r in results if not r.replayed]
    assert len(admitted) == 1 and not admitted[0].duplicate
    rows = [await journal.get(f"race-{i}") for i in range(8)]
    assert len([r for r in rows if r is not None]) == 1


async def test_an_expired_key_is_not_a_replay(journal):
    assert not (await admit(journal, "e-1", replay_key="sig-e", replay_expires_at=time.time() - 1)).replayed
    assert not (await admit(journal, "e-2", replay_key="sig-e", replay_expires_at=time.time() + 60)).replayed
    assert (await admit(journal, "e-3", replay_key="sig-e")).replayed
