"""DATA_DIR and what is in it are the owner's alone (issue 11, finding 11): the directory is
created 0700 and every file 0600 (SQLite's -wal and -shm files and the writer lock too), whatever the umask;
``python -m core init-env`` creates .env 0600 from its first byte."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from core.cli.init import init_env
from tests.abuse_support import TEXT_PLAIN, issue_token_async, token_body
from tests.support import alert_body, signed_headers


@pytest.fixture
def usual_umask():
    previous = os.umask(0o022)  # the common default: files 0644, directories 0755
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_data_dir_and_its_files_are_private(app_client, make_settings, tmp_path, usual_umask):
    fresh = tmp_path / "fresh-data"
    await issue_token_async(fresh, label="perm")  # as manage_tokens.py does, before the server ever ran
    async with app_client(DATA_DIR=str(fresh)) as (client, _app):
        body = alert_body(id="perm-1")
        assert (await client.post("/webhook", data=body, headers=signed_headers(body))).status_code == 200
        refused = await client.post("/webhook", data=token_body("not-a-token", id="perm-2"), headers=TEXT_PLAIN)
        assert refused.status_code == 401
        modes = modes_under(fresh)  # while the server runs: its -wal and -shm files exist
    for expected in (
        "journal.sqlite3",
        "journal.sqlite3-wal",
        "journal.sqlite3-shm",
        "journal.sqlite3-writer",  # the writer lock (core.store.sqlite.database)
        "tokens.sqlite3",  # (one worker: rate limits in memory, no ratelimit.sqlite3)
        "paper.sqlite3",
        "metrics",
    ):
        assert expected in modes, sorted(modes)
    assert {name: oct(m) for name, (is_dir, m) in modes.items() if is_dir and m != 0o700} == {}
    # prometheus_client creates its sample files with the umask; they sit in metrics/, 0700.
    assert {
        name: oct(m)
        for name, (is_dir, m) in modes.items()
        if not is_dir and m & 0o077 and not name.startswith("metrics/")
    } == {}


def modes_under(root: Path) -> dict[str, tuple[bool, int]]:
    found = {root.name: (True, mode(root))}
    for path in root.rglob("*"):
        try:
            info = path.stat()
        except FileNotFoundError:
            continue  # a -wal file checkpointed away meanwhile
        found[str(path.relative_to(root))] = (stat.S_ISDIR(info.st_mode), stat.S_IMODE(info.st_mode))
    return found


def test_init_env_creates_dotenv_0600_even_if_interrupted_before_any_chmod(tmp_path, monkeypatch, usual_umask):
    # A process killed between writing .env and tightening its mode must not leave the
    # secret readable: no chmod may be needed to make the file private.
    monkeypatch.setattr(Path, "chmod", lambda self, mode: None)
    monkeypatch.setattr(os, "chmod", lambda *args, **kwargs: None)
    example = tmp_path / ".env.example"
    example.write_text("WEBHOOK_SECRET=\nDEFAULT_EXCHANGE=paper\n")
    env = tmp_path / ".env"
    assert init_env(env, example) is not None  # the new dashboard password
    assert mode(env) == 0o600
    text = env.read_text()
    assert text.startswith("WEBHOOK_SECRET=") and len(text.splitlines()[0]) == len("WEBHOOK_SECRET=") + 64
    assert init_env(env, example) is None and env.read_text() == text  # an existing .env is left alone
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env", ".env.example"]  # no temporary file left
