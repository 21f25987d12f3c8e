"""One Alpaca account's order placement: resolve, size, check the market clock, send.

What an alert becomes on Alpaca:

* ``amount_type`` base → ``qty`` (shares or coins; fractional shares where the asset is
  ``fractionable``, truncated to 9 decimals); quote → ``notional`` (dollars) for market
  orders, else ``qty`` = amount / price; percent_of_balance → of the buying power
  (buys) or of the position (sells); percent_of_position → of the position.
* ``order_type`` market, limit, stop, stop_limit as Alpaca's ``type``.
* ``stop_loss``/``take_profit`` on a stock → one bracket order (both) or an OTO order
  (one), Alpaca's own ``order_class``; whole shares, day or GTC. Crypto has no
  bracket orders at Alpaca: such an alert is refused (422) rather than split into
  separate orders that could sell coins the entry never bought.
* Market hours: a stock order while the market is closed (``GET /v2/clock``) is
  refused (422) unless the alert says ``extended_hours: true``; then it must be a
  limit order and is sent as Alpaca requires (``time_in_force`` day,
  ``extended_hours`` true). Crypto trades at any time.
* ``time_in_force``: stocks default to day (fractional and extended-hours orders
  must be day); crypto to gtc (Alpaca takes gtc and ioc only).
* ``close`` sells (or buys back) the whole position; ``cancel`` / ``cancel_all``
  cancel by order id or client order id / every open order of the symbol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from decimal import ROUND_DOWN, Decimal
from typing import Any

from core.errors import OrderRejected, Unprocessable
from core.execution import Executor, LookupResult
from core.models import Alert, NothingToDo, OrderRequest, OrderResult, decimal_str
from core.venue import order_status
from plugins.exchanges.alpaca.assets import Asset, AssetBook
from plugins.exchanges.alpaca.client import AlpacaClient, NotFound

log = logging.getLogger(__name__)

# TradingView's {{exchange}} for US stocks; an alert naming one may go to an Alpaca account.
US_STOCK_VENUES = frozenset({"alpaca", "nasdaq", "nyse", "amex", "arca", "nysearca", "bats", "cboe", "otc"})
CENT = Decimal("0.01")

# Alpaca's statuses for a live order that core's status words do not list.
STILL_OPEN = frozenset({"accepted_for_bidding", "calculated", "pending_replace", "stopped", "suspended"})


def status_word(alpaca_status: object) -> str:
    """An Alpaca order status in the router's words (filled, open, canceled, ...)."""
    word = str(alpaca_status or "").lower()
    return "open" if word in STILL_OPEN else order_status(word)


def _flag(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


def _refuse(message: str, code: str = "unprocessable") -> Unprocessable:
    return Unprocessable(message, code=code)


class AlpacaExecutor(Executor):
    """Orders for one Alpaca account (paper or live) through its REST API."""

    route = "rest"

    def __init__(self, account: str, options: Any, client: AlpacaClient | None = None):
        super().__init__(account, "alpaca")
        self.options = options
        self.client = client or AlpacaClient(
            options.endpoint, options.api_key.get_secret_value(), options.secret.get_secret_value(),
            timeout=options.timeout, clock_max_age=options.clock_max_age)
        self.assets = AssetBook([])
        self._maintenance: asyncio.Task | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self._load_assets()

    async def _load_assets(self) -> None:
        rows: list[dict[str, Any]] = []
        for asset_class in self.options.asset_classes:
            rows.extend(await self.client.assets(asset_class))
        assets = AssetBook([Asset.from_api(row) for row in rows if row.get("symbol")])
        if not len(assets):
            raise RuntimeError("Alpaca listed no tradable assets for this account")
        self.assets = assets

    def start_maintenance(self) -> None:
        """Background: retry an account that failed to start; reload the assets of a ready
        one (new listings, assets that stopped trading). The router starts executors once."""
        if self._maintenance is None:
            self._maintenance = asyncio.create_task(self._maintain(), name=f"alpaca-assets-{self.account}")

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self.options.retry_seconds if not self.ready else self.options.assets_refresh_seconds)
            try:
                await self._load_assets()
            except Exception as exc:
                if self.ready:
                    log.warning("account %s (alpaca): reloading assets failed, keeping the %d loaded: %s",
                                self.account, len(self.assets), exc)
                else:
                    self.error = f"{type(exc).__name__}: {exc}"[:300]
                    log.warning("account %s (alpaca) is still not ready: %s", self.account, self.error)
                continue
            if not self.ready:
                self.ready, self.error = True, None
                log.info("account %s (alpaca) is ready: %d assets", self.account, len(self.assets))

    async def close(self) -> None:
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._maintenance
            self._maintenance = None
        await self.client.close()

    def matches_exchange(self, name: str) -> bool:
        return name.lower() in US_STOCK_VENUES

    def lane_key(self, alert: Alert) -> str:
        asset = self.assets.resolve(alert.symbol)
        return asset.symbol if asset else alert.symbol.upper()

    def status(self) -> dict[str, Any]:
        return {**super().status(), "paper": self.options.is_paper, "assets": len(self.assets)}

    # ------------------------------------------------------------ prepare

    def resolve(self, ticker: str) -> Asset:
        asset = self.assets.resolve(ticker)
        if asset is None:
            hint = self.assets.suggestions(ticker)
            raise _refuse(f"'{ticker}' is not a tradable asset on this Alpaca account"
                          + (f" (did you mean {', '.join(hint)}?)" if hint else ""), "unknown_symbol")
        return asset

    async def prepare(self, alert: Alert, client_order_id: str) -> OrderRequest:
        asset = self.resolve(alert.symbol)
        base = {"account": self.account, "exchange": self.exchange, "symbol": asset.symbol,
                "market_type": asset.asset_class, "client_order_id": client_order_id}
        if alert.action == "cancel":
            return OrderRequest(**base, action="cancel", cancel_id=alert.order_id,
                                cancel_client_order_id=alert.cancel_client_order_id)
        if alert.action == "cancel_all":
            return OrderRequest(**base, action="cancel_all")
        if alert.action in ("target", "flip"):
            raise _refuse(f"'{alert.action}' alerts are not supported on Alpaca accounts yet; send buy/sell or close")
        self._refuse_unsupported(alert, asset)
        extended = _flag(self._alert_field(alert, "extended_hours", self.options.extended_hours))
        side, qty, notional, position = await self._size(alert, asset)
        order_type = alert.order_type
        limit_price = asset.round_price(alert.price) if order_type in ("limit", "stop_limit") and alert.price else None
        stop_price = asset.round_price(alert.stop_price) if alert.stop_price else None
        if asset.crypto:
            extended = False  # crypto trades around the clock; Alpaca has no session flag for it
        else:
            await self._check_market_hours(order_type, extended)
        fractional = notional is not None or (qty is not None and qty != qty.to_integral_value())
        brackets = alert.stop_loss is not None or alert.take_profit is not None
        tif = self._time_in_force(alert, asset, fractional=fractional, extended=extended, brackets=brackets)
        params: dict[str, Any] = {"time_in_force": tif}
        if extended:
            params["extended_hours"] = True
        stop_loss = take_profit = None
        if brackets:
            stop_loss, take_profit = self._brackets(alert, asset, side, fractional, extended, limit_price)
            params["order_class"] = "bracket" if stop_loss and take_profit else "oto"
        return OrderRequest(
            **base, side=side, order_type=order_type, amount=decimal_str(qty), cost=decimal_str(notional),
            price=decimal_str(limit_price), stop_price=decimal_str(stop_price), stop_loss=stop_loss,
            take_profit=take_profit, time_in_force=tif, reference_price=decimal_str(limit_price or alert.price),
            position_before=decimal_str(position), params=params,
        )

    @staticmethod
    def _alert_field(alert: Alert, name: str, default: Any) -> Any:
        """A field the router's Alert model does not have (``extended_hours``), from the
        alert's extra fields or ``params``, spelled snake_case or camelCase in any case."""
        wanted = name.replace("_", "").lower()
        for source in (alert.raw, alert.params):
            for key, value in source.items():
                if isinstance(key, str) and key.replace("_", "").lower() == wanted:
                    return value
        return default

    @staticmethod
    def _refuse_unsupported(alert: Alert, asset: Asset) -> None:
        if alert.post_only:
            raise _refuse("Alpaca has no post-only orders")
        if alert.reduce_only and alert.action == "order":
            raise _refuse("Alpaca has no reduce-only orders; send a 'close' alert to close the position")
        if alert.leverage is not None or alert.margin_mode is not None:
            raise _refuse("leverage and margin mode are not set per order on Alpaca")
        if alert.market_type not in (None, "spot"):
            raise _refuse(f"Alpaca trades stocks and spot crypto, not {alert.market_type}")
        if asset.crypto and alert.order_type == "stop":
            raise _refuse("Alpaca takes market, limit and stop-limit orders for crypto, not stop orders")

    async def _size(self, alert: Alert, asset: Asset) -> tuple[str, Decimal | None, Decimal | None, Decimal | None]:
        """(side, qty, notional, position before) for an order or close alert."""
        position: Decimal | None = None
        if alert.action == "close" or alert.amount_type == "percent_of_position" or (
                alert.amount_type == "percent_of_balance" and alert.side == "sell"):
            row = await self.client.position(asset.symbol)
            position = Decimal(str(row["qty"])) if row else Decimal(0)
        if alert.action == "close":
            if not position:
                raise NothingToDo(f"no {asset.symbol} position to close")
            side = "sell" if position > 0 else "buy"
            share = alert.amount / 100 if alert.amount is not None and alert.amount_type in (
                "percent_of_position", "percent_of_balance") else Decimal(1)
            return side, self._qty(asset, abs(position) * share), None, position
        side = alert.side or "buy"
        amount = alert.amount or Decimal(0)
        price = alert.price
        if alert.amount_type == "base":
            return side, self._qty(asset, amount), None, position
        if alert.amount_type == "percent_of_position" or (alert.amount_type == "percent_of_balance" and side == "sell"):
            if not position:
                raise _refuse(f"no {asset.symbol} position to take {amount}% of")
            return side, self._qty(asset, abs(position) * amount / 100), None, position
        if alert.amount_type == "percent_of_balance":
            account = await self.client.account()
            power = account.get("non_marginable_buying_power" if asset.crypto else "buying_power") or "0"
            dollars = Decimal(str(power)) * amount / 100
        else:  # quote: dollars
            dollars = amount
        if alert.order_type == "market" and alert.stop_loss is None and alert.take_profit is None:
            return side, None, self._notional(asset, side, dollars), position
        if price is None:
            raise _refuse("a dollar amount on a limit, stop or bracket order needs the alert's price to convert it to shares")
        return side, self._qty(asset, dollars / price), None, position

    def _qty(self, asset: Asset, qty: Decimal) -> Decimal:
        if not asset.crypto and not asset.fractionable and qty != qty.to_integral_value():
            whole = qty.to_integral_value(rounding=ROUND_DOWN)
            if whole < 1:
                raise _refuse(f"{asset.symbol} is not fractionable on Alpaca; the amount must be at least one whole share")
            qty = whole
        rounded = asset.round_qty(qty)
        if rounded <= 0:
            raise _refuse(f"the amount {decimal_str(qty)} is below {asset.symbol}'s smallest step "
                          f"{decimal_str(asset.qty_step)}", "below_minimum")
        if asset.crypto and asset.min_order_size and rounded < asset.min_order_size:
            raise _refuse(f"the amount {decimal_str(rounded)} is below {asset.symbol}'s minimum order size "
                          f"{decimal_str(asset.min_order_size)}", "below_minimum")
        return rounded

    @staticmethod
    def _notional(asset: Asset, side: str, dollars: Decimal) -> Decimal:
        if not asset.crypto and not asset.fractionable:
            raise _refuse(f"{asset.symbol} is not fractionable on Alpaca: a dollar amount cannot be bought; send shares")
        notional = dollars.quantize(CENT, rounding=ROUND_DOWN)
        # Alpaca's crypto minimum applies to buys only (a sell of what is held may be smaller).
        minimum = (asset.min_notional if side == "buy" or not asset.crypto else None) or Decimal(0)
        if notional <= 0 or notional < minimum:
            raise _refuse(f"the order value {decimal_str(notional)} is below Alpaca's minimum of "
                          f"{decimal_str(minimum)} for {asset.symbol}", "below_minimum")
        return notional

    async def _check_market_hours(self, order_type: str, extended: bool) -> None:
        if extended:
            if order_type != "limit":
                raise _refuse("extended-hours orders must be limit orders with a price (Alpaca's rule)",
                              "extended_hours_limit_only")
            return
        if not await self.client.market_is_open():
            raise _refuse("the US stock market is closed; send 'extended_hours': true with a limit order to "
                          "trade pre-market or after hours", "market_closed")

    @staticmethod
    def _time_in_force(alert: Alert, asset: Asset, *, fractional: bool, extended: bool, brackets: bool) -> str:
        wanted = alert.time_in_force
        if wanted == "PO":
            raise _refuse("Alpaca has no post-only orders")
        if asset.crypto:
            if wanted == "FOK":
                raise _refuse("Alpaca takes gtc and ioc for crypto orders, not fok")
            return "ioc" if wanted == "IOC" else "gtc"
        if extended or fractional:
            if wanted is not None:
                kind = "extended-hours" if extended else "fractional (or dollar-amount)"
                raise _refuse(f"{kind} orders are day orders on Alpaca; leave time_in_force out")
            return "day"
        if brackets and wanted in ("IOC", "FOK"):
            raise _refuse("bracket orders are day or GTC orders on Alpaca")
        return {"GTC": "gtc", "IOC": "ioc", "FOK": "fok"}.get(wanted or "", "day")

    @staticmethod
    def _brackets(alert: Alert, asset: Asset, side: str, fractional: bool, extended: bool,
                  limit_price: Decimal | None) -> tuple[str | None, str | None]:
        if asset.crypto:
            raise _refuse("Alpaca has no stop-loss/take-profit (bracket) orders for crypto; send the exits as "
                          "their own alerts", "brackets_unsupported")
        if fractional:
            raise _refuse("Alpaca's bracket orders need whole shares (no fractional or dollar amounts)",
                          "brackets_unsupported")
        if extended:
            raise _refuse("Alpaca's bracket orders cannot trade in extended hours", "brackets_unsupported")
        if alert.order_type not in ("market", "limit"):
            raise _refuse("stop-loss/take-profit ride on market or limit entries on Alpaca")
        stop_loss = asset.round_price(alert.stop_loss) if alert.stop_loss else None
        take_profit = asset.round_price(alert.take_profit) if alert.take_profit else None
        entry = limit_price or alert.price
        if entry is not None:
            below, above = (stop_loss, take_profit) if side == "buy" else (take_profit, stop_loss)
            if below is not None and below > entry - CENT or above is not None and above < entry + CENT:
                raise _refuse(f"for a {side} at {decimal_str(entry)} the stop-loss must be on the losing side and "
                              f"the take-profit on the winning side, at least a cent away")
        return decimal_str(stop_loss), decimal_str(take_profit)

    # ------------------------------------------------------------ submit

    async def submit(self, order: OrderRequest) -> OrderResult:
        if order.action == "cancel":
            return await self._cancel(order)
        if order.action == "cancel_all":
            return await self._cancel_all(order)
        data = await self.client.submit_order(self.order_body(order))
        return self.result(data, order)

    @staticmethod
    def order_body(order: OrderRequest) -> dict[str, Any]:
        """The ``POST /v2/orders`` body of an order."""
        body: dict[str, Any] = {"symbol": order.symbol, "side": order.side, "type": order.order_type,
                                "time_in_force": order.params.get("time_in_force", order.time_in_force or "day"),
                                "client_order_id": order.client_order_id}
        if order.cost is not None:
            body["notional"] = order.cost
        else:
            body["qty"] = order.amount
        if order.price is not None:
            body["limit_price"] = order.price
        if order.stop_price is not None:
            body["stop_price"] = order.stop_price
        if order.params.get("extended_hours"):
            body["extended_hours"] = True
        if order.params.get("order_class"):
            body["order_class"] = order.params["order_class"]
            if order.take_profit is not None:
                body["take_profit"] = {"limit_price": order.take_profit}
            if order.stop_loss is not None:
                body["stop_loss"] = {"stop_price": order.stop_loss}
        return body

    def result(self, data: dict[str, Any], order: OrderRequest) -> OrderResult:
        legs = [{"order_id": leg.get("id"), "client_order_id": leg.get("client_order_id"),
                 "kind": "take_profit" if leg.get("type") == "limit" else "stop_loss",
                 "price": leg.get("limit_price") if leg.get("type") == "limit" else leg.get("stop_price"),
                 "status": leg.get("status")} for leg in (data.get("legs") or [])]
        return OrderResult(
            account=self.account, exchange=self.exchange, symbol=str(data.get("symbol") or order.symbol),
            side=data.get("side") or order.side, order_type=str(data.get("type") or order.order_type),
            amount=data.get("qty") or order.amount or (data.get("filled_qty") if data.get("notional") else None),
            price=data.get("limit_price"), order_id=data.get("id"),
            client_order_id=str(data.get("client_order_id") or order.client_order_id),
            status=status_word(data.get("status")),
            filled=data.get("filled_qty"), average=data.get("filled_avg_price"), route=self.route,
            children=legs, info=data,
        )

    async def _cancel(self, order: OrderRequest) -> OrderResult:
        target = await self._target(order)
        if target is None:
            raise _refuse("no such order on this Alpaca account", "order_not_found")
        await self.client.cancel_order(str(target["id"]))
        try:
            target = await self.client.order(str(target["id"]))
        except NotFound:
            pass
        result = self.result(target, order)
        return result.model_copy(update={"client_order_id": order.client_order_id,
                                         "children": [{"order_id": target.get("id"),
                                                       "client_order_id": target.get("client_order_id"),
                                                       "status": target.get("status")}]})

    async def _target(self, order: OrderRequest) -> dict[str, Any] | None:
        try:
            if order.cancel_id:
                return await self.client.order(order.cancel_id)
            if order.cancel_client_order_id:
                return await self.client.order_by_client_id(order.cancel_client_order_id)
        except NotFound:
            return None
        return None

    async def _cancel_all(self, order: OrderRequest) -> OrderResult:
        canceled = []
        for row in await self.client.open_orders(order.symbol):
            try:
                await self.client.cancel_order(str(row["id"]))
            except OrderRejected:
                continue  # filled or canceled meanwhile
            canceled.append({"order_id": row.get("id"), "client_order_id": row.get("client_order_id")})
        return OrderResult(account=self.account, exchange=self.exchange, symbol=order.symbol,
                           client_order_id=order.client_order_id, status="canceled", children=canceled)

    # ------------------------------------------------------------ lookup

    async def lookup(self, order: OrderRequest) -> LookupResult:
        """Alpaca's own answer: a 404 from ``GET /v2/orders:by_client_order_id`` is Alpaca
        saying for sure that no order has this client id (absent); any other failure
        raises, which the engine reads as "cannot tell, ask again"."""
        if order.action == "create":
            try:
                data = await self.client.order_by_client_id(order.client_order_id)
            except NotFound:
                return LookupResult.absent(f"Alpaca has no order with client id {order.client_order_id}")
            return LookupResult.found(self.result(data, order))
        if order.action == "cancel":
            target = await self._target(order)
            if target is not None and status_word(target.get("status")) == "canceled":
                return LookupResult.found(self.result(target, order).model_copy(
                    update={"client_order_id": order.client_order_id}))
            return LookupResult.absent("the order is not canceled")
        if not await self.client.open_orders(order.symbol):
            return LookupResult.found(OrderResult(account=self.account, exchange=self.exchange, symbol=order.symbol,
                                                  client_order_id=order.client_order_id, status="canceled"))
        return LookupResult.absent(f"{order.symbol} still has open orders")
