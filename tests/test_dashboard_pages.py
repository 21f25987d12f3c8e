"""The dashboard's pages in-process: the risk seam, accounts that cannot report or are not
ready, tokens issued and revoked through the page, the login's redirect target."""

from __future__ import annotations

import json
import re

import pytest

from core.plugins import hookimpl
from tests.conftest import STATE_BACKENDS
from tests.scripted_executor import ScriptedExecutor
from tests.test_dashboard_security import PASSWORD, csrf_from, log_in


class FakeRiskControls:
    """Stands in for issue 16's controls: records what the page asked for."""

    def __init__(self):
        self.halted = False
        self.calls: list[str] = []

    async def status(self):
        return {"halted": self.halted, "reason": "dashboard" if self.halted else None,
                "limits": [{"name": "max order notional", "limit": "1000 USDT", "used": "250 USDT"}]}

    async def halt(self, reason):
        self.calls.append(f"halt:{reason.split(' ')[0]}")
        self.halted = True
        return {}

    async def flatten(self, reason):
        self.calls.append("flatten")
        self.halted = True
        return {}

    async def resume(self):
        self.calls.append("resume")
        self.halted = False
        return {}


class RiskPlugin:
    def __init__(self, controls):
        self.controls = controls

    @hookimpl
    def router_startup(self, router):
        router.risk = self.controls


async def test_without_risk_controls_the_page_says_so_and_the_actions_are_404(app_client):
    async with app_client(DASHBOARD_PASSWORD=PASSWORD) as (client, _):
        await log_in(client)
        html = await (await client.get("/dashboard/risk")).get_data(as_text=True)
        assert "Risk controls not configured" in html and 'id="risk-halt"' not in html
        response = await client.post("/dashboard/risk/halt", form={"csrf_token": csrf_from(
            await (await client.get("/dashboard/tokens")).get_data(as_text=True))})
        assert response.status_code == 404


async def test_the_risk_page_drives_whatever_risk_controls_provide(app_client):
    controls = FakeRiskControls()
    async with app_client(DASHBOARD_PASSWORD=PASSWORD, extra_plugins=[("risk", RiskPlugin(controls))]) as (client, _):
        await log_in(client)
        html = await (await client.get("/dashboard/risk")).get_data(as_text=True)
        assert "max order notional" in html and "250 USDT" in html and 'id="risk-state">running' in html
        assert 'data-confirm="Halt' in html  # the browser asks before it posts
        for action, state in (("halt", "HALTED"), ("resume", "running"), ("flatten", "HALTED")):
            response = await client.post(f"/dashboard/risk/{action}", form={"csrf_token": csrf_from(html)})
            assert response.status_code == 303, action
            html = await (await client.get(response.headers["Location"])).get_data(as_text=True)
            assert f'id="risk-state">{state}' in html, action
        assert controls.calls == ["halt:dashboard", "resume", "flatten"]
        assert (await client.post("/dashboard/risk/explode", form={"csrf_token": csrf_from(html)})).status_code == 404


class Unreportable(ScriptedExecutor):
    pass  # the base Executor's account_snapshot: None, "cannot tell"


class Broken(ScriptedExecutor):
    async def start(self):
        raise ConnectionError("exchange unreachable")


class Plugins:
    def __init__(self, *executors):
        self.executors = executors

    @hookimpl
    def register_executors(self, register):
        for executor in self.executors:
            register(executor.account, executor)


def account_section(html: str, name: str) -> str:
    start = html.index(f'id="account-{name}"')
    end = html.find("<section", start)
    return html[start:end if end != -1 else len(html)]


async def test_accounts_show_what_each_executor_can_tell(app_client):
    plugin = Plugins(Unreportable("blind"), Broken("down"))
    async with app_client(DASHBOARD_PASSWORD=PASSWORD, extra_plugins=[("extra", plugin)]) as (client, _):
        await log_in(client)
        for path in ("/dashboard/accounts", "/dashboard/accounts/panel"):
            html = await (await client.get(path)).get_data(as_text=True)
            paper, blind, down = (account_section(html, name) for name in ("paper", "blind", "down"))
            assert "badge ready\">ready<" in paper and ">paper<" in paper and "USDT" in paper  # the ledger's balances
            assert "cannot report balances, positions or open orders" in blind
            assert "not ready" in down and "exchange unreachable" in down


@pytest.mark.parametrize("state_url", STATE_BACKENDS, indirect=True)
async def test_tokens_issued_in_the_page_authenticate_and_revoked_ones_do_not(app_client):
    async with app_client(DASHBOARD_PASSWORD=PASSWORD) as (client, _):
        await log_in(client)
        html = await (await client.get("/dashboard/tokens")).get_data(as_text=True)
        issued = await client.post("/dashboard/tokens", form={"csrf_token": csrf_from(html), "label": "bot-1", "ttl": "600"})
        assert issued.status_code == 200
        page = await issued.get_data(as_text=True)
        token = re.search(r'id="new-token" value="([^"]+)"', page).group(1)
        body = json.dumps({"token": token, "symbol": "BTCUSDT", "side": "buy", "amount": "0.001", "id": "t-1"}).encode()
        assert (await client.post("/webhook", data=body, headers={"Content-Type": "text/plain"})).status_code == 200
        listing = await (await client.get("/dashboard/tokens")).get_data(as_text=True)
        token_id = re.search(r'/dashboard/tokens/([0-9a-f]+)/revoke', listing).group(1)
        assert "bot-1" in listing and token not in listing
        revoked = await client.post(f"/dashboard/tokens/{token_id}/revoke", form={"csrf_token": csrf_from(listing)})
        assert revoked.status_code == 303 and revoked.headers["Location"] == "/dashboard/tokens"
        body = body.replace(b"t-1", b"t-2")
        assert (await client.post("/webhook", data=body, headers={"Content-Type": "text/plain"})).status_code == 401
        assert "bot-1" not in await (await client.get("/dashboard/tokens")).get_data(as_text=True)
        # Bad input is explained, not a stack trace.
        bad = await client.post("/dashboard/tokens", form={"csrf_token": csrf_from(listing), "label": "-bad", "ttl": "600"})
        assert bad.status_code == 422 and "label must be" in await bad.get_data(as_text=True)
        unknown = await client.post("/dashboard/tokens", form={"csrf_token": csrf_from(listing), "accounts": "nope", "ttl": "60"})
        assert unknown.status_code == 422 and "Unknown account(s): nope" in await unknown.get_data(as_text=True)


async def test_login_goes_back_to_the_page_asked_for_but_never_off_site(app_client):
    async with app_client(DASHBOARD_PASSWORD=PASSWORD) as (client, _):
        asked = await client.get("/dashboard/latency?window=6h")
        assert asked.headers["Location"] == "/dashboard/login?next=%2Fdashboard%2Flatency%3Fwindow%3D6h"
        for target, expected in (("/dashboard/latency?window=6h", "/dashboard/latency?window=6h"),
                                 ("https://evil.example/", "/dashboard/alerts"), ("//evil.example/dashboard", "/dashboard/alerts"),
                                 ("/dashboard//evil.example", "/dashboard/alerts")):
            page = await client.get("/dashboard/login")
            response = await client.post("/dashboard/login", form={"password": PASSWORD, "next": target,
                                                                   "csrf_token": csrf_from(await page.get_data(as_text=True))})
            assert response.headers["Location"] == expected, target




async def test_an_alert_page_counts_its_duplicates(app_client):
    from tests.support import alert_body, signed_headers

    async with app_client(DASHBOARD_PASSWORD=PASSWORD) as (client, _):
        body = alert_body(id="resent-1")
        for _ in range(3):  # TradingView resending the same alert
            assert (await client.post("/webhook", data=body, headers=signed_headers(body))).status_code == 200
        await log_in(client)
        html = await (await client.get("/dashboard/alert/resent-1")).get_data(as_text=True)
        assert re.search(r"<dt>Duplicates</dt><dd>2 \(resends answered", html)
        assert re.search(r"<dt>Order attempts</dt><dd>1</dd>", html)
        feed = await (await client.get("/dashboard/alerts/feed", headers={"HX-Request": "true"})).get_data(as_text=True)
        assert "×3" in feed
        missing = await client.get("/dashboard/alert/no-such-alert")
        assert missing.status_code == 404 and "No alert" in await missing.get_data(as_text=True)
