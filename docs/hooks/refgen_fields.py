"""The reference tables' building blocks: comments in source files, pydantic fields as rows."""

from __future__ import annotations

import ast
import enum
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MAX_DEFAULT = 70  # characters of a default shown in a table cell


def ensure_importable() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


# ---------------------------------------------------------------- comments in source files


@dataclass
class Comments:
    """Comments on names in one file: ``direct`` (right above, or at the end of the line)
    and ``group`` (inherited from the commented name right before, with no gap)."""

    direct: dict[str, str] = field(default_factory=dict)
    group: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> tuple[str | None, str | None]:
        return self.direct.get(name), self.group.get(name)


def _clean(lines: list[str]) -> str:
    text = " ".join(line.strip().lstrip("#").strip() for line in lines if line.strip().lstrip("#").strip())
    return text.strip()


def class_comments(cls: type) -> Comments:
    """Comments and docstrings on the annotated fields of ``cls``'s own body."""
    found = Comments()
    try:
        source_file = inspect.getsourcefile(cls)
        lines = Path(source_file).read_text(encoding="utf-8").splitlines() if source_file else []
        tree = ast.parse("\n".join(lines))
    except (OSError, TypeError, SyntaxError):
        return found
    node = next(
        (
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.ClassDef) and n.name == cls.__name__ and cls.__qualname__.endswith(n.name)
        ),
        None,
    )
    if node is None:
        return found
    previous: tuple[str, int, str | None] | None = None  # (name, end line, its comment)
    for index, stmt in enumerate(node.body):
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            previous = None
            continue
        name = stmt.target.id
        above: list[str] = []
        row = stmt.lineno - 2
        while row >= 0 and lines[row].strip().startswith("#"):
            above.insert(0, lines[row])
            row -= 1
        trailing = lines[stmt.lineno - 1].split("  # ", 1)
        docstring = None
        following = node.body[index + 1] if index + 1 < len(node.body) else None
        if (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docstring = inspect.cleandoc(following.value.value)
        own = docstring or _clean(above) or (_clean([trailing[1]]) if len(trailing) == 2 else "")
        if own:
            found.direct[name] = " ".join(own.split())
        elif previous is not None and previous[1] == stmt.lineno - 1 and previous[2]:
            found.group[name] = previous[2]
        inherited = found.direct.get(name) or found.group.get(name)
        previous = (name, stmt.end_lineno or stmt.lineno, inherited)
    return found


def env_file_comments(path: Path) -> Comments:
    """``.env.example``: the comment block above each ``NAME=`` line."""
    found = Comments()
    if not path.is_file():
        return found
    block: list[str] = []
    previous: str | None = None
    previous_name = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        m = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=", stripped)
        if m and not stripped.startswith("# ---"):
            name = m.group(1)
            text = _clean(block)
            if text and not stripped.startswith("#"):
                found.direct[name] = text
            elif previous is not None and not stripped.startswith("#") and name.split("_")[0] == previous_name:
                found.group[name] = previous  # DEFAULT_API_SECRET under DEFAULT_API_KEY's comment
            previous, previous_name = found.direct.get(name) or found.group.get(name), name.split("_")[0]
            block = []
        elif stripped.startswith("# ---"):
            block, previous = [], None
        elif stripped.startswith("#"):
            block.append(stripped)
            previous = None
        else:
            block, previous = [], None
    return found


def yaml_section_comments(path: Path, section: str, names: set[str]) -> Comments:
    """plugins.yaml: comments on the keys of one top-level section (at any depth), taken
    from the comment block above a key, or a comment at the end of its line — also on
    commented-out example lines (``#   sandbox: false   # the exchange's testnet``)."""
    found = Comments()
    if not path.is_file():
        return found
    lines = path.read_text(encoding="utf-8").splitlines()
    inside = False
    block: list[str] = []
    previous: str | None = None
    key_line = re.compile(r"^\s*(#\s*)?([A-Za-z_][A-Za-z0-9_]*):(\s|$)(.*)$")
    for line in lines:
        top = re.match(r"^([A-Za-z_][A-Za-z0-9_]*):", line) or re.match(r"^# ?([A-Za-z_][A-Za-z0-9_]*):\s*$", line)
        if top:  # a section starts (``# alpaca:``: one commented out as a whole)
            inside = top.group(1) == section
            block, previous = [], None
            continue
        if not inside:
            continue
        if not line.strip():
            block, previous = [], None
            continue
        m = key_line.match(line)
        if m and m.group(2) in names:
            name, commented, rest = m.group(2), bool(m.group(1)), m.group(4)
            trailing = rest.split(" # ", 1)[1] if " # " in rest else ""
            text = _clean(block) if not commented else ""
            text = text or trailing.strip()
            if text:
                found.direct.setdefault(name, " ".join(text.split()))
            elif previous is not None and not commented:
                found.group.setdefault(name, previous)
            previous = found.direct.get(name) or found.group.get(name) if not commented else None
            block = []
        elif line.strip().startswith("#"):
            if re.match(r"^\s*#\s{2,}", line):
                block = []  # a commented-out example line, not a description
            else:
                block.append(line.strip())
            previous = None
        else:
            block, previous = [], None
    return found


# ---------------------------------------------------------------- pydantic fields


def _own_class(model: type, name: str) -> type:
    for klass in model.__mro__:
        if name in klass.__dict__.get("__annotations__", {}):
            return klass
    return model


def _literal(value: Any) -> str:
    return str(value.value if isinstance(value, enum.Enum) else value)


def type_name(annotation: Any) -> str:
    """A reader's name for a field's type."""
    from pydantic import BaseModel, SecretStr

    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation)]
    if annotation is type(None):
        return "none"
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(f"`{_literal(a)}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        named = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" (optional)" if type(None) in args else "")
    if origin in (list, set, frozenset, tuple):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {type_name(args[1])}" if len(args) == 2 else "mapping"
    if annotation is SecretStr:
        return "secret"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " | ".join(f"`{_literal(m)}`" for m in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation.__name__
    if annotation is Decimal:
        return "decimal"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def constraints(info: Any) -> str:
    """``> 0``, ``one of `ip`, `principal```... from the field's metadata."""
    parts: list[str] = []
    for meta in getattr(info, "metadata", []):
        for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{sign} {value}")
        pattern = getattr(meta, "pattern", None)
        if pattern:
            m = re.fullmatch(r"\^\(([\w|.-]+)\)\$", pattern)
            if m:
                parts.append("one of " + ", ".join(f"`{p}`" for p in m.group(1).split("|")))
            else:
                parts.append(f"matching `{pattern}`")
        for attr, label in (("min_length", "at least {} long"), ("max_length", "at most {} long")):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(label.format(value))
    return ", ".join(parts)


def _plain(value: Any) -> Any:
    from pydantic import BaseModel, SecretStr

    if isinstance(value, BaseModel):
        return {k: _plain(v) for k, v in value.model_dump(exclude_defaults=True).items()} or "{…}"
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, SecretStr):
        return "***"
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Decimal):
        return float(value) if value == value.to_integral_value() and abs(value) < 10**15 else str(value)
    return value


def _flow(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float) and value == int(value):
        return str(int(value))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return str(value)


def default_text(info: Any) -> str:
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    if info.default_factory is not None:
        try:
            value = info.default_factory()
        except TypeError:
            return "(computed)"
    elif info.default is PydanticUndefined:
        return "(required)"
    else:
        value = info.default
    if value is None:
        return "(unset)"
    if isinstance(value, BaseModel) and not value.model_dump(exclude_defaults=True):
        return "(its defaults)"
    if value == "" or value == [] or value == {}:
        return {"": "(empty)", "[]": "`[]`", "{}": "`{}`"}[str(value) if value != "" else ""]
    text = _flow(_plain(value))
    if len(text) > MAX_DEFAULT:
        return "(a built-in list)" if isinstance(value, (list, dict)) else f"`{text[: MAX_DEFAULT - 1]}…`"
    return f"`{text}`"


def _cell(text: str) -> str:
    """Text for a table cell: pipes escaped; outside code spans, ``<``, ``*`` and ``_`` too
    (``<timestamp>`` would be an HTML tag, ``*.py`` an emphasis)."""
    if not text:
        return "—"
    text = re.sub(r"``([^`]+)``", r"`\1`", " ".join(text.split()))
    pieces = text.split("`")
    for i in range(0, len(pieces), 2):
        pieces[i] = pieces[i].replace("<", "&lt;").replace(">", "&gt;").replace("*", "\\*").replace("_", "\\_")
    return "`".join(pieces).replace("|", "\\|")


@dataclass
class Row:
    name: str
    type: str
    default: str
    description: str


def describe_fields(
    model: type, file_comments: Comments | None = None, *, names: Callable[[str, Any], str] | None = None
) -> Iterator[tuple[Row, Any]]:
    """One row per field of a pydantic v2 model (with the field's info)."""
    by_class: dict[type, Comments] = {}
    for name, info in model.model_fields.items():
        if info.exclude is True or name.startswith("_"):
            continue
        owner = _own_class(model, name)
        comments = by_class.setdefault(owner, class_comments(owner))
        source_direct, source_group = comments.get(name)
        shown = names(name, info) if names else name
        file_direct, file_group = (file_comments or Comments()).get(shown)
        description = info.description or (
            (file_direct or source_direct or file_group or source_group)
            if names
            else (source_direct or file_direct or source_group or file_group)
        )
        kind = type_name(info.annotation)
        limits = constraints(info)
        if limits:
            kind = f"{kind[:-1]}; {limits})" if kind.endswith("(optional)") else f"{kind} ({limits})"
        yield Row(shown, kind, default_text(info), description or ""), info


def table(rows: list[Row], first: str) -> str:
    out = [f"| {first} | Type | Default | Description |", "|---|---|---|---|"]
    for row in rows:
        out.append(f"| `{row.name}` | {_cell(row.type)} | {row.default} | {_cell(row.description)} |")
    return "\n".join(out)
