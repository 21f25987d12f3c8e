"""The one command line: ``ccxt-trading-webhook`` (``core.cli``), also ``python -m core``.

--help lists every subcommand; the console script is declared; configuration mistakes are
one line; ``init`` writes .env once; ``emulator`` and ``bench`` pass their options through."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import core.cli.tools
from core.cli import build_parser, core_commands, main
from tests.support import ROOT

SUBCOMMANDS = {
    "serve",
    "init",
    "init-env",
    "tokens",
    "journal",
    "simulate",
    "emulator",
    "bench",
    "check-config",
    "doctor",
    "risk",
}
ACTIONS = {
    "tokens": {"issue", "revoke", "list"},
    "journal": {"list", "show", "stats", "upgrade"},
    "risk": {"halt", "resume", "status"},
}


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return env | {"PYTHONPATH": str(ROOT), "DATA_DIR": str(tmp_path / "data")} | extra


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_the_parser_has_every_subcommand_and_action():
    commands = subcommands(build_parser({}))
    assert set(commands) == SUBCOMMANDS == core_commands()
    assert commands["init"] is commands["init-env"]
    for group, actions in ACTIONS.items():
        assert set(subcommands(commands[group])) == actions


def test_help_lists_every_subcommand_with_the_plugins(tmp_path):
    done = run(["--help"], tmp_path, clean_env(tmp_path))
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0] for line in done.stdout.splitlines() if line.startswith("    ")}
    assert SUBCOMMANDS - {"init-env"} | {"paper-markets"} <= listed, done.stdout
    assert "init (init-env)" in done.stdout
    commands = subcommands(build_parser({}))
    for group, actions in ACTIONS.items():
        shown = commands[group].format_help()
        assert all(f"    {action} " in shown for action in actions), shown


def test_build_parser_adds_the_loaded_plugins_commands(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("PLUGINS_FILE", "STATE_URL", "REDIS_URL", "REDIS_TLS_URL"):
        monkeypatch.delenv(name, raising=False)
    assert "paper-markets" in subcommands(build_parser())
    seen: list[argparse.Namespace] = []
    extra = {"hello": ("say hello", lambda p: p.add_argument("--name"), lambda a: seen.append(a) or 7)}
    with pytest.raises(SystemExit):  # not a command without its plugin
        main(["hello", "--name", "x"])
    args = build_parser(extra).parse_args(["hello", "--name", "x"])
    assert args.handler(args) == 7 and seen[0].name == "x"


def test_the_console_script_is_core_cli_main():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["ccxt-trading-webhook"].partition(":")
    assert getattr(importlib.import_module(module), function) is main


def test_python_m_core_is_the_same_command_line(tmp_path):
    done = run(["--version"], tmp_path, clean_env(tmp_path))
    assert done.returncode == 0 and done.stdout.startswith("python -m core ")


@pytest.mark.parametrize(
    "args", [["tokens", "list"], ["tokens", "revoke", "x"], ["journal", "stats"], ["check-config"], ["risk", "status"]]
)
def test_a_configuration_mistake_is_one_line_and_status_2(args, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOKEN_TTL", "a day")
    monkeypatch.delenv("LOG_LEVEL", raising=False)  # DEBUG would add the traceback
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "error: environment: TOKEN_TTL: Input should be a valid integer, unable to parse string as an integer"
    ]
    assert captured.out == "" and not (tmp_path / "data").exists()


def test_a_plugin_command_with_a_broken_configuration_is_one_line(tmp_path):
    (tmp_path / "plugins.yaml").write_text("router: [not, a, mapping]\n")
    done = run(["paper-markets", "list"], tmp_path, clean_env(tmp_path, PLUGINS_FILE="plugins.yaml"))
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: plugins.yaml: plugin 'router'")


def test_init_writes_env_once_and_init_env_is_the_same(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env.example").write_text("# comment\nWEBHOOK_SECRET=\nDEFAULT_EXCHANGE=paper\n")
    assert main(["init"]) == 0
    written = (tmp_path / ".env").read_text()
    values = dict(line.split("=", 1) for line in written.splitlines() if "=" in line and not line.startswith("#"))
    assert len(values["WEBHOOK_SECRET"]) == 64 and values["DEFAULT_EXCHANGE"] == "paper"
    assert values["DASHBOARD_PASSWORD"] in capsys.readouterr().out  # shown once
    assert main(["init-env"]) == 0
    assert (tmp_path / ".env").read_text() == written
    assert "left as it is" in capsys.readouterr().out
    assert main(["init", "--env-file", "other.env"]) == 0 and (tmp_path / "other.env").is_file()


def test_emulator_passes_its_options_through(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["emulator", "--help"])
    assert exit_.value.code == 0
    assert "--markets" in capsys.readouterr().out


def test_bench_outside_a_source_checkout_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(core.cli.tools, "CHECKOUT", tmp_path)
    assert main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "source checkout" in err


def test_bench_in_the_checkout_passes_its_options_through(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--help"])
    assert exit_.value.code == 0 and "--quick" in capsys.readouterr().out


def test_the_parser_holds_no_value_of_the_environment(monkeypatch):
    """The CLI reference is generated from build_parser(): no local secret may end up in it."""
    monkeypatch.setenv("WEBHOOK_SECRET", "local-secret-0123456789")
    monkeypatch.setenv("PORT", "4321")

    def defaults(parser: argparse.ArgumentParser) -> list[object]:
        found = [a.default for a in parser._actions]
        for child in subcommands(parser).values():
            found += defaults(child)
        return found

    shown = " ".join(map(str, defaults(build_parser({})))) + build_parser({}).format_help()
    assert "local-secret" not in shown and "4321" not in shown


async def test_journal_upgrade_rebuilds_an_old_orders_table_once_the_server_is_stopped(tmp_path, monkeypatch, capsys):
    from core.store.sqlite.journal import SqliteJournal
    from tests.unit.core.store.sqlite.test_sqlite_stores import (
        journal_with_orders,
        make_orders_table_autoincrement,
        orders_table_sql,
    )

    monkeypatch.chdir(tmp_path)
    for name in ("PLUGINS_FILE", "STATE_URL", "REDIS_URL", "REDIS_TLS_URL", "LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    path = tmp_path / "data" / "journal.sqlite3"
    await journal_with_orders(path)
    make_orders_table_autoincrement(path)
    journal = SqliteJournal(path)
    await journal.heartbeat("worker-1")  # a server running on this journal
    journal.close()

    def upgrade(*args: str) -> int:
        return main(["journal", "upgrade", *args])

    assert await asyncio.to_thread(upgrade) == 1
    assert "1 worker(s) heartbeat" in capsys.readouterr().err
    assert "AUTOINCREMENT" in orders_table_sql(path).upper(), "refused: nothing changed"
    assert await asyncio.to_thread(upgrade, "--force") == 0
    assert "rebuilt without AUTOINCREMENT" in capsys.readouterr().out
    assert "AUTOINCREMENT" not in orders_table_sql(path).upper()
    assert await asyncio.to_thread(upgrade, "--force") == 0
    assert "up to date" in capsys.readouterr().out
