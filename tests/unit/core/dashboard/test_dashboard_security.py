"""The dashboard's doors: off without a password, every route behind a session, CSRF on
every POST, the login failure budget, cookie flags, logout, and no secret in any page."""

from __future__ import annotations

import asyncio
import json
import re
from urllib.parse import quote

import pytest

from core.dashboard.session import SessionSigner
from core.pipeline.ids import journal_key
from tests.conftest import STATE_BACKENDS
from tests.support import SECRET, alert_body, signed_headers

PASSWORD = "dashboard-password-for-tests"
PUBLIC = {"dashboard.login_form", "dashboard.login", "dashboard.static"}


def dashboard_routes(app) -> list[tuple[str, str]]:
    """(method, path) of every dashboard route but the public ones, with sample arguments."""
    routes = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("dashboard.") or rule.endpoint in PUBLIC:
            continue
        path = re.sub(
            r"<(?:[a-z]+:)?([a-z_]+)>", lambda m: {"action": "halt"}.get(m.group(1), "abc123def456"), rule.rule
        )
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            routes.append((method, path))
    return routes


def csrf_from(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


async def log_in(client, password: str = PASSWORD):
    page = await client.get("/dashboard/login")
    token = csrf_from(await page.get_data(as_text=True))
    return await client.post("/dashboard/login", form={"password": password, "csrf_token": token, "next": ""})


async def test_the_dashboard_is_off_without_a_password(app_client):
    async with app_client() as (client, _):
        for path in ("/dashboard", "/dashboard/login", "/dashboard/alerts", "/dashboard/static/dashboard.css"):
            assert (await client.get(path)).status_code == 404, path


def test_a_short_password_stops_startup(make_settings):
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="DASHBOARD_PASSWORD: must be empty"):
        make_settings(DASHBOARD_PASSWORD="short")


async def test_every_route_without_a_session_redirects_pages_and_refuses_the_rest(app_client):
    async with app_client(DASHBOARD_PASSWORD=PASSWORD) as (client, app):
        routes = dashboard_routes(app)
        assert len(routes) >= 14, routes  # the test sees every route the blueprint has
        for method, path in routes:
            response = await client.open(path, method=method)
            if method == "GET" and "/api/" not in path:
                assert response.status_code == 302, (method, path)
                assert response.headers["Location"].startswith("/dashboard/login"), path
                # Partial updates (htmx) and event streams get 401, never a login page.
                assert (await client.get(path, headers={"HX-Request": "true"})).status_code == 401, path
                assert (await client.get(path, headers={"Accept": "text/event-stream"})).status_code == 401, path
            else:
                assert response.status_code == 401, (method, path)
                assert (await response.get_json())["error"]["code"] == "unauthorized"


async def test_a_forged_or_expired_cookie_is_no_session(app_client):
    async with app_client(DASHBOARD_PASSWORD=PASSWORD) as (client, _app):
        other = SessionSigner("another-password-123", SECRET, 3600)
        _, forged = other.new_session()
        client.set_cookie("127.0.0.1", "dashboard_session", forged, path="/dashboard")
        assert (await client.get("/dashboard/alerts")).status_code == 302
    signer = SessionSigner(PASSWORD, SECRET, 60)
    session, cookie = signer.new_session(now=1000.0)
    assert signer.read(cookie, now=1059.0) == session
    assert signer.read(cookie, now=1061.0) is None  # expired
    body, _, mac = cookie.rpartition(".")
    assert signer.read(body[:-2] + "xx." + mac, now=1001.0) is None  # tampered


@pytest.mark.parametrize("state_url", STATE_BACKENDS, indirect=True)  # logout is kept in the shared store
async def test_login_sets_a_strict_httponly_cookie_and_logout_ends_the_session(app_client):
    async with app_client(DASHBOARD_PASSWORD=PASSWORD) as (client, _):
        response = await log_in(client)
        assert response.status_code == 303 and response.headers["Location"] == "/dashboard/alerts"
        cookie = next(v for v in response.headers.get_all("Set-Cookie") if v.startswith("dashboard_session="))
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard" in cookie
        assert "Secure" not in cookie  # plain HTTP here; see the HTTPS test
        stolen = cookie.split(";")[0].split("=", 1)[1]
        page = await client.get("/dashboard/alerts")
        assert page.status_code == 200
        html = await page.get_data(as_text=True)
        out = await client.post("/dashboard/logout", form={"csrf_token": csrf_from(html)})
        assert out.status_code == 303 and out.headers["Location"] == "/dashboard/login"
        assert (await client.get("/dashboard/alerts")).status_code == 302
        # The old cookie, replayed after logout, is no session either.
        client.set_cookie("127.0.0.1", "dashboard_session", stolen, path="/dashboard")
        assert (await client.get("/dashboard/alerts")).status_code == 302


async def test_the_session_cookie_is_secure_under_https(app_client):
    async with app_client(DASHBOARD_PASSWORD=PASSWORD) as (client, _):
        page = await client.get("/dashboard/login", scheme="https")
        token = csrf_from(await page.get_data(as_text=True))
        response = await client.post(
            "/dashboard/login", form={"password": PASSWORD, "csrf_token": token}, scheme="https"
        )
        cookie = next(v for v in response.headers.get_all("Set-Cookie") if v.startswith("dashboard_session="))
        assert "Secure" in cookie


async def test_require_https_refuses_the_dashboard_over_plain_http(app_client):
    async with app_client(DASHBOARD_PASSWORD=PASSWORD, REQUIRE_HTTPS="true") as (client, _):
        assert (await client.get("/dashboard/login")).status_code == 403
        assert (await client.get("/dashboard/login", scheme="https")).status_code == 200


async def test_every_post_without_the_csrf_token_is_403(app_client):
    async with app_client(DASHBOARD_PASSWORD=PASSWORD) as (client, app):
        await log_in(client)
        posts = [path for method, path in dashboard_routes(app) if method == "POST"]
        assert "/dashboard/logout" in posts and "/dashboard/tokens" in posts
        for path in posts:
            response = await client.post(path, form={"label": "x", "ttl": "60"})
            assert response.status_code == 403, path
            assert (await response.get_json())["error"]["code"] == "csrf"
            wrong = await client.post(path, form={"csrf_token": "0" * 64}, headers={"X-CSRF-Token": "1" * 64})
            assert wrong.status_code == 403, path
        assert (await client.get("/dashboard/alerts")).status_code == 200  # still logged in: nothing happened
        assert (await client.get("/dashboard/tokens")).status_code == 200


async def test_login_without_its_csrf_token_is_403(app_client):
    async with app_client(DASHBOARD_PASSWORD=PASSWORD) as (client, _):
        await client.get("/dashboard/login")
        assert (await client.post("/dashboard/login", form={"password": PASSWORD})).status_code == 403


@pytest.mark.parametrize("state_url", STATE_BACKENDS, indirect=True)
async def test_wrong_passwords_spend_the_address_failure_budget(app_client):
    async with app_client(DASHBOARD_PASSWORD=PASSWORD, AUTH_FAILURE_LIMIT="3/minute") as (client, _):
        for _ in range(3):
            assert (await log_in(client, "wrong-password")).status_code == 401
        refused = await log_in(client, "wrong-password")
        assert refused.status_code == 429 and "Retry-After" in refused.headers
        # Once spent, even the right password waits: guessing gains nothing.
        assert (await log_in(client)).status_code == 429
        # The same budget as the webhook's: bad webhook auth from this address is refused too.
        body = alert_body()
        assert (await client.post("/webhook", data=body, headers=signed_headers(body, "wrong"))).status_code == 429


@pytest.mark.parametrize("state_url", STATE_BACKENDS, indirect=True)
async def test_concurrent_wrong_passwords_cannot_overspend_the_failure_budget(app_client):
    async with app_client(DASHBOARD_PASSWORD=PASSWORD, AUTH_FAILURE_LIMIT="3/minute") as (client, _):
        answers = await asyncio.gather(*(log_in(client, "wrong-password") for _ in range(20)))
        statuses = [a.status_code for a in answers]
        assert statuses.count(401) == 3 and statuses.count(429) == 17, statuses


async def test_pages_carry_a_csp_without_inline_script(app_client):
    async with app_client(DASHBOARD_PASSWORD=PASSWORD) as (client, _):
        login = await client.get("/dashboard/login")
        await log_in(client)
        for response in [login] + [
            await client.get(f"/dashboard/{p}") for p in ("alerts", "accounts", "latency", "tokens", "risk")
        ]:
            assert response.status_code == 200
            csp = response.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
            assert response.headers["Cache-Control"] == "no-store"
            html = await response.get_data(as_text=True)
            assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
            assert not re.search(r"\son[a-z]+=", html), "inline event handler"
            assert "<style" not in html and 'style="' not in html


async def test_no_page_shows_a_secret(app_client, data_dir, write_plugins_yaml):
    """Webhook secret, dashboard password, exchange keys, payload credentials and issued
    tokens appear in no page; a new token only on the page that issues it."""
    write_plugins_yaml("router:\n  allow_payload_credentials: true\n")  # off by default; none may show when on
    api_key, api_secret = "payload-api-key-9f8e7d", "payload-api-secret-6c5b4a"
    async with app_client(
        DASHBOARD_PASSWORD=PASSWORD, DEFAULT_API_KEY="default-key-1a2b3c", DEFAULT_API_SECRET="default-secret-4d5e6f"
    ) as (client, app):
        router = app.extensions["router"]
        store = router.state.token_store()
        cli_token, _ = await store.issue(ttl=3600, label="cli")
        await store.close()
        # Alerts carrying the secrets: payload credentials (paper ignores them), a token.
        body = alert_body(apiKey=api_key, secret=api_secret, id="with-credentials")
        assert (await client.post("/webhook", data=body, headers=signed_headers(body))).status_code == 200
        token_body = json.dumps(
            {
                "token": cli_token,
                "symbol": "BTCUSDT",
                "side": "buy",
                "amount": "0.001",
                "id": "with-token",
                "strategy": "s1",
            }
        ).encode()
        assert (
            await client.post("/webhook", data=token_body, headers={"Content-Type": "text/plain"})
        ).status_code == 200
        refused = alert_body(symbol="NOPE/USDT", id="refused-one", apiKey=api_key, secret=api_secret)
        assert (await client.post("/webhook", data=refused, headers=signed_headers(refused))).status_code == 422

        await log_in(client)
        tokens_page = await (await client.get("/dashboard/tokens")).get_data(as_text=True)
        issued = await client.post(
            "/dashboard/tokens", form={"csrf_token": csrf_from(tokens_page), "label": "web", "ttl": "3600"}
        )
        issued_html = await issued.get_data(as_text=True)
        new_token = re.search(r'id="new-token" value="([^"]+)"', issued_html).group(1)
        assert f'"token": "{new_token}"' in issued_html.replace("&#34;", '"')  # the TradingView message, filled

        secrets_ = [
            SECRET,
            PASSWORD,
            "default-key-1a2b3c",
            "default-secret-4d5e6f",
            api_key,
            api_secret,
            cli_token,
            new_token,
        ]
        pages = [
            "/dashboard/alerts",
            "/dashboard/alerts/feed",
            "/dashboard/api/alerts",
            "/dashboard/accounts",
            "/dashboard/accounts/panel",
            "/dashboard/latency",
            "/dashboard/api/latency",
            "/dashboard/tokens",
            "/dashboard/risk",
            "/dashboard/login",
        ]
        with_token = quote(journal_key("token:cli", "with-token"))  # a token's ids live in its own namespace
        pages += [f"/dashboard/alert/{i}" for i in ("with-credentials", with_token, "refused-one")]
        for path in pages:
            response = await client.get(path)
            assert response.status_code == 200, path
            text = await response.get_data(as_text=True)
            for value in secrets_:
                assert value not in text, (path, value[:6])
        for value in secrets_[:-1]:
            assert value not in issued_html
        # The alert pages are real: they show what was journaled.
        detail = await (await client.get(f"/dashboard/alert/{with_token}")).get_data(as_text=True)
        assert "token:cli" in detail and "filled" in detail
        refused_page = await (await client.get("/dashboard/alert/refused-one")).get_data(as_text=True)
        assert "unknown_symbol" in refused_page


def test_init_env_writes_a_random_dashboard_password(tmp_path):
    from core.cli.init import init_env
    from core.config import Settings

    example = tmp_path / ".env.example"
    example.write_text("WEBHOOK_SECRET=\nDASHBOARD_PASSWORD=\nDEFAULT_EXCHANGE=paper\n")
    password = init_env(tmp_path / ".env", example)
    assert password and len(password) >= 20
    settings = Settings.from_env(tmp_path / ".env", environ={})
    assert settings.dashboard_password == password and len(settings.webhook_secret) == 64
    assert init_env(tmp_path / ".env", example) is None  # an existing .env is left alone
    assert init_env(tmp_path / "other.env", example) != password
