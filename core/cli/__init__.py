"""The command line: ``ccxt-trading-webhook <command>`` (also ``python -m core <command>``).

One module per command group; each has ``register(subparsers)``, which adds its commands
with a ``handler`` (parsed arguments in, exit status out). ``build_parser()`` is the whole
tree (the CLI reference is generated from it); ``main()`` runs a command line.

    serve            run the server (hypercorn); one line and a failure status if it cannot start
    check-config     the same verdict without starting (CI, Heroku's release phase)
    doctor           preflight before real money; exits 1 on a blocker
    init (init-env)  write .env with random secrets, once
    tokens           issue | revoke | list the tokens of token mode
    journal          list | show | stats of the journal of alerts and orders
    risk             halt | resume | status: the kill switch
    simulate         send a TradingView-like alert to a running router
    emulator         run the exchange emulator
    bench            run the benchmark (source checkout)
    <plugin command> commands of loaded plugins (a plugin object's ``commands``:
                     {name: (help, configure_parser, run)}), e.g. ``paper-markets``

Configuration mistakes end the command with one line (``error: ...``) and status 2. Run with
an interpreter that lacks the project's dependencies, a command says so in one line (status 1).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence

from core import __version__
from core.cli import init, journal, risk, server, simulate, tokens, tools
from core.cli.common import PROG, Handler, PluginCommand, missing_dependency, report_config_error
from core.errors import ConfigError

__all__ = ["PROG", "build_parser", "core_commands", "main", "plugin_commands"]

GROUPS = (server, init, tokens, journal, risk, simulate, tools)

# Command lines taken before argparse sees them: a prefix, and what runs the rest literally.
LITERAL: dict[tuple[str, ...], Callable[[list[str]], int]] = {
    ("tokens", "revoke"): tokens.revoke_literally,  # a token may begin with '-'
    **{(name,): run for name, run in tools.PASSED_THROUGH.items()},
}


def _core_parser(prog: str) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction[argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="ccxt-trading-webhook: a TradingView webhook router. Configuration comes from the "
        "environment and .env (see the configuration reference) and plugins.yaml.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser, sub


def core_commands() -> frozenset[str]:
    """The names (and aliases) of the built-in commands; a plugin cannot take one."""
    _, sub = _core_parser(PROG)
    return frozenset(sub.choices)


def plugin_commands() -> dict[str, PluginCommand]:
    """Subcommands the loaded plugins offer (their ``commands`` attribute). Raises ConfigError."""
    from core.config import PluginsFile, Settings
    from core.hooks.manager import create_plugin_manager

    settings = Settings.from_env()
    plugins = create_plugin_manager(PluginsFile.load(settings.plugins_file, settings.environ))
    taken = core_commands()
    found: dict[str, PluginCommand] = {}
    for loaded in plugins.loaded:
        for name, spec in (getattr(loaded.plugin, "commands", None) or {}).items():
            if name not in taken:
                found.setdefault(name, spec)
    return found


def _discover() -> dict[str, PluginCommand]:
    """Plugin commands for a help listing: none when the configuration or a dependency is missing."""
    try:
        return plugin_commands()
    except (ConfigError, ImportError):
        return {}


def build_parser(plugins: Mapping[str, PluginCommand] | None = None, *, prog: str = PROG) -> argparse.ArgumentParser:
    """The whole command tree: the built-in commands, then ``plugins``' (default: those of the
    plugins this directory's configuration loads, none if it cannot be read)."""
    parser, sub = _core_parser(prog)
    for name, (help_text, configure, run) in (_discover() if plugins is None else plugins).items():
        command = sub.add_parser(name, help=help_text)
        configure(command)
        command.set_defaults(handler=run)
    return parser


def _main(argv: list[str], prog: str) -> int:
    for prefix, run in LITERAL.items():
        rest = argv[len(prefix) :]
        if tuple(argv[: len(prefix)]) == prefix and not (len(prefix) > 1 and rest in (["-h"], ["--help"])):
            return run(rest)
    extra: dict[str, PluginCommand] = {}
    if argv[:1] and not argv[0].startswith("-") and argv[0] not in core_commands():
        extra = plugin_commands()  # a plugin's command: its plugin must load (ConfigError says why not)
    elif not argv or argv[0] in ("-h", "--help"):
        extra = _discover()
    args = build_parser(extra, prog=prog).parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Run one command line (default: ``sys.argv[1:]``); the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(arguments, prog)
    except ConfigError as exc:
        return report_config_error(exc)
    except ModuleNotFoundError as exc:
        line = missing_dependency(exc)
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 1
