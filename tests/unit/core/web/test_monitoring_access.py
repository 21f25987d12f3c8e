"""What GET / and GET /metrics tell whom (issue 11, finding 10): without credentials, only
whether the router is alive; the full health and the metrics need METRICS_TOKEN, a signed
request line, or (for GET /) a token; ``metrics.public: true`` opens the metrics."""

from __future__ import annotations

import httpx
import pytest

from tests.abuse_support import issue_token_async
from tests.support import METRICS_TOKEN, MONITOR, SECRET, signed_headers

UNAUTHORIZED = {"error": {"code": "unauthorized", "message": "authentication failed"}}


async def test_get_root_tells_an_anonymous_caller_only_liveness(app_client, data_dir):
    token = await issue_token_async(data_dir, label="tv")
    async with app_client() as (client, _app):
        anonymous = await client.get("/")
        assert anonymous.status_code == 200 and await anonymous.get_json() == {"status": "ok"}
        for headers in (MONITOR, {"Authorization": f"Bearer {token}"}, signed_headers(b"GET /")):
            full = await (await client.get("/", headers=headers)).get_json()
            assert full["accounts"]["paper"]["ready"] is True and full["version"] and full["plugins"], headers
        for headers in (
            {"Authorization": "Bearer not-a-token-at-all"},
            {"Authorization": f"Basic {METRICS_TOKEN}"},
            signed_headers(b"GET /", secret="not-" + SECRET),
            signed_headers(b"GET /metrics"),
        ):
            refused = await client.get("/", headers=headers)
            assert (refused.status_code, await refused.get_json()) == (401, UNAUTHORIZED), headers


async def test_metrics_need_a_credential_by_default(app_client, data_dir):
    token = await issue_token_async(data_dir, label="tv")
    async with app_client() as (client, _app):
        for headers in (
            {},
            {"Authorization": "Bearer nope-nope-nope"},
            {"Authorization": f"Bearer {token}"},
            signed_headers(b"GET /"),
            signed_headers(b"GET /metrics", secret="not-" + SECRET),
        ):
            response = await client.get("/metrics", headers=headers)
            assert (response.status_code, await response.get_json()) == (401, UNAUTHORIZED), headers
        assert (await client.get("/metrics", headers=MONITOR)).status_code == 200
        assert (await client.get("/metrics", headers=signed_headers(b"GET /metrics"))).status_code == 200


async def test_metrics_public_opens_them_for_a_scraper(app_client, write_plugins_yaml):
    write_plugins_yaml("metrics:\n  public: true\n")
    async with app_client() as (client, _app):
        response = await client.get("/metrics")
        assert response.status_code == 200 and b"ccxt_webhook_alerts_total" in await response.get_data()


@pytest.mark.slow
def test_the_real_server_answers_anonymous_callers_with_liveness_only(server_factory):
    server = server_factory()
    assert httpx.get(server.url + "/").json() == {"status": "ok"}
    assert httpx.get(server.url + "/metrics").status_code == 401
    assert "accounts" in httpx.get(server.url + "/", headers=MONITOR).json()
