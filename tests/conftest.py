"""Fixtures: settings on a temporary DATA_DIR, an in-process app, a real server process."""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from core.config import PluginsFile, Settings
from core.hooks.manager import BUILTIN_PLUGINS
from core.web.app import create_app
from tests.support import METRICS_TOKEN, SECRET, ServerProcess, base_env

pytest_plugins: list[str] = []

# Temporary directories (tmp_path, every DATA_DIR of an in-process app or a server) on a
# RAM file system where there is one: the journal, replay cache, token store and ledgers
# commit with fsync, which costs milliseconds per commit on a disk and nothing on tmpfs. A
# killed process loses nothing either way (the page cache outlives it), so the crash and
# recovery tests prove the same; a power loss is beyond any test. TEST_TMPDIR chooses another
# directory ("" for the system's).
_TEST_TMPDIR = os.environ.get("TEST_TMPDIR", "/dev/shm")
if _TEST_TMPDIR and os.path.isdir(_TEST_TMPDIR) and os.access(_TEST_TMPDIR, os.W_OK | os.X_OK):
    tempfile.tempdir = _TEST_TMPDIR

# The built-in plugins imported once, here, rather than inside the first app's startup, which
# Quart's test harness gives 6 s (ccxt alone takes seconds to import on a busy machine).
for _name, _module in BUILTIN_PLUGINS:
    importlib.import_module(_module)

# Hypothesis profiles: CI (CI=true) runs the property suites at full size, a local run at a
# tenth; HYPOTHESIS_PROFILE=ci runs the full size locally. Derandomized: a run is repeatable.
from hypothesis import settings as hypothesis_settings  # noqa: E402

hypothesis_settings.register_profile("ci", max_examples=3000, derandomize=True, database=None, deadline=None)
hypothesis_settings.register_profile("dev", max_examples=300, derandomize=True, database=None, deadline=None)
hypothesis_settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI", "").lower() == "true" else "dev")
)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    (path / "plugins.yaml").touch()  # PLUGINS_FILE names it: a named file must exist
    return path


REDIS_TEST_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def redis_answers(url: str = REDIS_TEST_URL) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def state_url(request) -> Iterator[str]:
    """The state backend under test: "sqlite" unless a test is parametrized with
    ``@pytest.mark.parametrize("state_url", STATE_BACKENDS, indirect=True)``. Redis tests use
    TEST_REDIS_URL with a key prefix of their own (``state_prefix``), deleted afterwards.
    Without a Redis they are skipped locally and fail in CI (CI=true), where .ci/run starts one."""
    url = getattr(request, "param", "sqlite")
    if url == "sqlite":
        yield url
        return
    import redis

    if not redis_answers(url):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Redis is not answering at {url} (CI starts it in .ci/run)")
        pytest.skip(f"Redis is not answering at {url}")
    prefix = request.getfixturevalue("state_prefix")
    yield url
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def state_prefix() -> str:
    """A Redis key prefix no other test (or concurrent test run) uses."""
    import uuid

    return f"t{uuid.uuid4().hex[:12]}"


STATE_BACKENDS = ["sqlite", REDIS_TEST_URL]


@pytest.fixture
def make_settings(data_dir: Path, state_url: str, state_prefix: str) -> Callable[..., Settings]:
    def make(**environ: str) -> Settings:
        env = {
            "WEBHOOK_SECRET": SECRET,
            "METRICS_TOKEN": METRICS_TOKEN,
            "DEFAULT_EXCHANGE": "paper",
            "DATA_DIR": str(data_dir),
            "PLUGINS_FILE": str(data_dir / "plugins.yaml"),
            "RATE_LIMIT": "1000/second",
            "AUTH_FAILURE_LIMIT": "1000/second",
            "STATE_URL": state_url,
            "STATE_PREFIX": state_prefix,
        }
        env.update(environ)
        return Settings.from_env(env_file=None, environ=env)

    return make


@pytest.fixture
def write_plugins_yaml(data_dir: Path) -> Callable[[str], Path]:
    def write(text: str) -> Path:
        path = data_dir / "plugins.yaml"
        path.write_text(text)
        return path

    return write


@pytest.fixture
def app_client(make_settings) -> Callable[..., AbstractAsyncContextManager]:
    """``async with app_client(**env, extra_plugins=[...]) as (client, app)``: a started app."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def start(extra_plugins: list | None = None, plugins_file: PluginsFile | None = None, **environ: str):
        settings = make_settings(**environ)
        app = create_app(settings, plugins_file=plugins_file, extra_plugins=extra_plugins)
        async with app.test_app() as test_app:
            yield test_app.test_client(), app

    return start


@pytest.fixture
def server_factory(tmp_path: Path, data_dir: Path):
    """Start real hypercorn servers; all are stopped at the end of the test."""
    servers: list[ServerProcess] = []

    def start(
        *,
        workers: int = 1,
        port: int | None = None,
        data: Path | None = None,
        extra_args: list[str] | None = None,
        **env: str,
    ) -> ServerProcess:
        server = ServerProcess(
            base_env(data or data_dir, **env), tmp_path, port=port, workers=workers, extra_args=extra_args
        )
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def all_log_text(caplog) -> Callable[[], str]:
    """Every log line of the test, formatted as the handlers would print them."""
    caplog.set_level(logging.DEBUG)

    def text() -> str:
        formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
        return "\n".join(formatter.format(r) for r in caplog.records)

    return text


@pytest.fixture
def transform():
    """The TradingView transform applied as the router applies it: alert fields to the
    model, anything else to ``alert.raw``."""
    from core.pipeline.models import Alert
    from plugins.transforms.tradingview import Plugin

    plugin = Plugin(Plugin.Options())

    def run(payload: dict) -> Alert:
        data = dict(payload)
        plugin.transform_payload(data)
        fields = {k: v for k, v in data.items() if k in Alert.model_fields}
        return Alert.model_validate(fields | {"raw": {k: v for k, v in data.items() if k not in Alert.model_fields}})

    return run


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """The exchange emulator in its own process, shared by a module's tests (modules that
    need a fresh one per test define their own ``emulator`` fixture)."""
    from tests.ccxt_support import EmulatorProcess

    process = EmulatorProcess(tmp_path_factory.mktemp("emulator")).start()
    yield process
    process.stop()
