"""The experiment loop: replay the log, ask, record, run, record, repeat.

This module holds the loop's logic; :mod:`flows.tune` wraps it in a Prefect
flow and supplies a :class:`SegmentExecutor` backed by a Prefect task runner.

Write-ahead rule: every decision and every result is appended to the event
log *before* the flow acts on it, and the scheduler only learns of it by being
told the appended events. So a process killed at any instant leaves a log that
replays into exactly the state it had, and segments that were started but never
finished are simply run again.

Cooperation: several runners (flow runs on one or many machines) may drive the
same experiment. Each has an :class:`~flows.engine.leases.Owner` identity stamped into
the ``SegmentStarted`` it appends (its claim) and a heartbeated lease. Claims
are appended with optimistic concurrency after catching up, so no segment is
claimed twice; a runner runs and finishes only segments it holds, takes over
segments whose owner is dead (see :mod:`flows.engine.leases`), discards a result for
a segment it no longer holds, and while others still run segments it polls
the log instead of giving up. Whoever sees ``Done`` with no segment open
anywhere records ``ExperimentFinished``; everyone else then exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from flows.engine.forked_pickle import ForkedPickle
from flows.engine.gc_policy import HeapFreezer
from flows.engine.leases import (
    Claim,
    ClaimBook,
    ClaimInfo,
    Lease,
    LeaseSettings,
    Owner,
    reclaims,
)
from flows.engine.retention import CheckpointLedger
from flows.engine.segment import SegmentJob
from flows.engine.snapshots import runner_state_version
from flows.settings import read_settings
from flows.spec import ExperimentSpec, spec_differences
from flows.trainable import MetricNotReportedError, SegmentOutcome, final_metrics
from schedulers import (
    Action,
    Done,
    Event,
    ExperimentCreated,
    ExperimentFinished,
    RunSegment,
    Scheduler,
    SegmentFailed,
    SegmentFinished,
    SegmentReclaimed,
    SegmentStarted,
    Wait,
    action_events,
)
from storage import (
    ConcurrencyError,
    ConnectionDroppedError,
    EventStore,
    EventWriter,
    ExperimentExistsError,
    StoreUnavailableError,
)
from storage.snapshots import dumps, gc_paused, loads

__all__ = [
    "GC_FREEZE_EVENTS",
    "SNAPSHOT_EVERY_EVENTS",
    "SNAPSHOT_EVERY_SECONDS",
    "ExperimentRunner",
    "ResumeRefusedError",
    "RunSummary",
    "SegmentExecutor",
    "refused_resume",
    "runner_snapshot_version",
    "unfinished_segments",
]

log = logging.getLogger("rungflow")

#: A snapshot is saved after at least this many new events ...
SNAPSHOT_EVERY_EVENTS = 2000
#: ... and at least this many seconds since the last one.
SNAPSHOT_EVERY_SECONDS = 30.0
#: From this log length on, the heap is frozen after replay and during the run.
GC_FREEZE_EVENTS = 10_000


def runner_snapshot_version(spec: ExperimentSpec) -> str:
    """The :attr:`ExperimentRunner.snapshot_version` of a runner of ``spec``.

    What the folded state depends on besides the log: the scheduler's
    construction (a resume may change the budget) and the state's layout.
    Readers with the stored spec (status, retry) find the flow's snapshots.
    """
    return runner_state_version(spec.to_json())


class ResumeRefusedError(ValueError):
    """The spec given differs from the stored experiment in a way that matters."""


def refused_resume(name: str, differences: Sequence[str]) -> ResumeRefusedError:
    """The error for resuming ``name`` with a spec that differs by ``differences``."""
    return ResumeRefusedError(
        f"experiment {name!r} exists with a different spec; use a new name or the stored "
        "spec. Differences: " + "; ".join(differences)
    )


class SegmentExecutor(Protocol):
    """Runs segment jobs somewhere (threads, processes, Dask) and hands back results."""

    def submit(self, job: SegmentJob) -> Hashable:
        """Start ``job``; return a handle."""
        ...

    def wait_first(
        self, handles: Sequence[Hashable], timeout: float | None = None
    ) -> Hashable | None:
        """Block until one of ``handles`` is done and return it.

        Returns None when ``timeout`` seconds pass first; the runner then looks
        at other runners' progress in the meantime. Executors written before
        ``timeout`` existed (no such parameter) still work: they just block.
        """
        ...

    def result(self, handle: Hashable) -> SegmentOutcome:
        """The outcome of a done handle; raises what the segment raised."""
        ...


@dataclass
class RunSummary:
    """What a (possibly resumed) run did and where the experiment stands."""

    experiment: str
    state: str = "running"
    segments_run: int = 0
    segments_failed: int = 0
    resumed_segments: int = 0
    #: Segments taken over from dead runners (including those at resume).
    segments_reclaimed: int = 0
    #: Results dropped because another runner had reclaimed the segment meanwhile.
    segments_discarded: int = 0
    best_trial_id: str | None = None
    best_config: dict[str, Any] | None = None
    best_metric: float | None = None
    best_resource: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def unfinished_segments(events: Sequence[Event]) -> list[SegmentStarted]:
    """Segments started but neither finished nor failed.

    A crash interrupted them, or another runner is still running them: see
    :class:`flows.engine.leases.ClaimBook` for who holds each.
    """
    open_: dict[str, SegmentStarted] = {}
    for event in events:
        if isinstance(event, SegmentStarted):
            open_[event.trial_id] = event
        elif isinstance(event, (SegmentFinished, SegmentFailed)):
            open_.pop(event.trial_id, None)
    return list(open_.values())


class ExperimentRunner:
    """Drives one experiment from its event log, alone or with other runners.

    Args:
        store: The event store.
        spec: The validated spec; must match the stored one when resuming.
        checkpoint_root: Blob-store root (path or fsspec URL) workers write to.
        on_progress: Called after every recorded result (CLI progress, artifacts).
            Keep it cheap: it runs on the flow's hot path.
        owner: This runner's identity; a fresh one by default.
        lease_settings: Lease timeout and polling; from ``RUNGFLOW_*`` by default.
        synchronous_commit: PostgreSQL: False lets the runner's commits return
            before their WAL is on disk (the flow passes
            ``RUNGFLOW_PG_SYNCHRONOUS_COMMIT``; see :mod:`storage.pg_session`).
    """

    def __init__(
        self,
        store: EventStore,
        spec: ExperimentSpec,
        checkpoint_root: str,
        *,
        on_progress: Callable[[ExperimentRunner], None] | None = None,
        owner: Owner | None = None,
        lease_settings: LeaseSettings | None = None,
        keep_events: bool = False,
        snapshots: bool = True,
        synchronous_commit: bool = True,
    ) -> None:
        self.store = store
        self.spec = spec
        self.name = spec.name
        self.checkpoint_root = checkpoint_root
        self.on_progress = on_progress
        #: Every folded event, in order: only with ``keep_events`` (the job API
        #: folds views from it). The flow does not keep them: 10k trials are
        #: ~250k event objects, and snapshots let resume skip most of them.
        self.keep_events = keep_events
        self.events: list[Event] = []
        self.seq = 0
        self.summary = RunSummary(spec.name)
        self.lease_settings = lease_settings or read_settings(LeaseSettings)
        self.owner = owner or Owner.current(self.lease_settings.worker_host)
        self.lease = Lease(store, spec.name, self.owner, self.lease_settings)
        #: Snapshot policy: save after at least this many new events *and*
        #: seconds (at 10k trials a save is 45 ms of a core pickling, in a
        #: forked child, and 2.4 MB written: keep it rare).
        self.snapshots = snapshots and not keep_events
        self.snapshot_every_events = SNAPSHOT_EVERY_EVENTS
        self.snapshot_every_seconds = SNAPSHOT_EVERY_SECONDS
        self._snapshot_version = runner_snapshot_version(spec)
        self._snapshot_seq = 0
        self._snapshot_time = time.monotonic()
        #: Periodic snapshots are pickled by a forked child, off the flow
        #: thread (see :mod:`flows.engine.forked_pickle`); False: in place.
        self.snapshot_in_child = True
        self._pickling: ForkedPickle | None = None
        #: CPU seconds of the last fork and the last pickling (in place or in
        #: the child): the cheaper way is taken next (see _maybe_snapshot).
        self._fork_cost = self._pickle_cost = 0.0
        #: Snapshots this runner saved (tests wait on it instead of sleeping).
        self.snapshots_saved = 0
        self._last_scan = -float("inf")
        #: How many times this runner read the leases to judge foreign claims
        #: (tests wait on it instead of sleeping).
        self.lease_scans = 0
        self._decided: list[Action] = []
        #: The connection this runner's appends go through (see :meth:`transact`).
        self._writer: EventWriter | None = None
        #: False: on PostgreSQL, its commits do not wait for the WAL flush
        #: (``RUNGFLOW_PG_SYNCHRONOUS_COMMIT``, see :mod:`storage.pg_session`).
        self.synchronous_commit = synchronous_commit
        #: Transactions rolled back because another writer appended first.
        self.lost_races = 0
        #: Times a transaction found newer events and caught up inside it
        #: (under the lock: no rollback, nothing decided twice).
        self.caught_up_in_transaction = 0
        self._dropped = False
        #: Whether :meth:`replay` created the experiment (else it existed).
        self.created = False
        #: Keeps the collector's full passes off the loop once the state is big
        #: (see :mod:`flows.engine.gc_policy`): once the log is GC_FREEZE_EVENTS
        #: long, frozen after replay (snapshot or not) and every 1,000 events.
        self.heap = HeapFreezer()
        self._reset_state()

    @property
    def snapshot_version(self) -> str:
        """The version of this runner's snapshots: equal versions fold the same state."""
        return self._snapshot_version

    def _reset_state(self) -> None:
        """The fold's state before event 1 (everything a snapshot holds)."""
        self.scheduler: Scheduler = self.spec.build_scheduler()
        self.claims = ClaimBook()
        #: Checkpoints recorded by the log, for retention (a runner's fold, so
        #: that it is in the snapshot too).
        self.ledger = CheckpointLedger()
        #: Checkpoints recorded so far (retention's throttle counts them).
        self.n_checkpoints = 0
        self._metric_seen = False
        self._started_seq: dict[str, int] = {}
        self._finished_event: ExperimentFinished | None = None
        self.events = []
        self.seq = 0

    # ------------------------------------------------------------ open/replay
    def replay(self) -> None:
        """Create the experiment or bring the state up to the end of its log.

        Loads the latest snapshot this code can use (see
        :mod:`storage.snapshots`), then folds the log's tail; without a usable
        snapshot, folds the whole log. Either way the state is the fold of the
        whole log.

        Raises:
            ResumeRefusedError: the stored experiment was created with a spec
                that differs in space, trainable, scheduler or its arguments.
        """
        self.created = False
        if not self.store.has_experiment(self.name):
            # Another runner may create it between the check and here: join it.
            with contextlib.suppress(ExperimentExistsError):
                self.store.create_experiment(self.name, self.spec.to_json())
                self.created = True
        if not self.created:
            first = self.store.read(self.name, until_seq=1)[0].event
            assert isinstance(first, ExperimentCreated)
            diffs = spec_differences(first.spec, self.spec)
            if diffs:
                raise refused_resume(self.name, diffs)
        # Created just now: event 1 is this spec, and no snapshot can save
        # more than folding the few events others may have appended since.
        folded = self.restore(snapshot=not self.created)
        if self.seq >= GC_FREEZE_EVENTS:
            # What replay built lives as long as the run: keep the collector's
            # full passes from walking it again and again (pauses of tens of ms).
            self.heap.freeze()
        if self.snapshots and folded >= GC_FREEZE_EVENTS:
            # The next resume starts here. Not after a short tail: pickling
            # 10k trials costs about as much as folding 10k events, and would
            # delay the first segment; the loop's periodic snapshot follows.
            self.save_snapshot()

    def restore(self, snapshot: bool = True) -> int:
        """Fold the state from scratch: the latest usable snapshot (unless
        ``snapshot`` is False), then the log's tail (the whole log without a
        snapshot). Returns how many events were folded after the snapshot.
        Reads only; the experiment must exist.
        """
        with gc_paused():  # everything built here stays alive (see gc_paused)
            self._reset_state()
            if self.snapshots and snapshot:
                self._load_snapshot()
            start = self.seq
            self.catch_up()
        return self.seq - start

    def open(self) -> list[SegmentStarted]:
        """Create or replay the experiment; return the segments this runner must run again.

        Takes a lease, then takes over (up to ``max_concurrency``) open segments
        whose owners are dead; segments held by live runners are left to them.

        Raises:
            ResumeRefusedError: see :meth:`replay`.
        """
        self.replay()
        if self.scheduler.finished:
            self.summary.state = "finished"
            self._update_best()
            return []
        if not self.created:  # a new experiment is created running
            self.store.set_state(self.name, "running")
        self.lease.acquire()  # before any claim: a claim without a lease looks released
        taken = self.reclaim(limit=self.spec.max_concurrency, force=True)
        self.summary.resumed_segments = len(taken)
        if taken:
            log.info("resuming %s: %d unfinished segment(s) run again", self.name, len(taken))
        return [c.started for c in taken]

    def close(self) -> None:
        """Release the lease and the writer's connection (``run`` does this itself)."""
        self.lease.release()
        self._close_writer()
        self._cancel_snapshot()

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def _fold(self, event: Event, seq: int) -> None:
        if seq >= GC_FREEZE_EVENTS:
            self.heap.tick()
        if self.keep_events:
            self.events.append(event)
        self.scheduler.tell(event)
        self.claims.fold(event, seq)
        self.ledger.tell(event)
        if isinstance(event, SegmentStarted):
            self._started_seq[event.trial_id] = seq
        elif isinstance(event, SegmentReclaimed):
            claim = self.claims.open.get(event.trial_id)
            if claim is not None and claim.seq == seq:
                self._started_seq[event.trial_id] = seq
        elif isinstance(event, SegmentFinished):
            if event.checkpoint is not None:
                self.n_checkpoints += 1
            if self.spec.metric in event.metrics:
                self._metric_seen = True
        elif isinstance(event, ExperimentFinished):
            self._finished_event = event
        elif event.kind == "TrialRetried":
            self._finished_event = None  # a retry reopens a finished experiment
        self.seq = seq

    def catch_up(self) -> None:
        """Fold whatever other writers appended since our last seq."""
        for record in self.store.read(self.name, after_seq=self.seq):
            self._fold(record.event, record.seq)

    _catch_up = catch_up

    # -------------------------------------------------------------- snapshots
    def _snapshot_state(self) -> dict[str, Any]:
        # Only builtins and scheduler classes: what storage.snapshots may load.
        return {
            "scheduler": self.scheduler,
            "claims": [
                (c.trial_id, c.start, c.stop, c.owner, c.seq, c.started)
                for c in self.claims.open.values()
            ],
            "ledger_order": self.ledger.order,
            "ledger_open": self.ledger.open_restores,
            "n_checkpoints": self.n_checkpoints,
            "metric_seen": self._metric_seen,
            "started_seq": self._started_seq,
            "finished_event": self._finished_event,
        }

    def _restore_state(self, state: dict[str, Any]) -> None:
        scheduler = state["scheduler"]
        if type(scheduler) is not type(self.scheduler):
            raise TypeError(f"snapshot holds a {type(scheduler).__name__}")
        self.scheduler = scheduler
        self.claims = ClaimBook()
        for trial_id, start, stop, owner, seq, started in state["claims"]:
            self.claims.open[trial_id] = Claim(trial_id, start, stop, owner, seq, started)
        self.ledger = CheckpointLedger(
            order=dict(state["ledger_order"]), open_restores=dict(state["ledger_open"])
        )
        self.n_checkpoints = int(state["n_checkpoints"])
        self._metric_seen = bool(state["metric_seen"])
        self._started_seq = dict(state["started_seq"])
        self._finished_event = state["finished_event"]

    def _load_snapshot(self) -> None:
        try:
            snap = self.store.load_snapshot(self.name, self._snapshot_version)
            if snap is None:
                return
            self._restore_state(loads(snap.state))
            self.seq = self._snapshot_seq = snap.seq
        except Exception as exc:  # a cache: whatever is wrong with it, fold the log
            log.warning("%s: snapshot not used (%s: %s); replaying the whole log",
                        self.name, type(exc).__name__, exc)
            self._reset_state()

    def save_snapshot(self) -> bool:
        """Save the folded state at :attr:`seq` (see :mod:`storage.snapshots`).

        Never fails the run: a snapshot is a cache, and an error only costs
        the next resume a longer replay.
        """
        self._snapshot_time = time.monotonic()
        began = time.thread_time()
        try:
            state = dumps(self._snapshot_state())
            self._pickle_cost = time.thread_time() - began
        except Exception as exc:
            log.warning("%s: snapshot at seq %d not saved (%s: %s)",
                        self.name, self.seq, type(exc).__name__, exc)
            return False
        return self._save_snapshot(self.seq, state)

    def _save_snapshot(self, seq: int, state: bytes) -> bool:
        # Also called on the ForkedPickle's thread: the store's engine is
        # thread-safe, and the flow thread only reads _snapshot_seq meanwhile.
        try:
            saved = self.store.save_snapshot(self.name, seq, self._snapshot_version, state)
        except Exception as exc:
            log.warning("%s: snapshot at seq %d not saved (%s: %s)",
                        self.name, seq, type(exc).__name__, exc)
            return False
        self._snapshot_seq = max(self._snapshot_seq, seq)
        self.snapshots_saved += saved
        return saved

    def _maybe_snapshot(self) -> None:
        """After each commit: start a snapshot when one is due.

        Due after at least :attr:`snapshot_every_events` new events *and*
        :attr:`snapshot_every_seconds`, and once the previous one is saved.
        """
        if (
            self.snapshots
            and self.seq - self._snapshot_seq >= self.snapshot_every_events
            and time.monotonic() - self._snapshot_time >= self.snapshot_every_seconds
            and (self._pickling is None or not self._pickling.running)
        ):
            self._snapshot_time = time.monotonic()
            # The seq is committed (transact succeeded): the child pickles exactly
            # the fold of log[1..seq], whatever the flow folds meanwhile.
            last, self._pickling = self._pickling, None
            if last is not None:
                self._fork_cost = last.fork_seconds
                if last.pickle_seconds is not None:
                    self._pickle_cost = last.pickle_seconds
            # Fork while that costs the flow thread less than pickling did: not
            # for a small state, nor in a process holding far more than the
            # state (a model trained in a thread), whose page tables take longer.
            if self.snapshot_in_child and self._fork_cost <= self._pickle_cost:
                self._pickling = ForkedPickle.start(
                    self._snapshot_state(), self.seq, self._save_snapshot
                )
            if self._pickling is None:
                self.save_snapshot()

    def _cancel_snapshot(self) -> None:
        if self._pickling is not None:
            self._pickling.cancel()
            self._pickling = None

    # ---------------------------------------------------------------- commits
    def commit(self, events: Sequence[Event]) -> bool:
        """Append ``events`` atomically, then tell them; False if another writer won.

        On a conflict the runner catches up with the other writer's events; the
        caller then decides again from the new state.
        """
        try:
            self.transact(events)
        except ConcurrencyError:
            self.catch_up()
            return False
        return True

    def writer(self) -> EventWriter:
        """The writer holding this runner's connection for its appends (opened on first use)."""
        if self._writer is None:
            self._writer = self.store.writer(synchronous_commit=self.synchronous_commit)
        return self._writer

    def transact(
        self,
        facts: Sequence[Event],
        runs: int | None = None,
        valid: Callable[[], bool] | None = None,
    ) -> list[Action] | None:
        """Append ``facts``, then (unless ``runs`` is None) the scheduler's
        decisions on the new state, in ONE transaction; return the decisions.

        All of it goes through the connection the runner holds (:meth:`writer`).
        Each batch is folded as soon as it is decided, so the next ``ask``
        sees it, and everything is written with one INSERT at the end; should
        the transaction fail, the state is rebuilt from the log (it holds none
        of this), so state and log never disagree. Decisions stop at
        ``Wait``, at ``Done`` while segments are open (anywhere), after
        ``Done``, and before a ``RunSegment`` beyond ``runs``. See
        :func:`flows.engine.commit.decide_and_commit`.

        Every transaction first takes the experiment's write lock (on
        PostgreSQL an advisory lock sent with ``BEGIN``, no round trip of its
        own; SQLite's write transactions hold it anyway), then reads the
        events others appended since :attr:`seq`. If there are any, they are
        folded and, when ``valid`` allows (facts) or there are no facts
        (decisions only), the runner decides again, in the same transaction:
        no writer that takes the lock can append meanwhile, so lost races
        between runners become that one read. (Taking the lock only once
        another runner shows up left a window: a runner that had not noticed
        yet kept writing unlocked, and the locked ones kept losing to it.)

        Returns:
            The decisions appended; None if ``valid`` said no after a catch-up
            (nothing written).

        Raises:
            ConcurrencyError: another writer appended first; nothing was written
                (catch up and decide again). Also once after the database
                dropped the connection: the state was re-read from the log,
                and the caller decides again on it.
        """
        try:
            actions = self._transact(facts, runs, valid)
        except ConnectionDroppedError:
            if self._dropped:
                raise  # twice in a row: the database is really gone
            self._dropped = True
            self._reload(why="the database dropped the connection")
            raise ConcurrencyError(self.name, self.seq, self.seq) from None
        except ConcurrencyError:
            self.lost_races += 1
            raise
        self._dropped = False
        self._maybe_snapshot()
        return actions

    def _transact(
        self,
        facts: Sequence[Event],
        runs: int | None,
        valid: Callable[[], bool] | None,
    ) -> list[Action] | None:
        actions: list[Action] = []
        told = False
        # The first batch is decided before the lock is taken (it is held for
        # the transaction only); nothing to append, no transaction at all.
        first, action = self._first_batch(facts, runs)
        if not first:
            return actions
        try:
            with self.writer().transaction(self.name, self.seq, lock=True) as tx:
                # Under the lock, read what others appended since our seq
                # (usually nothing): the one statement that tells whether the
                # first batch still stands, instead of an INSERT that fails.
                newer = tx.catch_up()
                if newer:
                    # Fold their (committed) events, then decide again on the
                    # new state, still in this transaction: nobody who takes
                    # the lock can append meanwhile.
                    self.caught_up_in_transaction += 1
                    for record in newer:
                        self._fold(record.event, record.seq)
                    if facts and valid is None:
                        raise ConcurrencyError(self.name, self.seq - len(newer), self.seq)
                    if valid is not None and not valid():
                        return None
                    first, action = self._first_batch(facts, runs)
                    if not first:
                        return actions
                # Each batch is folded at once (the next ask must see it), and
                # all of them go to the database as one INSERT at the end: the
                # same rows with the same seqs in the same transaction. Should
                # it fail (a writer that does not take the lock got there
                # first), the state is re-read from the log below.
                batch = list(first)
                self._tell(first, tx.seq + 1)
                told = True
                taken = 0
                if action is not None:
                    actions.append(action)
                    taken += isinstance(action, RunSegment)
                while not isinstance(action, Done) and (
                    action := self._next_decision(runs, taken)
                ) is not None:
                    events = self.claim_events(action_events(action))
                    self._tell(events, tx.seq + len(batch) + 1)
                    batch.extend(events)
                    actions.append(action)
                    taken += isinstance(action, RunSegment)
                tx.append(batch)
        except BaseException:
            if told:
                self._reload()
            raise
        return actions

    def _first_batch(
        self, facts: Sequence[Event], runs: int | None
    ) -> tuple[Sequence[Event], Action | None]:
        """What a transaction appends first: the facts, else the first decision's events."""
        if facts:
            return facts, None
        action = self._next_decision(runs, 0)
        if action is None:
            return (), None
        return self.claim_events(action_events(action)), action

    def _next_decision(self, runs: int | None, taken: int) -> Action | None:
        """The scheduler's next decision to append, or None to stop deciding (see transact)."""
        if runs is None or self.scheduler.finished:
            return None
        action = self.scheduler.ask(1)[0]
        if isinstance(action, Wait) or (isinstance(action, Done) and self.claims.open):
            return None
        if isinstance(action, RunSegment) and taken >= runs:
            return None
        return action

    def _tell(self, events: Sequence[Event], first: int) -> None:
        for offset, event in enumerate(events):
            self._fold(event, first + offset)

    def _reload(self, why: str = "a write failed after its events were folded") -> None:
        """Rebuild the state from the store after a transaction that folded
        events failed to commit (snapshot + tail, like a resume)."""
        log.warning("%s: %s; re-reading the log", self.name, why)
        self.restore()

    def claim_events(self, events: Sequence[Event]) -> list[Event]:
        """``events`` with this runner stamped as owner of every ``SegmentStarted``."""
        return [
            dataclasses.replace(e, info=ClaimInfo(owner=self.owner.id).stamp(e.info))
            if isinstance(e, SegmentStarted)
            else e
            for e in events
        ]

    def reclaim(self, limit: int | None = None, *, force: bool = False) -> list[Any]:
        """Take over open segments of dead owners; return the claims now held.

        Looks at the leases at most once per poll interval unless ``force``:
        with many runners, every one of them reading the lease table after
        every result would cost more than it finds.
        """
        if limit is not None and limit <= 0:
            return []
        now = time.monotonic()
        if not force and now - self._last_scan < self.lease_settings.poll_interval:
            return []
        self._last_scan = now
        while True:
            foreign = self.claims.foreign(self.owner.id)
            if not foreign:
                return []
            leases = self.store.leases(self.name)
            self.lease_scans += 1
            events = reclaims(
                foreign, leases, self.owner, self.lease_settings.lease_timeout, limit
            )
            if not events:
                return []
            if self.commit(events):
                for e in events:
                    log.info(
                        "%s: took over trial %s segment %g->%g from %s (%s)",
                        self.name, e.trial_id, e.start, e.stop, e.previous_owner, e.reason,
                    )
                self.summary.segments_reclaimed += len(events)
                return [self.claims.open[e.trial_id] for e in events]
            # Lost a race (maybe for the same segments): re-check on the new state.

    def _record_result(self, job: SegmentJob, event: Event, runs: int | None = None) -> bool:
        """Append a result of ``job`` if this runner still holds its segment.

        A result is a fact, not a decision: on a conflict catch up and append
        it again, unless the catch-up shows the segment was reclaimed by
        another runner (our lease lapsed); then the result is discarded. The
        check and the append see the same seq, so no reclaim can slip between.
        With ``runs``, the decisions the result triggers commit with it (see
        :meth:`transact`); they are in :attr:`_decided` afterwards.
        """
        from flows.engine.commit import decide_and_commit

        def holds() -> bool:
            return self.claims.holds(
                self.owner.id, job.trial_id, job.start, job.stop, job.started_seq
            )

        done = decide_and_commit(self, [event], runs=runs, valid=holds)
        self._decided = done.actions
        if not done.recorded:
            holder = self.claims.open.get(job.trial_id)
            log.warning(
                "%s: discarding the result of trial %s segment %g->%g: it is now held by %s",
                self.name, job.trial_id, job.start, job.stop,
                None if holder is None else holder.owner,
            )
            self.summary.segments_discarded += 1
        return done.recorded

    # ------------------------------------------------------------------- run
    def job_for(
        self, trial_id: str, config: Any, start: float, stop: float, restore: Any
    ) -> SegmentJob:
        return SegmentJob(
            experiment=self.name,
            trainable=self.spec.trainable,
            metric=self.spec.metric,
            trial_id=trial_id,
            config=dict(config),
            start=start,
            stop=stop,
            restore_from=restore,
            checkpoint_root=self.checkpoint_root,
            trainable_args=dict(self.spec.trainable_args),
            started_seq=self._started_seq[trial_id],
        )

    def run(self, executor: SegmentExecutor) -> RunSummary:
        """Run until the experiment is finished. Safe on a resumed experiment and
        alongside other runners of the same experiment."""
        try:
            orphans = self.open()
            if self.summary.state == "finished":
                return self.summary
            self._loop(executor, orphans)
        finally:
            self.lease.release()
            self._close_writer()
            self.heap.release()
            self._cancel_snapshot()  # the one below is newer
            if self.snapshots and self.seq > self._snapshot_seq:
                self.save_snapshot()  # where the next resume, status or artifacts start
        self.summary.state = "finished"
        self._update_best()
        return self.summary

    def _submit(self, executor: SegmentExecutor, pending: dict[Hashable, SegmentJob],
                trial_id: str, config: Any, start: float, stop: float, restore: Any) -> None:
        job = self.job_for(trial_id, config, start, stop, restore)
        pending[executor.submit(job)] = job

    def _loop(self, executor: SegmentExecutor, orphans: Sequence[SegmentStarted]) -> None:
        pending: dict[Hashable, SegmentJob] = {}
        for seg in orphans:
            self._submit(executor, pending, seg.trial_id, seg.config, seg.start, seg.stop,
                         seg.restore_from)
        timeout_ok = _accepts_timeout(executor)
        poll = self.lease_settings.poll_interval
        idle = _Backoff(0.05, poll)
        while True:
            free = self.spec.max_concurrency - len(pending)
            # Dead runners' segments first: the scheduler counts them as running.
            for claim in self.reclaim(limit=free, force=not pending):
                s = claim.started
                self._submit(executor, pending, s.trial_id, s.config, s.start, s.stop,
                             s.restore_from)
            self._decide(executor, pending)
            if not pending:
                if self.scheduler.finished:
                    return
                if not self.claims.open:
                    self._catch_up()
                    if self.scheduler.finished or self.claims.open:
                        continue
                    raise RuntimeError(
                        f"scheduler {self.spec.scheduler!r} is waiting with nothing running"
                    )
                # Other runners hold every open segment: wait for their results
                # (or their death), looking at the log less often the longer it is quiet.
                time.sleep(idle.next())
                self._catch_up()
                continue
            if timeout_ok:
                handle = executor.wait_first(list(pending), timeout=poll)
            else:
                handle = executor.wait_first(list(pending))
            if handle is None:
                self._catch_up()  # others may have made work available meanwhile
                continue
            idle.reset()
            job = pending.pop(handle)
            self._finish(job, executor, handle, pending)

    def _decide(self, executor: SegmentExecutor, pending: dict[Hashable, SegmentJob]) -> None:
        """Ask and claim until the slots are full or the scheduler has nothing now."""
        from flows.engine.commit import decide_and_commit

        if self.scheduler.finished or len(pending) >= self.spec.max_concurrency:
            return
        done = decide_and_commit(self, runs=self.spec.max_concurrency - len(pending))
        self._start(executor, pending, done.actions)

    def _start(self, executor: SegmentExecutor, pending: dict[Hashable, SegmentJob],
               actions: Sequence[Action]) -> None:
        for action in actions:
            if isinstance(action, RunSegment):
                self._submit(executor, pending, action.trial_id, action.config, action.start,
                             action.stop, action.restore_from)

    def _finish(self, job: SegmentJob, executor: SegmentExecutor, handle: Hashable,
                pending: dict[Hashable, SegmentJob] | None = None) -> None:
        # The result and the decisions it triggers commit in one transaction,
        # unless dead runners' segments are due a look first (see _loop).
        runs = None
        if pending is not None and not self._reclaim_due():
            runs = self.spec.max_concurrency - len(pending)
        self._decided = []
        try:
            outcome = executor.result(handle)
        except MetricNotReportedError as exc:
            self._fail(job, str(exc), None)
            if not self._metric_seen:
                # Every later segment would fail the same way: stop now, say why.
                self.store.set_state(self.name, "failed")
                raise
        except StoreUnavailableError:
            # Disk full, store read-only or gone: not the trial's fault. Stop with the
            # segment un-finished (no SegmentFailed), so a resume runs it again.
            raise
        except Exception as exc:  # a trainable may raise anything; it fails its trial only
            self._fail(job, f"{type(exc).__name__}: {exc}", runs)
        else:
            recorded = self._record_result(
                job,
                SegmentFinished(
                    job.trial_id,
                    job.start,
                    job.stop,
                    reports=outcome.reports,
                    metrics=final_metrics(outcome.reports),
                    checkpoint=outcome.checkpoint,
                ),
                runs,
            )
            if recorded:
                self.summary.segments_run += 1
        if pending is not None:
            self._start(executor, pending, self._decided)
        if self.on_progress is not None:
            self.on_progress(self)

    def _reclaim_due(self) -> bool:
        return bool(self.claims.foreign(self.owner.id)) and (
            time.monotonic() - self._last_scan >= self.lease_settings.poll_interval
        )

    def _fail(self, job: SegmentJob, error: str, runs: int | None = None) -> None:
        log.warning("trial %s segment %g->%g failed: %s", job.trial_id, job.start, job.stop, error)
        recorded = self._record_result(
            job,
            SegmentFailed(
                job.trial_id,
                job.start,
                job.stop,
                error=error[:2000],
                attempts=self.spec.segment_retries + 1,
            ),
            runs,
        )
        if recorded:
            self.summary.segments_failed += 1

    def _update_best(self) -> None:
        best = self.scheduler.best_trial()
        if best is None:
            return
        self.summary.best_trial_id = best.trial_id
        self.summary.best_config = dict(best.config)
        self.summary.best_resource = best.resource
        score = best.last_score
        if score is not None:
            self.summary.best_metric = score if self.spec.mode == "min" else -score
        self.summary.extras = self.scheduler.status_extras()

    @property
    def finished_event(self) -> ExperimentFinished | None:
        """The ``ExperimentFinished`` in force (None if none, or a retry reopened it)."""
        return self._finished_event


def _accepts_timeout(executor: SegmentExecutor) -> bool:
    try:
        return "timeout" in inspect.signature(executor.wait_first).parameters
    except (TypeError, ValueError):
        return False


class _Backoff:
    """Sleep lengths that double from ``low`` up to ``high`` until reset."""

    def __init__(self, low: float, high: float) -> None:
        self.low = low
        self.high = max(low, high)
        self._next = low

    def next(self) -> float:
        value = self._next
        self._next = min(self.high, self._next * 2)
        return value

    def reset(self) -> None:
        self._next = self.low
