"""The project's exchange emulator (``emulator.Emulator``) with the benchmark's markets.

    python -m bench.emulator --key KEY --secret SECRET [--extra-account KEY:SECRET ...]

Prints ``emulator listening on http://127.0.0.1:PORT`` like ``python -m emulator``.
Besides the emulator's default instruments it lists ``SYMBOLS`` Binance spot markets
(``B00USDT`` … ``B31USDT``, price 100), so that the alerts of a burst can each trade
their own market, as many strategies firing on one candle close do: the router executes
the alerts of one (account, market) one at a time, in arrival order, and a burst on a
single market measures that guarantee, not the router's concurrency. The benchmark
account (and each ``--extra-account``, e.g. the original implementation's, whose orders
are counted apart) holds ample balances of every asset.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

SYMBOLS = 32
PRICE = "100"


def bench_bases() -> list[str]:
    return [f"B{i:02d}" for i in range(SYMBOLS)]


def bench_tickers() -> list[str]:
    """The TradingView tickers of the benchmark markets (Binance ids)."""
    return [f"{base}USDT" for base in bench_bases()]


async def serve(accounts: dict[str, str]) -> None:
    from emulator import Emulator
    from emulator.__main__ import serve_until_signalled
    from emulator.markets import BINANCE, SPOT, D, MarketSpec, default_markets

    markets = default_markets() + [
        MarketSpec(
            venue=BINANCE,
            market_type=SPOT,
            symbol=f"{base}USDT",
            base=base,
            quote="USDT",
            tick_size=D("0.01"),
            min_price=D("0.01"),
            max_price=D("1000000"),
            step_size=D("0.001"),
            min_qty=D("0.001"),
            max_qty=D("9000000"),
            market_max_qty=D("9000000"),
            min_notional=D("5"),
            base_precision=8,
            quote_precision=8,
        )
        for base in bench_bases()
    ]
    plenty = "1000000000000"
    balances = {
        "binance.spot": {
            "USDT": plenty,
            "BTC": plenty,
            "ETH": plenty,
            "SOL": plenty,
            **{base: plenty for base in bench_bases()},
        }
    }
    prices = {f"{base}USDT": PRICE for base in bench_bases()}
    emulator = Emulator(accounts=accounts, prices=prices, balances=balances, markets=markets)
    await serve_until_signalled(emulator, "127.0.0.1", 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.emulator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--key", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--extra-account", action="append", default=[], metavar="KEY:SECRET")
    args = parser.parse_args(argv)
    accounts = {args.key: args.secret}
    for pair in args.extra_account:
        key, _, secret = pair.partition(":")
        accounts[key] = secret
    asyncio.run(serve(accounts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
