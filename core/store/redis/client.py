"""The Redis connection every Redis store shares, and how its failures surface.

A call that cannot reach Redis raises ``StoreUnavailable`` (503: nothing was done; a resend
is safe), never redis-py's own errors (``guarded``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.errors import StoreUnavailable

T = TypeVar("T")


def redis_client(url: str, **options: Any) -> aioredis.Redis:
    """``options`` (e.g. ``ssl_cert_reqs``, see ``core.store.factory.redis_options``) go to redis-py."""
    return aioredis.Redis.from_url(
        url, socket_timeout=2.0, socket_connect_timeout=1.0, health_check_interval=10, decode_responses=True, **options
    )


async def guarded(awaitable: Awaitable[T]) -> T:
    """Await a Redis call; a lost connection becomes StoreUnavailable (503).

    redis-py reports a call cancelled mid-flight as a connection error; while the task is
    being cancelled that is the cancellation, and it must stay one (a loop catching
    StoreUnavailable would otherwise never stop).
    """
    try:
        return await awaitable
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError() from exc
        raise StoreUnavailable(f"the state store (Redis) is unavailable: {type(exc).__name__}") from None
