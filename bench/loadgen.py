"""The load generator, run as its own process:

    python -m bench.loadgen --url http://127.0.0.1:PORT --n 300 --concurrency 1 \
        --account bench --id-prefix r0-server-c1 --out result.json

It sends N signed alerts (unique ids, the ``--tickers`` in turn, buys and sells) over
``concurrency`` keep-alive HTTP/1.1 connections, each connection sending its next alert as soon as the previous
answer is read. Bodies and signatures (``X-Signature`` over ``"<X-Timestamp>.<body>"``,
the router's recommended form; WEBHOOK_SECRET from the environment variable
``BENCH_WEBHOOK_SECRET``) are made before the timed window, and the connections are
opened before it too. Latency is from the first byte written to the last byte of the
answer read. The client is a few lines of asyncio streams rather than aiohttp or httpx:
the load generator shares the machine's two cores with what it measures, so the less
CPU it spends per request, the more the figures are the server's.

``--payload classic`` sends the classic interface's payload instead, as the original
implementation (``bench.original``) takes it: ``exchange``, ``apiKey``, ``secret``,
``symbol``, ``side``, ``amount``, ``price`` and a unique ``nonce`` (the alert id here: that
implementation refuses a signature it has seen, so every body differs), signed with
``X-Signature`` = HMAC-SHA256 of the body alone and ``X-Timestamp``; the exchange
credentials from ``BENCH_CLASSIC_API_KEY`` and ``BENCH_CLASSIC_API_SECRET``.

Writes JSON: n, concurrency, elapsed_s, requests_per_s, latencies_ms (per request, in
sending order), statuses, ids_2xx, errors, samples (one answer body per status).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import sys
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

REQUEST_TIMEOUT = 15.0  # per request; the router answers within its 2.5 s budget


def alert_body(
    alert_id: str, account: str, side: str, ticker: str = "B00USDT", contracts: str = "0.1", price: str = "100"
) -> bytes:
    """A TradingView strategy alert as the router receives it (placeholders filled)."""
    return json.dumps(
        {"id": alert_id, "account": account, "ticker": ticker, "action": side, "contracts": contracts, "price": price},
        separators=(",", ":"),
    ).encode()


def classic_symbol(ticker: str) -> str:
    """``B00USDT`` → ``B00/USDT``: the classic payload names the ccxt symbol."""
    return f"{ticker[: -len('USDT')]}/USDT" if ticker.endswith("USDT") else ticker


def classic_body(nonce: str, api_key: str, secret: str, side: str, ticker: str = "B00USDT") -> bytes:
    """The classic interface's payload (exchange credentials in the body), as the original
    implementation receives it; ``nonce`` makes every body, hence every signature, unique."""
    return json.dumps(
        {
            "exchange": "binance",
            "apiKey": api_key,
            "secret": secret,
            "symbol": classic_symbol(ticker),
            "side": side,
            "amount": 0.1,
            "price": 100,
            "nonce": nonce,
        },
        separators=(",", ":"),
    ).encode()


def signature_headers(body: bytes, secret: str, payload: str = "tradingview", timestamp: int | None = None) -> dict:
    """X-Timestamp and X-Signature: HMAC-SHA256 of ``"<ts>.<body>"`` (the router's recommended
    form), or of the body alone for the classic payload (the original implementation's)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signed = body if payload == "classic" else ts.encode() + b"." + body
    return {"X-Timestamp": ts, "X-Signature": hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()}


def signed_request(
    host: str,
    body: bytes,
    secret: str,
    *,
    path: str = "/webhook",
    timestamp: int | None = None,
    payload: str = "tradingview",
) -> bytes:
    """The whole HTTP/1.1 request, signed as ``signature_headers`` says."""
    headers = signature_headers(body, secret, payload, timestamp)
    ts, signature = headers["X-Timestamp"], headers["X-Signature"]
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nX-Timestamp: {ts}\r\nX-Signature: {signature}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Answer:
    status: int
    body: bytes
    close: bool


class Connection:
    """One keep-alive HTTP/1.1 connection; reopened when the server closes it."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reconnects = 0

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, OSError):
                pass
            self.reader = self.writer = None

    async def exchange(self, request: bytes) -> Answer:
        if self.writer is None:
            await self.open()
            self.reconnects += 1
        assert self.reader is not None and self.writer is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = None
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
            elif name == "transfer-encoding":
                raise RuntimeError("chunked answers are not expected from the webhook")
        body = await self.reader.readexactly(length) if length else b""
        if close:
            await self.close()
        return Answer(status, body, close)


async def run(url: str, requests: list[tuple[str, bytes]], concurrency: int) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    connections = [Connection(host, port) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in connections))
    latencies: list[float | None] = [None] * len(requests)
    statuses: dict[str, int] = {}
    samples: dict[str, str] = {}
    ids_2xx: list[str] = []
    errors: list[str] = []
    next_index = 0

    async def worker(conn: Connection) -> None:
        nonlocal next_index
        while next_index < len(requests):
            index = next_index
            next_index += 1
            alert_id, request = requests[index]
            started = time.perf_counter()
            try:
                answer = await asyncio.wait_for(conn.exchange(request), REQUEST_TIMEOUT)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError) as exc:
                errors.append(f"{alert_id}: {type(exc).__name__}: {exc}"[:300])
                statuses["error"] = statuses.get("error", 0) + 1
                await conn.close()
                continue
            latencies[index] = (time.perf_counter() - started) * 1000
            key = str(answer.status)
            statuses[key] = statuses.get(key, 0) + 1
            samples.setdefault(key, answer.body[:600].decode("utf-8", "replace"))
            if 200 <= answer.status < 300:
                ids_2xx.append(alert_id)

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    elapsed = time.perf_counter() - started
    await asyncio.gather(*(c.close() for c in connections))
    return {
        "n": len(requests),
        "concurrency": concurrency,
        "elapsed_s": elapsed,
        "requests_per_s": len(requests) / elapsed if elapsed > 0 else 0.0,
        "latencies_ms": [x for x in latencies if x is not None],
        "statuses": statuses,
        "ids_2xx": ids_2xx,
        "errors": errors[:20],
        "reconnects": sum(c.reconnects for c in connections),
        "samples": samples,
    }


def build_requests(
    url: str,
    n: int,
    account: str,
    id_prefix: str,
    secret: str,
    tickers: list[str],
    payload: str = "tradingview",
    classic_credentials: tuple[str, str] = ("", ""),
) -> list[tuple[str, bytes]]:
    """Alert i trades ``tickers[i % len(tickers)]``: the alerts in flight at once trade
    different markets (as many strategies firing on one candle close), unless one ticker
    is given."""
    parts = urlsplit(url)
    host = f"{parts.hostname}:{parts.port}"
    out = []
    for i in range(n):
        alert_id = f"{id_prefix}-{i}"
        side = "buy" if (i // len(tickers)) % 2 == 0 else "sell"
        ticker = tickers[i % len(tickers)]
        if payload == "classic":
            body = classic_body(alert_id, *classic_credentials, side, ticker)
        else:
            body = alert_body(alert_id, account, side, ticker=ticker)
        out.append((alert_id, signed_request(host, body, secret, payload=payload)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--account", default="bench")
    parser.add_argument("--id-prefix", required=True)
    parser.add_argument(
        "--tickers", default="B00USDT", help="comma-separated TradingView tickers, used in turn (default B00USDT)"
    )
    parser.add_argument(
        "--payload",
        choices=("tradingview", "classic"),
        default="tradingview",
        help="tradingview (the router's, default) or classic (the original implementation's)",
    )
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    secret = os.environ.get("BENCH_WEBHOOK_SECRET", "")
    if not secret:
        print("BENCH_WEBHOOK_SECRET is not set", file=sys.stderr)
        return 2
    tickers = [t for t in args.tickers.split(",") if t]
    credentials = (os.environ.get("BENCH_CLASSIC_API_KEY", ""), os.environ.get("BENCH_CLASSIC_API_SECRET", ""))
    if args.payload == "classic" and not all(credentials):
        print("BENCH_CLASSIC_API_KEY and BENCH_CLASSIC_API_SECRET must be set for --payload classic", file=sys.stderr)
        return 2
    requests = build_requests(
        args.url, args.n, args.account, args.id_prefix, secret, tickers, args.payload, credentials
    )
    coro = run(args.url, requests, max(1, args.concurrency))
    try:
        import uvloop  # the load generator's own loop: less CPU per request on a shared machine
    except ImportError:
        result = asyncio.run(coro)
    else:
        result = uvloop.run(coro)
    with open(args.out, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
