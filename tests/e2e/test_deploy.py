"""The VPS recipe in deploy/ (issue 15): the systemd unit, Caddy and nginx configs and the
environment file agree with each other and with the router's settings."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys

import pytest

from core.config import RouterOptions, Settings
from core.web.proxy import TrustedProxies
from tests.support import ROOT

DEPLOY = ROOT / "deploy"


def unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(DEPLOY / "tradingview-router.service")
    return parser


def bind_of_unit() -> str:
    return re.search(r"--bind (\S+)", unit()["Service"]["ExecStart"]).group(1)


def test_unit_runs_serve_as_its_own_user_and_restarts_on_failure_only():
    service = unit()["Service"]
    assert service["ExecStart"].split()[1:4] == ["-m", "core", "serve"]
    assert service["User"] not in ("root", "") and service["Group"] == service["User"]
    assert service["Restart"] == "on-failure"
    # A configuration mistake exits 2 (checked before starting) or 3 (a worker could not start).
    assert set(service["RestartPreventExitStatus"].split()) == {"2", "3"}
    assert service["EnvironmentFile"].startswith("/etc/")
    assert service["StateDirectoryMode"] == "0700" and service["UMask"] == "0077"
    assert service["Environment"] == f"DATA_DIR=/var/lib/{service['StateDirectory']}"
    assert bind_of_unit().startswith("127.0.0.1:")  # only the proxy reaches it


def test_unit_stops_gracefully_within_the_drain_time():
    service = unit()["Service"]
    graceful = float(re.search(r"--graceful-timeout (\d+)", service["ExecStart"]).group(1))
    drain = RouterOptions().shutdown_grace
    assert service["KillSignal"] == "SIGTERM"
    assert float(service["TimeoutStopSec"]) > graceful + drain


def test_environment_file_matches_the_proxies():
    values = dict(
        line.split("=", 1)
        for line in (DEPLOY / "env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    settings = Settings.from_env(env_file=None, environ={**values, "WEBHOOK_SECRET": "x" * 64})
    assert settings.require_https and settings.rate_limit_key == "principal"
    # The proxies connect from loopback, where the unit listens.
    host = bind_of_unit().rsplit(":", 1)[0]
    assert TrustedProxies(settings.trusted_proxies).peer_is_trusted(host)


def test_caddy_proxies_to_the_unit_with_automatic_https():
    text = (DEPLOY / "Caddyfile").read_text()
    site = re.search(r"^([a-z0-9.-]+\.[a-z]+) \{", text, re.M)
    assert site, "a site address with a domain name: Caddy then serves 443 with its own certificate"
    assert re.search(r"^\s*reverse_proxy (\S+)$", text, re.M).group(1) == bind_of_unit()
    assert "trusted_proxies" not in text  # Caddy must not pass on a client's own X-Forwarded-For
    size = re.search(r"max_size (\d+)KB", text).group(1)
    assert int(size) * 1024 <= RouterOptions().max_body_bytes


def test_nginx_terminates_tls_and_sets_the_forwarded_headers():
    text = (DEPLOY / "nginx.conf").read_text()
    assert re.search(r"listen 443 ssl;", text) and "ssl_certificate " in text
    assert re.search(r"proxy_pass http://(\S+);", text).group(1) == bind_of_unit()
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in text  # replaced, not appended
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in text
    size = re.search(r"client_max_body_size (\d+)k;", text).group(1)
    assert int(size) * 1024 <= RouterOptions().max_body_bytes
    assert text.count("{") == text.count("}")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify(tmp_path):
    # Point ExecStart at this interpreter (the unit's venv does not exist here).
    text = (DEPLOY / "tradingview-router.service").read_text()
    text = text.replace("/opt/tradingview-router/.venv/bin/python", sys.executable)
    path = tmp_path / "tradingview-router.service"
    path.write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=60
    )
    # Only problems with this file count (the host may lack units it refers to, like redis).
    problems = [line for line in done.stderr.splitlines() if path.name in line and "redis-server.service" not in line]
    assert not problems, done.stderr
