"""The benchmark's targets and their processes: the emulator, the server and the limit, their
configuration, and the requests and load runs that measure them (``python -m bench``)."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import secrets
import time
from pathlib import Path
from typing import Any

import yaml

from bench.emulator import bench_tickers
from bench.loadgen import alert_body
from bench.processes import PYTHON, ROOT, Process, children, clean_env, free_port

API_KEY, API_SECRET = "bench-key", "bench-secret-0123456789"
REST_ACCOUNT, WS_ACCOUNT = "bench", "bench_ws"
# The same for the server and the limit. One worker: figures are per worker.
HYPERCORN_ARGS = ["--workers", "1", "--graceful-timeout", "5"]
SERVER_ENV_NOTE = "LOG_LEVEL=WARNING, no access log, RATE_LIMIT=1000000/second (never refuses)"
TICKERS = ",".join(bench_tickers())


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
    emulator = Process(
        "emulator",
        [PYTHON, "-m", "bench.emulator", "--key", API_KEY, "--secret", API_SECRET],
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
    cmd = [PYTHON, "-m", "hypercorn", "core.web.app:app", "--bind", f"127.0.0.1:{port}", *HYPERCORN_ARGS, *extra_args]
    return Process(name, cmd, env=env, cwd=data, log_dir=tmp), port


def limit_process(
    name: str,
    tmp: Path,
    webhook_secret: str,
    emulator_url: str,
    extra_args: list[str],
    journal_synchronous: str = "FULL",
) -> tuple[Process, int]:
    """The limit (``journal_synchronous`` is accepted like the server's and ignored: no journal)."""
    port = free_port()
    env = clean_env(
        BENCH_WEBHOOK_SECRET=webhook_secret,
        BENCH_CCXT_CONFIG=json.dumps(limit_ccxt_config(emulator_url)),
        BENCH_ACCOUNT=REST_ACCOUNT,
    )
    cmd = [
        PYTHON,
        "-m",
        "hypercorn",
        "bench.limit_app:app",
        "--bind",
        f"127.0.0.1:{port}",
        *HYPERCORN_ARGS,
        *extra_args,
    ]
    return Process(name, cmd, env=env, cwd=ROOT, log_dir=tmp), port


def post_alert(port: int, alert_id: str, account: str, webhook_secret: str, timeout: float = 10) -> tuple[int, dict]:
    body = alert_body(alert_id, account, "buy")
    ts = str(int(time.time()))
    signature = hmac.new(webhook_secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(
            "POST",
            "/webhook",
            body=body,
            headers={"Content-Type": "application/json", "X-Timestamp": ts, "X-Signature": signature},
        )
        response = conn.getresponse()
        text = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(text)
    except ValueError:
        return response.status, {"raw": text[:300].decode("utf-8", "replace")}


def first_filled_order(
    process: Process, port: int, account: str, webhook_secret: str, answered: list[tuple[str, str]], timeout: float
) -> float:
    """Seconds from the process's spawn to the first 200 answer carrying a filled order.

    Polls every 5 ms (bounded): a refused connection means not listening yet; any other
    answer is retried with a fresh alert id.
    """
    ends = time.monotonic() + timeout
    attempt = 0
    last = ""
    while time.monotonic() < ends:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited:\n{process.log()}")
        attempt += 1
        alert_id = f"start-{process.name}-{attempt}-{time.time_ns()}"
        try:
            status, answer = post_alert(port, alert_id, account, webhook_secret)
        except (ConnectionError, OSError) as exc:
            last = f"{type(exc).__name__}"
            time.sleep(0.005)
            continue
        if 200 <= status < 300:
            answered.append((account, alert_id))
        if status == 200 and answer.get("status") == "filled":
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
    ]
    process = Process(
        f"loadgen-{label}", cmd, env=clean_env(BENCH_WEBHOOK_SECRET=webhook_secret), cwd=ROOT, log_dir=tmp
    ).start()
    try:
        assert process.proc is not None
        code = process.proc.wait(timeout=min(deadline.left(), 30 + n * 0.2))
    finally:
        process.stop()
    if code != 0:
        raise RuntimeError(f"load generator {label} exited with {code}:\n{process.log()}")
    return json.loads(out.read_text())
