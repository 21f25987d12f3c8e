"""Token authentication: a ``"token"`` field in the JSON body (the classic interface's fallback, for
TradingView, which cannot set headers).

Tokens are issued, listed and revoked with ``python manage_tokens.py`` and stored hashed
in ``DATA_DIR/tokens.sqlite3`` (``core.tokens``). A request with ``X-Signature`` is
HMAC's to decide: this plugin abstains on it. Otherwise a body with a ``token`` field is
accepted when the token is known and not expired (principal ``token:<label>``, scoped to
the accounts it was issued for: ``manage_tokens.py issue --account NAME``), and
refused with the one 401 body when it is unknown, revoked or expired; the work done is
the same for each (one hash, one indexed lookup). A token in a header or the query
string is not looked at. The token is removed from the payload here, so no later stage
(transforms, the journal, plugins) ever sees it.
"""

from __future__ import annotations

from core.models import AuthResult, InboundRequest
from core.plugins import hookimpl
from core.tokens import TokenStore

FIELD = "token"


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
        if FIELD not in request.payload:
            return None
        token = request.payload.pop(FIELD)
        if request.header("x-signature") is not None:
            return None  # decided by HMAC
        # A non-string token is looked up as "" so that it costs what any other one does.
        assert self.store is not None, "router_startup opens the token store"
        info = await self.store.verify(token if isinstance(token, str) else "")
        if info is None:
            return AuthResult.reject("unknown, expired or revoked token")
        # the accounts it was issued for, and what else it may do (e.g. "control")
        return AuthResult.accept(info.principal, info.scope, scopes=tuple(getattr(info, "scopes", ()) or ()))
