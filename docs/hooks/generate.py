"""MkDocs hook: the reference tables, generated from the code so they cannot go stale.

A page holding one of these markers gets it replaced when the site is built:

``<!-- generated: settings -->``
    the environment settings: the fields of the settings model(s) in ``core/config/settings.py``;
``<!-- generated: plugin-options -->``
    every section of plugins.yaml: ``router``, ``state`` and each plugin's ``Options``;
``<!-- generated: cli -->``
    every command of the command line, from its argparse parsers;
``<!-- generated: aliases -->``
    the other names the tradingview transform reads alert fields from.

Descriptions come from ``Field(description=...)``, else the attribute's docstring, else the
comment on the field in the source, else the comment on the variable in ``.env.example``
or on the key in ``plugins.yaml``. The functions are importable on their own
(``tests/docs`` calls them) and depend only on pydantic v2's ``model_fields`` and argparse.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from refgen_cli import capture_parser, cli_markdown, main_parser, walk_parser
from refgen_fields import ROOT, ensure_importable
from refgen_sections import (
    aliases_markdown,
    env_name,
    plugin_options_markdown,
    plugin_sections,
    settings_markdown,
    settings_models,
)

MARKER = re.compile(r"<!--\s*generated:\s*([a-z-]+)\s*-->")
__all__ = [
    "ROOT",
    "aliases_markdown",
    "capture_parser",
    "cli_markdown",
    "env_name",
    "expand",
    "main_parser",
    "plugin_options_markdown",
    "plugin_sections",
    "settings_markdown",
    "settings_models",
    "walk_parser",
]


GENERATORS: dict[str, Callable[[], str]] = {
    "aliases": aliases_markdown,
    "settings": settings_markdown,
    "plugin-options": plugin_options_markdown,
    "cli": cli_markdown,
}


def expand(markdown: str) -> str:
    """``markdown`` with every generated marker replaced."""

    def replace(m: re.Match[str]) -> str:
        kind = m.group(1)
        if kind not in GENERATORS:
            raise ValueError(f"unknown generated section {kind!r} (known: {', '.join(GENERATORS)})")
        return GENERATORS[kind]()

    return MARKER.sub(replace, markdown)


# ---------------------------------------------------------------- MkDocs events


def on_config(config: Any) -> Any:
    ensure_importable()
    return config


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return expand(markdown) if MARKER.search(markdown) else markdown
