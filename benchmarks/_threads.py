"""CPU per thread group of this process, for benchmarks, read from ``/proc``.

A process's CPU figure lumps together the thread that runs the flow's loop,
the task runner's worker threads that run each task's body, Prefect's
background services (its event and log workers, its event-loop threads),
rungflow's own threads (the lease heartbeat, artifacts) and whatever else.
Their sum spreads by milliseconds per segment between repeats; this module
says which group does.

:func:`install` (once, before the threads to watch start) names every new
Python thread in the kernel too (``/proc/<pid>/task/<tid>/comm``, so ``top``
and ``py-spy`` show it) and records each thread's CPU as it exits: a task
runner's workers end with their flow run, before the sample after it.
:func:`sample` reads every live Python thread's CPU clock (nanoseconds;
``/proc``'s per-thread ticks lose up to 10 ms per thread and sample); :func:`split` turns
two samples (and the exits between them) into seconds per group.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading
import time
from dataclasses import dataclass, field

__all__ = ["GROUPS", "ThreadSample", "gc_split", "group_of", "install", "sample", "split"]

_PR_SET_NAME = 15

#: Thread groups, in print order.
GROUPS = ("flow", "task workers", "prefect services", "rungflow threads", "other")

_lock = threading.Lock()
#: (kernel thread id, Python name, CPU seconds at exit) of threads that ended since install().
_exited: list[tuple[int, str, float]] = []
_installed = False
#: CPU seconds spent in garbage collections so far, by the group of the thread
#: that triggered them (a collection runs in whichever thread allocates).
_gc_seconds: dict[str, float] = {}
_gc_started = threading.local()
_main_tid = threading.main_thread().native_id


def group_of(name: str, tid: int) -> str:
    """The group of a thread by its Python name and kernel thread id.

    The flow runs on the main thread (a flow called as a function); Prefect's
    thread pool runs tasks on ``ThreadPoolExecutor-N_M`` threads; its services
    (``EventsWorkerThread``, ``APILogWorkerThread``, ``GlobalEventLoopThread``,
    ``RunSyncEventLoopThread``, the ephemeral API's ``uvicorn`` thread, ...)
    are named ``...Thread``; rungflow's are named ``rungflow-...``.
    """
    if tid == _main_tid:
        return "flow"
    if name.startswith("ThreadPoolExecutor"):
        return "task workers"
    if name.startswith("rungflow"):
        return "rungflow threads"
    if name.endswith("Thread") or "Worker" in name or "prefect" in name.lower():
        return "prefect services"
    return "other"


def _set_kernel_name(name: str) -> None:
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    libc = ctypes.CDLL(libc_name, use_errno=True)
    libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def install() -> None:
    """Name new threads in the kernel and record their CPU when they end. Idempotent."""
    global _installed
    if _installed:
        return
    _installed = True
    original = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def bootstrap(self: threading.Thread) -> None:
        _set_kernel_name(self.name)
        try:
            original(self)
        finally:
            cpu = time.thread_time()
            if self.native_id is not None:
                with _lock:
                    _exited.append((self.native_id, self.name, cpu))

    threading.Thread._bootstrap_inner = bootstrap  # type: ignore[attr-defined]
    gc.callbacks.append(_on_gc)


def _on_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_started.cpu = time.thread_time()
        return
    start = getattr(_gc_started, "cpu", None)
    if start is None:
        return
    thread = threading.current_thread()
    group = group_of(thread.name, thread.native_id or 0)
    with _lock:
        _gc_seconds[group] = _gc_seconds.get(group, 0.0) + time.thread_time() - start


@dataclass(frozen=True)
class ThreadSample:
    """This process's CPU seconds, every live Python thread's (name, CPU seconds)
    by kernel thread id, and how many threads had exited."""

    process: float
    threads: dict[int, tuple[str, float]] = field(default_factory=dict)
    exited_mark: int = 0
    gc_seconds: dict[str, float] = field(default_factory=dict)


def sample() -> ThreadSample:
    """Now: each live Python thread's CPU (nanosecond clocks, not /proc's ticks)."""
    with _lock:
        mark = len(_exited)  # first: a thread that ends after this is read live or lost
        collected = dict(_gc_seconds)
    threads: dict[int, tuple[str, float]] = {}
    for thread in threading.enumerate():
        if thread.ident is None or thread.native_id is None:
            continue
        try:
            cpu = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        except OSError:  # it ended since enumerate()
            continue
        # Keyed by the kernel's id: a pthread ident is reused at once by the next thread.
        threads[thread.native_id] = (thread.name, cpu)
    return ThreadSample(time.process_time(), threads, mark, collected)


def split(before: ThreadSample, after: ThreadSample) -> dict[str, float]:
    """CPU seconds per group between two samples.

    Threads that ended in between count up to their exit; threads that
    started count from zero. ``other`` is the rest of the process's CPU:
    threads Python did not start (a C library's), and threads' last
    instructions after they recorded their exit.
    """
    totals = dict.fromkeys(GROUPS, 0.0)
    with _lock:
        ended = _exited[before.exited_mark : after.exited_mark]
    rows = [(ident, name, cpu) for ident, (name, cpu) in after.threads.items()] + ended
    for tid, name, cpu in rows:
        start = before.threads.get(tid, (name, 0.0))[1]
        totals[group_of(name, tid)] += cpu - start
    totals["other"] += (after.process - before.process) - sum(totals.values())
    return totals


def gc_split(before: ThreadSample, after: ThreadSample) -> float:
    """CPU seconds of garbage collection between two samples (already counted
    in the groups of :func:`split`, in whichever thread triggered each)."""
    return sum(after.gc_seconds.values()) - sum(before.gc_seconds.values())
