"""Built-in notifier plugins: tell a chat or an HTTP endpoint what became of each alert.

A notifier is fed by ``after_execute`` and ``on_error``; it only enqueues there and a
background task started in ``router_startup`` does the HTTP, so a slow or failing
destination never delays the webhook's answer or touches the order. Shared machinery:
``plugins.notifiers.notifier``; built-ins: ``webhook_notify`` (Discord, Slack or any JSON
endpoint) and ``telegram`` (the Bot API). Unconfigured, a notifier does nothing.
"""
