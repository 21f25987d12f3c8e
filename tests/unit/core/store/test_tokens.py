"""Token mode: the token format, the plugin, and manage_tokens.py against the DATA_DIR of a
running server. The stores themselves: test_contract_tokens.py (both backends) and
sqlite/test_sqlite_stores.py."""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.hooks.manager import hookimpl
from core.pipeline.ids import journal_key
from core.store.sqlite.tokens import SqliteTokenStore
from core.store.tokens import hash_token, new_token
from tests.abuse_support import (
    TEXT_PLAIN,
    UNAUTHORIZED,
    client_from,
    issue_token,
    issue_token_async,
    ledger_count,
    token_body,
)
from tests.support import ROOT, alert_body, base_env, signed_headers

# ---------------------------------------------------------------- the token format


def test_tokens_are_url_safe_with_at_least_128_random_bits():
    tokens = {new_token() for _ in range(2000)}
    assert len(tokens) == 2000
    for token in tokens:
        assert re.fullmatch(r"[A-Za-z0-9_-]+", token) and not token.startswith("-")
        assert len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) * 8 >= 128


# ---------------------------------------------------------------- the plugin, in process


class SeesPayload:
    """A transform that records what later stages see of the payload."""

    def __init__(self) -> None:
        self.seen: list[dict] = []

    @hookimpl
    def transform_payload(self, payload):
        self.seen.append(dict(payload))


async def test_token_mode_accepts_and_strips_the_token(app_client, data_dir):
    token = await issue_token_async(data_dir, label="tv")
    spy = SeesPayload()
    async with app_client(extra_plugins=[("spy", spy)]) as (client, app):
        response = await client.post("/webhook", data=token_body(token, id="tok-1"), headers=TEXT_PLAIN)
        assert response.status_code == 200, await response.get_json()
        row = await app.extensions["router"].journal.get(journal_key("token:tv", "tok-1"))
    assert spy.seen and all("token" not in seen for seen in spy.seen)
    assert row["principal"] == "token:tv"
    assert token not in json.dumps(row, default=str)
    assert ledger_count(data_dir) == 1


async def test_signature_present_means_hmac_decides(app_client, data_dir):
    token = await issue_token_async(data_dir, label="tv")
    async with app_client() as (client, app):
        body = token_body(token, id="both-bad")
        response = await client.post("/webhook", data=body, headers=signed_headers(body, secret="wrong"))
        assert (response.status_code, await response.get_json()) == (401, UNAUTHORIZED)
        body = token_body("not-a-token", id="both-good")
        response = await client.post("/webhook", data=body, headers=signed_headers(body))
        assert response.status_code == 200  # a valid signature; the (bogus) token is ignored and stripped


async def test_token_elsewhere_than_the_body_is_not_looked_at(app_client, data_dir):
    token = await issue_token_async(data_dir, label="tv")
    body = alert_body(id="elsewhere")
    async with app_client() as (client, app):
        for path, headers in (
            (f"/webhook?token={token}", TEXT_PLAIN),
            ("/webhook", TEXT_PLAIN | {"Authorization": f"Bearer {token}"}),
            ("/webhook", TEXT_PLAIN | {"X-Token": token}),
        ):
            response = await client.post(path, data=body, headers=headers)
            assert (response.status_code, await response.get_json()) == (401, UNAUTHORIZED)
    assert ledger_count(data_dir) == 0


async def test_revocation_applies_to_the_running_app_at_once(app_client, data_dir):
    token = await issue_token_async(data_dir, label="tv")
    async with app_client() as (client, app):
        assert (await client.post("/webhook", data=token_body(token, id="r-1"), headers=TEXT_PLAIN)).status_code == 200
        store = SqliteTokenStore(data_dir / "tokens.sqlite3")
        assert await store.revoke(token)
        await store.close()
        response = await client.post("/webhook", data=token_body(token, id="r-2"), headers=TEXT_PLAIN)
        assert (response.status_code, await response.get_json()) == (401, UNAUTHORIZED)


# ---------------------------------------------------------------- manage_tokens.py against a running server


def manage(data_dir: Path, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess:
    environment = base_env(data_dir, **env)
    return subprocess.run(
        [sys.executable, str(ROOT / "manage_tokens.py"), *args],
        cwd=data_dir.parent,
        env=environment,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_manage_tokens_issue_list_revoke_against_a_running_server(server_factory, data_dir):
    server = server_factory()
    issued = manage(data_dir, "issue", "--label", "tv-main", "--ttl", "3600")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    default_ttl = manage(data_dir, "issue", TOKEN_TTL="120")
    assert default_ttl.returncode == 0

    with client_from(base_url=server.url) as http:
        response = http.post("/webhook", content=token_body(token, id="cli-1"), headers=TEXT_PLAIN)
        assert response.status_code == 200, response.text

        listing = manage(data_dir, "list")
        assert listing.returncode == 0
        assert token not in listing.stdout + listing.stderr and default_ttl.stdout.strip() not in listing.stdout
        lines = listing.stdout.splitlines()
        assert lines[0].split() == ["ID", "LABEL", "ACCOUNTS", "SCOPES", "CREATED", "EXPIRES", "LAST", "USE"]
        main_line = next(line for line in lines if "tv-main" in line)
        assert "never" not in main_line, "the last use is shown"
        other_line = next(line for line in lines[1:] if "tv-main" not in line)
        created, expires = re.findall(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", other_line)[:2]
        assert (
            time.mktime(time.strptime(expires, "%Y-%m-%dT%H:%M:%SZ"))
            - time.mktime(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ"))
            == 120
        )

        revoked = manage(data_dir, "revoke", token)
        assert revoked.returncode == 0 and revoked.stdout.strip() == "revoked"
        # No restart: the very next request is refused.
        before = ledger_count(data_dir)
        response = http.post("/webhook", content=token_body(token, id="cli-2"), headers=TEXT_PLAIN)
        assert (response.status_code, response.json()) == (401, UNAUTHORIZED)
        assert ledger_count(data_dir) == before
        assert manage(data_dir, "revoke", token).returncode == 1
        assert "tv-main" not in manage(data_dir, "list").stdout
    assert token not in server.log()


@pytest.mark.slow
def test_manage_tokens_revokes_a_token_beginning_with_a_dash_as_printed(server_factory, data_dir):
    server = server_factory()
    dashed = "-" + new_token()[1:]
    issue_token(data_dir, label="dash", token=dashed)
    after_dashes = issue_token(data_dir, label="after-dashes")
    piped = issue_token(data_dir, label="piped")
    by_id = issue_token(data_dir, label="by-id")
    with client_from(base_url=server.url) as http:
        assert http.post("/webhook", content=token_body(dashed, id="dash-1"), headers=TEXT_PLAIN).status_code == 200
        result = manage(data_dir, "revoke", dashed)
        assert result.returncode == 0, result.stderr
        assert http.post("/webhook", content=token_body(dashed, id="dash-2"), headers=TEXT_PLAIN).status_code == 401
        assert manage(data_dir, "revoke", "--", after_dashes).returncode == 0
        assert manage(data_dir, "revoke", "-", stdin=piped + "\n").returncode == 0  # kept out of shell history
        for token in (after_dashes, piped):
            assert (
                http.post("/webhook", content=token_body(token, id="gone-" + token[:6]), headers=TEXT_PLAIN).status_code
                == 401
            )
        token_id = hash_token(by_id)[:12]
        assert manage(data_dir, "revoke", "--id", token_id).returncode == 0
        assert http.post("/webhook", content=token_body(by_id, id="id-1"), headers=TEXT_PLAIN).status_code == 401


@pytest.mark.parametrize(
    "args",
    [
        ["issue", "--ttl", "0"],
        ["issue", "--ttl", "soon"],
        ["issue", "--label", "has space"],
        ["issue", "--account", "not an account"],
        ["revoke"],
        ["revoke", "a", "b"],
        ["revoke", "--id"],
        ["frobnicate"],
        [],
    ],
)
def test_manage_tokens_refuses_bad_arguments(data_dir, monkeypatch, capsys, args):
    import manage_tokens

    monkeypatch.chdir(data_dir)
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    with pytest.raises(SystemExit) as exit_:
        manage_tokens.main(args)
    assert exit_.value.code not in (0, None)
    assert not (data_dir / "tokens.sqlite3").exists() or args[:1] != ["issue"]


def test_manage_tokens_revoking_an_unknown_token_fails(data_dir, monkeypatch, capsys):
    import manage_tokens

    monkeypatch.chdir(data_dir)
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    assert manage_tokens.main(["revoke", "never-issued"]) == 1
    assert "no such token" in capsys.readouterr().err


def test_manage_tokens_reads_data_dir_from_dotenv(tmp_path):
    (tmp_path / ".env").write_text(f"DATA_DIR={tmp_path / 'elsewhere'}\nTOKEN_TTL=300\n")
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")} | {"PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage_tokens.py"), "issue"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(tmp_path / "elsewhere" / "tokens.sqlite3") as conn:
        created, expires = conn.execute("SELECT created_at, expires_at FROM tokens").fetchone()
    assert expires - created == 300
