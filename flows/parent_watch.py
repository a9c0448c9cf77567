"""Processes that die with the process that started them, however it died.

A run's helpers (its owned Prefect API server, process-pool and local Dask
workers) must not outlive a run that was killed, even by SIGKILL, when
nothing gets to clean up. :func:`die_with_parent` makes the calling process
exit as soon as its parent is gone: it waits on a pidfd (Linux: the kernel
wakes the watcher when the parent exits; no polling), or polls ``getppid``
where pidfds are unavailable, and optionally asks the kernel for
``PR_SET_PDEATHSIG`` too.

A process-pool worker can only call it once its initializer runs, and a
spawned worker gets there only after it has imported what the pool pickled
for it (Prefect: seconds on a loaded machine). :class:`WatchedSpawnContext`
closes that window: its processes start watching their parent while they
are being unpickled, before any of those imports.

This module imports only the standard library: it runs at the very start of
a worker's boot.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any

__all__ = ["WatchedSpawnContext", "die_with_parent"]

#: Parents this process already watches (a second call is a no-op).
_watching: set[int] = set()
_lock = threading.Lock()


def die_with_parent(parent: int, use_prctl: bool = True, interval: float = 0.5) -> None:
    """Exit (code 1, at once, no cleanup) when process ``parent`` is gone.

    Args:
        parent: The pid to outlive by no more than a wake-up.
        use_prctl: Also set ``PR_SET_PDEATHSIG`` (Linux). The kernel ties it to
            the parent *thread* that started this process: pass False when
            that may be a short-lived thread (a pool's helper threads).
        interval: Poll period where pidfds are unavailable.
    """
    with _lock:
        if parent in _watching:
            return
        _watching.add(parent)
    if use_prctl and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    fd = _pidfd(parent)
    # After opening the pidfd: if ``parent`` is still our parent now, the pidfd
    # is that process (its pid cannot have been reused while it is alive).
    if os.getppid() != parent:
        os._exit(1)
    watch = _wait_for_exit if fd is not None else _poll_parent
    threading.Thread(
        target=watch, args=(fd if fd is not None else parent, interval),
        name="rungflow-parent-watch", daemon=True,
    ).start()


def _pidfd(pid: int) -> int | None:
    """A pidfd for ``pid``, or None (not Linux >= 5.3, or the process is gone)."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return int(opener(pid))
    except OSError:
        return None


def _wait_for_exit(fd: int, _interval: float) -> None:
    """Block until the process behind pidfd ``fd`` exits (it becomes readable), then exit."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while not poller.poll():
        pass
    os._exit(1)


def _poll_parent(parent: int, interval: float) -> None:
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)


def _watched_process(parent: int, cls: type[SpawnProcess]) -> SpawnProcess:
    """Unpickling a :class:`_WatchedSpawnProcess` in the child: watch, then build it.

    Runs before the process's target and arguments are unpickled (and their
    modules imported). The worker also leaves stop signals to the parent
    from here on: a Ctrl-C to the run's process group is the flow process's
    to handle, and would otherwise end a booting worker with a traceback.
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # only possible in the main thread
            signal.signal(sig, signal.SIG_IGN)
    die_with_parent(parent, use_prctl=False)
    return cls.__new__(cls)


class _WatchedSpawnProcess(SpawnProcess):
    """A spawned process that starts watching its parent when it boots."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_watched_process, (os.getpid(), type(self)), self.__dict__)


class WatchedSpawnContext(SpawnContext):
    """The ``spawn`` start method, whose processes die with the process that
    started them from the first moment they can run Python code (see the
    module doc). Pass it as ``mp_context`` to a ``ProcessPoolExecutor``."""

    Process = _WatchedSpawnProcess
