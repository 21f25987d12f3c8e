"""The ``telegram`` notifier: each alert's outcome as a message from your bot (Bot API).

Posts ``sendMessage`` to ``{base_url}/bot{bot_token}/sendMessage`` for every chat id
(plain text, no parse mode, so nothing in an alert is read as markup). ``base_url``
defaults to https://api.telegram.org and can point at a self-hosted Bot API server or a
proxy. The bot token is a secret: registered with the redactor, absent from every log
line (destinations are logged as "telegram chat <id>"). No token and no chat: inert.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator

from core.events import AlertEvent
from plugins.notifiers.notifier import (
    CommaList,
    Delivery,
    Notifier,
    NotifierOptions,
    format_message,
    register_secrets,
)


class Plugin(Notifier):
    class Options(NotifierOptions):
        # From @BotFather, e.g. "${TELEGRAM_BOT_TOKEN:-}".
        bot_token: str = Field("", repr=False)
        # Chats to tell: a list, or one string of comma-separated ids ("${TELEGRAM_CHAT_IDS:-}");
        # numeric ids (groups are negative) or @channel names.
        chat_ids: CommaList = Field(default_factory=list, validate_default=True)
        # The Bot API server.
        base_url: str = "https://api.telegram.org"
        # Deliver silently (no sound on the phones).
        disable_notification: bool = False

        @field_validator("chat_ids")
        @classmethod
        def _with_token(cls, chat_ids: list[str], info: ValidationInfo) -> list[str]:
            token = info.data.get("bot_token")
            if token and not chat_ids:
                raise ValueError("bot_token is set: name the chats to tell (or remove the token)")
            if chat_ids and not token:
                raise ValueError("chats are named but bot_token is empty")
            return chat_ids

        @field_validator("bot_token")
        @classmethod
        def _token(cls, value: str) -> str:
            value = value.strip()
            if value and ("/" in value or any(c.isspace() for c in value)):
                raise ValueError("the bot token looks wrong (it is like 123456:ABC-DEF...)")
            return value

        @field_validator("base_url")
        @classmethod
        def _base_url(cls, value: str) -> str:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http:// or https:// URL")
            return value.rstrip("/")

    options: Plugin.Options

    def __init__(self, options: Plugin.Options):
        super().__init__(options)
        register_secrets(options.bot_token)

    @property
    def configured(self) -> bool:
        return bool(self.options.bot_token and self.options.chat_ids)

    def deliveries(self, event: AlertEvent) -> list[Delivery]:
        url = f"{self.options.base_url}/bot{self.options.bot_token}/sendMessage"
        text = format_message(event)
        return [
            Delivery(url=url, label=f"telegram chat {chat_id}",
                     json={"chat_id": chat_id, "text": text, "disable_web_page_preview": True,
                           "disable_notification": self.options.disable_notification})
            for chat_id in self.options.chat_ids
        ]
