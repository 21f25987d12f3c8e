"""Who may do what (issue 11, findings 7, 8, 13): tokens and named HMAC keys trade only on
their accounts, each principal's alert ids are its own, fan-out legs cannot be taken by a
plain id, and credentials in the payload are off unless the owner turns them on."""

from __future__ import annotations

import pytest

from core.pipeline.ids import fan_out_id, journal_key
from tests.abuse_support import TEXT_PLAIN, client_from, issue_token_async, ledger_count, token_body
from tests.conftest import STATE_BACKENDS
from tests.support import alert_body, signed_headers
from tests.unit.core.store.test_tokens import manage

TWO_ACCOUNTS = "paper:\n  accounts: [paper, bob]\n"
NOT_FOUND_CODE = "not_found"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_token_trades_only_on_the_accounts_it_was_issued_for(app_client, write_plugins_yaml, data_dir):
    write_plugins_yaml(TWO_ACCOUNTS)
    default_only = await issue_token_async(data_dir, label="plain")
    bob_only = await issue_token_async(data_dir, label="bob-bot", accounts=("bob",))
    everything = await issue_token_async(data_dir, label="all", accounts=("*",))
    async with app_client() as (client, _app):

        async def post(token: str, **fields) -> tuple[int, dict]:
            response = await client.post("/webhook", data=token_body(token, **fields), headers=TEXT_PLAIN)
            return response.status_code, await response.get_json()

        assert (await post(default_only, id="d-1"))[0] == 200  # the default account
        status, body = await post(default_only, id="d-2", account="bob")
        assert status == 403 and body["error"]["code"] == "account_not_allowed" and "'bob'" in body["error"]["message"]
        status, body = await post(default_only, id="d-3", exchange="bob")  # naming it by exchange changes nothing
        assert status == 403 and body["error"]["code"] == "account_not_allowed"
        assert (await post(bob_only, id="b-1", account="bob"))[0] == 200
        assert (await post(bob_only, id="b-2"))[0] == 403  # the default account is not among its accounts
        assert (await post(everything, id="e-1", account="bob"))[0] == 200
        # A fan-out: every leg is checked; the leg it may trade on still trades.
        status, body = await post(bob_only, id="f-1", account=["paper", "bob"])
        assert status == 200, body
        assert body["accounts"]["paper"]["error"]["code"] == "account_not_allowed"
        assert body["accounts"]["bob"]["status"] == "filled"
    assert ledger_count(data_dir) == 4  # d-1, b-1, e-1 and the bob leg of f-1; nothing refused was booked


async def test_alert_ids_are_per_principal_and_get_alerts_shows_only_ones_own(app_client, data_dir):
    attacker = await issue_token_async(data_dir, label="attacker")
    victim = await issue_token_async(data_dir, label="victim")
    bystander = await issue_token_async(data_dir, label="bystander")
    async with app_client() as (client, app):
        first = await client.post("/webhook", data=token_body(attacker, id="a-2", side="sell"), headers=TEXT_PLAIN)
        assert first.status_code == 200
        response = await client.post("/webhook", data=token_body(victim, id="a-2", side="buy"), headers=TEXT_PLAIN)
        answer = await response.get_json()
        # The victim's alert executes as its own, not as a duplicate of the attacker's.
        assert response.status_code == 200 and "duplicate" not in answer, answer
        assert answer["alert_id"] == "a-2" and answer["order"]["side"] == "buy"
        owner_body = alert_body(id="a-2")
        owner = await client.post("/webhook", data=owner_body, headers=signed_headers(owner_body))
        assert owner.status_code == 200 and "duplicate" not in await owner.get_json()

        mine = await (await client.get("/alerts/a-2", headers=bearer(victim))).get_json()
        assert mine["alert_id"] == "a-2" and mine["principal"] == "token:victim" and mine["payload"]["side"] == "buy"
        theirs = await (await client.get("/alerts/a-2", headers=bearer(attacker))).get_json()
        assert theirs["principal"] == "token:attacker" and theirs["payload"]["side"] == "sell"
        # Someone else's id answers exactly like an id that does not exist.
        for alert_id in ("a-2", "no-such-id"):
            missing = await client.get(f"/alerts/{alert_id}", headers=bearer(bystander))
            assert missing.status_code == 404
            assert (await missing.get_json())["error"] == {
                "code": NOT_FOUND_CODE,
                "message": f"no alert '{alert_id}' in the journal",
            }
        # An id without one of its own: the victim's auto id is not readable by the attacker either.
        auto = await (
            await client.post("/webhook", data=token_body(victim, amount="0.002"), headers=TEXT_PLAIN)
        ).get_json()
        assert (await client.get(f"/alerts/{auto['alert_id']}", headers=bearer(attacker))).status_code == 404
        assert (await client.get(f"/alerts/{auto['alert_id']}", headers=bearer(victim))).status_code == 200
        # The owner reads every alert, by its journal key.
        journal = app.extensions["router"].journal
        assert (await journal.get(journal_key("token:victim", "a-2")))["principal"] == "token:victim"
        assert (await journal.get("a-2"))["principal"] == "hmac"


@pytest.mark.parametrize("state_url", STATE_BACKENDS, indirect=True)
async def test_a_plain_id_cannot_take_the_place_of_a_fan_out_leg(app_client, write_plugins_yaml, data_dir):
    write_plugins_yaml("paper:\n  accounts: [paper, sub]\n")
    async with app_client() as (client, _app):
        forged = alert_body(id="x@sub", account="sub")
        assert (await client.post("/webhook", data=forged, headers=signed_headers(forged))).status_code == 200
        reserved = alert_body(id=fan_out_id("x", "sub"), account="sub")
        response = await client.post("/webhook", data=reserved, headers=signed_headers(reserved))
        assert response.status_code == 422 and "id" in (await response.get_json())["error"]["message"]
        body = alert_body(id="x", account=["paper", "sub"])
        answer = await (await client.post("/webhook", data=body, headers=signed_headers(body))).get_json()
    assert answer["accounts"]["sub"]["status"] == "filled" and "duplicate" not in answer["accounts"]["sub"]
    assert ledger_count(data_dir) == 3


@pytest.mark.parametrize("state_url", STATE_BACKENDS, indirect=True)
async def test_fan_out_legs_of_long_ids_that_differ_at_the_end_do_not_collide(app_client, write_plugins_yaml, data_dir):
    write_plugins_yaml("paper:\n  accounts: [paper, sub]\n")
    async with app_client() as (client, _app):
        answers = []
        for last in "AB":
            body = alert_body(id="L" * 127 + last, account=["paper", "sub"])
            answers.append(await (await client.post("/webhook", data=body, headers=signed_headers(body))).get_json())
    for answer in answers:
        assert all(leg["status"] == "filled" and "duplicate" not in leg for leg in answer["accounts"].values()), answer
    assert ledger_count(data_dir) == 4


@pytest.mark.parametrize("state_url", STATE_BACKENDS, indirect=True)
async def test_named_hmac_keys_are_scoped_and_namespaced(app_client, write_plugins_yaml, data_dir):
    key = "ci-bot-secret-0123456789"
    write_plugins_yaml(TWO_ACCOUNTS + f"hmac:\n  keys:\n    ci:\n      secret: {key}\n      accounts: [bob]\n")
    async with app_client() as (client, app):
        on_bob = alert_body(id="k-1", account="bob")
        response = await client.post("/webhook", data=on_bob, headers=signed_headers(on_bob, secret=key))
        assert response.status_code == 200, await response.get_json()
        on_default = alert_body(id="k-2")
        response = await client.post("/webhook", data=on_default, headers=signed_headers(on_default, secret=key))
        assert response.status_code == 403 and (await response.get_json())["error"]["code"] == "account_not_allowed"
        # The owner's WEBHOOK_SECRET trades every account; its "k-1" is not the key's.
        owner = alert_body(id="k-1", account="bob", side="sell")
        answer = await (await client.post("/webhook", data=owner, headers=signed_headers(owner))).get_json()
        assert answer["status"] == "filled" and "duplicate" not in answer
        assert (await app.extensions["router"].journal.get(journal_key("hmac:ci", "k-1")))["principal"] == "hmac:ci"
        line = b"GET /alerts/k-1"
        read = await (await client.get("/alerts/k-1", headers=signed_headers(line, secret=key))).get_json()
        assert read["principal"] == "hmac:ci" and read["payload"]["side"] == "buy"


async def test_a_named_key_may_not_reuse_the_owners_secret(make_settings, write_plugins_yaml):
    from core.web.app import create_app
    from tests.support import SECRET

    write_plugins_yaml(f"hmac:\n  keys:\n    twin:\n      secret: {SECRET}\n")
    app = create_app(make_settings())
    with pytest.raises(Exception) as info:
        async with app.test_app():
            pass
    assert "plugin 'hmac': field 'keys': a key's secret is WEBHOOK_SECRET" in str(info.value)


PAYLOAD_KEYS = {"exchange": "binance", "apiKey": "k" * 16, "secret": "s" * 16}


async def test_payload_credentials_are_off_by_default(app_client, data_dir):
    async with app_client() as (client, _app):
        body = alert_body(id="pc-1", **PAYLOAD_KEYS)
        response = await client.post("/webhook", data=body, headers=signed_headers(body))
        error = (await response.get_json())["error"]
        assert response.status_code == 422 and error["code"] == "payload_credentials_disabled"
    assert ledger_count(data_dir) == 0


async def test_payload_credentials_when_on_warn_and_need_a_principal_allowed_every_account(
    app_client, write_plugins_yaml, data_dir, all_log_text
):
    write_plugins_yaml("router:\n  allow_payload_credentials: true\n")
    scoped = await issue_token_async(data_dir, label="scoped")
    async with app_client() as (client, _app):
        assert "allow_payload_credentials is on" in all_log_text()
        health = await (await client.get("/", headers=bearer(scoped))).get_json()
        assert any("allow_payload_credentials" in w for w in health["warnings"])
        response = await client.post("/webhook", data=token_body(scoped, id="pc-2", **PAYLOAD_KEYS), headers=TEXT_PLAIN)
        assert response.status_code == 403 and (await response.get_json())["error"]["code"] == "account_not_allowed"


@pytest.mark.slow
def test_scopes_end_to_end_through_the_real_server_and_manage_tokens(server_factory, data_dir):
    (data_dir / "plugins.yaml").write_text(TWO_ACCOUNTS)
    server = server_factory(PLUGINS_FILE=str(data_dir / "plugins.yaml"))
    issued = manage(
        data_dir, "issue", "--label", "bob-bot", "--account", "bob", PLUGINS_FILE=str(data_dir / "plugins.yaml")
    )
    assert issued.returncode == 0, issued.stderr
    assert "accounts bob" in issued.stderr
    token = issued.stdout.strip()
    listing = manage(data_dir, "list", PLUGINS_FILE=str(data_dir / "plugins.yaml"))
    assert any("bob-bot" in line and " bob " in line for line in listing.stdout.splitlines())
    other = manage(data_dir, "issue", "--label", "other", PLUGINS_FILE=str(data_dir / "plugins.yaml")).stdout.strip()
    with client_from(base_url=server.url) as http:
        refused = http.post("/webhook", content=token_body(token, id="e2e-1"), headers=TEXT_PLAIN)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "account_not_allowed"
        accepted = http.post("/webhook", content=token_body(token, id="e2e-1", account="bob"), headers=TEXT_PLAIN)
        assert accepted.status_code == 200 and accepted.json()["alert_id"] == "e2e-1"
        # The other token's "e2e-1" is its own alert, and it cannot read the first one's.
        own = http.post("/webhook", content=token_body(other, id="e2e-1"), headers=TEXT_PLAIN)
        assert own.status_code == 200 and "duplicate" not in own.json()
        assert http.get("/alerts/e2e-1", headers=bearer(token)).json()["account"] == "bob"
        assert http.get("/alerts/e2e-1", headers=bearer(other)).json()["account"] == "paper"
        assert http.get("/alerts/e2e-1", headers={"Authorization": "Bearer " + "x" * 43}).status_code == 401
    assert ledger_count(data_dir) == 2


class Vetoing:
    """An auth plugin called after the built-ins (trylast) that refuses requests carrying
    X-Test-Veto and abstains otherwise."""

    from core.hooks.manager import hookimpl

    @hookimpl(trylast=True)
    def authenticate(self, request):
        from core.pipeline.models import AuthResult

        return AuthResult.reject("vetoed", status=403) if request.header("x-test-veto") else None


async def test_any_refusal_wins_over_an_acceptance_before_it(app_client):
    async with app_client(extra_plugins=[("veto", Vetoing())]) as (client, _app):
        body = alert_body(id="veto-1")
        refused = await client.post("/webhook", data=body, headers={**signed_headers(body), "X-Test-Veto": "1"})
        assert refused.status_code == 403, await refused.get_data(as_text=True)
        body = alert_body(id="veto-2")
        accepted = await client.post("/webhook", data=body, headers=signed_headers(body))
        assert accepted.status_code == 200, await accepted.get_data(as_text=True)
