"""Executors: who places orders for which account, and the built-in ``execute_order``.

An executor serves one named account (an exchange with its credentials, or the paper
ledger). Plugins create them in ``register_executors``; the router starts them, keeps
the registry, routes each alert to one, and closes them at shutdown.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from core.errors import ConfigError, Unprocessable
from core.hooks.manager import hookimpl
from core.pipeline.models import Alert, OrderRequest, OrderResult

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4096)  # asked at admission and again as the order is prepared
def client_order_id(alert_id: str, account: str, prefix: str = "tv", length: int = 32) -> str:
    """A deterministic client order id for (alert, account).

    The same alert on the same account always yields the same id, so a resend can never
    become a second order at an exchange that refuses duplicate ids, and the router can
    find an order whose reply was lost. Letters and digits only and 32 characters: within
    every major venue's rules (binance/bybit 36, okx 32 alphanumeric).
    """
    digest = hashlib.sha256(f"{account}\x00{alert_id}".encode()).hexdigest()
    return (prefix + digest)[:length]


def child_order_id(parent: str, kind: str) -> str:
    """The client order id of an order placed on behalf of ``parent`` (its stop-loss
    ``kind="sl"``, take-profit ``"tp"``, ...): deterministic, so a resend or a lookup finds
    it instead of placing it twice; distinct from the parent and from other kinds; as long
    as the parent (never shorter than 10). ``tv…`` ids become ``sl…``/``tp…``."""
    if parent.startswith("tv") and len(kind) == 2:
        return kind + parent[2:]
    digest = hashlib.sha256(f"{kind}\x00{parent}".encode()).hexdigest()
    return (kind + digest)[: max(len(parent), 10)]


class VenueNotSupported(Exception):
    """An optional executor read (``fetch_*``) this venue's plugin does not provide."""


@dataclass(frozen=True)
class LookupResult:
    """What ``Executor.lookup`` found out about an order whose outcome was unknown.

    * ``LookupResult.found(result)``: the venue has the order (``result`` is what it booked);
    * ``LookupResult.absent()``: the venue says **for sure** the order does not exist — the
      only answer that lets the engine send it again (after ``resubmit_after``);
    * ``LookupResult.cannot_tell(reason)``: no answer either way. The alert stays
      ``unknown`` (journaled, notified, visible in ``GET /alerts/<id>``) and is never sent
      again on this answer. ``ask_again=True`` (a transient failure) lets the engine ask
      again later; ``False`` (the default of an executor that cannot look orders up)
      ends reconciliation at once.

    Raising from ``lookup`` counts as ``cannot_tell`` with ``ask_again=True``.
    """

    kind: Literal["found", "absent", "cannot_tell"]
    result: OrderResult | None = None
    reason: str = ""
    ask_again: bool = True

    @classmethod
    def found(cls, result: OrderResult) -> LookupResult:
        return cls("found", result=result)

    @classmethod
    def absent(cls, reason: str = "") -> LookupResult:
        return cls("absent", reason=reason)

    @classmethod
    def cannot_tell(cls, reason: str, *, ask_again: bool = True) -> LookupResult:
        return cls("cannot_tell", reason=reason, ask_again=ask_again)

    @property
    def is_found(self) -> bool:
        return self.kind == "found"

    @property
    def is_absent(self) -> bool:
        return self.kind == "absent"


class Executor(abc.ABC):
    """One account's order placement. Subclasses implement ``prepare`` and ``submit``;
    ``lookup`` is what makes an unknown outcome recoverable (see docs/plugins/execution.md).

    The engine calls ``prepare`` and ``submit`` of one account concurrently for alerts of
    different markets (one at a time per ``lane_key``); keep per-order state out of
    ``self`` or guard it.
    """

    # How orders travel (rest, websocket, paper, ...): shown in GET / and journaled.
    route = "rest"

    def __init__(self, account: str, exchange: str):
        self.account = account
        self.exchange = exchange
        self.ready = False
        self.error: str | None = None

    async def start(self) -> None:
        """Connect and load what orders need (markets). Raise to be marked not ready.

        Called once at startup; the router does **not** call it again after a failure:
        an executor that should recover retries in a background task of its own (and
        sets ``self.ready = True`` when it succeeds; the ccxt executor does so)."""
        return None  # a default: nothing to connect

    async def close(self) -> None:
        """Release connections. Called once at shutdown."""
        return None  # a default: nothing to release

    def matches_exchange(self, name: str) -> bool:
        """Whether an alert naming exchange ``name`` (e.g. TradingView's BINANCE) may go to
        this account when it is the default account."""
        return name.lower() == self.exchange.lower()

    def lane_key(self, alert: Alert) -> str:
        """The market an alert trades, as the key of its ordering lane: alerts of one lane
        execute one at a time in arrival order. Executors with loaded markets resolve it,
        so BTCUSDT and BINANCE:BTCUSDT share one lane. Must not raise or do I/O."""
        return alert.symbol.upper()

    def status(self) -> dict[str, Any]:
        """For the health check: never a secret."""
        return {
            "exchange": self.exchange,
            "ready": self.ready,
            "route": self.route,
            **({"error": self.error} if self.error else {}),
        }

    @abc.abstractmethod
    async def prepare(self, alert: Alert, client_order_id: str) -> OrderRequest:
        """Resolve the alert to this account's market, apply precision and check limits.

        Raise ``Unprocessable`` with a reason a trader understands when it cannot trade,
        ``core.pipeline.models.NothingToDo`` when the alert is already satisfied. Sends nothing.
        ``client_order_id`` is derived from (alert, account): keep it, or derive the
        venue's form from it deterministically; never invent a random one.
        """

    @abc.abstractmethod
    async def submit(self, order: OrderRequest) -> OrderResult:
        """Send the order **once**; never retry inside. Raise the order errors of
        ``core.errors`` (``OrderRejected``, ``OrderNotSent``, ``VenueBusy``,
        ``OutcomeUnknown``, ``CredentialsRefused``) or ``Unprocessable``; any other
        exception is read as ``OutcomeUnknown`` (the order may be booked)."""

    async def account_snapshot(self) -> dict[str, Any] | None:
        """What the account holds now, for the dashboard (read only when a page asks):
        ``{"balances": {asset: {"free", "used", "total"}}, "positions": [{"symbol",
        "contracts", "side", "entry_price"}], "open_orders": [{"symbol", "side", "type",
        "amount", "price", "id", "client_order_id"}], "errors": {part: message}}``, values
        as strings. Never a secret. ``None`` (the default): this executor cannot tell."""
        return None

    async def lookup(self, order: OrderRequest) -> LookupResult:
        """After an unknown outcome, what became of ``order`` at the venue, for any action:
        create → the order found by its client order id; cancel → the target order if it
        is now canceled; cancel_all → a result once nothing is open.

        The default cannot tell, so an executor that does not implement it can never
        double an order: the alert stays ``unknown`` for a human to check. Answer
        ``absent`` only when the venue said so for sure."""
        return LookupResult.cannot_tell(f"{type(self).__name__} cannot look orders up", ask_again=False)

    # -- optional reads, for risk limits, the kill switch and position sync. The defaults
    # raise VenueNotSupported: a limit that needs the read then refuses (fails closed).

    async def fetch_last_price(self, symbol: str) -> Decimal:
        """The last traded price of ``symbol`` (the unified symbol of an ``OrderRequest``)."""
        raise VenueNotSupported(f"reading the last price is not supported by this venue ({self.exchange})")

    async def fetch_position(self, symbol: str) -> Decimal:
        """The signed position held on ``symbol`` (long > 0, short < 0): contracts on a
        derivatives market, the base asset's total balance on a spot market."""
        raise VenueNotSupported(f"reading positions is not supported by this venue ({self.exchange})")

    async def fetch_positions(self) -> dict[str, Decimal]:
        """Every open derivatives position: unified symbol → signed contracts (non-zero only).
        Spot balances are not positions here (a flatten does not sell them)."""
        raise VenueNotSupported(f"listing positions is not supported by this venue ({self.exchange})")

    async def fetch_equity(self, currency: str) -> Decimal:
        """The account's equity in ``currency`` (balance plus unrealized profit and loss)."""
        raise VenueNotSupported(f"reading the equity is not supported by this venue ({self.exchange})")

    async def fetch_open_orders(self) -> dict[str, int]:
        """Open orders of every market: unified symbol → how many are open."""
        raise VenueNotSupported(f"listing open orders is not supported by this venue ({self.exchange})")


class ExecutorRegistry:
    """Account name → executor, filled through the ``register_executors`` hook."""

    def __init__(self, default_account: str):
        self._executors: dict[str, Executor] = {}
        self._owners: dict[str, str] = {}
        self.default_account = default_account

    def register_for(self, plugin_name: str) -> Callable[[str, Executor], None]:
        def register(account: str, executor: Executor) -> None:
            key = account.lower()
            if key in self._executors:
                raise ConfigError(
                    f"account '{account}' is registered by two plugins: '{self._owners[key]}' and '{plugin_name}'"
                )
            if not isinstance(executor, Executor):
                raise ConfigError(
                    f"plugin '{plugin_name}': account '{account}': "
                    "executor must subclass core.trading.execution.Executor"
                )
            self._executors[key] = executor
            self._owners[key] = plugin_name

        return register

    def __iter__(self) -> Iterator[Executor]:
        return iter(self._executors.values())

    def __len__(self) -> int:
        return len(self._executors)

    def get(self, account: str) -> Executor | None:
        return self._executors.get(account.lower())

    def owner(self, account: str) -> str | None:
        return self._owners.get(account.lower())

    @property
    def default(self) -> Executor | None:
        return self.get("default") or self.get(self.default_account)

    def resolve(self, alert: Alert) -> Executor:
        """The account an alert goes to.

        1. ``account`` names an account; 2. ``exchange`` names an account, or is the
        default account's exchange; 3. no ``account``/``exchange``: the default account.
        Alerts carrying credentials are routed by ``Router.executor_for`` first.
        """
        if alert.accounts:
            name = alert.accounts[0]  # one account; several are fanned out by the router first
            executor = self.get(name)
            if executor is None:
                raise Unprocessable(f"unknown account '{name}'", code="unknown_account")
            return executor
        default = self.default
        if alert.exchange:
            executor = self.get(alert.exchange)
            if executor is not None:
                return executor
            if default is not None and default.matches_exchange(alert.exchange):
                return default
            raise Unprocessable(f"no account is configured for exchange '{alert.exchange}'", code="unknown_exchange")
        if default is None:
            raise Unprocessable(
                "the alert names no account and no default account is configured", code="unknown_account"
            )
        return default

    async def start_all(self) -> None:
        async def start(executor: Executor) -> None:
            try:
                await executor.start()
                executor.ready = True
                executor.error = None
            except Exception as exc:  # one account down must not stop the others
                executor.ready = False
                executor.error = f"{type(exc).__name__}: {exc}"[:300]
                log.error("account %s (%s) is not ready: %s", executor.account, executor.exchange, executor.error)

        await asyncio.gather(*(start(e) for e in self._executors.values()))

    async def close_all(self) -> None:
        for executor in self._executors.values():
            try:
                await executor.close()
            except Exception:
                log.exception("closing account %s failed", executor.account)


@hookimpl(trylast=True)
async def execute_order(order: OrderRequest, executor: Executor) -> OrderResult:
    """The built-in: the account's executor places the order."""
    return await executor.submit(order)


@hookimpl(trylast=True)
async def lookup_order(order: OrderRequest, executor: Executor) -> LookupResult | OrderResult | None:
    """The built-in: the executor that placed the order looks it up."""
    return await executor.lookup(order)
