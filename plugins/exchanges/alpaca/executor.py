"""One Alpaca account's order placement: resolve, size, check the market clock, send.

The alert is resolved and sized by core (``core.trading.sizing.prepare_alert`` on the assets as
core ``Market`` objects, reading the account through ``reader.AlpacaAccountReader``), exactly
as for every venue; this module adds what is Alpaca's own:

* Amounts: shares or coins (fractional shares where the asset is ``fractionable``, to 9
  decimals); a dollar amount (``amount_type`` quote, or a percentage of the buying
  power) on a market buy goes as ``notional``, in cents; percentages of the position
  and ``target`` / ``close`` move the holding (no short selling through alerts).
  Alpaca's minimum values are checked: $1 for fractional stock orders, $10 for USD
  crypto buys.
* ``order_type`` market, limit, stop, stop_limit as Alpaca's ``type`` (crypto: no stop).
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
* ``cancel`` / ``cancel_all``: by order id or client order id / every open order of
  the symbol; one already closed, or none open, is answered without sending.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import ROUND_DOWN, Decimal
from typing import Any

from core.errors import OrderRejected
from core.pipeline.models import Alert, OrderRequest, OrderResult, decimal_str
from core.trading.execution import Executor, LookupResult
from core.trading.sizing import prepare_alert
from plugins.exchanges.alpaca.assets import Asset, AssetBook
from plugins.exchanges.alpaca.client import AlpacaClient, NotFound
from plugins.exchanges.alpaca.reader import AlpacaAccountReader, refuse, status_word
from plugins.exchanges.maintenance import BackgroundTask

log = logging.getLogger(__name__)

# TradingView's {{exchange}} for US stocks; an alert naming one may go to an Alpaca account.
US_STOCK_VENUES = frozenset({"alpaca", "nasdaq", "nyse", "amex", "arca", "nysearca", "bats", "cboe", "otc"})
CENT = Decimal("0.01")


def _flag(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


class AlpacaExecutor(Executor):
    """Orders for one Alpaca account (paper or live) through its REST API."""

    route = "rest"

    def __init__(self, account: str, options: Any, client: AlpacaClient | None = None):
        super().__init__(account, "alpaca")
        self.options = options
        self.client = client or AlpacaClient(
            options.endpoint,
            options.api_key.get_secret_value(),
            options.secret.get_secret_value(),
            timeout=options.timeout,
            clock_max_age=options.clock_max_age,
        )
        self.assets = AssetBook([])
        self._maintenance = BackgroundTask()

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
        self._maintenance.start(self._maintain, f"alpaca-assets-{self.account}")

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self.options.retry_seconds if not self.ready else self.options.assets_refresh_seconds)
            try:
                await self._load_assets()
            except Exception as exc:
                if self.ready:
                    log.warning(
                        "account %s (alpaca): reloading assets failed, keeping the %d loaded: %s",
                        self.account,
                        len(self.assets),
                        exc,
                    )
                else:
                    self.error = f"{type(exc).__name__}: {exc}"[:300]
                    log.warning("account %s (alpaca) is still not ready: %s", self.account, self.error)
                continue
            if not self.ready:
                self.ready, self.error = True, None
                log.info("account %s (alpaca) is ready: %d assets", self.account, len(self.assets))

    async def close(self) -> None:
        await self._maintenance.stop()
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
            raise refuse(
                f"'{ticker}' is not a tradable asset on this Alpaca account"
                + (f" (did you mean {', '.join(hint)}?)" if hint else ""),
                "unknown_symbol",
            )
        return asset

    async def prepare(self, alert: Alert, client_order_id: str) -> OrderRequest:
        asset = self.resolve(alert.symbol)
        reader = AlpacaAccountReader(self.client, alert)
        if alert.action in ("cancel", "cancel_all"):
            return await prepare_alert(
                self.assets.markets,
                alert,
                reader,
                account=self.account,
                client_order_id=client_order_id,
                default_type="spot",
            )
        self._refuse_unsupported(alert, asset)
        extended = _flag(self._alert_field(alert, "extended_hours", self.options.extended_hours)) and not asset.crypto
        if not asset.crypto:  # crypto trades around the clock
            await self._check_market_hours(alert.order_type, extended)
        # Prices on the asset's own tick first (a stock's tick depends on its price), then
        # core's sizing, precision and limits, as for every venue.
        rounded = {
            name: asset.round_price(getattr(alert, name))
            for name in ("price", "stop_price", "stop_loss", "take_profit")
            if getattr(alert, name) is not None
        }
        order = await prepare_alert(
            self.assets.markets,
            alert.model_copy(update=rounded),
            reader,
            account=self.account,
            client_order_id=client_order_id,
            default_type="spot",
        )
        return self._alpaca_rules(order, alert, asset, extended)

    def _alpaca_rules(self, order: OrderRequest, alert: Alert, asset: Asset, extended: bool) -> OrderRequest:
        """What Alpaca adds to core's order: notionals in cents and Alpaca's minimums, time
        in force, extended hours, and stop-loss/take-profit as Alpaca's order class."""
        update: dict[str, Any] = {}
        if order.cost is not None:
            value: Decimal | None = Decimal(order.cost).quantize(CENT, rounding=ROUND_DOWN)
            update["cost"] = decimal_str(value)
        elif order.reference_price is not None and order.amount is not None:
            value = Decimal(order.amount) * Decimal(order.reference_price)
        else:
            value = None  # a market order without a price: Alpaca checks
        qty = Decimal(order.amount) if order.amount is not None else None
        fractional = order.cost is not None or (qty is not None and qty != qty.to_integral_value())
        # Alpaca's minimums: $1 for a fractional or dollar-amount stock order, $10 for a USD
        # crypto buy (a sell of what is held may be smaller).
        minimum = asset.min_notional if (order.side == "buy" if asset.crypto else fractional) else None
        if minimum and value is not None and value < minimum:
            raise refuse(
                f"the order value {decimal_str(value)} {asset.quote} is below Alpaca's minimum of "
                f"{decimal_str(minimum)} for {asset.symbol}",
                "cost_below_minimum",
            )
        brackets = order.stop_loss is not None or order.take_profit is not None
        tif = self._time_in_force(alert, asset, fractional=fractional, extended=extended, brackets=brackets)
        params: dict[str, Any] = {"time_in_force": tif}
        if extended:
            params["extended_hours"] = True
        if brackets:
            self._check_brackets(alert, asset, fractional, extended)
            params["order_class"] = "bracket" if order.stop_loss and order.take_profit else "oto"
        return order.model_copy(update={**update, "time_in_force": tif, "params": params})

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
        """What Alpaca lacks that core would pass on (core itself refuses reduce-only,
        leverage and margin mode on a spot market, and market types that are not listed)."""
        if alert.post_only or alert.time_in_force == "PO":
            raise refuse("Alpaca has no post-only orders", "not_supported")
        if asset.crypto and alert.order_type == "stop":
            raise refuse(
                "Alpaca takes market, limit and stop-limit orders for crypto, not stop orders", "not_supported"
            )

    async def _check_market_hours(self, order_type: str, extended: bool) -> None:
        if extended:
            if order_type != "limit":
                raise refuse(
                    "extended-hours orders must be limit orders with a price (Alpaca's rule)",
                    "extended_hours_limit_only",
                )
            return
        if not await self.client.market_is_open():
            raise refuse(
                "the US stock market is closed; send 'extended_hours': true with a limit order to "
                "trade pre-market or after hours",
                "market_closed",
            )

    @staticmethod
    def _time_in_force(alert: Alert, asset: Asset, *, fractional: bool, extended: bool, brackets: bool) -> str:
        wanted = alert.time_in_force
        if wanted == "PO":
            raise refuse("Alpaca has no post-only orders")
        if asset.crypto:
            if wanted == "FOK":
                raise refuse("Alpaca takes gtc and ioc for crypto orders, not fok")
            return "ioc" if wanted == "IOC" else "gtc"
        if extended or fractional:
            if wanted is not None:
                kind = "extended-hours" if extended else "fractional (or dollar-amount)"
                raise refuse(f"{kind} orders are day orders on Alpaca; leave time_in_force out")
            return "day"
        if brackets and wanted in ("IOC", "FOK"):
            raise refuse("bracket orders are day or GTC orders on Alpaca")
        return {"GTC": "gtc", "IOC": "ioc", "FOK": "fok"}.get(wanted or "", "day")

    @staticmethod
    def _check_brackets(alert: Alert, asset: Asset, fractional: bool, extended: bool) -> None:
        """Alpaca's rules for bracket/OTO orders (core has already put the stop-loss below
        and the take-profit above a long entry, on the tick)."""
        if asset.crypto:
            raise refuse(
                "Alpaca has no stop-loss/take-profit (bracket) orders for crypto; send the exits as their own alerts",
                "brackets_unsupported",
            )
        if fractional:
            raise refuse(
                "Alpaca's bracket orders need whole shares (no fractional or dollar amounts)", "brackets_unsupported"
            )
        if extended:
            raise refuse("Alpaca's bracket orders cannot trade in extended hours", "brackets_unsupported")
        if alert.order_type not in ("market", "limit"):
            raise refuse("stop-loss/take-profit ride on market or limit entries on Alpaca", "brackets_unsupported")

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
        body: dict[str, Any] = {
            "symbol": order.symbol,
            "side": order.side,
            "type": order.order_type,
            "time_in_force": order.params.get("time_in_force", order.time_in_force or "day"),
            "client_order_id": order.client_order_id,
        }
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
        legs = [
            {
                "order_id": leg.get("id"),
                "client_order_id": leg.get("client_order_id"),
                "kind": "take_profit" if leg.get("type") == "limit" else "stop_loss",
                "price": leg.get("limit_price") if leg.get("type") == "limit" else leg.get("stop_price"),
                "status": leg.get("status"),
            }
            for leg in (data.get("legs") or [])
        ]
        return OrderResult(
            account=self.account,
            exchange=self.exchange,
            symbol=str(data.get("symbol") or order.symbol),
            side=data.get("side") or order.side,
            order_type=str(data.get("type") or order.order_type),
            amount=data.get("qty") or order.amount or (data.get("filled_qty") if data.get("notional") else None),
            price=data.get("limit_price"),
            order_id=data.get("id"),
            client_order_id=str(data.get("client_order_id") or order.client_order_id),
            status=status_word(data.get("status")),
            filled=data.get("filled_qty"),
            average=data.get("filled_avg_price"),
            route=self.route,
            children=legs,
            info=data,
        )

    async def _cancel(self, order: OrderRequest) -> OrderResult:
        target = await self._target(order)
        if target is None:
            raise refuse("no such order on this Alpaca account", "order_not_found")
        await self.client.cancel_order(str(target["id"]))
        try:
            target = await self.client.order(str(target["id"]))
        except NotFound:
            pass
        result = self.result(target, order)
        return result.model_copy(
            update={
                "client_order_id": order.client_order_id,
                "children": [
                    {
                        "order_id": target.get("id"),
                        "client_order_id": target.get("client_order_id"),
                        "status": target.get("status"),
                    }
                ],
            }
        )

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
        return OrderResult(
            account=self.account,
            exchange=self.exchange,
            symbol=order.symbol,
            client_order_id=order.client_order_id,
            status="canceled",
            children=canceled,
        )

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
                return LookupResult.found(
                    self.result(target, order).model_copy(update={"client_order_id": order.client_order_id})
                )
            return LookupResult.absent("the order is not canceled")
        if not await self.client.open_orders(order.symbol):
            return LookupResult.found(
                OrderResult(
                    account=self.account,
                    exchange=self.exchange,
                    symbol=order.symbol,
                    client_order_id=order.client_order_id,
                    status="canceled",
                )
            )
        return LookupResult.absent(f"{order.symbol} still has open orders")
