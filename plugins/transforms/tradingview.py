"""TradingView normalization: placeholders, field aliases, sides, actions, amounts and prices.

Runs first in the transform chain (a built-in), mapping TradingView's message shapes
onto ``core.pipeline.models.Alert`` fields; the symbol itself is resolved later against the
account's loaded markets (``core.trading.markets``), where ``BINANCE:BTCUSDT``, ``BTCUSDT.P`` and
friends are understood.

* A placeholder left unreplaced (``"{{close}}"``) anywhere in the alert → 422 naming
  the field; it is never traded.
* Aliases: ``ticker`` → symbol; ``order_action`` → side; ``contracts``/``qty``/
  ``quantity``/``size`` → amount; ``id`` → alert_id; ``type``/``orderType`` →
  order_type; ``marketType`` → market_type; ``amountType`` → amount_type;
  ``marketPosition`` → market_position; ``position_size``/``positionSize``/
  ``targetPosition`` → target_position; ``sl``/``stopLoss`` → stop_loss; ``tp``/
  ``takeProfit`` → take_profit; ``stopPrice``/``triggerPrice``/``trigger_price`` →
  stop_price; ``tif``/``timeInForce`` → time_in_force; ``reduceOnly`` → reduce_only;
  ``postOnly`` → post_only; ``marginMode`` → margin_mode; ``orderId`` → order_id;
  ``clientOrderId``/``client_order_id``/``origClientOrderId`` → cancel_client_order_id.
* ``action``: TradingView's ``{{strategy.order.action}}`` (buy/sell) is the side; the
  router's actions (order, target, close, flip, cancel, cancel_all; also ``exit``,
  ``reverse``, ``cancel-all``) are the action. An alert with ``market_position`` or
  ``target_position`` and no side is a target alert.
* ``market_position_size`` (``{{strategy.market_position_size}}``) is the amount of a
  ``market_position`` long/short alert.
* Field names in any case (``Ticker``, ``Side``, ``Contracts``).
* Sides in any case: buy/long → buy, sell/short → sell.
* Values in any case: ``order_type`` market, limit, stop (``stop-market``), stop_limit
  (``stop-limit``, ``stoplimit``); ``time_in_force`` GTC, IOC, FOK, PO (``GTX``,
  ``post_only``); ``amount_type`` base (``contracts``), quote (``usdt``, ``cost``),
  percent_of_balance (``percent``), percent_of_position; ``margin_mode`` cross
  (``crossed``), isolated; booleans as true/false, "true"/"false", 1/0, "yes"/"no".
* ``amount: "10%"`` is 10 % of the balance (``amount_type`` percent_of_balance unless given);
  ``leverage: "5x"`` is 5.
* ``market_type`` in any case: spot; swap/perp/perpetual/linear/inverse → swap;
  future/futures/delivery → future.
* Amounts and prices may be strings (``"0.01"``); every number is read by
  ``core.pipeline.models.parse_decimal`` (ASCII decimal forms only, bounded digits and exponent):
  thousands separators, ``1_000`` and non-ASCII digits are refused with 422.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from core.config import PluginOptions
from core.errors import Unprocessable
from core.hooks.manager import hookimpl

PLACEHOLDER = re.compile(r"\{\{.*?\}\}")
SIDES = {"buy": "buy", "long": "buy", "sell": "sell", "short": "sell"}
ACTIONS = {
    "order": "order",
    "target": "target",
    "close": "close",
    "exit": "close",
    "flip": "flip",
    "reverse": "flip",
    "cancel": "cancel",
    "cancel_all": "cancel_all",
    "cancelall": "cancel_all",
}
ORDER_TYPES = {
    "market": "market",
    "mkt": "market",
    "limit": "limit",
    "lmt": "limit",
    "stop": "stop",
    "stop_market": "stop",
    "stopmarket": "stop",
    "stop_limit": "stop_limit",
    "stoplimit": "stop_limit",
}
TIMES_IN_FORCE = {
    "gtc": "GTC",
    "ioc": "IOC",
    "fok": "FOK",
    "po": "PO",
    "gtx": "PO",
    "post_only": "PO",
    "postonly": "PO",
}
AMOUNT_TYPES = {
    "base": "base",
    "contracts": "base",
    "coin": "base",
    "quote": "quote",
    "usdt": "quote",
    "usd": "quote",
    "cost": "quote",
    "percent": "percent_of_balance",
    "percent_of_balance": "percent_of_balance",
    "balance_percent": "percent_of_balance",
    "percent_of_position": "percent_of_position",
    "position_percent": "percent_of_position",
}
MARGIN_MODES = {"cross": "cross", "crossed": "cross", "isolated": "isolated"}
ASCII_SPACE = " \t\r\n"  # numbers are ASCII: a no-break or other Unicode space is not stripped (core.pipeline.models)
BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
ALERT_FIELD_NAMES = (
    "symbol",
    "side",
    "amount",
    "price",
    "order_type",
    "market_type",
    "alert_id",
    "account",
    "exchange",
    "params",
    "action",
    "amount_type",
    "target_position",
    "market_position",
    "stop_price",
    "stop_loss",
    "take_profit",
    "reduce_only",
    "post_only",
    "time_in_force",
    "leverage",
    "margin_mode",
    "order_id",
    "cancel_client_order_id",
    "market_position_size",
)
MARKET_TYPES = {
    "spot": "spot",
    "swap": "swap",
    "perp": "swap",
    "perps": "swap",
    "perpetual": "swap",
    "perpetuals": "swap",
    "linear": "swap",
    "inverse": "swap",
    "future": "future",
    "futures": "future",
    "delivery": "future",
}


def _find_placeholder(value: Any, path: str) -> str | None:
    """The path of the first string holding ``{{...}}``; paths are built only for what is found."""
    if isinstance(value, str):
        return path if "{{" in value and PLACEHOLDER.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) or (isinstance(item, str) and "{{" in item):
                found = _find_placeholder(item, f"{path}.{key}" if path else str(key))
                if found:
                    return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, (dict, list)) or (isinstance(item, str) and "{{" in item):
                found = _find_placeholder(item, f"{path}[{i}]")
                if found:
                    return found
    return None


_SEPARATORS = re.compile(r"[\s-]+")


def _word(value: str) -> str:
    return _SEPARATORS.sub("_", value.strip().lower())


def _named(names: dict[str, str], upper: bool = False) -> Callable[[Any], Any]:
    """A value one of ``names`` (in any case, spaces or dashes for underscores), else
    stripped and in lower (``upper``: upper) case for the model to refuse; not a string: as is."""

    def normalized(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return names.get(_word(value), value.strip().upper() if upper else value.strip().lower())

    return normalized


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _boolean(value: Any) -> Any:
    """true/false, "true"/"false", "yes"/"no", 1/0 as booleans; anything else as is."""
    if isinstance(value, str) and value.strip().lower() in BOOLEANS:
        return BOOLEANS[value.strip().lower()]
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    return value


def _number(value: Any) -> Any:
    return value.strip(ASCII_SPACE) if isinstance(value, str) else value


def _leverage(value: Any) -> Any:
    """ "5x" → "5"; the number is read by core.pipeline.models.parse_integer."""
    if isinstance(value, str):
        return value.strip(ASCII_SPACE).lower().removesuffix("x").strip(ASCII_SPACE)
    return value


def _name(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _identifier(value: Any) -> Any:
    """An id sent as a number is its text; a string is stripped."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def _alert_id(value: Any) -> Any:
    """An alert id sent as a number is its text (the model strips a string)."""
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


# How each field's value is written, whatever form it was sent in (side and action, which
# refuse or move values between fields, are decided before these).
VALUE_FORMS: dict[str, Callable[[Any], Any]] = {
    "order_type": _named(ORDER_TYPES),
    "market_type": _named(MARKET_TYPES),
    "amount_type": _named(AMOUNT_TYPES),
    "margin_mode": _named(MARGIN_MODES),
    "time_in_force": _named(TIMES_IN_FORCE, upper=True),
    "market_position": _lower,
    "reduce_only": _boolean,
    "post_only": _boolean,
    "amount": _number,
    "price": _number,
    "stop_price": _number,
    "stop_loss": _number,
    "take_profit": _number,
    "target_position": _number,
    "market_position_size": _number,
    "leverage": _leverage,
    "symbol": _name,
    "exchange": _name,
    "account": _name,
    "cancel_client_order_id": _name,
    "order_id": _identifier,
    "alert_id": _alert_id,
}


class Plugin:
    class Options(PluginOptions):
        aliases: dict[str, str] = {
            "ticker": "symbol",
            "order_action": "side",
            "contracts": "amount",
            "qty": "amount",
            "quantity": "amount",
            "size": "amount",
            "id": "alert_id",
            "type": "order_type",
            "orderType": "order_type",
            "marketType": "market_type",
            "amountType": "amount_type",
            "marketPosition": "market_position",
            "position_size": "target_position",
            "positionSize": "target_position",
            "targetPosition": "target_position",
            "marketPositionSize": "market_position_size",
            "sl": "stop_loss",
            "stopLoss": "stop_loss",
            "tp": "take_profit",
            "takeProfit": "take_profit",
            "stopPrice": "stop_price",
            "triggerPrice": "stop_price",
            "trigger_price": "stop_price",
            "tif": "time_in_force",
            "timeInForce": "time_in_force",
            "reduceOnly": "reduce_only",
            "postOnly": "post_only",
            "marginMode": "margin_mode",
            "orderId": "order_id",
            "clientOrderId": "cancel_client_order_id",
            "client_order_id": "cancel_client_order_id",
            "origClientOrderId": "cancel_client_order_id",
        }

    def __init__(self, options: Plugin.Options):
        self.options = options
        # Decided once, not per alert: field names by their lower case, and the names they become.
        self._by_lower = {name.lower(): name for name in (*options.aliases, *ALERT_FIELD_NAMES)}
        self._canonical = frozenset(self._by_lower.values())
        self._alias_rank = {alias: rank for rank, alias in enumerate(options.aliases)}
        # An alias whose field is another alias (a → b, b → c in plugins.yaml) is followed
        # when it comes first in the table: such a table is applied one alias at a time.
        self._chained = any(target in options.aliases for target in options.aliases.values())

    @hookimpl
    def transform_payload(self, payload: dict[str, Any]) -> None:
        field = _find_placeholder(payload, "")
        if field is not None:
            raise Unprocessable(
                f"field '{field}' holds an unreplaced TradingView placeholder", code="unreplaced_placeholder"
            )
        # Field names in any case ("Ticker", "Side"); secrets keep theirs (apiKey, secret).
        # The usual payload has its names in their own case and one alias or two: both
        # found by set operations, not by a look at every field and every alias.
        by_lower, canonical = self._by_lower, self._canonical
        if not payload.keys() <= canonical:
            for key in [k for k in payload if isinstance(k, str) and k not in canonical and k.lower() in by_lower]:
                if by_lower[key.lower()] not in payload:
                    payload[by_lower[key.lower()]] = payload.pop(key)
        aliases = self.options.aliases
        # In the aliases' order: of two aliases of one field, the first one present wins.
        present = (
            aliases if self._chained else sorted(payload.keys() & aliases.keys(), key=self._alias_rank.__getitem__)
        )
        for alias in present:
            if alias in payload and aliases[alias] not in payload:
                payload[aliases[alias]] = payload.pop(alias)
        self._action(payload)
        if isinstance(payload.get("side"), str):
            side = payload["side"].strip().lower()
            if side not in SIDES:
                raise Unprocessable(
                    f"side must be buy or sell (or long/short), got {payload['side'][:20]!r}", code="invalid_alert"
                )
            payload["side"] = SIDES[side]
        # Each field's value in its own form: only the fields present are visited, and each
        # normalizer changes its own field alone, so their order does not matter.
        for key in payload.keys() & VALUE_FORMS.keys():
            payload[key] = VALUE_FORMS[key](payload[key])
        if isinstance(payload.get("amount"), str) and payload["amount"].endswith("%"):
            payload["amount"] = payload["amount"][:-1].strip(ASCII_SPACE)
            payload.setdefault("amount_type", "percent_of_balance")
        self._position_size(payload)
        if payload.get("exchange") == "":
            payload.pop("exchange")

    @staticmethod
    def _action(payload: dict[str, Any]) -> None:
        """``action``: a side (TradingView's {{strategy.order.action}}) or the router's action."""
        value = payload.get("action")
        if isinstance(value, str):
            word = _word(value)
            if word in SIDES:
                payload.pop("action")
                side = payload.get("side")
                if side is None:
                    payload["side"] = value
                elif isinstance(side, str) and SIDES.get(side.strip().lower()) != SIDES[word]:
                    raise Unprocessable(
                        f"action {value.strip()!r} and side {side.strip()!r} disagree", code="invalid_alert"
                    )
            elif word in ACTIONS:
                payload["action"] = ACTIONS[word]
        if (
            "action" not in payload
            and "side" not in payload
            and (payload.get("market_position") not in (None, "") or payload.get("target_position") not in (None, ""))
        ):
            payload["action"] = "target"

    @staticmethod
    def _position_size(payload: dict[str, Any]) -> None:
        """``{{strategy.market_position_size}}``: the size of a long/short market_position."""
        position = payload.get("market_position")
        if isinstance(position, str) and position in ("long", "short") and payload.get("amount") in (None, ""):
            # Without a size either, the model refuses it: "market_position long/short needs amount".
            payload["amount"] = payload.pop("market_position_size", None)
