"""``tokens issue|revoke|list`` through the command line, and ``manage_tokens.py``, its
classic name, with its documented arguments (``issue --ttl 3600``, ``revoke <token>``)."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli import main
from core.store.tokens import hash_token
from tests.abuse_support import issue_token
from tests.support import ROOT


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory of its own, DATA_DIR in it, nothing from the developer's shell."""
    monkeypatch.chdir(tmp_path)
    for name in ("STATE_URL", "REDIS_URL", "REDIS_TLS_URL", "PLUGINS_FILE", "TOKEN_TTL", "LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def tokens_table(data: Path) -> list[tuple[str, float, float, str | None, str | None]]:
    with sqlite3.connect(data / "tokens.sqlite3") as conn:
        return conn.execute("SELECT label, created_at, expires_at, accounts, scopes FROM tokens").fetchall()


def test_issue_list_revoke(here, capsys):
    assert main(["tokens", "issue", "--ttl", "3600", "--label", "tv-btc", "--account", "main", "--control"]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert len(token) == 43 and "shown once" in err and token not in err
    [(label, created, expires, accounts, scopes)] = tokens_table(here)
    assert (label, expires - created, accounts, scopes) == ("tv-btc", 3600, "main", "control")

    assert main(["tokens", "list"]) == 0
    listing = capsys.readouterr().out
    assert "tv-btc" in listing and "main" in listing and "control" in listing and token not in listing

    assert main(["tokens", "revoke", token]) == 0
    assert capsys.readouterr().out.strip() == "revoked"
    assert tokens_table(here) == []
    assert main(["tokens", "revoke", token]) == 1
    assert "no such token" in capsys.readouterr().err


def test_issue_takes_token_ttl_by_default(here, monkeypatch, capsys):
    monkeypatch.setenv("TOKEN_TTL", "120")
    assert main(["tokens", "issue"]) == 0
    [(_, created, expires, accounts, scopes)] = tokens_table(here)
    assert (expires - created, accounts, scopes) == (120, None, None)


def test_revoke_takes_its_argument_literally_from_stdin_or_by_id(here, monkeypatch, capsys):
    dashed = issue_token(here, label="dash", token="-" + "a" * 42)
    after_dashes = issue_token(here, label="after")
    piped = issue_token(here, label="piped")
    by_id = issue_token(here, label="by-id")
    assert main(["tokens", "revoke", dashed]) == 0
    assert main(["tokens", "revoke", "--", after_dashes]) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO(piped + "\n"))
    assert main(["tokens", "revoke", "-"]) == 0
    assert main(["tokens", "revoke", "--id", hash_token(by_id)[:12]]) == 0
    assert capsys.readouterr().out.split() == ["revoked"] * 4
    assert tokens_table(here) == []


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
def test_bad_arguments_are_refused_before_anything_is_stored(here, args):
    with pytest.raises(SystemExit) as exit_:
        main(["tokens", *args])
    assert exit_.value.code not in (0, None)
    assert not (here / "tokens.sqlite3").exists()


def manage(cwd: Path, *args: str, python: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return subprocess.run(
        [*(python or [sys.executable]), str(ROOT / "manage_tokens.py"), *args],
        cwd=cwd,
        env=env | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_manage_tokens_py_keeps_its_documented_arguments(tmp_path):
    (tmp_path / ".env").write_text(f"DATA_DIR={tmp_path / 'data'}\n")
    issued = manage(tmp_path, "issue", "--ttl", "3600")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    [(_, created, expires, _, _)] = tokens_table(tmp_path / "data")
    assert expires - created == 3600
    listed = manage(tmp_path, "list")
    assert listed.returncode == 0 and listed.stdout.startswith("ID ")
    revoked = manage(tmp_path, "revoke", token)
    assert (revoked.returncode, revoked.stdout.strip()) == (0, "revoked")
    assert tokens_table(tmp_path / "data") == []


def test_manage_tokens_py_without_the_dependencies_says_what_to_do(tmp_path):
    """Outside the virtualenv (``python -S``: no site-packages) one line, no traceback."""
    done = manage(tmp_path, "issue", python=[sys.executable, "-S"])
    assert done.returncode == 1 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("error: the Python package ") and "is not installed" in line
    assert "make run" in line and ".venv" in line and "pip install -e ." in line
    assert not (tmp_path / "data").exists()
