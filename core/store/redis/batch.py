"""Redis calls grouped into pipelines: Redis's group commit.

The calls queued while a pipeline is in flight go out together in the next one (one
round trip, and one ``WAIT`` for replicas when ``state.wait_replicas`` asks for it). One
pipeline is in flight at a time and its replies are handed out in the order the calls
were queued, so the admissions of one process complete in arrival order, as they do on
SQLite's single writer. Scripts run by their SHA; one Redis no longer knows (a restart
that lost its script cache) is loaded, and its calls sent again: a NOSCRIPT call did not run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from core.store.redis.client import guarded

# One queued call: the script, its arguments, and the future its reply settles.
_Call = tuple[AsyncScript, Sequence[Any], "asyncio.Future[Any]"]


class Pipelines:
    """Run scripts of ``client`` in grouped, ordered pipelines (see the module docstring)."""

    def __init__(self, client: aioredis.Redis, *, wait_replicas: int = 0):
        self.client = client
        self.wait_replicas = wait_replicas
        self._queue: list[_Call] = []
        self._sender: asyncio.Task[None] | None = None
        self._loaded: set[str] = set()

    def call(self, script: AsyncScript, args: Sequence[Any]) -> asyncio.Future[Any]:
        """Queue ``script(args)``; the future gets its reply (or its error)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((script, args, future))
        if self._sender is None:
            self._sender = loop.create_task(self._send(), name="redis-pipelines")
        return future

    async def _send(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    await self._run(batch)
                except BaseException as exc:
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                        raise
        finally:
            self._sender = None

    async def _run(self, batch: list[_Call]) -> None:
        for script in {script.sha: script for script, _, _ in batch}.values():
            if script.sha not in self._loaded:
                await guarded(self.client.script_load(script.script))
                self._loaded.add(script.sha)
        pipe = self.client.pipeline(transaction=False)
        for script, args, _ in batch:
            pipe.evalsha(script.sha, 0, *args)
        if self.wait_replicas:
            pipe.wait(self.wait_replicas, 2000)
        replies = await guarded(pipe.execute(raise_on_error=False))
        again = [call for call, reply in zip(batch, replies, strict=False) if isinstance(reply, NoScriptError)]
        if again:
            self._loaded.clear()  # Redis forgot its scripts: load them, then send those calls again
            await self._run(again)
        for (_, _, future), reply in zip(batch, replies, strict=False):
            if future.done() or isinstance(reply, NoScriptError):
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)
