"""CPU accounting for benchmarks: this process, its Prefect server, the machine.

A Prefect task costs a few ms at the call site, but the API server that records
its task-run states spends several times that, in another process and often
seconds later. A benchmark that times only the client misses most of the cost,
so every figure here counts both, read from ``/proc``:

* the client: this process (all its threads), ``os.times()``;
* the server: the ephemeral API Prefect starts as a child of this process
  (its command line runs ``prefect.server``), or the pids named by
  ``RUNGFLOW_BENCH_SERVER_PIDS`` for a ``prefect server start`` elsewhere,
  with their live descendants. Other Prefect servers on the machine (other
  users, other benchmarks) are never counted.

:func:`drain` waits until the server has caught up (its CPU rate falls below
a threshold), so that one variant's backlog is not billed to the next.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "CpuSample",
    "descendants_cpu",
    "drain",
    "load_average",
    "sample",
    "server_pids",
    "spread",
    "tree_cpu",
]

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of ``pid``; None if it is gone.

    The CPU is its own (utime + stime) and that of its children it has waited
    for (cutime + cstime): a Ray worker the raylet reaped, a server's
    subprocess. Without them a process that exits mid-measurement takes its
    CPU out of the total (which could even fall). Live children are not in
    cutime, so a tree's sum counts nothing twice.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return ppid, (utime + stime + cutime + cstime) / _TICK


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _descendants(root: int) -> set[int]:
    parents = {pid: st[0] for pid in _all_pids() if (st := _stat(pid)) is not None}
    found = {root}
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in found and pid not in found:
                found.add(pid)
                changed = True
    return found - {root}


def server_pids(marker: str = "prefect.server") -> list[int]:
    """Pids of the Prefect API server(s) this benchmark talks to.

    The ephemeral server is a child of this process; a server started apart
    (``prefect server start`` with ``PREFECT_API_URL`` set) is named by
    ``RUNGFLOW_BENCH_SERVER_PIDS`` (comma-separated). Other Prefect servers on
    the machine are never counted.
    """
    given = os.environ.get("RUNGFLOW_BENCH_SERVER_PIDS")
    if given:
        return [int(p) for p in given.split(",") if p.strip()]
    return sorted(p for p in _descendants(os.getpid()) if marker in _cmdline(p))


def tree_cpu(roots: Iterable[int]) -> float:
    """CPU seconds of ``roots`` and all their live descendants (see :func:`_stat`)."""
    total = 0.0
    for root in roots:
        for pid in {root} | _descendants(root):
            st = _stat(pid)
            total += 0.0 if st is None else st[1]
    return total


def descendants_cpu() -> float:
    """CPU seconds of this process's other processes: live descendants and reaped children.

    For a system whose cost is spread over processes of its own (Prefect's
    ephemeral API, Ray's raylet, GCS and workers). A descendant that exits
    and is not waited for by this process or a live descendant takes its CPU with it.
    """
    t = os.times()
    live = 0.0
    for pid in _descendants(os.getpid()):
        st = _stat(pid)
        live += 0.0 if st is None else st[1]
    return t.children_user + t.children_system + live


@dataclass(frozen=True)
class CpuSample:
    """A point in time: wall clock, client CPU and server CPU (seconds)."""

    wall: float
    client: float
    server: float

    def __sub__(self, other: CpuSample) -> CpuSample:
        return CpuSample(
            self.wall - other.wall, self.client - other.client, self.server - other.server
        )


def sample(servers: Sequence[int] | None = None) -> CpuSample:
    """Now: wall time, this process's CPU, the Prefect servers' CPU."""
    t = os.times()
    pids = server_pids() if servers is None else servers
    return CpuSample(time.perf_counter(), t.user + t.system, tree_cpu(pids))


def drain(
    idle_fraction: float = 0.03,
    window: float = 1.0,
    timeout: float = 180.0,
    clock: Callable[[], float] = time.monotonic,
) -> float:
    """Wait until the Prefect servers use less than ``idle_fraction`` of a core.

    Returns the seconds waited. Polls once per ``window`` (a benchmark-side
    wait for a process we do not control: there is no event to wait on).
    """
    start = clock()
    pids = server_pids()
    last = tree_cpu(pids)
    while clock() - start < timeout:
        time.sleep(window)
        now = tree_cpu(pids)
        if now - last < idle_fraction * window:
            break
        last = now
    return clock() - start


def load_average() -> str:
    """``1.23 0.98 0.75`` (1, 5 and 15 minutes)."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    """``min / median / max`` of ``values``."""
    lo, mid, hi = min(values), statistics.median(values), max(values)
    return f"{fmt.format(lo)} / {fmt.format(mid)} / {fmt.format(hi)}"
