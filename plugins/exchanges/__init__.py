"""Built-in exchanges plugins."""
