"""The journal writes an alert's execution leaves behind it: queued, never waited for.

The admission is the one durable write before an order is sent. What follows — the order
attempts and the alert's final state — is written after the exchange answered, through
``Journal.record``: grouped with other writes (SQLite: the next commit; Redis: the next
pipeline), and not awaited by the request, which is answered as soon as the outcome is
known. Until a write is committed its alert's outcome stays here (``outcome``), so a
duplicate is answered from memory; the journal's own reads see its queued writes.

The writes of one alert are committed in the order they were queued (the next one is sent
once the one before it is committed). A write that meets a state-store outage is sent
again, with backoff, until the store is back (one error logged per wait); any other
failure is logged (the alert then stays unfinished in the journal: after a restart it is
reconciled by its client order id). Shutdown waits for every write (``flush``),
and a reader of one alert (``GET /alerts/<id>``) for that alert's (``written``: a write
waiting out an outage's backoff is tried again at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.errors import StoreUnavailable
from core.pipeline.outcomes import Outcome
from core.store.journal import AttemptRecord
from core.store.protocols import Journal

log = logging.getLogger(__name__)

FIRST_DELAY = 0.1
MAX_DELAY = 5.0


@dataclass
class _Write:
    attempts: Sequence[AttemptRecord]
    fields: dict[str, Any]
    delay: float = 0.0  # before the next try, after an outage
    waiting: bool = False  # an outage was logged for it
    done: asyncio.Future[None] | None = field(default=None)  # for settled(): made when asked
    retry: asyncio.TimerHandle | None = None  # its next try, after an outage


class PendingWrites:
    """The queued writes of every alert (see the module docstring); ``journal`` returns
    the journal to write to."""

    def __init__(self, journal: Callable[[], Journal | None], *, first_delay: float = FIRST_DELAY):
        self._journal = journal
        self._first_delay = first_delay
        self._queues: dict[str, deque[_Write]] = {}
        self._outcomes: dict[str, Outcome] = {}
        self._idle: asyncio.Event | None = None

    def __len__(self) -> int:
        return len(self._queues)

    def outcome(self, alert_id: str) -> Outcome | None:
        """The outcome of an alert whose final write is not committed yet."""
        return self._outcomes.get(alert_id)

    def pending(self, alert_id: str) -> bool:
        return alert_id in self._queues

    def record(
        self,
        alert_id: str,
        attempts: Sequence[AttemptRecord] = (),
        *,
        outcome: Outcome | None = None,
        **fields: Any,
    ) -> None:
        """Queue ``Journal.record(alert_id, attempts, **fields)``; ``outcome``: the answer
        the alert ended with, kept until the write is committed."""
        if outcome is not None:
            self._outcomes[alert_id] = outcome
        write = _Write(attempts, fields)
        queue = self._queues.get(alert_id)
        if queue is not None:
            queue.append(write)  # sent once the one before it is committed
            return
        self._queues[alert_id] = deque([write])
        if self._idle is not None:
            self._idle.clear()
        self._send(alert_id, write)

    def expedite(self) -> None:
        """Commit what is queued now (someone waits for it)."""
        journal = self._journal()
        if journal is not None:
            journal.expedite()

    async def settled(self) -> None:
        """Wait until every write queued so far is committed (or failed): a reader of another
        connection (the dashboard's) then sees every outcome answered before."""
        waits = []
        for queue in self._queues.values():
            last = queue[-1]  # an alert's writes are committed in order: its last one is enough
            if last.done is None:
                last.done = asyncio.get_running_loop().create_future()
            waits.append(last.done)
        if waits:
            self.expedite()
            await asyncio.wait(waits)

    async def written(self, alert_id: str, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for ``alert_id``'s queued writes, a write waiting to
        be tried again after an outage tried now: a reader of the journal (``GET
        /alerts/<id>``) then sees the outcome the alert was answered with."""
        queue = self._queues.get(alert_id)
        if queue is None:
            return
        last = queue[-1]
        if last.done is None:
            last.done = asyncio.get_running_loop().create_future()
        head = queue[0]
        if head.retry is not None:  # the store may be back: no need to wait out the backoff
            head.retry.cancel()
            self._retried(alert_id, head)
        self.expedite()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(last.done), timeout)

    async def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every queued write; whether all were committed."""
        if not self._queues:
            return True
        if self._idle is None:
            self._idle = asyncio.Event()
        self.expedite()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _send(self, alert_id: str, write: _Write) -> None:
        journal = self._journal()
        try:
            if journal is None:
                raise StoreUnavailable("the journal is closed")
            future = journal.record(alert_id, write.attempts, **write.fields)
        except StoreUnavailable as exc:
            self._retry(alert_id, write, exc)
            return
        except Exception as exc:
            self._done(alert_id, exc)
            return
        future.add_done_callback(lambda f: self._sent(alert_id, write, f))

    def _sent(self, alert_id: str, write: _Write, future: asyncio.Future[None]) -> None:
        if future.cancelled():
            self._done(alert_id, asyncio.CancelledError())
            return
        error = future.exception()
        if isinstance(error, StoreUnavailable):
            self._retry(alert_id, write, error)
            return
        if write.waiting:
            log.info("alert %s: its journal write went through after the outage", alert_id)
        self._done(alert_id, error)

    def _retry(self, alert_id: str, write: _Write, error: StoreUnavailable) -> None:
        if not write.waiting:
            log.error("alert %s: its journal write waits for the state store: %s", alert_id, error.message)
            write.waiting = True
        write.delay = min(write.delay * 2, MAX_DELAY) if write.delay else self._first_delay
        write.retry = asyncio.get_running_loop().call_later(write.delay, self._retried, alert_id, write)

    def _retried(self, alert_id: str, write: _Write) -> None:
        write.retry = None
        self._send(alert_id, write)

    def _done(self, alert_id: str, error: BaseException | None) -> None:
        if error is not None:
            log.error(
                "alert %s: its outcome could not be journaled (%s: %s); it stays unfinished in the journal "
                "and is reconciled by its client order id after a restart",
                alert_id,
                type(error).__name__,
                error,
            )
        queue = self._queues[alert_id]
        written = queue.popleft()
        if written.done is not None and not written.done.done():
            written.done.set_result(None)
        if queue:
            self._send(alert_id, queue[0])
            return
        del self._queues[alert_id]
        self._outcomes.pop(alert_id, None)
        if not self._queues and self._idle is not None:
            self._idle.set()
