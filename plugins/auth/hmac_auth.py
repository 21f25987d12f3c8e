"""HMAC authentication: ``X-Timestamp`` and ``X-Signature`` headers (the seed's secure mode).

The signature is the hex HMAC-SHA256 keyed with WEBHOOK_SECRET, over either
``"<X-Timestamp>.<raw body>"`` (recommended: the timestamp is bound to the body) or the
raw body alone (the seed's form). A request with ``X-Signature`` is decided here: accepted
or rejected, never passed on to the token plugin. Without it, this plugin abstains.
"""

from __future__ import annotations

import hashlib
import hmac

from core.config import PluginOptions
from core.models import AuthResult, InboundRequest
from core.plugins import hookimpl


def sign(secret: str, body: bytes, timestamp: str | None = None) -> str:
    """The signature a sender puts in X-Signature (timestamp-bound when ``timestamp`` given)."""
    message = body if timestamp is None else timestamp.encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


class Plugin:
    class Options(PluginOptions):
        # Accept the seed's body-only signature (its replay protection relies on the cache).
        allow_body_only: bool = True

    def __init__(self, options: "Plugin.Options"):
        self.options = options

    @hookimpl
    def authenticate(self, request: InboundRequest, router) -> AuthResult | None:
        signature = request.header("x-signature")
        if signature is None:
            return None
        secret = router.settings.webhook_secret
        if not secret:
            return AuthResult.reject("X-Signature sent but WEBHOOK_SECRET is not configured")
        timestamp = request.header("x-timestamp") or ""
        try:
            sent_at = int(timestamp)
        except ValueError:
            return AuthResult.reject("X-Timestamp missing or not an integer")
        window = router.settings.signature_cache_ttl
        if abs(request.received_at - sent_at) > window:
            return AuthResult.reject(f"X-Timestamp outside ±{window}s")
        signature = signature.strip().lower()
        bound = hmac.compare_digest(signature, sign(secret, request.body, timestamp))
        body_only = self.options.allow_body_only and hmac.compare_digest(signature, sign(secret, request.body))
        if not (bound or body_only):
            return AuthResult.reject("bad signature")
        return AuthResult.accept("hmac")
