"""The configuration reference: the settings model(s) and every plugins.yaml section."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import pkgutil
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from refgen_fields import (
    ROOT,
    Row,
    describe_fields,
    ensure_importable,
    env_file_comments,
    table,
    yaml_section_comments,
)

# ---------------------------------------------------------------- environment settings


def settings_models() -> list[type]:
    """The settings model(s) of core/config/settings.py: BaseSettings subclasses if there are any,
    else its pydantic models that are not plugin options."""
    ensure_importable()
    from pydantic import BaseModel

    config = importlib.import_module("core.config")
    plugin_options = getattr(config, "PluginOptions", None)
    models = [
        obj
        for obj in vars(config).values()
        if isinstance(obj, type)
        and issubclass(obj, BaseModel)
        and obj.__module__ == config.__name__
        and not (plugin_options and issubclass(obj, plugin_options))
        and obj is not plugin_options
    ]
    try:
        from pydantic_settings import BaseSettings

        settings = [  # defined there, or imported there from a module of its own
            obj
            for obj in vars(config).values()
            if isinstance(obj, type) and issubclass(obj, BaseSettings) and obj is not BaseSettings
        ]
        if settings:
            return settings
    except ImportError:
        pass
    named = [m for m in models if m.__name__.endswith("Settings")]
    return named or models


def env_name(model: type, name: str, info: Any) -> str:
    """The environment variable a settings field reads."""
    alias = info.validation_alias or info.alias
    if isinstance(alias, str):
        return alias
    choices = getattr(alias, "choices", None)
    if choices:
        first = choices[0]
        return first if isinstance(first, str) else str(first.path[0])
    path = getattr(alias, "path", None)
    if path:
        return str(path[0])
    prefix = str(model.model_config.get("env_prefix", "") or "")
    return (prefix + name).upper()


def settings_markdown() -> str:
    comments = env_file_comments(ROOT / ".env.example")
    parts = []
    for model in settings_models():
        rows = [
            row
            for row, _ in describe_fields(model, comments, names=lambda name, info, m=model: env_name(m, name, info))
        ]
        source = inspect.getsourcefile(model) or ""
        where = Path(source).resolve().relative_to(ROOT) if source.startswith(str(ROOT)) else source
        parts.append(f"Generated from `{model.__name__}` in `{where}`.\n\n" + table(rows, "Variable"))
    return "\n\n".join(parts)


# ---------------------------------------------------------------- plugins.yaml sections


def plugin_sections() -> list[tuple[str, type, str]]:
    """(section, options model, where it comes from) for router, state, the built-ins and
    the plugins shipped under plugins/ that are loaded by module path."""
    ensure_importable()
    from pydantic import BaseModel

    config = importlib.import_module("core.config")
    base = config.PluginOptions
    sections: list[tuple[str, type, str]] = []
    manager = importlib.import_module("core.hooks.manager")
    core_sections = sorted(getattr(manager, "CORE_SECTIONS", {"router", "state"}))
    for section in core_sections:
        wanted = f"{section.capitalize()}Options"
        model = getattr(config, wanted, None) or _find_class(["core"], wanted, base)
        if model is not None:
            sections.append((section, model, "core"))
    builtins = list(getattr(manager, "BUILTIN_PLUGINS", ()))
    seen: set[type] = set()
    for name, dotted in builtins:
        plugin = getattr(importlib.import_module(dotted), "Plugin", None)
        model = getattr(plugin, "Options", None)
        if isinstance(model, type) and issubclass(model, BaseModel):
            sections.append((name, model, f"built-in, `{dotted}`"))
            seen.add(model)
    builtin_modules = {dotted for _, dotted in builtins}
    for module in _walk(["plugins"]):
        plugin = getattr(module, "Plugin", None)
        model = getattr(plugin, "Options", None)
        if (
            isinstance(model, type)
            and issubclass(model, base)
            and model not in seen
            and module.__name__ not in builtin_modules
        ):
            seen.add(model)
            name = module.__name__.rsplit(".", 1)[-1]
            sections.append((name, model, f"loaded by `router.modules: [{module.__name__}]`"))
    return sections


def _walk(packages: list[str]) -> Iterator[types.ModuleType]:
    for package_name in packages:
        package = importlib.import_module(package_name)
        yield package
        for info in sorted(pkgutil.walk_packages(package.__path__, package_name + "."), key=lambda i: i.name):
            with contextlib.suppress(Exception):
                yield importlib.import_module(info.name)


def _find_class(packages: list[str], name: str, base: type) -> type | None:
    for module in _walk(packages):
        obj = getattr(module, name, None)
        if isinstance(obj, type) and issubclass(obj, base):
            return obj
    return None


def _nested_models(annotation: Any) -> Iterator[tuple[str, type]]:
    """Models inside a field's type, with the path suffix that reaches them."""
    from pydantic import BaseModel

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield "", annotation
    elif origin is dict and len(args) == 2:
        for suffix, model in _nested_models(args[1]):
            yield ".<name>" + suffix, model
    elif origin in (list, tuple, set, frozenset) and args:
        for suffix, model in _nested_models(args[0]):
            yield "[]" + suffix, model
    elif origin in (typing.Union, types.UnionType, typing.Annotated):
        for arg in args:
            yield from _nested_models(arg)


def _all_names(model: type, seen: set[type] | None = None) -> set[str]:
    seen = seen if seen is not None else set()
    if model in seen:
        return set()
    seen.add(model)
    names = set(model.model_fields)
    for info in model.model_fields.values():
        for _, nested in _nested_models(info.annotation):
            names |= _all_names(nested, seen)
    return names


def plugin_options_markdown() -> str:
    parts: list[str] = []
    plugins_yaml = ROOT / "plugins.yaml"
    for section, model, origin in plugin_sections():
        comments = yaml_section_comments(plugins_yaml, section, _all_names(model))
        parts.append(f"### `{section}`\n")
        doc = inspect.getdoc(model) if "__doc__" in model.__dict__ and model.__doc__ else ""
        if doc:
            parts.append(re.sub(r"``([^`]+)``", r"`\1`", " ".join(doc.split())) + "\n")
        parts.append(f"Section `{section}:` ({origin}).\n")
        paths: dict[type, list[str]] = {model: [section]}
        pending: list[type] = [model]
        rows_of: dict[type, list[Row]] = {}
        while pending:
            current = pending.pop(0)
            rows_of[current] = []
            for row, info in describe_fields(current, comments):
                rows_of[current].append(row)
                for suffix, nested in _nested_models(info.annotation):
                    where = f"{paths[current][0]}.{row.name}{suffix}"
                    if nested not in paths:
                        paths[nested] = [where]
                        pending.append(nested)
                    elif where not in paths[nested]:
                        paths[nested].append(where)
        for current, rows in rows_of.items():
            if current is not model:
                parts.append(", ".join(f"`{p}`" for p in paths[current]) + ":\n")
            parts.append((table(rows, "Option") if rows else "No options.") + "\n")
    return "\n".join(parts)


def aliases_markdown() -> str:
    """The tradingview transform's aliases, by the field they stand for."""
    ensure_importable()
    plugin = importlib.import_module("plugins.transforms.tradingview").Plugin
    aliases: dict[str, str] = plugin.Options().aliases
    by_field: dict[str, list[str]] = {}
    for alias, target in aliases.items():
        by_field.setdefault(target, []).append(alias)
    out = ["| Field | Also read from |", "|---|---|"]
    for target, names in by_field.items():
        out.append(f"| `{target}` | {', '.join(f'`{n}`' for n in names)} |")
    return "\n".join(out)
