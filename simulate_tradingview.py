#!/usr/bin/env python3
"""Send a realistic TradingView alert to a running router and print the answer:
``ccxt-trading-webhook simulate ...`` under its classic name (standard library only).

    python simulate_tradingview.py                       # HMAC-signed (WEBHOOK_SECRET from env/.env)
    python simulate_tradingview.py --token <token>       # token mode, as TradingView sends it
    python simulate_tradingview.py --symbol BINANCE:ETHUSDT --side sell --amount 0.1
"""

from __future__ import annotations

import sys

if sys.version_info < (3, 11):  # noqa: UP036 - run by whatever python3 is on PATH
    raise SystemExit(f"error: Python 3.11+ is needed, this is {sys.version.split()[0]}: use .venv/bin/python")

from core.cli import main as cli


def main(argv: list[str] | None = None) -> int:
    return cli(["simulate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
