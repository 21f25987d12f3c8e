"""One Redis shared by every worker and machine: the backend for scaling out.

All stores share one connection pool (``client``), opened on first use and closed by
``aclose``, and one ``Pipelines`` (``core.store.redis.batch``): the hot path's calls of the
journal, the rate limits and the risk store travel grouped, in one round trip per batch.
Their keys start with the deployment's prefix.
"""

from __future__ import annotations

from typing import Any, Literal

import redis.asyncio as aioredis

from core.store.protocols import RateStore
from core.store.redis.batch import Pipelines
from core.store.redis.client import redis_client
from core.store.redis.journal import RedisJournal
from core.store.redis.risk import RedisRiskStore
from core.store.redis.tokens import RedisTokenStore


class RedisBackend:
    kind: Literal["redis"] = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        retention_days: float,
        wait_replicas: int,
        worker_stale_after: float,
        client_options: dict[str, Any] | None = None,
    ):
        self.url = url
        self.prefix = prefix
        self.retention_days = retention_days
        self.wait_replicas = wait_replicas
        self.worker_stale_after = worker_stale_after
        self.client_options = client_options or {}
        self._client: aioredis.Redis | None = None
        self._pipelines: Pipelines | None = None

    @property
    def client(self) -> aioredis.Redis:
        """The shared client (nothing is connected until a command is sent)."""
        if self._client is None:
            self._client = redis_client(self.url, **self.client_options)
        return self._client

    @property
    def pipelines(self) -> Pipelines:
        """The grouped pipelines every store of this backend sends its hot-path calls through."""
        if self._pipelines is None:
            self._pipelines = Pipelines(self.client, wait_replicas=self.wait_replicas)
        return self._pipelines

    def journal(self) -> RedisJournal:
        return RedisJournal(
            self.client,
            pipelines=self.pipelines,
            prefix=self.prefix,
            retention_days=self.retention_days,
            wait_replicas=self.wait_replicas,
            worker_stale_after=self.worker_stale_after,
        )

    def token_store(self, *, synchronous: str = "FULL") -> RedisTokenStore:
        return RedisTokenStore(self.client, self.prefix)  # durability is Redis's (appendfsync)

    def rate_store(self) -> RateStore:
        from core.store.redis.rate import RedisRateStorage

        return RedisRateStorage(self.client, self.prefix, self.pipelines)

    def risk_store(self) -> RedisRiskStore:
        return RedisRiskStore(self.client, self.prefix, self.pipelines)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
            self._pipelines = None
