"""Meta-test: every hook of core/hooks/specs.py is documented, tested and called by the pipeline.

Every hook needs a docstring, a section of its own in docs/plugins/hooks.md (a ``## name``
or ``### name`` heading) and a test of its contract named ``test_hook_<name>`` somewhere
under tests/ (tests/unit/core/hooks/test_hook_contracts.py has them all). Then a recorder
plugin is generated from the specs themselves (one implementation per spec, with the spec's
own arguments), and a startup, a filled alert, a refused alert, an alert with payload
credentials, a kill-switch status and a shutdown are run. A new hook that has no docstring,
no docs section, no test, or that the router never calls, fails here.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pluggy

from core.hooks import specs as hookspecs
from core.hooks.manager import hookimpl
from core.trading.execution import Executor
from core.web.app import control_signature_message
from tests.support import ROOT, alert_body, signed_headers

SPECS = {
    name: fn
    for name, fn in vars(hookspecs).items()
    if inspect.isfunction(fn) and hasattr(fn, f"{hookspecs.PROJECT}_spec")
}


class Recorder:
    """Implements every hook spec; records each call with its arguments."""

    def __init__(self) -> None:
        self.calls: dict[str, list[dict]] = {}
        for name, spec in SPECS.items():
            setattr(self, name, hookimpl(self._make(name, spec)))

    def _make(self, name: str, spec):
        # pluggy reads argument names from the code object, so compile a real function.
        params = list(inspect.signature(spec).parameters)
        namespace: dict = {"record": self._record}
        arguments = ", ".join(f"{p!r}: {p}" for p in params)
        exec(f"def {name}({', '.join(params)}):\n    return record({name!r}, {{{arguments}}})", namespace)
        return namespace[name]

    def _record(self, name: str, kwargs: dict):
        self.calls.setdefault(name, []).append(kwargs)
        if name == "executor_for_credentials" and kwargs["exchange"] == "recorded":
            return kwargs["router"].executors.get("paper")
        if name == "execute_order" and kwargs["alert"].alert_id == "meta-lost":
            # Claims this order by raising as a lost reply would: reconciliation asks this
            # plugin's lookup_order, whose None means "cannot tell" (never resent).
            raise ConnectionResetError("reply lost")
        return None


def test_every_hook_has_a_docstring_saying_when_and_what():
    assert SPECS, "no hook specs found"
    for name, spec in SPECS.items():
        doc = inspect.getdoc(spec) or ""
        assert len(doc) > 80, f"hook {name} needs a docstring: when it is called, arguments, return, combination"
        assert "Return" in doc or "return" in doc, f"hook {name}'s docstring does not say what it returns"


def hook_tests() -> dict[str, list[str]]:
    """Every ``test_hook_<name>`` function under tests/: name -> the files defining it."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_hook_"):
                found.setdefault(node.name.removeprefix("test_hook_"), []).append(str(path.relative_to(ROOT)))
    return found


def documented_hooks(path: Path = ROOT / "docs" / "plugins" / "hooks.md") -> set[str]:
    """The hooks with a ``## name`` or ``### name`` heading (the name may be in backticks)."""
    return set(re.findall(r"^#{2,3} `?([a-z_]+)`?\s*$", path.read_text(), flags=re.MULTILINE))


def test_every_hook_has_a_test_of_its_own_and_a_docs_section():
    tests, docs = hook_tests(), documented_hooks()
    assert not set(SPECS) - set(tests), f"hooks without a test_hook_<name>: {sorted(set(SPECS) - set(tests))}"
    assert not set(SPECS) - docs, f"hooks without a section in docs/plugins/hooks.md: {sorted(set(SPECS) - docs)}"
    assert not set(tests) - set(SPECS), f"test_hook_<name> for no hook: {sorted(set(tests) - set(SPECS))}"
    assert all(len(files) == 1 for files in tests.values()), {n: f for n, f in tests.items() if len(f) > 1}


def test_the_meta_test_finds_what_is_missing(tmp_path):
    page = tmp_path / "hooks.md"
    page.write_text("# Hooks\n\n## parse_payload\n\ntext\n\n### `authenticate`\n\n## Not a hook heading\n")
    assert documented_hooks(page) == {"parse_payload", "authenticate"}
    assert "parse_payload" in hook_tests()


async def test_every_hook_is_called_by_the_pipeline(app_client, write_plugins_yaml):
    write_plugins_yaml("router:\n  allow_payload_credentials: true\n")  # executor_for_credentials needs them
    recorder = Recorder()
    async with app_client(extra_plugins=[("recorder", recorder)]) as (client, app):
        filled = alert_body(id="meta-filled")
        refused = alert_body(id="meta-refused", amount="0.0000001")
        with_credentials = alert_body(id="meta-creds", exchange="recorded", apiKey="key-123456", secret="secret-123456")
        lost = alert_body(id="meta-lost")
        for body in (filled, refused, with_credentials, lost):
            response = await client.post("/webhook", data=body, headers=signed_headers(body))
            assert response.status_code in (200, 202, 422), await response.get_json()
        task = app.extensions["router"].engine.inflight.get("meta-lost")
        if task:
            await task
        status = await client.post(
            "/control/status", data=b"", headers=signed_headers(control_signature_message("status", b""))
        )
        assert status.status_code == 200  # the operator's view of the limits: describe_risk_limits
    missing = set(SPECS) - set(recorder.calls)
    assert not missing, f"hooks never called by the pipeline: {sorted(missing)}"
    assert isinstance(recorder.calls["execute_order"][0]["executor"], Executor)
    assert recorder.calls["on_error"][0]["alert"].alert_id == "meta-refused"
    assert recorder.calls["on_error"][0]["state"] == "rejected"  # the journal state, passed by the engine
    assert recorder.calls["after_execute"][0]["result"].status == "filled"
    assert [c["order"].client_order_id for c in recorder.calls["lookup_order"]] == [
        c["order"].client_order_id for c in recorder.calls["execute_order"] if c["alert"].alert_id == "meta-lost"
    ]
    assert recorder.calls["after_execute"][0]["state"] == "filled"


def test_hookspecs_and_recorder_agree_with_pluggy():
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(Recorder(), name="recorder")
    pm.check_pending()
    assert set(SPECS) == {name for name in dir(pm.hook) if not name.startswith("_")}
