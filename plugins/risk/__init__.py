"""Risk guardrails: the built-in limits and strategy position sync (``plugins.risk.limits``)."""
