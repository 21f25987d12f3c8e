"""``RetryingJournal``: every call waits out ``StoreUnavailable`` with capped exponential
backoff, logging each wait; any other error passes at once; a cancellation ends the wait."""

from __future__ import annotations

import asyncio
import inspect
import logging

import pytest

from core.errors import StoreUnavailable
from core.store.protocols import Journal
from core.store.retrying import RetryingJournal
from core.store.sqlite.journal import SqliteJournal
from core.store.states import AlertState


class Flaky:
    """A journal whose ``get`` is unavailable ``outages`` times, then answers."""

    def __init__(self, outages: int, error: Exception | None = None):
        self.outages = outages
        self.error = error
        self.calls = 0
        self.retried = asyncio.Event()

    async def get(self, alert_id: str) -> dict:
        self.calls += 1
        if self.calls == 3:
            self.retried.set()
        if self.error is not None:
            raise self.error
        if self.calls <= self.outages:
            raise StoreUnavailable("the state store (Redis) is unavailable: ConnectionError")
        return {"alert_id": alert_id}


def retrying(journal, waits: list[float]) -> RetryingJournal:
    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    return RetryingJournal(journal, sleep=sleep)


async def test_an_outage_is_waited_out_with_capped_backoff(caplog):
    waits: list[float] = []
    flaky = Flaky(outages=8)
    with caplog.at_level(logging.ERROR, logger="core.store.retrying"):
        assert await retrying(flaky, waits).get("a-1") == {"alert_id": "a-1"}
    assert flaky.calls == 9
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert caplog.text.count("journal get waits for the state store: the state store (Redis) is unavailable") == 8


async def test_any_other_error_passes_at_once():
    waits: list[float] = []
    flaky = Flaky(outages=0, error=ValueError("not an alert state: 'sideways'"))
    with pytest.raises(ValueError, match="sideways"):
        await retrying(flaky, waits).get("a-1")
    assert flaky.calls == 1 and waits == []


async def test_a_cancellation_ends_the_wait():
    flaky = Flaky(outages=10**9)
    task = asyncio.create_task(RetryingJournal(flaky, first_delay=0.001, max_delay=0.001).get("a-1"))
    await asyncio.wait_for(flaky.retried.wait(), timeout=5)  # it is retrying
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_it_implements_every_method_of_the_protocol_with_its_signature():
    protocol = {n for n, v in vars(Journal).items() if inspect.iscoroutinefunction(v)}
    assert protocol
    for name in protocol:
        theirs = inspect.signature(getattr(Journal, name))
        ours = inspect.signature(getattr(RetryingJournal, name))
        assert ours == theirs, name


async def test_it_passes_every_argument_through(tmp_path):
    journal = RetryingJournal(SqliteJournal(tmp_path / "journal.sqlite3"))
    try:
        admission = await journal.admit(
            explicit_id="r-1",
            body_hash="h" * 64,
            received_at=1.0,
            dedup_window=60,
            principal="hmac",
            account="acct",
            symbol="BTCUSDT",
            side="buy",
            amount="1",
            payload={"symbol": "BTCUSDT"},
            owner="w1",
            lane="acct|BTC",
            authenticated_at=0.5,
        )
        attempt = await journal.order_started(
            "r-1", client_order_id="tv-1", account="acct", exchange="paper", route="rest", request={"a": 1}
        )
        await journal.order_finished(
            attempt, "filled", response={"id": 1}, alert_state=AlertState.FILLED, http_status=200
        )
        row = await journal.get("r-1")
        assert (row["state"], row["result"], row["authenticated_at"], row["lane"]) == (
            "filled",
            {"id": 1},
            0.5,
            "acct|BTC",
        )
        assert await journal.earlier_unfinished("acct|BTC", admission.seq + 1) is False
        assert [r["alert_id"] for r in await journal.list(limit=5, state="filled")] == ["r-1"]
        assert (await journal.stats())["alerts"] == {"filled": 1}
        assert await journal.quarantined_count() == 0
    finally:
        await journal.aclose()
