"""The pipeline's data: the inbound request, auth decisions, the alert and the order result."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from core.trading.venue import OrderStatus, order_status

# Symbols may carry an exchange prefix and a contract suffix (BINANCE:BTCUSDT.P, BTC/USDT:USDT).
SYMBOL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:/._-]{0,63}$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Printable ASCII; inner spaces allowed (TradingView's {{strategy.order.id}} is often "Long Entry").
ALERT_ID_PATTERN = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]{0,126}[\x21-\x7e])?$")
MAX_AMOUNT = Decimal("1e12")


@dataclass(slots=True)
class InboundRequest:
    """What an auth plugin sees of the HTTP request. ``payload`` is the parsed body, once
    the request has authenticated (empty while ``authenticate`` hooks run on POST /webhook)."""

    body: bytes
    headers: dict[str, str]  # lower-cased names
    remote_addr: str
    scheme: str
    payload: dict[str, Any]
    received_at: float
    query: dict[str, str] = field(default_factory=dict)
    authenticated_at: float | None = None  # set by the router once authentication accepted it

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


# The principal of the owner's key (WEBHOOK_SECRET): every account, alert ids as sent.
OWNER_PRINCIPAL = "hmac"


@dataclass(frozen=True, slots=True)
class AuthResult:
    """An auth plugin's decision. Return ``None`` from the hook to abstain.

    ``principal`` names who was authenticated (a token label, "hmac"); it keys per-principal
    rate limits, is journaled and namespaces the principal's alert ids. ``reason`` is for
    the log only: clients get one 401 body.

    ``accounts`` is what the principal may trade on: ``None`` every account (the owner's
    WEBHOOK_SECRET, and plugins that say nothing); a set of account names only those; the
    empty set the default account only. The router refuses (403) an alert, or a fan-out
    leg, for any other account.

    ``replay_key``: what makes this request recognisable if it is sent again (HMAC: its
    signature's hash), remembered until ``replay_expires_at`` (unix seconds; None: for
    ever). The router refuses a replay and records the key with the alert's admission
    (``core.pipeline.replays``); None: the plugin does not recognise replays.
    """

    accepted: bool
    principal: str | None = None
    reason: str = ""
    status: int = 401  # 401 bad credentials, 403 not allowed (address, scheme)
    accounts: frozenset[str] | None = None
    # What the credential may do beyond sending alerts, e.g. "control" (the kill switch).
    scopes: tuple[str, ...] = ()
    replay_key: str | None = None
    replay_expires_at: float | None = None

    @classmethod
    def accept(
        cls,
        principal: str,
        accounts: frozenset[str] | tuple[str, ...] | list[str] | None = None,
        scopes: tuple[str, ...] = (),
        *,
        replay_key: str | None = None,
        replay_expires_at: float | None = None,
    ) -> AuthResult:
        scope = None if accounts is None else frozenset(a.lower() for a in accounts)
        return cls(
            True,
            principal=principal,
            accounts=scope,
            scopes=tuple(scopes),
            replay_key=replay_key,
            replay_expires_at=replay_expires_at,
        )

    @classmethod
    def reject(cls, reason: str, status: int = 401) -> AuthResult:
        return cls(False, reason=reason, status=status)


# Every number of an alert is read by parse_decimal, here and nowhere else: ASCII decimal
# forms only, with bounded digits and exponent, so no input can make Decimal/int work
# on a number with a billion digits (an int(Decimal("1e999999999")) hangs the loop).
_DECIMAL_TEXT = re.compile(r"[+-]?(?P<mantissa>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE](?P<exponent>[+-]?[0-9]+))?")
MAX_NUMBER_TEXT = 64  # characters of a number written as text
MAX_NUMBER_DIGITS = 40  # digits of its mantissa
MAX_NUMBER_EXPONENT = 30  # |power of ten of its leading digit|: 1e-30 < |x| < 1e31


def parse_decimal(value: Any, name: str) -> Decimal | None:
    """A number of the alert as a ``Decimal``; None for null or "".

    Accepted: a JSON number (not a boolean) or a string of ASCII decimal form — optional
    sign, digits, one decimal point, an optional exponent (``-0.5``, ``.25``, ``1e-5``) —
    at most 64 characters and 40 digits, its magnitude within 1e-30 and 1e31 (or zero).
    Refused with a ValueError naming ``name``: thousands separators (``1,000``, ``1_000``),
    non-ASCII digits, hex, ``NaN``/``Infinity``, anything else.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, not true/false")
    if isinstance(value, int):
        if abs(value) >= 10 ** (MAX_NUMBER_EXPONENT + 1):
            raise ValueError(f"{name} is out of range (at most 1e{MAX_NUMBER_EXPONENT + 1})")
        text = str(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number")
        text = repr(value)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{name} must be a finite number")
        text = str(value)
    elif isinstance(value, str):
        text = value.strip(" \t\r\n")  # ASCII spaces only
    else:
        raise ValueError(f"{name} must be a number")
    form = _DECIMAL_TEXT.fullmatch(text) if len(text) <= MAX_NUMBER_TEXT else None
    if form is None:
        shown = text[:24].encode("ascii", "backslashreplace").decode()
        raise ValueError(
            f"{name} must be a decimal number like 0.01, -2 or 1e-5 (ASCII digits, no separators), got {shown!r}"
        )
    mantissa, exponent = form.group("mantissa", "exponent")
    # The mantissa is ASCII digits and at most one decimal point: its digits are its length
    # less the point.
    if len(mantissa) - ("." in mantissa) > MAX_NUMBER_DIGITS:
        raise ValueError(f"{name} has more than {MAX_NUMBER_DIGITS} digits")
    if exponent is not None and len(exponent.lstrip("+-").lstrip("0")) > 3:
        raise _out_of_range(name)  # |exponent| >= 1000: far outside the range, whatever the digits
    number = Decimal(text)
    if number and not -MAX_NUMBER_EXPONENT <= number.adjusted() <= MAX_NUMBER_EXPONENT:
        raise _out_of_range(name)
    return number


def _out_of_range(name: str) -> ValueError:
    return ValueError(f"{name} is out of range (between 1e-{MAX_NUMBER_EXPONENT} and 1e{MAX_NUMBER_EXPONENT + 1})")


def parse_integer(value: Any, name: str) -> int | None:
    """A whole number of the alert (``5``, ``"5"``, ``5.0``), read by ``parse_decimal``."""
    number = parse_decimal(value, name)
    if number is None:
        return None
    if number != number.to_integral_value():
        raise ValueError(f"{name} must be a whole number")
    return int(number)  # bounded above: at most 31 digits


class Credentials(BaseModel):
    """Exchange credentials carried in the payload (the classic payload's apiKey/secret). Never logged."""

    model_config = ConfigDict(frozen=True)
    api_key: SecretStr
    secret: SecretStr
    password: SecretStr | None = None


ACTIONS = ("order", "target", "close", "flip", "cancel", "cancel_all")
AMOUNT_TYPES = ("base", "quote", "percent_of_balance", "percent_of_position")
ORDER_TYPES = ("market", "limit", "stop", "stop_limit")


class Alert(BaseModel):
    """A validated, normalized alert, ready to be routed to an account.

    Transforms turn TradingView's many shapes into these fields; anything they did not
    consume stays in ``raw`` for plugins (minus the token and credentials).

    ``action`` says what the alert asks for:

    * ``order`` (default): an order of ``side`` and ``amount`` (read as ``amount_type``);
    * ``target``: go to a position of ``target_position`` contracts (signed: long > 0,
      short < 0, flat 0; or ``market_position`` long/short/flat with ``amount`` as the
      size) — the order is computed from the exchange's current position, so repeating
      the alert changes nothing;
    * ``close``: close the position (reduce-only); nothing to do when flat;
    * ``flip``: reverse the position (long 1 → short 1, or to ``amount`` on the other side);
    * ``cancel``: cancel ``order_id`` or ``cancel_client_order_id``;
    * ``cancel_all``: cancel every open order of ``symbol``.
    """

    model_config = ConfigDict(extra="forbid")

    alert_id: str | None = None
    action: Literal["order", "target", "close", "flip", "cancel", "cancel_all"] = "order"
    # One account, or several to fan out to (each executed and journaled on its own).
    account: str | list[str] | None = None
    exchange: str | None = None
    symbol: str
    side: Literal["buy", "sell"] | None = None
    amount: Decimal | None = None
    amount_type: Literal["base", "quote", "percent_of_balance", "percent_of_position"] = "base"
    price: Decimal | None = None
    order_type: Literal["market", "limit", "stop", "stop_limit"] = "market"
    stop_price: Decimal | None = None
    market_type: Literal["spot", "swap", "future"] | None = None
    target_position: Decimal | None = None
    market_position: Literal["long", "short", "flat"] | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    reduce_only: bool = False
    post_only: bool = False
    time_in_force: Literal["GTC", "IOC", "FOK", "PO"] | None = None
    leverage: int | None = Field(default=None, ge=1, le=200)
    margin_mode: Literal["cross", "isolated"] | None = None
    order_id: str | None = Field(default=None, max_length=64)
    cancel_client_order_id: str | None = Field(default=None, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)
    principal: str | None = None
    received_at: float = 0.0  # set by the router on arrival (never taken from the payload)
    credentials: Credentials | None = Field(default=None, exclude=True, repr=False)
    raw: dict[str, Any] = Field(default_factory=dict)

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, value: str) -> str:
        if not SYMBOL_PATTERN.match(value):
            raise ValueError("symbol must be 1-64 letters, digits or : / . _ - (e.g. BINANCE:BTCUSDT, BTC/USDT)")
        return value

    @field_validator("account")
    @classmethod
    def _accounts(cls, value: str | list[str] | None) -> str | list[str] | None:
        names = value if isinstance(value, list) else [value] if value is not None else []
        if isinstance(value, list) and not 1 <= len(value) <= 20:
            raise ValueError("a list of 1 to 20 accounts")
        for name in names:
            if not isinstance(name, str) or not NAME_PATTERN.match(name):
                raise ValueError("must be 1-64 letters, digits or _ . -")
        if isinstance(value, list) and len({n.lower() for n in value}) != len(value):
            raise ValueError("an account is named twice")
        return value

    @field_validator("exchange")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not NAME_PATTERN.match(value):
            raise ValueError("must be 1-64 letters, digits or _ . -")
        return value

    @field_validator("alert_id")
    @classmethod
    def _alert_id(cls, value: str | None) -> str | None:
        if value is not None:
            value = value.strip()
            if not ALERT_ID_PATTERN.match(value):
                raise ValueError("must be 1-128 printable ASCII characters")
        return value

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> Decimal | None:
        number = parse_decimal(value, "amount")
        if number is None:
            return None
        if number <= 0:
            raise ValueError("amount must be greater than 0")
        if number > MAX_AMOUNT:
            raise ValueError(f"amount must be at most {MAX_AMOUNT:f}")
        return number

    @field_validator("price", "stop_price", "stop_loss", "take_profit", mode="before")
    @classmethod
    def _price(cls, value: Any, info: ValidationInfo) -> Decimal | None:
        name = info.field_name or "price"
        number = parse_decimal(value, name)
        if number is None:
            return None
        if number <= 0:
            raise ValueError(f"{name} must be greater than 0")
        if number > MAX_AMOUNT:
            raise ValueError(f"{name} must be at most {MAX_AMOUNT:f}")
        return number

    @field_validator("leverage", mode="before")
    @classmethod
    def _leverage(cls, value: Any) -> int | None:
        return parse_integer(value, "leverage")

    @field_validator("target_position", mode="before")
    @classmethod
    def _target(cls, value: Any) -> Decimal | None:
        number = parse_decimal(value, "target_position")
        if number is not None and abs(number) > MAX_AMOUNT:
            raise ValueError(f"target_position must be within ±{MAX_AMOUNT:f}")
        return number

    @model_validator(mode="after")
    def _consistent(self) -> Alert:
        if self.action == "order":
            if self.side is None:
                raise ValueError("side is required (buy or sell)")
            if self.amount is None:
                raise ValueError("amount is required")
        if self.action == "target" and self.target_position is None:
            if self.market_position is None:
                raise ValueError("a target alert needs target_position, or market_position (long/short/flat)")
            if self.market_position != "flat" and self.amount is None:
                raise ValueError("market_position long/short needs amount (the position size)")
        if self.action == "cancel" and not (self.order_id or self.cancel_client_order_id):
            raise ValueError("a cancel alert needs order_id or cancel_client_order_id")
        if self.order_type in ("limit", "stop_limit") and self.price is None:
            raise ValueError(f"a {self.order_type.replace('_', '-')} order needs a price")
        if self.order_type in ("stop", "stop_limit") and self.stop_price is None:
            raise ValueError(f"a {self.order_type.replace('_', '-')} order needs stop_price")
        if (
            self.amount_type in ("percent_of_balance", "percent_of_position")
            and self.amount is not None
            and self.amount > 100
        ):
            raise ValueError("a percentage amount must be at most 100")
        return self

    @property
    def accounts(self) -> list[str]:
        """The accounts named (several for a fan-out); empty when the alert names none."""
        if self.account is None:
            return []
        return list(self.account) if isinstance(self.account, list) else [self.account]

    @property
    def target(self) -> Decimal | None:
        """The signed target position of a target alert (long > 0, short < 0, flat 0)."""
        if self.target_position is not None:
            return self.target_position
        if self.market_position == "flat":
            return Decimal(0)
        if self.market_position is not None and self.amount is not None:
            return self.amount if self.market_position == "long" else -self.amount
        return None


class NothingToDo(Exception):
    """An executor found the alert already satisfied (a target reached, close when flat):
    answered 200 with the reason; no order is placed."""


class OrderRequest(BaseModel):
    """What an executor sends: the alert resolved against one account's market.

    ``action`` ``create`` places an order (with optional stop-loss / take-profit, placed
    by the executor attached or as separate orders with client ids derived from this
    one); ``cancel`` cancels ``cancel_id`` / ``cancel_client_order_id``; ``cancel_all``
    cancels the symbol's open orders.
    """

    model_config = ConfigDict(extra="forbid")

    account: str
    exchange: str
    symbol: str  # the exchange's unified symbol (BTC/USDT, BTC/USDT:USDT)
    market_type: str
    action: Literal["create", "cancel", "cancel_all"] = "create"
    side: Literal["buy", "sell"] | None = None
    order_type: Literal["market", "limit", "stop", "stop_limit"] = "market"
    amount: str | None = None  # after the exchange's precision
    cost: str | None = None  # a market buy by quote amount, where the exchange takes one
    price: str | None = None
    stop_price: str | None = None
    stop_loss: str | None = None
    take_profit: str | None = None
    reduce_only: bool = False
    post_only: bool = False
    time_in_force: str | None = None
    leverage: int | None = None
    margin_mode: str | None = None
    cancel_id: str | None = None
    cancel_client_order_id: str | None = None
    client_order_id: str
    # The price the order was valued at (limit price, the alert's price, or the last price).
    reference_price: str | None = None
    # The position before the order (target / close / flip), for the answer and the journal.
    position_before: str | None = None
    # Sent to the exchange's testnet (an account with sandbox: true): in every attempt's journal row.
    sandbox: bool = False
    params: dict[str, Any] = Field(default_factory=dict)


class OrderResult(BaseModel):
    """An executor's answer: what the exchange booked."""

    model_config = ConfigDict(extra="forbid")

    account: str
    exchange: str
    symbol: str
    side: str | None = None
    order_type: str = "market"
    amount: str | None = None
    price: str | None = None
    order_id: str | None = None
    client_order_id: str
    # In the router's words (core.trading.venue.OrderStatus): open, partially_filled, filled,
    # canceled, rejected, expired, unknown. A venue's own word is translated on the way in
    # (ccxt's "closed" becomes "filled"; an unknown word "unknown").
    status: OrderStatus
    filled: str | None = None
    average: str | None = None
    route: str = "rest"  # rest | websocket | paper
    # Booked on the exchange's testnet (an account with sandbox: true), not with real money.
    sandbox: bool = False
    # Stop-loss / take-profit placed as orders of their own, and orders a cancel removed.
    children: list[dict[str, Any]] = Field(default_factory=list)
    info: dict[str, Any] = Field(default_factory=dict, exclude=True)

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: Any) -> str:
        return order_status(value)


_INT_EXACT = 10**28  # whole numbers normalize() keeps digit for digit (28 digits of precision)


def decimal_str(value: Any) -> str | None:
    """Numbers as plain decimal strings for the JSON answer and the journal."""
    if value is None:
        return None
    if type(value) is float:
        if not math.isfinite(value):
            return None
        text = repr(value)  # the shortest form, as Decimal(str(value)) reads it
        if "e" not in text:  # 0.001, 50000.0: the trailing zeros dropped, as normalize() does
            return text.rstrip("0").rstrip(".") if "." in text else text
    elif type(value) is int and -_INT_EXACT < value < _INT_EXACT:
        return str(value)
    elif isinstance(value, float) and not math.isfinite(value):
        return None
    d = value if isinstance(value, Decimal) else Decimal(str(value))
    text = format(d.normalize(), "f")
    return text
