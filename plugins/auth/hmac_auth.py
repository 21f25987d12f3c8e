"""HMAC authentication: ``X-Timestamp`` and ``X-Signature`` headers (the seed's secure mode).

The signature is the hex HMAC-SHA256 keyed with WEBHOOK_SECRET, over either
``"<X-Timestamp>.<raw body>"`` (recommended: the timestamp is bound to the body) or the
raw body alone (the seed's form, ``allow_body_only``). A request with ``X-Signature`` is
decided here: accepted or rejected, never passed on to the token plugin. Without it,
this plugin abstains.

A timestamp more than SIGNATURE_CACHE_TTL seconds from the server's clock is refused,
and **a request accepted once is never accepted again**: every signature that verified
is recorded in the replay cache (``core.replay``, ``DATA_DIR/replay.sqlite3``: shared by
all workers and processes on that DATA_DIR, kept across restarts) in the same atomic
step that checks it.

* Timestamp-bound signatures are remembered until their timestamp leaves the ±TTL
  window; after that the timestamp check refuses them, and a fresh timestamp needs a
  new signature, which needs the secret. (At least a day, in fact: a window widened by a
  restart with a larger SIGNATURE_CACHE_TTL must not revive signatures seen before.)
* Body-only signatures do not depend on the timestamp: the same signature replayed later
  with a fresh ``X-Timestamp`` would pass the window. They are remembered for ever, so a
  sender using that form must make every body unique (an ``id`` or a time in it).

Only signatures that verified are recorded, so no one without the secret can fill the
cache. The cache is keyed by the signature's hash, whatever the form.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from core.config import PluginOptions
from core.models import AuthResult, InboundRequest
from core.plugins import hookimpl
from core.replay import ReplayCache

TIMESTAMP = re.compile(r"^[0-9]{1,12}$")  # ASCII digits only: int() would take "1_700", "+17", "١٧"
REMEMBER_BOUND_AT_LEAST = 86400  # seconds; see the module docstring


def sign(secret: str, body: bytes, timestamp: str | None = None) -> str:
    """The signature a sender puts in X-Signature (timestamp-bound when ``timestamp`` given)."""
    message = body if timestamp is None else timestamp.encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def replay_key(signature: bytes) -> str:
    return hashlib.sha256(b"hmac-signature:" + signature).hexdigest()


class Plugin:
    class Options(PluginOptions):
        # Accept the seed's body-only signature. Its signatures are remembered for ever, so
        # every body must be unique (an "id" or a time in it). Prefer "<timestamp>.<body>".
        allow_body_only: bool = True

    def __init__(self, options: "Plugin.Options"):
        self.options = options
        self.replay: ReplayCache | None = None

    @hookimpl
    def router_startup(self, router) -> None:
        self.replay = router.state.replay_cache()

    @hookimpl
    async def router_shutdown(self, router) -> None:
        if self.replay is not None:
            await self.replay.close()
            self.replay = None

    @hookimpl
    async def authenticate(self, request: InboundRequest, router) -> AuthResult | None:
        header = request.header("x-signature")
        if header is None:
            return None
        secret = router.settings.webhook_secret
        timestamp = request.header("x-timestamp") or ""
        # Both digests are computed and compared whatever is wrong with the request, in
        # constant time, so every refusal does the same work.
        presented = header.strip().lower().encode("ascii", "replace")
        bound = hmac.compare_digest(presented, sign(secret, request.body, timestamp).encode())
        body_only = hmac.compare_digest(presented, sign(secret, request.body).encode()) and self.options.allow_body_only
        if not secret:
            return AuthResult.reject("X-Signature sent but WEBHOOK_SECRET is not configured")
        if not TIMESTAMP.match(timestamp):
            return AuthResult.reject("X-Timestamp missing or not an integer")
        sent_at = int(timestamp)
        window = router.settings.signature_cache_ttl
        if abs(request.received_at - sent_at) > window:
            return AuthResult.reject(f"X-Timestamp outside ±{window}s")
        if not (bound or body_only):
            return AuthResult.reject("bad signature")
        # Bound: refused by the window check once the timestamp is older than this.
        expires_at = sent_at + max(window, REMEMBER_BOUND_AT_LEAST) + 1 if bound else None
        assert self.replay is not None, "router_startup opens the replay cache"
        if not await self.replay.add_if_absent(replay_key(presented), expires_at):
            return AuthResult.reject("replayed signature (accepted before)")
        return AuthResult.accept("hmac")
