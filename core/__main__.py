"""Command line: ``python -m core <command>``.

serve [--bind H:P] [--workers N] [--graceful-timeout S] [--config hypercorn.toml]
                         run the server (hypercorn); exits non-zero with one line when
                         the configuration is wrong or the app fails to start
check-config             the same verdict without starting (CI, Heroku's release phase)
doctor [--symbol TICKER ...]
                         preflight before real money: server settings, state backend,
                         and per account keys, permissions, clock skew, markets;
                         exits 1 on a blocker
<plugin command> ...     commands of loaded plugins (a plugin object's ``commands``:
                         {name: (help, configure_parser, run)}), e.g. the paper
                         plugin's ``paper-markets refresh --exchange binance``
init-env                 write .env from .env.example with a random WEBHOOK_SECRET,
                         METRICS_TOKEN and DASHBOARD_PASSWORD (the password printed once;
                         only when .env does not exist)
journal list [--state S] [--limit N]
journal show <alert_id>
journal stats
risk halt [--account NAME] [--flatten] [--reason TEXT]
                         refuse new opening orders on one account (or all); with
                         --flatten also cancel every open order and close every
                         position (a running server does it within seconds)
risk resume [--account NAME]
risk status
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import traceback
from pathlib import Path

from core.config import Settings, read_environment
from core.errors import ConfigError
from core.store.factory import StateBackend


def init_env(path: Path = Path(".env"), example: Path = Path(".env.example")) -> str | None:
    """Create ``.env`` with a fresh WEBHOOK_SECRET, METRICS_TOKEN and DASHBOARD_PASSWORD; leave
    an existing one alone. The dashboard password written, or None when ``.env`` existed.

    The file is 0600 from its first byte: written whole to a temporary file created 0600,
    then linked into place, which fails rather than replace a ``.env`` made meanwhile."""
    if path.exists():
        return None
    lines = (
        example.read_text(encoding="utf-8").splitlines()
        if example.exists()
        else ["WEBHOOK_SECRET=", "DEFAULT_EXCHANGE=paper"]
    )
    fresh = {
        "WEBHOOK_SECRET": secrets.token_hex(32),
        "METRICS_TOKEN": secrets.token_urlsafe(32),
        "DASHBOARD_PASSWORD": secrets.token_urlsafe(18),
    }
    out = [
        f"{line.split('=', 1)[0]}={fresh[line.split('=', 1)[0]]}"
        if line.split("=", 1)[0] in fresh and "=" in line
        else line
        for line in lines
    ]
    out += [
        f"{name}={value}" for name, value in fresh.items() if not any(line.startswith(name + "=") for line in lines)
    ]
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(out) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return None
    finally:
        temporary.unlink(missing_ok=True)
    return fresh["DASHBOARD_PASSWORD"]


async def journal_command(args: argparse.Namespace, settings: Settings) -> int:
    """The journal of this deployment's state backend (SQLite under DATA_DIR, or Redis)."""
    backend = StateBackend.from_settings(settings)
    if not backend.is_redis and not (settings.data_path / "journal.sqlite3").exists():
        print(f"no journal at {settings.data_path / 'journal.sqlite3'} (DATA_DIR={settings.data_dir})", file=sys.stderr)
        return 1
    journal = backend.journal()
    try:
        if args.action == "list":
            for row in await journal.list(limit=args.limit, state=args.state):
                print(
                    f"{row['alert_id']:<48} {row['state']:<10} {row['account'] or '-':<10} {row['symbol']:<16} "
                    f"{row['side']:<6} {row['amount'] or '':<12} {row['error_code'] or ''}"
                )
        elif args.action == "show":
            alert = await journal.get(args.alert_id)
            if alert is None:
                print(f"no alert {args.alert_id}", file=sys.stderr)
                return 1
            alert.pop("body_hash", None)
            print(json.dumps(alert, indent=2, default=str))
        else:
            print(json.dumps(await journal.stats(), indent=2))
    finally:
        await journal.aclose()
        await backend.aclose()
    return 0


async def risk_command(args: argparse.Namespace, settings: Settings) -> int:
    """The kill switch, through the state store every server of this deployment reads."""
    from core.store.risk import ALL, new_flatten_record

    backend = StateBackend.from_settings(settings)
    store = backend.risk_store()
    try:
        if args.action == "halt":
            import time

            account = (args.account or ALL).lower()
            await store.set_halt(
                account,
                {
                    "reason": args.reason or ("flatten" if args.flatten else "halted from the command line"),
                    "by": "cli",
                    "since": time.time(),
                    "until": None,
                },
            )
            print(f"halted {'every account' if account == ALL else account}")
            if args.flatten:
                record = new_flatten_record(args.account, by="cli")
                await store.save_flatten(record)
                print(
                    f"flatten {record['flatten_id']} requested: a running server cancels every open order and closes "
                    f"every position; see `python -m core risk status`"
                )
        elif args.action == "resume":
            cleared = await store.clear_halt(args.account.lower() if args.account else None)
            print(f"resumed {', '.join(cleared)}" if cleared else "nothing was halted")
        else:
            print(
                json.dumps(
                    {"halts": await store.halts(), "flattens": await store.flattens(limit=10)}, indent=2, default=str
                )
            )
    finally:
        await store.aclose()
        await backend.aclose()
    return 0


HYPERCORN_CONFIG = "hypercorn.toml"


def report_config_error(exc: Exception) -> int:
    """One line on stderr; the traceback too at LOG_LEVEL=DEBUG."""
    print(f"error: {exc}", file=sys.stderr)
    if read_environment().get("LOG_LEVEL", "").strip().upper() == "DEBUG":
        traceback.print_exception(exc, file=sys.stderr)
    return 2


def check_config_command() -> int:
    from core.checks.preflight import check_config

    try:
        lines = asyncio.run(check_config(Settings.from_env()))
    except ConfigError as exc:
        return report_config_error(exc)
    print("configuration ok")
    for line in lines:
        print(f"  {line}")
    return 0


def doctor_command(args: argparse.Namespace) -> int:
    from core.checks.doctor import run_doctor

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        return report_config_error(exc)
    findings = asyncio.run(run_doctor(settings, args.symbol))
    for finding in findings:
        print(finding.line())
    blockers = sum(f.level == "blocker" for f in findings)
    warnings = sum(f.level == "warning" for f in findings)
    print(
        f"\n{blockers} blocker(s), {warnings} warning(s)"
        + (": fix the blockers before trading real money" if blockers else "")
    )
    return 1 if blockers else 0


def default_bind(env: dict[str, str]) -> str | None:
    """PORT (Heroku, .env) with HOST (default 0.0.0.0 when only PORT is set);
    None: hypercorn.toml's or 127.0.0.1:8000."""
    port, host = env.get("PORT", "").strip(), env.get("HOST", "").strip()
    if port:
        return f"{host or '0.0.0.0'}:{port}"
    return f"{host}:8000" if host else None


def serve(args: argparse.Namespace) -> int:
    """hypercorn serving ``core.web.app:app``; the exit status says whether the app started.

    The environment and plugins.yaml's syntax are checked first; the rest where it is used —
    in each worker's startup, the same code as ``check-config`` (``Router.configure``) — so
    the master stays light (no plugins, no ccxt). A
    worker that cannot start writes one line to a report file and exits; the master then
    stops, prints that line once and exits 3 (hypercorn's master alone would exit 0).
    """
    from hypercorn.config import Config
    from hypercorn.run import run

    from core.checks.preflight import STARTUP_REPORT_ENV
    from core.config import PluginsFile

    try:  # what can be checked without loading the plugins (and ccxt) into the master
        settings = Settings.from_env()
        PluginsFile.load(settings.plugins_file, settings.environ)
    except ConfigError as exc:
        return report_config_error(exc)
    env = read_environment()
    # --config, else ./hypercorn.toml, else the one next to the code (the server settings
    # shipped with the project: timeouts, limits, access log).
    config_path = Path(args.config or HYPERCORN_CONFIG)
    if not args.config and not config_path.is_file():
        config_path = Path(__file__).resolve().parent.parent / HYPERCORN_CONFIG
    if args.config and not config_path.is_file():
        return report_config_error(
            ConfigError(f"--config: no file at '{args.config}' (expected a hypercorn TOML file)")
        )
    try:
        config = Config.from_toml(config_path) if config_path.is_file() else Config()
    except Exception as exc:
        return report_config_error(ConfigError(f"{config_path}: not a valid hypercorn configuration: {exc}"))
    config.application_path = "core.web.app:app"
    bind = args.bind or default_bind(env)
    if bind:
        config.bind = [bind]
    elif not config_path.is_file():
        config.bind = ["127.0.0.1:8000"]
    if args.workers is not None:
        config.workers = args.workers
    if args.graceful_timeout is not None:
        config.graceful_timeout = args.graceful_timeout
    if config.accesslog is None:
        config.accesslog = "-"
    with tempfile.TemporaryDirectory(prefix="router-start-") as tmp:
        report = Path(tmp) / "startup.txt"
        os.environ[STARTUP_REPORT_ENV] = str(report)
        try:
            status = run(config)
        except OSError as exc:  # the address is in use, a privileged port, ...
            return report_config_error(
                ConfigError(f"--bind {', '.join(config.bind)}: cannot listen: {exc.strerror or exc}")
            )
        finally:
            os.environ.pop(STARTUP_REPORT_ENV, None)
        failure = report.read_text(encoding="utf-8").splitlines() if report.exists() else []
    if failure:
        print(failure[0], file=sys.stderr)
        return 3
    return status


CORE_COMMANDS = frozenset({"serve", "check-config", "doctor", "init-env", "journal", "risk"})


def plugin_commands() -> dict[str, tuple]:
    """Subcommands the loaded plugins offer (their ``commands`` attribute)."""
    from core.config import PluginsFile
    from core.hooks.manager import create_plugin_manager

    settings = Settings.from_env()
    plugins = create_plugin_manager(PluginsFile.load(settings.plugins_file, settings.environ))
    found: dict[str, tuple] = {}
    for loaded in plugins.loaded:
        for name, spec in (getattr(loaded.plugin, "commands", None) or {}).items():
            if name not in CORE_COMMANDS:
                found.setdefault(name, spec)
    return found


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: dict[str, tuple] = {}
    if not argv or argv[0] not in CORE_COMMANDS:  # a plugin's command, or --help listing them
        try:
            extra = plugin_commands()
        except ConfigError as exc:
            if argv and not argv[0].startswith("-"):
                return report_config_error(exc)
    parser = argparse.ArgumentParser(prog="python -m core", description="ccxt-trading-webhook tools")
    sub = parser.add_subparsers(dest="command", required=True)
    serving = sub.add_parser("serve", help="run the server; exits non-zero with one line if it cannot start")
    serving.add_argument(
        "--bind", help="HOST:PORT (default: HOST/PORT from the environment, else hypercorn.toml, else 127.0.0.1:8000)"
    )
    serving.add_argument("--workers", type=int)
    serving.add_argument("--graceful-timeout", type=float, dest="graceful_timeout")
    serving.add_argument("--config", help=f"a hypercorn TOML file (default: ./{HYPERCORN_CONFIG} if it exists)")
    sub.add_parser("check-config", help="check the configuration as a start would, without starting")
    doctor = sub.add_parser("doctor", help="preflight checks before real money; exits 1 on a blocker")
    doctor.add_argument(
        "--symbol",
        action="append",
        default=[],
        help="a ticker your alerts use (BINANCE:BTCUSDT, ETHUSDT.P); checked on every account; repeatable",
    )
    sub.add_parser(
        "init-env",
        help="write .env with a random WEBHOOK_SECRET, METRICS_TOKEN and DASHBOARD_PASSWORD if it does not exist",
    )
    journal = sub.add_parser("journal", help="inspect the journal of alerts and orders")
    jsub = journal.add_subparsers(dest="action", required=True)
    listing = jsub.add_parser("list")
    listing.add_argument("--state")
    listing.add_argument("--limit", type=int, default=50)
    show = jsub.add_parser("show")
    show.add_argument("alert_id")
    jsub.add_parser("stats")
    risk = sub.add_parser("risk", help="the kill switch: halt, flatten, resume, status")
    rsub = risk.add_subparsers(dest="action", required=True)
    halt = rsub.add_parser("halt", help="refuse new opening orders (all accounts unless --account)")
    halt.add_argument("--account")
    halt.add_argument("--flatten", action="store_true", help="also cancel every open order and close every position")
    halt.add_argument("--reason", default="")
    resume = rsub.add_parser("resume", help="lift a halt (every halt unless --account)")
    resume.add_argument("--account")
    rsub.add_parser("status")
    for name, (help_text, configure, run) in extra.items():
        configure(sub.add_parser(name, help=help_text))
        sub.choices[name].set_defaults(plugin_run=run)
    args = parser.parse_args(argv)
    if getattr(args, "plugin_run", None) is not None:
        return args.plugin_run(args)

    if args.command == "serve":
        return serve(args)
    if args.command == "check-config":
        return check_config_command()
    if args.command == "doctor":
        return doctor_command(args)
    if args.command == "init-env":
        password = init_env()
        if password is None:
            print(".env exists; left as it is")
        else:
            print("wrote .env with a new WEBHOOK_SECRET and METRICS_TOKEN")
            print(
                f"dashboard: /dashboard on this server, password {password} "
                "(shown once; it is DASHBOARD_PASSWORD in .env)"
            )
        return 0
    command = risk_command if args.command == "risk" else journal_command
    try:
        return asyncio.run(command(args, Settings.from_env()))
    except ConfigError as exc:
        return report_config_error(exc)


def build_parser() -> argparse.ArgumentParser:
    """The parser ``main`` builds, plugin subcommands included, without running anything
    (the docs' command-line reference renders it). Taken at ``main``'s ``parse_args``."""

    class Built(Exception):
        def __init__(self, parser: argparse.ArgumentParser):
            super().__init__(parser.prog)
            self.parser = parser

    def capture(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> argparse.Namespace:
        raise Built(self)

    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = capture  # type: ignore[method-assign,assignment]
    try:
        main(["--help"])
    except Built as built:
        return built.parser
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
    raise RuntimeError("main() built no parser")


if __name__ == "__main__":
    raise SystemExit(main())
