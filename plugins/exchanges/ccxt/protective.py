"""Stop-loss and take-profit of an entry on a ccxt exchange.

They ride on the entry where ccxt supports that (``has['createOrderWithTakeProfitAndStopLoss']``:
bybit, okx; ccxt's unified ``stopLoss``/``takeProfit`` params), else follow it as reduce-only
orders of their own (``stopLossPrice``/``takeProfitPrice``) whose client order ids derive from
the entry's (``accounts.ClientIdRule.child``), sized to what the entry leaves open — so a
resend or a reconciliation finds them instead of placing them twice.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import ccxt

from core.pipeline.models import OrderRequest, OrderResult, decimal_str
from core.trading.venue import order_status
from plugins.exchanges.ccxt.errors import never_left
from plugins.exchanges.ccxt.lifecycle import ClientLifecycle

log = logging.getLogger(__name__)


class ProtectiveOrders(ClientLifecycle):
    """An entry's stop-loss and take-profit: attached, or placed after it."""

    def _attaches(self, order: OrderRequest) -> bool:
        """Stop-loss / take-profit ride on the entry (ccxt's unified stopLoss/takeProfit) where
        ccxt supports it — bybit, okx — except on spot market orders (bybit refuses them there)."""
        return bool(self.client.has.get("createOrderWithTakeProfitAndStopLoss")) and (
            order.market_type != "spot" or order.order_type != "market"
        )

    def _protection_plan(
        self, order: OrderRequest, result: OrderResult, raw: dict[str, Any] | None
    ) -> tuple[str, Decimal]:
        """The side and size of the orders protecting what the entry leaves open."""
        market = self.client.market(order.symbol)
        if market.get("contract") and order.position_before is not None and order.amount is not None:
            signed = Decimal(order.amount) if order.side == "buy" else -Decimal(order.amount)
            after = Decimal(order.position_before) + signed
            return ("sell" if after > 0 else "buy"), abs(after)
        filled = Decimal(result.filled or 0)
        size = filled if filled > 0 else Decimal(order.amount or 0)
        if not market.get("contract") and raw:
            for fee in raw.get("fees") or ([raw["fee"]] if raw.get("fee") else []):
                if fee and fee.get("currency") == market.get("base") and fee.get("cost"):
                    size -= Decimal(str(fee["cost"]))  # a spot buy's fee paid in the base currency
        try:
            size = Decimal(self.client.amount_to_precision(order.symbol, str(size)))
        except ccxt.InvalidOrder:
            size = Decimal(0)
        return ("sell" if order.side == "buy" else "buy"), size

    def _child_specs(self, order: OrderRequest) -> list[tuple[str, str, str]]:
        """(kind, trigger price, client order id) of each protective order the entry asks for."""
        specs = []
        for kind, tag, trigger in (("stop_loss", "sl", order.stop_loss), ("take_profit", "tp", order.take_profit)):
            if trigger is not None:
                specs.append((kind, trigger, self.id_rule.child(order.client_order_id, tag)))
        return specs

    async def _protect(
        self,
        order: OrderRequest,
        result: OrderResult,
        raw: dict[str, Any] | None,
        existing: dict[str, dict[str, Any]] | None = None,
    ) -> OrderResult:
        """Report attached stop-loss/take-profit, or place them as reduce-only orders of their own
        after the entry (``existing``: those a lookup already found, which are not placed again)."""
        specs = self._child_specs(order)
        if not specs:
            return result
        if self._attaches(order):
            result.children = [
                {"type": kind, "trigger_price": trigger, "attached": True, "status": "attached"}
                for kind, trigger, _ in specs
            ]
            return result
        side, size = self._protection_plan(order, result, raw)
        contract = order.market_type != "spot"
        children = []
        for kind, trigger, coid in specs:
            child: dict[str, Any] = {
                "type": kind,
                "client_order_id": coid,
                "side": side,
                "amount": decimal_str(size),
                "trigger_price": trigger,
            }
            found = (existing or {}).get(coid)
            if found is not None:
                children.append(
                    child | {"order_id": found.get("id"), "status": order_status(found.get("status") or "open")}
                )
                continue
            if size <= 0:
                children.append(child | {"status": "not_placed", "error": "the entry left nothing to protect"})
                continue
            params: dict[str, Any] = {
                self.id_rule.param: coid,
                ("stopLossPrice" if kind == "stop_loss" else "takeProfitPrice"): float(trigger),
            }
            if contract:
                params["reduceOnly"] = True
            try:
                placed = await self.client.create_order(order.symbol, "market", side, float(size), None, params)
                children.append(
                    child | {"order_id": placed.get("id"), "status": order_status(placed.get("status") or "open")}
                )
            except Exception as exc:
                may_exist = isinstance(exc, ccxt.NetworkError) and not never_left(exc)
                log.warning(
                    "account %s: %s %s for %s was %s: %s",
                    self.account,
                    kind,
                    coid,
                    order.client_order_id,
                    "maybe placed" if may_exist else "not placed",
                    exc,
                )
                children.append(
                    child
                    | {
                        "status": "unknown" if may_exist else "failed",
                        "error": f"{type(exc).__name__}: {str(exc)[:200]}",
                    }
                )
        result.children = children
        return result
