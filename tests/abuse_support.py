"""Helpers for the authentication and abuse-protection tests (issue 3).

Clients bound to other loopback source addresses (127.0.0.2, …) give a real server
distinct peers without any header trickery: Linux routes all of 127.0.0.0/8 to lo.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import httpx

from core.store.sqlite.tokens import SqliteTokenStore
from tests.support import ServerProcess, alert_body, base_env

UNAUTHORIZED = {"error": {"code": "unauthorized", "message": "authentication failed"}}


def ledger_count(data_dir: Path) -> int:
    """Rows in the paper ledger (0 before the first order created the file)."""
    path = data_dir / "paper.sqlite3"
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        try:
            return conn.execute("SELECT COUNT(*) FROM paper_orders").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def client_from(address: str = "127.0.0.1", **kwargs) -> httpx.Client:
    """An HTTP client whose connections come from ``address`` (a loopback address)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=15, **kwargs)


async def issue_token_async(
    data_dir: Path,
    *,
    label: str | None = None,
    ttl: float = 3600,
    token: str | None = None,
    clock: Callable[[], float] = time.time,
    accounts: tuple[str, ...] = (),
) -> str:
    """Issue a token straight into a DATA_DIR (as manage_tokens.py does)."""
    store = SqliteTokenStore(data_dir / "tokens.sqlite3", clock=clock)
    try:
        value, _ = await store.issue(ttl=ttl, label=label, token=token, accounts=accounts)
        return value
    finally:
        await store.close()


def issue_token(data_dir: Path, **kwargs) -> str:
    """``issue_token_async`` for tests without an event loop."""
    return asyncio.run(issue_token_async(data_dir, **kwargs))


def revoke_token(data_dir: Path, token: str) -> bool:
    async def run() -> bool:
        store = SqliteTokenStore(data_dir / "tokens.sqlite3")
        try:
            return await store.revoke(token)
        finally:
            await store.close()

    return asyncio.run(run())


def token_body(token: object, **fields) -> bytes:
    """The classic TradingView message: the token in the JSON body."""
    alert = json.loads(alert_body(**fields))
    return json.dumps({"token": token, **alert}).encode()


TEXT_PLAIN = {"Content-Type": "text/plain; charset=utf-8"}  # what TradingView sends


@contextmanager
def running_server(root: Path, **env: str):
    """A real server on ``root/data`` (for module-scoped fixtures)."""
    data = root / "data"
    data.mkdir(exist_ok=True)
    server = ServerProcess(base_env(data, **env), root)
    server.data_dir = data  # type: ignore[attr-defined]
    server.start()
    try:
        yield server
    finally:
        server.stop()
