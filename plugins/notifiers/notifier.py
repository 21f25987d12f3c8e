"""The machinery every notifier shares: enqueue on the hooks, deliver in the background.

``Notifier`` implements ``after_execute`` and ``on_error`` by building an ``AlertEvent``
(``core.pipeline.events``), filtering it by the configured ``events`` and putting it on a bounded
queue: nothing is awaited, so the webhook's answer never waits for a notification. A
full queue drops the notification and logs it. One sender task per notifier (started in
``router_startup``, with one HTTP session) posts each event to every destination with its
own timeout and a few retries (network errors, timeouts, 429 and 5xx), and is drained
for at most ``drain_timeout`` seconds at shutdown.

A subclass says where and what to post: ``deliveries(event)`` returns the HTTP requests
for one event; none at all (no destination configured) makes the notifier inert.
Destinations usually embed secrets (a Discord webhook URL, a bot token): subclasses
register them with the redactor, and only a ``label`` without the secret is ever logged.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import aiohttp
from pydantic import BeforeValidator, Field, field_validator

from core.config import PluginOptions
from core.hooks.manager import hookimpl
from core.observability.redaction import REDACTOR
from core.pipeline.events import AlertEvent, event_from_error, event_from_result
from core.pipeline.models import Alert, OrderRequest, OrderResult

if TYPE_CHECKING:
    from core.pipeline.router import Router

log = logging.getLogger(__name__)

# core.pipeline.events.EVENT_STATES, as a type (a test keeps the two equal).
EventState = Literal[
    "filled", "submitted", "canceled", "reconciled", "rejected", "failed", "unknown", "expired", "refused", "mismatch"
]
MAX_TEXT = 1900  # under Discord's 2000 characters (Telegram: 4096, Slack: 40000)
MAX_RETRY_AFTER = 60.0


def split_list(value: Any) -> Any:
    """``"a, b c"`` (as ``${VAR}`` gives it) → ``["a", "b", "c"]``; lists lose empty items."""
    if value is None:
        return []
    if isinstance(value, str):
        value = re.split(r"[,\s]+", value)
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if v is not None and str(v).strip()]
    return value


# A list option that also takes one comma- or space-separated string (from ${VAR}).
CommaList = Annotated[list[str], BeforeValidator(split_list)]


class NotifierOptions(PluginOptions):
    """Options every notifier has."""

    # Which outcomes to report: filled, submitted, reconciled, rejected, failed, unknown, expired,
    # refused (a risk limit or a halt), mismatch (a strategy's position differs from the exchange's).
    events: list[EventState] = Field(default_factory=lambda: list(get_args(EventState)))
    # Seconds one HTTP request may take, and further attempts after a failed one.
    timeout: float = Field(5.0, gt=0, le=300)
    retries: int = Field(2, ge=0, le=10)
    # First pause between attempts (doubling), unless the destination sends Retry-After.
    retry_delay: float = Field(1.0, ge=0, le=60)
    # Notifications waiting to be sent; beyond this they are dropped (and logged).
    queue_size: int = Field(1000, gt=0)
    # Seconds shutdown waits for queued notifications before giving up on them.
    drain_timeout: float = Field(5.0, ge=0)

    @field_validator("events", mode="before")
    @classmethod
    def _events(cls, value: Any) -> Any:
        return split_list(value)


@dataclass(frozen=True)
class Delivery:
    """One HTTP POST of a notification. ``label`` names the destination without its secret."""

    url: str
    json: dict[str, Any]
    label: str
    headers: dict[str, str] = field(default_factory=dict)


def format_message(event: AlertEvent) -> str:
    """The notification text: what happened, to which order, and why if it failed."""
    headline = {
        "filled": "Filled",
        "submitted": "Submitted (open at the exchange)",
        "reconciled": "Reconciled (found at the exchange)",
        "rejected": "Rejected",
        "failed": "Failed (nothing was executed)",
        "unknown": "Outcome unknown: check the exchange",
        "expired": "Expired (never sent)",
        "refused": "Refused by a risk limit (nothing was sent)",
        "mismatch": "Strategy position mismatch",
    }.get(event.state, event.state)
    order = f"{event.side} {event.amount} {event.symbol}"
    if event.order_type == "limit" and event.price:
        order += f" limit {event.price}"
    venue = event.exchange or "?"
    lines = [f"{headline}: {order} on {venue} (account {event.account or '?'})"]
    details = []
    if event.average:
        details.append(f"average price {event.average}")
    if event.filled and event.state in ("filled", "submitted", "reconciled"):
        details.append(f"filled {event.filled}")
    if event.order_status and event.state != "filled":
        details.append(f"status {event.order_status}")
    if event.order_id:
        details.append(f"order id {event.order_id}")
    if details:
        lines.append(", ".join(details))
    if event.error_code:
        lines.append(f"{event.error_code}: {event.error_message or ''}".rstrip(": "))
    lines.append(f"alert {event.alert_id}")
    text = REDACTOR.redact("\n".join(lines))
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


class Notifier:
    """Base of the notifier plugins. Subclasses set ``Options`` and ``deliveries``."""

    Options = NotifierOptions

    def __init__(self, options: NotifierOptions):
        self.options = options
        self.name = type(self).__module__.rsplit(".", 1)[-1]
        self.queue: asyncio.Queue[AlertEvent] | None = None
        self.dropped = 0
        self.sending: AlertEvent | None = None  # the event being delivered now
        self._session: aiohttp.ClientSession | None = None
        self._sender: asyncio.Task | None = None

    # ------------------------------------------------------------ what subclasses say

    @property
    def configured(self) -> bool:
        """Whether the notifier has anywhere to send to (else it is inert)."""
        return False

    def deliveries(self, event: AlertEvent) -> list[Delivery]:
        raise NotImplementedError

    # ------------------------------------------------------------ hooks

    @hookimpl
    def router_startup(self, router: Router) -> None:
        if not self.configured:
            return
        self.queue = asyncio.Queue(maxsize=self.options.queue_size)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.options.timeout))
        self._sender = asyncio.create_task(self._send_forever(), name=f"notifier-{self.name}")
        log.info("notifier %s: sending %s", self.name, ", ".join(self.options.events))

    @hookimpl
    def after_execute(self, alert: Alert, order: OrderRequest, result: OrderResult, state: str) -> None:
        if self.queue is not None:
            self.enqueue(event_from_result(alert, order, result, state))

    @hookimpl
    def on_error(
        self, alert: Alert, order: OrderRequest | None, error: BaseException, state: str, router: Router
    ) -> None:
        if self.queue is not None:
            self.enqueue(event_from_error(alert, order, error, state, router))

    @hookimpl
    async def router_shutdown(self) -> None:
        if self._sender is None or self.queue is None:
            return
        try:
            await asyncio.wait_for(self.queue.join(), timeout=self.options.drain_timeout)
        except TimeoutError:
            unsent = self.queue.qsize() + (self.sending is not None)
            log.warning(
                "notifier %s: %d notification(s) not sent at shutdown (drain_timeout %.1fs)",
                self.name,
                unsent,
                self.options.drain_timeout,
            )
        self._sender.cancel()
        await asyncio.gather(self._sender, return_exceptions=True)
        self._sender = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------ queueing and sending

    def enqueue(self, event: AlertEvent) -> None:
        """Never blocks: a full queue drops the event (and says so)."""
        assert self.queue is not None
        if event.state not in self.options.events:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning(
                "notifier %s: queue full (%d); dropped the notification of alert %s (%s)",
                self.name,
                self.options.queue_size,
                event.alert_id,
                event.state,
            )

    async def _send_forever(self) -> None:
        assert self.queue is not None
        while True:
            event = self.sending = await self.queue.get()
            try:
                await asyncio.gather(*(self._deliver(d, event) for d in self.deliveries(event)))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("notifier %s: notifying alert %s failed", self.name, event.alert_id)
            finally:
                self.sending = None
                self.queue.task_done()

    async def _deliver(self, delivery: Delivery, event: AlertEvent) -> bool:
        """POST with retries; the outcome is logged by label, never with the URL."""
        assert self._session is not None
        delay = self.options.retry_delay
        attempts = self.options.retries + 1
        why = ""
        for attempt in range(1, attempts + 1):
            pause = delay
            try:
                async with self._session.post(delivery.url, json=delivery.json, headers=delivery.headers) as response:
                    if response.status < 300:
                        return True
                    detail = REDACTOR.redact((await response.content.read(200)).decode(errors="replace"))
                    why = f"HTTP {response.status} {detail}".strip()
                    if response.status != 429 and response.status < 500:
                        break  # the destination refuses this request: sending it again cannot help
                    pause = _retry_after(response.headers.get("Retry-After"), delay)
            except (aiohttp.ClientError, TimeoutError) as exc:
                why = (
                    f"{type(exc).__name__} (timeout {self.options.timeout:g}s)"
                    if isinstance(exc, TimeoutError)
                    else type(exc).__name__
                )
            if attempt < attempts:
                await asyncio.sleep(pause)
                delay *= 2
        log.warning(
            "notifier %s: %s did not take the notification of alert %s after %d attempt(s): %s",
            self.name,
            delivery.label,
            event.alert_id,
            attempt,
            why,
        )
        return False


def _retry_after(header: str | None, default: float) -> float:
    try:
        return min(max(float(header), 0.0), MAX_RETRY_AFTER) if header else default
    except ValueError:
        return default


def register_secrets(*values: Any) -> None:
    """Destinations carry secrets (webhook URLs, bot tokens): never logged, never echoed."""
    for value in values:
        REDACTOR.add(value, static=True)
