"""Executors: who places orders for which account, and the built-in ``execute_order``.

An executor serves one named account (an exchange with its credentials, or the paper
ledger). Plugins create them in ``register_executors``; the router starts them, keeps
the registry, routes each alert to one, and closes them at shutdown.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import logging
from decimal import Decimal
from typing import Any

from core.errors import ConfigError, Unprocessable
from core.models import Alert, OrderRequest, OrderResult
from core.plugins import hookimpl

log = logging.getLogger(__name__)


def client_order_id(alert_id: str, account: str, prefix: str = "tv", length: int = 32) -> str:
    """A deterministic client order id for (alert, account).

    The same alert on the same account always yields the same id, so a resend can never
    become a second order at an exchange that refuses duplicate ids, and the router can
    find an order whose reply was lost. Letters and digits only and 32 characters: within
    every major venue's rules (binance/bybit 36, okx 32 alphanumeric).
    """
    digest = hashlib.sha256(f"{account}\x00{alert_id}".encode()).hexdigest()
    return (prefix + digest)[:length]


class VenueNotSupported(Exception):
    """An optional executor read (``fetch_*``) this venue's plugin does not provide."""


class Executor(abc.ABC):
    """One account's order placement. Subclasses implement the abstract methods."""

    route = "rest"

    def __init__(self, account: str, exchange: str):
        self.account = account
        self.exchange = exchange
        self.ready = False
        self.error: str | None = None

    async def start(self) -> None:
        """Connect and load what orders need (markets). Raise to be marked not ready."""

    async def close(self) -> None:
        """Release connections. Called once at shutdown."""

    def matches_exchange(self, name: str) -> bool:
        """Whether an alert naming exchange ``name`` (e.g. TradingView's BINANCE) fits."""
        return name.lower() == self.exchange.lower()

    def lane_key(self, alert: Alert) -> str:
        """The market an alert trades, as the key of its ordering lane. Executors with
        loaded markets resolve it, so BTCUSDT and BINANCE:BTCUSDT share one lane."""
        return alert.symbol.upper()

    def status(self) -> dict[str, Any]:
        """For the health check: never a secret."""
        return {"exchange": self.exchange, "ready": self.ready, "route": self.route, **({"error": self.error} if self.error else {})}

    @abc.abstractmethod
    async def prepare(self, alert: Alert, client_order_id: str) -> OrderRequest:
        """Resolve the alert to this account's market, apply precision and check limits.

        Raise ``Unprocessable`` with a reason a trader understands when it cannot trade.
        """

    @abc.abstractmethod
    async def submit(self, order: OrderRequest) -> OrderResult:
        """Send the order once. Raise ccxt's errors (or WebhookError) on failure."""

    async def account_snapshot(self) -> dict[str, Any] | None:
        """What the account holds now, for the dashboard (read only when a page asks):
        ``{"balances": {asset: {"free", "used", "total"}}, "positions": [{"symbol",
        "contracts", "side", "entry_price"}], "open_orders": [{"symbol", "side", "type",
        "amount", "price", "id", "client_order_id"}], "errors": {part: message}}``, values
        as strings. Never a secret. ``None`` (the default): this executor cannot tell."""
        return None

    async def lookup(self, order: OrderRequest) -> OrderResult | None:
        """After an unknown outcome, what became of ``order`` at the exchange, for any
        action: create → the order found by its client order id; cancel → the target
        order if it is now canceled; cancel_all → a result once nothing is open. None when
        the exchange says it did not happen (the engine may then send it again)."""
        return None


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

    def register_for(self, plugin_name: str):
        def register(account: str, executor: Executor) -> None:
            key = account.lower()
            if key in self._executors:
                raise ConfigError(
                    f"account '{account}' is registered by two plugins: '{self._owners[key]}' and '{plugin_name}'"
                )
            if not isinstance(executor, Executor):
                raise ConfigError(f"plugin '{plugin_name}': account '{account}': executor must subclass core.execution.Executor")
            self._executors[key] = executor
            self._owners[key] = plugin_name

        return register

    def __iter__(self):
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
            raise Unprocessable("the alert names no account and no default account is configured", code="unknown_account")
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
