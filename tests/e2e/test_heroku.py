"""Heroku: the Procfile, app.json, the lock file and the Redis URL translation (issue 15).

The lock (requirements.txt) must cover pyproject's dependencies at versions they allow and
every package they pull in; the slow test installs it into a fresh venv and starts the
app from it with a Heroku-style environment (PORT, DYNO, REDIS_URL). The local Redis has
no TLS, so ``rediss://`` is checked through the connection options it produces, and the
start uses ``redis://``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import tomllib
import venv
from importlib import metadata

import httpx
import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from core.config import Settings
from core.store.factory import StateBackend, redis_options
from tests.conftest import REDIS_TEST_URL
from tests.support import METRICS_TOKEN, MONITOR, ROOT, SECRET, free_port

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.txt: {line!r} is not pinned with =="
            pins[canonicalize_name(name.split(";")[0].strip())] = version.split(";")[0].strip()
    return pins


def direct_requirements() -> list[Requirement]:
    project = PYPROJECT["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["redis"]]


def test_lock_pins_every_dependency_at_an_allowed_version():
    pins = lock()
    for req in direct_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} (pyproject.toml) is missing from requirements.txt: regenerate it"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.txt pins {name}=={pins[name]}, pyproject wants {req}"
        )


def test_lock_holds_everything_the_dependencies_pull_in():
    """The closure of pyproject's dependencies (from the installed packages' metadata) is
    pinned — a lock missing a transitive dependency would install an unpinned one."""
    pins = lock()
    env = default_environment() | {"python_version": "3.11", "python_full_version": "3.11.9"}
    seen: set[str] = set()
    todo = [(req, "") for req in direct_requirements()]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate(env | {"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        for wanted in req.extras or {""}:
            if (name, wanted) in seen:
                continue
            seen.add((name, wanted))
            try:
                dist = metadata.distribution(name)
            except metadata.PackageNotFoundError:
                pytest.fail(f"{name} is not installed here: install the project's dependencies to check the lock")
            todo.extend((Requirement(r), wanted) for r in dist.requires or [])
    missing = sorted({name for name, _ in seen} - set(pins))
    assert not missing, f"requirements.txt lacks {missing}: regenerate it (command in its header)"


def test_python_version_file_matches_requires_python():
    version = (ROOT / ".python-version").read_text().strip()
    assert re.fullmatch(r"3\.\d+", version), "Heroku reads a major version such as 3.11"
    from packaging.specifiers import SpecifierSet

    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(version + ".0")


def procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            assert re.fullmatch(r"[a-z]+", name), line
            entries[name] = command.strip()
    return entries


def test_procfile_serves_on_port_and_checks_the_configuration_on_release():
    entries = procfile()
    assert entries["web"].startswith("python -m core serve") and "--bind 0.0.0.0:$PORT" in entries["web"]
    # Heroku sends SIGTERM and kills 30 s later: the graceful stop fits inside.
    grace = float(re.search(r"--graceful-timeout (\d+)", entries["web"]).group(1))
    assert grace < 30
    assert entries["release"] == "python -m core check-config"


def test_app_json_deploys_with_redis_and_a_generated_secret():
    app = json.loads((ROOT / "app.json").read_text())
    assert app["env"]["WEBHOOK_SECRET"]["generator"] == "secret"
    assert any(addon["plan"].startswith("heroku-redis") for addon in app["addons"])
    assert {"url": "heroku/python"} in app["buildpacks"]
    values = {name: spec["value"] for name, spec in app["env"].items() if isinstance(spec, dict) and "value" in spec}
    # Every preset value is one the server accepts.
    settings = Settings.from_env(
        env_file=None, environ={**values, "WEBHOOK_SECRET": SECRET, "REDIS_URL": "rediss://h:6379"}
    )
    assert settings.require_https and settings.trusted_proxies == "*" and settings.rate_limit_key == "principal"


def test_state_url_comes_from_heroku_redis_variables():
    base = {"WEBHOOK_SECRET": SECRET}
    assert (
        Settings.from_env(env_file=None, environ={**base, "REDIS_URL": "rediss://:p@h:1/0"}).state_url
        == "rediss://:p@h:1/0"
    )
    both = {**base, "REDIS_URL": "redis://h:1", "REDIS_TLS_URL": "rediss://h:2"}
    assert Settings.from_env(env_file=None, environ=both).state_url == "rediss://h:2"
    assert (
        Settings.from_env(env_file=None, environ={**both, "STATE_URL": "redis://mine:3"}).state_url == "redis://mine:3"
    )
    # plugins.yaml's ${STATE_URL:-} sees it too.
    assert (
        Settings.from_env(env_file=None, environ={**base, "REDIS_URL": "redis://h:1"}).environ["STATE_URL"]
        == "redis://h:1"
    )


def test_rediss_connects_with_tls_without_verifying_herokus_certificate():
    assert redis_options("rediss://:pw@ec2-1-2-3-4.compute-1.amazonaws.com:6380") == {"ssl_cert_reqs": None}
    assert redis_options("redis://127.0.0.1:6379/0") == {}
    assert redis_options("rediss://h:1/0?ssl_cert_reqs=required") == {}
    settings = Settings.from_env(
        env_file=None, environ={"WEBHOOK_SECRET": SECRET, "REDIS_URL": "rediss://:pw@h.example:6380/0"}
    )
    client = StateBackend(settings).client  # nothing is connected until a command is sent
    kwargs = client.connection_pool.connection_kwargs
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"
    assert kwargs["ssl_cert_reqs"] is None and kwargs["host"] == "h.example" and kwargs["port"] == 6380


@pytest.mark.slow
def test_the_lock_installs_in_a_fresh_venv_and_the_app_starts_the_heroku_way(tmp_path, state_prefix):
    requirements = str(ROOT / "requirements.txt")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    installed = subprocess.run(
        # --no-compile: byte-compiling ccxt's thousands of modules is most of an install's time
        # and proves nothing about the lock (Python compiles what it imports anyway).
        [str(python), "-m", "pip", "install", "-q", "--no-compile", "--disable-pip-version-check", "-r", requirements],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]

    port = free_port()
    # Heroku: the app's directory (no project install), PORT, DYNO, REDIS_URL from the add-on.
    env = {
        "PATH": f"{env_dir / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PYTHONUNBUFFERED": "1",
        "PORT": str(port),
        "DYNO": "web.1",
        "REDIS_URL": REDIS_TEST_URL,
        "STATE_PREFIX": state_prefix,
        "WEBHOOK_SECRET": SECRET,
        "DATA_DIR": str(tmp_path / "data"),
        "TRUSTED_PROXIES": "*",
        "REQUIRE_HTTPS": "true",
        "RATE_LIMIT_KEY": "principal",
        "METRICS_TOKEN": METRICS_TOKEN,
    }
    release = subprocess.run(
        ["sh", "-c", procfile()["release"]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert release.returncode == 0, release.stderr
    assert "state: redis://" in release.stdout

    # exec: the status is the server's, not the shell's (Heroku signals every process of the dyno).
    web = subprocess.Popen(
        ["sh", "-c", "exec " + procfile()["web"]],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline and health is None:
            assert web.poll() is None, web.stderr.read().decode() if web.stderr else ""
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/", headers=MONITOR, timeout=1).json()
            except httpx.HTTPError:
                time.sleep(0.1)  # polling the real condition (the port answering), bounded
        assert health is not None, "the web dyno did not answer"
        assert health["status"] == "ok" and health["state"]["backend"].startswith("redis://")
        os.killpg(web.pid, signal.SIGTERM)
        assert web.wait(30) == 0
    finally:
        if web.poll() is None:
            os.killpg(web.pid, signal.SIGKILL)
            web.wait()
