"""The original implementation as a benchmark target (``python -m bench --original PATH``).

The project replaces samkomo/ccxt-trading-webhook at commit 4c888e79, a FastAPI app. The
benchmark runs it from a checkout of that commit that the user provides (``--original
PATH`` or ``BENCH_ORIGINAL``; the benchmark downloads nothing from GitHub and this
repository holds none of its code), unchanged:

* **verified**: the git blob ids of the files it serves with (below) must match that
  commit's, whether or not the checkout is a git repository (a git checkout's HEAD is
  reported too), so an edited or different version is refused with one line;
* **its own venv**: ``bench/results/.original-venv-<sha256 of its requirements.txt>``,
  made once with ``python -m venv`` and ``pip install -r requirements.txt`` (PyPI), reused
  after (``--original-venv DIR`` names an existing one instead);
* **run as its Procfile does**: ``uvicorn main:app --host 127.0.0.1 --port P`` from the
  checkout, with ``--no-access-log`` as every target of the benchmark has none; its
  settings from the environment: ``WEBHOOK_SECRET``, ``DEFAULT_EXCHANGE=binance``,
  ``DEFAULT_API_KEY``/``DEFAULT_API_SECRET`` (its own emulator account, so its orders are
  counted apart), ``RATE_LIMIT=1000000/second``, ``LOG_LEVEL=WARNING``;
* **pointed at the emulator through its environment only**: ``bench/original_env`` on its
  ``PYTHONPATH`` holds a ``sitecustomize`` that deep-merges ``BENCH_CCXT_CONFIG`` (the
  emulator's URLs and options, ``enableRateLimit: false``) into every ccxt exchange it
  constructs.

It takes the classic payload (``bench.loadgen --payload classic``) and answers
``{"status": "success", "order": {...}}``; it sends no client order id, so the check that
every 2xx answer is one booked order is a count: the orders booked on its account equal
its 2xx answers.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench.processes import PYTHON, Process, clean_env, free_port

REPOSITORY = "samkomo/ccxt-trading-webhook"
COMMIT = "4c888e7994a1e323e7f51276a79bbe17f6ab1f5d"
# git blob ids (git hash-object) at that commit of every file the app imports or is served with.
BLOBS = {
    "main.py": "c0e2c6b2ebecb65ea90327c18f637cd8cc71db56",
    "requirements.txt": "824a488df572f0ad3bc24e4d7aecc92ac14a5f6f",
    "Procfile": "893b8dfe76c232ee2f15294cc9441b859ea6589d",
    "config/settings.py": "358c366dc9579899749153f5ec683ca74abe188d",
    "app/__init__.py": "ffc895e910a64a8ff37271843dd184f36fb5e6b1",
    "app/auth.py": "ad8663f305a8cdf2c8067a1a33f20c93721a14af",
    "app/exchange_factory.py": "bada15f7edefc36c2b01d08e7a6099e83ceda948",
    "app/metrics.py": "c8a1f346f2cfda1e3289d6376b90eb84d5091888",
    "app/rate_limiter.py": "1b09fd309a4ef99061d17ba603385ea0d9f854f3",
    "app/routes.py": "917a874831fcc51e26c4cce29a9e966daec86836",
    "app/session_pool.py": "a38b29aac753358f0853ec28f4e53dc903038e61",
    "app/tasks.py": "c30b081773a7a2964e7c0c8538105b68e77fb3ec",
    "app/token_store.py": "ad398a4a6862a41b0188fba52589929690875e47",
    "app/utils.py": "f3fd5f4bf9d5e06e1c898a8d2872093c219e2ecf",
}
# Its own account at the emulator: its orders, which carry no client order id, are counted there.
API_KEY, API_SECRET = "bench-original-key", "bench-original-secret-0123456789"
ENV_DIR = Path(__file__).resolve().parent / "original_env"
VENV_TIMEOUT = 900.0


class OriginalUnavailable(Exception):
    """The checkout, or its venv, cannot be used: the message says why, in one line."""


def locate(option: Path | None) -> Path | None:
    """``--original PATH``, else ``BENCH_ORIGINAL``, else None (not measured)."""
    if option is not None:
        return option
    value = os.environ.get("BENCH_ORIGINAL", "").strip()
    return Path(value) if value else None


def git_blob_id(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def verify(checkout: Path) -> str:
    """How the checkout was verified as commit 4c888e79, or ``OriginalUnavailable``."""
    if not (checkout / "main.py").is_file() or not (checkout / "app" / "routes.py").is_file():
        raise OriginalUnavailable(f"{checkout} is not a checkout of {REPOSITORY} (no main.py and app/routes.py)")
    head = ""
    if (checkout / ".git").exists() and shutil.which("git"):
        found = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30
        )
        head = found.stdout.strip() if found.returncode == 0 else ""
        if head and head != COMMIT:
            raise OriginalUnavailable(f"{checkout} is at commit {head[:12]}, not {COMMIT[:8]} of {REPOSITORY}")
    for name, blob in BLOBS.items():
        path = checkout / name
        if not path.is_file():
            raise OriginalUnavailable(f"{checkout}: {name} is missing (commit {COMMIT[:8]} of {REPOSITORY} has it)")
        if git_blob_id(path) != blob:
            raise OriginalUnavailable(f"{checkout}: {name} differs from commit {COMMIT[:8]} of {REPOSITORY}")
    how = f"git HEAD {COMMIT[:8]}" if head else "not a git checkout"
    return f"{how}; its {len(BLOBS)} served files match commit {COMMIT[:8]}"


def venv_python(checkout: Path, results: Path, log_dir: Path, reuse: Path | None = None) -> tuple[Path, str]:
    """The original's Python: ``reuse``'s, or the cached venv's (made now if missing)."""
    if reuse is not None:
        python = reuse / "bin" / "python"
        _check_venv(python, log_dir)
        return python, f"reused {reuse}"
    digest = hashlib.sha256((checkout / "requirements.txt").read_bytes()).hexdigest()[:12]
    venv = results / f".original-venv-{digest}"
    python, done = venv / "bin" / "python", venv / ".bench-complete"
    if done.exists():
        _check_venv(python, log_dir)
        return python, f"cached {venv}"
    shutil.rmtree(venv, ignore_errors=True)  # an interrupted install starts over
    results.mkdir(parents=True, exist_ok=True)
    log = log_dir / "original-venv.log"
    with open(log, "ab") as out:
        for step in (
            [PYTHON, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "--quiet", "-r", str(checkout / "requirements.txt")],
        ):
            try:
                code = subprocess.run(step, cwd=checkout, stdout=out, stderr=subprocess.STDOUT, timeout=VENV_TIMEOUT)
            except subprocess.TimeoutExpired as exc:
                raise OriginalUnavailable(f"making its venv timed out ({' '.join(step[:4])}...); see {log}") from exc
            if code.returncode != 0:
                raise OriginalUnavailable(f"making its venv failed ({' '.join(step[:4])}...); see {log}")
    _check_venv(python, log_dir)
    done.write_text(f"{REPOSITORY}@{COMMIT}\n")
    return python, f"made {venv}"


def _check_venv(python: Path, log_dir: Path) -> None:
    if not python.exists():
        raise OriginalUnavailable(f"no Python in the venv: {python}")
    probe = subprocess.run(
        [str(python), "-c", "import fastapi, uvicorn, ccxt.async_support, slowapi, pydantic_settings"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if probe.returncode != 0:
        with (log_dir / "original-venv.log").open("a") as log:
            log.write(probe.stderr)
        raise OriginalUnavailable(f"its venv {python.parent.parent} lacks its requirements: {probe.stderr[-200:]}")


def ccxt_overrides(emulator_url: str) -> dict[str, Any]:
    """What ``sitecustomize`` merges into its ccxt configs: the emulator's URLs and options,
    throttle off, as the router's benchmark accounts (credentials stay its own)."""
    from emulator.ccxt_config import ccxt_config

    config = ccxt_config(
        "binance",
        emulator_url,
        api_key=API_KEY,
        secret=API_SECRET,
        match_production_errors=False,
        enableRateLimit=False,
    )
    config.pop("apiKey"), config.pop("secret")
    return config


def original_process(
    name: str, tmp: Path, checkout: Path, python: Path, webhook_secret: str, emulator_url: str
) -> tuple[Process, int]:
    import json

    port = free_port()
    env = clean_env(
        PYTHONPATH=str(ENV_DIR),  # only the sitecustomize: nothing of this project
        BENCH_CCXT_CONFIG=json.dumps(ccxt_overrides(emulator_url)),
        WEBHOOK_SECRET=webhook_secret,
        DEFAULT_EXCHANGE="binance",
        DEFAULT_API_KEY=API_KEY,
        DEFAULT_API_SECRET=API_SECRET,
        RATE_LIMIT="1000000/second",
        LOG_LEVEL="WARNING",
    )
    cmd = [str(python), "-m", "uvicorn", "main:app", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    return Process(name, cmd, env=env, cwd=checkout, log_dir=tmp), port
