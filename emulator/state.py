"""Venue-neutral books of the emulator: accounts, wallets, orders, positions, prices.

The venue modules (``binance.py``, ``bybit.py``) parse and validate requests in
their own dialect, build an :class:`Order` and hand it to
:meth:`ExchangeState.submit`.  The state decides what happens to it - fill at
the current price, rest, expire - moves balances and positions, and raises
:class:`Rejection` (with a venue-neutral reason) when the account cannot take
it.  Venues translate rejections into their own error codes.

Execution model (deliberately simple and deterministic):

* every market has one current price (``set_price``);
* market orders and marketable limit orders fill completely at that price
  (taker fee); other limit orders rest and fill completely at their limit price
  (maker fee) when a later price change makes them marketable;
* conditional orders rest untriggered until the price crosses the trigger, then
  either turn into a working order in place (Binance spot, Bybit) or spawn a
  child order (Binance USD-M algo orders);
* spot fills move base/quote and charge the fee in the received asset; linear
  fills net into one position per symbol (one-way mode) and realise PnL into
  the wallet.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .faults import Call, FaultQueue
from .markets import (
    BINANCE,
    BYBIT,
    DEFAULT_PRICES,
    LINEAR,
    SPOT,
    D,
    MarketSpec,
    default_markets,
    floor_to_step,
    plain,
)

BUY, SELL = "BUY", "SELL"
NEW, FILLED, CANCELED, EXPIRED, REJECTED, TRIGGERED = "NEW", "FILLED", "CANCELED", "EXPIRED", "REJECTED", "TRIGGERED"
OPEN_STATUSES = (NEW,)

# Rejection reasons; venues map them to their error codes.
INSUFFICIENT_BALANCE = "insufficient_balance"
INSUFFICIENT_MARGIN = "insufficient_margin"
REDUCE_ONLY_REJECTED = "reduce_only_rejected"
DUPLICATE_CLIENT_ID = "duplicate_client_id"
POST_ONLY_WOULD_TAKE = "post_only_would_take"

DEFAULT_ACCOUNTS = {"emu-key-1": "emu-secret-1", "emu-key-2": "emu-secret-2"}
DEFAULT_BALANCES: dict[str, dict[str, Decimal]] = {
    "binance.spot": {"USDT": D("100000"), "BTC": D("10"), "ETH": D("100"), "SOL": D("1000")},
    "binance.linear": {"USDT": D("100000")},
    "bybit.unified": {"USDT": D("100000"), "BTC": D("10"), "ETH": D("100")},
}
DEFAULT_LEVERAGE = {BINANCE: 20, BYBIT: 10}


# The venue's clock is the host's plus this offset (``POST /_emu/clock``): a server whose
# clock is off. Shared by every venue of the process; reset() puts it back to 0.
CLOCK = {"offset_ms": 0}


def now_ms() -> int:
    return int(time.time() * 1000) + CLOCK["offset_ms"]


def default_api_restrictions() -> dict[str, bool]:
    """What binance's GET /sapi/v1/account/apiRestrictions says of a fresh key: it trades and
    cannot withdraw (``POST /_emu/api_restrictions`` changes it per key)."""
    return {
        "ipRestrict": False,
        "enableReading": True,
        "enableSpotAndMarginTrading": True,
        "enableFutures": True,
        "enableMargin": False,
        "enableWithdrawals": False,
        "enableInternalTransfer": False,
        "permitsUniversalTransfer": False,
        "enableVanillaOptions": False,
        "enablePortfolioMarginTrading": False,
    }


def wallet_of(book: str) -> str:
    """Wallet that funds a book: Bybit is a unified account, Binance has one per product."""
    return "bybit.unified" if book.startswith(BYBIT) else book


class Rejection(Exception):
    """The account or book refuses an order; ``reason`` is one of the constants above."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class Balance:
    free: Decimal = D(0)
    locked: Decimal = D(0)

    @property
    def total(self) -> Decimal:
        return self.free + self.locked


@dataclass
class Position:
    amount: Decimal = D(0)  # signed, base units
    entry_price: Decimal = D(0)
    realized_pnl: Decimal = D(0)
    created_ms: int = 0
    updated_ms: int = 0
    stop_loss: Decimal | None = None  # attached by an order (Bybit); recorded, not triggered
    take_profit: Decimal | None = None


@dataclass
class Account:
    """One API key with its wallets, positions and per-symbol settings."""

    key: str
    secret: str
    wallets: dict[str, dict[str, Balance]] = field(default_factory=dict)
    positions: dict[tuple[str, str], Position] = field(default_factory=dict)
    leverage: dict[tuple[str, str], int] = field(default_factory=dict)
    margin_type: dict[tuple[str, str], str] = field(default_factory=dict)
    api_restrictions: dict[str, bool] = field(default_factory=default_api_restrictions)

    def balance(self, wallet: str, asset: str) -> Balance:
        return self.wallets.setdefault(wallet, {}).setdefault(asset, Balance())

    def position(self, book: str, symbol: str) -> Position:
        return self.positions.setdefault((book, symbol), Position())


@dataclass
class Fill:
    trade_id: int
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    maker: bool
    time_ms: int
    realized_pnl: Decimal = D(0)


@dataclass
class Order:
    """An order as booked, in venue-neutral terms.

    ``venue_type`` keeps the venue's own order type string (``STOP_MARKET``,
    ``Limit``...) for rendering; ``execution`` is how it executes once working.
    """

    venue: str
    market_type: str
    account_key: str
    symbol: str
    side: str  # BUY | SELL
    venue_type: str
    execution: str  # "market" | "limit"
    quantity: Decimal | None
    price: Decimal | None = None
    quote_quantity: Decimal | None = None  # market orders sized in quote currency
    client_order_id: str = ""
    time_in_force: str | None = None
    reduce_only: bool = False
    post_only: bool = False
    post_only_policy: str = "reject"  # "reject" (raise) | "cancel" (book as canceled)
    trigger_price: Decimal | None = None
    trigger_direction: str | None = None  # "rise" | "fall"
    trigger_mode: str = "in_place"  # "in_place" | "spawn_child"
    transport: str = "rest"
    order_id: str = ""
    seq: int = 0
    status: str = NEW
    working: bool = True
    executed_qty: Decimal = D(0)
    cum_quote: Decimal = D(0)
    fills: list[Fill] = field(default_factory=list)
    created_ms: int = 0
    updated_ms: int = 0
    booked_at: float = 0.0
    locked: tuple[str, Decimal] | None = None
    child_order_id: str | None = None
    parent_order_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def book(self) -> str:
        return f"{self.venue}.{self.market_type}"

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def avg_price(self) -> Decimal:
        return self.cum_quote / self.executed_qty if self.executed_qty else D(0)

    @property
    def fee_total(self) -> Decimal:
        return sum((f.commission for f in self.fills), D(0))

    @property
    def remaining(self) -> Decimal:
        return (self.quantity or D(0)) - self.executed_qty

    def cost_at(self, price: Decimal) -> Decimal:
        """What the order costs in the quote currency at ``price``: its quote quantity, or
        its quantity times ``price``."""
        if self.quantity is not None:
            return self.quantity * price
        if self.quote_quantity is None:
            raise ValueError(f"order {self.order_id} has neither a quantity nor a quote quantity")
        return self.quote_quantity

    def to_dict(self) -> dict[str, Any]:
        """Shape used by the control API (``GET /_emu/orders``)."""
        return {
            "seq": self.seq,
            "venue": self.venue,
            "market_type": self.market_type,
            "account_key": self.account_key,
            "symbol": self.symbol,
            "side": self.side,
            "type": self.venue_type,
            "quantity": plain(self.quantity) if self.quantity is not None else None,
            "quote_quantity": plain(self.quote_quantity) if self.quote_quantity is not None else None,
            "price": plain(self.price) if self.price is not None else None,
            "trigger_price": plain(self.trigger_price) if self.trigger_price is not None else None,
            "client_order_id": self.client_order_id,
            "order_id": self.order_id,
            "status": self.status,
            "executed_qty": plain(self.executed_qty),
            "avg_price": plain(self.avg_price),
            "reduce_only": self.reduce_only,
            "post_only": self.post_only,
            "time_in_force": self.time_in_force,
            "stop_loss": plain(self.extra["stop_loss"]) if "stop_loss" in self.extra else None,
            "take_profit": plain(self.extra["take_profit"]) if "take_profit" in self.extra else None,
            "transport": self.transport,
            "booked_at": self.booked_at,
            "booked_ms": self.created_ms,
            "updated_ms": self.updated_ms,
            "parent_order_id": self.parent_order_id,
            "child_order_id": self.child_order_id,
        }


class ExchangeState:
    """All mutable emulator state plus the matching/accounting rules."""

    def __init__(
        self,
        accounts: dict[str, str] | None = None,
        prices: dict[str, Any] | None = None,
        markets: list[MarketSpec] | None = None,
        balances: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self._initial_accounts = dict(accounts or DEFAULT_ACCOUNTS)
        self._initial_prices = {k: D(str(v)) for k, v in (prices or {}).items()}
        self._initial_balances = {
            w: {a: D(str(v)) for a, v in bal.items()} for w, bal in (balances or DEFAULT_BALANCES).items()
        }
        self._market_list = markets or default_markets()
        self.listeners: list[Callable[[], None]] = []
        self.reset()

    # ----------------------------------------------------------------- setup
    def reset(self) -> None:
        """Back to the constructor's configuration: fresh accounts, no orders, no faults."""
        CLOCK["offset_ms"] = 0
        self.markets: dict[tuple[str, str], MarketSpec] = {(m.book, m.symbol): m for m in self._market_list}
        self.prices: dict[tuple[str, str], Decimal] = {}
        for market in self._market_list:
            self.prices[(market.book, market.symbol)] = DEFAULT_PRICES.get(market.base, D(100))
        for symbol, price in self._initial_prices.items():
            self.set_price(symbol, price, trigger=False)
        self.accounts: dict[str, Account] = {}
        for key, secret in self._initial_accounts.items():
            self.add_account(key, secret)
        self.orders: list[Order] = []
        self._open: dict[int, Order] = {}  # seq -> order, insertion (= seq) ordered
        self._by_owner: dict[tuple[str, str], list[Order]] = {}
        self._by_client: dict[tuple[str, str, str], list[Order]] = {}
        self._by_id: dict[tuple[str, str], Order] = {}
        self.requests: list[dict[str, Any]] = []
        self.unhandled: list[dict[str, Any]] = []
        self.faults = FaultQueue()
        self._seq = itertools.count(1)
        self._request_seq = itertools.count(1)
        self._trade_ids = itertools.count(100001)
        self._binance_ids = {
            "binance.spot": itertools.count(1000001),
            "binance.linear": itertools.count(4000000001),
            "binance.linear.algo": itertools.count(3000000001),
        }
        self._notify()

    def add_account(self, key: str, secret: str, balances: dict[str, dict[str, Any]] | None = None) -> Account:
        account = Account(key=key, secret=secret)
        source = (
            self._initial_balances
            if balances is None
            else {w: {a: D(str(v)) for a, v in bal.items()} for w, bal in balances.items()}
        )
        for wallet, assets in source.items():
            for asset, amount in assets.items():
                account.balance(wallet, asset).free = amount
        self.accounts[key] = account
        self._notify()
        return account

    def _notify(self) -> None:
        for listener in list(self.listeners):
            listener()

    # --------------------------------------------------------------- lookups
    def market(self, book: str, symbol: str | None) -> MarketSpec | None:
        return self.markets.get((book, (symbol or "").upper()))

    def markets_of(self, book: str) -> list[MarketSpec]:
        return [m for m in self._market_list if m.book == book]

    def price(self, market: MarketSpec) -> Decimal:
        return self.prices[(market.book, market.symbol)]

    def leverage(self, account: Account, market: MarketSpec) -> int:
        return account.leverage.get((market.book, market.symbol), DEFAULT_LEVERAGE[market.venue])

    def orders_of(self, book: str, account_key: str, symbol: str | None = None, open_only: bool = False) -> list[Order]:
        source = self._open.values() if open_only else self._by_owner.get((book, account_key), [])
        return [
            o
            for o in source
            if o.book == book and o.account_key == account_key and (symbol is None or o.symbol == symbol)
        ]

    def find_order(
        self,
        book: str,
        account_key: str,
        symbol: str | None,
        *,
        order_id: str | None = None,
        client_order_id: str | None = None,
        algo: bool | None = None,
    ) -> Order | None:
        """Order by id, else the latest by client id (client ids may repeat once closed)."""
        if order_id is not None:
            candidates = [self._by_id[(book, str(order_id))]] if (book, str(order_id)) in self._by_id else []
        elif client_order_id is not None:
            candidates = self._by_client.get((book, account_key, client_order_id), [])
        else:
            return None
        for order in reversed(candidates):
            if order.account_key != account_key or (symbol is not None and order.symbol != symbol):
                continue
            if algo is not None and bool(order.extra.get("algo")) != algo:
                continue
            return order
        return None

    def client_id_taken(
        self, book: str, account_key: str, symbol: str | None, client_order_id: str, open_only: bool
    ) -> bool:
        return any(
            (symbol is None or o.symbol == symbol) and (not open_only or o.is_open)
            for o in self._by_client.get((book, account_key, client_order_id), [])
        )

    def new_order_id(self, book: str) -> str:
        if book.startswith(BYBIT):
            return str(uuid.uuid4())
        return str(next(self._binance_ids[book]))

    # --------------------------------------------------------------- prices
    def set_price(
        self, symbol: str, price: Any, venue: str | None = None, market_type: str | None = None, trigger: bool = True
    ) -> list[tuple[str, str]]:
        """Set the price of every market matching ``symbol``.

        ``symbol`` may be an exchange id (``BTCUSDT``: all venues and types), a
        unified spot symbol (``BTC/USDT``) or a unified contract symbol
        (``BTC/USDT:USDT``).  Resting orders that become marketable fill, and
        conditional orders whose trigger is crossed fire.
        """
        value = D(str(price))
        if value <= 0:
            raise ValueError("price must be positive")
        touched = []
        for market in self._market_list:
            if venue and market.venue != venue:
                continue
            if market_type and market.market_type != market_type:
                continue
            if symbol.upper() not in (market.symbol, market.unified_symbol.upper()):
                continue
            self.prices[(market.book, market.symbol)] = value
            touched.append((market.book, market.symbol))
        if not touched:
            raise KeyError(f"no market matches {symbol!r}")
        if trigger:
            for book, market_symbol in touched:
                self._on_price_change(self.markets[(book, market_symbol)])
            self._notify()
        return touched

    # ------------------------------------------------------------- requests
    def log_request(self, call: Call, summary: dict[str, Any]) -> dict[str, Any]:
        """Record an order-placement attempt; the caller fills in the outcome."""
        entry = {
            "seq": next(self._request_seq),
            "time": time.time(),
            "venue": call.venue,
            "market_type": call.market_type,
            "route": call.route,
            "transport": call.transport,
            "account_key": call.api_key,
            "outcome": "pending",
            "error": None,
            "order_id": None,
            "fault": None,
            **summary,
        }
        self.requests.append(entry)
        self._notify()
        return entry

    # -------------------------------------------------------------- orders
    def submit(self, order: Order) -> Order:
        """Book ``order`` (already validated by the venue) and execute what can execute.

        Raises :class:`Rejection` if the account cannot take it; nothing is
        booked in that case.
        """
        market = self.markets[(order.book, order.symbol)]
        account = self.accounts[order.account_key]
        price_now = self.price(market)
        conditional = order.trigger_price is not None
        if order.reduce_only and market.market_type == LINEAR and not conditional:
            # conditional reduce-only orders are checked when they fire, as on both venues
            self._check_reduce_only(account, market, order)
        marketable = not conditional and self._marketable(order, price_now)
        if order.post_only and marketable and order.post_only_policy == "reject":
            raise Rejection(POST_ONLY_WOULD_TAKE)
        if not (order.post_only and marketable) and not (conditional and market.market_type == LINEAR):
            self._check_funds(account, market, order, price_now)
        self._book(order, working=not conditional)
        if conditional:
            if market.market_type == SPOT:
                self._lock(account, market, order)
        elif order.post_only and marketable:
            self._close(order, CANCELED)  # Bybit books post-only takers and cancels them at once
        elif marketable:
            self._fill(account, market, order, price_now, maker=False)
        elif order.time_in_force in ("IOC", "FOK"):
            self._close(order, EXPIRED)
        else:
            self._lock(account, market, order)
        self._notify()
        return order

    def cancel(self, order: Order) -> Order:
        if not order.is_open:
            raise Rejection("not_open")
        account = self.accounts[order.account_key]
        self._unlock(account, order)
        self._close(order, CANCELED)
        order.updated_ms = now_ms()
        self._notify()
        return order

    def _book(self, order: Order, working: bool) -> None:
        order.seq = next(self._seq)
        if not order.order_id:
            order.order_id = self.new_order_id(order.book)
        order.created_ms = order.updated_ms = now_ms()
        order.booked_at = time.time()
        order.working = working
        order.status = NEW
        self.orders.append(order)
        self._open[order.seq] = order
        self._by_owner.setdefault((order.book, order.account_key), []).append(order)
        self._by_client.setdefault((order.book, order.account_key, order.client_order_id), []).append(order)
        self._by_id[(order.book, order.order_id)] = order

    def _close(self, order: Order, status: str) -> None:
        order.status = status
        self._open.pop(order.seq, None)

    @staticmethod
    def _marketable(order: Order, price_now: Decimal) -> bool:
        if order.execution == "market":
            return True
        assert order.price is not None
        return order.price >= price_now if order.side == BUY else order.price <= price_now

    # ------------------------------------------------------------ accounting
    def _base_qty(self, market: MarketSpec, order: Order, fill_price: Decimal) -> Decimal:
        if order.quantity is not None:
            return order.quantity
        assert order.quote_quantity is not None
        return floor_to_step(order.quote_quantity / fill_price, market.step_size or D("0.00000001"))

    def _check_funds(self, account: Account, market: MarketSpec, order: Order, price_now: Decimal) -> None:
        wallet = wallet_of(market.book)
        reference_price = order.price if order.execution == "limit" and order.price else price_now
        if market.market_type == SPOT:
            if order.side == BUY:
                need = order.cost_at(reference_price)
                if account.balance(wallet, market.quote).free < need:
                    raise Rejection(INSUFFICIENT_BALANCE, f"need {need} {market.quote}")
            else:
                need = self._base_qty(market, order, reference_price)
                if account.balance(wallet, market.base).free < need:
                    raise Rejection(INSUFFICIENT_BALANCE, f"need {need} {market.base}")
            return
        if order.reduce_only:
            return
        position = account.position(market.book, market.symbol)
        quantity = self._base_qty(market, order, reference_price)
        signed = quantity if order.side == BUY else -quantity
        increase = max(D(0), abs(position.amount + signed) - abs(position.amount))
        needed = increase * reference_price / self.leverage(account, market)
        if needed > self.available_margin(account, wallet):
            raise Rejection(INSUFFICIENT_MARGIN, f"need {needed} {market.settle}")

    def available_margin(self, account: Account, wallet: str) -> Decimal:
        """Free settlement-asset balance + unrealised PnL - position and open-order margin."""
        available = account.balance(wallet, "USDT").free
        for (book, symbol), position in account.positions.items():
            if wallet_of(book) != wallet or position.amount == 0:
                continue
            market = self.markets[(book, symbol)]
            mark = self.price(market)
            available += (mark - position.entry_price) * position.amount
            available -= abs(position.amount) * mark / self.leverage(account, market)
        for order in self._open.values():
            if (
                order.account_key == account.key
                and order.working
                and order.market_type == LINEAR
                and wallet_of(order.book) == wallet
                and not order.reduce_only
                and order.price is not None
            ):
                market = self.markets[(order.book, order.symbol)]
                available -= order.remaining * order.price / self.leverage(account, market)
        return available

    def _check_reduce_only(self, account: Account, market: MarketSpec, order: Order) -> None:
        position = account.position(market.book, market.symbol).amount
        closes = (order.side == SELL and position > 0) or (order.side == BUY and position < 0)
        if not closes:
            raise Rejection(REDUCE_ONLY_REJECTED, "no position to reduce")
        if order.quantity is not None and order.quantity > abs(position):
            if order.extra.get("reduce_only_policy") == "clamp":
                order.quantity = abs(position)
            else:
                raise Rejection(REDUCE_ONLY_REJECTED, "would flip the position")

    def _lock(self, account: Account, market: MarketSpec, order: Order) -> None:
        if market.market_type != SPOT:
            return
        wallet = wallet_of(market.book)
        if order.side == BUY:
            reference = order.price or order.trigger_price or self.price(market)
            asset, amount = market.quote, order.cost_at(reference)
        else:
            asset, amount = market.base, self._base_qty(market, order, order.price or self.price(market))
        balance = account.balance(wallet, asset)
        amount = min(amount, balance.free)
        balance.free -= amount
        balance.locked += amount
        order.locked = (asset, amount)

    def _unlock(self, account: Account, order: Order) -> None:
        if order.locked is None:
            return
        asset, amount = order.locked
        balance = account.balance(wallet_of(order.book), asset)
        balance.locked -= amount
        balance.free += amount
        order.locked = None

    def _fill(self, account: Account, market: MarketSpec, order: Order, fill_price: Decimal, maker: bool) -> None:
        self._unlock(account, order)
        qty = self._base_qty(market, order, fill_price)
        if order.quantity is None:
            order.quantity = qty
        quote_qty = qty * fill_price
        rate = market.maker_fee if maker else market.taker_fee
        wallet = wallet_of(market.book)
        stamp = now_ms()
        realized = D(0)
        if market.market_type == SPOT:
            base, quote = account.balance(wallet, market.base), account.balance(wallet, market.quote)
            if order.side == BUY:
                commission, commission_asset = qty * rate, market.base
                quote.free -= quote_qty
                base.free += qty - commission
            else:
                commission, commission_asset = quote_qty * rate, market.quote
                base.free -= qty
                quote.free += quote_qty - commission
        else:
            commission, commission_asset = quote_qty * rate, market.settle
            realized = self._apply_position(account, market, order.side, qty, fill_price, stamp)
            position = account.position(market.book, market.symbol)
            if position.amount == 0:
                position.stop_loss = position.take_profit = None
            for name in ("stop_loss", "take_profit"):
                if name in order.extra:
                    setattr(position, name, order.extra[name])
            settle = account.balance(wallet, market.settle)
            settle.free += realized - commission
        order.fills.append(
            Fill(
                trade_id=next(self._trade_ids),
                price=fill_price,
                qty=qty,
                quote_qty=quote_qty,
                commission=commission,
                commission_asset=commission_asset,
                maker=maker,
                time_ms=stamp,
                realized_pnl=realized,
            )
        )
        order.executed_qty += qty
        order.cum_quote += quote_qty
        self._close(order, FILLED)
        order.updated_ms = stamp

    @staticmethod
    def _apply_position(
        account: Account, market: MarketSpec, side: str, qty: Decimal, price: Decimal, stamp: int
    ) -> Decimal:
        position = account.position(market.book, market.symbol)
        signed = qty if side == BUY else -qty
        realized = D(0)
        if position.amount == 0 or (position.amount > 0) == (signed > 0):
            total = abs(position.amount) + qty
            position.entry_price = (abs(position.amount) * position.entry_price + qty * price) / total
            if position.amount == 0:
                position.created_ms = stamp
        else:
            closing = min(qty, abs(position.amount))
            direction = D(1) if position.amount > 0 else D(-1)
            realized = closing * (price - position.entry_price) * direction
            if qty > abs(position.amount):
                position.entry_price = price
                position.created_ms = stamp
        position.amount += signed
        if position.amount == 0:
            position.entry_price = D(0)
        position.realized_pnl += realized
        position.updated_ms = stamp
        return realized

    # ------------------------------------------------------------- triggers
    def _on_price_change(self, market: MarketSpec) -> None:
        price_now = self.price(market)
        for order in [o for o in self._open.values() if o.book == market.book and o.symbol == market.symbol]:
            if not order.is_open:  # closed by an earlier order in this loop (e.g. a fired stop)
                continue
            account = self.accounts[order.account_key]
            if not order.working:
                if order.trigger_direction not in ("rise", "fall") or order.trigger_price is None:
                    continue
                crossed = (
                    price_now >= order.trigger_price
                    if order.trigger_direction == "rise"
                    else price_now <= order.trigger_price
                )
                if crossed:
                    self._trigger(account, market, order, price_now)
            elif order.execution == "limit" and self._marketable(order, price_now):
                assert order.price is not None
                self._fill(account, market, order, order.price, maker=True)

    def _trigger(self, account: Account, market: MarketSpec, order: Order, price_now: Decimal) -> None:
        if order.trigger_mode == "spawn_child":
            child = Order(
                venue=order.venue,
                market_type=order.market_type,
                account_key=order.account_key,
                symbol=order.symbol,
                side=order.side,
                venue_type="MARKET" if order.execution == "market" else "LIMIT",
                execution=order.execution,
                quantity=order.quantity,
                price=order.price,
                client_order_id=order.client_order_id,
                time_in_force=order.time_in_force or "GTC",
                reduce_only=order.reduce_only,
                transport=order.transport,
                parent_order_id=order.order_id,
                extra={"position_side": order.extra.get("position_side", "BOTH")},
            )
            order.updated_ms = now_ms()
            try:
                if order.extra.get("close_position"):
                    amount = account.position(market.book, market.symbol).amount
                    closes = (order.side == SELL and amount > 0) or (order.side == BUY and amount < 0)
                    if not closes:
                        raise Rejection(REDUCE_ONLY_REJECTED, "nothing to close")
                    child.quantity, child.reduce_only = abs(amount), True
                self.submit(child)
            except Rejection:
                self._close(order, EXPIRED)
                return
            self._close(order, TRIGGERED)
            order.child_order_id = child.order_id
            order.extra["trigger_time"] = order.updated_ms
            return
        order.working = True
        order.extra["trigger_time"] = now_ms()
        self._unlock(account, order)
        if self._marketable(order, price_now):
            try:
                self._check_funds(account, market, order, price_now)
            except Rejection:
                self._close(order, EXPIRED)
                return
            self._fill(account, market, order, price_now, maker=False)
        else:
            self._lock(account, market, order)

    # ------------------------------------------------------------ snapshots
    def balances_snapshot(self, key: str | None = None) -> dict[str, Any]:
        result = {}
        for account in self.accounts.values():
            if key and account.key != key:
                continue
            result[account.key] = {
                wallet: {
                    asset: {"free": plain(b.free), "locked": plain(b.locked), "total": plain(b.total)}
                    for asset, b in assets.items()
                }
                for wallet, assets in account.wallets.items()
            }
        return result

    def positions_snapshot(self, key: str | None = None) -> list[dict[str, Any]]:
        result = []
        for account in self.accounts.values():
            if key and account.key != key:
                continue
            for (book, symbol), position in account.positions.items():
                market = self.markets[(book, symbol)]
                result.append(
                    {
                        "account_key": account.key,
                        "venue": market.venue,
                        "market_type": market.market_type,
                        "symbol": symbol,
                        "amount": plain(position.amount),
                        "entry_price": plain(position.entry_price),
                        "realized_pnl": plain(position.realized_pnl),
                        "leverage": self.leverage(account, market),
                        "stop_loss": plain(position.stop_loss) if position.stop_loss is not None else None,
                        "take_profit": plain(position.take_profit) if position.take_profit is not None else None,
                        "margin_type": account.margin_type.get((book, symbol), "CROSSED"),
                        "updated_ms": position.updated_ms,
                    }
                )
        return result

    def prices_snapshot(self) -> list[dict[str, Any]]:
        return [
            {
                "venue": m.venue,
                "market_type": m.market_type,
                "symbol": m.symbol,
                "unified_symbol": m.unified_symbol,
                "price": plain(self.prices[(m.book, m.symbol)]),
            }
            for m in self._market_list
        ]
