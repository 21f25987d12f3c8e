"""Dashboard sessions: a signed cookie, CSRF tokens bound to it, and logout.

No server-side session table: the cookie carries ``{sid, exp}`` signed with HMAC-SHA256
under a key derived from DASHBOARD_PASSWORD and WEBHOOK_SECRET, so every worker and every
machine of a deployment accepts it, and changing the password ends every session.
Logout records the session id until its expiry in the rate-limit store (SQLite under
DATA_DIR or Redis, shared by the workers), which every request checks.

CSRF: each state-changing request carries ``HMAC(key, "csrf", sid)`` in the form field
``csrf_token`` or the header ``X-CSRF-Token``; the login form carries one bound to a
random pre-login cookie instead. The cookies are SameSite=Strict as well.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any

SESSION_COOKIE = "dashboard_session"
LOGIN_COOKIE = "dashboard_login"
COOKIE_PATH = "/dashboard"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class Session:
    sid: str
    expires_at: float


class SessionSigner:
    """Signs and checks session cookies and CSRF tokens for one deployment."""

    def __init__(self, password: str, webhook_secret: str, ttl: int):
        material = b"dashboard-session\x00" + webhook_secret.encode()
        self._key = hmac.new(password.encode(), material, hashlib.sha256).digest()
        self._password = hashlib.sha256(password.encode()).digest()
        self.ttl = ttl

    def password_matches(self, candidate: str) -> bool:
        # Compare digests: constant time whatever the candidate's length.
        return hmac.compare_digest(self._password, hashlib.sha256(candidate.encode("utf-8", "surrogatepass")).digest())

    def _mac(self, *parts: str) -> str:
        return hmac.new(self._key, "\x00".join(parts).encode(), hashlib.sha256).hexdigest()

    def new_session(self, now: float | None = None) -> tuple[Session, str]:
        session = Session(secrets.token_hex(16), (now or time.time()) + self.ttl)
        body = base64.urlsafe_b64encode(json.dumps({"sid": session.sid, "exp": session.expires_at}).encode()).decode()
        return session, f"{body}.{self._mac('session', body)}"

    def read(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie carries, if its signature is ours and it has not expired."""
        if not cookie or "." not in cookie or len(cookie) > 512:
            return None
        body, _, mac = cookie.rpartition(".")
        if not hmac.compare_digest(mac, self._mac("session", body)):
            return None
        try:
            data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body.encode()))
            session = Session(str(data["sid"]), float(data["exp"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires_at > (now or time.time()) else None

    def csrf_token(self, session: Session) -> str:
        return self._mac("csrf", session.sid)

    def login_token(self, nonce: str) -> str:
        return self._mac("login", nonce)

    @staticmethod
    def same(expected: str, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(expected, presented or "")


class LoggedOut:
    """Session ids ended by logout, until they would have expired, as expiring counters of
    the durable rate-limit storage (a ``limits`` storage: ``incr``/``get``)."""

    def __init__(self, store: Any):
        self.store = store

    @staticmethod
    def _key(sid: str) -> str:
        return f"dashboard-logout-{sid}"

    async def add(self, session: Session) -> None:
        remaining = math.ceil(session.expires_at - time.time())
        if remaining > 0:
            await self.store.incr(self._key(session.sid), remaining)

    async def contains(self, session: Session) -> bool:
        return bool(await self.store.get(self._key(session.sid)))
