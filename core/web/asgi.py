"""Quart, without the per-request work this app has nothing registered for.

**The connection.** Quart's ``ASGIHTTPConnection`` runs every request in two tasks of its
own — one feeding the body from ``receive``, one handling the request — raced with
``asyncio.wait``, then awaits the body and sends the answer each through
``asyncio.wait_for``, which on Python 3.11 wraps the awaited coroutine in one more task:
five tasks and a dozen turns of the event loop per request before the view does anything.

``core.web.intake`` has already read the whole body, within its deadline and size limit,
when a request reaches Quart, and says so in the scope (``BODY``). For such a request
``BodyFirstConnection`` builds Quart's request (its ``Headers`` filled in one step, not
one checked ``add`` per header) with that body complete and handles it in
the task the server started for it: the same routing, hooks, error handlers and
response as Quart's own path, with no task of its own and the response sent under
``asyncio.timeout`` (RESPONSE_TIMEOUT, as Quart's). A request without ``BODY`` (no
intake in front: an embedding app) takes Quart's own path unchanged. A response whose
body is one block of bytes (every JSON answer) goes out as two ASGI messages — the head,
then the body with ``more_body: False`` — where Quart sends three (the body, then an
empty last one): the same bytes on the wire, one pass less through the server's send.

A client that disconnects no longer cancels the view: it finishes and its answer goes
nowhere. The webhook's pipeline is shielded from cancellation anyway (its order runs in
a task of the execution engine); this only spares it the cancellation's work.

**The app.** ``LeanQuart`` is Quart with the same request life cycle — request and app
contexts, ``before_request``/``after_request``/``teardown`` hooks, signals, sessions,
error handlers — where each step is skipped when nothing is registered for it: a signal
with no receivers is not sent, hook lists that are empty are not walked, and with
Quart's cookie sessions and no ``SECRET_KEY`` the request gets the null session Quart
would open for it, without the two awaited calls that find that out. Registering a hook,
a signal receiver or a secret key brings Quart's own step back for the next request.
``answered`` replaces an ``after_request`` hook that observes every answer: it is called
with the request and its response once the app has answered (the metrics service counts
the webhook's answers there).

URL adapters are Quart's, bound for each request: nothing is kept from one request for
the next (a kept adapter, keyed by a request's host, path and query, would be state that
an unauthenticated request could add and evict; binding costs ≈5 µs).

``json_response`` is ``jsonify`` — the same bytes, the app's JSON provider's settings —
encoded by one prebuilt ``json.JSONEncoder`` instead of a new one per answer, into a
Response built with its status and prebuilt Content-Type and Content-Length headers.

``LeanRequest`` (``Quart.request_class``) is Quart's request whose ``blueprints``, read
three times per request, no longer runs an import statement on each read, and whose
``content_length`` no longer raises and catches a ``KeyError`` for the absent
``Transfer-Encoding`` (``BodyFirstConnection`` gives it, found in the same pass over the
scope's headers that builds the request's).
``scope_headers`` is the lower-cased header dict the view would build from
``request.headers``, read from the scope (whose names are already lower-case bytes).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from functools import partial
from types import EllipsisType
from typing import Any, cast

from flask.json.provider import DefaultJSONProvider
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, WWWScope
from quart import Quart
from quart.asgi import ASGIHTTPConnection, _handle_exception
from quart.ctx import RequestContext, _sentinel
from quart.globals import _cv_app, _cv_request
from quart.helpers import _split_blueprint_path
from quart.sessions import SecureCookieSessionInterface
from quart.signals import (
    appcontext_popped,
    appcontext_pushed,
    appcontext_tearing_down,
    request_finished,
    request_started,
    request_tearing_down,
)
from quart.typing import ResponseReturnValue, ResponseTypes
from quart.utils import encode_headers
from quart.wrappers import Request, Response
from quart.wrappers.response import DataBody
from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException
from werkzeug.sansio.utils import get_content_length
from werkzeug.utils import cached_property, get_content_type

BODY = "intake.body"
"""Scope key: the whole body of the request, read by ``core.web.intake``."""


class BodyFirstConnection(ASGIHTTPConnection):
    """``Quart.asgi_http_class`` for requests whose body ``core.web.intake`` read whole."""

    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        body = self.scope.get(BODY)
        if not isinstance(body, bytes):
            await super().__call__(receive, send)
            return
        request = self._request_from_scope(send)
        request.body_timeout = None  # complete already: awaiting it needs no deadline (nor a task)
        request.body.append(body)
        request.body.set_complete()
        await self.handle_request(request, send)

    def _request_from_scope(self, send: ASGISendCallable) -> Request:
        """Quart's ``_create_request_from_scope``, with the request's ``Headers`` filled in one
        step: the same (``.title()``-cased, latin-1) pairs in the same order, where ``Headers.add``
        checks each name and value for a line break (none here: checked on the bytes first;
        with one, Quart's own build raises its error) and appends them one by one."""
        scope = self.scope
        path = scope["path"]
        root_path = scope.get("root_path", "")
        if path[:1] != "/" or root_path != "":
            return self._create_request_from_scope(send)
        client = scope.get("client")
        pairs = [("Remote-Addr", str(client[0]) if client else "<local>")]
        length = encoding = None
        for name, value in scope["headers"]:
            # 10 and 13 are "\n" and "\r": a byte's membership test is a memchr, a bytes
            # one's (b"\n" in value) goes through the buffer protocol, ten times slower.
            if 10 in value or 13 in value or 10 in name or 13 in name:
                return self._create_request_from_scope(send)
            pairs.append((name.decode("latin1").title(), value.decode("latin1")))
            lowered = name.lower()
            if lowered == b"content-length":
                length = value if length is None else length
            elif lowered == b"transfer-encoding":
                encoding = value if encoding is None else encoding
        headers = Headers()
        headers._list = pairs
        config = self.app.config
        if scope["http_version"] < "1.1":
            headers.setdefault("Host", config["SERVER_NAME"] or "")
        request_class = self.app.request_class
        extra: dict[str, Any] = {}
        if issubclass(request_class, LeanRequest):  # its content_length, from the same first values
            extra["content_length"] = get_content_length(
                http_content_length=None if length is None else length.decode("latin1"),
                http_transfer_encoding=None if encoding is None else encoding.decode("latin1"),
            )
        return request_class(
            scope["method"],
            scope["scheme"],
            path,
            scope["query_string"],
            headers,
            root_path,
            scope["http_version"],
            max_content_length=config["MAX_CONTENT_LENGTH"],
            body_timeout=config["BODY_TIMEOUT"],
            send_push_promise=partial(self._send_push_promise, send),
            scope=scope,
            **extra,
        )

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

    async def _send_response(self, send: ASGISendCallable, response: ResponseTypes) -> None:
        body = response.response if isinstance(response, Response) else None
        if not (isinstance(body, DataBody) and body.begin == 0 and body.end == len(body.data)):
            await super()._send_response(send, response)  # a stream, a file, a range: Quart's way
            return
        headers = encode_headers(response.headers)
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body.data, "more_body": False})


class LeanRequest(Request):
    """Quart's request; ``blueprints`` as Quart computes it, without its per-read import, and
    ``content_length`` as werkzeug computes it, in one pass over the headers: werkzeug's
    lookup of the absent ``Transfer-Encoding`` raises and catches a ``KeyError`` for every
    request."""

    def __init__(self, *args: Any, content_length: int | None | EllipsisType = ..., **kwargs: Any) -> None:
        """Quart's; ``content_length``: the value of the property, when the builder of the
        request found it already (``BodyFirstConnection`` reading the scope's headers)."""
        if content_length is not Ellipsis:
            self.__dict__["content_length"] = content_length  # what the cached_property keeps
        super().__init__(*args, **kwargs)

    @property
    def blueprints(self) -> list[str]:
        blueprint = self.blueprint
        return _split_blueprint_path(blueprint) if blueprint is not None else []

    @cached_property
    def content_length(self) -> int | None:
        length = encoding = None
        for name, value in self.headers.items():  # the first of each, as Headers.get finds it
            name = name.lower()
            if name == "content-length":
                length = value if length is None else length
            elif name == "transfer-encoding":
                encoding = value if encoding is None else encoding
        return get_content_length(http_content_length=length, http_transfer_encoding=encoding)


def scope_headers(scope: WWWScope, server_name: str | None = None) -> dict[str, str]:
    """``{name.lower(): value for name, value in request.headers.items()}``, from the scope:
    Quart's ``Remote-Addr`` first, then the request's headers in order (the last of a
    repeated name wins), latin-1 decoded as Quart decodes them; an HTTP/1.0 request
    without ``Host`` gets Quart's (``server_name``: the app's SERVER_NAME)."""
    client = scope.get("client")
    headers = {"remote-addr": client[0] if client else "<local>"}
    for name, value in scope["headers"]:
        headers[name.decode("latin1").lower()] = value.decode("latin1")
    if scope["http_version"] < "1.1":
        headers.setdefault("host", server_name or "")
    return headers


_ENCODERS: dict[tuple[bool, bool, Callable[[Any], Any]], json.JSONEncoder] = {}


def json_response(app: Quart, body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """``jsonify(body), status, headers`` as Quart makes the response of it: the same bytes
    and headers, with one encoder per JSON setting of the app instead of one per call."""
    provider = app.json
    if (
        app.response_class is not Response
        or not isinstance(provider, DefaultJSONProvider)
        or provider.compact is False
        or (provider.compact is None and app.debug)
    ):
        response = cast(Response, provider.response(body))  # indented, or a provider of the app's own
        response.status_code = status
    else:
        key = (provider.ensure_ascii, provider.sort_keys, provider.default)
        encoder = _ENCODERS.get(key)
        if encoder is None:
            encoder = _ENCODERS[key] = json.JSONEncoder(
                ensure_ascii=key[0], sort_keys=key[1], default=key[2], separators=(",", ":")
            )
        data = (encoder.encode(body) + "\n").encode()
        # The headers Response(data, status, mimetype=...) sets one by one, prebuilt: its
        # Content-Type (application/json takes no charset) and Content-Length, in that order
        # (Quart's own Response; a response_class of the app's own is built as jsonify does).
        prebuilt = Headers()
        prebuilt._list = [
            ("Content-Type", get_content_type(provider.mimetype, "utf-8")),
            ("Content-Length", str(len(data))),
        ]
        response = app.response_class(DataBody(data), status, prebuilt)
    if headers:
        response.headers.update(headers)
    return response


class LeanRequestContext(RequestContext):
    """Quart's request context; pushing and popping it skips the steps with nothing to do."""

    async def push(self) -> None:
        app = self.app
        token = _cv_request.set(self)
        app_ctx = _cv_app.get(None)
        if app_ctx is None or app_ctx.app is not app:
            app_ctx = app.app_context()
            if appcontext_pushed.receivers:
                await app_ctx.push()
            else:
                app_ctx._cv_tokens.append(_cv_app.set(app_ctx))
        else:
            app_ctx = None
        self._cv_tokens.append((token, app_ctx))
        if self.session is None:
            interface = app.session_interface
            if type(interface) is SecureCookieSessionInterface and not app.secret_key:
                self.session = interface.null_session_class()  # what open_session → None → make_null_session gives
            else:
                self.session = await app.ensure_async(interface.open_session)(app, self.request_websocket)
                if self.session is None:
                    self.session = await interface.make_null_session(app)
        if self.url_adapter is not None:
            self.match_request()

    async def pop(self, exc: BaseException | None = _sentinel) -> None:  # type: ignore[assignment]
        app = self.app
        if (
            len(self._cv_tokens) != 1
            or request_tearing_down.receivers
            or self.request.blueprints
            or app.teardown_request_funcs.get(None)
            or self.request._files
        ):
            await super().pop(exc)
            return
        ctx = _cv_request.get()
        token, app_ctx = self._cv_tokens.pop()
        _cv_request.reset(token)
        if app_ctx is not None:
            if (
                app.teardown_appcontext_funcs
                or appcontext_tearing_down.receivers
                or appcontext_popped.receivers
                or len(app_ctx._cv_tokens) != 1
            ):
                await app_ctx.pop(exc)
            else:
                app_ctx_now = _cv_app.get()
                _cv_app.reset(app_ctx._cv_tokens.pop())
                if app_ctx_now is not app_ctx:
                    raise AssertionError(f"Popped wrong app context. ({app_ctx_now!r} instead of {app_ctx!r})")
        if ctx is not self:
            raise AssertionError(f"Popped wrong request context. ({ctx!r} instead of {self!r})")


class LeanQuart(Quart):
    """Quart whose per-request steps are skipped when nothing is registered for them
    (see the module docstring); ``answered(request, response)`` sees every answer."""

    asgi_http_class = BodyFirstConnection
    request_class = LeanRequest

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answered: Callable[[Request, ResponseTypes], None] | None = None

    def request_context(self, request: Request) -> RequestContext:
        return LeanRequestContext(self, request)

    async def handle_request(self, request: Request) -> ResponseTypes:
        response = await super().handle_request(request)
        if self.answered is not None:
            self.answered(request, response)
        return response

    async def full_dispatch_request(self, request_context: RequestContext | None = None) -> ResponseTypes:
        try:
            if request_started.receivers:
                await request_started.send_async(self, _sync_wrapper=self.ensure_async)  # type: ignore[arg-type]
            result: ResponseReturnValue | HTTPException | None = await self.preprocess_request(request_context)
            if result is None:
                result = await self.dispatch_request(request_context)
        except Exception as error:
            result = await self.handle_user_exception(error)
        return await self.finalize_request(result, request_context)

    async def preprocess_request(self, request_context: RequestContext | None = None) -> ResponseReturnValue | None:
        if (
            self.url_value_preprocessors.get(None)
            or self.before_request_funcs.get(None)
            or (request_context or _cv_request.get()).request.blueprints
        ):
            return await super().preprocess_request(request_context)
        return None

    async def finalize_request(
        self,
        result: ResponseReturnValue | HTTPException,
        request_context: RequestContext | None = None,
        from_error_handler: bool = False,
    ) -> ResponseTypes:
        if request_finished.receivers:
            return await super().finalize_request(result, request_context, from_error_handler)
        response = await self.make_response(result)
        try:
            response = await self.process_response(response, request_context)
        except Exception:
            if not from_error_handler:
                raise
            self.logger.exception("Request finalizing errored")
        return response

    async def process_response(
        self, response: ResponseTypes, request_context: RequestContext | None = None
    ) -> ResponseTypes:
        context = request_context or _cv_request.get()
        if (
            context._after_request_functions
            or self.after_request_funcs.get(None)
            or context.request.blueprints
            or not self.session_interface.is_null_session(context.session)
        ):
            return await super().process_response(response, request_context)
        return response
