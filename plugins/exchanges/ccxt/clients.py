"""Clients for alerts that carry their own credentials (the classic payload's apiKey/secret).

One executor per credential set, kept in a bounded LRU keyed by a hash of the credentials
(never the secret itself); an evicted one is closed once no order is using it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import OrderedDict
from typing import TYPE_CHECKING

from core.pipeline.models import Credentials

if TYPE_CHECKING:
    from plugins.exchanges.ccxt.executor import CcxtExecutor


def credentials_fingerprint(exchange: str, credentials: Credentials) -> str:
    """A stable hash of the credentials: the cache key and the account label, never the secret."""
    parts = [
        exchange,
        credentials.api_key.get_secret_value(),
        credentials.secret.get_secret_value(),
        credentials.password.get_secret_value() if credentials.password else "",
    ]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


class CredentialClients:
    """Executors for alerts carrying apiKey/secret: an LRU keyed by a hash of the credentials.

    Bounded; an evicted executor is closed once no order is using it. Concurrent alerts
    with the same new credentials share one client.
    """

    def __init__(self, size: int):
        self.size = size
        self._clients: OrderedDict[str, CcxtExecutor] = OrderedDict()
        self._starting: dict[str, asyncio.Future] = {}

    def __len__(self) -> int:
        return len(self._clients)

    async def get(self, key: str, make) -> CcxtExecutor:
        executor = self._clients.get(key)
        if executor is not None:
            self._clients.move_to_end(key)
            return executor
        starting = self._starting.get(key)
        if starting is not None:
            return await asyncio.shield(starting)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._starting[key] = future
        try:
            executor = await make()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no warning when no one else waited
            raise
        finally:
            self._starting.pop(key, None)
        self._clients[key] = executor
        future.set_result(executor)
        while len(self._clients) > self.size:
            _, evicted = self._clients.popitem(last=False)
            evicted.retire()
        return executor

    async def close_all(self) -> None:
        clients, self._clients = list(self._clients.values()), OrderedDict()
        for executor in clients:
            with contextlib.suppress(Exception):
                await executor.close()
