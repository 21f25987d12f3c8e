"""Meta-test: every hook of core/hooks/specs.py is documented and called by the pipeline.

A recorder plugin is generated from the specs themselves (one implementation per spec,
with the spec's own arguments), then a startup, a filled alert, a refused alert, an alert
with payload credentials, a kill-switch status and a shutdown are run. A new hook that has no docstring, or
that the router never calls, fails here.
"""

from __future__ import annotations

import inspect

import pluggy

from core.hooks import specs as hookspecs
from core.hooks.manager import hookimpl
from core.trading.execution import Executor
from core.web.app import control_signature_message
from tests.support import alert_body, signed_headers

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
