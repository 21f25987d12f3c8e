"""What the token plugin makes of a verified token: its principal and the accounts it may
trade on (the store only keeps them: core.store.tokens)."""

from __future__ import annotations

from core.store.tokens import TokenInfo
from plugins.auth.token_auth import account_scope, principal


def info(label: str | None = None, accounts: tuple[str, ...] = ()) -> TokenInfo:
    return TokenInfo(
        id="0123456789ab", label=label, created_at=1.0, expires_at=2.0, last_used_at=None, accounts=accounts
    )


def test_the_principal_is_the_label_or_else_the_id():
    assert principal(info("tv")) == "token:tv"
    assert principal(info()) == "token:0123456789ab"


def test_the_accounts_are_the_default_only_the_named_ones_or_every_one():
    assert account_scope(info()) == frozenset()
    assert account_scope(info(accounts=("alice", "bob"))) == frozenset({"alice", "bob"})
    assert account_scope(info(accounts=("*",))) is None
