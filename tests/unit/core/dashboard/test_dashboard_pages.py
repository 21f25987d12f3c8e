"""The dashboard's pages in-process: the risk page driving the kill switch, accounts that cannot report or are not
ready, tokens issued and revoked through the page, the login's redirect target."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest

from core.hooks.manager import hookimpl
from core.store.risk import new_flatten_record
from tests.conftest import STATE_BACKENDS
from tests.scripted_executor import ScriptedExecutor
from tests.support import alert_body, signed_headers
from tests.unit.core.dashboard.test_dashboard_security import PASSWORD, csrf_from, log_in


def risk_section(html: str, slug: str) -> str:
    start = html.index(f'id="account-risk-{slug}"') if slug != "all" else html.index('id="risk-all"')
    end = html.find("</section>", start)
    return html[start:end]


def limit_row(section: str, limit: str) -> list[str]:
    """The cells of a limit's row as text (tags dropped)."""
    for row in re.findall(r"<tr>(.*?)</tr>", section, re.DOTALL):
        cells = [" ".join(re.sub(r"<[^>]+>", "", c).split()) for c in re.findall(r"<td>(.*?)</td>", row, re.DOTALL)]
        if cells and cells[0].split(" ")[0] == limit:
            return cells
    raise AssertionError(f"no row for {limit}")


async def risk_post(client, html: str, action: str, **form: str):
    response = await client.post(f"/dashboard/risk/{action}", form={"csrf_token": csrf_from(html), **form})
    assert response.status_code == 303, (action, await response.get_data(as_text=True))
    return await (await client.get(response.headers["Location"])).get_data(as_text=True)


async def test_the_risk_page_halts_and_resumes_through_the_kill_switch(app_client, write_plugins_yaml):
    import yaml

    write_plugins_yaml(
        yaml.safe_dump(
            {
                "paper": {"accounts": ["paper", "strict"]},
                "risk": {
                    "defaults": {"max_order_notional": 1000, "max_orders_per_minute": 5},
                    "accounts": {"strict": {"max_order_notional": 50, "symbols": ["BTC/*"]}},
                },
            }
        )
    )
    async with app_client(DASHBOARD_PASSWORD=PASSWORD) as (client, app):
        kill_switch = app.extensions["router"].kill_switch
        body = alert_body(id="counted", symbol="BTCUSDT", amount="0.001")
        assert (await client.post("/webhook", data=body, headers=signed_headers(body))).status_code == 200
        await log_in(client)
        html = await (await client.get("/dashboard/risk")).get_data(as_text=True)
        paper, strict = risk_section(html, "paper"), risk_section(html, "strict")
        assert 'id="risk-state-paper">running' in paper and 'id="risk-resume-paper"' not in paper
        # The limits in force: defaults, and the account's overrides marked as such.
        assert limit_row(paper, "max_order_notional") == ["max_order_notional default", "1000 (quote currency)", ""]
        assert limit_row(paper, "max_orders_per_minute") == ["max_orders_per_minute default", "5", "1 in the last 60 s"]
        assert limit_row(strict, "max_order_notional") == ["max_order_notional account", "50 (quote currency)", ""]
        assert limit_row(strict, "symbols") == ["symbols account", "BTC/*", ""]
        assert limit_row(strict, "max_orders_per_minute")[2] == "0 in the last 60 s"
        assert 'data-confirm="Halt account paper' in paper  # the browser asks before it posts

        html = await risk_post(client, html, "halt", account="paper", reason="news at 14:30")
        assert (await kill_switch.halts())["paper"] | {"since": 0} == {
            "reason": "news at 14:30",
            "by": "dashboard",
            "since": 0,
            "until": None,
        }
        paper = risk_section(html, "paper")
        assert 'id="risk-state-paper">HALTED' in paper and "news at 14:30" in paper and ">dashboard<" in paper
        assert 'id="risk-state-strict">running' in risk_section(html, "strict")
        assert 'id="risk-resume-paper"' in paper and 'id="risk-done"' in html
        body = alert_body(id="while-halted", symbol="BTCUSDT", amount="0.001")
        refused = await client.post("/webhook", data=body, headers=signed_headers(body))
        assert refused.status_code == 422 and (await refused.get_json())["error"]["code"] == "risk_limit"
        listed = await (await client.get("/dashboard/api/alerts?state=refused")).get_json()
        assert [(a["alert_id"], a["state"]) for a in listed["alerts"]] == [("while-halted", "refused")]

        html = await risk_post(client, html, "halt", reason="")  # every account
        assert (await kill_switch.halts())["*"]["by"] == "dashboard"
        assert 'id="risk-state-all">HALTED' in html and 'id="risk-state-strict">HALTED' in html
        html = await risk_post(client, html, "resume", account="paper")
        assert set(await kill_switch.halts()) == {"*"}  # the account's halt lifted, every account's stands
        assert 'id="risk-state-paper">HALTED' in html  # still, through the all-accounts halt
        html = await risk_post(client, html, "resume")
        assert await kill_switch.halts() == {}
        assert 'id="risk-state-all">running' in html and 'id="risk-state-paper">running' in html

        for bad in ({"account": "nope"},):
            response = await client.post("/dashboard/risk/halt", form={"csrf_token": csrf_from(html), **bad})
            assert response.status_code == 422 and "unknown account" in await response.get_data(as_text=True)
        assert (await client.post("/dashboard/risk/explode", form={"csrf_token": csrf_from(html)})).status_code == 404
        # Without the CSRF token nothing changes.
        assert (await client.post("/dashboard/risk/halt", form={"account": "paper"})).status_code == 403
        assert await kill_switch.halts() == {}


async def test_a_flatten_from_the_page_shows_its_steps(app_client):
    async with app_client(DASHBOARD_PASSWORD=PASSWORD) as (client, app):
        kill_switch = app.extensions["router"].kill_switch
        body = alert_body(id="position", symbol="BTCUSDT.P", amount="0.01")
        assert (await client.post("/webhook", data=body, headers=signed_headers(body))).status_code == 200
        await log_in(client)
        html = await (await client.get("/dashboard/risk")).get_data(as_text=True)
        response = await client.post(
            "/dashboard/risk/flatten", form={"csrf_token": csrf_from(html), "account": "paper"}
        )
        assert response.status_code == 303
        flatten_id = re.search(r"flatten=([0-9a-f]+)", response.headers["Location"]).group(1)
        assert (await kill_switch.halts())["paper"]["by"] == "dashboard"
        for _ in range(200):  # the flatten runs as a task of the app: wait for its record to finish
            record = await kill_switch.flatten_record(flatten_id)
            if record["state"] in ("done", "failed"):
                break
            await asyncio.sleep(0.05)
        assert record["state"] == "done" and record["by"] == "dashboard", record
        html = await (await client.get(response.headers["Location"])).get_data(as_text=True)
        step_id = next(iter(record["steps"]))
        assert f'id="flatten-{flatten_id}"' in html and f'href="/dashboard/alert/{step_id}"' in html
        assert "-close-BTC_USDT_USDT" in step_id and 'id="risk-state-paper">HALTED' in html
        assert "Flatten in progress" not in html

        # A flatten another worker is running (its lease fresh, so this one leaves it be).
        running = new_flatten_record(None, by="cli") | {
            "state": "running",
            "owner": "other-worker",
            "heartbeat_at": time.time() + 3600,
            "steps": {"flatten-x-paper-r1-cancel-ETH_USDT": "canceled"},
        }
        await kill_switch.store.save_flatten(running)
        html = await (await client.get("/dashboard/risk")).get_data(as_text=True)
        card = html[html.index(f'id="flatten-{running["flatten_id"]}"') :]
        card = card[: card.index("</section>")]
        assert "Flatten in progress" in card and "every account" in card and "by cli" in card
        assert 'href="/dashboard/alert/flatten-x-paper-r1-cancel-ETH_USDT"' in card and ">canceled<" in card


class BrokenDescription:
    @hookimpl
    async def describe_risk_limits(self, account):
        raise ConnectionError("risk service unreachable")


async def test_a_plugin_failing_to_describe_its_limits_leaves_the_kill_switch_usable(app_client):
    async with app_client(DASHBOARD_PASSWORD=PASSWORD, extra_plugins=[("broken", BrokenDescription())]) as (client, _):
        await log_in(client)
        html = await (await client.get("/dashboard/risk")).get_data(as_text=True)
        paper = risk_section(html, "paper")
        assert "(could not be described)" in paper and "ConnectionError" in paper
        html = await risk_post(client, html, "halt", account="paper")
        assert 'id="risk-state-paper">HALTED' in html


async def test_without_the_risk_plugin_halts_still_show_and_no_limits_are_configured(app_client, write_plugins_yaml):
    import yaml

    write_plugins_yaml(yaml.safe_dump({"router": {"disabled": ["risk"]}}))
    async with app_client(DASHBOARD_PASSWORD=PASSWORD) as (client, app):
        assert "risk" not in app.extensions["router"].plugins.names()
        await log_in(client)
        html = await (await client.get("/dashboard/risk")).get_data(as_text=True)
        assert 'id="risk-no-limits"' in html and '<table class="limits"' not in html
        html = await risk_post(client, html, "halt", account="paper", reason="manual")
        assert 'id="risk-state-paper">HALTED' in html and "manual" in risk_section(html, "paper")
        body = alert_body(id="halted-no-plugin")
        assert (await client.post("/webhook", data=body, headers=signed_headers(body))).status_code == 422


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
    return html[start : end if end != -1 else len(html)]


async def test_accounts_show_what_each_executor_can_tell(app_client):
    plugin = Plugins(Unreportable("blind"), Broken("down"))
    async with app_client(DASHBOARD_PASSWORD=PASSWORD, extra_plugins=[("extra", plugin)]) as (client, _):
        await log_in(client)
        for path in ("/dashboard/accounts", "/dashboard/accounts/panel"):
            html = await (await client.get(path)).get_data(as_text=True)
            paper, blind, down = (account_section(html, name) for name in ("paper", "blind", "down"))
            assert 'badge ready">ready<' in paper and ">paper<" in paper and "USDT" in paper  # the ledger's balances
            assert "cannot report balances, positions or open orders" in blind
            assert "not ready" in down and "exchange unreachable" in down


@pytest.mark.parametrize("state_url", STATE_BACKENDS, indirect=True)
async def test_tokens_issued_in_the_page_authenticate_and_revoked_ones_do_not(app_client):
    async with app_client(DASHBOARD_PASSWORD=PASSWORD) as (client, _):
        await log_in(client)
        html = await (await client.get("/dashboard/tokens")).get_data(as_text=True)
        issued = await client.post(
            "/dashboard/tokens", form={"csrf_token": csrf_from(html), "label": "bot-1", "ttl": "600"}
        )
        assert issued.status_code == 200
        page = await issued.get_data(as_text=True)
        token = re.search(r'id="new-token" value="([^"]+)"', page).group(1)
        body = json.dumps({"token": token, "symbol": "BTCUSDT", "side": "buy", "amount": "0.001", "id": "t-1"}).encode()
        assert (await client.post("/webhook", data=body, headers={"Content-Type": "text/plain"})).status_code == 200
        listing = await (await client.get("/dashboard/tokens")).get_data(as_text=True)
        token_id = re.search(r"/dashboard/tokens/([0-9a-f]+)/revoke", listing).group(1)
        assert "bot-1" in listing and token not in listing
        revoked = await client.post(f"/dashboard/tokens/{token_id}/revoke", form={"csrf_token": csrf_from(listing)})
        assert revoked.status_code == 303 and revoked.headers["Location"] == "/dashboard/tokens"
        body = body.replace(b"t-1", b"t-2")
        assert (await client.post("/webhook", data=body, headers={"Content-Type": "text/plain"})).status_code == 401
        assert "bot-1" not in await (await client.get("/dashboard/tokens")).get_data(as_text=True)
        # Bad input is explained, not a stack trace.
        bad = await client.post(
            "/dashboard/tokens", form={"csrf_token": csrf_from(listing), "label": "-bad", "ttl": "600"}
        )
        assert bad.status_code == 422 and "label must be" in await bad.get_data(as_text=True)
        unknown = await client.post(
            "/dashboard/tokens", form={"csrf_token": csrf_from(listing), "accounts": "nope", "ttl": "60"}
        )
        assert unknown.status_code == 422 and "Unknown account(s): nope" in await unknown.get_data(as_text=True)


async def test_login_goes_back_to_the_page_asked_for_but_never_off_site(app_client):
    async with app_client(DASHBOARD_PASSWORD=PASSWORD) as (client, _):
        asked = await client.get("/dashboard/latency?window=6h")
        assert asked.headers["Location"] == "/dashboard/login?next=%2Fdashboard%2Flatency%3Fwindow%3D6h"
        for target, expected in (
            ("/dashboard/latency?window=6h", "/dashboard/latency?window=6h"),
            ("https://evil.example/", "/dashboard/alerts"),
            ("//evil.example/dashboard", "/dashboard/alerts"),
            ("/dashboard//evil.example", "/dashboard/alerts"),
        ):
            page = await client.get("/dashboard/login")
            response = await client.post(
                "/dashboard/login",
                form={"password": PASSWORD, "next": target, "csrf_token": csrf_from(await page.get_data(as_text=True))},
            )
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
