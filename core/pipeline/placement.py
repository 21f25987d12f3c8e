"""Which plugin places an order (``execute_order``) and which one is asked what became of it
(``lookup_order``): the plugin that placed it, or — when a crash mid-send left that unknown —
every one in order, the first answer winning."""

from __future__ import annotations

import inspect

import pluggy

from core.hooks.manager import call_implementation, hook_implementations
from core.pipeline.host import HookHost
from core.pipeline.models import Alert, OrderRequest, OrderResult
from core.trading.execution import Executor, LookupResult


async def place_order(
    host: HookHost, alert: Alert, executor: Executor, order: OrderRequest, placer: list[str]
) -> OrderResult:
    """``execute_order`` until a plugin claims the order; ``placer`` gets the name of the
    plugin that claimed it, or raised (reconciliation asks that one)."""
    kwargs = {"order": order, "executor": executor, "alert": alert, "router": host}
    result = None
    for impl in hook_implementations(host.hook.execute_order):
        placer[:] = [impl.plugin_name]
        # ``call_implementation`` inlined: the plugin's coroutine is awaited here, one
        # coroutine fewer for every step of the send (execute_order is no startup hook).
        result = impl.function(*[kwargs[arg] for arg in impl.argnames])
        if result is not None and inspect.isawaitable(result):
            result = await result
        if result is not None:
            break
    if not isinstance(result, OrderResult):
        raise TypeError(f"execute_order returned {type(result).__name__}, not an OrderResult")
    return result


async def lookup_order(
    host: HookHost, alert: Alert, executor: Executor, order: OrderRequest, placed_by: str | None
) -> LookupResult:
    """Ask the plugin that placed ``order`` what became of it. ``placed_by`` None (a crash
    before it was journaled): every ``lookup_order`` in order, the first answer wins."""
    kwargs = {"order": order, "executor": executor, "alert": alert, "router": host}
    impls = [i for i in hook_implementations(host.hook.lookup_order) if placed_by is None or i.plugin_name == placed_by]
    if not impls:
        return LookupResult.cannot_tell(
            f"plugin '{placed_by}' placed the order and implements no lookup_order", ask_again=False
        )
    for impl in impls:
        answer = await call_implementation(impl, kwargs)
        if answer is None:
            continue
        if isinstance(answer, OrderResult):  # an executor written before LookupResult
            return LookupResult.found(answer)
        if not isinstance(answer, LookupResult):
            raise TypeError(
                f"lookup_order of plugin '{impl.plugin_name}' returned {type(answer).__name__}, not a LookupResult"
            )
        unlookable = unlookable_placers(host.hook)
        if answer.is_absent and placed_by is None and unlookable:
            # Who placed it is unknown (a crash mid-send) and a plugin that may claim
            # orders cannot look them up: "absent" from the executor proves nothing.
            return LookupResult.cannot_tell(
                f"the order may have been placed by plugin(s) {', '.join(unlookable)}, which "
                "implement execute_order but no lookup_order",
                ask_again=False,
            )
        return answer
    return LookupResult.cannot_tell("no plugin could tell", ask_again=False)


def unlookable_placers(hook: pluggy.HookRelay) -> list[str]:
    """Plugins that may claim orders (``execute_order`` not marked ``observes_only``) but
    implement no ``lookup_order``."""
    lookers = {i.plugin_name for i in hook.lookup_order.get_hookimpls()}
    return sorted(
        {
            i.plugin_name
            for i in hook.execute_order.get_hookimpls()
            if i.plugin_name not in lookers and not getattr(i.function, "observes_only", False)
        }
    )
