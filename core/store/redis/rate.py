"""Rate-limit counters in Redis (STATE_URL): the ``limits`` library's Redis storage, its calls
grouped with the other stores' in one pipeline per round trip.

Its moving window is one Lua script per hit (``acquire_moving_window.lua``: count the
window, then push the entry, trim it to the limit and set its expiry), atomic on the
server, so every worker and machine sharing the Redis counts against the same budgets.
The scripts and keys are limits' own (under ``<STATE_PREFIX>:rl:``); what this class
changes is how they travel: through the backend's ``Pipelines`` (``core.store.redis.batch``),
so the hits and window reads of concurrent requests share round trips with each other and
with the journal's writes, each still one atomic script. A window read (``get_moving_window``)
queued while an identical one waits for its pipeline shares its answer. ``refund`` (the
newest entry of a window given back: ``LPOP``, as limits keeps a window as a list newest
first) is what ``core.web.ratelimit`` adds to limits' interface. Errors reach the caller as
limits' ``StorageError`` wrapping redis-py's (``core.web.ratelimit``: 503).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from limits.aio.storage import RedisStorage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.errors import StorageError
from redis.exceptions import RedisError

from core.errors import StoreUnavailable
from core.store.redis.batch import Pipelines

T = TypeVar("T")


async def _storage_errors(reply: Awaitable[T]) -> T:
    """A Redis failure as limits' ``StorageError``, wrapping redis-py's own error (the
    ``StoreUnavailable`` of ``guarded`` keeps it as its context)."""
    try:
        return await reply
    except StoreUnavailable as exc:
        raise StorageError(exc.__context__ if isinstance(exc.__context__, Exception) else exc) from exc
    except RedisError as exc:
        raise StorageError(exc) from exc


class RedisRateStorage(RedisStorage):
    def __init__(self, client: aioredis.Redis, prefix: str, pipelines: Pipelines | None = None) -> None:
        self.client = client
        self.pipelines = pipelines or Pipelines(client)
        pool: Any = client.connection_pool
        super().__init__(
            "async+redis://",
            implementation="redispy",
            key_prefix=f"{prefix}:rl",
            wrap_exceptions=True,
            connection_pool=pool,
        )
        self._scripts = cast(RedispyBridge, self.bridge)  # limits' scripts, registered on this pool

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        script = self._scripts.lua_acquire_moving_window
        args = [time.time(), limit, expiry, amount]
        call = self.pipelines.call(script, args, [self.bridge.prefixed_key(key)], durable=False)
        return bool(await _storage_errors(call))

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        key = self.bridge.prefixed_key(key)
        timestamp = time.time()
        script = self._scripts.lua_moving_window
        share = ("moving-window", key, limit, expiry)
        call = self.pipelines.call(script, [timestamp - expiry, limit], [key], durable=False, share=share)
        window = await _storage_errors(call)
        if window:
            return float(window[0]), int(window[1])
        return timestamp, 0

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        script = self._scripts.lua_incr_expire
        call = self.pipelines.call(script, [expiry, amount], [self.bridge.prefixed_key(key)], durable=False)
        return int(await _storage_errors(call))

    async def get(self, key: str) -> int:
        return int(await _storage_errors(self.pipelines.command("GET", self.bridge.prefixed_key(key))) or 0)

    async def refund(self, key: str) -> None:
        await _storage_errors(self.pipelines.command("LPOP", self.bridge.prefixed_key(key)))

    async def after_serving(self) -> None:
        pass  # the state backend owns the connection pool
