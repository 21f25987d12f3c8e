"""Execution on real exchanges through ccxt: named accounts, the default account, and
clients for alerts that carry their own credentials.

Accounts are named in plugins.yaml (``ccxt.accounts``; see ``accounts.AccountOptions``);
``DEFAULT_EXCHANGE``/``DEFAULT_API_KEY``/``DEFAULT_API_SECRET`` add the account ``default``.
Each account gets **one** ccxt client, created at startup with its markets loaded (only
the configured market types), reused by every alert, refreshed in the background and
closed at shutdown. An account whose exchange cannot be reached at startup is not ready
(``GET /`` says why, its alerts get 503) and is retried in the background.

Sending: ``submit`` sends an order **once**; retries and reconciliation belong to the
router. ccxt's exceptions reach core as core's order errors (``errors.order_error``):
one raised before anything left the process is ``OrderNotSent``, one that leaves the
order's fate open ``OutcomeUnknown``. Orders go over the WebSocket API
(``create_order_ws``) where the account asks for it and ccxt supports it; an order whose
WebSocket message provably never left (``websocket.WsOrderGate``) goes over REST
instead, one whose answer was lost is an unknown outcome — never sent twice.

``prepare`` reads what the alert needs (positions, balances, the ticker, the order to
cancel; ``core.trading.sizing``) and places nothing. ``submit`` sets the margin mode and leverage
when asked (an exchange's "already set" is fine; a failure there sends no order), then
sends the entry; stop-loss / take-profit ride on it where ccxt supports that
(``has['createOrderWithTakeProfitAndStopLoss']``), else follow as reduce-only orders
whose client ids derive from the entry's. Cancels go by order id or client id; binance's
conditional contract orders (its Algo Order API) are reached with ``{'trigger': True}``.

``lookup`` finds an order by its client order id, for reconciliation (placing the
entry's missing stop-loss / take-profit), or tells whether a cancel took effect.

The package, by concern: ``plugin`` (this module: the hook implementations), ``executor``
(``CcxtExecutor``, made of ``lifecycle``, ``reads``, ``send``, ``protective``, ``cancel`` and
``lookup``), ``clients`` (payload credentials), ``accounts`` (options, building the client,
client order ids), ``preflight`` (``python -m core doctor``), ``errors`` (ccxt's exceptions
as core's), ``markets`` (ccxt's markets as core's), ``websocket`` (the WebSocket send gate)
and ``throttle`` (the patch of ccxt's throttle). The ccxt internals the package relies on are
checked by tests/unit/plugins/exchanges/test_ccxt_internals.py.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pydantic import Field, SecretStr

from core.config import PluginOptions
from core.errors import ConfigError, ServiceUnavailable
from core.hooks.manager import hookimpl
from core.observability.redaction import REDACTOR
from core.pipeline.models import Credentials
from plugins.exchanges.ccxt.accounts import (
    SECRET_CONFIG_KEYS,
    AccountConfigError,
    AccountOptions,
    is_ccxt_exchange,
    suggests_exchange,
    unknown_exchange_message,
)
from plugins.exchanges.ccxt.clients import CredentialClients, credentials_fingerprint

if TYPE_CHECKING:
    from plugins.exchanges.ccxt.executor import CcxtExecutor

__all__ = ["CcxtExecutor", "CredentialClients", "Plugin", "credentials_fingerprint"]


def __getattr__(name: str) -> Any:
    """``CcxtExecutor``, imported (with ccxt) only when asked for: loading the plugin imports
    no ccxt, so a deployment without a ccxt account never does (``accounts``)."""
    if name == "CcxtExecutor":
        from plugins.exchanges.ccxt.executor import CcxtExecutor

        return CcxtExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


log = logging.getLogger(__name__)


class Plugin:
    """Registers the ccxt accounts and serves alerts that carry their own credentials."""

    class Options(PluginOptions):
        # Named accounts: alerts choose one with "account": "<name>".
        accounts: dict[str, AccountOptions] = Field(default_factory=dict)
        # Clients kept for alerts carrying apiKey/secret (one per credential set).
        payload_clients: int = Field(16, ge=1, le=1024)

    def __init__(self, options: Plugin.Options):
        self.options = options
        self.executors: list[CcxtExecutor] = []
        self.payload = CredentialClients(options.payload_clients)
        self.use_websockets = False

    @hookimpl
    def register_executors(self, register, router) -> None:
        settings = router.settings
        self.use_websockets = settings.use_websockets
        accounts = dict(self.options.accounts)
        default_exchange = settings.default_exchange.strip().lower()
        if default_exchange != "paper" and "default" not in {name.lower() for name in accounts}:
            keys = bool(settings.default_api_key and settings.default_api_secret)
            if not is_ccxt_exchange(default_exchange):
                if keys or suggests_exchange(default_exchange):  # a typo, most likely
                    raise ConfigError(
                        f"environment: DEFAULT_EXCHANGE: expected paper or a ccxt exchange id: "
                        f"{unknown_exchange_message(default_exchange)}"
                    )
                log.warning(
                    "DEFAULT_EXCHANGE=%s is not a ccxt exchange id; the ccxt plugin adds no default account",
                    default_exchange,
                )
            elif keys:
                accounts["default"] = AccountOptions(
                    exchange=default_exchange,
                    api_key=SecretStr(settings.default_api_key),
                    secret=SecretStr(settings.default_api_secret),
                )
            else:
                log.info(
                    "DEFAULT_EXCHANGE=%s without DEFAULT_API_KEY/DEFAULT_API_SECRET: no default account "
                    "(alerts name an account or carry their own apiKey/secret)",
                    default_exchange,
                )
        for name, options in accounts.items():
            from plugins.exchanges.ccxt.executor import CcxtExecutor  # imports ccxt (the first time)

            for value in options.secret_values():
                router.register_secret(value)
            try:
                executor = CcxtExecutor(name, options, use_websockets=self.use_websockets)
            except AccountConfigError as exc:
                raise ConfigError(
                    f"{router.config_path}: plugin 'ccxt': field 'accounts.{name}.{exc.field}': {exc.message}"
                ) from None
            register(name, executor)
            self.executors.append(executor)

    @hookimpl
    def router_startup(self, router) -> None:
        for executor in self.executors:
            executor.start_maintenance()

    @hookimpl
    async def executor_for_credentials(self, exchange: str, credentials: Credentials, router) -> CcxtExecutor | None:
        if not is_ccxt_exchange(exchange):
            return None
        key = credentials_fingerprint(exchange, credentials)
        template = self._template(exchange)

        async def make() -> CcxtExecutor:
            from plugins.exchanges.ccxt.executor import CcxtExecutor  # ccxt, the first time

            options = (template.options if template else AccountOptions(exchange=exchange, public=True)).model_copy(
                update={
                    "api_key": credentials.api_key,
                    "secret": credentials.secret,
                    "password": credentials.password,
                    "ccxt": {
                        k: v
                        for k, v in (template.options.ccxt if template else {}).items()
                        if k not in SECRET_CONFIG_KEYS
                    },
                }
            )
            for value in options.secret_values():
                REDACTOR.add(value)
            executor = CcxtExecutor(f"payload-{exchange}-{key[:10]}", options, use_websockets=self.use_websockets)
            try:
                if template is not None and template.ready and template.client.markets:
                    executor.adopt_markets(template)
                else:
                    await executor.start()
            except Exception as exc:
                await executor.close()
                raise ServiceUnavailable(
                    f"{exchange} is not reachable ({type(exc).__name__}); nothing was sent",
                    code="exchange_unreachable",
                    headers={"Retry-After": "5"},
                ) from None
            executor.ready = True
            return executor

        return await self.payload.get(key, make)

    def _template(self, exchange: str) -> CcxtExecutor | None:
        """The configured account whose settings (urls, market types) payload credentials reuse."""
        candidates = [e for e in self.executors if e.exchange == exchange]
        for preferred in (exchange, "default"):
            for executor in candidates:
                if executor.account.lower() == preferred:
                    return executor
        return candidates[0] if candidates else None

    @hookimpl
    async def router_shutdown(self, router) -> None:
        for executor in self.executors:
            executor.stop_maintenance()
        await self.payload.close_all()
