"""``emulator`` and ``bench``: the exchange emulator and the benchmark, their own options passed through.

``emulator`` runs the ``emulator`` package (installed with the project): a loopback exchange
for ccxt (Binance spot and USD-M, Bybit v5) and Alpaca. ``bench`` runs the benchmark, which
lives in a source checkout only (``bench/`` next to ``core/``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

from core.cli.common import PROG

CHECKOUT = Path(__file__).resolve().parents[2]


def emulator(argv: list[str]) -> int:
    from emulator.__main__ import main

    status: int = main(argv)
    return status


def bench(argv: list[str]) -> int:
    if not (CHECKOUT / "bench" / "__main__.py").is_file():
        print(
            f"error: bench: the benchmark is part of a source checkout (bench/ next to core/), and {CHECKOUT} "
            f"is an installed copy: clone the repository and run `{PROG} bench` (or `python -m bench`) there",
            file=sys.stderr,
        )
        return 2
    if str(CHECKOUT) not in sys.path:
        sys.path.insert(0, str(CHECKOUT))
    status: int = importlib.import_module("bench.__main__").main(argv)
    return status


PASSED_THROUGH = {"emulator": emulator, "bench": bench}
"""Commands whose arguments (``--help`` too) go to the program they run, unparsed."""


def register(sub: argparse._SubParsersAction[Any]) -> None:
    for name, help_text, options in (
        (
            "emulator",
            "run the exchange emulator (Binance, Bybit and Alpaca APIs on loopback) for tests and trials",
            "--port N (default 9000; 0 picks a free one), --host, --price SYMBOL=PRICE, --account KEY:SECRET, "
            "--markets default|catalogue",
        ),
        (
            "bench",
            "run the benchmark against the least any such server can do (source checkout only)",
            "--quick, --rounds N, --out FILE, --dashboard, ... ; results in bench/results/latest.json",
        ),
    ):
        parser = sub.add_parser(
            name,
            help=help_text,
            description=f"{help_text[0].upper()}{help_text[1:]}. Options: {options}; "
            f"`{PROG} {name} --help` shows them all.",
            add_help=False,
        )
        parser.add_argument("args", nargs=argparse.REMAINDER, metavar="OPTIONS", help="passed to the program")
