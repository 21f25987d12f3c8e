"""One process of the rate-limit race in ``test_rate_limit.py`` (spawned: this module is
small so that the processes start fast)."""

from __future__ import annotations

import asyncio
from typing import Any

from core.errors import RateLimited
from core.web.ratelimit import WebhookLimits, parse_rate_limits

RACE_LIMIT = 7
RACE_HITS = 40


def race(backend: str, location: str, start: Any, results: Any) -> None:
    """One process of the race: RACE_HITS concurrent requests against RATE_LIMIT=RACE_LIMIT/minute."""

    async def run() -> int:
        if backend == "sqlite":
            from core.store.sqlite.rate import SqliteRateStorage

            store: Any = SqliteRateStorage(location)
        else:
            from core.store.redis.client import redis_client
            from core.store.redis.rate import RedisRateStorage

            url, prefix = location.split("#")
            client = redis_client(url)
            store = RedisRateStorage(client, prefix)
        budget = WebhookLimits(parse_rate_limits(f"{RACE_LIMIT}/minute"), [], store=store)
        await store.acquire_entry("warm-up", 1, 1)  # connected before the start

        async def hit() -> bool:
            try:
                await budget.before_request("198.51.100.77")
                return True
            except RateLimited:
                return False

        start.wait()
        allowed = sum(await asyncio.gather(*(hit() for _ in range(RACE_HITS))))
        await store.after_serving()
        if backend == "redis":
            await client.aclose()
        return allowed

    results.put(asyncio.run(run()))
