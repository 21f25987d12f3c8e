"""The webhook router's framework: settings, the plugin manager, the alert pipeline and the app."""

__version__ = "0.1.0"
