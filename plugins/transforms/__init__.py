"""Built-in transforms plugins."""
