"""The ``telegram`` notifier: each alert's outcome as a message from your bot (Bot API).

Posts ``sendMessage`` to ``{base_url}/bot{bot_token}/sendMessage`` for every chat id
(plain text, no parse mode, so nothing in an alert is read as markup). ``base_url``
defaults to https://api.telegram.org and can point at a self-hosted Bot API server or a
proxy. The bot token is a secret: registered with the redactor, absent from every log
line (destinations are logged as "telegram chat <id>"). No token and no chat: inert.

Commands (``commands: true``, the default once configured): the bot long-polls
``getUpdates`` and obeys ``/halt [account] [reason]``, ``/flatten [account]``,
``/resume [account]`` and ``/status`` — the kill switch of ``core.pipeline.killswitch`` — sent from
one of ``chat_ids`` only (anyone else is ignored and logged); no account means every
account. Every worker polls; each update is acted on once (its id is recorded in the
journal as a replay key, ``Journal.remember_replay``), and answered in the chat it came from.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from pydantic import Field, ValidationInfo, field_validator

from core.hooks.manager import hookimpl
from core.pipeline.events import AlertEvent
from plugins.notifiers.notifier import (
    CommaList,
    Delivery,
    Notifier,
    NotifierOptions,
    format_message,
    register_secrets,
)

log = logging.getLogger(__name__)


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
        # Obey /halt, /flatten, /resume and /status from the chats above (the kill switch).
        commands: bool = True
        # Seconds one getUpdates long poll waits for a command.
        poll_timeout: int = Field(25, ge=0, le=50)

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
        self._poller: asyncio.Task | None = None

    @hookimpl
    def router_startup(self, router) -> None:
        super().router_startup(router)
        if self.configured and self.options.commands:
            self._poller = asyncio.get_running_loop().create_task(self._poll_commands(router), name="telegram-commands")

    @hookimpl
    async def router_shutdown(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
        await super().router_shutdown()

    # ------------------------------------------------------------ commands

    async def _poll_commands(self, router) -> None:
        api = f"{self.options.base_url}/bot{self.options.bot_token}"
        bot = hashlib.sha256(self.options.bot_token.encode()).hexdigest()[:16]
        offset: int | None = None
        pause = 1.0
        timeout = aiohttp.ClientTimeout(total=self.options.poll_timeout + 15)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                try:
                    params: dict[str, Any] = {
                        "timeout": self.options.poll_timeout,
                        "allowed_updates": '["message"]',
                    }
                    if offset is not None:
                        params["offset"] = offset
                    async with session.get(f"{api}/getUpdates", params=params) as response:
                        if response.status != 200:  # 409: another worker is polling right now
                            raise RuntimeError(f"getUpdates answered HTTP {response.status}")
                        updates = (await response.json()).get("result") or []
                    pause = 1.0
                    for update in updates:
                        offset = max(offset or 0, int(update["update_id"]) + 1)
                        # Once, whichever worker polled it: the journal remembers the update (a replay key).
                        key = f"telegram:{bot}:{update['update_id']}"
                        if await router.open_journal().remember_replay(key, time.time() + 86400):
                            await self._command(session, api, update.get("message") or {}, router)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.debug("telegram commands: %s; polling again in %.0fs", type(exc).__name__, pause)
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 30.0)

    async def _command(self, session: aiohttp.ClientSession, api: str, message: dict[str, Any], router) -> None:
        text = message.get("text")
        chat = str((message.get("chat") or {}).get("id", ""))
        if not isinstance(text, str) or not text.startswith("/"):
            return
        if chat not in {str(c) for c in self.options.chat_ids}:
            log.warning("telegram: command from chat %s ignored: not one of the configured chats", chat[:32])
            return
        words = text.split()
        command = words[0].split("@", 1)[0].lower()
        account = words[1] if len(words) > 1 else None
        reason = " ".join(words[2:])[:200]
        by = f"telegram:{chat}"
        switch = router.kill_switch
        try:
            if account is not None and router.executors.get(account) is None and command != "/status":
                reply = f"unknown account '{account[:64]}'"
            elif command == "/halt":
                await switch.halt(account, reason=reason or "halted from Telegram", by=by)
                reply = f"halted {account or 'every account'}: opening orders are refused until /resume"
            elif command == "/flatten":
                record = await switch.request_flatten(account, by=by, reason=reason)
                reply = (
                    f"flattening {account or 'every account'} (flatten {record['flatten_id']}): halted, canceling "
                    "every open order and closing every position"
                )
            elif command == "/resume":
                cleared = await switch.resume(account, by=by)
                reply = f"resumed {', '.join(cleared)}" if cleared else "nothing was halted"
            elif command == "/status":
                status = await switch.status()
                halts = [f"{name}: {h.get('reason') or '-'} (by {h.get('by')})" for name, h in status["halts"].items()]
                flattens = [f"flatten {f['flatten_id']} {f['account']}: {f['state']}" for f in status["flattens"][:3]]
                reply = "\n".join(["halts: " + ("; ".join(halts) if halts else "none"), *flattens])
            else:
                reply = "commands: /halt [account] [reason], /flatten [account], /resume [account], /status"
        except Exception as exc:
            log.exception("telegram: %s failed", command)
            reply = f"{command} failed: {type(exc).__name__}"
        log.warning("telegram: %s %s from chat %s", command, account or "", chat)
        async with session.post(
            f"{api}/sendMessage", json={"chat_id": message["chat"]["id"], "text": reply}
        ) as response:
            await response.read()

    @property
    def configured(self) -> bool:
        return bool(self.options.bot_token and self.options.chat_ids)

    def deliveries(self, event: AlertEvent) -> list[Delivery]:
        url = f"{self.options.base_url}/bot{self.options.bot_token}/sendMessage"
        text = format_message(event)
        return [
            Delivery(
                url=url,
                label=f"telegram chat {chat_id}",
                json={
                    "chat_id": chat_id,
                    "text": text,
                    "disable_web_page_preview": True,
                    "disable_notification": self.options.disable_notification,
                },
            )
            for chat_id in self.options.chat_ids
        ]
