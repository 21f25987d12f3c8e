"""What the dashboard shows, read from the journal and the executors when a page asks.

Nothing here runs per alert: every function is called by a dashboard request. Secrets
are kept out structurally: the journal stores no token or credentials, and ``scrub``
drops any secret-named key from what is shown on top of that.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core.store.states import PROBLEM_STATES, AlertState

# Keys whose values are never shown, at any depth (payload credentials, exchange keys).
SECRET_KEYS = frozenset(
    {
        "token",
        "apikey",
        "api_key",
        "secret",
        "apisecret",
        "api_secret",
        "password",
        "passphrase",
        "signature",
        "x-signature",
        "privatekey",
        "private_key",
    }
)
# The feed's "problems" filter: every alert that did not trade as asked.
ALERT_STATES = tuple(s.value for s in AlertState)
REFUSED_STATES = PROBLEM_STATES
PROBLEMS = "problems"
FEED_STATES = (PROBLEMS, *ALERT_STATES)  # what the feed can be filtered by


def scrub(value: Any) -> Any:
    """``value`` without any secret-named key (at any depth)."""
    if isinstance(value, dict):
        return {
            k: scrub(v)
            for k, v in value.items()
            if str(k).lower().replace("-", "_") not in SECRET_KEYS and str(k).lower() not in SECRET_KEYS
        }
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def pretty(value: Any) -> str:
    return json.dumps(scrub(value), indent=2, sort_keys=True, default=str)


def strategy_of(row: dict[str, Any]) -> str:
    """The alert's strategy: the payload's ``strategy`` field when the message has one
    (kept in the alert's ``raw`` fields), else who sent it (``token:<label>``, ``hmac``)."""
    payload = row.get("payload") or {}
    raw = payload.get("raw") or {} if isinstance(payload, dict) else {}
    value = raw.get("strategy") if isinstance(raw, dict) else None
    return str(value) if value not in (None, "") else (row.get("principal") or "")


@dataclass
class FeedFilter:
    state: str = ""
    account: str = ""
    symbol: str = ""
    strategy: str = ""
    since: float | None = None  # unix seconds
    until: float | None = None
    limit: int = 100

    @classmethod
    def from_args(cls, args: Any) -> FeedFilter:
        def text(name: str) -> str:
            return (args.get(name) or "").strip()[:64]

        state = text("state")
        return cls(
            state=state if state in ALERT_STATES or state == PROBLEMS else "",
            account=text("account"),
            symbol=text("symbol"),
            strategy=text("strategy"),
            since=_time(text("since")),
            until=_time(text("until")),
            limit=min(max(_int(text("limit"), 100), 1), 500),
        )

    def query(self) -> dict[str, str]:
        """The filter as query parameters (for links and the feed's polling URL)."""
        out = {
            k: v
            for k, v in (
                ("state", self.state),
                ("account", self.account),
                ("symbol", self.symbol),
                ("strategy", self.strategy),
            )
            if v
        }
        if self.since is not None:
            out["since"] = _iso(self.since)
        if self.until is not None:
            out["until"] = _iso(self.until)
        return out

    def matches(self, row: dict[str, Any]) -> bool:
        if self.state == PROBLEMS and row.get("state") not in REFUSED_STATES:
            return False
        if self.account and (row.get("account") or "").lower() != self.account.lower():
            return False
        if self.symbol and self.symbol.upper() not in (row.get("symbol") or "").upper():
            return False
        if self.strategy and self.strategy.lower() not in strategy_of(row).lower():
            return False
        received = row.get("received_at") or 0
        if self.since is not None and received < self.since:
            return False
        return not (self.until is not None and received > self.until)


async def alert_feed(journal: Any, feed: FeedFilter) -> list[dict[str, Any]]:
    """The newest alerts that pass ``feed``, newest first."""
    state = feed.state if feed.state in ALERT_STATES else None
    scan = (
        feed.limit
        if not (feed.account or feed.symbol or feed.strategy or feed.since or feed.until or feed.state == PROBLEMS)
        else 1000
    )
    rows = await journal.list(limit=scan, state=state)
    out = []
    for row in rows:
        if feed.matches(row):
            out.append(
                {
                    **{
                        k: row.get(k)
                        for k in (
                            "alert_id",
                            "received_at",
                            "updated_at",
                            "account",
                            "symbol",
                            "side",
                            "amount",
                            "state",
                            "error_code",
                            "duplicates",
                            "principal",
                        )
                    },
                    "strategy": strategy_of(row),
                }
            )
        if len(out) >= feed.limit:
            break
    return out


# ---------------------------------------------------------------- one alert


@dataclass
class Step:
    name: str
    at: float | None
    note: str = ""
    since_previous_ms: float | None = None
    since_received_ms: float | None = None


def timeline(row: dict[str, Any]) -> list[Step]:
    """received → authenticated → journaled → sent → answered → outcome, from the journal.

    Steps the journal has no time for are listed without one (older rows, alerts that
    never reached the exchange)."""
    orders = row.get("orders") or []
    received = row.get("received_at")
    sent = min((o["started_at"] for o in orders if o.get("started_at")), default=None)
    answered = max((o["finished_at"] for o in orders if o.get("finished_at")), default=None)
    state = row.get("state") or "?"
    final_at = row.get("updated_at") if state not in ("received", "submitting") else None
    steps = [
        Step("received", received),
        Step(
            "authenticated", row.get("authenticated_at"), "" if row.get("authenticated_at") else "not timed separately"
        ),
        Step("journaled", row.get("journaled_at"), "" if row.get("journaled_at") else "not timed separately"),
        Step("sent", sent, "" if sent else "nothing was sent to the exchange"),
        Step("answered", answered, f"{len(orders)} attempt(s)" if orders else ""),
        Step(state, final_at, _reason(row)),
    ]
    previous = None
    for step in steps:
        if step.at is None:
            continue
        if received is not None:
            step.since_received_ms = round((step.at - received) * 1000, 1)
        if previous is not None:
            step.since_previous_ms = round((step.at - previous) * 1000, 1)
        previous = step.at
    return steps


def _reason(row: dict[str, Any]) -> str:
    if row.get("error_code") or row.get("error_message"):
        return ": ".join(p for p in (row.get("error_code"), row.get("error_message")) if p)
    return ""


def alert_view(row: dict[str, Any]) -> dict[str, Any]:
    """One journaled alert, shaped for its page (no secret: see ``scrub``)."""
    orders = []
    for order in row.get("orders") or []:
        response = order.get("response") or {}
        orders.append(
            {
                "attempt": order.get("attempt"),
                "client_order_id": order.get("client_order_id"),
                "exchange_order_id": response.get("order_id") if isinstance(response, dict) else None,
                "account": order.get("account"),
                "exchange": order.get("exchange"),
                "route": order.get("route"),
                "state": order.get("state"),
                "started_at": order.get("started_at"),
                "finished_at": order.get("finished_at"),
                "round_trip_ms": round((order["finished_at"] - order["started_at"]) * 1000, 1)
                if order.get("finished_at") and order.get("started_at")
                else None,
                "request": pretty({k: v for k, v in (order.get("request") or {}).items() if v not in (None, {}, [])}),
                "response": pretty(response) if response else "",
                "error": order.get("error") or "",
            }
        )
    payload = row.get("payload") or {}
    raw = payload.get("raw") if isinstance(payload, dict) else None
    normalised = (
        {k: v for k, v in payload.items() if k != "raw" and v not in (None, {}, [], "")}
        if isinstance(payload, dict)
        else {}
    )
    return {
        "alert_id": row.get("alert_id"),
        "state": row.get("state"),
        "refused": row.get("state") in REFUSED_STATES,
        "reason": _reason(row),
        "http_status": row.get("http_status"),
        "account": row.get("account"),
        "symbol": row.get("symbol"),
        "side": row.get("side"),
        "amount": row.get("amount"),
        "principal": row.get("principal"),
        "strategy": strategy_of(row),
        "duplicates": row.get("duplicates") or 0,
        "attempts": len(orders),
        "timeline": timeline(row),
        "payload": pretty(raw or {}),
        "normalised": pretty(normalised),
        "result": pretty(row.get("result")) if row.get("result") else "",
        "orders": orders,
    }


# ---------------------------------------------------------------- latency


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def latency_series(
    rows: list[dict[str, Any]], bucket: int = 60, start: float | None = None, end: float | None = None
) -> dict[str, Any]:
    """From ``journal.timings`` rows: per time bucket, p50/p99 of the answer latency
    (received → the exchange's last answer) and per account the p50 exchange round trip
    (each attempt's sent → answered), plus counts of alerts by state."""
    answer: dict[int, list[float]] = {}
    trips: dict[str, dict[int, list[float]]] = {}
    states: dict[str, int] = {}
    for row in rows:
        states[row["state"]] = states.get(row["state"], 0) + 1
        slot = int(row["received_at"] // bucket * bucket)
        finished = [o["finished_at"] for o in row["orders"] if o.get("finished_at")]
        if finished:
            answer.setdefault(slot, []).append((max(finished) - row["received_at"]) * 1000)
        for order in row["orders"]:
            if order.get("finished_at") and order.get("started_at"):
                trips.setdefault(order["account"], {}).setdefault(slot, []).append(
                    (order["finished_at"] - order["started_at"]) * 1000
                )
    slots = sorted(set(answer) | {s for per in trips.values() for s in per})
    accounts = sorted(trips)
    return {
        "bucket_s": bucket,
        "from": start if start is not None else (slots[0] if slots else None),
        "to": end if end is not None else (slots[-1] + bucket if slots else None),
        "x": slots,
        "answer_p50": [_round(percentile(answer.get(s, []), 0.5)) for s in slots],
        "answer_p99": [_round(percentile(answer.get(s, []), 0.99)) for s in slots],
        "accounts": accounts,
        "round_trip_p50": {a: [_round(percentile(trips[a].get(s, []), 0.5)) for s in slots] for a in accounts},
        "states": dict(sorted(states.items())),
        "alerts": len(rows),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# ---------------------------------------------------------------- accounts


@dataclass
class AccountView:
    name: str
    exchange: str
    ready: bool
    route: str
    mode: str  # paper | testnet | live
    error: str = ""
    note: str = ""
    snapshot: dict[str, Any] | None = None
    snapshot_error: str = ""
    status: dict[str, Any] = field(default_factory=dict)


async def account_views(executors: Any, *, timeout: float = 10.0) -> list[AccountView]:
    """Every configured account: ready or not (and why), route, mode, and what its
    executor reports of balances, positions and open orders (read now, concurrently)."""

    async def one(executor: Any) -> AccountView:
        status = executor.status()
        mode = "paper" if executor.route == "paper" else "testnet" if status.get("sandbox") else "live"
        view = AccountView(
            executor.account,
            executor.exchange,
            bool(executor.ready),
            executor.route,
            mode,
            error=executor.error or "",
            note=status.get("route_note", ""),
            status=scrub(status),
        )
        if not executor.ready:
            view.snapshot_error = "the account is not ready"
            return view
        try:
            snapshot = await asyncio.wait_for(executor.account_snapshot(), timeout)
        except TimeoutError:
            view.snapshot_error = f"the exchange did not answer within {timeout:.0f} s"
            return view
        except Exception as exc:
            view.snapshot_error = f"{type(exc).__name__}: {str(exc)[:200]}"
            return view
        if snapshot is None:
            view.snapshot_error = "this account's executor cannot report balances, positions or open orders"
        else:
            view.snapshot = scrub(snapshot)
        return view

    return list(await asyncio.gather(*(one(e) for e in executors)))


# ---------------------------------------------------------------- helpers


def _int(text: str, default: int) -> int:
    try:
        return int(text)
    except ValueError:
        return default


def _time(text: str) -> float | None:
    """An ISO date-time (``2026-01-02T03:04``, as a datetime-local input sends; UTC) or
    unix seconds."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M", time.gmtime(ts))
