"""Process-wide settings from the environment and ``.env``, on pydantic-settings.

Every field's alias is its environment variable (matched case-sensitively); its description
is the line the configuration reference shows. Construct with :meth:`Settings.from_env`,
which reads the environment over ``.env`` once, keeps that whole environment for
``${VAR}`` in plugins.yaml, derives STATE_URL from Heroku's REDIS_TLS_URL/REDIS_URL, and
turns any mistake into a :class:`~core.errors.ConfigError` of one line naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic import Field, PrivateAttr, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from core.errors import ConfigError

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
"""A boolean variable is true when its value is one of these (any case); anything else is false."""


def read_environment(
    env_file: str | os.PathLike[str] | None = ".env", environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The process environment (or ``environ``) over the values of ``env_file``: the environment wins."""
    merged: dict[str, str] = {}
    if env_file and Path(env_file).is_file():
        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ if environ is None else environ)
    return merged


class _Environment(PydanticBaseSettingsSource):
    """A settings source over one mapping of variables (the environment merged over ``.env``),
    each field read under its alias, exactly as written."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self._environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        name = field.alias or field_name
        return self._environ.get(name), name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for field_name, field in self.settings_cls.model_fields.items():
            value, name, _ = self.get_field_value(field, field_name)
            if value is not None:
                found[name] = value
        return found


# The mapping Settings.from_env is reading, for settings_customise_sources.
_READING: ContextVar[Mapping[str, str] | None] = ContextVar("_READING", default=None)


def _secret(default: str, env: str, description: str) -> Any:
    """A secret: never in ``repr``; flagged ``secret`` for the configuration reference."""
    return Field(default, alias=env, repr=False, description=description, json_schema_extra={"secret": True})


class Settings(BaseSettings):
    """Process-wide settings. Field aliases are the environment variable names."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=True,
        extra="ignore",
        frozen=True,
        populate_by_name=False,  # only the variable names (WEBHOOK_SECRET), never webhook_secret
    )

    # -- the classic interface's ten
    webhook_secret: str = _secret(
        "",
        "WEBHOOK_SECRET",
        "Shared secret of HMAC-signed alerts (X-Signature); `init` writes a random one to .env. "
        "Empty: only tokens authenticate.",
    )
    default_exchange: str = Field(
        "paper",
        alias="DEFAULT_EXCHANGE",
        description="The account alerts go to when they name none: `paper` (embedded, no keys) or a ccxt exchange id.",
    )
    default_api_key: str = _secret(
        "", "DEFAULT_API_KEY", "API key of the default account when DEFAULT_EXCHANGE is a real exchange."
    )
    default_api_secret: str = _secret(
        "", "DEFAULT_API_SECRET", "API secret of the default account when DEFAULT_EXCHANGE is a real exchange."
    )
    log_level: str = Field(
        "INFO", alias="LOG_LEVEL", description="Logging verbosity: DEBUG, INFO, WARNING, ERROR (any case)."
    )
    rate_limit: str = Field(
        "10/minute",
        alias="RATE_LIMIT",
        description="Requests per client (see RATE_LIMIT_KEY): `N/second|minute|hour|day`, several "
        "comma-separated; `off` disables; empty means the default.",
    )
    signature_cache_ttl: int = Field(
        300,
        alias="SIGNATURE_CACHE_TTL",
        gt=0,
        description="Seconds an X-Timestamp may differ from the server's clock; also the replay window of signatures.",
    )
    token_ttl: int = Field(
        86400, alias="TOKEN_TTL", gt=0, description="Default lifetime of issued tokens, in seconds (1 day)."
    )
    require_https: bool = Field(
        False,
        alias="REQUIRE_HTTPS",
        description="Refuse plain HTTP on the webhook (behind a proxy, its X-Forwarded-Proto counts: see "
        "TRUSTED_PROXIES). True is 1, true, yes or on.",
    )
    use_websockets: bool = Field(
        False,
        alias="USE_WEBSOCKETS",
        description="Place orders over the exchange's WebSocket API where ccxt supports it. "
        "True is 1, true, yes or on.",
    )

    # -- the router's own
    log_format: str = Field(
        "text",
        alias="LOG_FORMAT",
        pattern="^(text|json)$",
        description="`text`, or `json` (one object per line). Secrets are redacted either way.",
    )
    rate_limit_key: str = Field(
        "ip",
        alias="RATE_LIMIT_KEY",
        pattern="^(ip|principal)$",
        description="What RATE_LIMIT counts by: `ip` (each client address, before any work) or `principal` "
        "(each token label, or `hmac`, after authentication).",
    )
    auth_failure_limit: str = Field(
        "5/minute,30/hour",
        alias="AUTH_FAILURE_LIMIT",
        description="Requests refused before they authenticated, per client address (stricter than RATE_LIMIT); "
        "once spent the address gets 429. `off` disables; empty means the default.",
    )
    trusted_proxies: str = Field(
        "",
        alias="TRUSTED_PROXIES",
        description="Reverse proxies whose X-Forwarded-For/-Proto are believed: addresses or CIDRs, comma-separated; "
        "`*` trusts any direct peer (Heroku). Empty trusts nobody.",
    )
    metrics_token: str = _secret(
        "",
        "METRICS_TOKEN",
        "Bearer token for GET /metrics and the full health at GET /; `init` writes a random one.",
    )
    plugins_file: str = Field(
        "./plugins.yaml",
        alias="PLUGINS_FILE",
        description="The plugin configuration. A named file must exist (the default may be absent).",
    )
    data_dir: str = Field(
        "./data",
        alias="DATA_DIR",
        description="Where the journal (with its replay keys), the paper ledger and tokens live (SQLite state).",
    )
    state_url: str = _secret(
        "",
        "STATE_URL",
        "Shared state across machines: `redis://host:6379/0` (`rediss://`: TLS without certificate verification "
        "unless `?ssl_cert_reqs=required`). Empty: REDIS_TLS_URL or REDIS_URL if set (Heroku Redis), "
        "else SQLite files under DATA_DIR.",
    )
    state_prefix: str = Field(
        "tvr",
        alias="STATE_PREFIX",
        pattern=r"^[A-Za-z0-9_.-]{1,32}$",
        description="Prefix of every Redis key, so several deployments can share one Redis.",
    )
    dashboard_password: str = _secret(
        "",
        "DASHBOARD_PASSWORD",
        "The web dashboard at /dashboard: off while empty, else at least 12 characters "
        "(`init` writes a random one and prints it once).",
    )
    dashboard_session_ttl: int = Field(
        28800, alias="DASHBOARD_SESSION_TTL", gt=0, description="Seconds a dashboard login lasts."
    )
    dyno: str = Field(
        "",
        alias="DYNO",
        description="Set by Heroku: the filesystem is ephemeral, so SQLite state is refused unless "
        "ALLOW_EPHEMERAL_STATE is true.",
    )
    allow_ephemeral_state: bool = Field(
        False,
        alias="ALLOW_EPHEMERAL_STATE",
        description="Where DYNO is set, start with SQLite state although the journal and tokens are lost "
        "on every restart.",
    )
    prometheus_multiproc_dir: str = Field(
        "",
        alias="PROMETHEUS_MULTIPROC_DIR",
        description="Where the server's workers share their metrics samples (empty: DATA_DIR/metrics).",
    )
    host: str = Field(
        "",
        alias="HOST",
        description="`serve`'s address when --bind is not given (0.0.0.0 when only PORT is set); "
        "with neither: hypercorn.toml's bind, else 127.0.0.1:8000.",
    )
    port: int | None = Field(
        None,
        alias="PORT",
        ge=1,
        le=65535,
        description="`serve`'s port when --bind is not given (Heroku sets it); also `simulate`'s default URL.",
    )

    _environ: dict[str, str] = PrivateAttr(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments first; then the mapping ``from_env`` reads, or for a bare ``Settings()``
        pydantic-settings' own environment and ``.env`` sources (no secrets directory)."""
        reading = _READING.get()
        if reading is not None:
            return init_settings, _Environment(settings_cls, reading)
        return init_settings, env_settings, dotenv_settings

    @field_validator("require_https", "use_websockets", "allow_ephemeral_state", mode="before")
    @classmethod
    def _parse_bool(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip().lower() in TRUE_WORDS
        return value

    @field_validator("rate_limit", "auth_failure_limit", mode="before")
    @classmethod
    def _rate_limits(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and not value.strip():
            return cls.model_fields[str(info.field_name)].default  # RATE_LIMIT= in .env means the default
        if isinstance(value, str):
            from core.web.ratelimit import parse_rate_limits

            parse_rate_limits(value)  # raises ValueError naming the bad part
        return value

    @field_validator("rate_limit_key", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return (value.strip().lower() or "ip") if isinstance(value, str) else value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        from core.web.proxy import TrustedProxies

        TrustedProxies(value)  # raises ValueError naming the bad entry
        return value

    @field_validator("dashboard_password")
    @classmethod
    def _dashboard_password(cls, value: str) -> str:
        if value and len(value) < 12:
            raise ValueError("must be empty (dashboard off) or at least 12 characters")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value  # PORT= means unset

    @classmethod
    def from_env(
        cls,
        env_file: str | os.PathLike[str] | None = ".env",
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """The settings of ``environ`` (default: the process environment) over ``env_file``.

        ``overrides`` are by variable name (``STATE_URL="..."``) and win over both. Raises
        ConfigError with one line, ``environment: NAME: what is wrong``.
        """
        env = read_environment(env_file, environ)
        named = env.get("PLUGINS_FILE", "").strip()
        if named and not Path(named).is_file():
            raise ConfigError(
                f"environment: PLUGINS_FILE: no file at '{named}' (expected the path of a plugins.yaml; "
                "unset it to use ./plugins.yaml)"
            )
        if not env.get("STATE_URL", "").strip():
            # Heroku Redis (and other add-ons) hand the URL over as REDIS_TLS_URL / REDIS_URL;
            # set in the merged environment too, for plugins.yaml's ${STATE_URL:-}.
            derived = env.get("REDIS_TLS_URL", "").strip() or env.get("REDIS_URL", "").strip()
            if derived:
                env = {**env, "STATE_URL": derived}
        reading = _READING.set(env)
        try:
            settings = cls(**overrides)
        except ValidationError as exc:
            raise ConfigError(cls.describe_error(exc)) from None
        except SettingsError as exc:
            raise ConfigError(f"environment: {exc}") from None
        finally:
            _READING.reset(reading)
        settings._environ = env
        return settings

    @classmethod
    def describe_error(cls, exc: ValidationError) -> str:
        """``environment: NAME: message`` for the first error of ``exc``."""
        err = exc.errors()[0]
        loc = str(err["loc"][0]) if err["loc"] else "?"
        field = cls.model_fields.get(loc)
        name = field.alias if field is not None and field.alias else loc
        return f"environment: {name}: {err['msg'].removeprefix('Value error, ')}"

    @classmethod
    def variables(cls) -> dict[str, FieldInfo]:
        """Every setting by its environment variable, in declaration order (for the docs and tests)."""
        return {field.alias or name: field for name, field in cls.model_fields.items()}

    @property
    def environ(self) -> dict[str, str]:
        """The whole environment (with ``.env``) these settings were read from, for ``${VAR}`` in plugins.yaml."""
        return self._environ

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)
