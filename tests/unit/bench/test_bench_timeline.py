"""``python -m bench.timeline``: its marks name functions that exist, its wrappers mark
calls and returns without changing them, its split of the marks into requests, and one
short run against the real server and durable limit. No timing is asserted."""

from __future__ import annotations

import asyncio
import json

import pytest

from bench import timeline, timeline_app


@pytest.mark.parametrize("target", sorted(timeline_app.MARKS))
def test_every_mark_names_a_function_that_exists(target):
    for module_name, path, _, _ in timeline_app.MARKS[target]:
        owner, name, fn = timeline_app.resolve(module_name, path)
        assert getattr(owner, name) is fn


def test_a_function_that_is_gone_is_named():
    with pytest.raises(LookupError, match="core.pipeline.engine.ExecutionEngine.gone is gone"):
        timeline_app.resolve("core.pipeline.engine", "ExecutionEngine.gone")


def test_wrappers_mark_the_call_and_the_return_and_change_nothing(monkeypatch):
    monkeypatch.setattr(timeline_app, "_marks", [])

    def add(a, b):
        return a + b

    async def fail():
        raise ValueError("boom")

    assert timeline_app.wrapped(add, "add", "added")(2, b=3) == 5
    with pytest.raises(ValueError, match="boom"):
        asyncio.run(timeline_app.wrapped(fail, "fail", "failed")())
    assert [label for label, _, _ in timeline_app._marks] == ["add", "added", "fail", "failed"]
    times = [ns for _, _, ns in timeline_app._marks]
    assert times == sorted(times)


def test_the_marks_split_into_requests_each_label_the_first_after_the_one_before():
    order = ["request", "journal", "committed", "done"]
    marks = [
        ["committed", "sqlite", 5],  # a batch of the run before: before this request's journal mark
        ["request", "main", 1],
        ["journal", "main", 10],
        ["committed", "sqlite", 30],
        ["committed", "sqlite", 35],
        ["done", "main", 40],
        ["request", "main", 50],  # refused: no journal mark
        ["done", "main", 55],
        ["request", "main", 60],
        ["journal", "main", 62],
        ["committed", "sqlite", 70],
        ["done", "main", 90],
    ]
    requests, incomplete = timeline.split(list(reversed(marks)), order)
    assert incomplete == 1
    assert requests == [
        {"request": 1, "journal": 10, "committed": 30, "done": 40, "next request": 50},
        {"request": 60, "journal": 62, "committed": 70, "done": 90},
    ]
    medians = timeline.stage_medians(requests, order)
    assert medians["journal→committed"] == (20 + 8) / 2 / 1000
    assert medians["done→next request"] == 10 / 1000  # only the first request has a next one


@pytest.mark.slow
def test_a_short_run_times_every_stage_of_both_targets(tmp_path, capsys):
    out = tmp_path / "timeline.json"
    assert timeline.main(["--n", "30", "--rounds", "1", "--warmup", "10", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["counts"] == {
        "server": {"requests": 30, "incomplete": 0},
        "durable": {"requests": 30, "incomplete": 0},
    }
    for name, order in timeline.ORDER.items():
        stages = result["stages"][name]
        for a, b in zip(order, order[1:], strict=False):
            assert stages[f"{a}→{b}"] > 0, (name, a, b)
        whole = stages["request→done"]  # a request's stages lie within it
        assert all(stages[f"{a}→{b}"] <= whole for a, b in zip(order, order[1:], strict=False))
    printed = capsys.readouterr().out
    for _, _, what in timeline.COMMON:
        assert what in printed
    assert "COMMIT (the fsync)" in printed
