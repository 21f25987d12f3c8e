"""Request intake: what every HTTP request must get through before the app sees it.

An ASGI middleware inside ``core.web.proxy``'s (so the client address is the one
TRUSTED_PROXIES established), in front of Quart:

* **In-flight cap per client address**, checked *before the body is read*: at most
  ``router.max_inflight_per_address`` requests of one address (an IPv6 /64; its /48
  ``core.web.ratelimit.IPV6_SITE_SCALE`` times as many; an address proven by a recent
  authentication ``PROVEN_FACTOR`` times as many) are between their headers and their
  answer in this worker at once; the next one is answered 429 at once, and its connection
  closed, without waiting for its body (after ``REFUSAL_DELAY``, so that reconnecting at
  once buys no more than one try per connection per second). Slow senders from one address cannot hold more
  than that many of the worker's connections and tasks, whatever RATE_LIMIT_KEY is.
* **A deadline for the body**: the whole body must arrive within ``router.body_timeout``
  seconds of the headers, else 408 and the connection is closed (Quart's own timeout is
  60 s). The body is read here, bounded by ``router.max_body_bytes`` (413), and handed to
  the app whole. The deadline's timer is armed only around a part of the body that must
  be waited for: a body that came with the headers (already queued by hypercorn) is taken
  at once, with no timeout to enter or timer to set and cancel. The headers have
  hypercorn's deadline: ``keep_alive_timeout`` in hypercorn.toml, counted from the
  connection's start or the end of its last answer.
* **No log flood**: these refusals are logged at most once per address (key) per
  ``LOG_INTERVAL`` seconds, with the number refused since the last line; hypercorn's
  access log (``hypercorn.access``) likewise writes at most one line per address per
  interval for the requests refused here (``quiet_refusals_in_access_log``).

* **Proven senders first**: an address that authenticated recently (``vouch``, for
  ``PROVEN_SECONDS``) goes straight through; POSTs from every other address are handled
  at most ``UNPROVEN_AT_ONCE`` at a time per worker, in arrival order, each until it has
  authenticated (the app calls ``scope[AUTHENTICATED]()``) or been answered; a wait
  longer than ``body_timeout`` is answered 503 with Retry-After. Thousands of costly anonymous bodies
  then queue among themselves instead of each slowing the event loop that the alerts of
  a known sender (TradingView's four addresses, a signed client) need.

A body refused here (408, 413) charges the failure budget of its address, like any
request refused before it authenticated (``on_refused``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGIReceiveEvent, ASGISendCallable, HTTPScope, Scope

from core.web.asgi import BODY
from core.web.proxy import extend_scope
from core.web.ratelimit import address_key, address_keys

log = logging.getLogger(__name__)

AUTHENTICATED = "intake.authenticated"  # scope key: the callable the app calls once a request authenticated
UNPROVEN_AT_ONCE = 8  # POSTs from addresses not yet proven handled at once per worker
PROVEN_SECONDS = 3600.0  # how long a successful authentication vouches for its address
PROVEN_FACTOR = 8  # a proven address may have this many times max_inflight in flight (bursts of alerts)
MAX_PROVEN = 10_000
REFUSAL_DELAY = 1.0  # seconds before an over-the-cap request gets its 429
LOG_INTERVAL = 60.0  # seconds between two log lines about one address's refusals
MAX_LOG_KEYS = 10_000


class RefusalLog:
    """At most one line per key per ``interval``; counts the rest."""

    def __init__(self, interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str) -> bool:
        """Whether a line about ``key`` may be written now (and, if so, it is counted as written)."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        self._last.pop(key, None)
        self._last[key] = now
        if len(self._last) > MAX_LOG_KEYS:  # oldest first: rotating addresses cannot grow it
            for old in list(self._last)[: len(self._last) - MAX_LOG_KEYS]:
                del self._last[old]
                self._suppressed.pop(old, None)
        return True

    def note(self, key: str, message: str) -> bool:
        """Log ``message`` about ``key`` unless a line about it was written within the interval."""
        more = self._suppressed.get(key, 0)
        if not self.allow(key):
            return False
        self._suppressed.pop(key, None)
        suffix = f" ({more} more from it since the last line)" if more else ""
        log.warning("%s: %s%s", key, message, suffix)
        return True


class RefusedAccessFilter(logging.Filter):
    """Drops hypercorn access lines of requests ``IntakeGuard`` refused beyond one per
    address per interval; every other line passes.

    Records reach filters already formatted (``core.observability.redaction``), and a line's path is
    the client's to write, so a line is recognised by its first field only — hypercorn's
    ``host:port`` of the connection, which the guard noted when it refused it."""

    def __init__(self, interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.refusals = RefusalLog(interval, clock)

    def filter(self, record: logging.LogRecord) -> bool:
        peer = str(record.msg).split(" ", 1)[0]
        host = _REFUSED_PEERS.pop(peer, None)
        return host is None or self.refusals.allow(address_key(host))


_REFUSED_PEERS: dict[str, str] = {}  # hypercorn's "host:port" of a refused connection → its client's address
MAX_REFUSED_PEERS = 10_000


def authenticated_callback(scope: Mapping[str, object]) -> Callable[[], None] | None:
    """What the app calls once the request of ``scope`` authenticated (``AUTHENTICATED``);
    ``None`` when the request did not come through ``IntakeGuard``."""
    callback = scope.get(AUTHENTICATED)
    return callback if callable(callback) else None


def _note_refused_peer(scope: HTTPScope, address: str) -> None:
    peer = scope.get("direct_client") or scope.get("client")
    if not isinstance(peer, tuple) or len(peer) < 2:
        return
    _REFUSED_PEERS[f"{peer[0]}:{peer[1]}"] = address
    while len(_REFUSED_PEERS) > MAX_REFUSED_PEERS:
        del _REFUSED_PEERS[next(iter(_REFUSED_PEERS))]


def quiet_refusals_in_access_log() -> None:
    """Install ``RefusedAccessFilter`` on hypercorn's access logger (once per process)."""
    logger = logging.getLogger("hypercorn.access")
    if not any(isinstance(f, RefusedAccessFilter) for f in logger.filters):
        logger.addFilter(RefusedAccessFilter())


class IntakeGuard:
    """The ASGI middleware; ``configure()`` at startup (defaults apply until then)."""

    def __init__(self, app: ASGIFramework, *, max_inflight: int = 64, body_timeout: float = 5.0, max_body: int = 65536):
        self.app = app
        self.max_inflight = max_inflight
        self.body_timeout = body_timeout
        self.max_body = max_body
        self.on_refused: Callable[[str], Awaitable[None]] | None = None
        self.refusals = RefusalLog()
        self._inflight: dict[str, int] = {}
        self._proven: dict[str, float] = {}
        self._unproven_slots: asyncio.Semaphore | None = None

    def vouch(self, address: str) -> None:
        """``address`` authenticated: its requests skip the queue of unproven ones for a while."""
        key = address_key(address)
        self._proven.pop(key, None)
        self._proven[key] = time.monotonic() + PROVEN_SECONDS
        while len(self._proven) > MAX_PROVEN:
            del self._proven[next(iter(self._proven))]

    def proven(self, address: str) -> bool:
        until = self._proven.get(address_key(address))
        return until is not None and until > time.monotonic()

    def configure(
        self,
        *,
        max_inflight: int,
        body_timeout: float,
        max_body: int,
        on_refused: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.max_inflight, self.body_timeout, self.max_body = max_inflight, body_timeout, max_body
        self.on_refused = on_refused

    def inflight(self, address: str) -> int:
        return self._inflight.get(address_key(address), 0)

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address = client[0] if client else ""
        keys = address_keys(address)
        cap = self.max_inflight * (PROVEN_FACTOR if self.proven(address) else 1)
        if any(self._inflight.get(key, 0) >= cap * scale for key, scale in keys):
            self.refusals.note(keys[-1][0], f"requests refused: more than {cap} in flight")
            _note_refused_peer(scope, address)
            # Answered after a pause that costs no CPU: a sender reconnecting at once gets
            # through at most its connection count per REFUSAL_DELAY, not as fast as we answer.
            await asyncio.sleep(REFUSAL_DELAY)
            await _answer(
                send,
                429,
                "too_many_in_flight",
                "too many requests from this address are in progress; retry later",
                {"retry-after": "1"},
            )
            return
        for key, _ in keys:
            self._inflight[key] = self._inflight.get(key, 0) + 1
        try:
            await self._admitted(scope, receive, send, address)
        finally:
            for key, _ in keys:
                left = self._inflight[key] - 1
                if left:
                    self._inflight[key] = left
                else:
                    del self._inflight[key]

    async def _admitted(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable, address: str
    ) -> None:
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body:
            await self._refuse(
                scope, send, address, 413, "payload_too_large", f"the body is larger than {self.max_body} bytes"
            )
            return
        chunks: list[bytes] = []
        size = 0
        deadline = asyncio.get_running_loop().time() + self.body_timeout
        more = True
        while more:
            message = _queued(receive)
            if message is None:
                # A message to wait for, by the deadline of the whole body (asyncio.timeout_at,
                # not wait_for: no task per receive); none when the body came with the headers.
                try:
                    async with asyncio.timeout_at(deadline):
                        message = await receive()
                except TimeoutError:
                    await self._refuse(
                        scope,
                        send,
                        address,
                        408,
                        "body_timeout",
                        f"the body did not arrive within {self.body_timeout:g} s",
                    )
                    return
            if message["type"] != "http.request":
                return  # the client went away: nothing to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                break
            chunks.append(chunk)
            more = message.get("more_body", False)
        if size > self.max_body:
            await self._refuse(
                scope, send, address, 413, "payload_too_large", f"the body is larger than {self.max_body} bytes"
            )
            return
        body = b"".join(chunks)
        if scope.get("method") == "POST" and not self.proven(address):
            if self._unproven_slots is None:
                self._unproven_slots = asyncio.Semaphore(UNPROVEN_AT_ONCE)
            try:
                if self._unproven_slots.locked():
                    async with asyncio.timeout(self.body_timeout):
                        await self._unproven_slots.acquire()
                else:
                    await self._unproven_slots.acquire()  # a free slot: taken at once, no timer
            except TimeoutError:
                self.refusals.note(address_keys(address)[-1][0], "request refused with 503 (busy)")
                _note_refused_peer(scope, address)
                await _answer(send, 503, "busy", "the server is busy; retry later", {"retry-after": "5"})
                return
            slots = self._unproven_slots
            held = True

            def authenticated() -> None:
                """Called by the app once the request authenticated: the address is proven
                and the slot goes to the next one (the order need not finish first)."""
                nonlocal held
                self.vouch(address)
                if held:
                    held = False
                    slots.release()

            try:
                await self._deliver(scope, authenticated, receive, send, body)
            finally:
                if held:
                    slots.release()
            return
        await self._deliver(scope, lambda: self.vouch(address), receive, send, body)

    async def _deliver(
        self,
        scope: HTTPScope,
        authenticated: Callable[[], None],
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        body: bytes,
    ) -> None:
        """Hand the request on with its whole body: in the scope (``core.web.asgi.BODY``, which
        Quart's connection takes without a task of its own) and replayed by ``receive``."""
        scope = extend_scope(scope, {AUTHENTICATED: authenticated, BODY: body})
        delivered = False

        async def replay() -> ASGIReceiveEvent:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(
        self, scope: HTTPScope, send: ASGISendCallable, address: str, status: int, code: str, message: str
    ) -> None:
        self.refusals.note(address_keys(address)[-1][0], f"request refused with {status} ({code})")
        _note_refused_peer(scope, address)
        if self.on_refused is not None:
            try:
                await self.on_refused(address)
            except Exception as exc:  # the store being down must not turn a refusal into a 500
                log.debug("charging the failure budget of %s failed: %s", address, exc)
        await _answer(send, status, code, message)


def _queued(receive: ASGIReceiveCallable) -> ASGIReceiveEvent | None:
    """The next message, if the server has it already: hypercorn's ``receive`` is the ``get``
    of an ``asyncio.Queue`` of the request's messages. ``None`` when it has none yet (or
    ``receive`` is something else): then it must be awaited."""
    queue = getattr(receive, "__self__", None)
    if type(queue) is asyncio.Queue and getattr(receive, "__func__", None) is asyncio.Queue.get and queue.qsize():
        message: ASGIReceiveEvent = queue.get_nowait()
        return message
    return None


def _content_length(scope: HTTPScope) -> int | None:
    for name, value in scope.get("headers") or []:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _answer(
    send: ASGISendCallable, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})
