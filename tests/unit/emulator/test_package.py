"""The emulator as a package: runnable with ``python -m emulator``, independent of the tests,
and each of its types defined once."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

import emulator
from emulator.__main__ import parse_args

PACKAGE = Path(emulator.__file__).parent
ROOT = PACKAGE.parent


def modules() -> dict[str, ast.Module]:
    return {path.name: ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.glob("*.py"))}


def test_python_m_emulator_help_lists_its_options():
    done = subprocess.run(
        [sys.executable, "-m", "emulator", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m emulator")
    for option in ("--host", "--port", "--price", "--account", "--markets"):
        assert option in done.stdout


def test_a_front_end_names_the_command_in_help(capsys):
    with pytest.raises(SystemExit) as stop:
        parse_args(["--help"], prog="tvrouter emulator")
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("usage: tvrouter emulator")


def test_arguments_are_parsed_into_the_emulator_settings():
    args = parse_args(["--port", "0", "--price", "BTC/USDT=50000", "--account", "k:s"])
    assert (args.port, dict(args.price), dict(args.account)) == (0, {"BTC/USDT": "50000"}, {"k": "s"})


def test_the_package_docstring_says_how_to_run_it():
    assert "python -m emulator --port 9000" in (emulator.__doc__ or "")


def test_nothing_in_the_emulator_imports_the_tests():
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                imported = [node.module or ""] if node.level == 0 else []
            else:
                continue
            assert not [m for m in imported if m == "tests" or m.startswith("tests.")], name


def test_each_class_is_defined_in_one_module_and_no_function_is_copied():
    """The venues share their types (``dispatch.Endpoint``) and helpers (``dispatch.truthy``)
    instead of each keeping a copy; functions of the same name that differ (each venue's
    ``error``, in its own format) are the venues' own."""
    classes: dict[str, list[str]] = defaultdict(list)
    functions: dict[str, list[str]] = defaultdict(list)
    for name, tree in modules().items():
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                classes[node.name].append(name)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions[ast.dump(node)].append(f"{name}:{node.name}")
    assert {symbol: files for symbol, files in classes.items() if len(files) > 1} == {}
    assert [places for places in functions.values() if len(places) > 1] == []
