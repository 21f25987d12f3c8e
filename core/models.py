"""The pipeline's data: the inbound request, auth decisions, the alert and the order result."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

# Symbols may carry an exchange prefix and a contract suffix (BINANCE:BTCUSDT.P, BTC/USDT:USDT).
SYMBOL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:/._-]{0,63}$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Printable ASCII; inner spaces allowed (TradingView's {{strategy.order.id}} is often "Long Entry").
ALERT_ID_PATTERN = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]{0,126}[\x21-\x7e])?$")
MAX_AMOUNT = Decimal("1e12")


@dataclass(slots=True)
class InboundRequest:
    """What an auth plugin sees of the HTTP request. ``payload`` is the parsed body."""

    body: bytes
    headers: dict[str, str]  # lower-cased names
    remote_addr: str
    scheme: str
    payload: dict[str, Any]
    received_at: float
    query: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True, slots=True)
class AuthResult:
    """An auth plugin's decision. Return ``None`` from the hook to abstain.

    ``principal`` names who was authenticated (a token label, "hmac"); it keys per-principal
    rate limits and is journaled. ``reason`` is for the log only: clients get one 401 body.
    """

    accepted: bool
    principal: str | None = None
    reason: str = ""
    status: int = 401  # 401 bad credentials, 403 not allowed (address, scheme)

    @classmethod
    def accept(cls, principal: str) -> "AuthResult":
        return cls(True, principal=principal)

    @classmethod
    def reject(cls, reason: str, status: int = 401) -> "AuthResult":
        return cls(False, reason=reason, status=status)


def _decimal(value: Any, name: str) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number")
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ValueError(f"{name} must be a number, got {str(value)[:40]!r}") from None
    if not number.is_finite():
        raise ValueError(f"{name} must be a finite number")
    return number


class Credentials(BaseModel):
    """Exchange credentials carried in the payload (the seed's apiKey/secret). Never logged."""

    model_config = ConfigDict(frozen=True)
    api_key: SecretStr
    secret: SecretStr
    password: SecretStr | None = None


class Alert(BaseModel):
    """A validated, normalized alert, ready to be routed to an account.

    Transforms turn TradingView's many shapes into these fields; anything they did not
    consume stays in ``raw`` for plugins (minus the token and credentials).
    """

    model_config = ConfigDict(extra="forbid")

    alert_id: str | None = None
    account: str | None = None
    exchange: str | None = None
    symbol: str
    side: Literal["buy", "sell"]
    amount: Decimal
    price: Decimal | None = None
    order_type: Literal["market", "limit"] = "market"
    market_type: Literal["spot", "swap", "future"] | None = None
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

    @field_validator("account", "exchange")
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
    def _amount(cls, value: Any) -> Decimal:
        number = _decimal(value, "amount")
        if number is None:
            raise ValueError("amount is required")
        if number <= 0:
            raise ValueError("amount must be greater than 0")
        if number > MAX_AMOUNT:
            raise ValueError(f"amount must be at most {MAX_AMOUNT:f}")
        return number

    @field_validator("price", mode="before")
    @classmethod
    def _price(cls, value: Any) -> Decimal | None:
        number = _decimal(value, "price")
        if number is None:
            return None
        if number <= 0:
            raise ValueError("price must be greater than 0")
        if number > MAX_AMOUNT:
            raise ValueError(f"price must be at most {MAX_AMOUNT:f}")
        return number

    @model_validator(mode="after")
    def _limit_needs_price(self) -> "Alert":
        if self.order_type == "limit" and self.price is None:
            raise ValueError("a limit order needs a price")
        return self


class OrderRequest(BaseModel):
    """What an executor sends: the alert resolved against one account's market."""

    model_config = ConfigDict(extra="forbid")

    account: str
    exchange: str
    symbol: str  # the exchange's unified symbol (BTC/USDT, BTC/USDT:USDT)
    market_type: str
    side: Literal["buy", "sell"]
    order_type: Literal["market", "limit"]
    amount: str  # after the exchange's precision
    price: str | None = None
    client_order_id: str
    # The price the order was valued at (limit price, the alert's price, or the last price).
    reference_price: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class OrderResult(BaseModel):
    """An executor's answer: what the exchange booked."""

    model_config = ConfigDict(extra="forbid")

    account: str
    exchange: str
    symbol: str
    side: str
    order_type: str
    amount: str
    price: str | None = None
    order_id: str | None = None
    client_order_id: str
    status: str  # open | closed (filled) | canceled | rejected | unknown
    filled: str | None = None
    average: str | None = None
    route: str = "rest"  # rest | websocket | paper
    info: dict[str, Any] = Field(default_factory=dict, exclude=True)


def decimal_str(value: Any) -> str | None:
    """Numbers as plain decimal strings for the JSON answer and the journal."""
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    d = value if isinstance(value, Decimal) else Decimal(str(value))
    text = format(d.normalize(), "f")
    return text
