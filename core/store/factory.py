"""Where shared state lives: SQLite files under DATA_DIR (the default) or Redis.

``STATE_URL=redis://host:6379/0`` (or ``state.url`` in plugins.yaml; without either,
``REDIS_TLS_URL`` or ``REDIS_URL`` as Heroku Redis sets them) moves the journal
of record, deduplication, arrival order, worker heartbeats and recovery claims, the
replay cache, tokens and rate limits to Redis, so every guarantee holds across workers
and machines. With SQLite they hold across the workers of one machine
(``hypercorn --workers N``) sharing DATA_DIR.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from core.config import PluginOptions, PluginsFile, RouterOptions, Settings
from core.errors import ConfigError


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


class StateBackend:
    """Opens the stores of one deployment; one Redis connection pool is shared by all."""

    def __init__(
        self, settings: Settings, options: StateOptions | None = None, router_options: RouterOptions | None = None
    ):
        self.settings = settings
        self.options = options or StateOptions()
        self.router_options = router_options or RouterOptions()
        self.url = (self.options.url or settings.state_url or "sqlite").strip()
        if self.url != "sqlite" and not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                f"{settings.plugins_file}: plugin 'state': field 'url': expected 'sqlite' or a redis:// URL"
            )
        self.prefix = self.options.prefix or settings.state_prefix
        self._client: Any = None
        self._rate_stores: dict[str, Any] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> StateBackend:
        """For command-line tools: the backend plugins.yaml and the environment name."""
        plugins_file = PluginsFile.load(settings.plugins_file, settings.environ)
        return cls(settings, plugins_file.validate("state", StateOptions))  # type: ignore[arg-type]

    @property
    def is_redis(self) -> bool:
        return self.url != "sqlite"

    @property
    def description(self) -> str:
        return describe_url(self.url)

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                from core.store.redis.state import redis_client
            except ImportError:
                raise ConfigError(
                    "STATE_URL names Redis but the redis package is not installed (pip install '.[redis]')"
                ) from None
            self._client = redis_client(self.url, **redis_options(self.url))
        return self._client

    @property
    def data_dir(self):
        from core.store.sqlite.database import private_dir

        return private_dir(self.settings.data_path)

    def journal(self) -> Any:
        if not self.is_redis:
            from core.store.sqlite.journal import Journal

            return Journal(self.data_dir / "journal.sqlite3", synchronous=self.router_options.journal_synchronous)
        from core.store.redis.journal import RedisJournal

        return RedisJournal(
            self.client,
            prefix=self.prefix,
            retention_days=self.options.retention_days,
            wait_replicas=self.options.wait_replicas,
            worker_stale_after=self.router_options.worker_stale_after,
        )

    def replay_cache(self) -> Any:
        if not self.is_redis:
            from core.store.replay import SqliteReplayCache

            return SqliteReplayCache(self.data_dir / "replay.sqlite3")
        from core.store.redis.state import RedisReplayCache

        return RedisReplayCache(self.client, self.prefix)

    def token_store(self, *, synchronous: str = "FULL") -> Any:
        if not self.is_redis:
            from core.store.tokens import SqliteTokenStore

            return SqliteTokenStore(self.data_dir / "tokens.sqlite3", synchronous=synchronous)
        from core.store.redis.state import RedisTokenStore

        return RedisTokenStore(self.client, self.prefix)

    def rate_store(self, *, durable: bool = False) -> Any:
        """The storage of rate-limit counters (``core.web.ratelimit``), one per kind: Redis
        with STATE_URL; else, when this process is the server's only worker, memory (nothing
        to share, no disk write per request; a restart resets the counters); else
        ``DATA_DIR/ratelimit.sqlite3``, shared by the workers of this machine. ``durable``:
        never memory (the dashboard's logged-out sessions must outlive a restart)."""
        from core.web.worker import hypercorn_workers

        kind = "redis" if self.is_redis else "sqlite" if durable or hypercorn_workers() != 1 else "memory"
        if kind not in self._rate_stores:
            if kind == "redis":
                from core.store.redis.rate import RedisRateStorage

                self._rate_stores[kind] = RedisRateStorage(self.client, self.prefix)
            elif kind == "sqlite":
                from core.store.sqlite.rate import SqliteRateStorage

                self._rate_stores[kind] = SqliteRateStorage(self.data_dir / "ratelimit.sqlite3")
            else:
                from core.web.ratelimit import MemoryRateStorage

                self._rate_stores[kind] = MemoryRateStorage()
        return self._rate_stores[kind]

    def risk_store(self) -> Any:
        """Halts, flattens, order counts and day baselines (``core.store.risk``)."""
        if not self.is_redis:
            from core.store.risk import SqliteRiskStore

            return SqliteRiskStore(self.data_dir / "risk.sqlite3")
        from core.store.risk import RedisRiskStore

        return RedisRiskStore(self.client, self.prefix)

    async def aclose(self) -> None:
        for store in self._rate_stores.values():
            await store.after_serving()
        self._rate_stores.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
