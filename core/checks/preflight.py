"""``python -m core check-config``: what a server start runs up to connecting, as a verdict.

The checks themselves are ``core.checks.startup``'s, the ones every server start runs.
"""

from __future__ import annotations

from core.checks.startup import check_credentials
from core.config import Settings

# Under ``python -m core serve``: the file a worker that cannot start writes its one line to.
STARTUP_REPORT_ENV = "ROUTER_STARTUP_REPORT"


async def check_config(settings: Settings) -> list[str]:
    """The ``check-config`` verdict: the lines describing a configuration that can start.

    Runs what a server start runs up to connecting: plugins.yaml, every plugin's options,
    the accounts (exchange ids, keys, sandbox), then ``check_startup``. Raises ConfigError.
    """
    from core.pipeline.router import Router

    router = Router(settings)
    try:
        router.data_dir.mkdir(parents=True, exist_ok=True)
        await router.configure()
        credential = await check_credentials(router)
        accounts = []
        for executor in router.executors:
            flags = [executor.exchange]
            if getattr(getattr(executor, "options", None), "sandbox", False):
                flags.append("sandbox")
            accounts.append(f"{executor.account} ({', '.join(flags)})")
        default = router.executors.default
        return [
            f"plugins file: {router.plugins_file.path}",
            f"accounts: {', '.join(accounts) or 'none'}; default: {default.account if default else 'none'}",
            f"state: {router.state.description}",
            f"credentials: {credential}",
        ]
    finally:
        await router.executors.close_all()
        await router.state.aclose()
