"""The benchmark's targets and their processes: the emulator, the server, the durable and the
bare limit, the durable limit as a Quart route, the original implementation, their
configuration, and the requests and load runs that measure them (``python -m bench``)."""

from __future__ import annotations

import http.client
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench import original
from bench.emulator import bench_tickers
from bench.loadgen import alert_body, classic_body, signature_headers
from bench.processes import PYTHON, ROOT, Process, children, clean_env, free_port

API_KEY, API_SECRET = "bench-key", "bench-secret-0123456789"
REST_ACCOUNT, WS_ACCOUNT = "bench", "bench_ws"
# The same for the server and the limit. One worker: figures are per worker.
HYPERCORN_ARGS = ["--workers", "1", "--graceful-timeout", "5"]
SERVER_ENV_NOTE = "LOG_LEVEL=WARNING, no access log, RATE_LIMIT=1000000/second (never refuses)"
TICKERS = ",".join(bench_tickers())
QUART_LIMIT = "bench.quart_limit_app:app"  # the durable limit as a Quart route (target "quart")
CLASSIC = "classic"  # the account recorded for the classic payload's 2xx answers (counted, not matched)


@dataclass
class Target:
    """One server the benchmark measures: how to make its process, what it is sent."""

    name: str  # server, durable, limit, quart, original, redis, dashboard
    make: Callable[[str], tuple[Process, int]]  # a process name → (the process, not started; its port)
    account: str = REST_ACCOUNT
    payload: str = "tradingview"  # or "classic": the original implementation's
    process: Process | None = None
    port: int = 0

    def launch(self, name: str) -> Process:
        self.process, self.port = self.make(name)
        return self.process.start()


class Deadline:
    def __init__(self, seconds: float):
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError("the benchmark ran out of time (--timeout)")
        return left


def say(text: str) -> None:
    print(text, flush=True)


# ---------------------------------------------------------------- configuration


def ccxt_passthrough(emulator_url: str) -> dict[str, Any]:
    """The ``ccxt:`` mapping of the benchmark accounts: the emulator's urls and options."""
    from emulator.ccxt_config import ccxt_config

    config = ccxt_config("binance", emulator_url, api_key=API_KEY, secret=API_SECRET, match_production_errors=False)
    config.pop("apiKey"), config.pop("secret")
    config["options"].pop("fetchMarkets", None)  # the account's market_types decide
    return config


def server_plugins_yaml(emulator_url: str, journal_synchronous: str = "FULL") -> str:
    account = {
        "exchange": "binance",
        "api_key": API_KEY,
        "secret": API_SECRET,
        "rate_limit": False,
        "market_types": ["spot"],
        "ccxt": ccxt_passthrough(emulator_url),
    }
    accounts = {REST_ACCOUNT: {**account, "websocket": False}, WS_ACCOUNT: {**account, "websocket": True}}
    router = {"plugin_dir": "./local_plugins", "journal_synchronous": journal_synchronous}
    return yaml.safe_dump({"router": router, "ccxt": {"accounts": accounts}}, sort_keys=False)


def limit_ccxt_config(emulator_url: str) -> dict[str, Any]:
    """What the router's ``build_client`` makes of the same account, for the limit's client."""
    from plugins.exchanges.ccxt.accounts import _deep_merge

    base = {
        "enableRateLimit": False,
        "apiKey": API_KEY,
        "secret": API_SECRET,
        "has": {"fetchCurrencies": False},
        "options": {"fetchMarkets": {"types": ["spot"]}},
    }
    return _deep_merge(base, ccxt_passthrough(emulator_url))


# ---------------------------------------------------------------- processes


def start_emulator(tmp: Path, deadline: Deadline) -> tuple[Process, str]:
    accounts = ["--extra-account", f"{original.API_KEY}:{original.API_SECRET}"]
    emulator = Process(
        "emulator",
        [PYTHON, "-m", "bench.emulator", "--key", API_KEY, "--secret", API_SECRET, *accounts],
        env=clean_env(),
        cwd=ROOT,
        log_dir=tmp,
    ).start()
    url = emulator.wait_for_line(r"listening on (http://\S+)", min(30, deadline.left())).group(1)
    return emulator, url


def server_process(
    name: str,
    tmp: Path,
    webhook_secret: str,
    emulator_url: str,
    extra_args: list[str],
    journal_synchronous: str = "FULL",
    dashboard_password: str = "",
    state_url: str = "",
    state_prefix: str = "",
) -> tuple[Process, int]:
    data = tmp / name
    data.mkdir()
    (data / "plugins.yaml").write_text(server_plugins_yaml(emulator_url, journal_synchronous))
    port = free_port()
    env = clean_env(
        WEBHOOK_SECRET=webhook_secret,
        DATA_DIR=str(data),
        PLUGINS_FILE=str(data / "plugins.yaml"),
        LOG_LEVEL="WARNING",
        RATE_LIMIT="1000000/second",
        DEFAULT_EXCHANGE="paper",
    )
    if dashboard_password:
        env["DASHBOARD_PASSWORD"] = dashboard_password
    if state_url:  # shared state on Redis (journal, replay cache, rate limits), under its own key prefix
        env.update(STATE_URL=state_url, STATE_PREFIX=state_prefix)
    cmd = [PYTHON, "-m", "hypercorn", "core.web.app:app", "--bind", f"127.0.0.1:{port}", *HYPERCORN_ARGS, *extra_args]
    return Process(name, cmd, env=env, cwd=data, log_dir=tmp), port


def limit_process(
    name: str,
    tmp: Path,
    webhook_secret: str,
    emulator_url: str,
    extra_args: list[str],
    journal_synchronous: str = "FULL",
    durable: bool = False,
    app: str = "bench.limit_app:app",
) -> tuple[Process, int]:
    """The bare limit, or with ``durable`` the durable limit (its journal in ``tmp/<name>``);
    ``app`` another ASGI app on the same environment and hypercorn options (``QUART_LIMIT``).
    ``journal_synchronous`` is accepted like the server's and ignored: the durable limit's
    journal is always synchronous=FULL."""
    port = free_port()
    env = clean_env(
        BENCH_WEBHOOK_SECRET=webhook_secret,
        BENCH_CCXT_CONFIG=json.dumps(limit_ccxt_config(emulator_url)),
        BENCH_ACCOUNT=REST_ACCOUNT,
    )
    if durable:
        env["BENCH_DURABLE_DIR"] = str(tmp / name)
    cmd = [
        PYTHON,
        "-m",
        "hypercorn",
        app,
        "--bind",
        f"127.0.0.1:{port}",
        *HYPERCORN_ARGS,
        *extra_args,
    ]
    return Process(name, cmd, env=env, cwd=ROOT, log_dir=tmp), port


def post_alert(
    port: int, alert_id: str, account: str, webhook_secret: str, timeout: float = 10, payload: str = "tradingview"
) -> tuple[int, dict]:
    if payload == "classic":
        body = classic_body(alert_id, original.API_KEY, original.API_SECRET, "buy")
    else:
        body = alert_body(alert_id, account, "buy")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(
            "POST",
            "/webhook",
            body=body,
            headers={"Content-Type": "application/json", **signature_headers(body, webhook_secret, payload)},
        )
        response = conn.getresponse()
        text = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(text)
    except ValueError:
        return response.status, {"raw": text[:300].decode("utf-8", "replace")}


def filled(payload: str, status: int, answer: dict) -> bool:
    """An answer 200 carrying a filled order: the router's and the limits' ``"status":
    "filled"``, the original implementation's ``"status": "success"`` with a closed order."""
    if status != 200:
        return False
    if payload == "classic":
        order = answer.get("order")
        return answer.get("status") == "success" and isinstance(order, dict) and order.get("status") == "closed"
    return answer.get("status") == "filled"


def first_filled_order(target: Target, webhook_secret: str, answered: list[tuple[str, str]], timeout: float) -> float:
    """Seconds from the target process's spawn to the first 200 answer carrying a filled order.

    Polls every 5 ms (bounded): a refused connection means not listening yet; any other
    answer is retried with a fresh alert id. Every 2xx goes into ``answered`` as
    (account, alert id); a classic-payload target's as ("classic", nonce).
    """
    process, port, account = target.process, target.port, target.account
    assert process is not None, "launch() first"
    ends = time.monotonic() + timeout
    attempt = 0
    last = ""
    while time.monotonic() < ends:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited:\n{process.log()}")
        attempt += 1
        alert_id = f"start-{process.name}-{attempt}-{time.time_ns()}"
        try:
            status, answer = post_alert(port, alert_id, account, webhook_secret, payload=target.payload)
        except (ConnectionError, OSError) as exc:
            last = f"{type(exc).__name__}"
            time.sleep(0.005)
            continue
        if 200 <= status < 300:
            answered.append((CLASSIC if target.payload == "classic" else account, alert_id))
        if filled(target.payload, status, answer):
            return time.monotonic() - process.started_at
        last = f"{status} {answer}"
        time.sleep(0.005)
    raise TimeoutError(f"{process.name}: no filled order within {timeout}s (last: {last[:300]}):\n{process.log()}")


def worker_pid(process: Process) -> int:
    """hypercorn's worker (``--workers 1`` spawns one child); the process itself if none."""
    for pid in children(process.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"multiprocessing" in cmdline and b"resource_tracker" not in cmdline:
            return pid
    return process.pid


def load_run(
    label: str,
    port: int,
    n: int,
    concurrency: int,
    account: str,
    webhook_secret: str,
    tmp: Path,
    deadline: Deadline,
    tickers: str = TICKERS,
    payload: str = "tradingview",
) -> dict[str, Any]:
    out = tmp / f"load-{label}.json"
    cmd = [
        PYTHON,
        "-m",
        "bench.loadgen",
        "--url",
        f"http://127.0.0.1:{port}",
        "--n",
        str(n),
        "--concurrency",
        str(concurrency),
        "--account",
        account,
        "--id-prefix",
        f"{label}-{secrets.token_hex(3)}",
        "--out",
        str(out),
        "--tickers",
        tickers,
        "--payload",
        payload,
    ]
    env = clean_env(
        BENCH_WEBHOOK_SECRET=webhook_secret,
        BENCH_CLASSIC_API_KEY=original.API_KEY,
        BENCH_CLASSIC_API_SECRET=original.API_SECRET,
    )
    process = Process(f"loadgen-{label}", cmd, env=env, cwd=ROOT, log_dir=tmp).start()
    try:
        assert process.proc is not None
        code = process.proc.wait(timeout=min(deadline.left(), 30 + n * 0.2))
    finally:
        process.stop()
    if code != 0:
        raise RuntimeError(f"load generator {label} exited with {code}:\n{process.log()}")
    return json.loads(out.read_text())
