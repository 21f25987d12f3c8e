"""A journal whose calls wait out a state-store outage: for execution, where an alert already
accepted must have every step recorded before it goes on.

Every call is retried while it raises ``StoreUnavailable`` (Redis unreachable), with
exponential backoff (0.1 s doubling to 5 s) and one error logged per wait; it never gives
up by itself. Any other exception propagates at once, and a cancellation (shutdown) ends
the wait. ``aclose`` is not retried.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from core.errors import StoreUnavailable
from core.store.journal import Admission, AlertRow, JournalStats, OrderAttempt
from core.store.protocols import Journal

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_DELAY = 0.1
MAX_DELAY = 5.0


class RetryingJournal:
    """``journal`` (any ``Journal``) with every call retried while the store is unavailable."""

    def __init__(
        self,
        journal: Journal,
        *,
        first_delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ):
        self.journal = journal
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._sleep = sleep  # None: asyncio.sleep

    async def _retry(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        delay = self.first_delay
        while True:
            try:
                return await call()
            except StoreUnavailable as exc:
                log.error("journal %s waits for the state store: %s", what, exc.message)
                await (self._sleep or asyncio.sleep)(delay)
                delay = min(delay * 2, self.max_delay)

    async def ping(self) -> None:
        await self._retry("ping", self.journal.ping)

    async def aclose(self) -> None:
        await self.journal.aclose()

    async def admit(
        self,
        *,
        explicit_id: str | None,
        body_hash: str,
        received_at: float,
        dedup_window: float,
        principal: str | None,
        account: str,
        symbol: str,
        side: str,
        amount: str,
        payload: dict[str, Any],
        owner: str | None = None,
        lane: str = "",
        authenticated_at: float | None = None,
    ) -> Admission:
        return await self._retry(
            "admit",
            lambda: self.journal.admit(
                explicit_id=explicit_id,
                body_hash=body_hash,
                received_at=received_at,
                dedup_window=dedup_window,
                principal=principal,
                account=account,
                symbol=symbol,
                side=side,
                amount=amount,
                payload=payload,
                owner=owner,
                lane=lane,
                authenticated_at=authenticated_at,
            ),
        )

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
        await self._retry(
            "set_state",
            lambda: self.journal.set_state(
                alert_id,
                state,
                result=result,
                error_code=error_code,
                error_message=error_message,
                http_status=http_status,
            ),
        )

    async def order_started(
        self, alert_id: str, *, client_order_id: str, account: str, exchange: str, route: str, request: dict[str, Any]
    ) -> OrderAttempt:
        return await self._retry(
            "order_started",
            lambda: self.journal.order_started(
                alert_id,
                client_order_id=client_order_id,
                account=account,
                exchange=exchange,
                route=route,
                request=request,
            ),
        )

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
        await self._retry(
            "order_finished",
            lambda: self.journal.order_finished(
                attempt,
                state,
                response=response,
                error=error,
                alert_id=alert_id,
                alert_state=alert_state,
                error_code=error_code,
                http_status=http_status,
            ),
        )

    async def heartbeat(self, worker_id: str) -> None:
        await self._retry("heartbeat", lambda: self.journal.heartbeat(worker_id))

    async def retire(self, worker_id: str) -> None:
        await self._retry("retire", lambda: self.journal.retire(worker_id))

    async def claim_orphans(self, worker_id: str, stale_after: float) -> builtins.list[AlertRow]:
        return await self._retry("claim_orphans", lambda: self.journal.claim_orphans(worker_id, stale_after))

    async def quarantine(self, alert_id: str, reason: str) -> None:
        await self._retry("quarantine", lambda: self.journal.quarantine(alert_id, reason))

    async def quarantined_count(self) -> int:
        return await self._retry("quarantined_count", self.journal.quarantined_count)

    async def reopen(self, alert_id: str, owner: str) -> AlertRow | None:
        return await self._retry("reopen", lambda: self.journal.reopen(alert_id, owner))

    async def earlier_unfinished(self, lane: str, seq: int) -> bool:
        return await self._retry("earlier_unfinished", lambda: self.journal.earlier_unfinished(lane, seq))

    async def get(self, alert_id: str) -> AlertRow | None:
        return await self._retry("get", lambda: self.journal.get(alert_id))

    async def list(self, limit: int = 50, state: str | None = None) -> builtins.list[AlertRow]:
        return await self._retry("list", lambda: self.journal.list(limit, state))

    async def timings(self, since: float, limit: int = 5000) -> builtins.list[dict[str, Any]]:
        return await self._retry("timings", lambda: self.journal.timings(since, limit))

    async def stats(self) -> JournalStats:
        return await self._retry("stats", self.journal.stats)
