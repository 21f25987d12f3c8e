"""Send a realistic TradingView alert to a running router and print the answer.

    simulate                                       HMAC-signed (WEBHOOK_SECRET from the environment or .env)
    simulate --token <token>                       token mode, as TradingView sends it
    simulate --symbol BINANCE:ETHUSDT --side sell --amount 0.1

Signed requests use the recommended form: X-Signature = hex HMAC-SHA256 of
"<X-Timestamp>.<body>" keyed with WEBHOOK_SECRET (--body-only signs the body alone, the
classic form). Standard library only, so it runs anywhere (also as simulate_tradingview.py).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def read_dotenv(path: Path = Path(".env")) -> dict[str, str]:
    """``KEY=value`` lines of ``path`` (quotes stripped, comments skipped); {} without the file."""
    values: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def build_alert(args: argparse.Namespace) -> dict[str, Any]:
    """The message a TradingView strategy alert produces once its placeholders are filled."""
    alert: dict[str, Any] = {
        "exchange": args.exchange,
        "symbol": args.symbol,
        "side": args.side,
        "amount": args.amount,
        "price": args.price,
        "id": args.id or f"sim-{int(time.time() * 1000)}",
    }
    if args.token:
        alert = {"token": args.token, **alert}
    if args.account:
        alert["account"] = args.account
    return alert


def simulate(args: argparse.Namespace) -> int:
    env = {**read_dotenv(), **os.environ}
    url = args.url or f"http://127.0.0.1:{env.get('PORT') or '8000'}/webhook"
    secret = env.get("WEBHOOK_SECRET", "") if args.secret is None else args.secret
    body = json.dumps(build_alert(args), separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json" if not args.token else "text/plain; charset=utf-8"}
    if not args.token:
        if not secret:
            print("no WEBHOOK_SECRET in the environment or .env; pass --secret or --token", file=sys.stderr)
            return 2
        timestamp = str(int(time.time()))
        message = body if args.body_only else timestamp.encode() + b"." + body
        headers["X-Timestamp"] = timestamp
        headers["X-Signature"] = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()

    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    except urllib.error.URLError as exc:
        print(f"cannot reach {url}: {exc.reason}", file=sys.stderr)
        return 1
    print(f"HTTP {status}")
    try:
        print(json.dumps(json.loads(text), indent=2))
    except ValueError:
        print(text)
    return 0 if status < 400 else 1


def configure(parser: argparse.ArgumentParser) -> None:
    """The arguments (defaults that depend on the environment are resolved when it runs, never
    written into the parser: a generated reference must not show the local WEBHOOK_SECRET)."""
    parser.add_argument("--url", help="the webhook (default: http://127.0.0.1:$PORT/webhook, PORT else 8000)")
    parser.add_argument("--token", help="send in token mode with this token instead of signing")
    parser.add_argument("--secret", help="HMAC secret (default: WEBHOOK_SECRET from the environment or .env)")
    parser.add_argument("--body-only", action="store_true", help="sign the body alone (the classic form)")
    parser.add_argument("--exchange", default="BINANCE", help="the alert's exchange (default BINANCE)")
    parser.add_argument("--account", help="the alert's account (default: none, the default account)")
    parser.add_argument("--symbol", default="BINANCE:BTCUSDT", help="the ticker (default BINANCE:BTCUSDT)")
    parser.add_argument("--side", default="buy", help="buy or sell (default buy)")
    parser.add_argument("--amount", default="0.001", help="default 0.001")
    parser.add_argument("--price", default="50000", help="default 50000")
    parser.add_argument("--id", help="alert id (default: a fresh one)")
    parser.add_argument("--timeout", type=float, default=10, help="seconds to wait for the answer (default 10)")
    parser.set_defaults(handler=simulate)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    configure(
        sub.add_parser(
            "simulate",
            help="send a TradingView-like alert to a running router and print the answer",
            description=__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
