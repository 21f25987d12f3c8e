"""What the rest of the router may ask of shared state: one protocol per store.

``core.store.factory.StateBackend`` opens them on SQLite (``core.store.sqlite``) or Redis
(``core.store.redis``); ``tests/unit/core/store/test_contract_*.py`` holds both backends to
the same behaviour. A store of either backend may raise ``core.errors.StoreUnavailable``
(503: nothing was done; a resend is safe) when it cannot be reached.

* ``Journal`` — the journal of record (``core.store.journal``): admission, deduplication
  and replay keys, order attempts, outcomes, worker heartbeats, recovery of orphans.
* ``TokenStore`` — token mode's tokens, hashed (``core.store.tokens``).
* ``RiskStore`` — the kill switch's halts and flattens, order counts, day baselines
  (``core.store.risk``).
* ``RateStore`` — theoretical arrival times of the rate limiter (``core.web.ratelimit``).
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, Protocol

from core.store.journal import Admission, AdmissionRequest, AlertRow, AttemptRecord, JournalStats, OrderAttempt
from core.store.risk import FlattenRecord, HaltRecord
from core.store.tokens import TokenInfo

# One GCRA step of the rate limiter over a key: (store key, inverse = period/count, period).
RateEntry = tuple[str, float, float]


class Journal(Protocol):
    """Every accepted alert and every order attempt, durably; see ``core.store.journal``.

    Each write is committed (and, on Redis, acknowledged) when the call returns — except
    ``record``'s, committed when the future it returns is done. States are
    ``core.store.states.AlertState`` values; another is a ``ValueError``.
    """

    async def ping(self) -> None:
        """Reach the store (health checks); raises when it cannot."""

    async def aclose(self) -> None:
        """Release what this journal opened (a shared Redis client stays open)."""

    def admit(
        self, request: AdmissionRequest, *, then: Callable[[Admission], None] | None = None, patient: bool = False
    ) -> asyncio.Future[Admission]:
        """Record a new alert (state ``received``), or return the one it duplicates; atomic
        across processes and machines sharing the store. ``request`` holds what is recorded.

        An explicit id is a duplicate of the same id seen at any time the journal keeps it.
        An alert without one is a duplicate of an alert with the same ``body_hash``
        received within ``dedup_window`` seconds (TradingView's resends); later, it is new
        (its id: ``core.store.journal.new_alert_id``). A new alert gets the next arrival
        number (``Admission.seq``) of the whole deployment, and keeps ``client_order_id``
        as its order's intent.

        ``replay_key``: the request's (an authenticated signature's). If it is remembered
        (recorded before and not expired) nothing is admitted (``Admission.replayed``);
        else it is remembered until ``replay_expires_at`` (unix seconds; None: for ever)
        in the same step as the alert or its duplicate.

        The returned future is done once the admission is committed. ``then(admission)``
        is called on the loop just before that — also when the future was cancelled
        meanwhile (its caller is gone), never when the admission failed — and the
        ``then`` of one process's admissions run in the order they were committed: what
        must follow a committed admission whatever happens to its request (starting the
        alert's execution, ``core.pipeline.admission``) runs there, with no await in
        between. An exception of ``then`` is the future's.

        ``patient``: the alert waits behind others of its market anyway, so its admission
        need not commit at once: a store may hold it to share a later commit (SQLite: with
        the next write waited for, within a few milliseconds, or at ``expedite``). Nothing
        else changes: the future and ``then`` still come only once it is committed.
        """

    async def set_state(
        self,
        alert_id: str,
        state: str,
        *,
        result: dict[str, Any] | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        http_status: int | None = None,
    ) -> None:
        """Move an alert to ``state``; ``result`` and ``http_status`` are kept when not given,
        the error code and message replaced (the message redacted)."""

    def record(
        self,
        alert_id: str,
        attempts: Sequence[AttemptRecord] = (),
        *,
        state: str | None = None,
        result: dict[str, Any] | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        http_status: int | None = None,
    ) -> asyncio.Future[None]:
        """Queue, without waiting: append ``attempts`` to the alert's (numbered after those
        recorded) and, with ``state``, move it there as ``set_state`` does — one step,
        committed with other queued writes (SQLite: with the next write waited for, or
        within a few milliseconds; Redis: in the next pipeline). The future is done once it
        is committed (its exception if it failed); ``expedite`` commits what is queued now."""

    def expedite(self) -> None:
        """Commit the writes ``record`` queued, and the patient admissions, now rather than
        with the next write."""

    async def remember_replay(self, key: str, expires_at: float | None) -> bool:
        """Record a replay key outside an admission (a signed read or kill-switch request):
        ``True`` when it was not remembered (it is now, until ``expires_at``; None: for
        ever), ``False`` when it was. Atomic across the processes sharing the store."""

    async def order_started(
        self,
        alert_id: str,
        *,
        client_order_id: str,
        account: str,
        exchange: str,
        route: str,
        request: dict[str, Any],
    ) -> OrderAttempt:
        """Record the next order attempt of an alert (state ``submitting``, and the alert's)."""

    async def order_finished(
        self,
        attempt: OrderAttempt,
        state: str,
        *,
        response: dict[str, Any] | None = None,
        error: str | None = None,
        alert_id: str | None = None,
        alert_state: str | None = None,
        error_code: str | None = None,
        http_status: int | None = None,
    ) -> None:
        """Record an attempt's end and, with ``alert_state``, the alert's (``alert_id``:
        the attempt's alert unless given), in one step. The alert keeps ``response`` as
        its result only when ``alert_state`` is a success state, ``error`` as its message
        only with an ``error_code``."""

    async def heartbeat(self, worker_id: str) -> None:
        """This worker is alive (``claim_orphans`` leaves its alerts alone)."""

    async def retire(self, worker_id: str) -> None:
        """A worker that stops cleanly hands its unfinished alerts over at once."""

    async def claim_orphans(self, worker_id: str, stale_after: float) -> builtins.list[AlertRow]:
        """Take over the unfinished alerts whose owner is gone (no heartbeat for
        ``stale_after`` seconds, or retired), oldest first: each claimed by exactly one
        worker. Rows that cannot be read are quarantined instead of returned."""

    async def quarantine(self, alert_id: str, reason: str) -> None:
        """Set an unfinished alert aside (state and error code ``quarantined``): it cannot
        be read or recovered. Logged."""

    async def quarantined_count(self) -> int:
        """How many alerts are quarantined."""

    async def reopen(self, alert_id: str, owner: str) -> AlertRow | None:
        """A resend of an alert that failed with nothing sent (answered 5xx) is executed
        again: back to ``received`` for ``owner``. Of concurrent resends exactly one gets
        the row; the others (and any alert in another state) ``None``."""

    async def earlier_unfinished(self, lane: str, seq: int, owner: str | None = None) -> bool:
        """Whether an alert that arrived before ``seq`` in ``lane`` still holds the lane,
        in any worker but ``owner`` (whose alerts its own lanes order): the cross-process
        half of per-lane ordering. Answers from what is committed."""

    async def get(self, alert_id: str) -> AlertRow | None:
        """The alert with its order attempts; never raises on a row that cannot be decoded
        (the row carries ``unreadable``)."""

    async def list(self, limit: int = 50, state: str | None = None) -> builtins.list[AlertRow]:
        """The newest alerts (in ``state``), newest first, without their order attempts."""

    async def timings(self, since: float, limit: int = 5000) -> builtins.list[dict[str, Any]]:
        """The newest alerts received since ``since`` (at most ``limit``), oldest first:
        ``alert_id``, ``account``, ``state``, ``received_at``, ``updated_at`` and ``orders``
        (their ``alert_id``, ``account``, ``state``, ``started_at``, ``finished_at``)."""

    async def stats(self) -> JournalStats:
        """Alerts per state, and how many still hold their lane."""


class TokenStore(Protocol):
    """Token mode's tokens, stored hashed (``core.store.tokens``)."""

    async def issue(
        self,
        *,
        ttl: float,
        label: str | None = None,
        token: str | None = None,
        accounts: tuple[str, ...] = (),
        scopes: tuple[str, ...] = (),
    ) -> tuple[str, TokenInfo]:
        """Store a new token (``token`` imports a given one) valid for ``ttl`` seconds and
        for ``accounts`` (none: the default account; ``*``: every one), with ``scopes``
        (``KNOWN_SCOPES``); the token and its info. ``ValueError`` for what
        ``check_issue`` and ``check_scopes`` refuse (nothing is stored then)."""

    async def verify(self, token: str) -> TokenInfo | None:
        """The token's info if it is known and not expired (its last use recorded);
        ``None`` otherwise. An expired token is deleted."""

    async def revoke(self, token: str) -> bool:
        """Delete the token; whether it existed."""

    async def revoke_id(self, token_id: str) -> bool:
        """Delete the token with this id (as listed); whether exactly one had it."""

    async def close(self) -> None:
        """Release what this store opened."""

    async def list(self) -> builtins.list[TokenInfo]:
        """Every stored token, oldest first (expired ones not yet removed may be included)."""


class RiskStore(Protocol):
    """Halts, flattens, order counts and day baselines (``core.store.risk``)."""

    async def halts(self) -> dict[str, HaltRecord]:
        """Every halt, by account (``*``: every account)."""

    async def set_halt(self, account: str, record: HaltRecord) -> None:
        """Halt ``account`` (replacing its halt)."""

    async def clear_halt(self, account: str | None) -> builtins.list[str]:
        """Lift the halt of ``account`` (``None``: every halt); the accounts lifted."""

    async def save_flatten(self, record: FlattenRecord) -> None:
        """Store a flatten's record (by ``flatten_id``), replacing its previous one."""

    async def flattens(self, *, open_only: bool = False, limit: int = 20) -> builtins.list[FlattenRecord]:
        """The newest flattens first (``open_only``: pending or running)."""

    async def claim_flatten(self, flatten_id: str, owner: str, stale_after: float) -> FlattenRecord | None:
        """Take (or renew) the lease of an open flatten when nobody holds it, ``owner``
        holds it, or its holder has not renewed it for ``stale_after`` seconds; atomic.
        The record as claimed, or ``None``."""

    async def count_order(self, key: str, limit: int, window: float) -> tuple[bool, int]:
        """Count one order of ``key`` if fewer than ``limit`` were counted in the last
        ``window`` seconds, atomically: (counted, how many there were before)."""

    async def recent_orders(self, key: str, window: float) -> int:
        """How many orders of ``key`` were counted in the last ``window`` seconds."""

    async def baseline(self, account: str, day: str, equity: Decimal) -> Decimal:
        """The account's equity baseline of ``day`` (``YYYY-MM-DD``): ``equity`` if it is
        the first one given that day, else the first one."""

    async def aclose(self) -> None:
        """Release what this store opened."""


class RateStore(Protocol):
    """The rate limiter's counters (``core.web.ratelimit``): a ``limits`` storage with
    moving-window support (``acquire_entry`` checks and charges one window in one atomic
    step; ``get_moving_window`` reads it; ``incr``/``get`` are plain expiring counters) plus
    what limits' interface lacks: give back the newest entry of a window, and close."""

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool: ...

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]: ...

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int: ...

    async def get(self, key: str) -> int: ...

    async def refund(self, key: str) -> None: ...

    async def after_serving(self) -> None: ...
