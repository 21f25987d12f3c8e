"""Ordering lanes: the alerts of one (account, market) execute one at a time, in arrival order.

Arrival order is the journal's ``seq``. Within this process a lane serves the lowest
``seq`` first (admissions may complete out of order, and ``asyncio.Condition`` wakes its
waiters first-in first-out); across processes the journal is asked whether an earlier
alert of the lane is still unfinished. Other lanes run in parallel.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

# Whether the journal holds an unfinished alert of lane ``key`` that arrived before ``seq``.
EarlierUnfinished = Callable[[str, int], Awaitable[bool]]


@dataclass
class Lane:
    """This process's alerts of one (account, market), served lowest arrival number first."""

    turn: asyncio.Condition = field(default_factory=asyncio.Condition)
    waiting: list[int] = field(default_factory=list)  # a heap of arrival numbers (seq)
    running: bool = False

    def is_next(self, seq: int) -> bool:
        return not self.running and self.waiting[0] == seq


class Lanes:
    """Every lane of this process with an alert waiting or running."""

    def __init__(self, earlier_unfinished: EarlierUnfinished, *, poll_max: float = 0.1):
        self._earlier_unfinished = earlier_unfinished
        self._poll_max = poll_max
        self._lanes: dict[str, Lane] = {}

    def __len__(self) -> int:
        return len(self._lanes)

    async def run(self, key: str, seq: int, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` once every alert that arrived earlier in lane ``key`` has finished."""
        lane = self._lanes.setdefault(key, Lane())
        heapq.heappush(lane.waiting, seq)
        try:
            while True:
                async with lane.turn:
                    await lane.turn.wait_for(lambda: lane.is_next(seq))
                delay = 0.005
                while await self._earlier_unfinished(key, seq):
                    await asyncio.sleep(delay)  # an earlier alert of this lane is still executing elsewhere
                    delay = min(delay * 2, self._poll_max)
                async with lane.turn:
                    if lane.is_next(seq):  # no earlier alert of this process arrived meanwhile
                        lane.running = True
                        break
            try:
                return await work()
            finally:
                lane.running = False
        finally:
            async with lane.turn:
                lane.waiting.remove(seq)
                heapq.heapify(lane.waiting)
                lane.turn.notify_all()
            if not lane.waiting:
                self._lanes.pop(key, None)
