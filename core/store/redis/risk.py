"""The ``RiskStore`` on Redis: halts, flattens, order counts and day baselines shared by every
worker and machine; the claim and the count are Lua scripts (one atomic step on the server)."""

from __future__ import annotations

import json
import time
import uuid
from decimal import Decimal
from string import Template
from typing import cast

import redis.asyncio as aioredis

from core.store.redis.batch import Pipelines
from core.store.redis.client import guarded
from core.store.risk import FlattenRecord, HaltRecord
from core.store.states import OPEN_FLATTEN_STATES, FlattenState

_CLAIM = Template("""
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return nil end
local record = cjson.decode(raw)
if record['state'] ~= '$pending' and record['state'] ~= '$running' then return nil end
local now, stale = tonumber(ARGV[3]), tonumber(ARGV[4])
local owner = record['owner']
if owner and owner ~= cjson.null and owner ~= ARGV[2] and tonumber(record['heartbeat_at'] or 0) >= now - stale then
  return nil
end
record['owner'] = ARGV[2]
record['heartbeat_at'] = now
raw = cjson.encode(record)
redis.call('HSET', KEYS[1], ARGV[1], raw)
return raw
""").substitute(pending=FlattenState.PENDING, running=FlattenState.RUNNING)

_COUNT = """
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local seen = redis.call('ZCARD', KEYS[1])
if seen >= limit then return {0, seen} end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000) + 1000)
return {1, seen}
"""


class RedisRiskStore:
    """Keys: ``{p}:risk:halts`` (hash account → JSON), ``{p}:risk:flattens`` (hash id →
    JSON), ``{p}:risk:n:{key}`` (sorted set of order times), ``{p}:risk:b:{account}:{day}``."""

    def __init__(self, client: aioredis.Redis, prefix: str, pipelines: Pipelines | None = None):
        self.client = client
        self.prefix = prefix
        self.pipelines = pipelines or Pipelines(client)
        self._claim = client.register_script(_CLAIM)
        self._count = client.register_script(_COUNT)

    async def aclose(self) -> None:
        pass  # the backend owns the client

    async def halts(self) -> dict[str, HaltRecord]:
        # read before every order: one read shared by the orders queued for the same round trip
        key = f"{self.prefix}:risk:halts"
        raw = await self.pipelines.command("HGETALL", key, share=("HGETALL", key))
        if isinstance(raw, list):  # RESP2: field, value, field, value, ...
            raw = dict(zip(raw[::2], raw[1::2], strict=True))
        return {k: json.loads(v) for k, v in raw.items()}

    async def set_halt(self, account: str, record: HaltRecord) -> None:
        await guarded(self.client.hset(f"{self.prefix}:risk:halts", account, json.dumps(record)))

    async def clear_halt(self, account: str | None) -> list[str]:
        key = f"{self.prefix}:risk:halts"
        if account is None:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hkeys(key)
                pipe.delete(key)
                names, _ = await guarded(pipe.execute())
            return list(names)
        return [account] if await guarded(self.client.hdel(key, account)) else []

    async def save_flatten(self, record: FlattenRecord) -> None:
        await guarded(self.client.hset(f"{self.prefix}:risk:flattens", record["flatten_id"], json.dumps(record)))

    async def flattens(self, *, open_only: bool = False, limit: int = 20) -> list[FlattenRecord]:
        records = [json.loads(v) for v in (await guarded(self.client.hvals(f"{self.prefix}:risk:flattens")))]
        if open_only:
            records = [r for r in records if r["state"] in OPEN_FLATTEN_STATES]
        return sorted(records, key=lambda r: r["requested_at"], reverse=True)[:limit]

    async def claim_flatten(self, flatten_id: str, owner: str, stale_after: float) -> FlattenRecord | None:
        raw = await guarded(
            self._claim(keys=[f"{self.prefix}:risk:flattens"], args=[flatten_id, owner, time.time(), stale_after])
        )
        return json.loads(raw) if raw else None

    async def count_order(self, key: str, limit: int, window: float) -> tuple[bool, int]:
        args = [time.time(), window, limit, uuid.uuid4().hex]
        counted, seen = await self.pipelines.call(self._count, args, [f"{self.prefix}:risk:n:{key}"], durable=False)
        return bool(counted), int(seen)

    async def recent_orders(self, key: str, window: float) -> int:
        return int(await guarded(self.client.zcount(f"{self.prefix}:risk:n:{key}", f"({time.time() - window}", "+inf")))

    async def baseline(self, account: str, day: str, equity: Decimal) -> Decimal:
        key = f"{self.prefix}:risk:b:{account}:{day}"
        await guarded(self.client.set(key, str(equity), nx=True, ex=3 * 86400))
        return Decimal(cast(str, await guarded(self.client.get(key))))
