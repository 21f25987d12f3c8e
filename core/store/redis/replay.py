"""The ``ReplayCache`` on Redis: ``SET key NX`` with an absolute expiry, one atomic step on
the Redis server, shared by every worker and machine. Keys: ``{p}:r:{key}``."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from core.store.redis.client import guarded


class RedisReplayCache:
    def __init__(self, client: aioredis.Redis, prefix: str):
        self.client = client
        self.prefix = prefix

    async def add_if_absent(self, key: str, expires_at: float | None) -> bool:
        if expires_at is None:
            return bool(await guarded(self.client.set(f"{self.prefix}:r:{key}", "1", nx=True)))
        if expires_at <= time.time():
            return True  # already outside the window: nothing to remember (the timestamp check refuses it)
        return bool(await guarded(self.client.set(f"{self.prefix}:r:{key}", "1", nx=True, pxat=int(expires_at * 1000))))

    async def close(self) -> None:
        pass  # the backend owns the client
