"""Every shell and YAML example in README.md and docs/ is executed or parsed.

* shell blocks (bash, sh, shell, console): ``bash -n``; every invocation of the project's
  commands in them — and in inline code — is parsed by the command's real argparse parser,
  every ``make`` target exists, and the harmless ones (``--help``, ``check-config``,
  ``init-env``, ``manage_tokens.py issue|list``, ...) are run in a scratch directory;
* YAML blocks: ``yaml.safe_load``; those shaped like plugins.yaml are validated by the
  options models of their sections, as a start would (drop-in examples included);
* Python blocks compile, and the drop-in plugins of the plugin guide load and work.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.docs.doc_examples import (
    PROJECT_COMMAND,
    SHELL,
    YAML,
    Block,
    Invocation,
    blocks,
    console_script,
    doc_invocations,
    make_targets,
    parse_with_real_parser,
    shell_script,
)
from tests.support import ROOT

SHELL_BLOCKS = blocks(SHELL)
YAML_BLOCKS = blocks(YAML)
PYTHON_BLOCKS = blocks({"python"})
INVOCATIONS = doc_invocations()
GUIDE = ROOT / "docs" / "plugins" / "index.md"


def ids(items: list) -> list[str]:
    return [item.where if isinstance(item, Block) else str(item) for item in items]


def test_the_docs_have_examples_to_check():
    assert len(SHELL_BLOCKS) >= 20 and len(YAML_BLOCKS) >= 15
    programs = {i.program for i in INVOCATIONS}
    assert {"core", "manage_tokens.py", "simulate_tradingview.py", "make", "emulator", "bench"} <= programs


# ---------------------------------------------------------------- shell


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=ids(SHELL_BLOCKS))
def test_shell_block_is_valid_bash(block: Block):
    done = subprocess.run(["bash", "-n"], input=shell_script(block), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"{block.where}: {done.stderr}"


PARSED = [i for i in INVOCATIONS if i.program != "make"]


@pytest.mark.parametrize("invocation", PARSED, ids=ids(PARSED))
def test_command_is_accepted_by_the_real_parser(invocation: Invocation, tmp_path: Path, monkeypatch):
    if invocation.program == PROJECT_COMMAND and console_script(PROJECT_COMMAND) is None:
        pytest.fail(f"{invocation.source}: the docs use {PROJECT_COMMAND}, which pyproject.toml does not define")
    monkeypatch.chdir(tmp_path)  # no .env or plugins.yaml of the checkout, and nothing written there
    for name in ("PLUGINS_FILE", "STATE_URL", "REDIS_URL", "REDIS_TLS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # `revoke -` reads one line
    parsed, output = parse_with_real_parser(invocation.program, list(invocation.args))
    assert parsed, f"{invocation}\n{output}"


MAKE = [i for i in INVOCATIONS if i.program == "make"]


@pytest.mark.parametrize("invocation", MAKE, ids=ids(MAKE))
def test_make_target_exists(invocation: Invocation):
    assert invocation.args, f"{invocation.source}: `make` without a target"
    assert set(invocation.args) <= make_targets(), f"{invocation}: not a target of the Makefile"


def harmless(invocation: Invocation) -> bool:
    args = list(invocation.args)
    if invocation.program == "make" or any("<" in a for a in args):
        return False
    if "--help" in args or "-h" in args:
        return True
    if invocation.program in ("core", PROJECT_COMMAND):
        return args[:1] in (["check-config"], ["init-env"]) or args[:2] in (
            ["risk", "status"],
            ["paper-markets", "list"],
        )
    if invocation.program == "manage_tokens.py":
        return args[:1] in (["issue"], ["list"])
    return False


RUN = list({str(i.program) + " " + shlex.join(i.args): i for i in INVOCATIONS if harmless(i)}.values())


def command(inv: Invocation) -> list[str]:
    """The documented command, run by this interpreter from the checkout."""
    if inv.program in ("manage_tokens.py", "simulate_tradingview.py"):
        return [sys.executable, str(ROOT / inv.program), *inv.args]
    if inv.program == PROJECT_COMMAND:
        module, _, attr = (console_script(PROJECT_COMMAND) or "core.__main__:main").partition(":")
        return [sys.executable, "-c", f"import sys; from {module} import {attr}; sys.exit({attr}())", *inv.args]
    return [sys.executable, "-m", inv.program, *inv.args]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture(scope="module")
def quick_start_env(tmp_path_factory) -> str:
    """The .env the quick start's `init-env` writes."""
    folder = tmp_path_factory.mktemp("init-env")
    done = subprocess.run(
        command(Invocation("core", ("init-env",), "setup")),
        cwd=folder,
        env=clean_env(),
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return (folder / ".env").read_text(encoding="utf-8")


@pytest.mark.parametrize("invocation", RUN, ids=ids(RUN))
def test_harmless_command_runs(invocation: Invocation, tmp_path: Path, quick_start_env: str):
    """Run as written, in a scratch directory with the quick start's .env."""
    (tmp_path / ".env").write_text(quick_start_env, encoding="utf-8")
    done = subprocess.run(
        command(invocation), cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{invocation}\n{done.stdout}\n{done.stderr}"


# ---------------------------------------------------------------- YAML


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=ids(YAML_BLOCKS))
def test_yaml_block_parses(block: Block):
    yaml.safe_load(block.text)


def options_models(tmp_path: Path) -> dict[str, type]:
    """Every plugins.yaml section the docs may show, with its options model: core's, the
    plugins', and the drop-in examples of the guides."""
    sys.path.insert(0, str(ROOT / "docs" / "hooks"))
    try:
        import generate
    finally:
        sys.path.remove(str(ROOT / "docs" / "hooks"))
    models = {name: model for name, model, _ in generate.plugin_sections()}
    for name, module in dropin_examples(tmp_path).items():
        plugin = getattr(module, "Plugin", None)
        if plugin is not None and hasattr(plugin, "Options"):
            models[name] = plugin.Options
    return models


def dropin_examples(tmp_path: Path) -> dict[str, object]:
    """The drop-in plugins the docs show (``# local_plugins/<name>.py`` blocks, and the
    execution guide's example_executor.py), imported from files as the router would."""
    import importlib.util

    folder = tmp_path / "local_plugins"
    folder.mkdir(exist_ok=True)
    sources = {m.group(1): b.text for b in PYTHON_BLOCKS if (m := re.match(r"# local_plugins/(\w+)\.py", b.text))}
    sources["example_executor"] = (ROOT / "docs" / "plugins" / "example_executor.py").read_text(encoding="utf-8")
    modules = {}
    for name, source in sources.items():
        path = folder / f"{name}.py"
        path.write_text(source, encoding="utf-8")
        spec = importlib.util.spec_from_file_location(f"docs_example_{name}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # as the router does: pydantic resolves annotations there
        spec.loader.exec_module(module)
        modules[name] = module
    return modules


def variables_without_default(text: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))


PLUGIN_YAML = [b for b in YAML_BLOCKS if isinstance(yaml.safe_load(b.text), dict)]


@pytest.mark.parametrize("block", PLUGIN_YAML, ids=ids(PLUGIN_YAML))
def test_plugins_yaml_example_validates(block: Block, tmp_path: Path):
    from core.config import PluginsFile

    data = yaml.safe_load(block.text)
    models = options_models(tmp_path)
    known = [key for key in data if key in models]
    if not known:
        pytest.skip(f"{block.where}: not a plugins.yaml example ({', '.join(map(str, data))})")
    assert known == list(data), f"{block.where}: sections no plugin has: {sorted(set(data) - set(known))}"
    environ = {name: "x" * 16 for name in variables_without_default(block.text)}
    environ["DEFAULT_EXCHANGE"] = "binance"  # an exchange id where the examples name ${DEFAULT_EXCHANGE}
    (tmp_path / "plugins.yaml").write_text(block.text, encoding="utf-8")
    plugins_file = PluginsFile.load(tmp_path / "plugins.yaml", environ)
    for section in data:
        plugins_file.validate(section, models[section])  # a mistake raises ConfigError naming the field


# ---------------------------------------------------------------- Python


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=ids(PYTHON_BLOCKS))
def test_python_block_compiles(block: Block):
    compile(block.text, block.where, "exec")


def test_the_plugin_guides_dropins_load_and_work(tmp_path: Path):
    """The guide's drop-ins, in a drop-in folder, loaded by the real plugin manager with the
    guide's plugins.yaml sections; then each does what the guide says."""
    from core.config import PluginsFile
    from core.errors import Unprocessable
    from core.hooks.manager import create_plugin_manager
    from core.pipeline.models import InboundRequest

    dropin_examples(tmp_path)
    sections: dict = {"router": {"plugin_dir": str(tmp_path / "local_plugins")}}
    for block in blocks(YAML, [GUIDE]):
        sections.update(yaml.safe_load(block.text))
    (tmp_path / "plugins.yaml").write_text(yaml.safe_dump(sections), encoding="utf-8")
    (tmp_path / "local_plugins" / "example_executor.py").unlink()  # the execution guide's: tested by its own suite
    plugins = create_plugin_manager(PluginsFile.load(tmp_path / "plugins.yaml", {"RELAY_KEY": "relay-key-0123456789"}))
    loaded = {p.name: p.plugin for p in plugins.loaded}
    assert {"half_size", "max_amount", "relay_key"} <= set(loaded)

    payload = {"amount": "0.5"}
    loaded["half_size"].transform_payload(payload)
    assert payload == {"amount": "0.25"}
    with pytest.raises(Unprocessable, match="amount above 0.5"):
        loaded["max_amount"].transform_payload({"amount": "0.75"})

    def request(key: str | None) -> InboundRequest:
        headers = {"x-relay-key": key} if key is not None else {}
        return InboundRequest(b"{}", headers, "127.0.0.1", "https", {}, 0.0)

    relay = loaded["relay_key"]
    assert relay.authenticate(request(None)) is None
    assert relay.authenticate(request("wrong")).accepted is False
    accepted = relay.authenticate(request("relay-key-0123456789"))
    assert accepted.accepted and accepted.principal == "relay" and accepted.accounts == frozenset({"paper"})
