"""``simulate`` and ``simulate_tradingview.py``, its classic name: the alert TradingView would
send, signed with WEBHOOK_SECRET from .env, to 127.0.0.1:$PORT by default."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.cli import main
from tests.support import ROOT

SECRET = "simulate-secret-0123456789"


class Recorder(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, str], bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, dict(self.headers), body))
        answer = json.dumps({"status": "filled"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[int, list[tuple[str, dict[str, str], bytes]]]]:
    """A stand-in router on a free loopback port that records what it receives."""
    received: list[tuple[str, dict[str, str], bytes]] = []
    handler = type("Handler", (Recorder,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()
        thread.join()


def test_simulate_tradingview_py_signs_with_the_secret_of_dotenv_and_posts_to_port(tmp_path, webhook):
    port, received = webhook
    (tmp_path / ".env").write_text(f"WEBHOOK_SECRET={SECRET}\nPORT={port}\n")
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "simulate_tradingview.py")],
        cwd=tmp_path,
        env=env | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("HTTP 200")
    [(path, headers, body)] = received
    assert path == "/webhook" and headers["Content-Type"] == "application/json"
    expected = hmac.new(SECRET.encode(), headers["X-Timestamp"].encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["X-Signature"] == expected
    alert = json.loads(body)
    assert {k: alert[k] for k in ("exchange", "symbol", "side", "amount", "price")} == {
        "exchange": "BINANCE",
        "symbol": "BINANCE:BTCUSDT",
        "side": "buy",
        "amount": "0.001",
        "price": "50000",
    }
    assert alert["id"].startswith("sim-")


def test_simulate_in_token_mode_and_the_classic_signature(tmp_path, monkeypatch, webhook, capsys):
    port, received = webhook
    monkeypatch.chdir(tmp_path)
    url = ["--url", f"http://127.0.0.1:{port}/webhook"]
    assert main(["simulate", *url, "--token", "tok-123", "--side", "sell", "--account", "main", "--id", "a1"]) == 0
    assert main(["simulate", *url, "--secret", SECRET, "--body-only"]) == 0
    (_, token_headers, token_body), (_, signed_headers, signed_body) = received
    assert token_headers["Content-Type"].startswith("text/plain") and "X-Signature" not in token_headers
    assert json.loads(token_body) == {
        "token": "tok-123",
        "exchange": "BINANCE",
        "symbol": "BINANCE:BTCUSDT",
        "side": "sell",
        "amount": "0.001",
        "price": "50000",
        "id": "a1",
        "account": "main",
    }
    assert signed_headers["X-Signature"] == hmac.new(SECRET.encode(), signed_body, hashlib.sha256).hexdigest()


def test_simulate_without_a_secret_or_a_server_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WEBHOOK_SECRET", raising=False)
    assert main(["simulate"]) == 2
    assert "no WEBHOOK_SECRET" in capsys.readouterr().err
    assert main(["simulate", "--secret", "s", "--url", "http://127.0.0.1:9/webhook", "--timeout", "5"]) == 1
    assert "cannot reach http://127.0.0.1:9/webhook" in capsys.readouterr().err


def test_simulate_tradingview_py_needs_only_the_standard_library(tmp_path, webhook):
    port, received = webhook
    done = subprocess.run(
        [
            sys.executable,
            "-S",
            str(ROOT / "simulate_tradingview.py"),
            "--secret",
            SECRET,
            "--url",
            f"http://127.0.0.1:{port}/",
        ],
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert len(received) == 1
