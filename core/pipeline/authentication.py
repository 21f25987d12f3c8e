"""Authentication of a request: the ``authenticate`` hooks, the client address's failure
budget and the replay keys.

Every auth plugin answers (``AuthResult``): any refusal wins, else the first acceptance.
An acceptance with a replay key (HMAC: its signature) is refused when this process saw
the key lately (``core.pipeline.replays``). The failure budget of the client's address
(``core.web.ratelimit``) bounds how many bad credentials it may try.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from core.errors import Forbidden, Unauthorized, WebhookError
from core.hooks.manager import call_hook
from core.pipeline.models import AuthResult, InboundRequest
from core.pipeline.replays import RecentKeys
from core.web.ratelimit import AddressTurns

if TYPE_CHECKING:
    from core.pipeline.router import Router

log = logging.getLogger(__name__)


class Authenticator:
    """The router's authentication: who sent a request, within its address's budget."""

    def __init__(self, router: Router):
        self._router = router
        self.replays = RecentKeys()  # the replay keys of requests in progress and admitted lately
        self._unproven = AddressTurns()  # one authentication at a time per unproven address

    async def authenticate(self, request: InboundRequest) -> AuthResult:
        """Every plugin's answer combined: any refusal wins, else the first acceptance,
        refused when its replay key is one in progress or admitted lately."""
        router = self._router
        answers: list[AuthResult | None] = await call_hook(router.hook.authenticate, request=request, router=router)
        acceptance = None
        for answer in answers:  # any refusal wins; else the first acceptance
            if answer is None:
                continue
            if not answer.accepted:
                log.warning("request from %s refused: %s", request.remote_addr, answer.reason)
                return answer
            if acceptance is None:
                acceptance = answer
        if acceptance is None:
            log.warning("request from %s refused: no credentials", request.remote_addr)
            return AuthResult.reject("no credentials")
        if acceptance.replay_key is not None and not self.replays.claim(
            acceptance.replay_key, acceptance.replay_expires_at
        ):
            log.warning("request from %s refused: replayed signature (accepted before)", request.remote_addr)
            return AuthResult.reject("replayed signature (accepted before)")
        return acceptance

    async def remember_replay(self, request: InboundRequest, auth: AuthResult) -> None:
        """A signed request that admits no alert (a read, the kill switch): its replay key is
        recorded on its own now; 401 if the journal remembers it (a replay)."""
        router = self._router
        if auth.replay_key is not None and not await self.replays.remember(
            router.open_journal(), auth.replay_key, auth.replay_expires_at
        ):
            log.warning("request from %s refused: replayed signature (accepted before)", request.remote_addr)
            await router.limits.failed(request.remote_addr)
            raise Unauthorized("authentication failed")

    async def within_budget(self, request: InboundRequest, *, proven: bool = False) -> AuthResult:
        """``authenticate`` within the failure budget of the client's address.

        An address not ``proven`` (no request from it authenticated lately, ``core.web.intake``)
        authenticates one request at a time in this worker, with the budget reserved in one
        atomic step before and given back on success (``core.web.ratelimit``): concurrent bad
        requests from it cannot reach authentication beyond their budget, and a burst of
        good ones (TradingView's first alerts after a restart) waits its turn instead of
        spending the budget. A proven address (TradingView's, once one alert authenticated)
        has its budget checked before and charged after a failure: no store writes for a
        good alert, and its concurrent alerts never refuse each other."""
        limits = self._router.limits
        address = request.remote_addr
        if proven:
            auth = await self.authenticate(request)
            if not auth.accepted:
                await limits.failed(address)
                raise Unauthorized("authentication failed") if auth.status == 401 else _forbidden(auth)
        else:
            async with self._unproven.turn(address):
                await limits.reserve_failure(address)
                try:
                    auth = await self.authenticate(request)
                except BaseException:
                    await limits.release_failure(address)  # not the credentials' fault (503)
                    raise
                if not auth.accepted:
                    raise Unauthorized("authentication failed") if auth.status == 401 else _forbidden(auth)
                try:
                    await limits.release_failure(address)
                except BaseException:
                    self.replays.release(auth.replay_key)  # refused (503): its key may come again
                    raise
        request.authenticated_at = time.time()
        return auth


def _forbidden(auth: AuthResult) -> WebhookError:
    # One body for every refusal of this kind, like 401 (the reason is logged).
    return Forbidden("this request is not allowed")
