"""``init`` (alias ``init-env``): write ``.env`` with fresh secrets, once."""

from __future__ import annotations

import argparse
import os
import secrets
from pathlib import Path
from typing import Any


def init_env(path: Path = Path(".env"), example: Path = Path(".env.example")) -> str | None:
    """Create ``.env`` with a fresh WEBHOOK_SECRET, METRICS_TOKEN and DASHBOARD_PASSWORD; leave
    an existing one alone. The dashboard password written, or None when ``.env`` existed.

    The file is 0600 from its first byte: written whole to a temporary file created 0600,
    then linked into place, which fails rather than replace a ``.env`` made meanwhile."""
    if path.exists():
        return None
    lines = (
        example.read_text(encoding="utf-8").splitlines()
        if example.exists()
        else ["WEBHOOK_SECRET=", "DEFAULT_EXCHANGE=paper"]
    )
    fresh = {
        "WEBHOOK_SECRET": secrets.token_hex(32),
        "METRICS_TOKEN": secrets.token_urlsafe(32),
        "DASHBOARD_PASSWORD": secrets.token_urlsafe(18),
    }
    out = [
        f"{line.split('=', 1)[0]}={fresh[line.split('=', 1)[0]]}"
        if line.split("=", 1)[0] in fresh and "=" in line
        else line
        for line in lines
    ]
    out += [
        f"{name}={value}" for name, value in fresh.items() if not any(line.startswith(name + "=") for line in lines)
    ]
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(out) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return None
    finally:
        temporary.unlink(missing_ok=True)
    return fresh["DASHBOARD_PASSWORD"]


def init_command(args: argparse.Namespace) -> int:
    env, example = Path(args.env_file), Path(args.example)
    password = init_env(env, example)
    if password is None:
        print(f"{env} exists; left as it is")
    else:
        print(f"wrote {env} with a new WEBHOOK_SECRET and METRICS_TOKEN")
        print(
            f"dashboard: /dashboard on this server, password {password} (shown once; it is DASHBOARD_PASSWORD in {env})"
        )
    return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    init = sub.add_parser(
        "init",
        aliases=["init-env"],
        help="write .env with a random WEBHOOK_SECRET, METRICS_TOKEN and DASHBOARD_PASSWORD if it does not exist",
        description="Write .env from .env.example with a random WEBHOOK_SECRET, METRICS_TOKEN and "
        "DASHBOARD_PASSWORD (the password printed once). An existing .env is left alone. The file is "
        "readable by its owner only.",
    )
    init.add_argument("--env-file", default=".env", metavar="PATH", help="the file to write (default: .env)")
    init.add_argument("--example", default=".env.example", metavar="PATH", help="the template (default: .env.example)")
    init.set_defaults(handler=init_command)
