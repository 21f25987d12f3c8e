"""``serve``, ``check-config`` and ``doctor``: the server, and the verdicts before it runs."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.cli.common import load_settings, report_config_error
from core.errors import ConfigError

HYPERCORN_CONFIG = "hypercorn.toml"


class OneSignalAtATime:
    """Signal handlers that never run inside one another: a signal that arrives while a
    handler runs is handled once that one returns.

    hypercorn's master handles SIGTERM, SIGINT and SIGHUP by setting or clearing a
    multiprocessing Event, whose lock is not reentrant. Python runs a handler between two
    bytecodes of whatever the main thread was doing, so a second SIGTERM that arrived while
    the first handler held that lock ran inside it and waited for the lock for ever: the
    master hung, and so did every worker, which reads the same Event. Two SIGTERMs in a row
    are common: ``make run`` forwards the one its process group got to the master, which
    had it already (seen about once in fifteen stops of ``make run`` on a loaded machine)."""

    def __init__(self) -> None:
        self.running = False
        self.pending: list[tuple[Callable[..., Any], int, Any]] = []

    def wrap(self, handler: Callable[..., Any]) -> Callable[[int, Any], None]:
        def handle(signum: int, frame: Any) -> None:
            if self.running:  # inside another handler: after it
                self.pending.append((handler, signum, frame))
                return
            # A signal before the next line runs its handler whole, then this one goes on.
            self.running = True
            try:
                handler(signum, frame)
                while self.pending:
                    later, later_signum, later_frame = self.pending.pop(0)
                    later(later_signum, later_frame)
            finally:
                self.running = False

        return handle


class _GuardedSignalModule:
    """The ``signal`` module as ``hypercorn.run`` sees it while ``serve`` runs it: the
    same, except that its handlers are installed through ``OneSignalAtATime``."""

    def __init__(self, guard: OneSignalAtATime):
        self._guard = guard

    def __getattr__(self, name: str) -> Any:
        return getattr(signal, name)

    def signal(self, signum: int, handler: Any) -> Any:
        return signal.signal(signum, self._guard.wrap(handler) if callable(handler) else handler)


def default_bind(host: str, port: int | None) -> str | None:
    """PORT with HOST (0.0.0.0 when only PORT is set); None: hypercorn.toml's bind, or 127.0.0.1:8000."""
    host = host.strip()
    if port is not None:
        return f"{host or '0.0.0.0'}:{port}"
    return f"{host}:8000" if host else None


def serve(args: argparse.Namespace) -> int:
    """hypercorn serving ``core.web.app:app``; the exit status says whether the app started.

    The environment and plugins.yaml's syntax are checked first; the rest where it is used —
    in each worker's startup, the same code as ``check-config`` (``Router.configure``) — so
    the master stays light (no plugins, no ccxt). A worker that cannot start writes one line
    to a report file and exits; the master then stops, prints that line once and exits 3
    (hypercorn's master alone would exit 0).
    """
    import hypercorn.run
    from hypercorn.config import Config

    from core.checks.preflight import STARTUP_REPORT_ENV
    from core.config import PluginsFile

    try:  # what can be checked without loading the plugins (and ccxt) into the master
        settings = load_settings()
        PluginsFile.load(settings.plugins_file, settings.environ)
    except ConfigError as exc:
        return report_config_error(exc)
    # --config, else ./hypercorn.toml, else the one next to the code (the server settings
    # shipped with the project: timeouts, limits).
    config_path = Path(args.config or HYPERCORN_CONFIG)
    if not args.config and not config_path.is_file():
        config_path = Path(__file__).resolve().parents[2] / HYPERCORN_CONFIG
    if args.config and not config_path.is_file():
        return report_config_error(
            ConfigError(f"--config: no file at '{args.config}' (expected a hypercorn TOML file)")
        )
    try:
        config = Config.from_toml(config_path) if config_path.is_file() else Config()
    except Exception as exc:
        return report_config_error(ConfigError(f"{config_path}: not a valid hypercorn configuration: {exc}"))
    config.application_path = "core.web.app:app"
    bind = args.bind or default_bind(settings.host, settings.port)
    if bind:
        config.bind = [bind]
    elif not config_path.is_file():
        config.bind = ["127.0.0.1:8000"]
    if args.workers is not None:
        config.workers = args.workers
    if args.graceful_timeout is not None:
        config.graceful_timeout = args.graceful_timeout
    if args.access_log:
        config.accesslog = "-"
    from core.web.worker import dump_stacks_on_sigusr1

    dump_stacks_on_sigusr1()  # the master's stacks too (hypercorn leaves SIGUSR1 alone)
    with tempfile.TemporaryDirectory(prefix="router-start-") as tmp:
        report = Path(tmp) / "startup.txt"
        os.environ[STARTUP_REPORT_ENV] = str(report)
        hypercorn.run.signal = _GuardedSignalModule(OneSignalAtATime())  # type: ignore[assignment]
        try:
            status: int = hypercorn.run.run(config)
        except OSError as exc:  # the address is in use, a privileged port, ...
            return report_config_error(
                ConfigError(f"--bind {', '.join(config.bind)}: cannot listen: {exc.strerror or exc}")
            )
        finally:
            hypercorn.run.signal = signal
            os.environ.pop(STARTUP_REPORT_ENV, None)
        failure = report.read_text(encoding="utf-8").splitlines() if report.exists() else []
    if failure:
        print(failure[0], file=sys.stderr)
        return 3
    return status


def check_config_command(args: argparse.Namespace) -> int:
    from core.checks.preflight import check_config

    settings = load_settings()
    lines = asyncio.run(check_config(settings))
    print("configuration ok")
    for line in lines:
        print(f"  {line}")
    return 0


def doctor_command(args: argparse.Namespace) -> int:
    from core.checks.doctor import run_doctor

    settings = load_settings()
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


def _workers(value: str) -> int:
    try:
        workers = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("a whole number of worker processes") from None
    if workers < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return workers


def register(sub: argparse._SubParsersAction[Any]) -> None:
    serving = sub.add_parser(
        "serve",
        help="run the server; exits non-zero with one line if it cannot start",
        description="Run the server (hypercorn serving core.web.app:app). A configuration mistake stops it "
        "with one line and exit status 2; a worker that cannot start, with status 3.",
    )
    serving.add_argument(
        "--bind",
        metavar="HOST:PORT",
        help="where to listen (default: HOST/PORT from the environment, else hypercorn.toml, else 127.0.0.1:8000)",
    )
    serving.add_argument("--workers", type=_workers, metavar="N", help="worker processes (default: hypercorn.toml's)")
    serving.add_argument(
        "--graceful-timeout",
        type=float,
        dest="graceful_timeout",
        metavar="SECONDS",
        help="how long a stopping worker may finish its requests",
    )
    serving.add_argument(
        "--access-log",
        action="store_true",
        dest="access_log",
        help="hypercorn's access log on stdout (off by default: a line per request costs the event loop "
        "~0.25 ms; every alert is in the journal)",
    )
    serving.add_argument(
        "--config", metavar="FILE", help=f"a hypercorn TOML file (default: ./{HYPERCORN_CONFIG} if it exists)"
    )
    serving.set_defaults(handler=serve)
    checking = sub.add_parser(
        "check-config",
        help="check the configuration as a start would, without starting",
        description="The verdict of a start without starting: settings, plugins.yaml, plugins, accounts and "
        "state (for CI and Heroku's release phase). Exit status 2 with one line on a mistake.",
    )
    checking.set_defaults(handler=check_config_command)
    doctor = sub.add_parser(
        "doctor",
        help="preflight checks before real money; exits 1 on a blocker",
        description="Preflight before real money: server settings, state backend, and per account keys, "
        "permissions, clock skew and markets. Exit status 1 on a blocker.",
    )
    doctor.add_argument(
        "--symbol",
        action="append",
        default=[],
        metavar="TICKER",
        help="a ticker your alerts use (BINANCE:BTCUSDT, ETHUSDT.P); checked on every account; repeatable",
    )
    doctor.set_defaults(handler=doctor_command)
