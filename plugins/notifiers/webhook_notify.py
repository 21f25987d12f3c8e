"""The ``webhook_notify`` notifier: POST each alert's outcome as JSON to one or more URLs.

Speaks Discord (``{"content": ...}``), Slack incoming webhooks (``{"text": ...}``) or a
generic JSON shape carrying both keys and the event's fields. ``format: auto`` picks per
URL (discord.com → discord, hooks.slack.com → slack, anything else → generic). Webhook
URLs are secrets (Discord's and Slack's embed a token): they are registered with the
redactor and logs name a destination by host only. No URL configured: inert.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from core.pipeline.events import AlertEvent
from plugins.notifiers.notifier import (
    CommaList,
    Delivery,
    Notifier,
    NotifierOptions,
    format_message,
    register_secrets,
)

Format = Literal["auto", "discord", "slack", "generic"]


def detect_format(url: str) -> str:
    host = (urlsplit(url).hostname or "").lower()
    if host in ("discord.com", "discordapp.com") or host.endswith((".discord.com", ".discordapp.com")):
        return "discord"
    if host == "hooks.slack.com":
        return "slack"
    return "generic"


def slack_escape(text: str) -> str:
    """Slack reads <...> as links and mentions (<!channel>): alert fields must not."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload(event: AlertEvent, fmt: str) -> dict[str, Any]:
    text = format_message(event)
    if fmt == "discord":
        return {"content": text, "allowed_mentions": {"parse": []}}  # an alert id cannot ping @everyone
    if fmt == "slack":
        return {"text": slack_escape(text)}
    return {"text": text, "content": text, "event": event.as_dict()}  # messages were redacted by core.pipeline.events


class Plugin(Notifier):
    class Options(NotifierOptions):
        # Where to POST: a list, or one string of comma-separated URLs (e.g. "${NOTIFY_WEBHOOK_URLS:-}").
        urls: CommaList = Field(default_factory=list)
        # auto | discord | slack | generic (see the module docstring).
        format: Format = "auto"
        # Extra request headers (e.g. Authorization for your own endpoint); treated as secrets.
        headers: dict[str, str] = Field(default_factory=dict)

        @field_validator("urls")
        @classmethod
        def _http(cls, urls: list[str]) -> list[str]:
            for url in urls:
                parts = urlsplit(url)
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    raise ValueError("each url must be an http:// or https:// URL")
            return urls

    options: Plugin.Options

    def __init__(self, options: Plugin.Options):
        super().__init__(options)
        register_secrets(*options.urls, *options.headers.values())

    @property
    def configured(self) -> bool:
        return bool(self.options.urls)

    def deliveries(self, event: AlertEvent) -> list[Delivery]:
        found = []
        for index, url in enumerate(self.options.urls, 1):
            fmt = detect_format(url) if self.options.format == "auto" else self.options.format
            label = f"url #{index} ({urlsplit(url).hostname}, {fmt})"
            found.append(Delivery(url=url, json=payload(event, fmt), label=label, headers=dict(self.options.headers)))
        return found
