"""Tokens with the ``control`` scope (issue 16's kill switch, issue 11's token scopes): a
token issued with it halts and resumes its own accounts over ``POST /control/*`` (the token
in the JSON body, as TradingView or a chat-bot relay sends it); a token without it gets 403,
and a control token scoped to one account can neither touch another nor halt every account.
Issued by the store, by ``manage_tokens.py issue --control`` and by the dashboard."""

from __future__ import annotations

import json
import re

import pytest

from core.store.sqlite.tokens import SqliteTokenStore
from tests.abuse_support import TEXT_PLAIN, client_from, token_body
from tests.conftest import STATE_BACKENDS
from tests.unit.core.dashboard.test_dashboard_security import PASSWORD, csrf_from, log_in
from tests.unit.core.store.test_tokens import manage

TWO_ACCOUNTS = "paper:\n  accounts: [paper, bob]\n"


async def issue(data_dir, label: str, accounts: tuple[str, ...] = (), scopes: tuple[str, ...] = ()) -> str:
    store = SqliteTokenStore(data_dir / "tokens.sqlite3")
    try:
        return (await store.issue(ttl=3600, label=label, accounts=accounts, scopes=scopes))[0]
    finally:
        await store.close()


def control_body(token: str, **fields) -> bytes:
    return json.dumps({"token": token, **fields}).encode()


async def control(client, action: str, token: str, **fields) -> tuple[int, dict]:
    response = await client.post(f"/control/{action}", data=control_body(token, **fields), headers=TEXT_PLAIN)
    return response.status_code, await response.get_json()


async def test_a_control_token_halts_and_resumes_its_own_account_only(app_client, write_plugins_yaml, data_dir):
    write_plugins_yaml(TWO_ACCOUNTS)
    ops_bob = await issue(data_dir, "ops-bob", accounts=("bob",), scopes=("control",))
    trader_bob = await issue(data_dir, "trader-bob", accounts=("bob",))
    async with app_client() as (client, app):
        switch = app.extensions["router"].kill_switch

        status, body = await control(client, "halt", trader_bob, account="bob")  # no control scope
        assert status == 403 and "control scope" in body["error"]["message"], body
        assert await switch.halts() == {}

        status, body = await control(client, "halt", ops_bob, account="paper")  # not its account
        assert status == 403 and body["error"]["code"] == "account_not_allowed", body
        status, body = await control(client, "halt", ops_bob)  # every account: not for a scoped token
        assert status == 403 and body["error"]["code"] == "account_not_allowed", body
        status, body = await control(client, "resume", ops_bob, account="paper")
        assert status == 403, body
        assert await switch.halts() == {}

        status, body = await control(client, "halt", ops_bob, account="bob", reason="news")
        assert status == 200 and body["status"] == "halted" and body["account"] == "bob", body
        assert list(await switch.halts()) == ["bob"]
        assert (await switch.halts())["bob"]["by"] == "http:token:ops-bob"
        refused = await client.post(
            "/webhook", data=token_body(trader_bob, id="while-halted", account="bob"), headers=TEXT_PLAIN
        )
        assert refused.status_code == 422 and (await refused.get_json())["error"]["code"] == "risk_limit"
        status, body = await control(client, "status", ops_bob, account="bob")
        assert status == 200 and "bob" in body["halts"], body
        status, body = await control(client, "resume", ops_bob, account="bob")
        assert status == 200 and body["accounts"] == ["bob"], body
        assert await switch.halts() == {}
        accepted = await client.post(
            "/webhook", data=token_body(trader_bob, id="resumed", account="bob"), headers=TEXT_PLAIN
        )
        assert accepted.status_code == 200, await accepted.get_json()


async def test_only_a_control_token_for_every_account_halts_every_account(app_client, write_plugins_yaml, data_dir):
    write_plugins_yaml(TWO_ACCOUNTS)
    ops_all = await issue(data_dir, "ops-all", accounts=("*",), scopes=("control",))
    trader_all = await issue(data_dir, "trader-all", accounts=("*",))
    ops_default = await issue(data_dir, "ops-default", scopes=("control",))  # no --account: the default account
    async with app_client() as (client, app):
        switch = app.extensions["router"].kill_switch
        assert (await control(client, "halt", trader_all))[0] == 403
        assert (await control(client, "halt", ops_default))[0] == 403
        assert (await control(client, "halt", ops_default, account="bob"))[0] == 403
        assert await switch.halts() == {}
        status, body = await control(client, "halt", ops_default, account="paper")
        assert status == 200, body
        status, body = await control(client, "halt", ops_all, reason="flash crash")
        assert status == 200 and body["account"] == "*", body
        assert (await switch.halts())["*"]["by"] == "http:token:ops-all"
        status, body = await control(client, "resume", ops_all)
        assert status == 200, body
        assert await switch.halts() == {}


@pytest.mark.parametrize("state_url", STATE_BACKENDS, indirect=True)
async def test_the_dashboard_issues_a_control_token_when_asked_and_lists_its_scopes(app_client):
    async with app_client(DASHBOARD_PASSWORD=PASSWORD) as (client, app):
        await log_in(client)
        html = await (await client.get("/dashboard/tokens")).get_data(as_text=True)
        assert 'name="control"' in html and "kill switch" in html

        async def issued(**form: str) -> str:
            response = await client.post(
                "/dashboard/tokens", form={"csrf_token": csrf_from(html), "ttl": "600", **form}
            )
            assert response.status_code == 200
            return re.search(r'id="new-token" value="([^"]+)"', await response.get_data(as_text=True)).group(1)

        ops = await issued(label="ops-relay", control="1")
        plain = await issued(label="alerts-only")
        listing = await (await client.get("/dashboard/tokens")).get_data(as_text=True)
        rows = {
            label: row
            for row in re.findall(r"<tr.*?</tr>", listing, re.DOTALL)
            for label in ("ops-relay", "alerts-only")
            if label in row
        }
        assert re.search(r'class="scopes">control<', rows["ops-relay"])
        assert not re.search(r'class="scopes">control<', rows["alerts-only"])

        assert (await control(client, "halt", plain, account="paper"))[0] == 403
        status, body = await control(client, "halt", ops, account="paper")
        assert status == 200, body
        assert (await app.extensions["router"].kill_switch.halts())["paper"]["by"] == "http:token:ops-relay"


@pytest.mark.slow
def test_manage_tokens_issues_a_control_token_that_the_running_server_honours(server_factory, data_dir):
    (data_dir / "plugins.yaml").write_text(TWO_ACCOUNTS)
    env = {"PLUGINS_FILE": str(data_dir / "plugins.yaml")}
    server = server_factory(**env)
    issued = manage(data_dir, "issue", "--label", "tg-relay", "--account", "bob", "--control", **env)
    assert issued.returncode == 0, issued.stderr
    assert "scopes control" in issued.stderr
    ops = issued.stdout.strip()
    plain = manage(data_dir, "issue", "--ttl", "3600", "--label", "tv-bob", "--account", "bob", **env).stdout.strip()
    listing = manage(data_dir, "list", **env)
    assert listing.returncode == 0 and ops not in listing.stdout
    lines = listing.stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "LABEL", "ACCOUNTS", "SCOPES"]
    assert next(line for line in lines if "tg-relay" in line).split()[2:4] == ["bob", "control"]
    assert next(line for line in lines if "tv-bob" in line).split()[2:4] == ["bob", "-"]
    with client_from(base_url=server.url) as http:
        assert (
            http.post("/control/halt", content=control_body(plain, account="bob"), headers=TEXT_PLAIN).status_code
            == 403
        )
        assert (
            http.post("/control/halt", content=control_body(ops, account="paper"), headers=TEXT_PLAIN).status_code
            == 403
        )
        halted = http.post(
            "/control/halt", content=control_body(ops, account="bob", reason="from telegram"), headers=TEXT_PLAIN
        )
        assert halted.status_code == 200 and halted.json()["account"] == "bob", halted.text
        refused = http.post("/webhook", content=token_body(plain, id="halted-1", account="bob"), headers=TEXT_PLAIN)
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "risk_limit"
        resumed = http.post("/control/resume", content=control_body(ops, account="bob"), headers=TEXT_PLAIN)
        assert resumed.status_code == 200 and resumed.json()["accounts"] == ["bob"]
    revoked = manage(data_dir, "revoke", ops, **env)
    assert revoked.returncode == 0
    with client_from(base_url=server.url) as http:
        assert (
            http.post("/control/halt", content=control_body(ops, account="bob"), headers=TEXT_PLAIN).status_code == 401
        )
