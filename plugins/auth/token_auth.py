"""Token authentication: a ``"token"`` field in the JSON body (the classic interface's fallback, for
TradingView, which cannot set headers).

Tokens are issued, listed and revoked with ``python manage_tokens.py`` and stored hashed
in the state store (``core.store.tokens``; ``DATA_DIR/tokens.sqlite3`` or Redis). A request with ``X-Signature`` is
HMAC's to decide: this plugin abstains on it. Otherwise a body with a ``token`` field is
accepted when the token is known and not expired (principal ``token:<label>``, scoped to
the accounts it was issued for: ``manage_tokens.py issue --account NAME``), and
refused with the one 401 body when it is unknown, revoked or expired; the work done is
the same for each (one hash, one indexed lookup). A token in a header or the query
string is not looked at. The token is removed from the payload (the router drops it
after parsing), so no later stage (transforms, the journal, plugins) ever sees it.

**The body is not parsed before the token is checked.** ``POST /webhook`` authenticates
on the raw body; ``extract_token`` finds the top-level ``"token"`` of a JSON object with
a few C-speed regular-expression passes over at most the first ``SCAN_LIMIT`` bytes,
without building the JSON. A 64 KiB body nested 31 deep cost ~33 ms of CPU to parse; a
request without a valid token now costs ~0.1 ms whatever its shape, and the JSON is
parsed (with ``router.max_json_depth``) only for a token holder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from core.hooks.manager import hookimpl
from core.pipeline.models import AuthResult, InboundRequest
from core.store.protocols import TokenStore
from core.store.tokens import ALL_ACCOUNTS, TokenInfo

FIELD = "token"
SCAN_LIMIT = 16384  # the "token" key must start within this many bytes of the body
MAX_CANDIDATES = 4  # "token" keys looked at (nested ones or decoys are skipped)
MISSING = object()
_CANDIDATE = re.compile(r'"token"\s*:\s*')
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string, escapes included (unrolled: linear)
# The json module's C string reader (not in typeshed): (text, index after the opening
# quote, strict) → (the string, the index after its closing quote).
_scanstring: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


def extract_token(body: bytes) -> object:
    """The value of the top-level ``"token"`` of a JSON-object body, read without parsing
    the rest; ``MISSING`` when there is none, ``None`` when its value is not a string.

    A candidate ``"token":`` counts when, with every string before it removed, nothing is
    left of a string (it is not inside one) and the brackets before it balance (it is a
    key of the top-level object). Bounded work: ``SCAN_LIMIT`` bytes, ``MAX_CANDIDATES``.
    """
    head = body[:SCAN_LIMIT].decode("utf-8", errors="replace")
    text = head.lstrip()
    if not text.startswith("{"):
        return MISSING
    for number, match in enumerate(_CANDIDATE.finditer(text)):
        if number >= MAX_CANDIDATES:
            break
        before = _STRING.sub("", text[1 : match.start()])
        if '"' in before or before.count("{") + before.count("[") != before.count("}") + before.count("]"):
            continue
        if before.strip() and not before.rstrip().endswith(","):
            continue
        if not text.startswith('"', match.end()):
            return None
        try:
            return _scanstring(text, match.end() + 1, True)[0]
        except ValueError:
            return None
    return MISSING


def principal(info: TokenInfo) -> str:
    """Who authenticated, for the journal and per-principal rate limits: ``token:<label or id>``."""
    return f"token:{info.label or info.id}"


def account_scope(info: TokenInfo) -> frozenset[str] | None:
    """``AuthResult.accounts``: None for every account, else the names (empty: the default)."""
    return None if ALL_ACCOUNTS in info.accounts else frozenset(info.accounts)


class Plugin:
    def __init__(self) -> None:
        self.store: TokenStore | None = None

    @hookimpl
    def router_startup(self, router) -> None:
        # NORMAL: the server only records last use and deletes expired tokens.
        self.store = router.state.token_store(synchronous="NORMAL")

    @hookimpl
    async def router_shutdown(self, router) -> None:
        if self.store is not None:
            await self.store.close()
            self.store = None

    @hookimpl
    async def authenticate(self, request: InboundRequest, router) -> AuthResult | None:
        token = request.payload.pop(FIELD, MISSING)
        if request.header("x-signature") is not None:
            return None  # decided by HMAC
        if token is MISSING and not request.payload:
            token = extract_token(request.body)  # POST /webhook: the body is not parsed yet
        if token is MISSING:
            return None
        # A non-string token is looked up as "" so that it costs what any other one does.
        assert self.store is not None, "router_startup opens the token store"
        info = await self.store.verify(token if isinstance(token, str) else "")
        if info is None:
            return AuthResult.reject("unknown, expired or revoked token")
        # the accounts it was issued for, and what else it may do (e.g. "control")
        return AuthResult.accept(principal(info), account_scope(info), scopes=info.scopes)
