"""The ``TokenStore`` on Redis, shared by every worker and machine (``core.store.tokens``
says what a token is). Keys: ``{p}:t:{sha256}`` (a hash, expiring with the token) and the
index set ``{p}:tokens``."""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import redis.asyncio as aioredis

from core.store.redis.client import guarded
from core.store.tokens import (
    ID_LENGTH,
    TokenInfo,
    check_issue,
    check_scopes,
    hash_token,
    is_token_id,
    join_accounts,
    new_token,
    split_accounts,
)


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
    def _info(digest: str, row: Mapping[str, str]) -> TokenInfo:
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
        pipe.hset(self._key(digest), mapping=cast("dict[Any, Any]", row))
        pipe.expireat(self._key(digest), int(now + ttl) + 1)
        pipe.sadd(self._index, digest)
        await guarded(pipe.execute())
        return token, self._info(digest, row)

    async def verify(self, token: str) -> TokenInfo | None:
        digest = hash_token(token)  # always hashed: every presented value costs the same
        row = await self._row(digest)
        now = self._clock()
        if not row:
            return None
        if float(row["expires_at"]) <= now:
            await self._delete(digest)
            return None
        await guarded(self.client.hset(self._key(digest), "last_used_at", repr(now)))
        return self._info(digest, {**row, "last_used_at": repr(now)})

    async def _row(self, digest: str) -> dict[str, str]:
        return cast("dict[str, str]", await guarded(self.client.hgetall(self._key(digest))))  # decode_responses

    async def _digests(self) -> set[str]:
        return cast("set[str]", await guarded(self.client.smembers(self._index)))

    async def _delete(self, digest: str) -> bool:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self._key(digest))
        pipe.srem(self._index, digest)
        deleted, _ = await guarded(pipe.execute())
        return bool(deleted)

    async def revoke(self, token: str) -> bool:
        return await self._delete(hash_token(token))

    async def revoke_id(self, token_id: str) -> bool:
        if not is_token_id(token_id):
            return False
        matches = [d for d in await self._digests() if d.startswith(token_id)]
        if len(matches) != 1:  # never revoke a guess
            return False
        return await self._delete(matches[0])

    async def close(self) -> None:
        pass  # the backend owns the client

    async def list(self) -> builtins.list[TokenInfo]:
        infos: builtins.list[TokenInfo] = []
        for digest in sorted(await self._digests()):
            row = await self._row(digest)
            if row:
                infos.append(self._info(digest, row))
            else:  # expired by Redis
                await guarded(self.client.srem(self._index, digest))
        return sorted(infos, key=lambda i: (i.created_at, i.id))
