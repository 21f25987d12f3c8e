"""Where shared state lives: SQLite files under DATA_DIR (the default) or Redis.

``STATE_URL=redis://host:6379/0`` (or ``state.url`` in plugins.yaml; without either,
``REDIS_TLS_URL`` or ``REDIS_URL`` as Heroku Redis sets them) moves the journal
of record (with the replay keys of signed requests), deduplication, arrival order, worker
heartbeats and recovery claims, tokens and rate limits to Redis, so every guarantee holds across workers
and machines. With SQLite they hold across the workers of one machine
(``hypercorn --workers N``) sharing DATA_DIR.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import Field

from core.config import PluginOptions, PluginsFile, RouterOptions, Settings
from core.errors import ConfigError
from core.store.protocols import Journal, RateStore, RiskStore, TokenStore


class StateOptions(PluginOptions):
    """The ``state`` section of plugins.yaml."""

    # sqlite (default) or redis://[:password@]host:port/db; empty means STATE_URL.
    url: str = ""
    # Prefix of every Redis key, so several deployments can share one Redis (empty: STATE_PREFIX).
    prefix: str = Field("", pattern=r"^[A-Za-z0-9_.-]{0,32}$")
    # Days a journaled alert is kept in Redis (explicit alert ids are deduplicated as long).
    retention_days: float = Field(7.0, ge=1)
    # Wait for this many Redis replicas to acknowledge each journal write before answering.
    wait_replicas: int = Field(0, ge=0)


def redis_options(url: str) -> dict[str, Any]:
    """Connection options a Redis URL needs beyond itself.

    ``rediss://`` (TLS; Heroku Redis on current plans) comes with a self-signed
    certificate, so the client must not verify it: ``ssl_cert_reqs=None`` — unless the URL
    says otherwise itself (``?ssl_cert_reqs=required``).
    """
    if url.lower().startswith("rediss://") and "ssl_cert_reqs=" not in url:
        return {"ssl_cert_reqs": None}
    return {}


def describe_url(url: str) -> str:
    """The URL without its password, for the health check and logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


class StoreBackend(Protocol):
    """What a backend (``SqliteBackend``, ``RedisBackend``) opens: every store, on one kind of storage."""

    @property
    def kind(self) -> Literal["sqlite", "redis"]: ...

    def journal(self) -> Journal: ...

    def token_store(self, *, synchronous: str = "FULL") -> TokenStore: ...

    def rate_store(self) -> RateStore: ...

    def risk_store(self) -> RiskStore: ...

    async def aclose(self) -> None: ...


class StateBackend:
    """The stores of one deployment, on the backend its state URL names (chosen once, here)."""

    def __init__(
        self, settings: Settings, options: StateOptions | None = None, router_options: RouterOptions | None = None
    ):
        self.settings = settings
        self.options = options or StateOptions()
        router_options = router_options or RouterOptions()
        self.url = (self.options.url or settings.state_url or "sqlite").strip()
        self.prefix = self.options.prefix or settings.state_prefix
        self._rate_stores: dict[str, RateStore] = {}
        self.backend: StoreBackend
        if self.url == "sqlite":
            from core.store.sqlite.backend import SqliteBackend

            self.backend = SqliteBackend(settings.data_path, journal_synchronous=router_options.journal_synchronous)
        elif self.url.startswith(("redis://", "rediss://", "unix://")):
            try:
                from core.store.redis.backend import RedisBackend
            except ImportError:
                raise ConfigError(
                    "STATE_URL names Redis but the redis package is not installed (pip install '.[redis]')"
                ) from None
            self.backend = RedisBackend(
                self.url,
                prefix=self.prefix,
                retention_days=self.options.retention_days,
                wait_replicas=self.options.wait_replicas,
                worker_stale_after=router_options.worker_stale_after,
                client_options=redis_options(self.url),
            )
        else:
            raise ConfigError(
                f"{settings.plugins_file}: plugin 'state': field 'url': expected 'sqlite' or a redis:// URL"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> StateBackend:
        """For command-line tools: the backend plugins.yaml and the environment name."""
        plugins_file = PluginsFile.load(settings.plugins_file, settings.environ)
        options = plugins_file.validate("state", StateOptions)
        return cls(settings, options if isinstance(options, StateOptions) else None)

    @property
    def kind(self) -> Literal["sqlite", "redis"]:
        """``sqlite`` (this machine's workers share DATA_DIR) or ``redis`` (every machine shares it)."""
        return self.backend.kind

    @property
    def is_redis(self) -> bool:
        """Whether state is shared beyond this machine (the Heroku check, the doctor, the dashboard)."""
        return self.kind == "redis"

    @property
    def description(self) -> str:
        """The backend for the health check and logs: ``sqlite`` or the URL without its password."""
        return describe_url(self.url)

    @property
    def client(self) -> Any:
        """The Redis client every Redis store shares (``ConfigError`` on SQLite)."""
        client = getattr(self.backend, "client", None)
        if client is None:
            raise ConfigError(f"state {self.description}: not a Redis backend")
        return client

    def journal(self) -> Journal:
        return self.backend.journal()

    def token_store(self, *, synchronous: str = "FULL") -> TokenStore:
        """``synchronous`` (SQLite): FULL for issuing and revoking, NORMAL for verifying."""
        return self.backend.token_store(synchronous=synchronous)

    def rate_store(self, *, durable: bool = False) -> RateStore:
        """The rate-limit counters (``core.web.ratelimit``), one store per kind: the backend's
        (Redis with STATE_URL; ``DATA_DIR/ratelimit.sqlite3``, shared by the workers of this
        machine), except when this process is the server's only worker on SQLite: memory
        (nothing to share, no disk write per request; a restart resets the counters).
        ``durable``: never memory (the dashboard's logged-out sessions must outlive a restart)."""
        from core.web.worker import hypercorn_workers

        kind = "memory" if self.kind == "sqlite" and not durable and hypercorn_workers() == 1 else self.kind
        if kind not in self._rate_stores:
            if kind == "memory":
                from core.web.ratelimit import MemoryRateStorage

                self._rate_stores[kind] = MemoryRateStorage()
            else:
                self._rate_stores[kind] = self.backend.rate_store()
        return self._rate_stores[kind]

    def risk_store(self) -> RiskStore:
        """Halts, flattens, order counts and day baselines (``core.store.risk``)."""
        return self.backend.risk_store()

    async def aclose(self) -> None:
        for store in self._rate_stores.values():
            await store.after_serving()
        self._rate_stores.clear()
        await self.backend.aclose()
