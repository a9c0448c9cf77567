"""A Schedy-style job API on the event log, for users who drive workers themselves.

A worker loop looks like Schedy's::

    from flows.jobs import Experiment, NoJobError

    exp = Experiment.open("digits-hb", "postgresql+psycopg://host/db")
    while True:
        try:
            job = exp.next_job(timeout=60)      # atomic: no two workers get one job
        except NoJobError as exc:
            if exc.retry_later:
                continue                        # others still run; more may come
            break                               # the experiment is finished
        with job:                               # DONE on success, FAILED on error
            model = train(job.hyperparameters, job.start, job.stop, job.load_checkpoint())
            job.results["error"] = evaluate(model)
            job.save_checkpoint(pickle.dumps(model))

Mapping onto rungflow (so jobs show up in ``rungflow status``, artifacts and
schedulers, and cooperate with ``tune`` flow runs on the same experiment):

* **A job is a trial**; ``job_id`` is its trial id. Its current work is one
  segment ``start -> stop`` (for HyperBand a rung, for PBT an interval).
* ``next_job`` hands out, in this order: a segment whose worker died (its
  lease expired or it released it, see :mod:`flows.engine.leases`), a job added with
  ``add_job`` and still ``QUEUED``, or whatever the experiment's scheduler
  decides next (so a worker loop drives HyperBand, ASHA, PBT or DyHPO). The
  claim is a ``SegmentStarted`` stamped with this client's owner identity and
  appended with optimistic concurrency, so two workers never get one job.
* Job status: ``QUEUED`` (created, never run), ``RUNNING`` (a segment is
  open), ``DONE`` (its last segment finished; a scheduler may promote or
  continue it later, which makes it ``RUNNING`` again), ``FAILED``.
* ``job.put()`` with status ``DONE`` records ``SegmentFinished`` with the
  results as metrics; ``FAILED`` records ``SegmentFailed``; ``RUNNING``
  records the results so far as a ``JobUpdated`` progress note. Only the
  client holding the job may do so: a client whose job was reclaimed gets
  :class:`JobNotHeldError`, and nothing is appended.
* When nothing is runnable, ``next_job`` raises :class:`NoJobError`;
  ``retry_later`` tells a worker whether to ask again (jobs still run, or the
  experiment is not finished) or stop (finished). ``next_job(timeout=s)``
  polls for up to ``s`` seconds before raising.
* Experiments without a scheduler (Schedy's base ``Experiment``): create them
  with :meth:`Experiment.manual`; only added jobs are handed out, and the
  experiment is finished when a client sets ``status = DONE`` and calls
  :meth:`Experiment.push_updates`.

Jobs added to a scheduler's experiment count towards ``budget.max_trials``.
HyperBand and ASHA ignore them (they belong to no bracket) but never finish the
experiment while one runs; PBT makes them members of its population; DyHPO
can promote them. ``pbt_replay`` replays a fixed policy and refuses them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Self

from flows.engine.commit import decide_and_commit
from flows.engine.leases import ClaimInfo, LeaseSettings
from flows.engine.runner import ExperimentRunner, _Backoff
from flows.settings import get_settings
from flows.spec import ExperimentSpec, stored_spec
from schedulers import (
    CheckpointRef,
    Event,
    ExperimentCreated,
    ExperimentFinished,
    JobUpdated,
    RunSegment,
    SegmentFailed,
    SegmentFinished,
    SegmentStarted,
    TrialCreated,
    TrialStopped,
)
from schedulers.base import Scheduler
from schedulers.events import segment_key
from storage import CheckpointStore, EventStore, ExperimentNotFoundError

__all__ = [
    "DONE",
    "FAILED",
    "MANUAL_TRAINABLE",
    "QUEUED",
    "RUNNING",
    "Experiment",
    "Job",
    "JobNotFoundError",
    "JobNotHeldError",
    "NoJobError",
    "manual_spec",
]

log = logging.getLogger("rungflow")

QUEUED = "QUEUED"
RUNNING = "RUNNING"
DONE = "DONE"
FAILED = "FAILED"
JOB_STATES = (QUEUED, RUNNING, DONE, FAILED)

#: Trainable name of experiments whose work is only the jobs users add.
MANUAL_TRAINABLE = "job-api"
#: ``TrialCreated.info["source"]`` of jobs added through this API.
SOURCE = "job_api"
#: Space of a manual experiment created without one (a spec needs a parameter).
_PLACEHOLDER_SPACE = {"job": {"type": "categorical", "choices": ["manual"]}}
#: Schedulers that cannot take trials they did not create.
_REFUSE_ADDED_JOBS = {"pbt_replay": "it replays a recorded PBT policy of its own trials"}


class NoJobError(LookupError):
    """Nothing can be handed out now.

    Attributes:
        retry_later: False when the experiment is finished (stop asking);
            True when jobs still run elsewhere or more may be added or decided.
    """

    def __init__(self, message: str, *, retry_later: bool) -> None:
        super().__init__(message)
        self.retry_later = retry_later


class JobNotFoundError(LookupError):
    """No job with that id in the experiment."""


class JobNotHeldError(RuntimeError):
    """This client does not hold the job (never claimed it, or it was reclaimed)."""


def manual_spec(
    name: str, *, metric: str = "loss", mode: str = "min", space: Mapping[str, Any] | None = None
) -> ExperimentSpec:
    """The spec of a scheduler-less experiment (jobs come only from ``add_job``).

    It is a valid spec, so ``rungflow status`` and artifacts read it; its
    trainable :data:`MANUAL_TRAINABLE` marks it, and no scheduler is consulted.
    A spec needs a non-empty space; without one a single-valued placeholder
    parameter stands in (jobs of a manual experiment may carry any
    hyperparameters, and are not checked against the space).
    """
    return ExperimentSpec.model_validate(
        {
            "name": name,
            "trainable": MANUAL_TRAINABLE,
            "metric": metric,
            "mode": mode,
            "space": dict(space or _PLACEHOLDER_SPACE),
            "scheduler": "random",
            "scheduler_args": {"max_t": 1},
            "budget": {"max_trials": 1_000_000},
        },
        context={"check_trainable": False},
    )


def _first_stop(scheduler: Scheduler, resource: float = 0.0) -> float:
    """Where a job added by hand trains to first: the scheduler's next rung if it has one."""
    for name in ("next_boundary", "next_level"):
        fn = getattr(scheduler, name, None)
        if callable(fn):
            return float(fn(resource))
    max_t = getattr(scheduler, "max_t", None)
    if isinstance(max_t, (int, float)) and not isinstance(max_t, bool) and max_t > resource:
        return float(max_t)
    return resource + 1.0


def _json_dict(name: str, value: Mapping[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} is {type(value).__name__}, but must be a mapping")
    out = {str(k): v for k, v in value.items()}
    try:
        json.dumps(out, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must hold plain JSON values: {exc}") from None
    return out


@dataclass
class _JobView:
    """What the log says about one job (trial)."""

    job_id: str
    source: str | None
    ever_started: bool = False
    results: dict[str, Any] = field(default_factory=dict)
    last_segment: SegmentStarted | None = None
    error: str | None = None


@dataclass(eq=False)
class Job:
    """One job: a trial and its current segment. Change ``status``/``results``, then :meth:`put`.

    Attributes:
        job_id: The trial id.
        hyperparameters: The trial's current config (PBT may change it between segments).
        status: ``QUEUED``, ``RUNNING``, ``DONE`` or ``FAILED``.
        results: Results to push; the last pushed or recorded ones when fetched.
        start: Resource the current (or last) segment starts from.
        stop: Resource it trains to.
        restore_from: Checkpoint to restore first (own, or a PBT donor's).
        owner: Identity of the client that holds the running segment.
        error: Message recorded with ``FAILED``.
    """

    QUEUED: ClassVar[str] = QUEUED
    RUNNING: ClassVar[str] = RUNNING
    DONE: ClassVar[str] = DONE
    FAILED: ClassVar[str] = FAILED

    experiment: Experiment = field(repr=False)
    job_id: str
    hyperparameters: dict[str, Any]
    status: str
    results: dict[str, Any]
    start: float = 0.0
    stop: float = 0.0
    restore_from: CheckpointRef | None = None
    owner: str | None = None
    error: str | None = None
    _claim_seq: int = field(default=0, repr=False)
    _checkpoint: CheckpointRef | None = field(default=None, repr=False)

    @property
    def trial_id(self) -> str:
        return self.job_id

    def put(self) -> None:
        """Push ``status`` and ``results`` to the log (Schedy's ``put``/``push_updates``).

        Raises:
            JobNotHeldError: this client does not hold the running job.
            ValueError: an impossible transition (e.g. back to ``QUEUED``).
        """
        self.experiment._push_job(self)

    push_updates = put

    def update(
        self, *, status: str | None = None, results: Mapping[str, Any] | None = None
    ) -> None:
        """Merge ``results``, set ``status`` if given, and :meth:`put`."""
        if results:
            self.results.update(_json_dict("results", results))
        if status is not None:
            self.status = status
        self.put()

    def pull(self) -> None:
        """Refresh every field from the log."""
        fresh = self.experiment.get_job(self.job_id)
        for name in ("hyperparameters", "status", "results", "start", "stop", "restore_from",
                     "owner", "error", "_claim_seq"):
            setattr(self, name, getattr(fresh, name))

    def load_checkpoint(self) -> bytes | None:
        """Bytes of :attr:`restore_from` (checked against its sha256), or None."""
        if self.restore_from is None:
            return None
        return self.experiment._checkpoints().get(self.restore_from)

    def save_checkpoint(self, data: bytes) -> CheckpointRef:
        """Store ``data`` as this segment's checkpoint; it is recorded with ``DONE``."""
        name = f"{segment_key(self.start, self.stop)}.s{self._claim_seq}"
        ref = self.experiment._checkpoints().put(
            self.experiment.name, self.job_id, name, data, self.stop
        )
        self._checkpoint = ref
        return ref

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.status != RUNNING:
            return  # the body already pushed a final status
        if exc is None:
            self.status = DONE
        else:
            self.status = FAILED
            self.error = f"{type(exc).__name__}: {exc}"
        self.put()


class Experiment:
    """An experiment seen as a queue of jobs (Schedy's ``Experiment``).

    Thread-safe: threads may share one instance. Each instance is one worker
    identity with its own lease; call :meth:`close` (or use ``with``) when done
    so jobs it still holds can be reclaimed at once.

    Args:
        name: Experiment name.
        store: The event store.
        spec: Needed to create the experiment; checked against the stored one
            when given for an existing experiment.
        checkpoint_root: Blob store for :meth:`Job.save_checkpoint`; settings
            (``RUNGFLOW_CHECKPOINTS``) by default.
        lease_settings: Lease timeout; ``RUNGFLOW_LEASE_TIMEOUT`` by default.

    Raises:
        ExperimentNotFoundError: no such experiment and no spec to create it.
        flows.engine.runner.ResumeRefusedError: ``spec`` differs from the stored one.
    """

    RUNNING: ClassVar[str] = "RUNNING"
    DONE: ClassVar[str] = "DONE"

    def __init__(
        self,
        name: str,
        *,
        store: EventStore,
        spec: ExperimentSpec | None = None,
        checkpoint_root: str | None = None,
        lease_settings: LeaseSettings | None = None,
    ) -> None:
        if spec is None:
            spec = _stored_spec(store, name)
        elif spec.name != name:
            raise ValueError(f"spec.name is {spec.name!r}, but the experiment is {name!r}")
        self.name = name
        self.store = store
        self.spec = spec
        self.is_manual = spec.trainable == MANUAL_TRAINABLE
        self._checkpoint_root = checkpoint_root
        self._lock = threading.RLock()
        # The job views fold every event, so the runner keeps them (and takes
        # no snapshots, which would skip events the views need).
        self._runner = ExperimentRunner(
            store, spec, checkpoint_root or "", lease_settings=lease_settings, keep_events=True
        )
        self._runner.replay()
        self._views: dict[str, _JobView] = {}
        self._n_seen = 0
        self._owns_store = False
        self._deleted = False
        self._status_wanted: str | None = None
        self._sync()

    # ------------------------------------------------------------ lifecycle
    @classmethod
    def open(cls, name: str, db_url: str | None = None, **kwargs: Any) -> Experiment:
        """Open an existing experiment from a database URL (settings by default).

        The store is closed with the experiment.
        """
        store = EventStore(db_url or get_settings().resolved_database_url)
        try:
            exp = cls(name, store=store, **kwargs)
        except BaseException:
            store.close()
            raise
        exp._owns_store = True
        return exp

    @classmethod
    def manual(
        cls,
        name: str,
        *,
        store: EventStore,
        metric: str = "loss",
        mode: str = "min",
        space: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Experiment:
        """Create or open a scheduler-less experiment (see :func:`manual_spec`)."""
        return cls(name, store=store, spec=manual_spec(name, metric=metric, mode=mode,
                                                       space=space), **kwargs)

    def close(self) -> None:
        """Release this client's lease (its running jobs become reclaimable at once)."""
        with self._lock:
            self._runner.close()
            if self._owns_store:
                self.store.close()
                self._owns_store = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Experiment({self.name!r}, status={self.status!r})"

    @property
    def owner(self) -> str:
        """This client's worker identity, as stamped into its claims."""
        return self._runner.owner.id

    def delete(self, ensure: bool = True) -> None:
        """Delete the experiment, its log, projections and leases (not checkpoints).

        Raises:
            ExperimentNotFoundError: ``ensure`` and it was already deleted.
        """
        with self._lock:
            self._runner.close()
            if not self.store.has_experiment(self.name):
                self._deleted = True
                if ensure:
                    raise ExperimentNotFoundError(
                        f"experiment {self.name!r} was already deleted"
                    )
                return
            try:
                self.store.delete_experiment(self.name)
            except ExperimentNotFoundError:
                if ensure:
                    raise
            self.store.delete_leases(self.name)
            self._deleted = True

    # ---------------------------------------------------------------- status
    @property
    def status(self) -> str:
        """``RUNNING`` or ``DONE`` (finished); set it and call :meth:`push_updates`."""
        if self._status_wanted is not None:
            return self._status_wanted
        return self.DONE if self._runner.scheduler.finished else self.RUNNING

    @status.setter
    def status(self, value: str) -> None:
        if value not in (self.RUNNING, self.DONE):
            raise ValueError(f"status is {value!r}, but must be 'RUNNING' or 'DONE'")
        self._status_wanted = value

    def push_updates(self) -> None:
        """Push the experiment status: ``DONE`` records ``ExperimentFinished``.

        Raises:
            ValueError: asked to go from ``DONE`` back to ``RUNNING``.
        """
        with self._lock:
            wanted, self._status_wanted = self._status_wanted, None
            self._refresh()
            if wanted is None or wanted == self.status:
                return
            if wanted == self.RUNNING:
                raise ValueError(f"experiment {self.name!r} is DONE and cannot run again")
            while not self._runner.scheduler.finished:
                best = self._runner.scheduler.best_trial()
                event = ExperimentFinished(
                    "marked DONE through the job API", None if best is None else best.trial_id
                )
                self._runner.commit([event])
            self._sync()

    # ------------------------------------------------------------------ jobs
    def add_job(
        self,
        hyperparameters: Mapping[str, Any],
        status: str = QUEUED,
        results: Mapping[str, Any] | None = None,
    ) -> Job:
        """Add a job (a trial with these hyperparameters).

        ``RUNNING`` makes this client hold it; ``DONE``/``FAILED`` record a job
        that already ran elsewhere, with its results (fed to the scheduler
        like any other result).

        Raises:
            ValueError: bad status, a finished experiment, hyperparameters
                missing a parameter of the space, or a scheduler that cannot
                take jobs it did not create.
        """
        if status not in JOB_STATES:
            raise ValueError(f"status is {status!r}, but must be one of {', '.join(JOB_STATES)}")
        config = _json_dict("hyperparameters", hyperparameters)
        values = _json_dict("results", results)
        if self.spec.scheduler in _REFUSE_ADDED_JOBS and not self.is_manual:
            raise ValueError(
                f"scheduler {self.spec.scheduler!r} cannot take added jobs: "
                f"{_REFUSE_ADDED_JOBS[self.spec.scheduler]}"
            )
        missing = sorted(set(self.spec.search_space) - set(config))
        if missing and not self.is_manual:
            raise ValueError(
                f"hyperparameters lack {missing}, which the experiment's space defines"
            )
        with self._lock:
            if status != QUEUED:
                self._runner.lease.acquire()
            while True:
                self._refresh()
                if self._runner.scheduler.finished:
                    raise ValueError(f"experiment {self.name!r} is DONE; it takes no new jobs")
                trials = self._runner.scheduler.trials
                n = len(trials)
                while f"j{n:04d}" in trials:
                    n += 1
                job_id = f"j{n:04d}"
                events: list[Event] = [
                    TrialCreated(job_id, config, ClaimInfo(source=SOURCE).stamp())
                ]
                if status != QUEUED:
                    stop = _first_stop(self._runner.scheduler)
                    events.append(SegmentStarted(
                        job_id, 0.0, stop, config,
                        info=ClaimInfo(SOURCE, self.owner).stamp(),
                    ))
                    if status == DONE:
                        events.extend(self._finish_events(job_id, 0.0, stop, values, None))
                    elif status == FAILED:
                        events.append(SegmentFailed(job_id, 0.0, stop, "added as FAILED"))
                    elif values:
                        events.append(JobUpdated(job_id, values, self.owner))
                if self._runner.commit(events):
                    self._sync()
                    return self._job(job_id)

    def get_job(self, job_id: str) -> Job:
        """The job ``job_id`` as the log has it now.

        Raises:
            JobNotFoundError: unknown id.
        """
        with self._lock:
            self._refresh()
            if job_id not in self._runner.scheduler.trials:
                raise JobNotFoundError(f"experiment {self.name!r} has no job {job_id!r}")
            return self._job(job_id)

    def all_jobs(self) -> Iterator[Job]:
        """Every job, in creation order (a snapshot)."""
        with self._lock:
            self._refresh()
            jobs = [self._job(tid) for tid in self._runner.scheduler.trials]
        return iter(jobs)

    def next_job(self, timeout: float = 0.0) -> Job:
        """Claim the next runnable job for this client and return it ``RUNNING``.

        Args:
            timeout: Seconds to keep polling while nothing is runnable yet
                (0: answer at once).

        Raises:
            NoJobError: nothing runnable; ``retry_later`` False once the
                experiment is finished.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        backoff = _Backoff(0.02, self._runner.lease_settings.poll_interval)
        while True:
            with self._lock:
                job = self._try_next()
            if job is not None:
                return job
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoJobError(
                    f"no job of experiment {self.name!r} is runnable now; "
                    "running jobs or new jobs may make some runnable, ask again later",
                    retry_later=True,
                )
            time.sleep(min(backoff.next(), remaining))

    # ------------------------------------------------------------- internals
    def _checkpoints(self) -> CheckpointStore:
        return CheckpointStore(self._checkpoint_root or get_settings().resolved_checkpoints)

    def _check_alive(self) -> None:
        if self._deleted:
            raise ExperimentNotFoundError(f"experiment {self.name!r} was deleted")

    def _refresh(self) -> None:
        self._check_alive()
        self._runner.catch_up()
        self._sync()

    def _sync(self) -> None:
        """Fold the events the runner folded since the last call into the job views."""
        events = self._runner.events
        for event in events[self._n_seen:]:
            self._fold(event)
        self._n_seen = len(events)

    def _fold(self, event: Event) -> None:
        if isinstance(event, ExperimentCreated):
            return
        if isinstance(event, TrialCreated):
            source = ClaimInfo.of(event.info).source
            self._views[event.trial_id] = _JobView(event.trial_id, source)
            return
        tid = event.trial
        view = None if tid is None else self._views.get(tid)
        if view is None:
            return
        if isinstance(event, SegmentStarted):
            view.ever_started = True
            view.last_segment = event
            view.error = None
        elif isinstance(event, SegmentFinished):
            view.results = dict(event.metrics)
        elif isinstance(event, JobUpdated):
            view.results = dict(event.results)
        elif isinstance(event, SegmentFailed):
            view.error = event.error

    def _status_of(self, job_id: str) -> str:
        if job_id in self._runner.claims.open:
            return RUNNING
        t = self._runner.scheduler.trials[job_id]
        if t.status == "failed":
            return FAILED
        view = self._views[job_id]
        if not view.ever_started and t.status not in ("completed", "pruned"):
            return QUEUED
        return DONE

    def _job(self, job_id: str) -> Job:
        t = self._runner.scheduler.trials[job_id]
        view = self._views[job_id]
        claim = self._runner.claims.open.get(job_id)
        seg = claim.started if claim is not None else view.last_segment
        return Job(
            experiment=self,
            job_id=job_id,
            hyperparameters=dict(seg.config if claim is not None and seg else t.config),
            status=self._status_of(job_id),
            results=dict(view.results),
            start=0.0 if seg is None else float(seg.start),
            stop=0.0 if seg is None else float(seg.stop),
            restore_from=None if seg is None else seg.restore_from,
            owner=None if claim is None else claim.owner,
            error=view.error,
            _claim_seq=0 if claim is None else claim.seq,
        )

    def _finish_events(
        self, job_id: str, start: float, stop: float, results: Mapping[str, Any],
        checkpoint: CheckpointRef | None,
    ) -> list[Event]:
        events: list[Event] = [SegmentFinished(
            job_id, start, stop, reports=({"resource": stop, **results},),
            metrics=dict(results), checkpoint=checkpoint,
        )]
        if self.is_manual:
            # No scheduler will ever decide about it: the job is complete.
            events.append(TrialStopped(job_id, "done", {"source": SOURCE}))
        return events

    def _try_next(self) -> Job | None:
        """One attempt to claim something; None if nothing is runnable right now."""
        runner = self._runner
        while True:
            self._refresh()
            if runner.scheduler.finished:
                raise NoJobError(f"experiment {self.name!r} is finished", retry_later=False)
            runner.lease.acquire()  # before any claim: a claim without a lease looks released
            taken = runner.reclaim(limit=1, force=True)
            if taken:
                self._sync()
                return self._job(taken[0].trial_id)
            queued = [
                tid for tid, v in self._views.items()
                if v.source == SOURCE and self._status_of(tid) == QUEUED
            ]
            if queued:
                tid = queued[0]
                config = dict(runner.scheduler.trials[tid].config)
                event = SegmentStarted(
                    tid, 0.0, _first_stop(runner.scheduler), config,
                    info=ClaimInfo(SOURCE, self.owner).stamp(),
                )
                if runner.commit([event]):
                    self._sync()
                    return self._job(tid)
                continue
            if self.is_manual:
                return None
            done = decide_and_commit(runner, runs=1)
            self._sync()
            for action in done.actions:
                if isinstance(action, RunSegment):
                    return self._job(action.trial_id)
            if runner.scheduler.finished:
                raise NoJobError(f"experiment {self.name!r} is finished", retry_later=False)
            # Wait, or Done while jobs still run (the end is not decided yet);
            # any Pause/Stop decisions on the way were recorded.
            return None

    def _push_job(self, job: Job) -> None:
        if job.status not in JOB_STATES:
            raise ValueError(f"status is {job.status!r}, but must be one of {JOB_STATES}")
        results = _json_dict("results", job.results)
        with self._lock:
            runner = self._runner
            while True:
                self._refresh()
                if job.job_id not in runner.scheduler.trials:
                    raise JobNotFoundError(f"experiment {self.name!r} has no job {job.job_id!r}")
                current = self._status_of(job.job_id)
                if job.status == QUEUED:
                    if current != QUEUED:
                        raise ValueError(f"job {job.job_id} is {current}; it cannot be re-queued")
                    return
                held = runner.claims.holds(
                    self.owner, job.job_id, job.start, job.stop, job._claim_seq
                )
                if not held:
                    if current == job.status and job.status in (DONE, FAILED):
                        return  # already recorded (a repeated put)
                    holder = runner.claims.open.get(job.job_id)
                    raise JobNotHeldError(
                        f"job {job.job_id} is not held by this client ({self.owner}); "
                        + ("it is held by " + str(holder.owner) if holder else f"it is {current}")
                        + ". Its result was not recorded."
                    )
                events: list[Event]
                if job.status == RUNNING:
                    if results == self._views[job.job_id].results:
                        return
                    events = [JobUpdated(job.job_id, results, self.owner)]
                elif job.status == DONE:
                    events = self._finish_events(
                        job.job_id, job.start, job.stop, results, job._checkpoint
                    )
                else:
                    error = (job.error or "failed by its worker")[:2000]
                    events = [SegmentFailed(job.job_id, job.start, job.stop, error)]
                if runner.commit(events):
                    self._sync()
                    fresh = self._job(job.job_id)
                    job.status, job.results, job.owner = fresh.status, fresh.results, fresh.owner
                    return


def _stored_spec(store: EventStore, name: str) -> ExperimentSpec:
    records = store.read(name, after_seq=0)
    if not records:
        raise ExperimentNotFoundError(
            f"experiment {name!r} does not exist in {store.url_for_display}; "
            "pass spec= to create it"
        )
    return stored_spec(records[0].event)
