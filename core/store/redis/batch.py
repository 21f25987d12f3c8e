"""Redis calls grouped into pipelines: Redis's group commit, and fewer round trips per alert.

Every Redis store of a backend (journal, rate limits, risk) sends its hot-path calls
through one ``Pipelines``: the calls queued while a pipeline is in flight go out together
in the next one (one round trip, and one ``WAIT`` for replicas when ``state.wait_replicas``
asks for it and a call of the batch is a journal write). One pipeline is in flight at a
time and its replies are handed out in the order the calls were queued, so the admissions
of one process complete in arrival order, as they do on SQLite's single writer. Each call
is one command or one Lua script, atomic on the server as it would be alone; grouping
changes how many round trips carry them, never what each does.

A read queued with ``share`` is shared by the identical reads queued after it while it
waits for its pipeline (the kill switch's halts, a rate-limit window of one address):
it runs once, after every caller asked, so each gets an answer at least as fresh as its
own call. Scripts run by their SHA; one Redis no longer knows (a restart that lost its
script cache) is loaded, and its calls sent again: a NOSCRIPT call did not run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Sequence
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

from core.store.redis.client import guarded


class Script(Protocol):
    """A registered Lua script (redis-py's ``Script``/``Script``): its text and SHA."""

    @property
    def sha(self) -> str: ...

    @property
    def script(self) -> Any: ...


class _Call:
    """One queued command (``script`` None) or script call, and the futures its reply settles."""

    __slots__ = ("script", "args", "futures", "durable")

    def __init__(self, script: Script | None, args: Sequence[Any], durable: bool):
        self.script = script
        self.args = args  # a command's words, or a script's numkeys, keys and arguments
        self.futures: list[asyncio.Future[Any]] = []
        self.durable = durable


class Pipelines:
    """Run commands and scripts of ``client`` in grouped, ordered pipelines (see the module docstring)."""

    def __init__(self, client: aioredis.Redis, *, wait_replicas: int = 0):
        self.client = client
        self.wait_replicas = wait_replicas
        self._queue: list[_Call] = []
        self._shared: dict[Hashable, _Call] = {}  # the shareable reads of the queue, not yet sent
        self._sender: asyncio.Task[None] | None = None
        self._loaded: set[str] = set()

    def call(
        self,
        script: Script,
        args: Sequence[Any],
        keys: Sequence[str] = (),
        *,
        durable: bool = True,
        share: Hashable | None = None,
    ) -> asyncio.Future[Any]:
        """Queue ``script(keys, args)``; the future gets its reply (or its error). ``durable``:
        a write that waits for replicas (``wait_replicas``); ``share``: see ``command``."""
        return self._queued(script, (len(keys), *keys, *args), durable, share)

    def command(self, *args: Any, share: Hashable | None = None, durable: bool = False) -> asyncio.Future[Any]:
        """Queue the command ``args`` (``"HGETALL", key``). ``share``: a key naming a read
        whose answer identical reads queued before it is sent may share (see the module docstring)."""
        return self._queued(None, args, durable, share)

    def _queued(
        self, script: Script | None, args: Sequence[Any], durable: bool, share: Hashable | None
    ) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        call = self._shared.get(share) if share is not None else None
        if call is None:
            call = _Call(script, args, durable)
            self._queue.append(call)
            if share is not None:
                self._shared[share] = call
        call.futures.append(future)
        if self._sender is None:
            self._sender = loop.create_task(self._send(), name="redis-pipelines")
        return future

    async def _send(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                self._shared.clear()
                try:
                    await self._run(batch)
                except BaseException as exc:
                    for call in batch:
                        for future in call.futures:
                            if not future.done():
                                future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                        raise
        finally:
            self._sender = None

    async def _run(self, batch: list[_Call]) -> None:
        for script in {call.script.sha: call.script for call in batch if call.script is not None}.values():
            if script.sha not in self._loaded:
                await guarded(self.client.script_load(script.script))
                self._loaded.add(script.sha)
        commands = [call.args if call.script is None else ("EVALSHA", call.script.sha, *call.args) for call in batch]
        if self.wait_replicas and any(call.durable for call in batch):
            commands.append(("WAIT", self.wait_replicas, 2000))
        replies = await guarded(self._execute(commands))
        again = [call for call, reply in zip(batch, replies, strict=False) if isinstance(reply, NoScriptError)]
        if again:
            self._loaded.clear()  # Redis forgot its scripts: load them, then send those calls again
            await self._run(again)
        for call, reply in zip(batch, replies, strict=False):
            if isinstance(reply, NoScriptError):
                continue
            for future in call.futures:
                if future.done():
                    continue
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

    async def _execute(self, commands: list[Sequence[Any]]) -> list[Any]:
        """Send ``commands`` in one write on a connection of the pool (packed by redis-py's
        ``Connection.pack_commands``), and read their replies (an error reply as its
        ``ResponseError``). redis-py's ``Pipeline`` does the same with more machinery per
        command (callbacks, options); the replies here are as the connection's parser
        decodes them (strings; a hash as a dict with RESP3, else a list)."""
        pool: Any = self.client.connection_pool
        connection = await pool.get_connection()
        try:
            await connection.send_packed_command(connection.pack_commands(commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as error:
                    replies.append(error)
            return replies
        except BaseException:
            await connection.disconnect(nowait=True)  # replies may be left unread on it
            raise
        finally:
            await pool.release(connection)
