"""The import graph of the shipped packages: no import circle, and core stays venue-neutral.

The graph is built with ``ast`` (nothing is imported): every ``import`` and ``from … import``
at module level *and* inside functions counts, as do ``importlib.import_module("…")`` /
``__import__("…")`` calls with a literal name. Imports under ``if TYPE_CHECKING:`` do not:
they never run. A cycle fails the test with the modules of the cycle, in import order.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

from tests.support import ROOT

PACKAGES = ("core", "plugins", "emulator", "bench")
FORBIDDEN_IN_CORE = ("plugins", "ccxt")


def _module_name(root: Path, path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` (its ``else`` runs)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.append(node.test)
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imported_names(path: Path, module: str, is_package: bool) -> set[str]:
    """The dotted names ``path`` imports at run time (``from a import b`` gives ``a.b``; which of
    ``a`` / ``a.b`` is a module is decided against the graph's modules by ``resolve``)."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found |= {base if alias.name == "*" else f"{base}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module",
            "__import__",
        ):
            found |= {a.value for a in node.args[:1] if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    return found


def resolve(name: str, modules: Iterable[str]) -> str | None:
    """The module of the graph that importing ``name`` loads: itself, else its nearest parent."""
    known = set(modules)
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def build_graph(root: Path, packages: Iterable[str]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module → the graph's modules it imports, module → every dotted name it imports)."""
    files: dict[str, tuple[Path, bool]] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if any(part.startswith(".") for part in path.relative_to(root).parts):
                continue  # a hidden directory holds no source of ours (bench's cached venv of the original)
            name, is_package = _module_name(root, path)
            files[name] = (path, is_package)
    raw = {name: imported_names(path, name, is_package) for name, (path, is_package) in files.items()}
    graph: dict[str, set[str]] = {}
    for name, names in raw.items():
        # Only what a module names: a package's __init__ running before its submodules is no edge.
        graph[name] = {t for t in (resolve(n, files) for n in names) if t is not None and t != name}
    return graph, raw


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), each as
    the list of modules along it, the first repeated at the end."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0

    def connect(start: str) -> None:
        nonlocal counter
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_cycle_in(graph, set(component), component[0]) for component in components]


def _cycle_in(graph: dict[str, set[str]], members: set[str], start: str) -> list[str]:
    """A shortest path from ``start`` back to itself inside one strongly connected component."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"{start} is in no cycle")  # unreachable for a component of Tarjan's


def test_no_import_cycle_in_the_packages():
    graph, _ = build_graph(ROOT, PACKAGES)
    assert len(graph) > 100, sorted(graph)  # the scan found the packages
    cycles = find_cycles(graph)
    if cycles:
        print("import cycles:\n" + "\n".join("  " + " -> ".join(cycle) for cycle in cycles))
    assert cycles == []


def test_core_imports_no_plugin_and_no_venue_library():
    _, raw = build_graph(ROOT, PACKAGES)
    core = {name: names for name, names in raw.items() if name == "core" or name.startswith("core.")}
    assert len(core) > 20
    offenders = {
        name: sorted(n for n in names if n.split(".")[0] in FORBIDDEN_IN_CORE) for name, names in sorted(core.items())
    }
    assert {name: found for name, found in offenders.items() if found} == {}


# ---------------------------------------------------------------- the scan itself


def _write(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_scan_sees_every_form_of_import(tmp_path):
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/sub/__init__.py": "",
            "pkg/sub/mod.py": (
                "import ccxt.async_support as a\nfrom ccxt import pro\nimportlib.import_module('plugins.x')\n"
                "from plugins.exchanges import paper\nfrom . import sibling\nfrom ..top import name\n"
                "def later():\n    from pkg.late import thing\n"
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.hidden import Kind\n"
                "else:\n    import pkg.shown\n"
            ),
        },
    )
    names = imported_names(tmp_path / "pkg/sub/mod.py", "pkg.sub.mod", False)
    assert {"ccxt.async_support", "ccxt.pro", "plugins.x", "plugins.exchanges.paper", "pkg.sub.sibling"} <= names
    assert {"pkg.top.name", "pkg.late.thing", "pkg.shown"} <= names
    assert not any(n.startswith("pkg.hidden") for n in names)


def test_a_cycle_is_found_through_function_level_imports_but_not_type_checking_ones(tmp_path):
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.a import A\n",  # a package importing its own module: no cycle
            "pkg/a.py": "from pkg.b import B\nA = 1\n",
            "pkg/b.py": "B = 1\ndef f():\n    from pkg import c\n",
            "pkg/c.py": "import pkg.a\n",
            "pkg/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.e import E\n",
            "pkg/e.py": "from pkg.d import D\n",
        },
    )
    graph, _ = build_graph(tmp_path, ["pkg"])
    assert graph["pkg.d"] == set()
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]


def test_a_module_importing_a_name_of_its_package_that_imports_it_is_a_cycle(tmp_path):
    _write(tmp_path, {"pkg/__init__.py": "from pkg.a import A\nX = 1\n", "pkg/a.py": "from pkg import X\nA = 1\n"})
    graph, _ = build_graph(tmp_path, ["pkg"])
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg"}}
    assert find_cycles(graph) == [["pkg", "pkg.a", "pkg"]]
