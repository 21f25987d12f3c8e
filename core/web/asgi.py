"""Quart's HTTP connection, without the tasks it needs only for bodies that are still arriving.

Quart's ``ASGIHTTPConnection`` runs every request in two tasks of its own — one feeding the
body from ``receive``, one handling the request — raced with ``asyncio.wait``, then awaits
the body and sends the answer each through ``asyncio.wait_for``, which on Python 3.11
wraps the awaited coroutine in one more task: five tasks and a dozen turns of the event
loop per request before the view does anything.

``core.web.intake`` has already read the whole body, within its deadline and size limit,
when a request reaches Quart, and says so in the scope (``BODY``). For such a request
``BodyFirstConnection`` builds Quart's request with that body complete and handles it in
the task the server started for it: the same routing, hooks, error handlers and
response as Quart's own path, with no task of its own and the response sent under
``asyncio.timeout`` (RESPONSE_TIMEOUT, as Quart's). A request without ``BODY`` (no
intake in front: an embedding app) takes Quart's own path unchanged.

A client that disconnects no longer cancels the view: it finishes and its answer goes
nowhere. The webhook's pipeline is shielded from cancellation anyway (its order runs in
a task of the execution engine); this only spares it the cancellation's work.

``LeanRequest`` (``Quart.request_class``) is Quart's request whose ``blueprints``, read
three times per request, no longer runs an import statement on each read.
"""

from __future__ import annotations

import asyncio
from typing import cast

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable
from quart.asgi import ASGIHTTPConnection, _handle_exception
from quart.helpers import _split_blueprint_path
from quart.wrappers import Request, Response

BODY = "intake.body"
"""Scope key: the whole body of the request, read by ``core.web.intake``."""


class BodyFirstConnection(ASGIHTTPConnection):
    """``Quart.asgi_http_class`` for requests whose body ``core.web.intake`` read whole."""

    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        body = self.scope.get(BODY)
        if not isinstance(body, bytes):
            await super().__call__(receive, send)
            return
        request = self._create_request_from_scope(send)
        request.body_timeout = None  # complete already: awaiting it needs no deadline (nor a task)
        request.body.append(body)
        request.body.set_complete()
        await self.handle_request(request, send)

    async def handle_request(self, request: Request, send: ASGISendCallable) -> None:
        try:
            response = await self.app.handle_request(request)
        except Exception as error:
            response = await _handle_exception(self.app, error)
        if isinstance(response, Response) and response.timeout != Ellipsis:
            timeout = cast(float | None, response.timeout)
        else:
            timeout = self.app.config["RESPONSE_TIMEOUT"]
        if timeout is None:
            await self._send_response(send, response)
            return
        try:
            async with asyncio.timeout(timeout):
                await self._send_response(send, response)
        except TimeoutError:
            pass


class LeanRequest(Request):
    """Quart's request; ``blueprints`` as Quart computes it, without its per-read import."""

    @property
    def blueprints(self) -> list[str]:
        blueprint = self.blueprint
        return _split_blueprint_path(blueprint) if blueprint is not None else []
