"""The command-line reference: every parser of the project's commands, rendered with its help."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from refgen_fields import ensure_importable

# ---------------------------------------------------------------- the command line


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__(parser.prog)
        self.parser = parser


def capture_parser(main: Callable[..., Any], argv: list[str], program: str) -> argparse.ArgumentParser | None:
    """The parser ``main(argv)`` builds, taken at its ``parse_args`` call: nothing runs."""
    original = argparse.ArgumentParser.parse_args

    def capture(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        raise _Captured(self)

    saved_argv, saved_cwd = sys.argv, os.getcwd()
    with tempfile.TemporaryDirectory() as scratch:
        try:
            argparse.ArgumentParser.parse_args = capture  # type: ignore[method-assign]
            sys.argv = [program]
            os.chdir(scratch)  # no .env or plugins.yaml of the checkout changes the help
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                main(argv)
        except _Captured as captured:
            return captured.parser
        except SystemExit:
            return None
        finally:
            argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
            sys.argv = saved_argv
            os.chdir(saved_cwd)
    return None


def main_parser() -> argparse.ArgumentParser:
    """The project's CLI parser: ``build_parser()`` of ``core.__main__``, else of
    ``core.cli``, else the parser ``core.__main__.main`` builds."""
    ensure_importable()
    for module_name in ("core.__main__", "core.cli"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        build = getattr(module, "build_parser", None)
        if callable(build):
            return build()
    module = importlib.import_module("core.__main__")
    parser = capture_parser(module.main, ["--help"], "python -m core")
    assert parser is not None, "core.__main__.main built no parser"
    return parser


SCRIPTS = (  # the other entry points: (how the docs call it, module, argv that reaches its parser)
    ("python manage_tokens.py", "manage_tokens", ["--help"]),
    ("python simulate_tradingview.py", "simulate_tradingview", ["--help"]),
    ("python -m emulator", "emulator.__main__", ["--help"]),
    ("python -m bench", "bench.__main__", ["--help"]),
)


def walk_parser(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every (sub)command of ``parser``: (names, parser)."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk_parser(sub, (*path, name))


def _help(parser: argparse.ArgumentParser) -> str:
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        return parser.format_help().rstrip()
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved


def _render(parser: argparse.ArgumentParser, level: str) -> list[str]:
    out: list[str] = []
    for _path, sub in walk_parser(parser):
        out += [f"{level} `{sub.prog}`", "", "```text", _help(sub), "```", ""]
    return out


def cli_markdown() -> str:
    parser = main_parser()
    out = ["## The main command", ""] + _render(parser, "###")
    out += ["## The other entry points", ""]
    for program, module_name, argv in SCRIPTS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        main = getattr(module, "main", None)
        found = capture_parser(main, argv, program) if main else None
        if found is None:
            continue
        if found.prog == parser.prog:  # a shim onto the main command
            out += [f"### `{program}`", "", f"Runs `{parser.prog}` (see above).", ""]
            continue
        out += _render(found, "###")
    return "\n".join(out).rstrip() + "\n"
