"""core.pipeline.writes: the journal writes an execution leaves behind it are queued, never
awaited by the request; an alert's writes commit in order, wait out a state-store outage,
keep the outcome in memory until committed, and shutdown (flush) and readers of another
connection (settled) can wait for them."""

from __future__ import annotations

import asyncio

from core.errors import StoreUnavailable
from core.pipeline.outcomes import Outcome
from core.pipeline.writes import PendingWrites


class FakeJournal:
    """``record`` returns a future the test settles; ``expedite`` is counted."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.futures: list[asyncio.Future[None]] = []
        self.expedited = 0

    def record(self, alert_id, attempts=(), **fields):
        self.calls.append((alert_id, fields))
        future = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future

    def expedite(self) -> None:
        self.expedited += 1


async def turn() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_the_writes_of_one_alert_are_sent_one_after_another_and_the_outcome_kept_until_committed():
    journal = FakeJournal()
    writes = PendingWrites(lambda: journal)
    outcome = Outcome(200, {"status": "filled"}, state="filled")
    writes.record("a-1", state="unknown")
    writes.record("a-1", outcome=outcome, state="filled")
    writes.record("b-1", state="skipped")
    assert [c[0] for c in journal.calls] == ["a-1", "b-1"]  # a-1's second waits for its first
    assert writes.outcome("a-1") is outcome and writes.pending("a-1")
    journal.futures[0].set_result(None)
    await turn()
    assert journal.calls[2] == ("a-1", {"state": "filled"})
    assert writes.outcome("a-1") is outcome  # its final write is not committed yet
    journal.futures[2].set_result(None)
    journal.futures[1].set_result(None)
    await turn()
    assert writes.outcome("a-1") is None and not writes.pending("a-1") and len(writes) == 0


async def test_a_write_waits_out_an_outage_and_is_sent_again(caplog):
    journal = FakeJournal()
    writes = PendingWrites(lambda: journal, first_delay=0.01)
    writes.record("a-1", state="filled")
    journal.futures[0].set_exception(StoreUnavailable("the state store (Redis) is unavailable"))
    for _ in range(50):
        if len(journal.calls) == 2:
            break
        await asyncio.sleep(0.01)  # the retry's backoff, bounded
    assert [c[0] for c in journal.calls] == ["a-1", "a-1"] and writes.pending("a-1")
    assert "waits for the state store" in caplog.text
    journal.futures[1].set_result(None)
    await turn()
    assert not writes.pending("a-1")


async def test_any_other_failure_is_logged_and_the_next_write_goes_on(caplog):
    journal = FakeJournal()
    writes = PendingWrites(lambda: journal)
    writes.record("a-1", state="unknown")
    writes.record("a-1", state="filled")
    journal.futures[0].set_exception(ValueError("disk I/O error"))
    await turn()
    assert len(journal.calls) == 2 and "could not be journaled" in caplog.text


async def test_settled_waits_for_what_was_queued_before_it_and_flush_for_everything():
    journal = FakeJournal()
    writes = PendingWrites(lambda: journal)
    writes.record("a-1", state="filled")
    waiter = asyncio.ensure_future(writes.settled())
    await turn()
    assert not waiter.done() and journal.expedited == 1  # asked to commit now
    writes.record("b-1", state="filled")  # queued after: settled() does not wait for it
    journal.futures[0].set_result(None)
    await asyncio.wait_for(waiter, 1)
    assert writes.pending("b-1")
    assert await writes.flush(timeout=0.05) is False  # b-1 is not committed
    journal.futures[1].set_result(None)
    assert await writes.flush(timeout=1) is True


async def test_a_closed_journal_is_waited_out_like_an_outage():
    journal: FakeJournal | None = None
    writes = PendingWrites(lambda: journal, first_delay=0.01)
    writes.record("a-1", state="filled")
    journal = FakeJournal()
    for _ in range(50):
        if journal.calls:
            break
        await asyncio.sleep(0.01)  # the retry's backoff, bounded
    assert journal.calls == [("a-1", {"state": "filled"})]


async def test_a_reader_waiting_for_an_alert_sends_its_write_again_without_waiting_out_the_backoff():
    # GET /alerts/<id> right after an outage: the write answered "filled" must be journaled
    # before the read, not after a backoff of up to MAX_DELAY.
    journal = FakeJournal()
    writes = PendingWrites(lambda: journal, first_delay=3600)
    writes.record("a-1", outcome=Outcome(200, {"status": "filled"}, state="filled"), state="filled")
    writes.record("b-1", state="skipped")
    journal.futures[0].set_exception(StoreUnavailable("the state store (Redis) is unavailable"))
    await turn()
    assert len(journal.calls) == 2  # a-1 waits an hour for its next try
    reading = asyncio.create_task(writes.written("a-1", timeout=30))
    await turn()
    assert [c[0] for c in journal.calls] == ["a-1", "b-1", "a-1"] and not reading.done()  # tried again at once
    journal.futures[2].set_result(None)
    await asyncio.wait_for(reading, 5)
    assert not writes.pending("a-1") and writes.pending("b-1")  # b-1's own write is not waited for
    await writes.written("nothing-queued", timeout=30)  # nothing to wait for: returns at once
