"""Redis versions of the replay cache and the token store (rate limits: ``core.store.redis.rate``).

Same protocols and guarantees as the SQLite ones (``core.store.replay``, ``core.store.tokens``),
over one Redis shared by every worker and machine. Connection
failures raise ``StoreUnavailable`` (503: nothing was sent; a resend is safe).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.errors import StoreUnavailable
from core.store.tokens import (
    ID_LENGTH,
    TokenInfo,
    check_issue,
    check_scopes,
    hash_token,
    join_accounts,
    new_token,
    split_accounts,
)


def redis_client(url: str, **options: Any) -> aioredis.Redis:
    """``options`` (e.g. ``ssl_cert_reqs``, see ``core.store.factory.redis_options``) go to redis-py."""
    return aioredis.Redis.from_url(
        url, socket_timeout=2.0, socket_connect_timeout=1.0, health_check_interval=10, decode_responses=True, **options
    )


async def guarded(awaitable: Any) -> Any:
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


class RedisReplayCache:
    """``SET key NX`` with an absolute expiry: one atomic step on the Redis server."""

    def __init__(self, client: aioredis.Redis, prefix: str):
        self.client = client
        self.prefix = prefix

    async def add_if_absent(self, key: str, expires_at: float | None) -> bool:
        kwargs = {"pxat": int(expires_at * 1000)} if expires_at is not None else {}
        if expires_at is not None and expires_at <= time.time():
            return True  # already outside the window: nothing to remember (the timestamp check refuses it)
        return bool(await guarded(self.client.set(f"{self.prefix}:r:{key}", "1", nx=True, **kwargs)))

    async def close(self) -> None:
        pass  # the backend owns the client


class RedisTokenStore:
    """Tokens as hashes ``{p}:t:<sha256>`` (expiring with the token) plus an index set."""

    def __init__(self, client: aioredis.Redis, prefix: str, *, clock: Callable[[], float] = time.time):
        self.client = client
        self.prefix = prefix
        self._clock = clock

    def _key(self, digest: str) -> str:
        return f"{self.prefix}:t:{digest}"

    @property
    def _index(self) -> str:
        return f"{self.prefix}:tokens"

    @staticmethod
    def _info(digest: str, row: dict[str, str]) -> TokenInfo:
        return TokenInfo(
            id=digest[:ID_LENGTH],
            label=row.get("label") or None,
            created_at=float(row["created_at"]),
            expires_at=float(row["expires_at"]),
            last_used_at=float(row["last_used_at"]) if row.get("last_used_at") else None,
            accounts=split_accounts(row.get("accounts")),
            scopes=split_accounts(row.get("scopes")),
        )

    async def issue(
        self,
        *,
        ttl: float,
        label: str | None = None,
        token: str | None = None,
        accounts: tuple[str, ...] = (),
        scopes: tuple[str, ...] = (),
    ) -> tuple[str, TokenInfo]:
        accounts = check_issue(ttl, label, accounts)
        scopes = check_scopes(scopes)
        token = token or new_token()
        digest, now = hash_token(token), self._clock()
        row = {
            "label": label or "",
            "created_at": repr(now),
            "expires_at": repr(now + ttl),
            "accounts": join_accounts(accounts) or "",
            "scopes": join_accounts(scopes) or "",
        }
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self._key(digest), mapping=row)
        pipe.expireat(self._key(digest), int(now + ttl) + 1)
        pipe.sadd(self._index, digest)
        await guarded(pipe.execute())
        return token, self._info(digest, row)

    async def verify(self, token: str) -> TokenInfo | None:
        digest = hash_token(token)  # always hashed: every presented value costs the same
        row = await guarded(self.client.hgetall(self._key(digest)))
        now = self._clock()
        if not row:
            return None
        if float(row["expires_at"]) <= now:
            await self._delete(digest)
            return None
        await guarded(self.client.hset(self._key(digest), "last_used_at", repr(now)))
        return self._info(digest, {**row, "last_used_at": repr(now)})

    async def _delete(self, digest: str) -> bool:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self._key(digest))
        pipe.srem(self._index, digest)
        deleted, _ = await guarded(pipe.execute())
        return bool(deleted)

    async def revoke(self, token: str) -> bool:
        return await self._delete(hash_token(token))

    async def revoke_id(self, token_id: str) -> bool:
        matches = [d for d in await guarded(self.client.smembers(self._index)) if d.startswith(token_id)]
        if len(token_id) != ID_LENGTH or len(matches) != 1:  # never revoke a guess
            return False
        return await self._delete(matches[0])

    async def list(self) -> list[TokenInfo]:
        infos = []
        for digest in sorted(await guarded(self.client.smembers(self._index))):
            row = await guarded(self.client.hgetall(self._key(digest)))
            if row:
                infos.append(self._info(digest, row))
            else:  # expired by Redis
                await guarded(self.client.srem(self._index, digest))
        return sorted(infos, key=lambda i: (i.created_at, i.id))

    async def close(self) -> None:
        pass
