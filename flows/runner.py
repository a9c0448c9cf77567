"""The experiment loop: replay the log, ask, record, run, record, repeat.

This module holds the loop's logic; :mod:`flows.tune` wraps it in a Prefect
flow and supplies a :class:`SegmentExecutor` backed by a Prefect task runner.

Write-ahead rule: every decision and every result is appended to the event
log *before* the flow acts on it, and the scheduler only learns of it by being
told the appended events. So a process killed at any instant leaves a log that
replays into exactly the state it had, and segments that were started but never
finished are simply run again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from flows.segment import SegmentJob
from flows.spec import ExperimentSpec, spec_differences
from flows.trainable import MetricNotReportedError, SegmentOutcome, final_metrics
from schedulers import (
    Done,
    Event,
    ExperimentCreated,
    ExperimentFinished,
    RunSegment,
    Scheduler,
    SegmentFailed,
    SegmentFinished,
    SegmentStarted,
    Wait,
    action_events,
)
from storage import ConcurrencyError, EventStore

__all__ = [
    "ExperimentRunner",
    "ResumeRefusedError",
    "RunSummary",
    "SegmentExecutor",
    "unfinished_segments",
]

log = logging.getLogger("rungflow")


class ResumeRefusedError(ValueError):
    """The spec given differs from the stored experiment in a way that matters."""


class SegmentExecutor(Protocol):
    """Runs segment jobs somewhere (threads, processes, Dask) and hands back results."""

    def submit(self, job: SegmentJob) -> Hashable:
        """Start ``job``; return a handle."""
        ...

    def wait_first(self, handles: Sequence[Hashable]) -> Hashable:
        """Block until one of ``handles`` is done and return it."""
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
    best_trial_id: str | None = None
    best_config: dict[str, Any] | None = None
    best_metric: float | None = None
    best_resource: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def unfinished_segments(events: Sequence[Event]) -> list[SegmentStarted]:
    """Segments started but neither finished nor failed: a crash interrupted them."""
    open_: dict[str, SegmentStarted] = {}
    for event in events:
        if isinstance(event, SegmentStarted):
            open_[event.trial_id] = event
        elif isinstance(event, (SegmentFinished, SegmentFailed)):
            open_.pop(event.trial_id, None)
    return list(open_.values())


class ExperimentRunner:
    """Drives one experiment from its event log.

    Args:
        store: The event store.
        spec: The validated spec; must match the stored one when resuming.
        checkpoint_root: Blob-store root (path or fsspec URL) workers write to.
        on_progress: Called after every recorded result (CLI progress, artifacts).
            Keep it cheap: it runs on the flow's hot path.
    """

    def __init__(
        self,
        store: EventStore,
        spec: ExperimentSpec,
        checkpoint_root: str,
        *,
        on_progress: Callable[[ExperimentRunner], None] | None = None,
    ) -> None:
        self.store = store
        self.spec = spec
        self.name = spec.name
        self.checkpoint_root = checkpoint_root
        self.on_progress = on_progress
        self.scheduler: Scheduler = spec.build_scheduler()
        self.events: list[Event] = []
        self.seq = 0
        self.summary = RunSummary(spec.name)
        self._metric_seen = False
        self._started_seq: dict[str, int] = {}

    # ------------------------------------------------------------ open/replay
    def open(self) -> list[SegmentStarted]:
        """Create the experiment or replay it; return segments to run again.

        Raises:
            ResumeRefusedError: the stored experiment was created with a spec
                that differs in space, trainable, scheduler or its arguments.
        """
        if not self.store.has_experiment(self.name):
            self.store.create_experiment(self.name, self.spec.to_json())
        stored = self.store.read(self.name)
        first = stored[0].event
        assert isinstance(first, ExperimentCreated)
        diffs = spec_differences(first.spec, self.spec)
        if diffs:
            raise ResumeRefusedError(
                f"experiment {self.name!r} exists with a different spec; "
                "use a new name or the stored spec. Differences:\n  " + "\n  ".join(diffs)
            )
        for record in stored:
            self._fold(record.event, record.seq)
        self.seq = stored[-1].seq
        if self.scheduler.finished:
            self.summary.state = "finished"
            self._update_best()
            return []
        self.store.set_state(self.name, "running")
        orphans = unfinished_segments(self.events)
        self.summary.resumed_segments = len(orphans)
        if orphans:
            log.info("resuming %s: %d unfinished segment(s) run again", self.name, len(orphans))
        return orphans

    def _fold(self, event: Event, seq: int) -> None:
        self.events.append(event)
        self.scheduler.tell(event)
        if isinstance(event, SegmentStarted):
            self._started_seq[event.trial_id] = seq
        if isinstance(event, SegmentFinished) and self.spec.metric in event.metrics:
            self._metric_seen = True

    def _catch_up(self) -> None:
        for record in self.store.read(self.name, after_seq=self.seq):
            self._fold(record.event, record.seq)
            self.seq = record.seq

    def commit(self, events: Sequence[Event]) -> bool:
        """Append ``events`` atomically, then tell them; False if another writer won.

        On a conflict the runner catches up with the other writer's events; the
        caller then decides again from the new state.
        """
        first = self.seq + 1
        try:
            self.seq = self.store.append(self.name, events, expected_seq=self.seq)
        except ConcurrencyError:
            self._catch_up()
            return False
        for offset, event in enumerate(events):
            self._fold(event, first + offset)
        return True

    def _record_result(self, event: Event) -> None:
        # A result is a fact, not a decision: on conflict catch up and append it again.
        while not self.commit([event]):
            pass

    # ------------------------------------------------------------------- run
    def job_for(self, trial_id: str, config: Any, start: float, stop: float, restore: Any) -> SegmentJob:
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
        """Run until the scheduler says Done. Safe to call on a resumed experiment."""
        orphans = self.open()
        if self.summary.state == "finished":
            return self.summary
        pending: dict[Hashable, SegmentJob] = {}
        for seg in orphans:
            job = self.job_for(seg.trial_id, seg.config, seg.start, seg.stop, seg.restore_from)
            pending[executor.submit(job)] = job
        done = False
        while True:
            while not done and len(pending) < self.spec.max_concurrency:
                action = self.scheduler.ask(1)[0]
                if isinstance(action, Wait):
                    break
                if isinstance(action, Done) and pending:
                    break  # finish what runs before declaring the end
                if not self.commit(action_events(action)):
                    continue  # another writer changed the state: decide again
                if isinstance(action, Done):
                    done = True
                elif isinstance(action, RunSegment):
                    job = self.job_for(
                        action.trial_id, action.config, action.start, action.stop,
                        action.restore_from,
                    )
                    pending[executor.submit(job)] = job
            if not pending:
                if done or self.scheduler.finished:
                    break
                raise RuntimeError(
                    f"scheduler {self.spec.scheduler!r} is waiting with nothing running"
                )
            handle = executor.wait_first(list(pending))
            job = pending.pop(handle)
            self._finish(job, executor, handle)
        self.summary.state = "finished"
        self._update_best()
        return self.summary

    def _finish(self, job: SegmentJob, executor: SegmentExecutor, handle: Hashable) -> None:
        try:
            outcome = executor.result(handle)
        except MetricNotReportedError as exc:
            self._fail(job, str(exc))
            if not self._metric_seen:
                # Every later segment would fail the same way: stop now, say why.
                self.store.set_state(self.name, "failed")
                raise
        except Exception as exc:  # a trainable may raise anything; it fails its trial only
            self._fail(job, f"{type(exc).__name__}: {exc}")
        else:
            self._record_result(
                SegmentFinished(
                    job.trial_id,
                    job.start,
                    job.stop,
                    reports=outcome.reports,
                    metrics=final_metrics(outcome.reports),
                    checkpoint=outcome.checkpoint,
                )
            )
            self.summary.segments_run += 1
        if self.on_progress is not None:
            self.on_progress(self)

    def _fail(self, job: SegmentJob, error: str) -> None:
        log.warning("trial %s segment %g->%g failed: %s", job.trial_id, job.start, job.stop, error)
        self._record_result(
            SegmentFailed(
                job.trial_id,
                job.start,
                job.stop,
                error=error[:2000],
                attempts=self.spec.segment_retries + 1,
            )
        )
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
        for event in reversed(self.events):
            if isinstance(event, ExperimentFinished):
                return event
        return None
