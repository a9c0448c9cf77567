"""Owners, leases and claims: how several workers share one experiment safely.

Several ``tune`` flow runs (and job-API workers, see :mod:`flows.jobs`) may
work on one experiment at once, on one machine (SQLite) or many (PostgreSQL).
Three pieces keep them from running a segment twice or losing one:

* **Claims are events.** A segment belongs to the worker whose identity is in
  its ``SegmentStarted.info["owner"]`` (:class:`ClaimInfo`; or in the latest
  :class:`~schedulers.events.SegmentReclaimed` for it). Both are appended with
  optimistic concurrency after catching up with the log, so of two workers
  deciding at once exactly one wins; the other re-reads and decides again.
* **Leases are rows.** Each worker heartbeats a row of the ``leases`` table
  from a background thread (every ``timeout / 3`` seconds). Heartbeats do not
  go into the event log: N workers beating every few seconds would bloat the
  log every resume replays, and would make decisions lose their
  optimistic-concurrency race to a heartbeat.
* **Reclaim rule** (:func:`reclaim_reason`). A segment may be taken over when
  its owner released its lease without finishing it (it crashed with an
  exception, or its row was deleted), when its lease is older than the timeout
  (``RUNGFLOW_LEASE_TIMEOUT``, default 30 s, measured on the database clock),
  or, at once, when the owner ran on this very host (same hostname and boot)
  and its process no longer exists: the fast path that keeps ``kill -9`` and
  rerun on one machine instant. A late result from a worker whose segment was
  reclaimed is discarded, never appended.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flows.envsettings import EnvSettings, setting
from schedulers import (
    Event,
    SegmentFailed,
    SegmentFinished,
    SegmentReclaimed,
    SegmentStarted,
)
from storage import EventStore, LeaseRow

__all__ = [
    "Claim",
    "ClaimBook",
    "ClaimInfo",
    "Lease",
    "LeaseSettings",
    "Owner",
    "pid_alive",
    "reclaim_reason",
]

log = logging.getLogger("rungflow")


class LeaseSettings(EnvSettings):
    """Lease timing, from ``RUNGFLOW_LEASE_TIMEOUT`` and ``RUNGFLOW_POLL_INTERVAL``.

    Attributes:
        lease_timeout: Seconds without a heartbeat after which a worker's
            segments may be reclaimed by another worker. Heartbeats go every
            ``lease_timeout / 3`` seconds (at most 10 s).
        poll_interval: Longest pause, in seconds, between two looks at the log
            while a worker waits for other workers' results.
    """

    lease_timeout: float = setting(30.0, gt=0, le=86_400)
    poll_interval: float = setting(2.0, gt=0, le=600)
    #: Overrides the machine identity (``RUNGFLOW_WORKER_HOST``). Workers with
    #: the same identity trust each other's pids for the dead-process fast
    #: path; give each machine (or pid namespace) a distinct value if the
    #: default (hostname, boot id, pid namespace) cannot tell them apart.
    worker_host: str | None = setting(None, min_length=1, max_length=200)

    @property
    def heartbeat_interval(self) -> float:
        return max(0.05, min(self.lease_timeout / 3, 10.0))


def _machine() -> str:
    """Where pids mean the same thing: hostname, kernel boot id and pid namespace.

    The boot id tells apart two hosts with one name (and a host before and after
    a reboot); the pid namespace tells apart containers that share a host's
    name and kernel (``network_mode: host``) but not its process table, where a
    pid seen from one says nothing about the other.
    """
    parts = [socket.gethostname()]
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            parts.append(fh.read().strip()[:8])
        parts.append(os.readlink("/proc/self/ns/pid").strip("pid:[]"))
    except OSError:
        pass
    return "#".join(parts)


@dataclass(frozen=True)
class Owner:
    """Identity of one worker: ``host/pid/token``.

    The random token tells apart two workers in one process (a flow run retried
    in place, several job-API clients) and a pid reused after a crash.
    """

    host: str
    pid: int
    token: str

    @classmethod
    def current(cls, host: str | None = None) -> Owner:
        """A fresh identity for a worker in this process (``host`` overrides the machine)."""
        return cls(host or _machine(), os.getpid(), uuid.uuid4().hex[:12])

    @property
    def id(self) -> str:
        return f"{self.host}/{self.pid}/{self.token}"

    def __str__(self) -> str:
        return self.id


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a zombie counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat") as fh:
            # Field 3 is the state; a zombie has exited and only awaits its parent.
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def reclaim_reason(
    owner: str | None, lease: LeaseRow | None, me: Owner, timeout: float
) -> str | None:
    """Why a segment held by ``owner`` may be taken over by ``me``; None if it may not.

    Args:
        owner: Current owner of the open segment (None: written before owners
            were recorded, i.e. by a single runner that is gone).
        lease: The owner's lease row, if it still has one.
        me: The worker asking.
        timeout: Lease timeout in seconds.
    """
    if owner == me.id:
        return None
    if owner is None:
        return "segment has no owner"
    if lease is None:
        return "owner released its lease"
    if lease.host == me.host and lease.pid != me.pid and not pid_alive(lease.pid):
        return "owner process is gone"
    if lease.age > timeout:
        return f"lease expired ({lease.age:.1f} s > {timeout:g} s)"
    return None


@dataclass(frozen=True)
class ClaimInfo:
    """The keys of an event's ``info`` that claims and the job API fold, typed.

    Replaying a log rebuilds who holds which segment from these, so they are
    read and written only here. They are stored under the keys rungflow has
    always used (``info["source"]``, ``info["owner"]``), so every existing log
    reads the same; other ``info`` keys (a scheduler's decision record) pass
    through untouched.

    Attributes:
        source: Where a trial came from (``"job_api"`` for jobs added through
            :mod:`flows.jobs`); None for the scheduler's own trials.
        owner: The worker (``host/pid/token``) that claimed a segment; None
            for a segment started before owners were recorded.
    """

    source: str | None = None
    owner: str | None = None

    @classmethod
    def of(cls, info: Mapping[str, Any] | None) -> ClaimInfo:
        """Read the typed keys of ``info`` (missing keys are None)."""
        info = info or {}
        source, owner = info.get("source"), info.get("owner")
        return cls(None if source is None else str(source), None if owner is None else str(owner))

    def stamp(self, info: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``info`` with the fields that are set written into it (a new dict)."""
        out = dict(info or {})
        if self.source is not None:
            out["source"] = self.source
        if self.owner is not None:
            out["owner"] = self.owner
        return out


@dataclass(frozen=True)
class Claim:
    """An open segment and who holds it.

    Attributes:
        seq: Seq of the event that gave ``owner`` the segment (its
            ``SegmentStarted`` or latest ``SegmentReclaimed``). Checkpoint keys
            carry it, so a reclaimed segment never writes over the key a
            presumed-dead owner may still be writing.
    """

    trial_id: str
    start: float
    stop: float
    owner: str | None
    seq: int
    started: SegmentStarted


class ClaimBook:
    """Open segments by trial, folded from the log (the claim half of the state)."""

    def __init__(self) -> None:
        self.open: dict[str, Claim] = {}

    def fold(self, event: Event, seq: int) -> None:
        """Fold the event stored at ``seq``."""
        if isinstance(event, SegmentStarted):
            owner = ClaimInfo.of(event.info).owner
            self.open[event.trial_id] = Claim(
                event.trial_id, event.start, event.stop, owner, seq, event
            )
        elif isinstance(event, SegmentReclaimed):
            claim = self.open.get(event.trial_id)
            if claim is not None and (claim.start, claim.stop) == (event.start, event.stop):
                self.open[event.trial_id] = Claim(
                    claim.trial_id, claim.start, claim.stop, event.owner, seq, claim.started
                )
        elif isinstance(event, (SegmentFinished, SegmentFailed)):
            self.open.pop(event.trial_id, None)

    def owned_by(self, owner: str) -> list[Claim]:
        return [c for c in self.open.values() if c.owner == owner]

    def foreign(self, owner: str) -> list[Claim]:
        return [c for c in self.open.values() if c.owner != owner]

    def holds(self, owner: str, trial_id: str, start: float, stop: float, seq: int) -> bool:
        """Whether ``owner`` still holds exactly this claim (not a reclaimed copy of it)."""
        c = self.open.get(trial_id)
        return (
            c is not None and c.owner == owner and (c.start, c.stop) == (start, stop)
            and c.seq == seq
        )


def reclaims(
    claims: Iterable[Claim], leases: dict[str, LeaseRow], me: Owner, timeout: float,
    limit: int | None = None,
) -> list[SegmentReclaimed]:
    """The ``SegmentReclaimed`` events ``me`` may append for ``claims`` (oldest claim first)."""
    out: list[SegmentReclaimed] = []
    for c in sorted(claims, key=lambda c: c.seq):
        if limit is not None and len(out) >= limit:
            break
        reason = reclaim_reason(c.owner, leases.get(c.owner or ""), me, timeout)
        if reason is not None:
            out.append(SegmentReclaimed(c.trial_id, c.start, c.stop, me.id, c.owner, reason))
    return out


class Lease:
    """This worker's lease on one experiment, kept alive by a daemon thread.

    Args:
        store: The event store (thread-safe; the thread shares it).
        experiment: Experiment name.
        owner: This worker's identity.
        settings: Lease timing.
    """

    def __init__(
        self, store: EventStore, experiment: str, owner: Owner, settings: LeaseSettings
    ) -> None:
        self.store = store
        self.experiment = experiment
        self.owner = owner
        self.settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def held(self) -> bool:
        return self._thread is not None

    def acquire(self) -> None:
        """Register the lease row (before any claim) and start heartbeating. Idempotent."""
        with self._lock:
            if self._thread is not None:
                return
            self.store.register_lease(
                self.experiment, self.owner.id, self.owner.host, self.owner.pid
            )
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._beat, name=f"rungflow-lease-{self.owner.token}", daemon=True
            )
            self._thread.start()

    def _beat(self) -> None:
        interval = self.settings.heartbeat_interval
        while not self._stop.wait(interval):
            try:
                if not self.store.heartbeat(self.experiment, self.owner.id):
                    # Only deleting the experiment removes a live row; nothing
                    # is left to hold then, and re-creating it would leave litter.
                    log.info("lease of %s on %s is gone; heartbeat stops",
                             self.owner, self.experiment)
                    return
            except Exception as exc:  # the database may blip; the next beat retries
                log.warning("lease heartbeat for %s failed: %s", self.experiment, exc)

    def release(self) -> None:
        """Stop heartbeating and drop the row, so others reclaim leftovers at once."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._stop.set()
            thread.join(timeout=10)
            with contextlib.suppress(Exception):  # best effort: expiry covers a failure
                self.store.release_lease(self.experiment, self.owner.id)
