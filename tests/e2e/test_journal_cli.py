"""``python -m core journal list|show|stats`` (``ccxt-trading-webhook journal``) on both state backends."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import STATE_BACKENDS
from tests.support import ROOT, alert_body, signed_headers

pytestmark = pytest.mark.parametrize("state_url", STATE_BACKENDS, indirect=True)


async def test_journal_cli_lists_shows_and_counts(app_client, data_dir, state_url, state_prefix):
    async with app_client() as (client, app):
        for alert_id, amount in (("cli-ok", "0.001"), ("cli-small", "0.0000001")):
            body = alert_body(id=alert_id, amount=amount)
            await client.post("/webhook", data=body, headers=signed_headers(body))
    env = {
        "DATA_DIR": str(data_dir),
        "STATE_URL": state_url,
        "STATE_PREFIX": state_prefix,
        "PLUGINS_FILE": str(data_dir / "plugins.yaml"),
        "PATH": "/usr/bin:/bin",
    }

    def run(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "core", "journal", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    listing = run("list")
    assert "cli-ok" in listing and "filled" in listing and "amount_below_minimum" in listing
    assert listing.splitlines()[0].split()[:2] == ["ALERT", "STATE"]
    rows = [json.loads(line) for line in run("list", "--json", "--state", "filled").splitlines()]
    assert [(r["alert_id"], r["state"]) for r in rows] == [("cli-ok", "filled")] and "body_hash" not in rows[0]
    assert len(run("list", "--limit", "1").splitlines()) == 2  # the header and one alert
    shown = json.loads(run("show", "cli-ok"))
    assert shown["state"] == "filled" and shown["orders"][0]["state"] == "filled" and "body_hash" not in shown
    stats = json.loads(run("stats"))
    assert stats["alerts"]["filled"] == 1 and stats["alerts"]["rejected"] == 1
