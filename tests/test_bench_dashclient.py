"""The benchmark's dashboard browser (``bench.dashclient``) does what the page does against
the real server: logs in with the login page's CSRF token and the password, opens the
alerts page, and polls the live feed (the htmx ``hx-get``) with the page's CSRF header,
getting the journal's rows, not a login redirect. A wrong password stops it."""

from __future__ import annotations

import httpx
import pytest

from bench.dashclient import open_feed
from tests.support import ServerProcess, alert_body, base_env, signed_headers

PASSWORD = "bench-dashboard-password-0123"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = ServerProcess(base_env(tmp_path_factory.mktemp("benchdash"), DASHBOARD_PASSWORD=PASSWORD),
                            tmp_path_factory.mktemp("benchdash-cwd")).start()
    yield process
    process.stop()


def test_the_bench_browser_logs_in_and_polls_the_live_feed(server):
    body = alert_body(id="bench-browser-sees-this", symbol="BTCUSDT")
    assert httpx.post(server.url + "/webhook", content=body, headers=signed_headers(body)).status_code == 200
    with httpx.Client(timeout=10) as client:
        feed, headers = open_feed(client, server.url, PASSWORD)
        assert feed.startswith("/dashboard/alerts/feed")
        assert headers["X-CSRF-Token"] and headers["HX-Request"] == "true"
        answer = client.get(server.url + feed, headers=headers)
    assert answer.status_code == 200
    assert "bench-browser-sees-this" in answer.text


def test_the_bench_browser_stops_on_a_wrong_password(server):
    with httpx.Client(timeout=10) as client, pytest.raises(SystemExit, match="login answered 401"):
        open_feed(client, server.url, "not-the-password")
