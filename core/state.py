"""Where shared state lives: SQLite files under DATA_DIR (the default) or Redis.

``STATE_URL=redis://host:6379/0`` (or ``state.url`` in plugins.yaml) moves the journal
of record, deduplication, arrival order, worker heartbeats and recovery claims — and,
through the auth and rate-limit plugins, replay protection, tokens and rate limits — to
Redis, so every guarantee holds across workers and machines. With SQLite they hold
across the workers of one machine (``hypercorn --workers N``) sharing DATA_DIR.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from core.config import PluginOptions, RouterOptions, Settings
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


def state_url(settings: Settings, options: StateOptions) -> str:
    url = (options.url or settings.state_url or "sqlite").strip()
    if url != "sqlite" and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{settings.plugins_file}: plugin 'state': field 'url': expected 'sqlite' or a redis:// URL")
    return url


def open_journal(settings: Settings, options: StateOptions, router_options: RouterOptions) -> Any:
    """The journal of record for this deployment's state backend."""
    url = state_url(settings, options)
    if url == "sqlite":
        from core.journal import Journal

        return Journal(settings.data_path / "journal.sqlite3", synchronous=router_options.journal_synchronous)
    from core.journal_redis import RedisJournal

    return RedisJournal(url, prefix=options.prefix or settings.state_prefix, retention_days=options.retention_days,
                        wait_replicas=options.wait_replicas, worker_stale_after=router_options.worker_stale_after)


def describe_url(url: str) -> str:
    """The URL without its password, for the health check and logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
