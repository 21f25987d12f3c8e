"""An execution plugin's background task: one per executor, started once, cancelled at close.

The ccxt and Alpaca executors each run one loop in the background (retry an account that
was not ready at startup, refresh the markets or assets of a ready one). ``BackgroundTask``
holds it: ``start`` creates it unless it runs already, ``cancel`` asks it to stop and
``stop`` also waits until it has (what ``Executor.close`` needs).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any


class BackgroundTask:
    """At most one asyncio task, started lazily and stopped for good by ``stop``."""

    def __init__(self) -> None:
        self._task: asyncio.Task[Any] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self, loop: Callable[[], Coroutine[Any, Any, Any]], name: str) -> None:
        """Run ``loop()`` in the background unless a task is already there."""
        if self._task is None:
            self._task = asyncio.create_task(loop(), name=name)

    def cancel(self) -> None:
        """Ask the task to stop without waiting for it."""
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Cancel the task and wait for it to end (its errors are its own: not raised here)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
