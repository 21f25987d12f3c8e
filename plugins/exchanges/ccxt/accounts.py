"""Accounts on ccxt exchanges: their options in plugins.yaml and the ccxt clients built from them.

``AccountOptions`` is one entry of the ``ccxt.accounts`` mapping. ``build_client`` turns it
into a ccxt instance (``ccxt.pro`` when the account places orders over the WebSocket
API, else ``ccxt.async_support``): credentials, ccxt's throttle (``rate_limit``), the
market types to load, sandbox mode, and the ``ccxt:`` mapping deep-merged over all of it
exactly as ccxt's constructor merges a config over its description — which is how an
account is pointed at a testnet, a proxy or the project's emulator.

ccxt is imported here, once per process, when the first client is built (at startup, for
the configured accounts): a deployment without a ccxt account never imports it (the ids
come from ``ids``); ``ccxt.pro`` only for an account that places orders over WebSocket.
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from core.config import PluginOptions
from core.errors import ConfigError
from core.trading.execution import client_order_id
from plugins.exchanges.ccxt.ids import is_ccxt_exchange, suggests_exchange, unknown_exchange_message

# Market types a user may name, and the names exchanges use for them in
# ``options['fetchMarkets']['types']`` (binance/bybit split contracts by margin: linear,
# inverse; okx by kind: swap, future). The first name the exchange knows is loaded.
MARKET_TYPE_NAMES: dict[str, tuple[str, ...]] = {
    "spot": ("spot",),
    "margin": ("margin", "spot"),
    "swap": ("swap", "linear"),
    "perpetual": ("swap", "linear"),
    "future": ("future", "linear"),
    "futures": ("future", "linear"),
    "linear": ("linear", "swap"),
    "inverse": ("inverse", "swap"),
    "option": ("option",),
}
# The unified market type (ccxt's market['type']) a configured market type stands for,
# and the types of the markets kept for it.
UNIFIED_TYPE = {
    "spot": "spot",
    "margin": "spot",
    "swap": "swap",
    "perpetual": "swap",
    "future": "future",
    "futures": "future",
    "linear": "swap",
    "inverse": "swap",
    "option": "option",
}
KEPT_TYPES = {
    "spot": {"spot", "margin"},
    "margin": {"spot", "margin"},
    "swap": {"swap"},
    "perpetual": {"swap"},
    "future": {"future"},
    "futures": {"future"},
    "linear": {"swap", "future"},
    "inverse": {"swap", "future"},
    "option": {"option"},
}
SECRET_CONFIG_KEYS = ("apiKey", "secret", "password", "uid", "privateKey", "walletAddress", "token")


class AccountOptions(PluginOptions):
    """One named account on a ccxt exchange (``ccxt.accounts.<name>`` in plugins.yaml)."""

    # The ccxt exchange id: binance, binanceusdm, bybit, okx, kraken, coinbase, ...
    exchange: str
    # Credentials, usually "${BINANCE_KEY}": never logged, never in GET / or error bodies.
    api_key: SecretStr | None = None
    secret: SecretStr | None = None
    password: SecretStr | None = None
    # The exchange's testnet (ccxt's set_sandbox_mode), where ccxt knows one.
    sandbox: bool = False
    # An account without keys reads public market data only and cannot trade: refused at
    # startup unless it says so here.
    public: bool = False
    # Place orders over the exchange's WebSocket API (ccxt.pro create_order_ws) where
    # ccxt supports it; unset: the USE_WEBSOCKETS setting.
    websocket: bool | None = None
    # ccxt's own request throttle (enableRateLimit): keeps the account clear of bans.
    rate_limit: bool = True
    # Market types to load (spot, swap/perpetual, future, linear, inverse, option, margin);
    # unset: what ccxt loads for the exchange by default.
    market_types: list[str] | None = None
    # The market a ticker means when it names both a spot market and a contract
    # ("BTCUSDT"); unset: spot when spot markets are loaded, else the first market type.
    default_market_type: str | None = Field(None, pattern="^(spot|swap|future)$")
    # Reload the markets in the background this often (new listings, changed filters).
    markets_refresh_seconds: float = Field(3600, ge=10)
    # While the account is not ready (exchange down at startup), retry this often.
    retry_seconds: float = Field(30, gt=0)
    # Load the exchange's currency list with the markets (a private call on some
    # exchanges; orders do not need it).
    load_currencies: bool = False
    # Leverage and margin mode set on the symbol before each derivatives order (an
    # alert's own "leverage"/"margin_mode" win); unset: whatever the exchange has.
    leverage: int | None = Field(None, ge=1, le=200)
    margin_mode: Literal["cross", "isolated"] | None = None
    # Handed unchanged to the ccxt constructor, deep-merged last: urls, options, timeout,
    # headers, proxies. How an account points at a testnet or the emulator.
    ccxt: dict[str, Any] = Field(default_factory=dict)

    @field_validator("exchange")
    @classmethod
    def _known_exchange(cls, value: str) -> str:
        problem = unknown_exchange_message(value)
        if problem:
            raise ValueError(problem)
        return value.strip().lower()

    @model_validator(mode="after")
    def _keys_or_public(self) -> AccountOptions:
        if not self.public and not (_filled(self.api_key) and _filled(self.secret)):
            missing = "api_key" if not _filled(self.api_key) else "secret"
            raise PydanticCustomError(
                "missing_keys",
                f"expected {missing} (an account without keys cannot trade: "
                "set api_key and secret, e.g. ${BINANCE_KEY}, or public: true)",
            )
        return self

    @field_validator("market_types")
    @classmethod
    def _known_types(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        types = [t.strip().lower() for t in value]
        unknown = [t for t in types if t not in MARKET_TYPE_NAMES]
        if unknown or not types:
            raise ValueError(f"market types are {', '.join(MARKET_TYPE_NAMES)}; got {', '.join(unknown) or 'none'}")
        return types

    def secret_values(self) -> list[str]:
        """Every secret this account holds (for the redactor)."""
        values = [s.get_secret_value() for s in (self.api_key, self.secret, self.password) if s is not None]
        values += [str(self.ccxt[k]) for k in SECRET_CONFIG_KEYS if self.ccxt.get(k)]
        return values

    def wants_websocket(self, use_websockets: bool) -> bool:
        return use_websockets if self.websocket is None else self.websocket

    def unified_default_type(self) -> str:
        if self.default_market_type:
            return self.default_market_type
        if not self.market_types or any(UNIFIED_TYPE[t] == "spot" for t in self.market_types):
            return "spot"
        return UNIFIED_TYPE[self.market_types[0]]


def _filled(secret: SecretStr | None) -> bool:
    return secret is not None and bool(secret.get_secret_value().strip())


class AccountConfigError(ConfigError):
    """An account setting that cannot work; the plugin adds the file and account to it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def fetch_market_types(exchange_id: str, wanted: list[str], available: list[str]) -> list[str]:
    """The exchange's own names for the wanted market types (options.fetchMarkets.types)."""
    chosen: list[str] = []
    for kind in wanted:
        name = next((n for n in MARKET_TYPE_NAMES[kind] if n in available), None)
        if name is None:
            raise AccountConfigError(
                "market_types",
                f"market type '{kind}' is not available on {exchange_id} (it has: {', '.join(available)})",
            )
        if name not in chosen:
            chosen.append(name)
    return chosen


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@dataclass
class BuiltClient:
    client: Any  # a ccxt.async_support or ccxt.pro Exchange
    route: str  # "rest" | "websocket"
    note: str | None  # why the route differs from what was asked, for the health check
    market_types: list[str] | None  # the exchange's names of what is loaded (None: ccxt's default)
    keep_types: set[str] | None  # ccxt market types kept after loading (None: all)


def build_client(options: AccountOptions, *, use_websockets: bool) -> BuiltClient:
    """A ccxt client for the account; AccountConfigError (startup stops) for what cannot work."""
    import ccxt.async_support as ccxt_async  # once per process (see the module docstring)

    exchange_id = options.exchange
    websocket = options.wants_websocket(use_websockets)
    note = None
    cls = getattr(ccxt_async, exchange_id)
    route = "rest"
    if websocket:
        import ccxt.pro as ccxt_pro

        pro_cls = getattr(ccxt_pro, exchange_id, None)
        if pro_cls is None:
            note = f"ccxt has no WebSocket support for {exchange_id}; orders go over REST"
        elif not _has(pro_cls, "createOrderWs"):
            note = f"ccxt cannot place {exchange_id} orders over WebSocket; orders go over REST"
        else:
            cls, route = pro_cls, "websocket"

    config: dict[str, Any] = {"enableRateLimit": options.rate_limit}
    for key, secret in (("apiKey", options.api_key), ("secret", options.secret), ("password", options.password)):
        if secret is not None and secret.get_secret_value():
            config[key] = secret.get_secret_value()
    if not options.load_currencies:
        # ccxt internal: load_markets() asks for currencies only while has["fetchCurrencies"] is true.
        config["has"] = {"fetchCurrencies": False}
    market_types = None
    keep_types = None
    if options.market_types:
        has = _describe(cls).get("has") or {}
        for kind in options.market_types:
            if has.get(UNIFIED_TYPE[kind]) is False:
                raise AccountConfigError("market_types", f"market type '{kind}' is not available on {exchange_id}")
        keep_types = set().union(*(KEPT_TYPES[kind] for kind in options.market_types))
        fetch_markets = _describe_option(cls, "fetchMarkets")
        available = fetch_markets.get("types") if isinstance(fetch_markets, dict) else fetch_markets
        if isinstance(available, list) and available:
            # Options markets are supported by more exchanges than load them by default.
            known = available + (["option"] if _has(cls, "option") and "option" not in available else [])
            market_types = fetch_market_types(exchange_id, options.market_types, known)
            if isinstance(fetch_markets, dict):
                config["options"] = {"fetchMarkets": {"types": market_types}}
            else:
                config["options"] = {"fetchMarkets": market_types}
        if "margin" not in options.market_types and _describe_option(cls, "fetchMargins") is not None:
            # binance: which spot pairs are marginable is a private sapi call at every load
            # (ccxt internal: binance's options["fetchMargins"]).
            config.setdefault("options", {})["fetchMargins"] = False
    config = _deep_merge(config, options.ccxt)
    try:
        client = cls(config)
    except Exception as exc:
        raise AccountConfigError("ccxt", f"{exchange_id} refused the configuration: {exc}") from None
    if options.sandbox:
        try:
            client.set_sandbox_mode(True)
        except Exception:
            raise AccountConfigError("sandbox", f"ccxt knows no testnet for {exchange_id}") from None
    _share_ssl_context(client)
    return BuiltClient(client, route, note, market_types, keep_types)


_SSL_CONTEXTS: dict[tuple[str, bool], ssl.SSLContext] = {}


def _share_ssl_context(client: Any) -> None:
    """One SSL context per CA file for every client of the process, made as ccxt's ``open()``
    makes its own (which it skips when one is set): loading the CA bundle costs ~50 ms of
    CPU per client at startup. A client that does not verify keeps ccxt's way."""
    # ccxt internals: Exchange.ssl_context, .verify, .cafile, options["include_OS_certificates"].
    if getattr(client, "ssl_context", True) is not None or not getattr(client, "verify", False):
        return
    include_os = bool(client.safe_bool(client.options, "include_OS_certificates", False))
    key = (client.cafile, include_os)
    context = _SSL_CONTEXTS.get(key)
    if context is None:
        context = ssl.create_default_context(cafile=client.cafile)
        if include_os:
            os_default_paths = ssl.get_default_verify_paths()
            if os_default_paths.cafile and os_default_paths.cafile != client.cafile:
                context.load_verify_locations(cafile=os_default_paths.cafile)
        context = _SSL_CONTEXTS.setdefault(key, context)
    client.ssl_context = context


_DESCRIBED: dict[Any, dict[str, Any]] = {}


def _describe(cls: Any) -> dict[str, Any]:
    if cls not in _DESCRIBED:
        # ccxt internal: describe() needs no constructor run, so no session or throttle is made.
        _DESCRIBED[cls] = cls.describe(cls.__new__(cls))
    return _DESCRIBED[cls]


def _describe_option(cls: Any, name: str) -> Any:
    return (_describe(cls).get("options") or {}).get(name)


def _has(cls: Any, feature: str) -> bool:
    return bool((_describe(cls).get("has") or {}).get(feature))


# ---------------------------------------------------------------- client order ids


@dataclass(frozen=True)
class ClientIdRule:
    """How one exchange takes a client order id: the ccxt parameter, length and prefix."""

    param: str = "clientOrderId"
    length: int = 32
    prefix: str = "tv"

    def for_alert(self, alert_id: str, account: str, proposed: str) -> str:
        default = self is DEFAULT_CLIENT_ID_RULE or self == DEFAULT_CLIENT_ID_RULE  # `is`: no tuples compared per order
        if default and len(proposed) <= self.length and proposed.startswith(self.prefix):
            return proposed
        return client_order_id(alert_id, account, prefix=self.prefix, length=self.length)

    def child(self, entry: str, kind: str) -> str:
        """The client order id of an entry's stop-loss (``kind`` "sl") or take-profit ("tp")
        order: derived from the entry's, so a resend or a reconciliation finds it instead of
        placing it twice. "tv…" becomes "sl…"/"tp…" (gate: "t-sl…"); exchanges that take
        hex digits only (kraken) get a hash of the entry's id."""
        if not self.prefix:
            return hashlib.sha256(f"{kind}\x00{entry}".encode()).hexdigest()[: len(entry)]
        if self.prefix == "tv":
            return kind + entry[2:]
        return (self.prefix + kind + entry[len(self.prefix) + 2 :])[: self.length]


DEFAULT_CLIENT_ID_RULE = ClientIdRule()
# ccxt maps params['clientOrderId'] to binance newClientOrderId (36 chars), bybit
# orderLinkId (36), okx clOrdId (32 alphanumeric), bitget clientOid, kucoin clientOid.
# The exceptions:
CLIENT_ID_RULES: dict[str, ClientIdRule] = {
    # coinbase ignores clientOrderId and generates its own unless client_order_id is set.
    "coinbase": ClientIdRule(param="client_order_id"),
    "coinbaseadvanced": ClientIdRule(param="client_order_id"),
    # kraken's cl_ord_id: a UUID, 32 hex digits without dashes, or 18 characters of text.
    "kraken": ClientIdRule(prefix=""),
    # gate's text: "t-" and at most 28 characters in all (ccxt keeps an id starting with t).
    "gate": ClientIdRule(prefix="t-", length=28),
    "gateio": ClientIdRule(prefix="t-", length=28),
}


def client_id_rule(exchange_id: str) -> ClientIdRule:
    return CLIENT_ID_RULES.get(exchange_id, DEFAULT_CLIENT_ID_RULE)


__all__ = [
    "AccountConfigError",
    "AccountOptions",
    "BuiltClient",
    "ClientIdRule",
    "build_client",
    "client_id_rule",
    "is_ccxt_exchange",
    "suggests_exchange",
    "unknown_exchange_message",
]
