"""``StateBackend`` reads the state URL once and opens every store on the backend it names."""

from __future__ import annotations

import pytest

from core.config import Settings
from core.errors import ConfigError
from core.store.factory import StateBackend, StateOptions, describe_url, redis_options
from core.store.redis.backend import RedisBackend
from core.store.redis.journal import RedisJournal
from core.store.sqlite.backend import SqliteBackend
from core.store.sqlite.journal import SqliteJournal


def settings(data_dir, **environ: str) -> Settings:
    return Settings.from_env(env_file=None, environ={"DATA_DIR": str(data_dir), **environ})


async def test_sqlite_is_the_default_and_keeps_its_files_under_data_dir(data_dir):
    state = StateBackend(settings(data_dir / "state"))
    assert (state.kind, state.is_redis, state.description) == ("sqlite", False, "sqlite")
    assert isinstance(state.backend, SqliteBackend)
    journal = state.journal()
    try:
        assert isinstance(journal, SqliteJournal) and journal.db.path == data_dir / "state" / "journal.sqlite3"
    finally:
        await journal.aclose()
    assert (data_dir / "state").stat().st_mode & 0o777 == 0o700
    with pytest.raises(ConfigError, match="not a Redis backend"):
        state.client  # noqa: B018


async def test_a_redis_url_opens_every_store_on_one_client(data_dir):
    state = StateBackend(
        settings(data_dir, STATE_URL="redis://:hunter2@127.0.0.1:6379/15", STATE_PREFIX="pfx"),
        StateOptions(retention_days=2, wait_replicas=1),
    )
    try:
        assert (state.kind, state.is_redis) == ("redis", True) and isinstance(state.backend, RedisBackend)
        assert state.description == "redis://***@127.0.0.1:6379/15"
        journal = state.journal()
        assert isinstance(journal, RedisJournal)
        assert (journal.prefix, journal.retention, journal.wait_replicas) == ("pfx", 2 * 86400, 1)
        stores = [journal, state.token_store(), state.risk_store(), state.rate_store()]
        assert {id(s.client) for s in stores} == {id(state.client)}
    finally:
        await state.aclose()


def test_plugins_yaml_names_the_backend_before_the_environment(data_dir):
    state = StateBackend(settings(data_dir, STATE_URL="sqlite"), StateOptions(url="redis://127.0.0.1:6379/15"))
    assert state.kind == "redis"


@pytest.mark.parametrize("url", ["postgres://db/1", "sqlite:///x.db", "redis"])
def test_anything_else_is_refused_with_one_line(data_dir, url):
    with pytest.raises(ConfigError, match="plugin 'state': field 'url': expected 'sqlite' or a redis:// URL"):
        StateBackend(settings(data_dir, STATE_URL=url))


def test_urls_are_described_without_their_password_and_tls_is_not_verified_by_default():
    assert describe_url("rediss://user:pw@host:1/0") == "rediss://***@host:1/0"
    assert describe_url("sqlite") == "sqlite"
    assert redis_options("rediss://h:1/0") == {"ssl_cert_reqs": None}
    assert redis_options("rediss://h:1/0?ssl_cert_reqs=required") == {}
    assert redis_options("redis://h:1/0") == {}
