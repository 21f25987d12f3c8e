#!/usr/bin/env python3
"""Issue, revoke and list the tokens of token mode: ``ccxt-trading-webhook tokens ...`` under its classic name.

    python manage_tokens.py issue [--ttl SECONDS] [--label NAME] [--account NAME ...] [--control]
    python manage_tokens.py revoke <token> | - (stdin) | --id <id>
    python manage_tokens.py list

``python manage_tokens.py --help`` (or ``ccxt-trading-webhook tokens --help``) explains them.
"""

from __future__ import annotations

import sys

if sys.version_info < (3, 11):  # noqa: UP036 - run by whatever python3 is on PATH
    raise SystemExit(f"error: Python 3.11+ is needed, this is {sys.version.split()[0]}: use .venv/bin/python")

from core.cli import main as cli


def main(argv: list[str] | None = None) -> int:
    return cli(["tokens", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
