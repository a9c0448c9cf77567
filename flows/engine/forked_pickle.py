"""Pickle and save a snapshot off the flow thread: a forked child pickles, a thread saves.

Pickling the runner's state costs ~45 ms of CPU at 10k trials (2.4 MB), and
writing it 3-20 ms more (SQLite's WAL checkpoints land on whichever commit
crosses the threshold): on the flow thread, a stall of the decision loop at
every snapshot. A background thread cannot pickle it: the pickler holds the
GIL throughout, and the state it walks changes under it. ``os.fork`` instead
gives a child a copy-on-write image of the process at that instant: the state
at exactly the seq the snapshot names, whatever the flow folds next, for the
price of copying the page tables (~5 ms of CPU at 10k trials, 185 MB). The
child pickles into an unlinked temporary file and exits; a waiter thread
reaps it, reads the bytes and saves them like any snapshot, in its own short
transaction (see :mod:`storage.snapshots`: a snapshot needs no coordination
with appends), while the GIL is free for the flow (the database drivers let
go of it while they wait).

The child runs the pickler and ``os.write``, then ``os._exit``: none of the
parent's other threads, connections or finalizers, and no lock they could be
holding. Where ``os.fork`` or ``os.waitid`` is missing (Windows)
:meth:`ForkedPickle.start` returns None and the runner pickles in place.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from storage.snapshots import dumps

__all__ = ["ForkedPickle"]

log = logging.getLogger("rungflow")


class ForkedPickle:
    """A child pickling one state, and the thread that saves its bytes.

    Attributes:
        seq: The seq of the state being pickled.
        fork_seconds: CPU the fork cost the calling thread (copying the page
            tables: it grows with the process's memory).
        pickle_seconds: CPU the child spent pickling, once it is saved (what
            pickling in place would have cost the caller); None before.
    """

    def __init__(self, pid: int, fd: int, seq: int, save: Callable[[int, bytes], Any]) -> None:
        self.seq = seq
        self.fork_seconds = 0.0
        self.pickle_seconds: float | None = None
        self._pid = pid
        self._fd = fd
        self._save = save
        self._reaped = False
        self._cancelled = False
        self._lock = threading.Lock()  # the pid is ours to signal until reaped
        self._thread = threading.Thread(
            target=self._collect, name="rungflow-snapshot", daemon=True
        )

    @classmethod
    def start(
        cls, state: Any, seq: int, save: Callable[[int, bytes], Any]
    ) -> ForkedPickle | None:
        """Fork a child that pickles ``state`` (the fold at ``seq``); ``save(seq,
        bytes)`` then runs on a background thread. None if this platform or the
        OS cannot fork (pickle in place then)."""
        if not hasattr(os, "fork") or not hasattr(os, "waitid"):
            return None
        fd, path = tempfile.mkstemp(prefix="rungflow-snapshot-")
        os.unlink(path)  # nothing to clean up, whoever dies first
        began = time.thread_time()
        try:
            pid = os.fork()
        except OSError:
            os.close(fd)
            return None
        if pid == 0:  # pragma: no cover - the child (coverage does not see it)
            code = 1
            try:
                gc.disable()  # nothing it builds is garbage, and it lives 50 ms
                began = time.thread_time()
                pickled = dumps(state)
                data = memoryview(struct.pack("<d", time.thread_time() - began) + pickled)
                while data:
                    data = data[os.write(fd, data):]
                code = 0
            finally:
                os._exit(code)
        job = cls(pid, fd, seq, save)
        job.fork_seconds = time.thread_time() - began
        job._thread.start()
        return job

    @property
    def running(self) -> bool:
        """Whether the child or the save is still in progress."""
        return self._thread.is_alive()

    def join(self) -> None:
        """Wait until the snapshot is saved (or failed)."""
        self._thread.join()

    def cancel(self) -> None:
        """Kill the child if it still pickles (its snapshot is then not saved);
        wait for a save already under way."""
        with self._lock:
            self._cancelled = True
            if not self._reaped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._pid, signal.SIGKILL)
        self._thread.join()

    def _collect(self) -> None:
        try:
            # Wait without reaping: until reaped, the pid cannot be reused, so
            # cancel() may signal it safely.
            os.waitid(os.P_PID, self._pid, os.WEXITED | os.WNOWAIT)
            with self._lock:
                _, status = os.waitpid(self._pid, 0)
                self._reaped = True
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                if self._cancelled:
                    return  # killed on purpose: a newer snapshot is on its way
                log.warning("snapshot at seq %d not saved (its child exited with %d)",
                            self.seq, code)
                return
            data = os.pread(self._fd, os.fstat(self._fd).st_size, 0)
        finally:
            os.close(self._fd)
        (self.pickle_seconds,) = struct.unpack_from("<d", data)
        self._save(self.seq, data[8:])
