"""Configuration: settings from the environment (and ``.env``) and the per-plugin sections of plugins.yaml.

Environment variables are read here and nowhere else (:class:`Settings`, on pydantic-settings):
hooks get their configuration from the pydantic options model their plugin declares
(:class:`PluginOptions`), validated once at startup. A startup error is one line naming the
variable, or the file, the plugin and the field.
"""

from core.config.options import PluginOptions, RouterOptions
from core.config.plugins_file import PluginsFile, describe_validation_error
from core.config.settings import TRUE_WORDS, Settings, read_environment

__all__ = [
    "TRUE_WORDS",
    "PluginOptions",
    "PluginsFile",
    "RouterOptions",
    "Settings",
    "describe_validation_error",
    "read_environment",
]
