"""Retry one failed trial: run its failed segment again and hand the result back.

``rungflow retry EXPERIMENT TRIAL`` starts the ``retry-trial`` flow (:mod:`flows.retry`), which

1. replays the experiment's log and refuses, with the reason, an unknown
   experiment, an unknown trial, a trial that is not failed, an experiment
   with open segments (a flow run is active or crashed: let it finish or
   resume it first) and a checkpoint that is no longer in the blob store;
2. appends :class:`~schedulers.events.TrialRetried` and a ``SegmentStarted``
   for the failed segment, with the config and ``restore_from`` of the failed
   attempt (so the segment resumes from the checkpoint it started from, a PBT
   donor's included). The common fold turns the trial from ``failed`` back
   into ``paused``/``running`` and reopens a finished experiment;
3. runs the segment as a ``train-segment`` task with ``retries`` task retries
   and appends its ``SegmentFinished`` (or a final ``SegmentFailed``);
4. *settles* the experiment: asks the scheduler and records its bookkeeping
   decisions (pause, stop, done) until it wants to run a segment. So a
   finished experiment whose scheduler has nothing more to do is finished
   again, with the retried result on its leaderboard; one whose scheduler now
   has work (ASHA promoting the retried trial, HyperBand continuing its
   bracket) stays open, and ``rungflow run`` (or ``rungflow retry
   --continue``) carries on from the log like any resume.

What each scheduler does with the result is defined by its fold (see their
docstrings): ASHA records it at the rung the trial was training to and may
promote it; HyperBand ranks it in its rung if that rung is still undecided,
otherwise keeps it and stops the trial; DyHPO treats the trial as paused
(the surrogate may continue it); PBT takes the member back into the
population; random and FIFO search stop it as completed.

The retried segment is charged to ``resource_used`` like any segment. It was
not part of any plan, so with ``budget.max_resource`` the total can exceed the
cap by at most that one segment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flows.engine.segment import SegmentJob
from flows.spec import ExperimentSpec, stored_spec
from flows.trainable import SegmentOutcome, final_metrics
from schedulers import (
    Done,
    Event,
    Pause,
    Scheduler,
    SegmentFailed,
    SegmentFinished,
    SegmentStarted,
    Stop,
)
from schedulers.events import TrialRetried
from storage import CheckpointStore, ConcurrencyError, EventStore, ExperimentNotFoundError

__all__ = ["RetryRefusedError", "RetryResult", "check_retry", "retry_in_store"]

#: Most bookkeeping decisions recorded while settling (a guard, never reached


class RetryRefusedError(ValueError):
    """The trial cannot be retried; the message says why."""


@dataclass
class RetryResult:
    """What a retry did (the CLI prints it; the flow returns it as JSON)."""

    experiment: str
    trial_id: str
    start: float
    stop: float
    outcome: str  # "finished" | "failed"
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    reopened: bool = False
    experiment_finished: bool = False
    decisions: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class _Target:
    spec: ExperimentSpec
    scheduler: Scheduler
    last_seq: int
    started: SegmentStarted
    failed: SegmentFailed
    was_finished: bool


def _replay(store: EventStore, experiment: str) -> tuple[ExperimentSpec, Scheduler, int]:
    """The stored spec and the scheduler folded from the log (snapshot + tail)."""
    from flows.engine.runner import ExperimentRunner

    if not store.has_experiment(experiment):
        raise ExperimentNotFoundError(
            f"experiment {experiment!r} not found in {store.url_for_display}"
        )
    spec = stored_spec(store.read(experiment, until_seq=1)[0].event)
    runner = ExperimentRunner(store, spec, "")
    runner.replay()
    return spec, runner.scheduler, runner.seq


def check_retry(
    store: EventStore, experiment: str, trial_id: str, checkpoint_root: str | None = None
) -> _Target:
    """Validate a retry request against the log.

    Raises:
        ExperimentNotFoundError: unknown experiment.
        RetryRefusedError: unknown trial, trial not failed, open segments, or
            the checkpoint to restore is gone.
    """
    spec, scheduler, last_seq = _replay(store, experiment)
    trial = scheduler.trials.get(trial_id)
    if trial is None:
        failed = sorted(t.trial_id for t in scheduler.trials.values() if t.status == "failed")
        raise RetryRefusedError(
            f"trial {trial_id!r} is not in experiment {experiment!r}; failed trials: "
            f"{failed or 'none'}"
        )
    if trial.status != "failed":
        raise RetryRefusedError(
            f"trial {trial_id!r} of experiment {experiment!r} is {trial.status}, "
            "but only a failed trial can be retried"
        )
    running = sorted(t.trial_id for t in scheduler.running)
    if running:
        raise RetryRefusedError(
            f"experiment {experiment!r} has open segments ({', '.join(running)}): a flow run "
            "is active or crashed; let it finish or resume it with `rungflow run` first"
        )
    started: SegmentStarted | None = None
    failed_event: SegmentFailed | None = None
    for record in store.read(experiment, kinds=("SegmentStarted", "SegmentFailed")):
        event = record.event
        if isinstance(event, SegmentStarted) and event.trial_id == trial_id:
            started = event
        elif isinstance(event, SegmentFailed) and event.trial_id == trial_id and event.final:
            failed_event = event
    if started is None or failed_event is None:
        raise RetryRefusedError(f"trial {trial_id!r} has no failed segment to retry")
    ref = started.restore_from
    if (
        ref is not None
        and checkpoint_root is not None
        and not CheckpointStore(checkpoint_root).exists(ref.key)
    ):
        raise RetryRefusedError(
            f"trial {trial_id!r} restores from checkpoint {ref.key!r}, which is no longer "
            "in the checkpoint store (deleted by retention?); it cannot be retried"
        )
    return _Target(spec, scheduler, last_seq, started, failed_event, scheduler.finished)


def _append_fact(store: EventStore, experiment: str, events: list[Event], seq: int) -> int:
    """Append result events; on a lost race append after whatever was written."""
    while True:
        try:
            return store.append(experiment, events, expected_seq=seq)
        except ConcurrencyError:
            seq = store.last_seq(experiment)


def retry_in_store(
    store: EventStore,
    experiment: str,
    trial_id: str,
    *,
    checkpoint_root: str,
    execute: Callable[[SegmentJob], SegmentOutcome],
    retries: int = 0,
) -> RetryResult:
    """Retry ``trial_id`` of ``experiment`` (steps 1-4 of the module docstring).

    Args:
        store: The experiment's store.
        experiment: Experiment name.
        trial_id: The failed trial.
        checkpoint_root: Blob-store root workers write to.
        execute: Runs the segment job and returns its outcome (a Prefect task
            in :func:`retry_trial`); whatever it raises fails the trial again.
        retries: Recorded in ``TrialRetried`` (the task retries ``execute`` uses).

    Raises:
        ExperimentNotFoundError, RetryRefusedError: see :func:`check_retry`.
    """
    target = check_retry(store, experiment, trial_id, checkpoint_root)
    s = target.started
    marker = TrialRetried(
        trial_id,
        start=s.start,
        stop=s.stop,
        retries=retries,
        info={"previous_error": target.failed.error[:500]},
    )
    restart = SegmentStarted(
        trial_id, s.start, s.stop, dict(s.config), s.restore_from, {**s.info, "retried": True}
    )
    try:
        seq = store.append(experiment, [marker, restart], expected_seq=target.last_seq)
    except ConcurrencyError:
        # A decision is never appended on a stale view: check again from the new log.
        return retry_in_store(
            store, experiment, trial_id, checkpoint_root=checkpoint_root,
            execute=execute, retries=retries,
        )
    spec = target.spec
    job = SegmentJob(
        experiment=experiment,
        trainable=spec.trainable,
        metric=spec.metric,
        trial_id=trial_id,
        config=dict(s.config),
        start=s.start,
        stop=s.stop,
        restore_from=s.restore_from,
        checkpoint_root=checkpoint_root,
        trainable_args=dict(spec.trainable_args),
        started_seq=seq,  # a new checkpoint key: the failed attempt's files stay as they were
    )
    result = RetryResult(experiment, trial_id, s.start, s.stop, "finished")
    result.reopened = target.was_finished
    outcome_event: Event
    try:
        outcome = execute(job)
    except Exception as exc:  # the trainable may raise anything: the trial fails again
        result.outcome = "failed"
        result.error = f"{type(exc).__name__}: {exc}"[:2000]
        outcome_event = SegmentFailed(
            trial_id, s.start, s.stop, error=result.error, attempts=retries + 1
        )
    else:
        metrics = final_metrics(outcome.reports)
        result.metrics = metrics
        outcome_event = SegmentFinished(
            trial_id, s.start, s.stop, reports=outcome.reports, metrics=metrics,
            checkpoint=outcome.checkpoint,
        )
    _append_fact(store, experiment, [outcome_event], seq)
    _settle(store, experiment, result, spec, checkpoint_root)
    return result


def _settle(
    store: EventStore, experiment: str, result: RetryResult, spec: ExperimentSpec,
    checkpoint_root: str,
) -> None:
    """Record the scheduler's pause/stop/done decisions until it wants to run something."""
    from flows.engine.commit import decide_and_commit
    from flows.engine.runner import ExperimentRunner

    runner = ExperimentRunner(store, spec, checkpoint_root)
    runner.replay()
    if not runner.scheduler.finished:
        done = decide_and_commit(runner, runs=0)
        result.decisions.extend(
            _describe(a) for a in done.actions if isinstance(a, (Pause, Stop, Done))
        )
    if runner.scheduler.finished:
        result.experiment_finished = True
    elif result.reopened:
        # Work remains (or, with open segments, another run is active).
        store.set_state(experiment, "running")


def _describe(action: Pause | Stop | Done) -> str:
    if isinstance(action, Pause):
        return f"paused {action.trial_id} at {action.resource:g}"
    if isinstance(action, Stop):
        return f"stopped {action.trial_id}: {action.reason}"
    return f"experiment finished ({action.reason})"
