"""plugins.yaml is read with a safe loader: no tag of it can build a Python object."""

from __future__ import annotations

import pytest

from core.config import PluginsFile
from core.errors import ConfigError


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system ['true']", "!!python/name:os.system"])
def test_python_tags_are_refused(tmp_path, tag):
    path = tmp_path / "plugins.yaml"
    path.write_text(f"router:\n  plugin_dir: {tag}\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        PluginsFile.load(path, {})


def test_sections_and_types_read_as_yaml_says(tmp_path):
    path = tmp_path / "plugins.yaml"
    path.write_text("router:\n  max_body_bytes: 1024\n  disabled: [telegram]\n  plugin_dir: ${DIR:-./here}\nrisk: {}\n")
    loaded = PluginsFile.load(path, {})
    assert loaded.section_names() == ["router", "risk"]
    assert loaded.section("router") == {"max_body_bytes": 1024, "disabled": ["telegram"], "plugin_dir": "./here"}


@pytest.mark.parametrize(("behind", "refused"), [(0, False), (1, True), (2, False), (8, False), (-1, True)])
def test_admissions_are_grouped_behind_no_queue_or_one_of_two_or_more(tmp_path, behind, refused):
    from core.config import RouterOptions

    path = tmp_path / "plugins.yaml"
    path.write_text(f"router:\n  group_admissions_behind: {behind}\n")
    plugins = PluginsFile.load(path, {})
    if not refused:
        assert plugins.validate("router", RouterOptions).group_admissions_behind == behind
        return
    with pytest.raises(ConfigError) as refusal:
        plugins.validate("router", RouterOptions)
    message = str(refusal.value)
    assert message.startswith(f"{path}: plugin 'router': field 'group_admissions_behind': ")
    assert "\n" not in message and (behind != 1 or "must be 0 (off) or at least 2 (got 1)" in message), message
