"""Read-side views of an experiment, rebuilt from its event log."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from flows.settings import get_settings
from flows.spec import stored_spec
from schedulers import (
    Event,
    ExperimentFinished,
    SegmentFailed,
    SegmentFinished,
    TrialCreated,
)
from schedulers.events import ImportCompleted, ObservationImported, TrialRetried
from storage import EventStore, ExperimentNotFoundError, StoredEvent

__all__ = [
    "checkpoint_usage",
    "experiment_status",
    "imported_summary",
    "load_events",
    "read_records",
]


def read_records(store: EventStore, name: str) -> list[StoredEvent]:
    """All stored events of ``name`` in order; ExperimentNotFoundError if there is none."""
    if not store.has_experiment(name):
        raise ExperimentNotFoundError(f"experiment {name!r} not found in {store.url_for_display}")
    return store.read(name)


def load_events(store: EventStore, name: str) -> list[Event]:
    """All events of ``name`` in order."""
    return [r.event for r in read_records(store, name)]


def checkpoint_usage(root: str, name: str) -> dict[str, Any]:
    """``{"bytes", "files"}`` of ``name``'s checkpoints under ``root``.

    A store that cannot be listed (unmounted share, missing credentials) gives
    ``None`` counts and an ``error`` naming the exception type: status is a
    read-side view and must not fail because the blob store is away. The root
    itself is not echoed, since a URL may carry credentials.
    """
    from storage import CheckpointStore

    try:
        size, files = CheckpointStore(root).usage(name)
    except Exception as exc:
        return {"bytes": None, "files": None, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"bytes": size, "files": files}


def experiment_status(
    store: EventStore, name: str, *, checkpoints: str | None = None
) -> dict[str, Any]:
    """The JSON printed by ``rungflow status --json``.

    Keys: ``experiment``, ``state`` (running|finished|failed), ``scheduler``,
    ``metric``, ``mode``, ``trials`` (id, config, status, segments as
    ``{"start", "stop", "metrics"}`` in order, ``error`` if failed), ``best``,
    ``resource_used``, ``imported`` (warm-start observations per source, see
    :func:`imported_summary`), ``checkpoints`` (``{"bytes", "files"}`` on disk now,
    after retention) and the scheduler's own ``extras`` (brackets, schedule
    records...).

    Args:
        store: The event store.
        name: Experiment name.
        checkpoints: Blob-store root; default ``RUNGFLOW_CHECKPOINTS``.
    """
    events = load_events(store, name)
    spec = stored_spec(events[0])
    scheduler = spec.build_scheduler()
    segments: dict[str, list[dict[str, Any]]] = {}
    errors: dict[str, str] = {}
    finished: ExperimentFinished | None = None
    for event in events:
        scheduler.tell(event)
        if isinstance(event, TrialCreated):
            segments[event.trial_id] = []
        elif isinstance(event, SegmentFinished):
            segments[event.trial_id].append(
                {"start": event.start, "stop": event.stop, "metrics": dict(event.metrics)}
            )
        elif isinstance(event, SegmentFailed):
            errors[event.trial_id] = event.error
        elif isinstance(event, ExperimentFinished):
            finished = event
        elif isinstance(event, TrialRetried):
            finished = None  # a retry reopens a finished experiment (flows.retry)
    state = next((e.state for e in store.list_experiments() if e.name == name), "running")
    trials = []
    for t in scheduler.trials.values():
        row: dict[str, Any] = {
            "trial_id": t.trial_id,
            "config": t.config,
            "status": t.status,
            "resource": t.resource,
            "segments": segments.get(t.trial_id, []),
        }
        if t.trial_id in errors:
            row["error"] = errors[t.trial_id]
        trials.append(row)
    best = scheduler.best_trial()
    best_json = None
    if best is not None and best.last_score is not None:
        value = best.last_score if spec.mode == "min" else -best.last_score
        best_json = {
            "trial_id": best.trial_id,
            "config": best.config,
            "resource": best.resource,
            spec.metric: value,
            "checkpoint": None if best.checkpoint is None else best.checkpoint.key,
        }
    return {
        "experiment": name,
        "state": "finished" if finished is not None else state,
        "scheduler": spec.scheduler,
        "metric": spec.metric,
        "mode": spec.mode,
        "resource_used": scheduler.resource_used,
        "n_trials": len(trials),
        "trials": trials,
        "best": best_json,
        "checkpoints": checkpoint_usage(
            checkpoints or get_settings().resolved_checkpoints, name
        ),
        "extras": scheduler.status_extras(),
        "imported": imported_summary(events),
    }


def imported_summary(events: Sequence[Event]) -> dict[str, Any]:
    """The ``imported`` section of ``rungflow status --json``.

    ``{"observations": total, "sources": [{"source", "observations",
    "skipped", "dropped_params"}]}`` in import order.
    """
    counts: Counter[str] = Counter()
    completed: dict[str, ImportCompleted] = {}
    for event in events:
        if isinstance(event, ObservationImported):
            counts[event.source] += 1
        elif isinstance(event, ImportCompleted):
            completed[event.source] = event
    sources = []
    for label in dict.fromkeys([*completed, *counts]):
        done = completed.get(label)
        sources.append(
            {
                "source": label,
                "observations": counts.get(label, 0),
                "skipped": {} if done is None else dict(done.skipped),
                "dropped_params": {} if done is None else dict(done.dropped_params),
            }
        )
    return {"observations": sum(counts.values()), "sources": sources}
