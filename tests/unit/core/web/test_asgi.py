"""core.web.asgi: Quart's connection for requests whose body the intake read whole.

The view runs in the task the server started for the request (no task of Quart's own),
with the body the intake read; without the intake in front, Quart's own path serves it."""

from __future__ import annotations

import asyncio
import json

from quart import Quart, request

from core.web.asgi import BODY, BodyFirstConnection, LeanRequest
from core.web.intake import IntakeGuard


def _app() -> Quart:
    app = Quart("asgi-test")
    app.asgi_http_class = BodyFirstConnection
    app.request_class = LeanRequest

    @app.post("/echo")
    async def echo() -> dict[str, object]:
        body = await request.get_data(cache=False, as_text=True, parse_form_data=False)
        return {"body": body, "task": id(asyncio.current_task()), "blueprints": request.blueprints}

    return app


async def _call(asgi, body: bytes, chunks: int = 1) -> tuple[int, bytes, int]:
    """POST /echo through ``asgi``; the body in ``chunks`` messages. (status, body, caller task id)."""
    size = -(-len(body) // chunks)
    messages = [
        {"type": "http.request", "body": body[i : i + size], "more_body": i + size < len(body)}
        for i in range(0, len(body), size)
    ]
    sent: list[dict] = []
    gone = asyncio.Event()

    async def receive() -> dict:
        if messages:
            return messages.pop(0)
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/echo",
        "raw_path": b"/echo",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
        "extensions": {},
    }
    await asgi(scope, receive, send)
    answer = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], answer, id(asyncio.current_task())


async def test_a_body_read_by_the_intake_is_handled_in_the_servers_task():
    app = _app()
    intake = IntakeGuard(app.asgi_app)
    status, answer, caller = await _call(intake, b"x" * 3000, chunks=3)
    assert status == 200
    data = json.loads(answer)
    assert data == {"body": "x" * 3000, "task": caller, "blueprints": []}


async def test_without_the_intake_quarts_own_path_reads_the_body_from_receive():
    app = _app()
    status, answer, caller = await _call(app.asgi_app, b"y" * 3000, chunks=3)
    assert status == 200
    data = json.loads(answer)
    assert data["body"] == "y" * 3000 and data["task"] != caller  # Quart's handler task


async def test_the_scope_key_is_what_the_intake_sets():
    seen: list[object] = []

    async def app(scope, receive, send) -> None:
        seen.append(scope.get(BODY))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    await _call(IntakeGuard(app), b"abc")
    assert seen == [b"abc"]


async def test_a_body_of_bytes_goes_out_in_two_messages_and_a_stream_as_quart_sends_it():
    app = _app()

    @app.post("/stream")
    async def stream():  # a streamed body: Quart's own sending, its empty last message included
        async def chunks():
            yield b"a"
            yield b"b"

        return chunks(), 200

    intake = IntakeGuard(app.asgi_app)
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    def scope(path: str) -> dict:
        return {
            "type": "http",
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"test")],
            "client": ("127.0.0.1", 1234),
        }

    await intake(scope("/echo"), receive, send)
    start, body = sent
    assert start["type"] == "http.response.start" and start["status"] == 200
    headers = dict(start["headers"])
    assert body == {"type": "http.response.body", "body": body["body"], "more_body": False}
    assert headers[b"content-length"] == str(len(body["body"])).encode()
    assert json.loads(body["body"])["body"] == ""
    sent.clear()
    await intake(scope("/stream"), receive, send)
    assert [(m["type"], m.get("body"), m.get("more_body")) for m in sent] == [
        ("http.response.start", None, None),
        ("http.response.body", b"a", True),
        ("http.response.body", b"b", True),
        ("http.response.body", b"", False),
    ]
