"""HMAC authentication: ``X-Timestamp`` and ``X-Signature`` headers (the classic interface's secure mode).

The signature is the hex HMAC-SHA256 keyed with WEBHOOK_SECRET, over either
``"<X-Timestamp>.<raw body>"`` (recommended: the timestamp is bound to the body) or the
raw body alone (the classic form, ``allow_body_only``).

**Keys and scope.** WEBHOOK_SECRET is the owner's key: principal ``hmac``, every account,
alert ids as sent. ``hmac.keys`` in plugins.yaml adds named keys for other senders, each
with the accounts it may trade on (none listed: the default account only; ``*``: every
account); a named key's principal is ``hmac:<name>``, which namespaces its alert ids
(``GET /alerts/<id>`` shows it only its own). A request with ``X-Signature`` is
decided here: accepted or rejected, never passed on to the token plugin. Without it,
this plugin abstains.

A timestamp more than SIGNATURE_CACHE_TTL seconds from the server's clock is refused,
and **a request accepted once is never accepted again**: a signature that verified is
the request's replay key (``AuthResult.replay_key``), which the router refuses if it saw
it before and records in the journal in the same atomic step as the alert's admission
(``core.pipeline.replays``: shared by all workers and processes on the state store, kept
across restarts). A request refused after it authenticated (nothing admitted) records
nothing.

* Timestamp-bound signatures are remembered until their timestamp leaves the ±TTL
  window; after that the timestamp check refuses them, and a fresh timestamp needs a
  new signature, which needs the secret. (At least a day, in fact: a window widened by a
  restart with a larger SIGNATURE_CACHE_TTL must not revive signatures seen before.)
* Body-only signatures do not depend on the timestamp: the same signature replayed later
  with a fresh ``X-Timestamp`` would pass the window. They are remembered for ever, so a
  sender using that form must make every body unique (an ``id`` or a time in it).

Only signatures that verified are recorded, so no one without the secret can fill the
journal with keys. The key is the signature's hash, whatever the form.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from pydantic import Field, field_validator

from core.config import PluginOptions
from core.errors import ConfigError
from core.hooks.manager import hookimpl
from core.observability.redaction import REDACTOR
from core.pipeline.models import NAME_PATTERN, AuthResult, InboundRequest

TIMESTAMP = re.compile(r"^[0-9]{1,12}$")  # ASCII digits only: int() would take "1_700", "+17", "١٧"
REMEMBER_BOUND_AT_LEAST = 86400  # seconds; see the module docstring


def sign(secret: str, body: bytes, timestamp: str | None = None) -> str:
    """The signature a sender puts in X-Signature (timestamp-bound when ``timestamp`` given)."""
    message = body if timestamp is None else timestamp.encode() + b"." + body
    return hmac.digest(secret.encode(), message, "sha256").hex()  # one-shot: no HMAC object


def replay_key(signature: bytes) -> str:
    return hashlib.sha256(b"hmac-signature:" + signature).hexdigest()


class SigningKey(PluginOptions):
    """A named key of ``hmac.keys``: its secret and the accounts it may trade on."""

    secret: str = Field(min_length=16, repr=False)
    # Account names; empty: the default account only; ["*"]: every account.
    accounts: list[str] = Field(default_factory=list)

    @field_validator("accounts")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            if name != "*" and not NAME_PATTERN.match(name):
                raise ValueError(f"account {name!r}: 1-64 letters, digits or _ . - (or * for every account)")
        return value

    @property
    def scope(self) -> frozenset[str] | None:
        return None if "*" in self.accounts else frozenset(self.accounts)


class Plugin:
    class Options(PluginOptions):
        # Accept the classic body-only signature. Its signatures are remembered for ever, so
        # every body must be unique (an "id" or a time in it). Prefer "<timestamp>.<body>".
        allow_body_only: bool = True
        # Named keys besides WEBHOOK_SECRET (the owner's, every account): name → secret, accounts.
        keys: dict[str, SigningKey] = Field(default_factory=dict)

        @field_validator("keys")
        @classmethod
        def _key_names(cls, value: dict[str, SigningKey]) -> dict[str, SigningKey]:
            for name in value:
                if not NAME_PATTERN.match(name):
                    raise ValueError(f"key name {name!r}: 1-64 letters, digits or _ . -")
            if len({k.secret for k in value.values()}) != len(value):
                raise ValueError("two keys have the same secret")
            return value

    def __init__(self, options: Plugin.Options):
        self.options = options
        # (principal, secret, accounts): the owner's WEBHOOK_SECRET first, then the named keys.
        self.keys: list[tuple[str, str, frozenset[str] | None]] = []

    @hookimpl
    def router_startup(self, router) -> None:
        owner = router.settings.webhook_secret
        if owner and any(k.secret == owner for k in self.options.keys.values()):
            raise ConfigError(
                f"{router.settings.plugins_file}: plugin 'hmac': field 'keys': a key's secret is WEBHOOK_SECRET"
            )
        self.keys = [("hmac", owner, None)] if owner else []
        for name, key in self.options.keys.items():
            REDACTOR.add(key.secret, static=True)
            self.keys.append((f"hmac:{name}", key.secret, key.scope))

    @hookimpl
    async def authenticate(self, request: InboundRequest, router) -> AuthResult | None:
        header = request.header("x-signature")
        if header is None:
            return None
        timestamp = request.header("x-timestamp") or ""
        # Both digests of every key are computed and compared whatever is wrong with the
        # request, in constant time, so every refusal does the same work. Only a key whose
        # timestamp-bound signature matched skips its body-only one (one HMAC less for a good
        # alert): the time saved tells only that the signature is the key's, which no one
        # can present without having the key or a request it signed.
        presented = header.strip().lower().encode("ascii", "replace")
        bound = body_only = False
        principal, scope = "", None
        for name, secret, accounts in self.keys:
            key_bound = hmac.compare_digest(presented, sign(secret, request.body, timestamp).encode())
            key_body_only = (
                not key_bound
                and hmac.compare_digest(presented, sign(secret, request.body).encode())
                and self.options.allow_body_only
            )
            if (key_bound or key_body_only) and not principal:
                bound, body_only, principal, scope = key_bound, key_body_only, name, accounts
        if not self.keys:
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
        return AuthResult.accept(principal, scope, replay_key=replay_key(presented), replay_expires_at=expires_at)
