"""What a server process arranges for itself at start (``before_serving``).

* **The open-file limit** is raised to its hard limit: every connection is a file, and
  the common soft limit of 1,024 let a few hundred slow connections starve real alerts.
* **A hypercorn worker exits when its master dies.** hypercorn runs the app in a spawned
  worker process that shares the listening socket; if the master is SIGKILLed, the
  worker kept the port and a restart failed with "Address already in use". On Linux the
  kernel sends the worker SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``);
  elsewhere, and as a fallback, a watcher notices the parent's pid change. Either way the
  worker then shuts down gracefully (orders in flight are waited for, as on SIGTERM to
  the master) by setting the shutdown event hypercorn gave it; if that event cannot be
  found, it exits at once (the journal recovers what was in flight).
* **SIGUSR1 prints every thread's stack** to stderr (``faulthandler``), in the worker and
  in ``python -m core serve``'s master: what a process that does not stop is waiting for.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import faulthandler
import logging
import multiprocessing
import os
import signal
import sys

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
PARENT_POLL_SECONDS = 1.0


def raise_file_limit() -> tuple[int, int] | None:
    """Soft RLIMIT_NOFILE up to the hard limit; the (soft, hard) now in force."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20  # Linux's default nr_open
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft, hard


def dump_stacks_on_sigusr1() -> bool:
    """SIGUSR1 writes every thread's Python stack to stderr and the process goes on (its
    default would end it). From C, so it works while the event loop is stuck. Whether it
    is set (not on platforms without SIGUSR1)."""
    usr1 = getattr(signal, "SIGUSR1", None)
    if usr1 is None:
        return False
    try:
        faulthandler.register(usr1, all_threads=True)
    except (OSError, ValueError, AttributeError, RuntimeError) as exc:  # stderr without a file (captured)
        log.debug("no stack dumps on SIGUSR1: %s", exc)
        return False
    return True


def in_hypercorn_worker() -> bool:
    return multiprocessing.parent_process() is not None


def hypercorn_workers() -> int | None:
    """How many worker processes serve the app: 1 in a process of its own (no parent: tests,
    ``check-config``, hypercorn with ``workers=0``), the ``--workers`` of the hypercorn master
    that spawned this worker, or None when the parent is not hypercorn's (unknown)."""
    if not in_hypercorn_worker():
        return 1
    config = getattr(multiprocessing.current_process(), "_kwargs", {}).get("config")
    workers = getattr(config, "workers", None)
    return workers if isinstance(workers, int) else None


def die_with_parent(loop: asyncio.AbstractEventLoop) -> asyncio.Task[None]:
    """In a hypercorn worker: shut down when the master dies (see the module docstring).
    Returns the fallback watcher task (cancel it on shutdown)."""
    parent = os.getppid()
    orphaned = False

    def on_parent_gone() -> None:
        nonlocal orphaned
        if orphaned:
            return
        orphaned = True
        log.warning("hypercorn's master (pid %d) is gone: this worker shuts down", parent)
        shutdown_worker()

    def on_sigterm() -> None:
        if os.getppid() != parent:
            on_parent_gone()
        else:
            # The master turns SIGTERM into a graceful shutdown of every worker (finish
            # requests, then after_serving waits for orders in flight). A SIGTERM sent to
            # the whole process group (Heroku, systemd, Ctrl-C in a shell) would otherwise
            # kill the worker first and skip that wait.
            log.info("SIGTERM: shutting down gracefully when hypercorn's master says so")

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
                log.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        except OSError as exc:
            log.debug("prctl unavailable: %s", exc)
    if os.getppid() != parent:  # died before prctl took effect
        loop.call_soon(on_parent_gone)

    async def watch() -> None:
        while not orphaned:
            await asyncio.sleep(PARENT_POLL_SECONDS)
            if os.getppid() != parent:
                on_parent_gone()

    return loop.create_task(watch(), name="parent-watcher")


def shutdown_worker() -> None:
    """Ask hypercorn to shut this worker down gracefully: set the multiprocessing event its
    master would set on SIGTERM (it is the worker function's ``shutdown_event`` argument)."""
    event = getattr(multiprocessing.current_process(), "_kwargs", {}).get("shutdown_event")
    if event is not None:
        event.set()
        return
    log.warning("hypercorn's shutdown event is not reachable: exiting now")
    os.kill(os.getpid(), signal.SIGKILL)
