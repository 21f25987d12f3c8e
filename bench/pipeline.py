"""The pipeline alone, in process, no network: what the router adds per alert.

    python -m bench.pipeline --n 3000 --out pipeline.json [--loop uvloop]

A real ``Router`` (the project's settings, plugins and journal on a temporary DATA_DIR,
``journal_synchronous`` at its default, FULL) takes each alert as the webhook route
hands it over: rate limit, ``parse`` (the raw body), then ``receive`` — HMAC
authentication with the replay cache, the TradingView transform, validation, routing,
the journal's admission, the execution lane, the order's preparation against real
ccxt market data (precision, limits) and the journal's order rows. Only the exchange is
replaced: a null executor answers "filled" at once, without I/O. Alerts are sent one
after another, so each figure is one alert's latency through the pipeline, including
the waits for the journal's and the replay cache's durable commits (fsync).

Writes JSON: n, p50_us, p90_us, p99_us, mean_us, cpu_us_per_alert (the process's CPU
time, all threads — the database threads' fsync calls included — divided by n),
loop_cpu_us_per_alert (the event loop's thread alone), durable_commits_per_alert (commits
with synchronous=FULL the alert waits for, one after another), fsync_commit_us (the p50
of one such commit on this disk, measured alone: their product is the floor that
durability puts under the pipeline's latency), loop.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import hmac
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from core.config import PluginsFile, Settings
from core.hooks.manager import hookimpl
from core.pipeline.models import Alert, InboundRequest, OrderRequest, OrderResult
from core.pipeline.router import Router
from core.trading.execution import Executor
from core.trading.markets import MarketBook, prepare_order
from plugins.exchanges.paper.plugin import DEFAULT_MARKETS, paper_market

SECRET = "bench-pipeline-secret-0123456789abcdef"
ACCOUNT = "bench"


class NullExecutor(Executor):
    """An account whose exchange fills every order at once, without I/O; its markets are
    the paper markets (BTC/USDT and friends), so orders are prepared for real."""

    route = "null"

    def __init__(self) -> None:
        super().__init__(ACCOUNT, "binance")
        self.markets = MarketBook("binance", [paper_market(s, m) for s, m in DEFAULT_MARKETS.items()])

    async def prepare(self, alert: Alert, client_order_id: str) -> OrderRequest:
        return prepare_order(
            self.markets,
            alert,
            account=self.account,
            client_order_id=client_order_id,
            default_type="spot",
            reference_price=lambda symbol: DEFAULT_MARKETS[symbol].last_price,
        )

    async def submit(self, order: OrderRequest) -> OrderResult:
        price = order.price or order.reference_price
        return OrderResult(
            account=self.account,
            exchange=self.exchange,
            symbol=order.symbol,
            side=order.side,
            order_type=order.order_type,
            amount=order.amount,
            price=price,
            order_id=order.client_order_id[-12:],
            client_order_id=order.client_order_id,
            status="filled",
            filled=order.amount,
            average=price,
            route=self.route,
        )


class NullExchangePlugin:
    @hookimpl
    def register_executors(self, register, router) -> None:
        register(ACCOUNT, NullExecutor())


def _signed(body: bytes) -> dict[str, str]:
    ts = str(int(time.time()))
    signature = hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {
        "content-type": "application/json",
        "x-timestamp": ts,
        "x-signature": signature,
        "content-length": str(len(body)),
        "host": "127.0.0.1",
    }


def _body(alert_id: str, side: str) -> bytes:
    return json.dumps(
        {
            "id": alert_id,
            "account": ACCOUNT,
            "ticker": "BINANCE:BTCUSDT",
            "action": side,
            "contracts": "0.001",
            "price": "50000",
        },
        separators=(",", ":"),
    ).encode()


def fsync_commit_us(directory: Path, n: int = 300) -> float:
    """p50 of one small write committed with synchronous=FULL (WAL) in ``directory``: the
    price of one durable commit on this disk."""
    import sqlite3

    path = directory / "fsync-probe.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS t (v TEXT)")
        times = []
        for _ in range(n):
            started = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (?)", ("x" * 200,))
            conn.execute("COMMIT")
            times.append((time.perf_counter() - started) * 1e6)
    finally:
        conn.close()
    return statistics.median(times)


class CommitCounter:
    """Counts the batches that the FULL databases (journal, replay cache) commit on their
    threads — run there whole (``_execute``), or run on the loop and committed there
    (``_commit``, quick jobs): at concurrency 1 each is one durable commit (one fsync) the
    alert waits for."""

    def __init__(self) -> None:
        from core.store.sqlite.database import SqliteDatabase

        self.count = 0
        self.enabled = False
        counter = self

        def counted(original):
            def counting(db, *args):
                if counter.enabled and db._synchronous.upper() == "FULL":
                    counter.count += 1
                return original(db, *args)

            return counting

        # bench instrumentation only, in this process
        SqliteDatabase._execute = counted(SqliteDatabase._execute)  # type: ignore[method-assign]
        SqliteDatabase._commit = counted(SqliteDatabase._commit)  # type: ignore[method-assign]


def _write_plugins_file(data_dir: Path, journal_synchronous: str) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "plugins.yaml").write_text(
        f"router:\n  plugin_dir: ./no_local_plugins_here\n  journal_synchronous: {journal_synchronous}\n"
    )


async def measure(n: int, warmup: int, data_dir: Path, profiler=None, journal_synchronous: str = "FULL") -> dict:
    environ = {
        "WEBHOOK_SECRET": SECRET,
        "DATA_DIR": str(data_dir),
        "PLUGINS_FILE": str(data_dir / "plugins.yaml"),
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT": "1000000/second",
        "DEFAULT_EXCHANGE": "paper",
    }
    _write_plugins_file(data_dir, journal_synchronous)
    settings = Settings.from_env(env_file=None, environ=environ)  # a named PLUGINS_FILE must exist
    plugins_file = PluginsFile.load(settings.plugins_file, settings.environ)
    from core.observability.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    router = Router(settings, plugins_file, extra_plugins=[("null_exchange", NullExchangePlugin())])
    await router.start()
    gc.collect()
    gc.freeze()  # as core.web.app does once the router has started
    commits = CommitCounter()
    run_id = f"{time.time_ns():x}"
    latencies: list[float] = []
    try:
        requests = [(_body(f"pipe-{run_id}-{i}", "buy" if i % 2 == 0 else "sell")) for i in range(warmup + n)]
        cpu_started = loop_cpu_started = 0.0
        for i, body in enumerate(requests):
            if i == warmup:
                cpu_started, loop_cpu_started = time.process_time(), time.thread_time()
                commits.enabled = True
                if profiler is not None:
                    profiler.enable()
            headers = _signed(body)  # the sender's work, outside the timed part
            started = time.perf_counter()
            await router.limits.before_request("127.0.0.1")
            payload = await router.parse(body, "application/json")
            inbound = InboundRequest(
                body=body,
                headers=headers,
                remote_addr="127.0.0.1",
                scheme="http",
                payload=payload,
                received_at=time.time(),
                query={},
            )
            outcome = await router.receive(inbound)
            elapsed = time.perf_counter() - started
            if outcome.status != 200:
                raise RuntimeError(f"alert {i}: {outcome.status} {outcome.body}")
            if i >= warmup:
                latencies.append(elapsed * 1e6)
        cpu = time.process_time() - cpu_started
        loop_cpu = time.thread_time() - loop_cpu_started
        commits.enabled = False
        if profiler is not None:
            profiler.disable()
    finally:
        await router.stop()
    latencies.sort()
    return {
        "n": n,
        "p50_us": statistics.median(latencies),
        "p90_us": latencies[int(0.9 * (len(latencies) - 1))],
        "p99_us": latencies[int(0.99 * (len(latencies) - 1))],
        "mean_us": statistics.fmean(latencies),
        "cpu_us_per_alert": cpu * 1e6 / n,
        "loop_cpu_us_per_alert": loop_cpu * 1e6 / n,
        "journal_synchronous": router.options.journal_synchronous,
        "durable_commits_per_alert": commits.count / n,
        "fsync_commit_us": fsync_commit_us(data_dir),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--journal-synchronous", choices=("FULL", "NORMAL"), default="FULL")
    parser.add_argument("--data-dir", help="default: a temporary directory")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        data_dir = Path(args.data_dir or tmp)
        data_dir.mkdir(parents=True, exist_ok=True)
        coro = measure(args.n, args.warmup, data_dir, journal_synchronous=args.journal_synchronous)
        if args.loop == "uvloop":
            import uvloop

            result = uvloop.run(coro)
        else:
            result = asyncio.run(coro)
    result["loop"] = args.loop
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
