"""Configuration mistakes stop the server with one line and a failure status (issue 15).

Each mistake of the issue's "Why" is started through the real entry points — ``python -m
core serve``, the Procfile's web command and ``make run`` — and must exit non-zero with
one line on stderr naming the variable or file, the field and what was expected; no
traceback. ``check-config`` gives the same verdict without starting.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, SECRET, free_port

PYTHON_DIR = str(Path(sys.executable).parent)
# Startup imports ccxt in the worker; generous bound for a loaded CI machine (the issue's
# 5 s holds on an idle one). A bound on waiting, not an assertion on speed.
EXIT_WITHIN = 30


def clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {
        "PATH": f"{PYTHON_DIR}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "DATA_DIR": str(tmp / "data"),
        "DEFAULT_EXCHANGE": "paper",
        "WEBHOOK_SECRET": SECRET,
    }
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def run_until_exit(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[int, list[str], str]:
    """(status, non-empty stderr lines, stdout) of a command expected to stop by itself."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=EXIT_WITHIN)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{cmd} did not stop within {EXIT_WITHIN}s (it should refuse to start):\n{err[-2000:]}")
    return proc.returncode, [line for line in err.splitlines() if line.strip()], out


def serve_cmd(port: int | None = None) -> list[str]:
    return [sys.executable, "-m", "core", "serve", "--bind", f"127.0.0.1:{port or free_port()}"]


def assert_one_line(status: int, lines: list[str], *fragments: str) -> None:
    assert status != 0
    # Startup's own INFO progress lines may precede it; the failure is one line, alone.
    lines = [line for line in lines if not re.match(r"^\d{4}-\d\d-\d\d [\d:,]+ (INFO|DEBUG) ", line)]
    assert len(lines) == 1, "\n".join(lines)
    assert lines[0].startswith("error: ") and "Traceback" not in lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


MISTAKES = {
    # plugins.yaml with an unknown option
    "plugins_yaml": (
        {"plugins.yaml": "router:\n  max_body_bytez: 10\n"},
        {},
        ("plugins.yaml", "plugin 'router'", "field 'max_body_bytez'", "no such option"),
    ),
    # a misspelt PLUGINS_FILE is not silently ignored
    "plugins_file_missing": ({}, {"PLUGINS_FILE": "demo.yml"}, ("PLUGINS_FILE", "no file at 'demo.yml'")),
    # no WEBHOOK_SECRET and no token: every alert would be 401
    "no_credential": (
        {},
        {"WEBHOOK_SECRET": ""},
        ("WEBHOOK_SECRET", "python -m core init-env", "manage_tokens.py issue"),
    ),
    # a typo in DEFAULT_EXCHANGE
    "exchange_typo": (
        {},
        {"DEFAULT_EXCHANGE": "binanse"},
        ("DEFAULT_EXCHANGE", "unknown ccxt exchange 'binanse'", "did you mean 'binance'?"),
    ),
    # DEFAULT_EXCHANGE=binance without keys (and no payload credentials to fall back on)
    "exchange_without_keys": (
        {"plugins.yaml": "router:\n  allow_payload_credentials: false\n"},
        {"DEFAULT_EXCHANGE": "binance"},
        ("DEFAULT_EXCHANGE", "no account serves 'binance'", "DEFAULT_API_KEY"),
    ),
    # a plugins.yaml account without keys
    "account_without_keys": (
        {"plugins.yaml": "ccxt:\n  accounts:\n    main: {exchange: bybit, api_key: '${BYBIT_KEY:-}'}\n"},
        {},
        ("plugin 'ccxt'", "field 'accounts.main'", "expected api_key", "public: true"),
    ),
    # Heroku's ephemeral filesystem without shared state
    "ephemeral_state": ({}, {"DYNO": "web.1"}, ("STATE_URL", "DYNO", "ALLOW_EPHEMERAL_STATE")),
    # an invalid environment value
    "environment_value": ({}, {"RATE_LIMIT_KEY": "everyone"}, ("environment: RATE_LIMIT_KEY",)),
}


def prepare(tmp_path: Path, files: dict[str, str], env: dict[str, str]) -> dict[str, str]:
    (tmp_path / "data").mkdir(exist_ok=True)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return clean_env(tmp_path, **env)


# Two run by default, every one in CI (each starts a server process: seconds on a busy machine).
QUICK = {"no_credential", "exchange_without_keys"}


@pytest.mark.parametrize(
    "mistake", [m if m in QUICK else pytest.param(m, marks=pytest.mark.slow) for m in sorted(MISTAKES)]
)
def test_each_mistake_stops_serve_with_one_line(tmp_path, mistake):
    files, env, fragments = MISTAKES[mistake]
    status, lines, _ = run_until_exit(serve_cmd(), prepare(tmp_path, files, env), tmp_path)
    assert_one_line(status, lines, *fragments)


@pytest.mark.parametrize(
    "mistake", [m if m in QUICK else pytest.param(m, marks=pytest.mark.slow) for m in sorted(MISTAKES)]
)
def test_check_config_gives_the_same_verdict(tmp_path, mistake):
    files, env, fragments = MISTAKES[mistake]
    status, lines, _ = run_until_exit(
        [sys.executable, "-m", "core", "check-config"], prepare(tmp_path, files, env), tmp_path
    )
    assert_one_line(status, lines, *fragments)


def test_traceback_only_at_debug(tmp_path):
    env = prepare(tmp_path, {}, {"PLUGINS_FILE": "demo.yml", "LOG_LEVEL": "DEBUG"})
    status, lines, _ = run_until_exit([sys.executable, "-m", "core", "check-config"], env, tmp_path)
    assert status != 0 and lines[0].startswith("error: environment: PLUGINS_FILE")
    assert any("Traceback" in line for line in lines)


def test_a_good_configuration_passes_check_config_and_serves(tmp_path):
    env = prepare(tmp_path, {"plugins.yaml": "router:\n  shutdown_grace: 1\n"}, {})
    status, lines, out = run_until_exit([sys.executable, "-m", "core", "check-config"], env, tmp_path)
    assert status == 0, lines
    assert out.startswith("configuration ok") and "paper (paper)" in out and "credentials: WEBHOOK_SECRET" in out

    port = free_port()
    proc = subprocess.Popen(
        serve_cmd(port),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + EXIT_WITHIN
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)  # polling the real condition (the port answering), bounded
        else:
            pytest.fail("serve did not answer")
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(EXIT_WITHIN) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_token_is_a_credential(tmp_path):
    env = prepare(tmp_path, {}, {"WEBHOOK_SECRET": ""})
    issued = subprocess.run(
        [sys.executable, str(ROOT / "manage_tokens.py"), "issue", "--ttl", "3600"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert issued.returncode == 0, issued.stderr
    status, lines, out = run_until_exit([sys.executable, "-m", "core", "check-config"], env, tmp_path)
    assert status == 0, lines
    assert "credentials: 1 token(s)" in out


def procfile_command(kind: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{kind}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {kind} line in the Procfile")


@pytest.mark.parametrize("mistake", ["plugins_file_missing", "no_credential", "exchange_typo"])
def test_procfile_web_command_stops_with_one_line(tmp_path, mistake):
    files, env, fragments = MISTAKES[mistake]
    env = prepare(tmp_path, files, {**env, "PORT": str(free_port())})
    status, lines, _ = run_until_exit(["sh", "-c", procfile_command("web")], env, tmp_path)
    assert_one_line(status, lines, *fragments)


def test_procfile_release_command_is_check_config(tmp_path):
    assert procfile_command("release") == "python -m core check-config"
    files, env, fragments = MISTAKES["no_credential"]
    status, lines, _ = run_until_exit(
        ["sh", "-c", procfile_command("release")], prepare(tmp_path, files, env), tmp_path
    )
    assert_one_line(status, lines, *fragments)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("mistake", ["plugins_yaml", "exchange_typo"])
def test_make_run_stops_with_one_line(tmp_path, mistake):
    files, env, fragments = MISTAKES[mistake]
    env = prepare(tmp_path, files, env)
    # .env exists (make run would write one), and the installed venv is this interpreter's.
    (tmp_path / ".env").write_text(f"PORT={free_port()}\n")
    venv = Path(sys.prefix)
    cmd = [
        "make",
        "--no-print-directory",
        "-f",
        str(ROOT / "Makefile"),
        "-o",
        f"{venv}/.installed",
        "run",
        f"VENV={venv}",
        f"PY={sys.executable}",
    ]
    status, lines, out = run_until_exit(cmd, env, tmp_path)
    assert status != 0
    ours = [line for line in lines if not line.startswith("make")]  # make adds "make: *** [run] Error 3"
    assert_one_line(status, ours, *fragments)
    assert "-m core serve" in out, shlex.join(cmd)


def test_serve_uses_hypercorn_toml_and_reports_a_bad_one(tmp_path):
    env = prepare(tmp_path, {}, {})
    port = free_port()
    (tmp_path / "hypercorn.toml").write_text(f'bind = ["127.0.0.1:{port}"]\ngraceful_timeout = 2\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "core", "serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + EXIT_WITHIN
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)  # polling the real condition (the port answering), bounded
        else:
            pytest.fail("serve did not listen where hypercorn.toml says")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(EXIT_WITHIN)
    (tmp_path / "hypercorn.toml").write_text("bind = [\n")
    status, lines, _ = run_until_exit([sys.executable, "-m", "core", "serve"], env, tmp_path)
    assert_one_line(status, lines, "hypercorn.toml", "not a valid hypercorn configuration")
