"""core.web.asgi.LeanQuart: Quart's request life cycle, with the steps nothing is registered
for skipped — so an app with hooks, signal receivers and sessions sees exactly what Quart
would show it, and one without them answers the same; ``json_response`` is ``jsonify``'s
answer; ``scope_headers`` is the view's header dict; ``answered`` sees every answer."""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial

import pytest
from quart import Blueprint, Quart, Response, after_this_request, current_app, g, jsonify, request, session, url_for
from quart.signals import (
    appcontext_popped,
    appcontext_pushed,
    appcontext_tearing_down,
    request_finished,
    request_started,
    request_tearing_down,
)

from core.web.asgi import BodyFirstConnection, LeanQuart, LeanRequest, json_response, scope_headers
from tests.support import alert_body, signed_headers

SIGNALS = {
    "request_started": request_started,
    "request_finished": request_finished,
    "request_tearing_down": request_tearing_down,
    "appcontext_pushed": appcontext_pushed,
    "appcontext_popped": appcontext_popped,
    "appcontext_tearing_down": appcontext_tearing_down,
}


def _hooked(cls: type[Quart], events: list[str]) -> Quart:
    """An app using every hook LeanQuart may skip, each recording itself in ``events``."""
    app = cls("hooked")
    app.secret_key = "s3cret-for-the-test"
    bp = Blueprint("bp", __name__)

    @app.url_value_preprocessor
    def preprocess(endpoint: str | None, values: dict | None) -> None:
        events.append(f"url_value_preprocessor {endpoint}")

    @app.before_request
    async def before() -> None:
        events.append(f"before_request {request.path}")

    @bp.before_request
    async def bp_before() -> None:
        events.append("bp.before_request")

    @app.after_request
    async def after(response):
        events.append(f"after_request {response.status_code}")
        response.headers["X-After"] = "1"
        return response

    @bp.after_request
    async def bp_after(response):
        events.append("bp.after_request")
        return response

    @app.teardown_request
    async def teardown(exc: BaseException | None) -> None:
        events.append(f"teardown_request {type(exc).__name__ if exc else None}")

    @bp.teardown_request
    async def bp_teardown(exc: BaseException | None) -> None:
        events.append("bp.teardown_request")

    @app.teardown_appcontext
    async def teardown_app(exc: BaseException | None) -> None:
        events.append("teardown_appcontext")

    @app.post("/count")
    async def count():
        session["n"] = session.get("n", 0) + 1
        g.seen = True

        @after_this_request
        async def later(response):
            events.append("after_this_request")
            return response

        return {"n": session["n"], "g": g.seen, "app": current_app.name}

    @bp.get("/inside")
    async def inside():
        return {"blueprints": request.blueprints}

    @app.get("/broken")
    async def broken():
        raise ValueError("boom")

    app.register_blueprint(bp, url_prefix="/bp")
    return app


@contextmanager
def _receivers(app: Quart, events: list[str]) -> Iterator[None]:
    with ExitStack() as stack:
        for name, signal in SIGNALS.items():

            def receiver(sender: object, _name: str = name, **kwargs: object) -> None:
                events.append(f"signal {_name}")

            stack.enter_context(signal.connected_to(receiver, sender=app))
        yield


async def _exchange(app: Quart) -> list[tuple[int, dict[str, str], bytes]]:
    client = app.test_client()
    answers = []
    for method, path in [("POST", "/count"), ("POST", "/count"), ("GET", "/bp/inside"), ("GET", "/broken")]:
        response = await client.open(path, method=method)
        headers = {k: v for k, v in response.headers.items() if k.lower() != "date"}
        answers.append((response.status_code, headers, await response.get_data()))
    return answers


@pytest.mark.parametrize("signals", [False, True])
async def test_every_hook_signal_and_the_session_run_as_in_quart(signals):
    seen: dict[str, tuple[list[str], list]] = {}
    for cls in (Quart, LeanQuart):
        events: list[str] = []
        app = _hooked(cls, events)
        app.config["PROPAGATE_EXCEPTIONS"] = False
        with _receivers(app, events) if signals else ExitStack():
            answers = await _exchange(app)
        seen[cls.__name__] = (events, answers)
    assert seen["LeanQuart"] == seen["Quart"]
    events, answers = seen["LeanQuart"]
    assert [status for status, _, _ in answers] == [200, 200, 200, 500]
    assert b'"n":2' in answers[1][2]  # the session cookie carried the count
    assert "bp.teardown_request" in events and "after_this_request" in events
    assert ("signal request_started" in events) is signals


async def test_without_hooks_the_app_answers_as_quart_does():
    answers = {}
    for cls in (Quart, LeanQuart):
        app = cls("plain")
        app.config["PROPAGATE_EXCEPTIONS"] = False

        @app.route("/read", methods=["GET", "POST"])
        async def read():
            g.value = request.args.get("q", "")
            return {"q": g.value, "app": current_app.name, "session": dict(session), "method": request.method}

        @app.get("/broken")
        async def broken():
            raise ValueError("boom")

        client = app.test_client()
        got = []
        for method, path in [("GET", "/read?q=1"), ("POST", "/read"), ("GET", "/missing"), ("GET", "/broken")]:
            response = await client.open(path, method=method)
            headers = {k: v for k, v in response.headers.items() if k.lower() != "date"}
            got.append((response.status_code, headers, await response.get_data()))
        answers[cls.__name__] = got
    assert answers["LeanQuart"] == answers["Quart"]
    assert [status for status, _, _ in answers["LeanQuart"]] == [200, 200, 404, 500]


async def test_answered_sees_every_answer_error_handlers_included():
    app = LeanQuart("observed")
    app.config["PROPAGATE_EXCEPTIONS"] = False
    seen: list[tuple[str, int]] = []
    app.answered = lambda answered, response: seen.append((answered.path, response.status_code))

    @app.errorhandler(KeyError)
    async def missing(error: KeyError):
        return {"error": "missing"}, 404

    @app.get("/ok")
    async def ok():
        return {"ok": True}

    @app.get("/handled")
    async def handled():
        raise KeyError("x")

    @app.get("/unhandled")
    async def unhandled():
        raise ValueError("boom")

    client = app.test_client()
    for path in ["/ok", "/handled", "/unhandled", "/nowhere"]:
        await client.get(path)
    assert seen == [("/ok", 200), ("/handled", 404), ("/unhandled", 500), ("/nowhere", 404)]


BODIES = [
    {"b": 1, "a": [1.5, None, True], "c": {"z": "ü €", "y": "line\nbreak"}},
    {"when": datetime.date(2024, 1, 2), "amount": decimal.Decimal("0.001")},
    [],
    "text",
]


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("body", BODIES)
async def test_json_response_is_what_jsonify_makes(body, debug):
    app = LeanQuart("json")
    app.debug = debug
    async with app.app_context():
        for status, headers in [(200, None), (429, {"Retry-After": "5"}), (201, {"X-A": "1", "Content-Type": "x/y"})]:
            expected = await app.make_response((jsonify(body), status, headers) if headers else (jsonify(body), status))
            made = json_response(app, body, status, headers)
            assert type(made) is type(expected)
            assert made.status == expected.status
            assert list(made.headers.items()) == list(expected.headers.items())
            assert await made.get_data() == await expected.get_data()


@pytest.mark.parametrize("http_version", ["1.1", "1.0"])
async def test_scope_headers_are_the_views_header_dict(http_version):
    app = LeanQuart("headers")
    app.config["SERVER_NAME"] = "example.test"
    raw = [
        (b"host", b"h.test"),
        (b"content-type", b"application/json"),
        (b"x-signature", b"abc"),
        (b"x-dup", b"first"),
        (b"X-Dup", b"second"),
        (b"x-latin", "caf\u00e9".encode("latin1")),
        (b"remote-addr", b"spoofed"),
    ]
    for headers in (raw, raw[1:]):
        scope = {
            "type": "http",
            "http_version": http_version,
            "method": "POST",
            "scheme": "http",
            "path": "/",
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("10.1.2.3", 5),
        }
        built = BodyFirstConnection(app, scope)._create_request_from_scope(None)  # type: ignore[arg-type]
        assert scope_headers(scope, app.config["SERVER_NAME"]) == {k.lower(): v for k, v in built.headers.items()}


SCOPES = [
    {},
    {"http_version": "1.0"},
    {"client": None},
    {"root_path": "/root", "path": "/root/webhook"},
    {"path": "http://h.test/webhook"},
    {"query_string": b"a=1&b=%C3%A9"},
    {"headers": [(b"host", b"h.test")]},
    {"headers": [(b"Content-Length", b"12"), (b"content-length", b"5")]},
    {"headers": [(b"content-length", b"5"), (b"transfer-encoding", b"chunked")]},
    {"headers": [(b"content-length", b"x")]},
    {"headers": [(b"content-length", b"-1")]},
    {"headers": [(b"host", b"h.test"), (b"x-bad", b"a\r\nb")]},
    {"headers": [(b"host", b"h.test"), (b"x-bad\n", b"a")]},
]


@pytest.mark.parametrize("changes", SCOPES)
async def test_a_request_built_from_the_scope_is_quarts(changes):
    app = LeanQuart("request")
    app.config["SERVER_NAME"] = "example.test"
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": "/webhook",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"h.test"), (b"content-length", b"2"), (b"x-dup", b"1"), (b"X-Dup", b"2")],
        "client": ("10.1.2.3", 5),
        **changes,
    }
    connection = BodyFirstConnection(app, scope)
    try:
        expected = connection._create_request_from_scope(None)  # type: ignore[arg-type]
    except ValueError as error:  # a line break in a header: the same error either way
        with pytest.raises(ValueError, match=str(error)):
            connection._request_from_scope(None)  # type: ignore[arg-type]
        return
    built = connection._request_from_scope(None)  # type: ignore[arg-type]
    assert type(built) is type(expected) is LeanRequest
    assert list(built.headers.items()) == list(expected.headers.items())
    for name in ("method", "scheme", "path", "root_path", "query_string", "http_version", "remote_addr", "host"):
        assert getattr(built, name) == getattr(expected, name), name
    assert built.content_length == expected.content_length
    assert built.body_timeout == expected.body_timeout
    assert built.body._max_content_length == expected.body._max_content_length
    assert built.scope is expected.scope


async def test_json_response_of_an_app_with_its_own_response_class_is_what_jsonify_makes():
    class Answer(Response):
        automatically_set_content_length = False
        default_mimetype = "text/plain"

    app = LeanQuart("json")
    app.response_class = Answer
    async with app.app_context():
        expected = await app.make_response((jsonify({"a": 1}), 201))
        made = json_response(app, {"a": 1}, 201)
        assert type(made) is type(expected) is Answer
        assert made.status == expected.status
        assert list(made.headers.items()) == list(expected.headers.items())
        assert await made.get_data() == await expected.get_data()


HOOKS = [
    "url_value_preprocessor",
    "before_request",
    "after_request",
    "teardown_request",
    "teardown_appcontext",
    "bp.before_request",
    "bp.after_request",
    "bp.teardown_request",
    "after_this_request",
    "session",
    *(f"signal {name}" for name in SIGNALS),
]


def _one_hook(cls: type[Quart], hook: str, events: list[str]) -> Quart:
    """An app with just ``hook`` registered: each step LeanQuart skips is also tested alone."""
    app = cls("one-hook")
    bp = Blueprint("bp", __name__)

    async def record_response(response):
        events.append(hook)
        return response

    async def record(*args: object) -> None:
        events.append(hook)

    if hook == "url_value_preprocessor":
        app.url_value_preprocessor(lambda endpoint, values: events.append(hook))
    elif hook in ("before_request", "teardown_request", "teardown_appcontext"):
        getattr(app, hook)(record)
    elif hook == "after_request":
        app.after_request(record_response)
    elif hook in ("bp.before_request", "bp.teardown_request"):
        getattr(bp, hook[3:])(record)
    elif hook == "bp.after_request":
        bp.after_request(record_response)
    elif hook == "session":
        app.secret_key = "s3cret-for-the-test"

    async def view():
        if hook == "after_this_request":
            after_this_request(record_response)
        if hook == "session":
            session["n"] = session.get("n", 0) + 1
        return {"path": request.path, "blueprints": request.blueprints}

    app.add_url_rule("/app", "view", view, methods=["POST"])
    bp.add_url_rule("/bp", "view", view, methods=["POST"])
    app.register_blueprint(bp)
    return app


def _record_signal(events: list[str], hook: str, sender: object, **kwargs: object) -> None:
    events.append(hook)


@pytest.mark.parametrize("hook", HOOKS)
async def test_each_hook_alone_runs_as_in_quart(hook):
    seen = {}
    for cls in (Quart, LeanQuart):
        events: list[str] = []
        app = _one_hook(cls, hook, events)
        with ExitStack() as stack:
            if hook.startswith("signal "):
                signal = SIGNALS[hook.split(" ", 1)[1]]
                receiver = partial(_record_signal, events, hook)
                stack.enter_context(signal.connected_to(receiver, sender=app))
            client = app.test_client()
            answers = []
            for path in ("/app", "/bp", "/app"):
                response = await client.post(path)
                headers = {k: v for k, v in response.headers.items() if k.lower() != "date"}
                answers.append((response.status_code, headers, await response.get_data()))
        seen[cls.__name__] = (events, answers)
    assert seen["LeanQuart"] == seen["Quart"]
    assert seen["LeanQuart"][0] or hook == "session"  # the hook ran (a session shows in the cookie)


async def test_every_webhook_answer_is_counted_error_handlers_included(app_client, monkeypatch):
    body = alert_body(id="counted-1")
    async with app_client(REQUIRE_HTTPS="true") as (client, app):
        counted: list[int] = []
        monkeypatch.setattr(app.extensions["metrics"], "webhook_answered", counted.append)
        plain = await client.post("/webhook", data=body, headers=signed_headers(body))  # refused by an error handler
        secure = await client.post("/webhook", data=body, headers=signed_headers(body), scheme="https")
        forged = await client.post("/webhook", data=body, headers=signed_headers(body, secret="x" * 32), scheme="https")
        await client.get("/")  # not a webhook answer
    assert (plain.status_code, secure.status_code, forged.status_code) == (403, 200, 401)
    assert counted == [403, 200, 401]


async def test_routing_answers_as_quart_does():
    """Each request matches and builds URLs for itself, repeated or not — other hosts,
    redirects, 404 and 405 included."""
    answers = {}
    for cls in (Quart, LeanQuart):
        app = cls("routes")
        app.config["PROPAGATE_EXCEPTIONS"] = False

        @app.route("/where/", methods=["GET", "POST"])
        async def where():
            return {"self": url_for("where", _external=True, q=request.args.get("q"))}

        @app.get("/item/<int:number>")
        async def item(number: int):
            return {"number": number, "url": url_for("item", number=number + 1, _external=True)}

        client = app.test_client()
        got = []
        requests = [
            ("GET", "/where/", "a.test", "http"),
            ("GET", "/where/?q=1", "b.test:8080", "http"),
            ("POST", "/where/", "a.test", "https"),
            ("GET", "/where", "a.test", "http"),  # strict slashes: a redirect
            ("GET", "/item/7", "a.test", "http"),
            ("GET", "/item/8", "c.test", "http"),
            ("POST", "/item/7", "a.test", "http"),  # 405
            ("GET", "/item/x", "a.test", "http"),  # 404
            ("GET", "/where/", "d.test", "http"),  # as the first but for the host
            ("GET", "/where/", "a.test", "https"),  # ... the scheme
            ("GET", "/where/?q=2", "b.test:8080", "http"),  # ... the query
            ("POST", "/where/", "a.test", "http"),  # ... the method
            ("GET", "/where?q=5", "a.test", "http"),  # a redirect keeps the query
            ("GET", "/where?q=6", "a.test", "http"),
        ]
        for method, path, host, scheme in requests * 2:  # each twice: nothing kept from the first
            response = await client.open(path, method=method, headers={"Host": host}, scheme=scheme)
            got.append((response.status_code, response.headers.get("Location"), await response.get_data()))
        answers[cls.__name__] = got
    assert answers["LeanQuart"] == answers["Quart"]
    statuses = [status for status, _, _ in answers["LeanQuart"]][: len(answers["LeanQuart"]) // 2]
    assert statuses == [200, 200, 200, 308, 200, 200, 405, 404, 200, 200, 200, 200, 308, 308]


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("Content-Length", "12")],
        [("content-length", "12"), ("Content-Length", "99")],
        [("Content-Length", "12"), ("Transfer-Encoding", "chunked")],
        [("Transfer-Encoding", "gzip, chunked"), ("Content-Length", "5")],
        [("Transfer-Encoding", "gzip"), ("Content-Length", "5")],
        [("Content-Length", "-3")],
        [("Content-Length", "twelve")],
        [("Content-Length", "+4")],
    ],
)
def test_the_requests_content_length_is_werkzeugs(headers):
    from quart.wrappers import Request
    from werkzeug.datastructures import Headers

    from core.web.asgi import LeanRequest

    def make(cls):
        return cls("POST", "http", "/", b"", Headers(headers), "", "1.1", {}, send_push_promise=None)

    assert make(LeanRequest).content_length == make(Request).content_length
