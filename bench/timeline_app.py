"""The two targets of ``python -m bench.timeline``, with marks: ``server`` (the router,
``core.web.app:app``) and ``durable`` (the durable limit, ``bench.limit_app:app``).

Importing this module (hypercorn does, in its worker) wraps a few functions of the target
named by ``BENCH_TIMELINE_TARGET`` (``MARKS``): each wrapper appends (label, thread,
``time.perf_counter_ns()``) to an in-memory list as the function is called (and, for a
label after it, as it returns or its coroutine ends), then calls the function unchanged.
No code of ``core/``, ``plugins/`` or the limit changes; a function that was renamed
stops the import with its name (a timeline with a mark missing would mislead).

The app itself is the target's app behind one more route: ``GET /__timeline`` answers the
marks recorded so far as JSON (``{"marks": [[label, thread, ns], ...]}``) and empties the
list. Every other request is the target's, with a ``request`` mark as it enters and a
``done`` mark as it returns (its answer sent).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

# target -> (module, attribute path, label on the call, label on the return or None)
MARKS: dict[str, list[tuple[str, str, str, str | None]]] = {
    "server": [
        ("core.pipeline.router", "Router.receive_body", "pipeline", None),
        ("core.store.sqlite.journal", "SqliteJournal.admit", "journal", None),
        ("core.store.sqlite.database", "SqliteDatabase._statements_on_loop", "statements", "statements ran"),
        ("core.store.sqlite.database", "SqliteDatabase._commit", "commit", "committed"),
        ("core.store.sqlite.database", "SqliteDatabase._delivered", "delivered", None),
        ("core.pipeline.engine", "ExecutionEngine._execute", "execute", None),
        ("ccxt.async_support.base.exchange", "Exchange.fetch", "fetch", "fetched"),
        ("core.web.asgi", "BodyFirstConnection._send_response", "answer", None),
    ],
    "durable": [
        ("bench.durable", "GroupCommitJournal.write", "journal", "delivered"),
        ("bench.durable", "GroupCommitJournal._settle", "committed", None),
        ("ccxt.async_support.base.exchange", "Exchange.fetch", "fetch", "fetched"),
        ("bench.limit_app", "_answer", "answer", None),
    ],
}
APPS = {"server": "core.web.app", "durable": "bench.limit_app"}
PATH = "/__timeline"

_marks: list[tuple[str, str, int]] = []
_clock = time.perf_counter_ns


def mark(label: str) -> None:
    _marks.append((label, threading.current_thread().name, _clock()))  # list.append: atomic under the GIL


def wrapped(fn: Callable[..., Any], label: str, after: str | None) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def marked_coroutine(*args: Any, **kwargs: Any) -> Any:
            mark(label)
            try:
                return await fn(*args, **kwargs)
            finally:
                if after is not None:
                    mark(after)

        return marked_coroutine

    @functools.wraps(fn)
    def marked(*args: Any, **kwargs: Any) -> Any:
        mark(label)
        try:
            return fn(*args, **kwargs)
        finally:
            if after is not None:
                mark(after)

    return marked


def resolve(module_name: str, path: str) -> tuple[Any, str, Callable[..., Any]]:
    """(owner, attribute name, function) of ``module_name``'s ``path`` (``Class.method`` or a
    module's function); ``LookupError`` naming it when it is gone."""
    owner: Any = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent, None)
    fn = getattr(owner, name, None) if owner is not None else None
    if not callable(fn):
        raise LookupError(f"bench.timeline: {module_name}.{path} is gone; update bench.timeline_app.MARKS")
    return owner, name, fn


def install(target: str) -> None:
    """Wrap the functions ``MARKS[target]`` names (``resolve``)."""
    for module_name, path, label, after in MARKS[target]:
        owner, name, fn = resolve(module_name, path)
        setattr(owner, name, wrapped(fn, label, after))


def marked_app(inner: Callable[..., Any]) -> Callable[..., Any]:
    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return
        if scope["path"] == PATH:
            global _marks
            taken, _marks = _marks, []
            body = json.dumps({"marks": taken}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        mark("request")
        try:
            await inner(scope, receive, send)
        finally:
            mark("done")

    return app


def _load() -> Callable[..., Any]:
    target = os.environ.get("BENCH_TIMELINE_TARGET", "")
    if target not in MARKS:
        raise LookupError(f"BENCH_TIMELINE_TARGET must be one of {', '.join(MARKS)}, not {target!r}")
    install(target)
    return marked_app(importlib.import_module(APPS[target]).app)


app = _load() if os.environ.get("BENCH_TIMELINE_TARGET") else None
