"""The docs cannot go stale: the README's size, the generated references, every path and
module the docs name, the alert fields and states they list, and the site's strict build."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.docs.doc_examples import DOC_FILES, SHELL, blocks, inline_code
from tests.support import METRICS_TOKEN, ROOT, SECRET, ServerProcess, base_env

sys.path.insert(0, str(ROOT / "docs" / "hooks"))
import generate  # the MkDocs hook, imported as the build imports it

sys.path.remove(str(ROOT / "docs" / "hooks"))

# Files outside docs/ whose text points readers at paths.
POINTING = [*DOC_FILES, ROOT / "plugins.yaml", ROOT / ".env.example"]
GENERATED_AT_RUN_TIME = {"bench/results/latest.json", "bench/results/instructions.json", "tests/output/dashboard/"}


def test_readme_is_at_most_200_lines():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 200, f"README.md has {lines} lines: move the rest into docs/"


def test_no_seed():
    """The project's original interface is "the classic interface", never by the word for its history."""
    for path in [*POINTING, ROOT / "mkdocs.yml", ROOT / "docs" / "hooks" / "generate.py"]:
        assert not re.search(r"seed", path.read_text(encoding="utf-8"), re.I), path


# ---------------------------------------------------------------- generated references


def test_settings_reference_lists_every_variable_with_a_description():
    text = generate.settings_markdown()
    for model in generate.settings_models():
        for name, info in model.model_fields.items():
            if info.exclude is True:
                continue
            env = generate.env_name(model, name, info)
            row = next((line for line in text.splitlines() if line.startswith(f"| `{env}` |")), None)
            assert row is not None, f"{env} is not in the configuration reference"
            assert not row.endswith("| — |"), f"{env} has no description: add Field(description=...) or a comment"


def test_plugin_options_reference_describes_every_option():
    text = generate.plugin_options_markdown()
    sections = generate.plugin_sections()
    assert {"router", "state", "hmac", "paper", "ccxt", "risk", "telegram", "alpaca"} <= {
        name for name, _, _ in sections
    }
    for name, _, _ in sections:
        assert f"### `{name}`" in text
    undescribed = [line.split("|")[1].strip() for line in text.splitlines() if line.endswith("| — |")]
    assert undescribed == [], (
        f"options without a description (a comment in the source or in plugins.yaml): {undescribed}"
    )


def test_cli_reference_shows_every_command():
    text = generate.cli_markdown()
    for path, parser in generate.walk_parser(generate.main_parser()):
        assert f"`{parser.prog}`" in text, path
    for program in (
        "python manage_tokens.py",
        "python simulate_tradingview.py",
        "python -m emulator",
        "python -m bench",
    ):
        assert f"`{program}" in text, program
    assert "paper-markets" in text  # a plugin's own subcommand is listed too


def test_the_alias_table_is_generated_from_the_transform():
    from plugins.transforms.tradingview import Plugin

    text = generate.aliases_markdown()
    for alias in Plugin.Options().aliases:
        assert f"`{alias}`" in text


def test_unknown_generated_marker_fails_the_build():
    with pytest.raises(ValueError, match="unknown generated section"):
        generate.expand("<!-- generated: nonsense -->")


# ---------------------------------------------------------------- paths and names


def named_paths() -> list[tuple[str, str]]:
    """(file, path) for each repository path a file names (links between pages excluded:
    the site's strict build checks those)."""
    found = []
    pattern = re.compile(r"(?<![\w/.$-])((?:core|plugins|emulator|bench|tests|deploy)/[\w/.-]*[\w/])")
    for path in POINTING:
        text = path.read_text(encoding="utf-8")
        for m in pattern.finditer(text):
            if not (path.parent / m.group(1)).is_file() or path.parent == ROOT:
                found.append((str(path.relative_to(ROOT)), m.group(1)))
    return found


def test_every_path_the_docs_name_exists():
    missing = [
        (where, named)
        for where, named in named_paths()
        if named.rstrip(".") not in GENERATED_AT_RUN_TIME and not (ROOT / named.rstrip(".")).exists()
    ]
    assert missing == [], f"paths the docs name that do not exist: {missing}"


def test_every_docs_path_named_outside_the_docs_exists():
    for path in [ROOT / "plugins.yaml", ROOT / ".env.example", ROOT / "README.md"]:
        for named in re.findall(r"(?<![\w/])(docs/[\w/.-]*\.(?:md|py))", path.read_text(encoding="utf-8")):
            assert (ROOT / named).is_file(), f"{path.name} names {named}"


def dotted_names() -> list[tuple[str, str]]:
    found = []
    for path in DOC_FILES:
        for span in inline_code(path):
            for m in re.finditer(r"(?<![\w/.])((?:core|plugins)(?:\.[A-Za-z_]\w*)+)(?::(\w+))?", span):
                if not re.search(r"\.(ya?ml|md|py|toml|json|txt)$", m.group(1)):  # plugins.yaml is a file
                    found.append((str(path.relative_to(ROOT)), m.group(1) + (f":{m.group(2)}" if m.group(2) else "")))
    return found


def test_every_module_and_name_the_docs_name_imports():
    """`core.pipeline.models.parse_decimal`, `core.web.app:app`: the longest importable
    prefix is a module and the rest are attributes of it."""
    missing = []
    for where, dotted in dotted_names():
        parts = dotted.replace(":", ".").split(".")
        for cut in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            try:
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                missing.append((where, dotted))
            break
        else:
            missing.append((where, dotted))
    assert missing == [], f"names the docs use that do not exist: {missing}"


# ---------------------------------------------------------------- lists that must be complete


def section(path: str, start: str, end: str | None = None) -> str:
    text = (ROOT / path).read_text(encoding="utf-8")
    i = text.index(start)
    return text[i : text.index(end, i) if end else None]


def test_the_alert_reference_names_every_alert_field():
    from core.pipeline.models import Alert
    from plugins.transforms.tradingview import Plugin

    table = section("docs/alerts.md", "## Fields", "### Other names")
    aliases: dict[str, list[str]] = {}
    for alias, target in Plugin.Options().aliases.items():
        aliases.setdefault(target, []).append(alias)
    internal = {"principal", "received_at", "raw", "params", "credentials"}  # set by the router, not sent
    for name in set(Alert.model_fields) - internal:
        names = [name, *aliases.get(name, [])]
        assert any(f"`{n}`" in table for n in names), f"docs/alerts.md does not describe the alert field {name}"
    for classic in ("token", "exchange", "apiKey", "secret", "symbol", "side", "amount", "price"):
        assert f"`{classic}`" in table, classic


def journal_states() -> list[str]:
    for module_name in ("core.store", "core.store.states", "core.store.journal", "core.store.sqlite.journal"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        enum = getattr(module, "AlertState", None)
        if enum is not None:
            return [member.value for member in enum]
        states = getattr(module, "ALERT_STATES", None)
        if states is not None:
            return list(states)
    raise AssertionError("no AlertState or ALERT_STATES found in core.store")


def test_the_reliability_page_names_every_journal_state():
    diagram = section("docs/reliability.md", "## The journal", "## Alert identity")
    for state in journal_states():
        assert re.search(rf"\b{state}\b", diagram), f"docs/reliability.md does not show the state {state}"


def test_the_notifications_page_names_every_event():
    from core.pipeline.events import EVENT_STATES

    table = section("docs/notifications.md", "| Event (`events`) |", "Options of both notifiers")
    for state in EVENT_STATES:
        assert f"`{state}`" in table, state


# ---------------------------------------------------------------- the site and the README's first alert


@pytest.mark.slow
def test_mkdocs_build_strict_passes(tmp_path: Path):
    """`mkdocs build --strict`: no broken link or anchor, every page in the nav."""
    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None:
        message = "mkdocs is not installed: pip install -e '.[docs]'"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    page = (tmp_path / "site" / "configuration" / "index.html").read_text(encoding="utf-8")
    assert "WEBHOOK_SECRET" in page and "generated:" not in page  # the markers were replaced


@pytest.mark.slow
def test_readme_first_alert_fills_on_paper(tmp_path: Path):
    """The README's "first alert" blocks, run as written against a real server on paper
    (the quick start's .env; only the port and the virtual environment's path change)."""
    if shutil.which("curl") is None or shutil.which("openssl") is None:
        pytest.skip("curl and openssl are needed")
    text = section("README.md", "## The first alert", "## What exists")
    first, signed = [b.text for b in blocks(SHELL, [ROOT / "README.md"]) if b.text in text]
    env = base_env(tmp_path / "data", RATE_LIMIT="100/minute")
    with ServerProcess(env, tmp_path) as server:
        port = server.port
        (tmp_path / ".env").write_text(f"WEBHOOK_SECRET={SECRET}\nMETRICS_TOKEN={METRICS_TOKEN}\nPORT={port}\n")
        shutil.copy(ROOT / "simulate_tradingview.py", tmp_path)
        venv = Path(sys.executable).parent.parent
        outputs = []
        for script in (first, signed):
            script = script.replace(".venv/bin/", f"{venv}/bin/").replace("127.0.0.1:8000", f"127.0.0.1:{port}")
            shell_env = {**env, "PYTHONPATH": str(ROOT)}
            shell_env.pop("WEBHOOK_SECRET")  # the README reads it from .env
            started = time.monotonic()
            done = subprocess.run(
                ["bash", "-e", "-c", script], cwd=tmp_path, env=shell_env, capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
            assert time.monotonic() - started < 60
            outputs.append(done.stdout)
    assert "HTTP 200" in outputs[0] and '"status": "filled"' in outputs[0]
    assert '"accounts"' in outputs[0]  # the health check with the monitoring token
    assert '"status":"filled"' in outputs[1].replace(" ", "")
