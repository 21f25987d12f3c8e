"""Real venues' market lists for the paper exchange: snapshots shipped with the package,
refreshable through ccxt's public endpoints.

A snapshot (``market_snapshots/<exchange>.json``) holds ccxt's unified markets of one
exchange — id, symbol, type, precision (read in the snapshot's ``precision_mode``, ccxt's
TICK_SIZE when absent), limits — and the last price of each when the
source had one. The paper exchange resolves a ticker against the venue it names
(``BINANCE:DOGEUSDT`` → binance) with that venue's precision and limits, so an alert that
would work on the venue works on paper identically.

``python -m core paper-markets refresh --exchange binance`` rewrites a snapshot with what
ccxt's ``load_markets`` and ``fetch_tickers`` return (public endpoints, no keys);
``--ccxt '{"urls": ...}'`` deep-merges a constructor config (a proxy, a testnet, the
project's emulator); ``--output`` writes elsewhere (then point ``paper.snapshot_dir`` at it).
``python -m core paper-markets list`` shows what is loaded from where.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

SNAPSHOT_DIR = Path(__file__).with_name("market_snapshots")
# What a paper order needs of a ccxt market; the rest (info, fees) is dropped.
KEPT_FIELDS = (
    "id",
    "symbol",
    "base",
    "quote",
    "settle",
    "baseId",
    "quoteId",
    "settleId",
    "type",
    "spot",
    "margin",
    "swap",
    "future",
    "option",
    "contract",
    "linear",
    "inverse",
    "contractSize",
    "active",
    "precision",
    "limits",
    "altname",
)
DEFAULT_TYPES = {"binance": ["spot", "linear"], "bybit": ["spot", "linear"]}


def snapshot_path(exchange_id: str, directory: Path | None = None) -> Path:
    return (directory or SNAPSHOT_DIR) / f"{exchange_id}.json"


def load_snapshot(exchange_id: str, directory: Path | None = None) -> dict[str, Any]:
    """The snapshot of ``exchange_id``: ``{"exchange", "source", "fetched_at", "markets": [...]}``."""
    path = snapshot_path(exchange_id, directory)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = ", ".join(available(directory)) or "none"
        raise ValueError(
            f"no market snapshot for '{exchange_id}' in {path.parent} (available: {known}; "
            f"create one with `python -m core paper-markets refresh --exchange {exchange_id}`)"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a market snapshot: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("markets"), list):
        raise ValueError(f"{path}: not a market snapshot (expected a 'markets' list)")
    return data


def available(directory: Path | None = None) -> list[str]:
    folder = directory or SNAPSHOT_DIR
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def trim(market: dict[str, Any], last: Any = None) -> dict[str, Any]:
    kept = {k: market.get(k) for k in KEPT_FIELDS if k in market}
    if kept.get("altname") is None and isinstance(market.get("info"), dict) and market["info"].get("altname"):
        kept["altname"] = market["info"]["altname"]  # kraken's XBTUSD
    kept["info"] = {"last": str(last)} if last is not None else {}
    return kept


async def refresh(
    exchange_id: str,
    *,
    types: list[str] | None = None,
    config: dict[str, Any] | None = None,
    output: Path | None = None,
    note: str | None = None,
) -> tuple[Path, int]:
    """Load the exchange's markets (and tickers, when it has them) through ccxt's public
    endpoints and write the snapshot; (path, number of markets)."""
    import ccxt.async_support as ccxt_async

    from plugins.exchanges.ccxt.accounts import _deep_merge, unknown_exchange_message

    problem = unknown_exchange_message(exchange_id)
    if problem:
        raise ValueError(problem)
    base: dict[str, Any] = {
        "enableRateLimit": True,
        "has": {"fetchCurrencies": False},
        "options": {"fetchMargins": False},
    }
    wanted = types or DEFAULT_TYPES.get(exchange_id)
    if wanted:
        base["options"]["fetchMarkets"] = {"types": wanted}
    client = getattr(ccxt_async, exchange_id)(_deep_merge(base, config or {}))
    try:
        markets = await client.load_markets()
        last: dict[str, Any] = {}
        if client.has.get("fetchTickers"):
            for kind in sorted({m.get("type") for m in markets.values()}):
                try:
                    tickers = await client.fetch_tickers(None, {"type": kind})
                except Exception:  # prices are a convenience: alerts carry {{close}}
                    continue
                last.update({s: t.get("last") for s, t in tickers.items() if t.get("last") is not None})
        source = client.urls.get("api")
        host = (
            source if isinstance(source, str) else next((v for v in (source or {}).values() if isinstance(v, str)), "")
        )
    finally:
        await client.close()
    snapshot = {
        "exchange": exchange_id,
        "source": host,
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "ccxt_version": getattr(ccxt_async, "__version__", "?"),
        # How "precision" reads (ccxt's TICK_SIZE, DECIMAL_PLACES, ...): the paper plugin needs it.
        "precision_mode": client.precisionMode,
        "markets": [trim(m, last.get(symbol)) for symbol, m in sorted(markets.items())],
    }
    if note:
        snapshot["note"] = note
    path = output or snapshot_path(exchange_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(snapshot, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path, len(snapshot["markets"])


# ---------------------------------------------------------------- python -m core paper-markets


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="paper_action", required=True)
    again = sub.add_parser(
        "refresh", help="fetch an exchange's markets through ccxt's public endpoints into a snapshot"
    )
    again.add_argument("--exchange", required=True, help="a ccxt exchange id: binance, bybit, kraken, ...")
    again.add_argument("--types", help="market types to load, comma-separated (binance/bybit: spot,linear)")
    again.add_argument("--ccxt", default="{}", help="JSON deep-merged into the ccxt constructor config (urls, proxies)")
    again.add_argument("--output", help="where to write (default: the snapshot shipped with the package)")
    again.add_argument("--note", help="a remark stored in the snapshot (where the data came from)")
    sub.add_parser("list", help="the snapshots and what they hold")


def run_command(args: argparse.Namespace) -> int:
    if args.paper_action == "list":
        for name in available():
            data = load_snapshot(name)
            fetched = f"fetched {data.get('fetched_at', '?')} from {data.get('source', '?')}"
            print(f"{name:<10} {len(data['markets']):>5} markets  {fetched}")
        return 0
    try:
        config = json.loads(args.ccxt)
        path, count = asyncio.run(
            refresh(
                args.exchange.strip().lower(),
                types=[t.strip() for t in args.types.split(",")] if args.types else None,
                config=config,
                output=Path(args.output) if args.output else None,
                note=args.note,
            )
        )
    except Exception as exc:
        print(f"error: paper-markets refresh: {type(exc).__name__}: {exc}"[:500], file=sys.stderr)
        return 1
    print(f"wrote {count} {args.exchange} markets to {path}")
    return 0


COMMANDS = {"paper-markets": ("real venues' market lists for the paper exchange", configure_parser, run_command)}
