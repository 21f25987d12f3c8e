"""Rate-limit counters in Redis (STATE_URL): the ``limits`` library's own Redis storage.

Its moving window is one Lua script per hit (``acquire_moving_window.lua``: count the
window, then push the entry, trim it to the limit and set its expiry), atomic on the
server, so every worker and machine sharing the Redis counts against the same budgets.
It runs on the deployment's connection pool (redis-py), under ``<STATE_PREFIX>:rl:``.
``refund`` (the newest entry of a window given back: ``LPOP``, as limits keeps a window
as a list newest first) is what ``core.web.ratelimit`` adds to limits' interface.
Errors reach the caller as limits' ``StorageError`` (``core.web.ratelimit``: 503).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from limits.aio.storage import RedisStorage
from limits.errors import StorageError


class RedisRateStorage(RedisStorage):
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        pool: Any = client.connection_pool
        super().__init__(
            "async+redis://",
            implementation="redispy",
            key_prefix=f"{prefix}:rl",
            wrap_exceptions=True,
            connection_pool=pool,
        )

    async def refund(self, key: str) -> None:
        try:
            await self.client.lpop(self.bridge.prefixed_key(key))
        except self.base_exceptions as exc:
            raise StorageError(exc) from exc

    async def after_serving(self) -> None:
        pass  # the state backend owns the connection pool
