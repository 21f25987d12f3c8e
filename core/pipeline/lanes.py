"""Ordering lanes: the alerts of one (account, market) execute one at a time, in arrival order.

Arrival order is the journal's ``seq``. An alert takes its place in its lane the moment its
admission returns (``Lanes.join``, no await in between: admissions return in arrival order
in a process), and its turn comes when every alert before it in the lane has finished:
the lane is handed first-in first-out to the next alert only (each waits on a future of
its own; a hand-over wakes one task). Only the work that must be ordered runs in the lane
(the order's preparation, which reads positions, and its sending); journal writes happen
before the turn and after it.

Across processes the journal is asked, when the turn comes, whether an earlier alert of
the lane held by another worker is still unfinished — only for an alert whose admission
found one (``Admission.behind_others``), or that was recovered or reopened; meanwhile the
lane is free for an alert of this process that arrived earlier still. Other lanes run in
parallel.

**Patient admissions.** An alert that arrives with ``patience`` or more of this process's
alerts already in its lane cannot execute before they have, a lane's time each. Its
admission need not commit at once (``Lanes.patient``, ``Journal.admit(patient=True)``): it
shares a commit with the admissions that follow it instead of each paying an fsync, a wake-up
of the writer thread and one of the loop — what a busy market's alerts, answered one at a
time, would otherwise cost. The lane counts such admissions until they return and, as the
alerts ahead leave, calls ``hurry`` once fewer than half of ``patience`` are left: they
commit then (or once the journal's short deferral is up), while the lane still has work.
Only a process that is the only one admitting into its journal is patient (the router
decides): across workers, a held admission could be overtaken by a later one.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

# Whether the journal holds an unfinished alert of lane ``key``, of another worker, that
# arrived before ``seq``.
EarlierUnfinished = Callable[[str, int], Awaitable[bool]]


class Ticket:
    """One alert's place in its lane."""

    __slots__ = ("key", "seq", "waiter")

    def __init__(self, key: str, seq: int):
        self.key = key
        self.seq = seq
        self.waiter: asyncio.Future[None] | None = None

    def __lt__(self, other: Ticket) -> bool:
        return self.seq < other.seq


class Lane:
    """This process's alerts of one (account, market), by arrival number; ``busy`` while one runs."""

    __slots__ = ("queue", "busy", "patient")

    def __init__(self) -> None:
        self.queue: list[Ticket] = []  # sorted by seq; the first one runs next
        self.busy = False
        self.patient = 0  # patient admissions of this lane not yet returned (see Lanes.patient)

    def wake_next(self) -> None:
        if not self.busy and self.queue:
            waiter = self.queue[0].waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)


class Lanes:
    """Every lane of this process with an alert waiting or running."""

    def __init__(
        self,
        earlier_unfinished: EarlierUnfinished,
        *,
        poll_max: float = 0.1,
        patience: int = 0,
        hurry: Callable[[], None] | None = None,
    ):
        """``patience``: how many alerts ahead in its lane make an admission patient (0:
        none is); ``hurry``: commits the patient admissions now (``Journal.expedite``)."""
        self._earlier_unfinished = earlier_unfinished
        self._poll_max = poll_max
        self._lanes: dict[str, Lane] = {}
        self._patience = patience if hurry is not None else 0
        self._hurry = hurry
        self._short = max(1, patience // 2)

    def __len__(self) -> int:
        return len(self._lanes)

    def patient(self, key: str) -> Lane | None:
        """Lane ``key`` when an alert arriving in it now would wait behind ``patience`` or
        more of this process's alerts (waiting or executing): its admission may be patient.
        The caller counts it (``Lane.patient``) until the admission returns. None (the
        usual case): the admission commits at once."""
        lane = self._lanes.get(key)
        if lane is None or not self._patience or len(lane.queue) < self._patience:
            return None
        return lane

    def join(self, key: str, seq: int) -> Ticket:
        """Take the place of arrival ``seq`` in lane ``key`` (now: before any await)."""
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = Lane()
        ticket = Ticket(key, seq)
        if not lane.queue or lane.queue[-1].seq <= seq:
            lane.queue.append(ticket)  # the usual case: the latest arrival
        else:
            bisect.insort(lane.queue, ticket)
        return ticket

    def leave(self, ticket: Ticket) -> None:
        """Give up the place of a ticket whose ``run`` never started (its task could not be made)."""
        lane = self._lanes.get(ticket.key)
        if lane is None or ticket not in lane.queue:
            return
        lane.queue.remove(ticket)
        lane.wake_next()
        if not lane.queue and not lane.busy:
            self._lanes.pop(ticket.key, None)

    async def run(self, ticket: Ticket, work: Callable[[], Awaitable[T]], *, check_others: bool = False) -> T:
        """Run ``work`` once every alert that arrived before ``ticket`` in its lane has
        finished (with ``check_others``: in every worker, as the journal tells)."""
        lane = self._lanes[ticket.key]
        held = False
        try:
            delay = 0.005
            while True:
                if lane.busy or lane.queue[0] is not ticket:
                    await self._turn(lane, ticket)
                lane.busy = held = True
                if not check_others:
                    break
                elsewhere = await self._earlier_unfinished(ticket.key, ticket.seq)
                if not elsewhere and lane.queue[0] is ticket:
                    break
                # An earlier alert of this lane is still executing elsewhere, or one joined this
                # process's lane while the journal was asked (recovered from a dead worker: the
                # answer no longer counts it, it is ours now). The lane goes to it; elsewhere,
                # this one waits and asks again.
                held = False
                lane.busy = False
                lane.wake_next()
                if elsewhere:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._poll_max)
            return await work()
        finally:
            if held:
                lane.busy = False
            lane.queue.remove(ticket)
            lane.wake_next()
            if lane.patient and len(lane.queue) < self._short and self._hurry is not None:
                self._hurry()  # the patient admissions commit while the lane still has work
            if not lane.queue and not lane.busy:
                self._lanes.pop(ticket.key, None)

    @staticmethod
    async def _turn(lane: Lane, ticket: Ticket) -> None:
        """Return once the lane is free and ``ticket`` is first (the caller takes it then)."""
        while lane.busy or lane.queue[0] is not ticket:
            ticket.waiter = asyncio.get_running_loop().create_future()
            try:
                await ticket.waiter
            finally:
                ticket.waiter = None
