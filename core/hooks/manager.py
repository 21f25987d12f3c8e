"""The plugin-manager factory and the one helper that calls (and awaits) hooks.

Load order, all through ``register_plugin``: hook specs, installed packages (the
``ccxt_trading_webhook`` entry-point group), the drop-in folder (``router.plugin_dir``,
default ``./local_plugins``), dotted module paths (``router.modules``), then the
built-ins. Any of them can be disabled by name in ``router.disabled``.

A plugin is either a module of ``@hookimpl`` functions (no options), or a module
exposing a class ``Plugin`` (or the class itself, for entry points) whose optional
``Options`` pydantic model validates the plugin's section of plugins.yaml; the router
instantiates ``Plugin(options)`` once, so configuration reaches a plugin exactly once
and hooks never read the environment.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from operator import itemgetter
from pathlib import Path
from types import CoroutineType, ModuleType
from typing import Any, TypeGuard, TypeVar

import pluggy

from core.config import PluginOptions, PluginsFile, RouterOptions
from core.errors import ConfigError
from core.hooks import specs as hookspecs

log = logging.getLogger(__name__)

hookimpl = pluggy.HookimplMarker(hookspecs.PROJECT)

F = TypeVar("F", bound=Callable[..., Any])


def observes_only(function: F) -> F:
    """Mark an ``execute_order`` implementation that watches orders and never claims one
    (metrics, logging). Without the mark, a plugin implementing ``execute_order`` but not
    ``lookup_order`` may have placed an order the router cannot look up, so after a crash
    mid-send the router never resends on an executor's "absent" (core.pipeline.engine)."""
    setattr(function, "observes_only", True)  # noqa: B010 (an attribute functions do not declare)
    return function


ENTRY_POINT_GROUP = hookspecs.PROJECT

# Services of core's own that ``router.disabled`` may switch off by name, like a plugin, and
# whose plugins.yaml sections are core's: name -> the module that owns it. The app registers
# such a service with the plugin manager itself (``PluginSet.add_core``) when it observes the
# pipeline through the hooks; no plugin may take the name.
CORE_SERVICES: dict[str, str] = {"metrics": "core.observability.metrics"}

# Sections of plugins.yaml that configure core itself, not a plugin.
CORE_SECTIONS = frozenset({"router", "state", *CORE_SERVICES})

# The built-ins, registered last through the same path as every other plugin.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("json_payload", "plugins.transforms.json_payload"),
    ("ip_allowlist", "plugins.auth.ip_allowlist"),
    ("hmac", "plugins.auth.hmac_auth"),
    ("token", "plugins.auth.token_auth"),
    ("tradingview", "plugins.transforms.tradingview"),
    ("paper", "plugins.exchanges.paper.plugin"),
    ("ccxt", "plugins.exchanges.ccxt.plugin"),
    ("risk", "plugins.risk.limits"),
    ("webhook_notify", "plugins.notifiers.webhook_notify"),
    ("telegram", "plugins.notifiers.telegram"),
    ("default_execution", "core.trading.execution"),
)


@dataclass(frozen=True)
class LoadedPlugin:
    name: str
    source: str  # entrypoint | dropin | module | builtin
    origin: str  # the module path or file
    plugin: object


class PluginSet:
    """The plugin manager plus what was loaded from where (for the health check)."""

    def __init__(self, pm: pluggy.PluginManager, loaded: list[LoadedPlugin]):
        self.pm = pm
        self.loaded = loaded

    @property
    def hook(self) -> pluggy.HookRelay:
        return self.pm.hook

    def names(self) -> list[str]:
        return [p.name for p in self.loaded]

    def get(self, name: str) -> object | None:
        return self.pm.get_plugin(name)

    def add_core(self, name: str, service: object) -> None:
        """Register a service of core's (``CORE_SERVICES``) so that it observes the pipeline
        through the hooks; listed with source ``core``."""
        if name not in CORE_SERVICES:
            raise ValueError(f"{name!r} is not one of core's services ({', '.join(CORE_SERVICES)})")
        _register(self.pm, service, name, CORE_SERVICES[name])
        self.loaded.append(LoadedPlugin(name, "core", CORE_SERVICES[name], service))


def create_plugin_manager(plugins_file: PluginsFile, extra: list[tuple[str, object]] | None = None) -> PluginSet:
    """Build a fresh plugin manager from plugins.yaml (no import-time global).

    ``extra`` plugins (name, module-or-object) are registered after the modules named
    in plugins.yaml and before the built-ins; tests use it to add throwaway plugins.
    """
    router_opts: RouterOptions = plugins_file.validate("router", RouterOptions)  # type: ignore[assignment]
    disabled = set(router_opts.disabled)
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    loaded: list[LoadedPlugin] = []
    seen: set[str] = set()

    def load(name: str, source: str, origin: str, target: Any) -> None:
        seen.add(name)
        if name in disabled:
            log.info("plugin %s (%s) is disabled in %s", name, source, plugins_file.path)
            return
        if name in CORE_SERVICES:
            raise ConfigError(
                f"plugin '{name}' ({origin}): the name is core's {name} service ({CORE_SERVICES[name]}); "
                "give the plugin another name"
            )
        plugin = _instantiate(name, target(), plugins_file)
        try:
            _register(pm, plugin, name, origin)
        except ValueError as exc:
            other = next((p for p in loaded if p.name == name), None)
            where = f" (already loaded from {other.origin})" if other else ""
            raise ConfigError(
                f"plugin '{name}' ({origin}): a plugin of that name is already registered{where}: {exc}"
            ) from None
        loaded.append(LoadedPlugin(name, source, origin, plugin))

    for ep in _entry_points():
        load(ep.name, "entrypoint", ep.value, lambda ep=ep: _import(ep.name, ep.value, ep.load))
    for path in _dropin_files(plugins_file, router_opts.plugin_dir):
        load(path.stem, "dropin", str(path), lambda path=path: _import_file(path))
    for dotted in router_opts.modules:
        load(
            dotted.rsplit(".", 1)[-1],
            "module",
            dotted,
            lambda d=dotted: _import(d, d, lambda: importlib.import_module(d)),
        )
    for name, obj in extra or []:
        load(name, "extra", getattr(obj, "__name__", type(obj).__name__), lambda o=obj: o)
    for name, dotted in BUILTIN_PLUGINS:
        load(name, "builtin", dotted, lambda n=name, d=dotted: _import(n, d, lambda: importlib.import_module(d)))

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise ConfigError(f"plugin '{_plugin_name(pm, exc.plugin)}': {_one_line(exc)}") from None

    unknown_disabled = disabled - seen - set(CORE_SERVICES)
    if unknown_disabled:
        names = ", ".join(sorted(unknown_disabled))
        raise ConfigError(f"{plugins_file.path}: plugin 'router': field 'disabled': no plugin named {names}")
    sections = set(plugins_file.section_names()) - CORE_SECTIONS - seen
    if sections:
        name = sorted(sections)[0]
        raise ConfigError(
            f"{plugins_file.path}: plugin '{name}': no plugin of that name is loaded (known: {', '.join(sorted(seen))})"
        )
    return PluginSet(pm, loaded)


def _register(pm: pluggy.PluginManager, plugin: object, name: str, origin: str) -> None:
    """``pm.register`` with pluggy's validation as a one-line ConfigError; hook wrappers are
    refused: the router calls every implementation itself, one at a time (``call_hook``), so
    a wrapper (``hookwrapper=True`` or ``wrapper=True``) would silently never run."""
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise ConfigError(f"plugin '{name}' ({origin}): {_one_line(exc)}") from None
    for caller in pm.get_hookcallers(plugin) or []:
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin and (impl.hookwrapper or impl.wrapper):
                pm.unregister(plugin)
                raise ConfigError(
                    f"plugin '{name}' ({origin}): hook '{caller.name}' is a hook wrapper (hookwrapper/wrapper=True), "
                    "which the router does not run: implement the hook plainly"
                )


def _one_line(exc: Exception) -> str:
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def _plugin_name(pm: pluggy.PluginManager, plugin: object) -> str:
    return pm.get_name(plugin) or str(getattr(plugin, "__name__", repr(plugin)))


def _entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _import(name: str, origin: str, loader: Callable[[], Any]) -> Any:
    try:
        return loader()
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"plugin '{name}': error importing {origin}: {type(exc).__name__}: {exc}") from None


def _dropin_files(plugins_file: PluginsFile, folder: str) -> list[Path]:
    path = Path(folder)
    if not path.is_absolute():
        # Relative to the current directory, like DATA_DIR and PLUGINS_FILE themselves.
        path = Path.cwd() / path
    if not path.is_dir():
        return []
    return sorted(p for p in path.glob("*.py") if not p.name.startswith("_"))


def _import_file(path: Path) -> ModuleType:
    module_name = f"{ENTRY_POINT_GROUP}_dropin.{path.stem}"

    def loader() -> ModuleType:
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        return module

    module: ModuleType = _import(path.stem, str(path), loader)
    return module


def _instantiate(name: str, obj: Any, plugins_file: PluginsFile) -> object:
    """A module with a ``Plugin`` class, or a class, becomes an instance with its options."""
    cls = obj if isinstance(obj, type) else getattr(obj, "Plugin", None) if isinstance(obj, ModuleType) else None
    if cls is None:
        if plugins_file.section(name):
            raise ConfigError(f"{plugins_file.path}: plugin '{name}': this plugin takes no options")
        return obj
    model = getattr(cls, "Options", None)
    try:
        if model is None:
            if plugins_file.section(name):
                raise ConfigError(f"{plugins_file.path}: plugin '{name}': this plugin takes no options")
            return cls()
        if not (isinstance(model, type) and issubclass(model, PluginOptions)):
            raise ConfigError(f"plugin '{name}': Options must subclass core.config.PluginOptions")
        return cls(plugins_file.validate(name, model))
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"plugin '{name}': error creating the plugin: {type(exc).__name__}: {exc}") from None


# ---------------------------------------------------------------- calling hooks

# A hook's implementations in calling order, with what calling each needs (its function and
# a getter of its arguments), resolved once per hook and kept while its implementations
# stay the same: pluggy changes a hook's list only when a plugin registers or unregisters,
# and a changed list is resolved again (``_resolved`` compares it, item by item, with the
# one it resolved). Bounded: managers made and dropped (tests) cannot grow it for ever.
_Resolved = tuple[tuple[pluggy.HookImpl, Callable[..., Any], Callable[[dict[str, Any]], Any] | None, int], ...]
_RESOLVED: dict[pluggy.HookCaller, tuple[list[pluggy.HookImpl], _Resolved]] = {}
_MAX_RESOLVED = 512


def _resolved(hook: pluggy.HookCaller) -> _Resolved:
    current = hook._hookimpls  # what get_hookimpls() copies; compared, never changed here
    cached = _RESOLVED.get(hook)
    if cached is not None and cached[0] == current:
        return cached[1]
    # pluggy keeps trylast first and tryfirst last and calls the list in reverse. Hook
    # wrappers never get here: registration refuses them (``_register``).
    resolved = tuple(
        (impl, impl.function, itemgetter(*impl.argnames) if impl.argnames else None, len(impl.argnames))
        for impl in reversed(current)
    )
    if len(_RESOLVED) >= _MAX_RESOLVED:
        _RESOLVED.clear()
    _RESOLVED[hook] = (list(current), resolved)
    return resolved


def hook_implementations(hook: pluggy.HookCaller) -> Iterator[pluggy.HookImpl]:
    """A hook's implementations in calling order (what ``call_hook`` calls, one by one)."""
    return (impl for impl, _, _, _ in _resolved(hook))


# The hooks called while the server starts: an exception from one stops startup with one
# line naming the plugin and the hook (a ConfigError is a plugin's own one-line message).
STARTUP_HOOKS = frozenset({"register_routes", "register_executors", "router_startup"})


def _startup_failure(impl: pluggy.HookImpl, exc: Exception) -> None:
    """Raise the one-line ConfigError of a startup hook's failure; return for any other
    hook, or for a ConfigError (the caller re-raises ``exc`` as it is)."""
    if isinstance(exc, ConfigError):
        return
    hook = impl.opts.get("specname") or impl.function.__name__
    if hook in STARTUP_HOOKS:
        raise ConfigError(f"plugin '{impl.plugin_name}': {hook} failed: {type(exc).__name__}: {exc}") from exc


# Results that are never awaitable, by exact type (a subclass may define __await__).
_PLAIN_RESULTS = frozenset({dict, list, tuple, str, bytes, int, float, bool})


def _awaitable(result: Any) -> TypeGuard[Awaitable[Any]]:
    """``inspect.isawaitable`` of a non-None hook result, with the usual answers first: an
    async implementation's coroutine, or a plain value such as the parser's dict, which
    isawaitable would put through the ``Awaitable`` ABC's isinstance machinery."""
    kind = type(result)
    if kind is CoroutineType:
        return True
    return kind not in _PLAIN_RESULTS and inspect.isawaitable(result)


async def call_implementation(impl: pluggy.HookImpl, kwargs: dict[str, Any]) -> Any:
    """Call one implementation with the arguments it names, awaiting an awaitable result."""
    try:
        result = impl.function(*[kwargs[arg] for arg in impl.argnames])
        if result is not None and _awaitable(result):  # most implementations return None at once
            result = await result
    except Exception as exc:
        _startup_failure(impl, exc)
        raise
    return result


# The three ways of calling a hook below inline what ``call_implementation`` does (one
# coroutine fewer per implementation): the function with the arguments it names (``args``
# gets them: one value for one name, a tuple for several), an awaitable result awaited.


async def call_hook(hook: pluggy.HookCaller, **kwargs: Any) -> list[Any]:
    """Call every implementation in order, awaiting each before the next; all results."""
    results = []
    for impl, function, args, arity in _resolved(hook):
        try:
            result = function() if args is None else function(args(kwargs)) if arity == 1 else function(*args(kwargs))
            if result is not None and _awaitable(result):  # most implementations return None at once
                result = await result
        except Exception as exc:
            _startup_failure(impl, exc)
            raise
        results.append(result)
    return results


async def call_hook_first(hook: pluggy.HookCaller, **kwargs: Any) -> Any:
    """Call implementations in order until one returns non-None; that result."""
    for impl, function, args, arity in _resolved(hook):
        try:
            result = function() if args is None else function(args(kwargs)) if arity == 1 else function(*args(kwargs))
            if result is not None and _awaitable(result):
                result = await result
        except Exception as exc:
            _startup_failure(impl, exc)
            raise
        if result is not None:
            return result
    return None


async def call_hook_safely(hook: pluggy.HookCaller, **kwargs: Any) -> None:
    """Call every implementation; log and swallow each one's exception."""
    for impl, function, args, arity in _resolved(hook):
        try:
            result = function() if args is None else function(args(kwargs)) if arity == 1 else function(*args(kwargs))
            if result is not None and _awaitable(result):
                await result
        except Exception:
            log.exception("plugin %s failed in %s", impl.plugin_name, hook.name)


async def collect_routes(
    hook: pluggy.HookCaller, router: Any, reserved: set[str]
) -> list[tuple[str, str, Any, tuple[str, ...]]]:
    """Every ``register_routes`` implementation's routes: (plugin, path, view, methods).

    A path registered twice, or one in ``reserved`` (the app's own), is a ``ConfigError``
    naming the plugin."""
    routes: list[tuple[str, str, Any, tuple[str, ...]]] = []
    owners: dict[str, str] = {}
    for impl in hook_implementations(hook):

        def register(path: str, view: Any, methods: Any = ("GET",), _plugin: str = impl.plugin_name) -> None:
            if not isinstance(path, str) or not path.startswith("/"):
                raise ConfigError(f"plugin '{_plugin}': register_routes: a path must start with '/' (got {path!r})")
            if not callable(view):
                raise ConfigError(f"plugin '{_plugin}': register_routes: the view for {path} is not callable")
            if path in reserved:
                raise ConfigError(f"plugin '{_plugin}': register_routes: {path} is one of the router's own routes")
            if path in owners:
                raise ConfigError(
                    f"plugin '{_plugin}': register_routes: {path} is already registered by plugin '{owners[path]}'"
                )
            owners[path] = _plugin
            routes.append((_plugin, path, view, tuple(m.upper() for m in methods)))

        await call_implementation(impl, {"register": register, "router": router})
    return routes
