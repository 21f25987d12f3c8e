"""The journal of record on Redis, for deployments of several workers or machines.

The ``Journal`` protocol (``core.store.protocols``) on Redis: an alert is committed before
it is answered, admission and deduplication are atomic (Lua scripts run as one step on
the Redis server), arrival order is one counter for the whole deployment, and orphaned
alerts are claimed by exactly one worker.

Keys, under a prefix (``state.prefix``, default ``tvr``):

    {p}:seq            arrival counter (INCR)
    {p}:a:{alert_id}   the alert (hash; expires after state.retention_days)
    {p}:o:{alert_id}   its order attempts (hash: attempt number → JSON)
    {p}:b:{body_hash}  alert id of a body seen within the dedup window (expires)
    {p}:u              unfinished alerts by arrival (sorted set) — for recovery
    {p}:l:{lane}       unfinished alerts of one (account, market) — the lane's queue
    {p}:w:{worker}     a live worker's heartbeat (expires after worker_stale_after)
    {p}:recent         alerts by arrival time, for listing (trimmed)
    {p}:stats          alerts per state
    {p}:r:{key}        a replay key, until it expires

Admissions and ``record``'s writes go out in grouped, ordered pipelines
(``core.store.redis.batch``): one round trip for an admission (its replay key and intent
included), and an outcome's writes in one script call.

Durability is Redis's: run it with ``appendonly yes`` and ``appendfsync always`` (or
``everysec``, accepting up to a second of loss on a Redis crash), and set
``state.wait_replicas`` to have each write acknowledged by replicas before the answer.
When Redis cannot be reached every call raises ``StoreUnavailable`` (503): the router
refuses new alerts (nothing was sent, so TradingView's resend is safe) and the engine
keeps retrying the writes of orders already in flight until Redis is back.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis

from core.observability.redaction import REDACTOR
from core.store.journal import (
    Admission,
    AdmissionRequest,
    AlertRow,
    AttemptRecord,
    JournalStats,
    OrderAttempt,
    dumps,
    log_quarantined,
    quarantine_reason,
)
from core.store.redis import journal_scripts as scripts
from core.store.redis.batch import Pipelines
from core.store.redis.client import guarded
from core.store.redis.rows import decode_alert
from core.store.states import SUCCESS_STATES, AlertState, alert_state, holds_lane

T = TypeVar("T")
log = logging.getLogger(__name__)
_QUARANTINED = AlertState.QUARANTINED.value
_ATTEMPT_FIELDS = tuple(f.name for f in dataclasses.fields(AttemptRecord))


class RedisJournal:
    """The journal on Redis; see the module docstring for the data layout."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "tvr",
        retention_days: float = 7.0,
        wait_replicas: int = 0,
        worker_stale_after: float = 6.0,
        pipelines: Pipelines | None = None,
    ):
        self.client = client  # owned by the backend (core.store.redis.backend)
        self.prefix = prefix
        self.retention = int(retention_days * 86400)
        self.wait_replicas = wait_replicas
        self.stale_after_ms = int(worker_stale_after * 1000)
        self._admit = self.client.register_script(scripts.ADMIT)
        self._set_state = self.client.register_script(scripts.SET_STATE)
        self._claim = self.client.register_script(scripts.CLAIM)
        self._reopen = self.client.register_script(scripts.REOPEN)
        self._record = self.client.register_script(scripts.RECORD)
        self._remember = self.client.register_script(scripts.REMEMBER)
        self._earlier = self.client.register_script(scripts.EARLIER)
        # the backend's, shared with its other stores (one round trip carries all their calls)
        self._pipelines = pipelines or Pipelines(client, wait_replicas=wait_replicas)
        self._recording: dict[str, asyncio.Future[None]] = {}  # the last record() write queued, per alert

    async def _recorded(self, alert_id: str | None = None) -> None:
        """Wait for the record() writes of ``alert_id`` (None: of every alert) to be done."""
        pending = list(self._recording.values()) if alert_id is None else [self._recording.get(alert_id)]
        waits = [f for f in pending if f is not None and not f.done()]
        if waits:
            await asyncio.wait(waits)

    def _key(self, kind: str, name: str = "") -> str:
        return f"{self.prefix}:{kind}:{name}" if name else f"{self.prefix}:{kind}"

    async def _durable(self, awaitable: Awaitable[T]) -> T:
        """Run a call; with wait_replicas, return only once replicas acknowledged it."""
        result = await guarded(awaitable)
        if self.wait_replicas:
            await guarded(self.client.wait(self.wait_replicas, 2000))
        return result

    async def ping(self) -> None:
        await self._durable(self.client.ping())

    async def aclose(self) -> None:
        pass  # the backend closes the shared client

    # -- admission and state ---------------------------------------------------

    def admit(
        self, request: AdmissionRequest, *, then: Callable[[Admission], None] | None = None, patient: bool = False
    ) -> asyncio.Future[Admission]:
        # ``patient`` changes nothing here: each admission is one round trip of its own.
        replay_key = request.replay_key
        if request.replay_expires_at is not None and request.replay_expires_at <= time.time():
            replay_key = None  # already expired: nothing to remember
        fields = {
            "body_hash": request.body_hash,
            "received_at": repr(request.received_at),
            "updated_at": repr(request.received_at),
            "principal": request.principal or "",
            "account": request.account,
            "symbol": request.symbol,
            "side": request.side,
            "amount": request.amount,
            "payload": dumps(request.payload),
            "owner": request.owner or "",
            "authenticated_at": repr(request.authenticated_at) if request.authenticated_at is not None else "",
            "journaled_at": repr(time.time()),
            "client_order_id": request.client_order_id or "",
        }
        args = [
            self.prefix,
            request.explicit_id or "",
            request.body_hash,
            str(int(request.received_at * 1000)),
            str(int(request.dedup_window * 1000)),
            str(self.retention),
            request.lane,
            request.owner or "",
            replay_key or "",
            "" if request.replay_expires_at is None else str(int(request.replay_expires_at * 1000)),
        ]
        for key, value in fields.items():
            args += [key, value]
        # Cancelling the caller's future never cancels the reply's: ``then`` runs as the reply comes.
        admitted: asyncio.Future[Admission] = asyncio.get_running_loop().create_future()
        self._pipelines.call(self._admit, args).add_done_callback(lambda reply: _admitted(reply, admitted, then))
        return admitted

    async def remember_replay(self, key: str, expires_at: float | None) -> bool:
        if expires_at is not None and expires_at <= time.time():
            return True  # already expired: nothing to remember
        expiry = "" if expires_at is None else str(int(expires_at * 1000))
        return bool(await self._durable(self._remember(args=[self.prefix, key, expiry])))

    async def set_state(
        self,
        alert_id: str,
        state: str,
        *,
        result: dict[str, Any] | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        http_status: int | None = None,
    ) -> None:
        alert_state(state)
        finished = not holds_lane(state, error_code)
        args = [self.prefix, alert_id, state, "1" if finished else "0"]
        args += _state_fields(result, error_code, error_message, http_status)
        await self._durable(self._set_state(args=args))

    def record(
        self,
        alert_id: str,
        attempts: Sequence[AttemptRecord] = (),
        *,
        state: str | None = None,
        result: dict[str, Any] | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        http_status: int | None = None,
    ) -> asyncio.Future[None]:
        args = [self.prefix, alert_id, str(self.retention), state or "", "0", str(len(attempts))]
        for attempt in attempts:
            # the script puts its number first; the fields as they are (dumps never changes them)
            stored = {"alert_id": alert_id, **{name: getattr(attempt, name) for name in _ATTEMPT_FIELDS}}
            args.append(dumps(stored))  # secret-named fields dropped (request, response)
        if state is not None:
            alert_state(state)
            args[4] = "0" if holds_lane(state, error_code) else "1"
            args += _state_fields(result, error_code, error_message, http_status)
        future = self._pipelines.call(self._record, args)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def settle(reply: asyncio.Future[Any]) -> None:
            if done.cancelled():
                return
            if reply.cancelled():
                done.cancel()
            elif reply.exception() is not None:
                done.set_exception(cast(BaseException, reply.exception()))
            else:
                done.set_result(None)

        future.add_done_callback(settle)
        self._recording[alert_id] = done

        def forget(_: asyncio.Future[None]) -> None:
            if self._recording.get(alert_id) is done:
                del self._recording[alert_id]

        done.add_done_callback(forget)
        return done

    def expedite(self) -> None:
        pass  # every queued write is in the next pipeline already

    async def order_started(
        self, alert_id: str, *, client_order_id: str, account: str, exchange: str, route: str, request: dict[str, Any]
    ) -> OrderAttempt:
        number = await self._durable(self.client.hincrby(self._key("a", alert_id), "attempts", 1))
        attempt = OrderAttempt(
            alert_id,
            int(number),
            client_order_id,
            account,
            exchange,
            route,
            json.loads(dumps(request)),
            started_at=time.time(),
        )
        await self._write_attempt(attempt, AlertState.SUBMITTING)
        await self.set_state(alert_id, AlertState.SUBMITTING)
        return attempt

    async def _write_attempt(
        self,
        attempt: OrderAttempt,
        state: str,
        *,
        finished_at: float | None = None,
        response: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        record = asdict(attempt)
        record["attempt"] = record.pop("number")
        record.update(state=state, finished_at=finished_at, response=response, error=error)
        key = self._key("o", attempt.alert_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(key, str(attempt.number), json.dumps(record))
        pipe.expire(key, self.retention)
        await self._durable(pipe.execute())

    async def order_finished(
        self,
        attempt: OrderAttempt,
        state: str,
        *,
        response: dict[str, Any] | None = None,
        error: str | None = None,
        alert_id: str | None = None,
        alert_state: str | None = None,
        error_code: str | None = None,
        http_status: int | None = None,
    ) -> None:
        await self._write_attempt(
            attempt,
            state,
            finished_at=time.time(),
            response=json.loads(dumps(response)) if response is not None else None,
            error=REDACTOR.redact(error) if error else None,
        )
        if alert_state is not None:
            await self.set_state(
                alert_id or attempt.alert_id,
                alert_state,
                result=response if alert_state in SUCCESS_STATES else None,
                error_code=error_code,
                error_message=error if error_code else None,
                http_status=http_status,
            )

    # -- workers and recovery --------------------------------------------------

    async def heartbeat(self, worker_id: str) -> None:
        await self._durable(self.client.set(self._key("w", worker_id), repr(time.time()), px=self.stale_after_ms))

    async def retire(self, worker_id: str) -> None:
        await self._durable(self.client.delete(self._key("w", worker_id)))

    async def claim_orphans(self, worker_id: str, stale_after: float) -> builtins.list[AlertRow]:
        ids = await self._durable(self._claim(args=[self.prefix, worker_id]))
        claimed = []
        for alert_id in ids:
            row = await self.get(alert_id)
            if row is not None and row.get("unreadable"):
                await self.quarantine(alert_id, quarantine_reason(row["unreadable"]))
            elif row is not None:
                claimed.append(row)
        return claimed

    async def quarantine(self, alert_id: str, reason: str) -> None:
        await self.set_state(alert_id, _QUARANTINED, error_code=_QUARANTINED, error_message=reason[:500])
        log_quarantined(alert_id, reason)

    async def quarantined_count(self) -> int:
        return int(await self._durable(self.client.hget(self._key("stats"), _QUARANTINED)) or 0)

    async def reopen(self, alert_id: str, owner: str) -> AlertRow | None:
        await self._recorded(alert_id)
        if not await self._durable(self._reopen(args=[self.prefix, alert_id, owner, repr(time.time())])):
            return None
        return await self.get(alert_id)

    async def earlier_unfinished(self, lane: str, seq: int, owner: str | None = None) -> bool:
        return bool(await guarded(self._earlier(args=[self.prefix, lane, str(seq), owner or ""])))

    # -- reading ---------------------------------------------------------------

    async def get(self, alert_id: str) -> AlertRow | None:
        await self._recorded(alert_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self._key("a", alert_id))
        pipe.hgetall(self._key("o", alert_id))
        raw, orders = await self._durable(pipe.execute())
        if not raw:
            return None
        problems: list[str] = []
        attempts = []
        for number in sorted(orders, key=lambda n: int(n) if n.isdigit() else 0):
            try:
                attempt = json.loads(orders[number])
            except ValueError as exc:
                problems.append(f"order attempt {number} is not valid JSON ({type(exc).__name__})")
                continue
            if isinstance(attempt, dict):
                attempts.append(attempt)
            else:
                problems.append(f"order attempt {number} is not a JSON object")
        data = decode_alert(raw, problems)
        data["orders"] = attempts
        return data

    async def list(self, limit: int = 50, state: str | None = None) -> builtins.list[AlertRow]:
        await self._recorded()
        ids = cast(
            "list[str]",
            await self._durable(
                self.client.zrevrange(self._key("recent"), 0, max(limit * 20, 1000) if state else limit - 1)
            ),
        )
        rows = []
        for start in range(0, len(ids), 200):  # one round trip per 200 alerts (the dashboard polls this)
            pipe = self.client.pipeline(transaction=False)
            for alert_id in ids[start : start + 200]:
                pipe.hgetall(self._key("a", alert_id))
            for raw in await self._durable(pipe.execute()):
                if raw and (state is None or raw.get("state") == state):
                    rows.append(decode_alert(raw))
                if len(rows) >= limit:
                    return rows
        return rows

    async def timings(self, since: float, limit: int = 5000) -> builtins.list[dict[str, Any]]:
        """The newest alerts received since ``since`` (at most ``limit``), oldest first, with
        their timestamps and their order attempts' — for the dashboard's latency plots."""
        await self._recorded()
        ids = cast(
            "list[str]",
            await self._durable(
                self.client.zrevrangebyscore(self._key("recent"), "+inf", int(since * 1000), start=0, num=limit)
            ),
        )
        rows: list[dict[str, Any]] = []
        for start in range(0, len(ids), 200):
            pipe = self.client.pipeline(transaction=False)
            for alert_id in ids[start : start + 200]:
                pipe.hmget(self._key("a", alert_id), "account", "state", "received_at", "updated_at")
                pipe.hgetall(self._key("o", alert_id))
            found = await self._durable(pipe.execute())
            for alert_id, (fields, orders) in zip(
                ids[start : start + 200], zip(found[::2], found[1::2], strict=True), strict=True
            ):
                if fields[2] is None:
                    continue  # expired meanwhile
                attempts = []
                for n in sorted(orders, key=lambda n: int(n) if n.isdigit() else 0):
                    try:
                        attempt = json.loads(orders[n])
                    except ValueError:
                        continue  # unreadable: the alert's own read quarantines it
                    if isinstance(attempt, dict):
                        attempts.append(attempt)
                rows.append(
                    {
                        "alert_id": alert_id,
                        "account": fields[0],
                        "state": fields[1],
                        "received_at": float(fields[2]),
                        "updated_at": float(fields[3] or fields[2]),
                        "orders": [
                            {k: a.get(k) for k in ("alert_id", "account", "state", "started_at", "finished_at")}
                            for a in attempts
                        ],
                    }
                )
        return rows[::-1]

    async def stats(self) -> JournalStats:
        await self._recorded()
        counts = cast("dict[str, str]", await self._durable(self.client.hgetall(self._key("stats"))))
        alerts = {k: int(v) for k, v in counts.items() if int(v)}
        return {"alerts": alerts, "unfinished": await self._durable(self.client.zcard(self._key("u")))}


def _state_fields(
    result: dict[str, Any] | None, error_code: str | None, error_message: str | None, http_status: int | None
) -> list[str]:
    """The alert hash's fields a state change writes, as the scripts take them: name, value, ..."""
    fields = {
        "updated_at": repr(time.time()),
        "error_code": error_code or "",
        "error_message": REDACTOR.redact(error_message) if error_message else "",
    }
    if result is not None:
        fields["result"] = dumps(result)
    if http_status is not None:
        fields["http_status"] = str(http_status)
    return [item for pair in fields.items() for item in pair]


def _admitted(
    reply: asyncio.Future[Any], admitted: asyncio.Future[Admission], then: Callable[[Admission], None] | None
) -> None:
    """The admission script's reply: ``then`` (see ``Journal.admit``), then the caller's future."""
    if reply.cancelled():
        admitted.cancel()
        return
    try:
        alert_id, kind, seq, state, status, behind = reply.result()
        admission = (
            Admission("", False, replayed=True)
            if int(kind) == 2
            else Admission(
                alert_id,
                int(kind) == 1,
                seq=int(seq),
                behind_others=bool(int(behind)),
                state=state,
                http_status=int(status) if status else None,
            )
        )
        if then is not None:
            then(admission)
    except (Exception, asyncio.CancelledError) as exc:
        if admitted.done():
            if reply.exception() is None:
                log.exception("a committed admission's continuation failed (its caller is gone)")
        elif isinstance(exc, asyncio.CancelledError):
            admitted.cancel()
        else:
            admitted.set_exception(exc)
        return
    if not admitted.done():
        admitted.set_result(admission)
