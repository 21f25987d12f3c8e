"""What every command shares: reading the settings, the one-line error, running a coroutine.

Standard library only at import time, so ``--help`` and the shims start anywhere; the
project's dependencies are imported by the commands that need them.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.config import Settings

Handler = Callable[[argparse.Namespace], int]
"""A command: the parsed arguments in, the exit status out."""

PluginCommand = tuple[str, Callable[[argparse.ArgumentParser], None], Handler]
"""A plugin's command (its ``commands`` attribute maps names to these): help, configure the parser, run."""

PROG = "ccxt-trading-webhook"

# Our own top-level packages: a missing one is a broken checkout, not a missing dependency.
OWN_PACKAGES = frozenset({"core", "plugins", "emulator", "bench", "tests"})


def report_config_error(exc: BaseException) -> int:
    """One line on stderr (``error: ...``), exit status 2; the traceback too at LOG_LEVEL=DEBUG."""
    print(f"error: {exc}", file=sys.stderr)
    try:
        from core.config import read_environment

        debug = read_environment().get("LOG_LEVEL", "").strip().upper() == "DEBUG"
    except ImportError:
        debug = False
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    return 2


def missing_dependency(exc: ModuleNotFoundError) -> str | None:
    """The line to print when ``exc`` is a third-party package missing from this interpreter
    (the project run outside its virtualenv), else None (a real bug: let it propagate)."""
    name = (exc.name or "").split(".")[0]
    if not name or name in OWN_PACKAGES:
        return None
    return (
        f"error: the Python package '{name}' is not installed for {sys.executable}: run `make run` once "
        "(it creates .venv) and use .venv/bin/python or `source .venv/bin/activate`, or install the project "
        "with `pip install -e .`"
    )


def load_settings() -> Settings:
    """The settings of this directory's environment and ``.env``; raises ConfigError."""
    from core.config import Settings

    return Settings.from_env()
