"""The kill switch: halt, flatten and resume accounts, and the risk gate before every order.

* **The gate** (``check``) runs for every order the engine is about to send, whatever
  plugin executes it: an order that can only lower risk (``is_reducing``) always passes
  the halt; an opening order on a halted account is refused (422 ``risk_limit``); then
  every ``check_risk`` implementation (the built-in limits of ``plugins.risk`` and any
  third-party check) may refuse it.
* **Halts** live in the state store (``core.store.risk``): they hold across workers and
  machines (Redis), survive restarts, and are read on each opening order.
* **Flatten** halts the account(s), then cancels every open order and closes every
  derivatives position. Each step is an ordinary journaled alert with a deterministic id
  (``flatten-<id>-<account>-r<round>-cancel|close-<market>``, e.g. ``…-close-BTC_USDT_USDT``) executed by the engine:
  exactly once (the journal deduplicates the id; the client order id derives from it),
  visible in ``GET /alerts/<step id>``, recovered after a crash like any alert. The
  flatten itself is a record in the state store, run by the worker holding its lease; a
  flatten requested from the command line, or left unfinished by a crash, is taken up
  by a running worker within ``router.worker_heartbeat`` seconds (after the dead owner's
  lease expires, ``router.worker_stale_after``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from decimal import Decimal
from typing import Any, Literal, Protocol

from core.errors import RiskLimitExceeded, StoreUnavailable
from core.hooks.manager import call_hook
from core.pipeline.host import EngineHost
from core.pipeline.models import Alert, AuthResult, InboundRequest, OrderRequest
from core.pipeline.outcomes import Outcome
from core.pipeline.periodic import every
from core.store.factory import StateBackend
from core.store.risk import ALL, new_flatten_record
from core.store.states import is_final
from core.trading.execution import Executor

log = logging.getLogger(__name__)

FLATTEN_ROUNDS = 3


def is_reducing(alert: Alert, order: OrderRequest) -> bool:
    """Whether ``order`` can only lower risk: a cancel, reduce-only, a close, or an order
    against the position it was computed from that does not go beyond it."""
    if order.action != "create" or order.reduce_only or alert.action == "close":
        return True
    if order.position_before is None or order.amount is None or order.side is None:
        return False
    held = Decimal(order.position_before)
    amount = Decimal(order.amount)
    return held != 0 and (held > 0) == (order.side == "sell") and amount <= abs(held)


def _describe_halt(account: str, record: dict[str, Any]) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(record.get("since", 0)))
    until = (
        f" until {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(record['until']))}"
        if record.get("until")
        else " until resumed"
    )
    who = "every account is" if account == ALL else f"account '{account}' is"
    return (
        f"{who} halted ({record.get('reason') or 'no reason given'}; by {record.get('by', '?')} since {since}){until}"
    )


class KillSwitchHost(EngineHost, Protocol):
    """What the kill switch needs of the router that owns it (``core.pipeline.router.Router``)."""

    @property
    def state(self) -> StateBackend:
        """The state store, where halts and flattens live (``risk_store``)."""

    @property
    def worker_id(self) -> str:
        """This process's id: who holds a flatten's lease."""

    async def admit(
        self, request: InboundRequest, alert: Alert, executor: Executor, auth: AuthResult, body_hash: str
    ) -> Outcome | asyncio.Task[Outcome]:
        """Journal an alert and start it (a flatten step), as the pipeline does a webhook's."""


class KillSwitch:
    def __init__(self, router: KillSwitchHost):
        self.router = router
        self.store: Any = None
        self._loop_task: asyncio.Task[None] | None = None
        self._running: dict[str, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.store = self.router.state.risk_store()
        with contextlib.suppress(StoreUnavailable):
            await self.store.halts()  # opens the store now, so the first alert's read is cheap
        self._stopping = asyncio.Event()
        self._loop_task = asyncio.create_task(self._take_up_flattens(), name="risk-flattens")

    async def stop(self) -> None:
        self._stopping.set()
        tasks = [t for t in (self._loop_task, *self._running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.store is not None:
            await self.store.aclose()
            self.store = None

    # ------------------------------------------------------------ halts

    async def halts(self) -> dict[str, dict[str, Any]]:
        """Halts in force (a daily-loss halt past its ``until`` is over)."""
        now = time.time()
        return {k: v for k, v in (await self.store.halts()).items() if not v.get("until") or v["until"] > now}

    async def halted(self, account: str) -> tuple[str, dict[str, Any]] | None:
        """The halt in force on ``account`` (its own, else every account's), as ``halts`` sees it."""
        halts = await self.store.halts()
        now = time.time()
        for key in (account.lower(), ALL):
            record = halts.get(key)
            if record is not None and (not record.get("until") or record["until"] > now):
                return key, record
        return None

    async def halt(
        self, account: str | None, *, reason: str = "", by: str = "operator", until: float | None = None
    ) -> dict[str, Any]:
        key = (account or ALL).lower()
        record = {"reason": reason[:200], "by": by, "since": time.time(), "until": until}
        await self.store.set_halt(key, record)
        log.warning("risk: %s", _describe_halt(key, record))
        return record

    async def resume(self, account: str | None, *, by: str = "operator") -> list[str]:
        cleared: list[str] = await self.store.clear_halt(account.lower() if account else None)
        log.warning("risk: resumed %s by %s", ", ".join(cleared) or "nothing (no halt)", by)
        return cleared

    async def flatten_record(self, flatten_id: str) -> dict[str, Any] | None:
        """A flatten's request and progress (``GET /alerts/flatten-<id>``)."""
        return next((f for f in await self.store.flattens(limit=1000) if f["flatten_id"] == flatten_id), None)

    async def limits(self) -> dict[str, list[dict[str, Any]]]:
        """Each configured account's limits as the ``describe_risk_limits`` implementations
        describe them (empty lists when no plugin limits anything)."""
        described: dict[str, list[dict[str, Any]]] = {}
        for executor in self.router.executors:
            try:
                results = await call_hook(
                    self.router.hook.describe_risk_limits, account=executor.account, router=self.router
                )
            except Exception as exc:  # a broken description must not hide the halts (nor the buttons) around it
                log.exception("risk: describing the limits of %s failed", executor.account)
                results = [
                    [
                        {
                            "limit": "(could not be described)",
                            "value": getattr(exc, "message", None) or type(exc).__name__,
                            "source": "error",
                            "used": None,
                        }
                    ]
                ]
            described[executor.account] = [item for result in results if result for item in result]
        return described

    async def status(self) -> dict[str, Any]:
        return {
            "halts": await self.halts(),
            "flattens": await self.store.flattens(limit=10),
            "limits": await self.limits(),
        }

    # ------------------------------------------------------------ the gate before every order

    async def check(self, alert: Alert, executor: Executor, order: OrderRequest) -> None:
        """Raise ``RiskLimitExceeded`` to refuse ``order``; return to let it be sent."""
        reducing = is_reducing(alert, order)
        if not reducing:
            halt = await self.halted(executor.account)
            if halt is not None:
                raise RiskLimitExceeded(
                    "halt",
                    f"refused by halt: {_describe_halt(*halt)}; only reducing and closing "
                    "orders are sent until it is resumed",
                    value="halted",
                    figure="opening order",
                )
        await call_hook(
            self.router.hook.check_risk,
            alert=alert,
            order=order,
            executor=executor,
            reducing=reducing,
            router=self.router,
        )

    async def command(self, action: str, account: str | None, *, by: str, reason: str) -> Outcome:
        """``POST /control/<action>`` of an operator already authorised (``Router.control``):
        halt, flatten, resume, or the status."""
        if action == "halt":
            record = await self.halt(account, reason=reason or "halted over HTTP", by=by)
            return Outcome(200, {"status": "halted", "account": account or "*", "halt": record})
        if action == "flatten":
            record = await self.request_flatten(account, by=by, reason=reason)
            return Outcome(
                202,
                {
                    "status": "flattening",
                    "account": account or "*",
                    "flatten_id": record["flatten_id"],
                    "message": "halted; every open order is canceled and every position closed; "
                    "see GET / (halts) and python -m core risk status",
                },
            )
        if action == "resume":
            return Outcome(200, {"status": "resumed", "accounts": await self.resume(account, by=by)})
        return Outcome(200, await self.status())

    # ------------------------------------------------------------ orders the router places itself

    async def place(self, alert: Alert, executor: Executor, *, principal: str) -> dict[str, Any]:
        """Journal and execute an alert of the router's own (a flatten step, a correction)
        with an explicit id, exactly once: a second call with the same id waits for the
        first one's outcome. The alert's journal row when it is final (or when even a
        reconciliation would have given up: the row as it stands)."""
        if not alert.alert_id:
            raise ValueError("an alert the router places itself needs an explicit id")
        router = self.router
        timeout = router.options.reconcile_timeout + router.options.response_budget + 30
        alert.received_at = time.time()
        request = InboundRequest(
            body=b"", headers={}, remote_addr="", scheme="", payload={}, received_at=alert.received_at
        )
        body_hash = hashlib.sha256(b"risk:" + alert.alert_id.encode()).hexdigest()
        started = await router.admit(request, alert, executor, AuthResult.accept(principal), body_hash)
        if not isinstance(started, Outcome):
            await asyncio.shield(started)
        deadline = time.monotonic() + timeout
        while True:
            row = await router.journal.get(alert.alert_id) or {}
            state = row.get("state")
            if is_final(state, row.get("error_code")):
                return row
            if time.monotonic() > deadline:
                return row
            await asyncio.sleep(0.2)  # executing elsewhere (another worker, or recovery): its row tells when it ends

    # ------------------------------------------------------------ flatten

    async def request_flatten(self, account: str | None, *, by: str, reason: str = "") -> dict[str, Any]:
        """Halt, record the flatten and start it in this process. Returns its record."""
        await self.halt(account, reason=reason or "flatten", by=by)
        record = new_flatten_record(account, by=by)
        await self.store.save_flatten(record)
        claimed = await self.store.claim_flatten(
            record["flatten_id"], self.router.worker_id, self.router.options.worker_stale_after
        )
        if claimed is not None:
            self._start_flatten(claimed)
        return claimed or record

    def _start_flatten(self, record: dict[str, Any]) -> None:
        fid = record["flatten_id"]
        if fid in self._running and not self._running[fid].done():
            return
        task = asyncio.create_task(self._run_flatten(record), name=f"flatten-{fid}")
        self._running[fid] = task
        task.add_done_callback(lambda t: self._running.pop(fid, None))

    async def _take_up_flattens(self) -> None:
        """Background: run flattens requested elsewhere (the CLI) or left by a dead worker."""
        await every(self.router.options.worker_heartbeat, self._stopping, self._take_up_once, "risk: flatten check")

    async def _take_up_once(self) -> None:
        for record in await self.store.flattens(open_only=True):
            if record["flatten_id"] in self._running:
                continue
            claimed = await self.store.claim_flatten(
                record["flatten_id"], self.router.worker_id, self.router.options.worker_stale_after
            )
            if claimed is not None:
                log.warning("risk: taking up flatten %s (%s)", claimed["flatten_id"], claimed["state"])
                self._start_flatten(claimed)

    async def _run_flatten(self, record: dict[str, Any]) -> None:
        fid = record["flatten_id"]
        owner = self.router.worker_id
        record.update(state="running", owner=owner)
        await self._save(record)
        lease = asyncio.create_task(self._keep_lease(fid))
        try:
            accounts = [
                e for e in self.router.executors if record["account"] == ALL or e.account.lower() == record["account"]
            ]
            if not accounts:
                raise ValueError(f"no account named '{record['account']}'")
            results = await asyncio.gather(
                *(self._flatten_account(record, e) for e in accounts), return_exceptions=True
            )
            errors = [
                f"{e.account}: {r}" for e, r in zip(accounts, results, strict=True) if isinstance(r, BaseException)
            ]
            record.update(state="failed" if errors else "done", error="; ".join(errors)[:500] or None)
        except asyncio.CancelledError:
            raise  # shutdown: the lease lapses and a worker (or the next start) completes it
        except Exception as exc:
            record.update(state="failed", error=f"{type(exc).__name__}: {exc}"[:500])
        finally:
            lease.cancel()
        record["finished_at"] = time.time()
        await self._save(record)
        level = logging.ERROR if record["state"] == "failed" else logging.WARNING
        log.log(
            level, "risk: flatten %s %s%s", fid, record["state"], f": {record['error']}" if record.get("error") else ""
        )

    async def _keep_lease(self, fid: str) -> None:
        options = self.router.options
        while True:
            await asyncio.sleep(options.worker_heartbeat)
            with contextlib.suppress(StoreUnavailable):
                await self.store.claim_flatten(fid, self.router.worker_id, options.worker_stale_after)

    async def _flatten_account(self, record: dict[str, Any], executor: Executor) -> None:
        """Rounds of: list what is open, cancel each market's orders, close each position;
        until nothing is left. Step ids depend only on (flatten, account, round, market),
        so a flatten taken up after a crash re-plans onto the same journaled steps."""
        fid, account = record["flatten_id"], executor.account
        for round_no in range(1, FLATTEN_ROUNDS + 1):
            open_orders = await executor.fetch_open_orders()
            positions = await executor.fetch_positions()
            if not open_orders and not positions:
                return
            steps: list[tuple[str, Literal["cancel_all", "close"], str]] = [
                ("cancel", "cancel_all", s) for s in sorted(open_orders)
            ] + [("close", "close", s) for s in sorted(positions)]
            for tag, action, symbol in steps:
                market = symbol.replace("/", "_").replace(":", "_")  # an id that fits in a URL path segment
                alert = Alert(
                    alert_id=f"flatten-{fid}-{account}-r{round_no}-{tag}-{market}"[:128],
                    action=action,
                    symbol=symbol,
                    account=account,
                )
                row = await self.place(alert, executor, principal=f"flatten:{record['by']}")
                await self._note_step(record, row)
        open_orders = await executor.fetch_open_orders()
        positions = await executor.fetch_positions()
        if open_orders or positions:
            raise RuntimeError(
                f"still open after {FLATTEN_ROUNDS} rounds: orders {open_orders}, positions "
                f"{ {k: str(v) for k, v in positions.items()} }"
            )

    async def _note_step(self, record: dict[str, Any], row: dict[str, Any]) -> None:
        record.setdefault("steps", {})[row.get("alert_id", "?")] = row.get("state")
        await self._save(record)

    async def _save(self, record: dict[str, Any]) -> None:
        """Save the flatten's progress; we hold its lease, so saving renews it."""
        record["heartbeat_at"] = time.time()
        await self.store.save_flatten(record)
