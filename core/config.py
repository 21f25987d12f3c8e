"""Settings from the environment (and ``.env``) and the per-plugin sections of plugins.yaml.

Environment variables are read here and nowhere else: hooks get their configuration from
the pydantic options model their plugin declares, validated once at startup. A startup
error is one line naming the file, the plugin and the field.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}


def read_environment(
    env_file: str | os.PathLike | None = ".env", environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The process environment over the values of ``env_file`` (the environment wins)."""
    merged: dict[str, str] = {}
    if env_file and Path(env_file).is_file():
        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ if environ is None else environ)
    return merged


class Settings(BaseModel):
    """Process-wide settings. Field aliases are the environment variable names."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    webhook_secret: str = Field("", alias="WEBHOOK_SECRET", repr=False)
    default_exchange: str = Field("paper", alias="DEFAULT_EXCHANGE")
    default_api_key: str = Field("", alias="DEFAULT_API_KEY", repr=False)
    default_api_secret: str = Field("", alias="DEFAULT_API_SECRET", repr=False)
    log_level: str = Field("INFO", alias="LOG_LEVEL")
    log_format: str = Field("text", alias="LOG_FORMAT", pattern="^(text|json)$")
    rate_limit: str = Field("10/minute", alias="RATE_LIMIT")
    signature_cache_ttl: int = Field(300, alias="SIGNATURE_CACHE_TTL", gt=0)
    token_ttl: int = Field(86400, alias="TOKEN_TTL", gt=0)
    require_https: bool = Field(False, alias="REQUIRE_HTTPS")
    # Auth and abuse protection (core.web.ratelimit, core.web.proxy): RATE_LIMIT keyed by client
    # address or by authenticated principal; the stricter budget of requests refused before
    # they authenticated; the proxies whose X-Forwarded-For/-Proto are believed.
    rate_limit_key: str = Field("ip", alias="RATE_LIMIT_KEY", pattern="^(ip|principal)$")
    auth_failure_limit: str = Field("5/minute,30/hour", alias="AUTH_FAILURE_LIMIT")
    trusted_proxies: str = Field("", alias="TRUSTED_PROXIES")
    use_websockets: bool = Field(False, alias="USE_WEBSOCKETS")
    # A bearer token for monitoring: GET /metrics and the full health at GET / (docs/security.md).
    metrics_token: str = Field("", alias="METRICS_TOKEN", repr=False)
    plugins_file: str = Field("./plugins.yaml", alias="PLUGINS_FILE")
    data_dir: str = Field("./data", alias="DATA_DIR")
    state_url: str = Field("", alias="STATE_URL", repr=False)
    state_prefix: str = Field("tvr", alias="STATE_PREFIX", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    # The web dashboard (core.dashboard): off unless a password is set.
    dashboard_password: str = Field("", alias="DASHBOARD_PASSWORD", repr=False)
    dashboard_session_ttl: int = Field(28800, alias="DASHBOARD_SESSION_TTL", gt=0)
    # Heroku sets DYNO: the filesystem is ephemeral, so SQLite state (journal, tokens) is
    # lost on every restart unless ALLOW_EPHEMERAL_STATE says that is understood.
    dyno: str = Field("", alias="DYNO")
    allow_ephemeral_state: bool = Field(False, alias="ALLOW_EPHEMERAL_STATE")
    # The whole environment (with .env), for ${VAR} interpolation in plugins.yaml.
    environ: dict[str, str] = Field(default_factory=dict, exclude=True, repr=False)

    @field_validator("require_https", "use_websockets", "allow_ephemeral_state", mode="before")
    @classmethod
    def _parse_bool(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip().lower() in _TRUE
        return value

    @field_validator("rate_limit", "auth_failure_limit", mode="before")
    @classmethod
    def _rate_limits(cls, value: Any, info: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return cls.model_fields[info.field_name].default  # RATE_LIMIT= in .env means the default
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

    @classmethod
    def from_env(
        cls, env_file: str | os.PathLike | None = ".env", environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> Settings:
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
        known = {f.alias for f in cls.model_fields.values() if f.alias}
        values: dict[str, Any] = {k: v for k, v in env.items() if k in known}
        values.update(overrides)
        try:
            return cls.model_validate({**values, "environ": env})
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = err["loc"][0] if err["loc"] else "?"
            field = cls.model_fields[loc].alias if loc in cls.model_fields else loc
            raise ConfigError(f"environment: {field}: {err['msg'].removeprefix('Value error, ')}") from None

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)


# ---------------------------------------------------------------- plugins.yaml

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class PluginsFile:
    """The parsed plugins.yaml: one top-level section per plugin, plus ``router``.

    ``${VAR}`` and ``${VAR:-default}`` in any string are replaced from the environment and
    ``.env``; ``$$`` stands for a literal ``$``. A missing variable without a default is an
    error naming the plugin and the field it is in.
    """

    def __init__(self, path: str | os.PathLike, sections: dict[str, Any], environ: Mapping[str, str]):
        self.path = str(path)
        self._raw = sections
        self._environ = environ
        self.used: set[str] = set()

    @classmethod
    def load(cls, path: str | os.PathLike, environ: Mapping[str, str]) -> PluginsFile:
        p = Path(path)
        if not p.exists():
            return cls(path, {}, environ)
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}:{where} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of plugin sections at the top level")
        return cls(path, data, environ)

    def section_names(self) -> list[str]:
        return list(self._raw)

    def section(self, name: str) -> dict[str, Any]:
        """The section of plugin ``name`` with ``${VAR}`` interpolated ({} when absent)."""
        self.used.add(name)
        raw = self._raw.get(name)
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{self.path}: plugin '{name}': expected a mapping of options, got {type(raw).__name__}")
        return self._interpolate(raw, name, ())

    def _interpolate(self, value: Any, plugin: str, path: tuple) -> Any:
        if isinstance(value, dict):
            return {k: self._interpolate(v, plugin, path + (k,)) for k, v in value.items()}
        if isinstance(value, list):
            return [self._interpolate(v, plugin, path + (i,)) for i, v in enumerate(value)]
        if not isinstance(value, str) or "$" not in value:
            return value

        def replace(m: re.Match) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            if name in self._environ and self._environ[name] != "":
                return self._environ[name]
            if default is not None:
                return default
            field = ".".join(str(p) for p in path)
            raise ConfigError(
                f"{self.path}: plugin '{plugin}': field '{field}': environment variable {name} is not set "
                f"(set it, or write ${{{name}:-default}})"
            )

        return _VAR.sub(replace, value)

    def validate(self, name: str, model: type[BaseModel]) -> BaseModel:
        """Validate plugin ``name``'s section with ``model``; errors become one readable line."""
        data = self.section(name)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(self.path, name, exc)) from None


def describe_validation_error(path: str, plugin: str, exc: ValidationError) -> str:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "(section)"
    if err["type"] == "extra_forbidden":
        expected = "no such option"
    else:
        expected = err["msg"]
    got = err.get("input")
    shown = "" if err["type"] in ("missing", "extra_forbidden") or isinstance(got, (dict, list)) else f" (got {got!r})"
    more = f" [+{len(exc.errors()) - 1} more]" if len(exc.errors()) > 1 else ""
    return f"{path}: plugin '{plugin}': field '{field}': {expected}{shown}{more}"


class PluginOptions(BaseModel):
    """Base for plugin options models: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


class RouterOptions(PluginOptions):
    """The ``router`` section: how plugins are found and core limits."""

    plugin_dir: str = "./local_plugins"
    modules: list[str] = Field(default_factory=list)
    disabled: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(65536, gt=0)
    max_json_depth: int = Field(32, gt=0)
    # Intake (core.web.intake): requests of one client address in progress at once in a worker
    # (more get 429 before their body is read), and seconds the whole body may take.
    max_inflight_per_address: int = Field(64, gt=0)
    body_timeout: float = Field(5.0, gt=0, le=60)
    # Answer within this many seconds (TradingView gives up after 3): 200 when the order
    # finished, else 202 while it goes on.
    response_budget: float = Field(2.5, gt=0, le=30)
    # An alert without an explicit id that repeats a body seen within this many seconds is
    # a TradingView resend (5 s apart, up to three) and is not executed again.
    dedup_window: float = Field(60.0, ge=0)
    # Accept the classic payload's per-alert apiKey/secret (used for that order only, never
    # stored). Off: keys in alert messages are readable by anyone who sees the message, and
    # let a token holder trade with any keys on any exchange (docs/security.md).
    allow_payload_credentials: bool = False
    # Seconds shutdown waits for orders in flight.
    shutdown_grace: float = Field(10.0, ge=0)
    # Retries of refusals that booked nothing (rate limits): backoff from base to max seconds,
    # with jitter, while the answer budget lasts.
    retry_base_delay: float = Field(0.1, gt=0)
    retry_max_delay: float = Field(1.0, gt=0)
    # Outcome unknown: look the order up by client order id every interval..max seconds.
    reconcile_interval: float = Field(0.5, gt=0)
    reconcile_max_delay: float = Field(5.0, gt=0)
    # Send again only after the exchange said "absent" this long after the lost request:
    # longer than the exchange's receive window (binance: 10 s), so it can no longer execute.
    resubmit_after: float = Field(15.0, ge=0)
    # Give up reconciling (state stays "unknown", reported through on_error) after this.
    reconcile_timeout: float = Field(300.0, gt=0)
    # On recovery, an alert never sent that is older than this is marked expired, not sent.
    recovery_max_age: float = Field(300.0, gt=0)
    # Workers heartbeat into the journal; one silent for worker_stale_after seconds is dead
    # and its unfinished alerts are recovered by another (or by the next start).
    worker_heartbeat: float = Field(2.0, gt=0)
    worker_stale_after: float = Field(6.0, gt=0)
    # SQLite synchronous mode of the journal: FULL survives power loss, NORMAL a crash.
    journal_synchronous: str = Field("FULL", pattern="^(FULL|NORMAL)$")
