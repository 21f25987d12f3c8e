"""Helpers shared by the tests: signing, free ports, and a real server process."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-webhook-secret-0123456789"
METRICS_TOKEN = "test-metrics-token-0123456789"
# What GET / needs to show the full health (accounts, plugins) and GET /metrics to answer.
MONITOR = {"Authorization": f"Bearer {METRICS_TOKEN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_SIGNED: set[tuple[str, str, int]] = set()


def signed_headers(
    body: bytes, secret: str = SECRET, timestamp: int | None = None, *, bound: bool = True
) -> dict[str, str]:
    """Headers of a signed request. A signature is accepted once (issue 3), so, like a real
    sender re-signing a resend, a second call for the same body within the same second
    signs with an earlier timestamp (well inside the window); an exact replay is made by
    sending the same headers again."""
    if timestamp is None and bound:
        timestamp = int(time.time())
        digest = hashlib.sha256(body).hexdigest()
        while (secret, digest, timestamp) in _SIGNED:
            timestamp -= 1
        _SIGNED.add((secret, digest, timestamp))
    ts = str(int(time.time()) if timestamp is None else timestamp)
    message = ts.encode() + b"." + body if bound else body
    return {
        "Content-Type": "application/json",
        "X-Timestamp": ts,
        "X-Signature": hmac.new(secret.encode(), message, hashlib.sha256).hexdigest(),
    }


def alert_body(**fields: Any) -> bytes:
    alert = {"symbol": "BINANCE:BTCUSDT", "side": "buy", "amount": "0.001", "price": "50000"}
    alert.update(fields)
    return json.dumps({k: v for k, v in alert.items() if v is not None}).encode()


def base_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """A clean environment for a server: nothing leaks in from the developer's shell."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if not (data_dir / "plugins.yaml").exists():
        (data_dir / "plugins.yaml").touch()  # PLUGINS_FILE names it: a named file must exist
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "SYSTEMROOT", "TMPDIR")}
    env.update(
        {
            "WEBHOOK_SECRET": SECRET,
            "METRICS_TOKEN": METRICS_TOKEN,
            "DEFAULT_EXCHANGE": "paper",
            "DATA_DIR": str(data_dir),
            "PLUGINS_FILE": str(data_dir / "plugins.yaml"),
            "LOG_LEVEL": "INFO",
            "RATE_LIMIT": "1000/second",
            "AUTH_FAILURE_LIMIT": "1000/second",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


class ServerProcess:
    """hypercorn serving ``core.web.app:app`` on a free loopback port, in its own process."""

    def __init__(
        self,
        env: dict[str, str],
        cwd: Path,
        *,
        port: int | None = None,
        workers: int = 1,
        extra_args: list[str] | None = None,
    ):
        self.env = env
        self.cwd = cwd
        self.chosen_port = port is not None
        self.port = port or free_port()
        self.workers = workers
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen | None = None
        self.log_path = cwd / f"server-{self.port}.log"
        self.preexec = None  # run in the server process before it starts (e.g. a lower file limit)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> ServerProcess:
        for attempt in range(3):
            try:
                return self._start(timeout)
            except RuntimeError:
                # A port free when chosen can be taken before hypercorn binds it (another test,
                # another pytest-xdist worker): choose again, unless the test chose the port.
                if self.chosen_port or attempt == 2 or "Address already in use" not in self.log():
                    raise
                self._log.close()
                self.port = free_port()
                self.log_path = self.cwd / f"server-{self.port}.log"
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> ServerProcess:
        # The project's hypercorn settings (hypercorn.toml), as the Procfile and `make run` use them.
        cmd = [
            sys.executable,
            "-m",
            "hypercorn",
            "--config",
            str(ROOT / "hypercorn.toml"),
            "core.web.app:app",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(self.workers),
            "--graceful-timeout",
            "5",
            *self.extra_args,
        ]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.cwd,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=self.preexec,
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)  # polling the real condition (the port answering), bounded
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """kill -9 the whole process group (hypercorn and its workers)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
