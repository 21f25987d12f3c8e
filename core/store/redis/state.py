"""The rate limiter's store on Redis (``core.web.ratelimit``), one of the stores
``core.store.redis.backend.RedisBackend`` opens. (The replay cache, tokens and risk store
are in ``replay.py``, ``tokens.py`` and ``risk.py`` next to this module.) Connection failures
raise ``StoreUnavailable`` (503: nothing was sent; a resend is safe).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from quart_rate_limiter.store import RateLimiterStoreABC

from core.store.redis.client import guarded, redis_client

__all__ = ["RedisRateStore", "guarded", "redis_client"]  # the client's helpers, for callers that import them here


class RedisRateStore(RateLimiterStoreABC):
    """quart-rate-limiter's Redis store, with keys that expire once they mean nothing."""

    def __init__(self, client: aioredis.Redis, prefix: str):
        self.client = client
        self.prefix = prefix

    async def get(self, key: str, default: datetime) -> datetime:
        value = await guarded(self.client.get(f"{self.prefix}:rl:{key}"))
        return default if value is None else datetime.fromtimestamp(float(value), UTC)

    async def set(self, key: str, tat: datetime) -> None:
        # A theoretical arrival time in the past means the same as no entry.
        await guarded(
            self.client.set(f"{self.prefix}:rl:{key}", repr(tat.timestamp()), pxat=int(tat.timestamp() * 1000) + 1000)
        )

    # GCRA over several keys in one server-side step (see core.web.ratelimit.gcra_reserve):
    # all charged or none. ARGV: now, then inverse and period per key. Returns the wait
    # ("0": charged) as a string, Lua numbers being truncated to integers on the way out.
    _RESERVE = """
    local now = tonumber(ARGV[1])
    local wait = 0
    local tats = {}
    for i, key in ipairs(KEYS) do
      local tat = tonumber(redis.call('GET', key) or '0')
      if tat < now then tat = now end
      tats[i] = tat + tonumber(ARGV[2 * i])
      local over = tats[i] - now - tonumber(ARGV[2 * i + 1])
      if over > wait then wait = over end
    end
    if wait > 0 then return string.format('%.6f', wait) end
    for i, key in ipairs(KEYS) do
      redis.call('SET', key, string.format('%.6f', tats[i]), 'PXAT', math.floor(tats[i] * 1000) + 1000)
    end
    return '0'
    """
    _RELEASE = """
    for i, key in ipairs(KEYS) do
      local tat = tonumber(redis.call('GET', key))
      if tat then
        tat = tat - tonumber(ARGV[i + 1])
        if tat <= tonumber(ARGV[1]) then redis.call('DEL', key)
        else redis.call('SET', key, string.format('%.6f', tat), 'PXAT', math.floor(tat * 1000) + 1000) end
      end
    end
    return 0
    """

    async def reserve(self, entries: list[tuple[str, float, float]], now: float) -> float:
        args: list[Any] = [repr(now)]
        for _, inverse, period in entries:
            args += [repr(inverse), repr(period)]
        keys = [f"{self.prefix}:rl:{key}" for key, _, _ in entries]
        return float(await guarded(self.client.eval(self._RESERVE, len(keys), *keys, *args)))

    async def release(self, entries: list[tuple[str, float, float]], now: float) -> None:
        keys = [f"{self.prefix}:rl:{key}" for key, _, _ in entries]
        await guarded(self.client.eval(self._RELEASE, len(keys), *keys, repr(now), *[repr(i) for _, i, _ in entries]))

    async def before_serving(self) -> None:
        pass

    async def after_serving(self) -> None:
        pass
