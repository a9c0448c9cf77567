"""The fold from events to the ``trials`` and ``results`` projections.

One fold serves both :meth:`EventStore.append` (incrementally, inside the
append's transaction) and :meth:`EventStore.rebuild_projections` (from the
whole log), so the two can never disagree. Trial status follows the same rules
as ``schedulers.base.Scheduler._fold_common`` because both call the one fold
:func:`schedulers.outcomes.next_status` (running, paused, completed, pruned,
failed).

Events naming a trial that was never created are ignored rather than
rejected: the log is the truth and must accept what the flow recorded; the
projection is only a convenient view of it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from schedulers.events import (
    Event,
    SegmentFailed,
    SegmentFinished,
    SegmentStarted,
    TrialCreated,
    TrialPaused,
    TrialPerturbed,
    TrialRetried,
    TrialStopped,
)
from schedulers.outcomes import next_status
from storage.models import RESULTS as _RESULTS
from storage.models import TRIALS as _TRIALS

__all__ = ["Projection", "ResultRecord", "TrialRecord", "apply_events", "rebuild"]

# Keep IN (...) lists well below every backend's bound-parameter limit.
_CHUNK = 500


@dataclass
class TrialRecord:
    """Mutable state of one trial while folding."""

    trial_id: str
    status: str
    config: dict[str, Any]
    resource: float
    metrics: dict[str, Any] | None
    n_segments: int
    created_seq: int

    def row(self, experiment: str) -> dict[str, Any]:
        return {
            "experiment_id": experiment,
            "trial_id": self.trial_id,
            "status": self.status,
            "config": self.config,
            "resource": self.resource,
            "metrics": self.metrics,
            "n_segments": self.n_segments,
            "created_seq": self.created_seq,
        }


@dataclass(frozen=True)
class ResultRecord:
    """One finished segment."""

    seq: int
    trial_id: str
    start: float
    stop: float
    metrics: dict[str, Any]

    def row(self, experiment: str) -> dict[str, Any]:
        return {
            "experiment_id": experiment,
            "seq": self.seq,
            "trial_id": self.trial_id,
            "start": self.start,
            "stop": self.stop,
            "metrics": self.metrics,
        }


@dataclass
class Projection:
    """In-memory projection state; :meth:`apply` is the fold.

    Attributes:
        trials: Trial records by id (possibly only the ones an append touches).
        results: Result records added by the folded events, in seq order.
        touched: Ids of trials whose record changed.
    """

    trials: dict[str, TrialRecord] = field(default_factory=dict)
    results: list[ResultRecord] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)

    def apply(self, seq: int, event: Event) -> None:
        """Fold the event stored at ``seq``."""
        if isinstance(event, TrialCreated):
            self.trials[event.trial_id] = TrialRecord(
                trial_id=event.trial_id,
                status="paused",
                config=dict(event.config),
                resource=0.0,
                metrics=None,
                n_segments=0,
                created_seq=seq,
            )
            self.touched.add(event.trial_id)
            return
        trial_id = event.trial
        t = None if trial_id is None else self.trials.get(trial_id)
        if t is None:
            return  # experiment-level event, or a trial never created (see module doc)
        status = next_status(t.status, event)
        changed = status != t.status
        t.status = status or t.status
        if isinstance(event, SegmentStarted):
            t.config = dict(event.config)
        elif isinstance(event, SegmentFinished):
            t.resource = float(event.stop)
            t.metrics = dict(event.metrics)
            t.n_segments += 1
            self.results.append(
                ResultRecord(seq, t.trial_id, float(event.start), float(event.stop), t.metrics)
            )
        elif isinstance(event, TrialPerturbed):
            t.config = dict(event.new_config)
            t.resource = float(event.donor_resource)
        elif not changed and not isinstance(
            event, (SegmentFailed, TrialPaused, TrialStopped, TrialRetried)
        ):
            return
        self.touched.add(t.trial_id)


def _load_trials(
    conn: sa.Connection, experiment: str, trial_ids: Collection[str]
) -> dict[str, TrialRecord]:
    ids = sorted(trial_ids)
    loaded: dict[str, TrialRecord] = {}
    for i in range(0, len(ids), _CHUNK):
        stmt = sa.select(_TRIALS).where(
            _TRIALS.c.experiment_id == experiment, _TRIALS.c.trial_id.in_(ids[i : i + _CHUNK])
        )
        for r in conn.execute(stmt).mappings():
            loaded[r["trial_id"]] = TrialRecord(
                trial_id=r["trial_id"],
                status=r["status"],
                config=dict(r["config"]),
                resource=float(r["resource"]),
                metrics=None if r["metrics"] is None else dict(r["metrics"]),
                n_segments=int(r["n_segments"]),
                created_seq=int(r["created_seq"]),
            )
    return loaded


def apply_events(conn: sa.Connection, experiment: str, items: Iterable[tuple[int, Event]]) -> None:
    """Fold newly appended ``(seq, event)`` pairs into the stored projections.

    Runs inside the append's transaction, so the log and its projections
    commit or roll back together. Only the trials the events mention are loaded.
    """
    items = list(items)
    ids = {e.trial for _, e in items if e.trial is not None}
    existing = _load_trials(conn, experiment, ids) if ids else {}
    proj = Projection(trials=dict(existing))
    for seq, event in items:
        proj.apply(seq, event)
    inserts = [proj.trials[t].row(experiment) for t in sorted(proj.touched) if t not in existing]
    if inserts:
        conn.execute(sa.insert(_TRIALS), inserts)
    for trial_id in sorted(proj.touched & existing.keys()):
        row = proj.trials[trial_id].row(experiment)
        conn.execute(
            sa.update(_TRIALS)
            .where(_TRIALS.c.experiment_id == experiment, _TRIALS.c.trial_id == trial_id)
            .values({k: v for k, v in row.items() if k not in ("experiment_id", "trial_id")})
        )
    if proj.results:
        conn.execute(sa.insert(_RESULTS), [r.row(experiment) for r in proj.results])


def rebuild(conn: sa.Connection, experiment: str, items: Iterable[tuple[int, Event]]) -> None:
    """Drop the experiment's projections and fold them again from ``items`` (the whole log)."""
    conn.execute(sa.delete(_RESULTS).where(_RESULTS.c.experiment_id == experiment))
    conn.execute(sa.delete(_TRIALS).where(_TRIALS.c.experiment_id == experiment))
    proj = Projection()
    for seq, event in items:
        proj.apply(seq, event)
    if proj.trials:
        conn.execute(sa.insert(_TRIALS), [t.row(experiment) for t in proj.trials.values()])
    if proj.results:
        conn.execute(sa.insert(_RESULTS), [r.row(experiment) for r in proj.results])
