"""The examples in README.md and docs/: fenced blocks, the commands in them, and how to
parse a command with the project's real argument parsers without running it."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import re
import shlex
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import ROOT

DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHELL = {"bash", "sh", "shell", "console"}
YAML = {"yaml", "yml"}
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
    re.M | re.S,
)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(langs: set[str] | None = None, files: list[Path] | None = None) -> list[Block]:
    found = []
    for path in files or DOC_FILES:
        text = path.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            lang = m.group("lang").lower()
            if langs is not None and lang not in langs:
                continue
            indent = len(m.group("indent"))
            lines = m.group("body").splitlines(True)
            body = "".join(line[indent:] if line[:indent].strip() == "" else line for line in lines)
            found.append(Block(path, text.count("\n", 0, m.start()) + 1, lang, body))
    return found


def prose(path: Path) -> str:
    """The file without its fenced blocks."""
    return FENCE.sub("", path.read_text(encoding="utf-8"))


def inline_code(path: Path) -> list[str]:
    spans = re.findall(r"(?<!`)`([^`\n]+(?:\n[^`\n]+)?)`(?!`)", prose(path))
    return [" ".join(span.split()) for span in spans]


PLACEHOLDER = re.compile(r"<([A-Za-z][A-Za-z0-9_ .-]*)>")


def shell_script(block: Block, placeholders: str = "word") -> str:
    """The commands of a shell block (a console block's ``$ `` lines), with placeholders
    such as ``<token>`` or ``<your host>`` made words: ``placeholder`` (``word``) for the
    shell, or ``<your_host>`` (``keep``) to recognise them later."""
    text = block.text
    if block.lang == "console":
        text = "\n".join(line[2:] for line in text.splitlines() if line.startswith("$ "))
    if placeholders == "word":
        return PLACEHOLDER.sub("placeholder", text)
    return PLACEHOLDER.sub(lambda m: "<" + m.group(1).replace(" ", "_") + ">", text)


# ---------------------------------------------------------------- commands in shell text

OPERATORS = {"|", "||", "&&", ";", "&"}
PYTHON = re.compile(r"(^|/)python(3(\.\d+)?)?$")
MODULES = {"core", "emulator", "bench"}
SCRIPTS = {"manage_tokens.py", "simulate_tradingview.py"}
PROJECT_COMMAND = "ccxt-trading-webhook"


@dataclass(frozen=True)
class Invocation:
    program: str  # a module (core, emulator, bench), a script (manage_tokens.py, ...), ccxt-trading-webhook or make
    args: tuple[str, ...]
    source: str  # where in the docs

    def __str__(self) -> str:
        return f"{self.program} {shlex.join(self.args)}  ({self.source})"


def logical_lines(script: str) -> Iterator[str]:
    pending = ""
    for line in script.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def simple_commands(line: str) -> Iterator[list[str]]:
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return
    current: list[str] = []
    for word in words:
        if word in OPERATORS:
            if current:
                yield current
            current = []
        else:
            current.append(word)
    if current:
        yield current


def invocations(text: str, source: str) -> Iterator[Invocation]:
    """The project's commands in shell ``text``: wherever a python runs one of them
    (after ``VAR=value``, ``sudo``, ``heroku run -a app``, ...), and ``make`` targets."""
    for line in logical_lines(text):
        for words in simple_commands(line):
            head = [w for w in words if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", w)]
            if head and Path(head[0]).name == "make":
                yield Invocation("make", tuple(w for w in head[1:] if not w.startswith("-")), source)
                continue
            for i, word in enumerate(words):
                if Path(word).name == PROJECT_COMMAND:
                    yield Invocation(PROJECT_COMMAND, tuple(words[i + 1 :]), source)
                    break
                if not PYTHON.search(word):
                    continue
                rest = words[i + 1 :]
                if rest[:1] == ["-m"] and len(rest) > 1 and rest[1] in MODULES:
                    yield Invocation(rest[1], tuple(rest[2:]), source)
                elif rest and Path(rest[0]).name in SCRIPTS:
                    yield Invocation(Path(rest[0]).name, tuple(rest[1:]), source)
                break


def doc_invocations() -> list[Invocation]:
    found: list[Invocation] = []
    for block in blocks(SHELL):
        found += invocations(shell_script(block, placeholders="keep"), block.where)
    for path in DOC_FILES:
        for span in inline_code(path):
            if re.match(r"^(\S*/)?(python3?|make|ccxt-trading-webhook)\s+\S", span):
                span = PLACEHOLDER.sub(lambda m: "<" + m.group(1).replace(" ", "_") + ">", span)
                found += invocations(span, f"{path.relative_to(ROOT)} (inline)")
    return found


# ---------------------------------------------------------------- the real parsers


def entry_point(program: str) -> Callable[..., Any]:
    """The ``main`` a documented command runs."""
    if program in MODULES:
        return importlib.import_module(f"{program}.__main__").main
    if program in SCRIPTS:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        return importlib.import_module(program.removesuffix(".py")).main
    if program == PROJECT_COMMAND:
        target = console_script(PROJECT_COMMAND) or "core.__main__:main"
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)
    raise KeyError(program)


def console_script(name: str) -> str | None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8")).get("project", {})
    return project.get("scripts", {}).get(name)


class Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace):
        super().__init__(repr(namespace))
        self.namespace = namespace


def parse_with_real_parser(program: str, args: list[str]) -> tuple[bool, str]:
    """Run ``program``'s main on ``args`` up to its argument parsing, and stop there:
    (parsed, what the parser printed). ``--help`` counts as parsed."""
    main = entry_point(program)
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self: argparse.ArgumentParser, *a: Any, **k: Any) -> Any:
        raise Parsed(original(self, *a, **k))

    out = io.StringIO()
    argparse.ArgumentParser.parse_args = parse_then_stop  # type: ignore[method-assign]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            main(list(args))
    except Parsed:
        return True, out.getvalue()
    except SystemExit as exc:
        return exc.code in (0, None), f"{out.getvalue()}{exc.code if isinstance(exc.code, str) else ''}"
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
    return True, out.getvalue()  # main took its arguments without argparse (manage_tokens.py revoke)


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M))
