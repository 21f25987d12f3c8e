"""How the router calls a hook (core.hooks.manager): order, arguments, awaiting, failures,
and that a plugin registered or unregistered later is seen by the next call."""

from __future__ import annotations

import logging

import pluggy
import pytest

from core.errors import ConfigError
from core.hooks import specs as hookspecs
from core.hooks.manager import call_hook, call_hook_first, call_hook_safely, hook_implementations, hookimpl


def manager(*plugins: tuple[str, object]) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name, plugin in plugins:
        pm.register(plugin, name=name)
    return pm


class Calls:
    def __init__(self) -> None:
        self.seen: list[tuple[str, tuple[object, ...]]] = []


def named(calls: Calls, name: str, *, answer: object = None, **marks: bool) -> object:
    class Plugin:
        @hookimpl(**marks)
        def transform_payload(self, payload, request, router):  # every argument
            calls.seen.append((name, (payload, request, router)))
            return answer

        @hookimpl(**marks)
        async def parse_payload(self, body):  # one argument, awaited
            calls.seen.append((name, (body,)))
            return answer

        @hookimpl(**marks)
        def router_startup(self):  # none
            calls.seen.append((name, ()))
            if answer == "boom":
                raise RuntimeError("boom")

    return Plugin()


async def test_every_implementation_is_called_in_order_with_the_arguments_it_names():
    calls = Calls()
    pm = manager(
        ("late", named(calls, "late", answer=1, trylast=True)),
        ("plain", named(calls, "plain", answer=2)),
        ("early", named(calls, "early", answer=3, tryfirst=True)),
    )
    results = await call_hook(pm.hook.transform_payload, payload={"a": 1}, request="req", router="rtr")
    assert results == [3, 2, 1]
    assert calls.seen == [(name, ({"a": 1}, "req", "rtr")) for name in ("early", "plain", "late")]
    assert [i.plugin_name for i in hook_implementations(pm.hook.transform_payload)] == ["early", "plain", "late"]

    calls.seen.clear()
    assert await call_hook(pm.hook.parse_payload, body=b"x", content_type="t", router="r") == [3, 2, 1]
    assert calls.seen == [("early", (b"x",)), ("plain", (b"x",)), ("late", (b"x",))]

    calls.seen.clear()
    assert await call_hook(pm.hook.router_startup, router="r") == [None, None, None]
    assert [name for name, args in calls.seen if args == ()] == ["early", "plain", "late"]


async def test_a_plugin_registered_or_unregistered_after_a_call_is_seen_by_the_next_one():
    calls = Calls()
    first = named(calls, "first", answer="a")
    pm = manager(("first", first))
    assert await call_hook(pm.hook.transform_payload, payload={}, request=None, router=None) == ["a"]
    pm.register(named(calls, "second", answer="b", tryfirst=True), name="second")
    assert await call_hook(pm.hook.transform_payload, payload={}, request=None, router=None) == ["b", "a"]
    pm.unregister(first)
    assert await call_hook(pm.hook.transform_payload, payload={}, request=None, router=None) == ["b"]
    assert await call_hook_first(pm.hook.parse_payload, body=b"", content_type="", router=None) == "b"


async def test_call_hook_first_stops_at_the_first_answer():
    calls = Calls()
    pm = manager(
        ("third", named(calls, "third", answer="c", trylast=True)),
        ("second", named(calls, "second", answer="b")),
        ("first", named(calls, "first", answer=None, tryfirst=True)),
    )
    assert await call_hook_first(pm.hook.parse_payload, body=b"{}", content_type="", router=None) == "b"
    assert [name for name, _ in calls.seen] == ["first", "second"]


async def test_failures_startup_hooks_name_the_plugin_others_raise_as_they_are_or_are_logged(caplog):
    calls = Calls()
    pm = manager(("broken", named(calls, "broken", answer="boom")))
    with pytest.raises(ConfigError, match="plugin 'broken': router_startup failed: RuntimeError: boom"):
        await call_hook(pm.hook.router_startup, router=None)

    class Raising:
        @hookimpl
        def transform_payload(self, payload):
            raise KeyError("not a startup hook")

    pm = manager(("raising", Raising()), ("after", named(calls, "after", answer="z", trylast=True)))
    with pytest.raises(KeyError):
        await call_hook(pm.hook.transform_payload, payload={}, request=None, router=None)
    calls.seen.clear()
    with caplog.at_level(logging.ERROR, logger="core.hooks.manager"):
        await call_hook_safely(pm.hook.transform_payload, payload={}, request=None, router=None)
    assert "plugin raising failed in transform_payload" in caplog.text
    assert [name for name, _ in calls.seen] == ["after"]  # the next one is still called


async def test_every_kind_of_awaitable_result_is_awaited_and_plain_values_are_not():
    import asyncio
    import types

    class Awaitable:
        def __await__(self):
            return (yield from asyncio.sleep(0, result="custom").__await__())

    class AwaitableDict(dict):  # a subclass of a plain type may be awaitable
        def __await__(self):
            return (yield from asyncio.sleep(0, result="dict subclass").__await__())

    @types.coroutine
    def generator_based():
        yield
        return "generator-based"

    for answer, expected in (
        ({"a": 1}, {"a": 1}),
        ([1], [1]),
        ("text", "text"),
        (Awaitable(), "custom"),
        (AwaitableDict(), "dict subclass"),
        (asyncio.sleep(0, result="coroutine"), "coroutine"),
        (generator_based(), "generator-based"),
    ):
        calls = Calls()
        pm = manager(("p", named(calls, "p", answer=answer)))
        assert await call_hook_first(pm.hook.transform_payload, payload={}, request=None, router=None) == expected
        if not isinstance(answer, types.CoroutineType | types.GeneratorType):  # awaited once only
            assert (await call_hook(pm.hook.transform_payload, payload={}, request=None, router=None)) == [expected]
