"""Alpaca (US stocks and crypto) as an execution plugin, without ccxt.

Load it like any plugin, by its module path in plugins.yaml, and name its accounts in
its own section::

    router:
      modules: [plugins.exchanges.alpaca]
    alpaca:
      accounts:
        stocks:
          api_key: ${ALPACA_KEY_ID}
          secret: ${ALPACA_SECRET_KEY}
          paper: true

Core knows nothing of it: the plugin registers one ``AlpacaExecutor`` per account
through ``register_executors``. See docs/exchanges/alpaca.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from core.config import PluginOptions
from core.hooks.host import PluginHost
from core.hooks.manager import hookimpl
from plugins.exchanges.alpaca.client import LIVE_URL, PAPER_URL
from plugins.exchanges.alpaca.executor import AlpacaExecutor

AssetClass = Literal["us_equity", "crypto"]
ASSET_CLASSES: tuple[AssetClass, ...] = ("us_equity", "crypto")


class AccountOptions(PluginOptions):
    """One Alpaca account (``alpaca.accounts.<name>`` in plugins.yaml)."""

    # The API key id and secret key of the account, usually "${ALPACA_KEY_ID}": never
    # logged, never in GET / or error bodies. Paper and live accounts have different keys.
    api_key: SecretStr
    secret: SecretStr
    # Paper trading (https://paper-api.alpaca.markets) or live (https://api.alpaca.markets).
    paper: bool = True
    # Overrides the endpoint chosen by ``paper`` (a proxy, or the test emulator).
    base_url: str | None = None
    # Which assets to load and trade: us_equity (stocks, ETFs), crypto.
    asset_classes: list[AssetClass] = Field(
        default_factory=lambda: list(ASSET_CLASSES),
        min_length=1,
    )
    # Seconds to wait for Alpaca's answer (after which an order's outcome is unknown and
    # it is looked up by its client order id).
    timeout: float = Field(10.0, gt=0, le=60)
    # The market clock (GET /v2/clock) is re-read at its next open/close and at least
    # this often (seconds).
    clock_max_age: float = Field(60.0, ge=0, le=3600)
    # While the account is not ready (Alpaca unreachable at startup), retry this often;
    # once ready, reload the asset list this often (new listings).
    retry_seconds: float = Field(30.0, gt=0)
    assets_refresh_seconds: float = Field(3600.0, ge=10)
    # Stock alerts that do not say "extended_hours" trade in extended hours when true
    # (they must then be limit orders).
    extended_hours: bool = False

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    @property
    def endpoint(self) -> str:
        return self.base_url or (PAPER_URL if self.paper else LIVE_URL)

    @property
    def is_paper(self) -> bool:
        return self.paper

    def secret_values(self) -> list[str]:
        return [self.api_key.get_secret_value(), self.secret.get_secret_value()]


class Plugin:
    """Registers the configured Alpaca accounts."""

    class Options(PluginOptions):
        accounts: dict[str, AccountOptions] = Field(default_factory=dict)

    def __init__(self, options: Plugin.Options):
        self.options = options
        self.executors: list[AlpacaExecutor] = []

    @hookimpl
    def register_executors(self, register, router: PluginHost) -> None:
        for name, options in self.options.accounts.items():
            for value in options.secret_values():
                router.register_secret(value)
            executor = AlpacaExecutor(name, options)
            register(name, executor)
            self.executors.append(executor)

    @hookimpl
    def router_startup(self, router: PluginHost) -> None:
        for executor in self.executors:
            executor.start_maintenance()
