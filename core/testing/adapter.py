"""What a plugin author provides to the conformance kit (``core.testing.conformance``),
and what the kit wraps around it: the ``VenueAdapter`` to subclass, the ``FaultInjector``
that injects the faults the adapter leaves to the kit, the kit's own plugin (``Harness``)
and a case's ``CaseReport``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import OrderRejected, VenueBusy
from core.hooks.manager import hookimpl
from core.pipeline.models import OWNER_PRINCIPAL, Alert, AuthResult, InboundRequest, OrderRequest, OrderResult
from core.trading.execution import Executor, LookupResult

# The account the kit registers the plugin's executor as.
ACCOUNT = "conformance"
# The faults a ``VenueAdapter.inject`` may produce at the venue itself.
FAULTS = ("lose_reply", "not_sent", "reject", "rate_limit")


class ConformanceFailure(AssertionError):
    """A case broke a promise: the message says which case, what happened and the journal."""


class VenueAdapter:
    """What the kit needs of an execution plugin. Subclass it next to your tests.

    Required: ``make_executor`` and ``booked``. Optional: ``alert`` (a BTC/USDT buy by
    default), ``inject`` (faults at the venue), ``refused_alert``, ``close``.
    """

    #: Seconds a case may take before it fails (reconciliation included).
    timeout = 20.0

    async def make_executor(self, data_dir: Path) -> Executor:
        """A new, not yet started executor for account ``ACCOUNT`` (the router starts it)."""
        raise NotImplementedError

    async def booked(self, client_order_id: str) -> int:
        """How many orders the venue holds with this client order id (the ground truth)."""
        raise NotImplementedError

    def alert(self, alert_id: str) -> dict[str, Any]:
        """The payload of an alert the account can trade (a market buy)."""
        return {"symbol": "BTCUSDT", "side": "buy", "amount": "0.001", "price": "50000"}

    def refused_alert(self, alert_id: str) -> dict[str, Any] | None:
        """An alert the venue itself refuses at ``submit`` (e.g. beyond the balance); None:
        the kit raises ``OrderRejected`` in-process instead."""
        return None

    def resting_alert(self, alert_id: str) -> dict[str, Any]:
        """An order that rests at the venue (a limit buy well below the price)."""
        return {**self.alert(alert_id), "order_type": "limit", "price": "40000"}

    def cancel_alert(self, alert_id: str) -> dict[str, Any]:
        """A cancel of an order the venue never had."""
        return {
            **self.alert(alert_id),
            "action": "cancel",
            "order_id": "999999999",
            "side": None,
            "amount": None,
            "price": None,
        }

    async def inject(self, fault: str) -> bool:
        """Make the venue produce ``fault`` (one of ``FAULTS``) on the next order; return
        False to let the kit inject it in-process around ``submit``."""
        return False

    async def close(self) -> None:
        """Undo what the adapter set up (clear the emulator's faults)."""


# ---------------------------------------------------------------- in-process faults


class FaultInjector(Executor):
    """Wraps the plugin's executor; injects the faults the adapter left to the kit."""

    def __init__(self, inner: Executor):
        super().__init__(inner.account, inner.exchange)
        self.inner = inner
        self.route = inner.route
        self.pending: list[str] = []
        self.submits = 0

    async def start(self) -> None:
        await self.inner.start()
        self.inner.ready = True

    async def close(self) -> None:
        await self.inner.close()

    def matches_exchange(self, name: str) -> bool:
        return self.inner.matches_exchange(name)

    def lane_key(self, alert: Alert) -> str:
        return self.inner.lane_key(alert)

    def status(self) -> dict[str, Any]:
        return self.inner.status()

    async def prepare(self, alert: Alert, client_order_id: str) -> OrderRequest:
        return await self.inner.prepare(alert, client_order_id)

    async def submit(self, order: OrderRequest) -> OrderResult:
        self.submits += 1
        fault = self.pending.pop(0) if self.pending else None
        if fault == "lose_reply":
            await self.inner.submit(order)
            raise ConnectionResetError("conformance: the connection dropped after the venue booked the order")
        if fault == "not_sent":
            raise TimeoutError("conformance: no connection to the venue within the timeout")
        if fault == "reject":
            raise OrderRejected("conformance: the venue refused the order")
        if fault == "rate_limit":
            raise VenueBusy("conformance: too many requests")
        return await self.inner.submit(order)

    async def lookup(self, order: OrderRequest) -> LookupResult:
        return await self.inner.lookup(order)


class Harness:
    """The kit's plugins: accept every request, register the executor, record outcomes."""

    def __init__(self, executor: Executor):
        self.executor = executor
        self.errors: dict[str, list[str]] = {}
        self.results: dict[str, list[str]] = {}

    @hookimpl
    def register_executors(self, register: Callable[[str, Executor], None]) -> None:
        register(ACCOUNT, self.executor)

    @hookimpl(tryfirst=True)
    def authenticate(self, request: InboundRequest) -> AuthResult:
        # The owner's principal: its alert ids are journaled as sent (no namespace), every account.
        return AuthResult.accept(OWNER_PRINCIPAL)

    @hookimpl
    def after_execute(self, alert: Alert, state: str) -> None:
        self.results.setdefault(alert.alert_id or "", []).append(state)

    @hookimpl
    def on_error(self, alert: Alert, state: str) -> None:
        self.errors.setdefault(alert.alert_id or "", []).append(state)


@dataclass
class CaseReport:
    case: str
    alert_id: str
    state: str
    booked: int
    answers: list[int] = field(default_factory=list)
    journal: dict[str, Any] = field(default_factory=dict)
