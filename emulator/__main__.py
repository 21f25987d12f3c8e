"""The emulator's command line: ``python -m emulator [--host H] [--port P] [--price S=P ...] [--account K:S ...]``.

Examples::

    python -m emulator --help
    python -m emulator --port 9000
    python -m emulator --port 0 --price BTC/USDT=50000 --markets catalogue

Prints ``emulator listening on http://HOST:PORT`` (the real port when ``--port 0``)
once it accepts connections, and runs until SIGTERM or SIGINT. ``main(argv)`` is what a
command-line front end (the project's CLI) calls with the arguments after its subcommand.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from .server import Emulator


def _pair(text: str, separator: str, what: str) -> tuple[str, str]:
    left, sep, right = text.partition(separator)
    if not sep or not left or not right:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return left, right


def _pairs(metavar: str, separator: str, help: str) -> dict[str, Any]:
    """The argparse settings of a repeatable ``LEFT<separator>RIGHT`` option (a list of pairs)."""
    return {
        "action": "append",
        "default": [],
        "metavar": metavar,
        "type": lambda text: _pair(text, separator, metavar),
        "help": help,
    }


def parse_args(argv: list[str] | None = None, prog: str = "python -m emulator") -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Loopback exchange emulator (Binance spot + USD-M REST and WebSocket API, Bybit v5) for ccxt, "
        "and Alpaca Trading API v2 under /alpaca.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    parser.add_argument(
        "--price",
        **_pairs("SYMBOL=PRICE", "=", "starting price, e.g. BTC/USDT=50000, BTC/USDT:USDT=50010 or BTCUSDT=50000"),
    )
    parser.add_argument(
        "--account",
        **_pairs("KEY:SECRET", ":", "API key/secret pair (replaces the default emu-key-1/emu-key-2 accounts)"),
    )
    parser.add_argument(
        "--markets",
        choices=("default", "catalogue"),
        default="default",
        help="catalogue: the default instruments plus more popular ones (DOGEUSDT)",
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    from .markets import catalogue_markets

    markets = catalogue_markets() if args.markets == "catalogue" else None
    await serve_until_signalled(
        Emulator(accounts=dict(args.account) or None, prices=dict(args.price) or None, markets=markets),
        args.host,
        args.port,
    )


async def serve_until_signalled(emulator: Emulator, host: str, port: int) -> None:
    """Start ``emulator``, print the line tests wait for, serve until SIGTERM or SIGINT."""
    await emulator.start(host, port)
    print(f"emulator listening on {emulator.base_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await emulator.stop()


def main(argv: list[str] | None = None, prog: str = "python -m emulator") -> int:
    """Serve until signalled; ``prog`` names the command in ``--help`` (a CLI's subcommand)."""
    asyncio.run(serve(parse_args(argv, prog)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
