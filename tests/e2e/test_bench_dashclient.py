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
    process = ServerProcess(
        base_env(tmp_path_factory.mktemp("benchdash"), DASHBOARD_PASSWORD=PASSWORD),
        tmp_path_factory.mktemp("benchdash-cwd"),
    ).start()
    yield process
    process.stop()


@pytest.mark.slow  # a real server
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


@pytest.mark.slow  # a real server
def test_the_bench_browser_stops_on_a_wrong_password(server):
    with httpx.Client(timeout=10) as client, pytest.raises(SystemExit, match="login answered 401"):
        open_feed(client, server.url, "not-the-password")


def test_the_dashboard_summary_pairs_rounds_and_reports_the_spread():
    from bench.__main__ import dashboard_summary
    from bench.report import dashboard_rows

    def run(target, rnd, concurrency, rps, p50, p99):
        return {
            "target": target,
            "round": rnd,
            "concurrency": concurrency,
            "route": "rest",
            "rps": rps,
            "p50_ms": p50,
            "p90_ms": p50,
            "p99_ms": p99,
        }

    runs = [
        run("server", 0, 1, 100, 10, 20),
        run("dashboard", 0, 1, 100, 11, 20),
        run("server", 1, 1, 100, 20, 40),
        run("dashboard", 1, 1, 100, 18, 40),
        run("server", 0, 32, 400, 80, 100),
        run("dashboard", 0, 32, 200, 80, 300),
        run("server", 1, 32, 600, 80, 100),
        run("dashboard", 1, 32, 600, 80, 100),
        run("limit", 0, 1, 999, 1, 1),
        run("server", 0, 1, 1, 1, 1) | {"route": "websocket"},
    ]
    polls = [{"polls": 3, "during_load": 2, "statuses": {"200": 3}, "latencies_ms": [5, 6, 7]}] * 4
    summary = dashboard_summary(runs, polls, 2.0)
    assert summary["polls"] == 12 and summary["polls_during_load"] == 8 and summary["poll_statuses"] == {"200": 12}
    c1, c32 = summary["c1"], summary["c32"]
    assert c1["round_ratios"]["p50_ms"] == [1.1, 0.9]  # each round's dashboard over that round's server
    assert c1["ratio"]["p50_ms"] == pytest.approx(14.5 / 15)  # medians' ratio
    assert c1["server_spread"]["p50_ms"] == [10 / 15, 20 / 15]
    assert c32["round_ratios"]["rps"] == [0.5, 1.0] and c32["ratio"]["rps"] == pytest.approx(400 / 500)
    text = "\n".join(dashboard_rows(summary))
    assert "8 of them while its 4 measured runs loaded it" in text
    assert "0.50–1.00×" in text and "0.80×" in text
