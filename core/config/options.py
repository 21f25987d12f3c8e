"""Options models of plugins.yaml sections: the base every plugin's ``Options`` subclasses,
and the ``router`` section's (how plugins are found, and core limits)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class PluginOptions(BaseModel):
    """Base for plugin options models: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


class RouterOptions(PluginOptions):
    """The ``router`` section: how plugins are found and core limits."""

    plugin_dir: str = Field(
        "./local_plugins", description="Drop-in folder: every *.py file in it (not starting with _) is a plugin."
    )
    modules: list[str] = Field(
        default_factory=list,
        description="Extra plugins by dotted module path, e.g. plugins.exchanges.alpaca.",
    )
    disabled: list[str] = Field(
        default_factory=list, description="Built-in or installed plugins to switch off, by name (GET / lists them)."
    )
    max_body_bytes: int = Field(65536, gt=0, description="Bodies larger than this are refused with 413.")
    max_json_depth: int = Field(
        32, gt=0, description="JSON nested deeper than this is refused with 400 (parsed only once authenticated)."
    )
    max_inflight_per_address: int = Field(
        64,
        gt=0,
        description="Requests of one client address in progress at once in a worker; more get 429 before "
        "their body is read.",
    )
    body_timeout: float = Field(
        5.0, gt=0, le=60, description="Seconds the whole body may take to arrive after the headers (else 408)."
    )
    response_budget: float = Field(
        2.5,
        gt=0,
        le=30,
        description="Seconds to answer within (TradingView gives up after 3): 200 when the order finished, "
        "else 202 while execution goes on.",
    )
    dedup_window: float = Field(
        60.0,
        ge=0,
        description="An alert without an explicit id repeating a body seen within this many seconds is a "
        "TradingView resend, answered but not executed again.",
    )
    allow_payload_credentials: bool = Field(
        False,
        description="Accept the classic payload's per-alert apiKey/secret (used for that order only, never "
        "stored); off because keys in alert messages are readable by anyone who sees them (docs/security.md).",
    )
    shutdown_grace: float = Field(10.0, ge=0, description="Seconds shutdown waits for orders in flight.")
    group_admissions_behind: int = Field(
        8,
        ge=0,
        description="An alert arriving with this many of its market's alerts ahead of it in the worker (waiting "
        "or executing) has its journal write grouped with the next ones (SQLite, one worker), as it cannot "
        "execute sooner; 0: every admission commits at once. 1 is refused: the market's queue would wait for "
        "each commit.",
    )

    @field_validator("group_admissions_behind")
    @classmethod
    def _group_behind_a_queue(cls, value: int) -> int:
        # The grouped admissions commit once fewer than half as many are left ahead; behind
        # one alert that is when the queue is empty, and the market would wait for the commit.
        if value == 1:
            raise ValueError("must be 0 (off) or at least 2")
        return value

    retry_base_delay: float = Field(
        0.1,
        gt=0,
        description="Refusals that booked nothing (rate limits) are retried with backoff from this many seconds...",
    )
    retry_max_delay: float = Field(
        1.0, gt=0, description="...up to this many, with jitter, while the answer budget lasts."
    )
    reconcile_interval: float = Field(
        0.5,
        gt=0,
        description="Outcome unknown: look the order up by its client order id every this many seconds...",
    )
    reconcile_max_delay: float = Field(5.0, gt=0, description="...backing off up to this many.")
    resubmit_after: float = Field(
        15.0,
        ge=0,
        description="Send again only once the exchange has said 'absent' this long after the lost request "
        "(longer than its receive window, so it can no longer execute).",
    )
    reconcile_timeout: float = Field(
        300.0, gt=0, description="Give up reconciling after this many seconds (the state stays 'unknown', reported)."
    )
    recovery_max_age: float = Field(
        300.0, gt=0, description="After a crash, an alert never sent and older than this is marked expired, not sent."
    )
    worker_heartbeat: float = Field(2.0, gt=0, description="Seconds between a worker's heartbeats into the journal.")
    worker_stale_after: float = Field(
        6.0,
        gt=0,
        description="A worker silent this long is dead; its unfinished alerts are recovered by another "
        "(or by the next start).",
    )
    journal_synchronous: str = Field(
        "FULL",
        pattern="^(FULL|NORMAL)$",
        description="SQLite synchronous mode of the journal: FULL survives a power loss, NORMAL a process crash.",
    )
