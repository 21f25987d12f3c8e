"""plugins.yaml: one top-level section per plugin (plus ``router``), ``${VAR}`` interpolated.

A plugin validates its own section with its options model (:class:`PluginOptions`); any
mistake is one line naming the file, the plugin and the field.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from core.errors import ConfigError

# libyaml's parser where PyYAML was built with it (the wheels are): the same safe loading,
# ~10x faster than the pure-Python one (~7 ms of every start for the shipped plugins.yaml).
_SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class PluginsFile:
    """The parsed plugins.yaml: one top-level section per plugin, plus ``router``.

    ``${VAR}`` and ``${VAR:-default}`` in any string are replaced from the environment and
    ``.env``; ``$$`` stands for a literal ``$``. A missing variable without a default is an
    error naming the plugin and the field it is in.
    """

    def __init__(self, path: str | os.PathLike[str], sections: dict[str, Any], environ: Mapping[str, str]) -> None:
        self.path = str(path)
        self._raw = sections
        self._environ = environ
        self.used: set[str] = set()

    @classmethod
    def load(cls, path: str | os.PathLike[str], environ: Mapping[str, str]) -> PluginsFile:
        p = Path(path)
        if not p.exists():
            return cls(path, {}, environ)
        try:
            data = yaml.load(p.read_text(encoding="utf-8"), Loader=_SAFE_LOADER) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}:{where} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of plugin sections at the top level")
        return cls(path, data, environ)

    def section_names(self) -> list[str]:
        return list(self._raw)

    def section(self, name: str) -> dict[str, Any]:
        """The section of plugin ``name`` with ``${VAR}`` interpolated ({} when absent)."""
        self.used.add(name)
        raw = self._raw.get(name)
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{self.path}: plugin '{name}': expected a mapping of options, got {type(raw).__name__}")
        interpolated: dict[str, Any] = self._interpolate(raw, name, ())
        return interpolated

    def _interpolate(self, value: Any, plugin: str, path: tuple[str | int, ...]) -> Any:
        if isinstance(value, dict):
            return {k: self._interpolate(v, plugin, path + (k,)) for k, v in value.items()}
        if isinstance(value, list):
            return [self._interpolate(v, plugin, path + (i,)) for i, v in enumerate(value)]
        if not isinstance(value, str) or "$" not in value:
            return value

        def replace(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            if name in self._environ and self._environ[name] != "":
                return self._environ[name]
            if default is not None:
                return default
            field = ".".join(str(p) for p in path)
            raise ConfigError(
                f"{self.path}: plugin '{plugin}': field '{field}': environment variable {name} is not set "
                f"(set it, or write ${{{name}:-default}})"
            )

        return _VAR.sub(replace, value)

    def validate(self, name: str, model: type[BaseModel]) -> BaseModel:
        """Validate plugin ``name``'s section with ``model``; errors become one readable line."""
        data = self.section(name)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(self.path, name, exc)) from None


def describe_validation_error(path: str, plugin: str, exc: ValidationError) -> str:
    """``PATH: plugin 'NAME': field 'F': what is wrong (got VALUE) [+N more]`` for the first error."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "(section)"
    if err["type"] == "extra_forbidden":
        expected = "no such option"
    else:
        expected = err["msg"]
    got = err.get("input")
    shown = "" if err["type"] in ("missing", "extra_forbidden") or isinstance(got, (dict, list)) else f" (got {got!r})"
    more = f" [+{len(exc.errors()) - 1} more]" if len(exc.errors()) > 1 else ""
    return f"{path}: plugin '{plugin}': field '{field}': {expected}{shown}{more}"
