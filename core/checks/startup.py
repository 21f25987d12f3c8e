"""Configuration checks that need the whole deployment: run by every server start
(``Router.configure``) and by ``python -m core check-config`` (``core.checks.preflight``),
so both give the same verdict. Each problem is a ``ConfigError`` of one line naming the
variable or file, the field and what was expected.

Checked here, after plugins.yaml and the environment validated and the accounts were
registered (nothing is connected yet):

- some credential exists: WEBHOOK_SECRET for HMAC, or an unexpired token in the token
  store — without either every alert would be answered 401;
- DEFAULT_EXCHANGE names an account that exists (unless alerts may carry their own keys);
- state is not SQLite on an ephemeral filesystem (Heroku: ``DYNO`` is set) unless
  ``ALLOW_EPHEMERAL_STATE`` says that is understood.
"""

from __future__ import annotations

import time
from typing import Any

from core.config import Settings
from core.errors import ConfigError
from core.observability.metrics import metrics_options

HOW_TO_CREATE_A_CREDENTIAL = (
    "create one: `python -m core init-env` writes .env with a random WEBHOOK_SECRET (or set WEBHOOK_SECRET yourself, "
    'e.g. to the output of `python -c "import secrets; print(secrets.token_hex(32))"`), or issue a token for '
    "TradingView with `python manage_tokens.py issue --label tradingview`"
)


async def check_startup(router: Any) -> None:
    """Raise ConfigError for the first configuration that cannot work as a whole."""
    settings: Settings = router.settings
    if settings.dyno and not router.state.is_redis and not settings.allow_ephemeral_state:
        raise ConfigError(
            "environment: STATE_URL: DYNO is set (Heroku) and state is SQLite under DATA_DIR, which Heroku erases "
            "on every restart (the journal and tokens with it): expected a Redis URL (add Heroku Redis: REDIS_URL "
            "is then used), or ALLOW_EPHEMERAL_STATE=true to accept the loss"
        )
    default = settings.default_exchange.strip()
    if default.lower() != "paper" and router.executors.default is None and not router.options.allow_payload_credentials:
        raise ConfigError(
            f"environment: DEFAULT_EXCHANGE: no account serves '{default}': expected paper, an exchange with "
            "DEFAULT_API_KEY and DEFAULT_API_SECRET set, or an account named 'default' in "
            f"{router.plugins_file.path}"
        )
    metrics_options(router)  # the metrics section of plugins.yaml (core's service, built by the app)
    await check_credentials(router)


async def check_credentials(router: Any) -> str:
    """What authenticates alerts ("WEBHOOK_SECRET" or "N token(s)"); ConfigError if nothing does."""
    names = set(router.plugins.names())
    if "hmac" in names and router.settings.webhook_secret:
        return "WEBHOOK_SECRET"
    if "token" in names:
        store = router.state.token_store(synchronous="NORMAL")
        try:
            now = time.time()
            active = [t for t in await store.list() if t.expires_at > now]
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"state: {router.state.description}: cannot read the token store ({type(exc).__name__}: {exc})"
            ) from None
        finally:
            await store.close()
        if active:
            return f"{len(active)} token(s)"
    raise ConfigError(
        "environment: WEBHOOK_SECRET: not set and no token issued, so every alert would be refused; "
        + HOW_TO_CREATE_A_CREDENTIAL
    )
