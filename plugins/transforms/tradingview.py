"""TradingView normalization: placeholders, field aliases, sides, amounts and prices.

Runs first in the transform chain (a built-in), mapping TradingView's message shapes
onto ``core.models.Alert`` fields; the symbol itself is resolved later against the
account's loaded markets (``core.markets``), where ``BINANCE:BTCUSDT``, ``BTCUSDT.P`` and
friends are understood.

* A placeholder left unreplaced (``"{{close}}"``) anywhere in the alert → 422 naming
  the field; it is never traded.
* Aliases: ``ticker`` → symbol; ``action``/``order_action`` → side; ``contracts``/
  ``qty``/``quantity``/``size`` → amount; ``id`` → alert_id; ``type``/``orderType`` →
  order_type; ``marketType`` → market_type.
* Field names in any case (``Ticker``, ``Side``, ``Contracts``).
* Sides in any case: buy/long → buy, sell/short → sell.
* ``market_type`` in any case: spot; swap/perp/perpetual/linear/inverse → swap;
  future/futures/delivery → future.
* Amounts and prices may be strings (``"0.01"``); thousands separators are refused.
"""

from __future__ import annotations

import re
from typing import Any

from core.config import PluginOptions
from core.errors import Unprocessable
from core.plugins import hookimpl

PLACEHOLDER = re.compile(r"\{\{.*?\}\}")
SIDES = {"buy": "buy", "long": "buy", "sell": "sell", "short": "sell"}
ORDER_TYPES = {"market": "market", "mkt": "market", "limit": "limit", "lmt": "limit"}
ALERT_FIELD_NAMES = ("symbol", "side", "amount", "price", "order_type", "market_type", "alert_id", "account", "exchange", "params")
MARKET_TYPES = {"spot": "spot", "swap": "swap", "perp": "swap", "perps": "swap", "perpetual": "swap", "perpetuals": "swap",
                "linear": "swap", "inverse": "swap", "future": "future", "futures": "future", "delivery": "future"}


def _find_placeholder(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        return path if PLACEHOLDER.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _find_placeholder(item, f"{path}.{key}" if path else str(key))
            if found:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _find_placeholder(item, f"{path}[{i}]")
            if found:
                return found
    return None


class Plugin:
    class Options(PluginOptions):
        aliases: dict[str, str] = {
            "ticker": "symbol",
            "action": "side",
            "order_action": "side",
            "contracts": "amount",
            "qty": "amount",
            "quantity": "amount",
            "size": "amount",
            "id": "alert_id",
            "type": "order_type",
            "orderType": "order_type",
            "marketType": "market_type",
        }

    def __init__(self, options: "Plugin.Options"):
        self.options = options

    @hookimpl
    def transform_payload(self, payload: dict[str, Any]) -> None:
        field = _find_placeholder(payload, "")
        if field is not None:
            raise Unprocessable(f"field '{field}' holds an unreplaced TradingView placeholder", code="unreplaced_placeholder")
        # Field names in any case ("Ticker", "Side"); secrets keep theirs (apiKey, secret).
        by_lower = {name.lower(): name for name in (*self.options.aliases, *ALERT_FIELD_NAMES)}
        for key in [k for k in payload if isinstance(k, str) and k not in by_lower.values() and k.lower() in by_lower]:
            if by_lower[key.lower()] not in payload:
                payload[by_lower[key.lower()]] = payload.pop(key)
        for alias, target in self.options.aliases.items():
            if alias in payload and target not in payload:
                payload[target] = payload.pop(alias)
        if isinstance(payload.get("side"), str):
            side = payload["side"].strip().lower()
            if side not in SIDES:
                raise Unprocessable(f"side must be buy or sell (or long/short), got {payload['side'][:20]!r}", code="invalid_alert")
            payload["side"] = SIDES[side]
        if isinstance(payload.get("order_type"), str):
            kind = payload["order_type"].strip().lower()
            payload["order_type"] = ORDER_TYPES.get(kind, kind)
        if isinstance(payload.get("market_type"), str):
            kind = payload["market_type"].strip().lower()
            payload["market_type"] = MARKET_TYPES.get(kind, kind)
        for key in ("amount", "price"):
            if isinstance(payload.get(key), str):
                payload[key] = payload[key].strip()
        for key in ("symbol", "exchange", "account"):
            if isinstance(payload.get(key), str):
                payload[key] = payload[key].strip()
        if isinstance(payload.get("alert_id"), (int, float)) and not isinstance(payload.get("alert_id"), bool):
            payload["alert_id"] = str(payload["alert_id"])
        if payload.get("exchange") == "":
            payload.pop("exchange")
