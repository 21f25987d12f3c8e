"""``serve`` runs hypercorn's master with signal handlers that never run inside one
another: a second SIGTERM during the first handler (``make run`` forwards the one its
process group already delivered) deadlocked the master on its shutdown Event's lock, and
every worker with it."""

from __future__ import annotations

import multiprocessing
import os
import signal

import pytest

from core.cli.server import OneSignalAtATime, _GuardedSignalModule

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="needs POSIX signals")


def test_a_signal_that_arrives_during_a_handler_is_handled_after_it():
    """A real signal, sent to this process while its handler holds a multiprocessing
    lock as hypercorn's Event.set() does: Python would run the second handler right there,
    inside the first, and that one would wait for the lock for ever (here: 2 s, then fail)."""
    lock = multiprocessing.get_context("spawn").Lock()
    handled: list[str] = []

    def shutdown(signum: int, frame: object) -> None:
        assert lock.acquire(timeout=2), "a handler ran inside another one that holds the lock"
        try:
            handled.append("start")
            if len(handled) == 1:
                os.kill(os.getpid(), signal.SIGUSR2)  # the second signal, while the lock is held
                for _ in range(1000):  # bytecodes: Python runs a pending handler between two
                    pass
            handled.append("end")
        finally:
            lock.release()

    guarded = _GuardedSignalModule(OneSignalAtATime())
    before = guarded.signal(signal.SIGUSR2, shutdown)
    try:
        os.kill(os.getpid(), signal.SIGUSR2)
        for _ in range(1000):
            pass
    finally:
        signal.signal(signal.SIGUSR2, before)
    assert handled == ["start", "end", "start", "end"]


def test_the_guarded_module_is_the_signal_module_but_for_installing_handlers():
    guarded = _GuardedSignalModule(OneSignalAtATime())
    assert guarded.SIGTERM == signal.SIGTERM and guarded.SIG_IGN is signal.SIG_IGN
    before = guarded.signal(signal.SIGUSR2, signal.SIG_IGN)  # not callable: installed as it is
    try:
        assert signal.getsignal(signal.SIGUSR2) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR2, before)


def test_a_handler_that_raises_leaves_the_guard_ready_for_the_next_signal():
    guard = OneSignalAtATime()

    def broken(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        guard.wrap(broken)(signal.SIGINT, None)
    seen: list[int] = []
    guard.wrap(lambda signum, frame: seen.append(signum))(signal.SIGTERM, None)
    assert seen == [signal.SIGTERM] and not guard.running


def test_stack_dumps_are_skipped_when_stderr_is_no_file(monkeypatch):
    import io

    from core.web.worker import dump_stacks_on_sigusr1

    monkeypatch.setattr("sys.stderr", io.StringIO())  # as pytest's capsys leaves it
    assert dump_stacks_on_sigusr1() is False  # and the app starts all the same
