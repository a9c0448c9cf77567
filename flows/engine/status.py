"""Read-side views of an experiment: projections and snapshots, the log as the reference."""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from flows.engine.rawjson import RawJSON
from flows.settings import get_settings
from schedulers.events import (
    Event,
    ExperimentCreated,
    ExperimentFinished,
    ImportCompleted,
    ObservationImported,
    SegmentFailed,
    SegmentFinished,
    TrialCreated,
    TrialRetried,
    TrialStopped,
)
from schedulers.outcomes import (
    error_summary,
    final_status,
    most_common_error,
    normalize_status,
    signed_score,
)
from storage import EventStore, ExperimentNotFoundError, StoredEvent
from storage.projections import ExportView, StatusView
from storage.snapshots import gc_paused, loads

if TYPE_CHECKING:
    from flows.engine.runner import ExperimentRunner
    from flows.spec import ExperimentSpec
    from schedulers.base import Scheduler

log = logging.getLogger("rungflow")

__all__ = [
    "EXPORT_KINDS",
    "checkpoint_usage",
    "end_view",
    "experiment_reason",
    "experiment_status",
    "experiment_status_from_log",
    "experiment_summary",
    "export_events",
    "export_view",
    "folded_runner",
    "imported_summary",
    "last_metrics",
    "load_events",
    "projected_status",
    "read_records",
    "run_end_status",
    "run_verdict",
    "segment_count",
]


def read_records(store: EventStore, name: str) -> list[StoredEvent]:
    """All stored events of ``name`` in order; ExperimentNotFoundError if there is none."""
    if not store.has_experiment(name):
        raise ExperimentNotFoundError(f"experiment {name!r} not found in {store.url_for_display}")
    return store.read(name)


def _created(store: EventStore, name: str) -> ExperimentCreated:
    """The experiment's first event; ExperimentNotFoundError if there is none."""
    created = store.read_one(name, 1)
    if created is None:
        raise ExperimentNotFoundError(f"experiment {name!r} not found in {store.url_for_display}")
    assert isinstance(created.event, ExperimentCreated)
    return created.event


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
    store: EventStore,
    name: str,
    *,
    checkpoints: str | None = None,
    runner: ExperimentRunner | None = None,
    raw: bool = False,
) -> dict[str, Any]:
    """The JSON printed by ``rungflow status --json``.

    Keys: ``experiment``, ``state`` (running|finished|interrupted|cancelled|
    failed, see :mod:`schedulers.outcomes`) and ``reason`` (why it ended, or
    None), ``scheduler``, ``metric``, ``mode``, ``trials`` (id, config,
    ``status`` in the words of :mod:`schedulers.outcomes` (running, paused,
    completed, pruned, failed), ``reason`` (the scheduler's stop reason, or
    why a paused trial ended), ``error`` (``Type: first line``) if failed,
    ``started_at`` / ``ended_at`` (ISO timestamps of its first and last
    event), segments as ``{"start", "stop", "metrics", "finished_at"}`` in
    order), ``counts`` (trials per status), ``failures`` (``{"trials",
    "most_common", "most_common_count"}``), ``best``, ``resource_used``,
    ``imported`` (warm-start observations per source, see
    :func:`imported_summary`), ``checkpoints`` (``{"bytes", "files"}`` on
    disk now, after retention) and the scheduler's own ``extras`` (brackets,
    schedule records...).

    Never folds the whole log on a store the flow keeps up: the scheduler's
    state is the runner's latest snapshot plus the log's tail (see
    :meth:`flows.engine.runner.ExperimentRunner.restore`), and the rest comes
    from the ``results`` projection and a few event kinds read through their
    index (:func:`storage.projections.read_status_view`). A tail longer than
    :data:`~flows.engine.runner.SNAPSHOT_EVERY_EVENTS` leaves a snapshot for
    the next call. Projections that miss trials or results (an older
    rungflow, a hand-edited database: detected by counting) are rebuilt once;
    if they still disagree, the whole log is folded
    (:func:`experiment_status_from_log`, the same JSON).

    Args:
        store: The event store.
        name: Experiment name.
        checkpoints: Blob-store root; default ``RUNGFLOW_CHECKPOINTS``.
        runner: A runner that has folded this experiment (the flow's, after
            its run): it catches up with the log through ``store`` instead
            of loading a snapshot, if its scheduler is built exactly as the
            stored spec builds it (else it is not used).
        raw: Each trial row's ``segments`` as the
            :class:`~flows.engine.rawjson.RawJSON` text of the list, not
            decoded (for :func:`flows.engine.rawjson.dumps`, which writes the
            same text as ``json.dumps`` of the decoded document; only when
            the projections serve the view, else decoded as usual).
    """
    with gc_paused():  # ~10 containers per result, all kept (see gc_paused)
        view = None
        names: _Names
        if runner is None:
            # The view's queries run in the database (SQLite steps without the
            # GIL; PostgreSQL in its server) while this thread loads the
            # snapshot. The view is as of the log's end: read again if the
            # fold reached a later append.
            with ThreadPoolExecutor(1) as pool:
                ahead = pool.submit(store.status_view, name, store.last_seq(name))
                folded = _snapshot_scheduler(store, name)
                if folded is None:
                    names, runner = folded_runner(store, name)
                    scheduler, seq = runner.scheduler, runner.seq
                else:
                    names, scheduler, seq = folded
                view = ahead.result()
        else:
            names, runner = folded_runner(store, name, runner)
            scheduler, seq = runner.scheduler, runner.seq
        return _status_from_view(store, name, names, scheduler, seq, checkpoints, view, raw)


class _Names(Protocol):
    """What the status document names from the spec (an ExperimentSpec, or the stored one's)."""

    @property
    def scheduler(self) -> str: ...

    @property
    def metric(self) -> str: ...

    @property
    def mode(self) -> str: ...


@dataclass(frozen=True)
class _StoredNames:
    """:class:`_Names` read from the stored spec's JSON, without validating it."""

    scheduler: str
    metric: str
    mode: str


#: A snapshot this many events behind the log's end is left to
#: :func:`folded_runner`, which folds the tail and saves a snapshot there
#: (the runner's GC_FREEZE_EVENTS).
_LONG_TAIL = 10_000


def _snapshot_scheduler(store: EventStore, name: str) -> tuple[_Names, Scheduler, int] | None:
    """The scheduler folded to the log's end from the runner's latest snapshot
    plus the log's tail, without building a runner (nor validating the spec,
    nor importing the runner's modules: a third of ``status --json``'s time).

    The same state as :meth:`~flows.engine.runner.ExperimentRunner.restore`'s
    scheduler: the snapshot of exactly the version the stored spec's runner
    writes (:func:`flows.engine.snapshots.runner_state_version`), then every
    later event told to it. None when there is no such snapshot, it does not
    load, or it is :data:`_LONG_TAIL` events behind (see :func:`folded_runner`).

    Returns:
        The spec's names, the scheduler and the seq it has folded up to.

    Raises:
        ExperimentNotFoundError: unknown experiment.
    """
    from flows.engine.snapshots import runner_state_version

    stored = _created(store, name).spec
    try:
        snap = store.load_snapshot(name, runner_state_version(stored))
        if snap is None or store.last_seq(name) - snap.seq >= _LONG_TAIL:
            return None
        scheduler = loads(snap.state)["scheduler"]
    except Exception:  # a cache: whatever is wrong with it, the runner's path decides
        return None
    seq = snap.seq
    for record in store.read(name, after_seq=seq):
        scheduler.tell(record.event)
        seq = record.seq
    names = _StoredNames(str(stored["scheduler"]), str(stored["metric"]),
                         str(stored.get("mode", "min")))
    return names, scheduler, seq


def _status_from_view(
    store: EventStore,
    name: str,
    spec: _Names,
    scheduler: Scheduler,
    seq: int,
    checkpoints: str | None,
    view: StatusView | None = None,
    raw: bool = False,
) -> dict[str, Any]:
    if view is None or view.until_seq != seq:
        view = store.status_view(name, seq)
    if view.stale:
        log.info("%s: the trials/results projections miss rows; rebuilding them", name)
        with contextlib.suppress(Exception):  # read-only database: fold the log instead
            store.rebuild_projections(name)
        view = store.status_view(name, seq)
        if view.stale:
            return experiment_status_from_log(store, name, checkpoints=checkpoints)
    fold = _StatusFold()
    for _seq, event, stamp in view.events:
        fold.tell(event, stamp)
    if raw:
        fold.segments = {t: RawJSON(text) for t, text in view.segments.items()}
        fold.no_segments = RawJSON("[]")
    else:
        fold.segments = view.parsed_segments()
    fold.times = {t: [a, b] for t, (a, b) in view.times.items()}
    return _assemble(store, name, spec, scheduler, fold, fold.facts, checkpoints)


def run_end_status(
    store: EventStore, name: str, runner: ExperimentRunner | None = None
) -> dict[str, Any]:
    """The status the end of a flow run judges and publishes (verdict, final artifacts).

    :func:`end_view` of :func:`experiment_status`, read in O(trials) without
    a results scan: the scheduler's state is ``runner``'s (the flow's own,
    caught up with whatever was appended since: usually nothing), each
    trial's last metrics and segment count come from the ``trials``
    projection, and the few events of
    :data:`storage.projections.STATUS_KINDS` through their index. Neither
    the log nor ``results`` is read row by row, and the blob store is not
    listed (no artifact shows its usage). Stale projections, or a log that
    keeps moving while read, give :func:`end_view` of the full view.

    Args:
        store: The event store.
        name: Experiment name.
        runner: The flow's runner after its run; without one (a run that
            failed before its first result), the latest snapshot plus the
            log's tail (see :func:`folded_runner`).

    Raises:
        ExperimentNotFoundError: unknown experiment.
    """
    spec, runner = folded_runner(store, name, runner)
    with gc_paused():  # a few containers per trial, all kept (see gc_paused)
        tallies = None
        for _ in range(_END_READS):
            tallies = store.trial_tallies(name, runner.seq)
            if tallies is not None:
                break
            runner.catch_up()  # another runner appended: fold it, read again
        if tallies is None or tallies.stale or (
            tallies.last.keys() != runner.scheduler.trials.keys()
        ):
            return end_view(experiment_status(store, name, runner=runner))
        fold = _StatusFold()
        for _seq, event, stamp in tallies.events:
            fold.tell(event, stamp)
        last = tallies.last

        def facts(trial_id: str) -> dict[str, Any]:
            metrics, n_segments = last[trial_id]
            return {"metrics": metrics if n_segments else None, "n_segments": n_segments}

        return _assemble(store, name, spec, runner.scheduler, fold, facts, None, disk=False)


#: Reads of the end-of-run status before it gives up on a log that keeps moving.
_END_READS = 3


def end_view(status: dict[str, Any]) -> dict[str, Any]:
    """An :func:`experiment_status` document as :func:`run_end_status` gives it.

    Each trial row carries ``metrics`` (its last finished segment's, None
    before one) and ``n_segments`` in place of ``segments``, ``started_at``
    and ``ended_at``; there is no ``checkpoints`` key. Every other key and
    value, and the order of keys, is the full document's.
    """
    out = {k: v for k, v in status.items() if k not in ("checkpoints", "trials")}
    trials = []
    for t in status["trials"]:
        row: dict[str, Any] = {}
        for key, value in t.items():
            if key == "segments":
                row["metrics"] = value[-1]["metrics"] if value else None
                row["n_segments"] = len(value)
            elif key not in ("started_at", "ended_at"):
                row[key] = value
        trials.append(row)
    out["trials"] = trials
    return {k: out[k] for k in status if k in out}


def last_metrics(trial: dict[str, Any]) -> dict[str, Any] | None:
    """A trial row's last finished segment's metrics (None before one).

    Rows of :func:`experiment_status` list every segment; those of
    :func:`experiment_summary` and :func:`run_end_status` carry ``metrics``.
    """
    if "segments" in trial:
        return trial["segments"][-1]["metrics"] if trial["segments"] else None
    metrics: dict[str, Any] | None = trial["metrics"]
    return metrics


def segment_count(trial: dict[str, Any]) -> int:
    """How many segments a trial row of :func:`experiment_status` or
    :func:`run_end_status` finished."""
    if "segments" in trial:
        return len(trial["segments"])
    return int(trial["n_segments"])


def experiment_summary(
    store: EventStore, name: str, *, checkpoints: str | None = None
) -> dict[str, Any]:
    """What the table of ``rungflow status`` prints, read without folding.

    The keys of :func:`experiment_status` the table reads, equal to its
    values on the same store, except that each trial row carries its last
    finished segment's ``metrics`` (None before one) instead of every
    segment, and ``best`` has no checkpoint. Read from the ``trials``
    projection, the few events of :data:`storage.projections.SUMMARY_KINDS`
    (errors, stop reasons, retries, the end), one sum over ``results`` and
    the last start of each running trial; neither the scheduler's snapshot
    nor every result is loaded. ``best`` follows
    :meth:`schedulers.base.Scheduler.best_trial`: the score at the trial's
    current resource, read for the trials at the highest resource first.
    Stale projections give :func:`experiment_status` (which rebuilds them).

    Raises:
        ExperimentNotFoundError: unknown experiment.
    """
    # The stored spec was validated when written (ExperimentSpec.to_json, every
    # field): the three names are read without re-validating it, which would
    # import every scheduler's numerical stack.
    stored = _created(store, name).spec
    metric, mode = str(stored["metric"]), str(stored.get("mode", "min"))
    summary = store.status_summary(name)
    if summary.stale:
        return experiment_status(store, name, checkpoints=checkpoints)
    errors: dict[str, str] = {}
    reasons: dict[str, str] = {}
    last_failed: dict[str, int] = {}
    retried: dict[str, bool] = {}  # trial -> its last status event was a retry
    finished: ExperimentFinished | None = None
    resource_used = summary.finished_resource
    for seq, event in summary.events:
        if isinstance(event, SegmentFailed):
            # The scheduler counts a segment when it starts: failed ones too.
            resource_used += event.stop - event.start
            last_failed[event.trial_id] = seq
            if event.final:
                errors[event.trial_id] = event.error
        elif isinstance(event, TrialStopped):
            reasons[event.trial_id] = event.reason
        elif isinstance(event, ExperimentFinished):
            finished = event
        elif isinstance(event, TrialRetried):
            finished = None  # a retry reopens a finished experiment (flows.retry)
            errors.pop(event.trial_id, None)
        if event.trial is not None:
            retried[event.trial] = isinstance(event, TrialRetried)
    open_segments = 0
    for trial_id, (seq, start, stop) in summary.open_starts.items():
        if last_failed.get(trial_id, 0) < seq:  # not ended by a (retried) failure
            open_segments += 1
            resource_used += stop - start
    trials: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for trial_id, raw, config, resource, metrics, n_segments in summary.trials:
        raw = projected_status(raw, retried.get(trial_id, False))
        status = final_status(raw, finished is not None)
        row: dict[str, Any] = {
            "trial_id": trial_id,
            "config": config,
            "status": status,
            "resource": resource,
            "metrics": metrics if n_segments else None,
        }
        if status == "failed":
            if trial_id in errors:
                row["error"] = error_summary(errors[trial_id])
            elif trial_id in reasons:
                row["error"] = reasons[trial_id]
        elif trial_id in reasons:
            row["reason"] = reasons[trial_id]
        elif status != raw:
            row["reason"] = "never promoted before the experiment finished"
        counts[status] = counts.get(status, 0) + 1
        trials.append(row)
    best_json = _summary_best(store, name, metric, mode, summary.until_seq, trials)
    stored_state = store.experiment_state(name) or "running"
    state = "finished" if finished is not None else stored_state
    if state == "running" and open_segments and not _live_runner(store, name):
        state = "interrupted"
    return _status_document(
        name, state, finished,
        scheduler=stored.get("scheduler", "random"), metric=metric, mode=mode,
        resource_used=resource_used, trials=trials, counts=counts, best=best_json,
        checkpoints=checkpoints,
    )


def _summary_best(
    store: EventStore,
    name: str,
    metric: str,
    mode: str,
    until_seq: int,
    trials: list[dict[str, Any]],
) -> dict[str, Any] | None:
    """:meth:`~schedulers.base.Scheduler.best_trial` from the projection's rows.

    A trial's score is that of its latest result at its current resource
    (which a PBT exploit moves to the donor's): read for the trials at the
    highest resource first, going down only while none of them has one.
    """
    groups: dict[float, dict[str, float]] = {}
    for row in trials:
        if row["metrics"] is not None:
            groups.setdefault(row["resource"], {})[row["trial_id"]] = row["resource"]
    by_id = {row["trial_id"]: row for row in trials}
    for resource in sorted(groups, reverse=True):
        scored = []
        for trial_id, metrics in store.results_at(name, until_seq, groups[resource]).items():
            score = signed_score(metrics, metric, mode)
            if score is not None:
                scored.append((score, trial_id))
        if scored:
            score, trial_id = min(scored)
            best = by_id[trial_id]
            return {
                "trial_id": trial_id,
                "config": best["config"],
                "resource": resource,
                metric: score if mode == "min" else -score,
            }
    return None


def folded_runner(
    store: EventStore, name: str, runner: ExperimentRunner | None = None
) -> tuple[ExperimentSpec, ExperimentRunner]:
    """The stored spec and a runner holding the fold of ``name``'s whole log.

    Built from the latest snapshot plus the log's tail (a long tail leaves a
    snapshot for the next reader), or ``runner`` caught up through ``store``
    when its scheduler is built exactly as the stored spec builds it.

    Raises:
        ExperimentNotFoundError: unknown experiment.
    """
    from flows.engine.runner import GC_FREEZE_EVENTS, ExperimentRunner, runner_snapshot_version
    from flows.spec import stored_spec

    spec = stored_spec(_created(store, name))
    if (
        runner is not None
        and runner.name == name
        and runner.snapshot_version == runner_snapshot_version(spec)
    ):
        runner.store = store  # the flow's own store may be closed by now
        runner.catch_up()
        return spec, runner
    fresh = ExperimentRunner(store, spec, "")
    if fresh.restore() >= GC_FREEZE_EVENTS:
        # A long fold (an old store, a run that never snapshotted): leave a
        # snapshot for the next reader. Not after a short tail: pickling 10k
        # trials costs about what folding 10k events does.
        fresh.save_snapshot()
    return spec, fresh


#: Kinds ``rungflow export`` reads: the rows, each segment's config and the end.
EXPORT_KINDS = ("SegmentStarted", "SegmentFinished", "ExperimentFinished", "TrialRetried")


def export_events(store: EventStore, name: str) -> tuple[list[StoredEvent], dict[str, str]]:
    """What ``rungflow export`` needs: the stored events of :data:`EXPORT_KINDS`
    (through the kind index) and each trial's status word before the
    experiment's end is applied (from the folded scheduler, see :func:`folded_runner`).
    """
    _, runner = folded_runner(store, name)
    stored = store.read(name, until_seq=runner.seq, kinds=EXPORT_KINDS)
    return stored, {tid: t.status for tid, t in runner.scheduler.trials.items()}


def export_view(store: EventStore, name: str) -> ExportView | None:
    """What ``rungflow export`` reads from the projections, without folding
    or decoding the log (see :func:`storage.projections.read_export_view`);
    None when they do not cover the log (then :func:`export_events`).

    Raises:
        ExperimentNotFoundError: unknown experiment.
    """
    if not store.has_experiment(name):
        raise ExperimentNotFoundError(f"experiment {name!r} not found in {store.url_for_display}")
    view = store.export_view(name)
    return None if view.stale else view


def projected_status(raw: str, retried: bool) -> str:
    """A ``trials`` row's status word as the scheduler folds it.

    ``retried``: the trial's last error, stop or retry event is a
    ``TrialRetried``, which reopens a failed trial (rows written before
    retries were projected still say ``failed``).
    """
    return "paused" if raw == "failed" and retried else normalize_status(raw)


def experiment_status_from_log(
    store: EventStore, name: str, *, checkpoints: str | None = None
) -> dict[str, Any]:
    """:func:`experiment_status` by folding the whole log (the reference it must equal)."""
    records = read_records(store, name)
    from flows.spec import stored_spec

    spec = stored_spec(records[0].event)
    scheduler = spec.build_scheduler()
    fold = _StatusFold()
    for record in records:
        event = record.event
        scheduler.tell(event)
        stamp = record.created_at.isoformat()
        trial_id = event.trial
        if trial_id is not None and not event.coordination:
            fold.times.setdefault(trial_id, [stamp, stamp])[1] = stamp
        if isinstance(event, TrialCreated):
            fold.segments[event.trial_id] = []
        elif isinstance(event, SegmentFinished):
            fold.segments[event.trial_id].append(
                {"start": event.start, "stop": event.stop, "metrics": dict(event.metrics),
                 "finished_at": stamp}
            )
        fold.tell(event, record.created_at)
    return _assemble(store, name, spec, scheduler, fold, fold.facts, checkpoints)


class _StatusFold:
    """Per-trial facts of ``status`` that the scheduler's state does not keep."""

    def __init__(self) -> None:
        self.segments: dict[str, Any] = {}  # trial -> list of dicts, or RawJSON
        self.times: dict[str, list[str]] = {}
        self.errors: dict[str, str] = {}
        self.reasons: dict[str, str] = {}
        self.finished: ExperimentFinished | None = None
        self.imports: list[Event] = []
        #: A trial's segments before its first result (text when the rest are).
        self.no_segments: Any = None

    def tell(self, event: Event, stamp: Any) -> None:
        """Fold one event (only the kinds of :data:`storage.projections.STATUS_KINDS` matter)."""
        if isinstance(event, SegmentFailed):
            if event.final:
                self.errors[event.trial_id] = event.error
        elif isinstance(event, TrialStopped):
            self.reasons[event.trial_id] = event.reason
        elif isinstance(event, ExperimentFinished):
            self.finished = event
        elif isinstance(event, TrialRetried):
            self.finished = None  # a retry reopens a finished experiment (flows.retry)
            self.errors.pop(event.trial_id, None)
        elif isinstance(event, (ObservationImported, ImportCompleted)):
            self.imports.append(event)

    def facts(self, trial_id: str) -> dict[str, Any]:
        """The full view's per-trial keys after ``resource``: segments and times."""
        segments = self.segments.get(trial_id)
        if segments is None:
            segments = [] if self.no_segments is None else self.no_segments
        row: dict[str, Any] = {"segments": segments}
        if trial_id in self.times:
            row["started_at"], row["ended_at"] = self.times[trial_id]
        return row


def _assemble(
    store: EventStore,
    name: str,
    spec: _Names,
    scheduler: Scheduler,
    fold: _StatusFold,
    facts: Callable[[str], dict[str, Any]],
    checkpoints: str | None,
    *,
    disk: bool = True,
) -> dict[str, Any]:
    """The status JSON from the folded scheduler and the per-trial facts.

    ``facts(trial_id)`` gives the keys each trial row carries after
    ``resource`` (its segments and times, or its last metrics); ``disk``
    False leaves out the ``checkpoints`` usage.
    """
    errors, reasons = fold.errors, fold.reasons
    finished = fold.finished
    stored_state = store.experiment_state(name) or "running"
    trials = []
    counts: dict[str, int] = {}
    for t in scheduler.trials.values():
        status = final_status(t.status, finished is not None)
        row: dict[str, Any] = {
            "trial_id": t.trial_id,
            "config": t.config,
            "status": status,
            "resource": t.resource,
            **facts(t.trial_id),
        }
        if status == "failed":
            if t.trial_id in errors:
                row["error"] = error_summary(errors[t.trial_id])
            elif t.trial_id in reasons:
                row["error"] = reasons[t.trial_id]
        elif t.trial_id in reasons:
            row["reason"] = reasons[t.trial_id]
        elif status != t.status:
            row["reason"] = "never promoted before the experiment finished"
        counts[status] = counts.get(status, 0) + 1
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
    state = "finished" if finished is not None else stored_state
    if state == "running" and scheduler.running and not _live_runner(store, name):
        state = "interrupted"  # open segments, nobody heartbeating: a killed run
    return _status_document(
        name, state, finished,
        scheduler=spec.scheduler, metric=spec.metric, mode=spec.mode,
        resource_used=scheduler.resource_used, trials=trials, counts=counts, best=best_json,
        checkpoints=checkpoints, disk=disk,
        extras=scheduler.status_extras(), imported=imported_summary(fold.imports),
    )


def _status_document(
    name: str,
    state: str,
    finished: ExperimentFinished | None,
    *,
    scheduler: str,
    metric: str,
    mode: str,
    resource_used: float,
    trials: list[dict[str, Any]],
    counts: dict[str, int],
    best: dict[str, Any] | None,
    checkpoints: str | None,
    disk: bool = True,
    **more: Any,
) -> dict[str, Any]:
    """The status document both views print, in one key order (``more`` goes last).

    A finished search in which every trial failed, or none reported the
    metric, is ``failed``; the reason is derived from the document. ``disk``
    False leaves out ``checkpoints`` (listing the blob store costs a call
    per file on some stores).
    """
    if state == "finished" and trials and (
        counts.get("failed", 0) == len(trials) or best is None
    ):
        state = "failed"  # the search ended, but nothing in it worked
    failed_errors = [r["error"] for r in trials if r["status"] == "failed" and "error" in r]
    common = most_common_error(failed_errors)
    data: dict[str, Any] = {
        "experiment": name,
        "state": state,
        "reason": None,
        "scheduler": scheduler,
        "metric": metric,
        "mode": mode,
        "resource_used": resource_used,
        "n_trials": len(trials),
        "counts": counts,
        "failures": {
            "trials": counts.get("failed", 0),
            "most_common": None if common is None else common[0],
            "most_common_count": 0 if common is None else common[1],
        },
        "trials": trials,
        "best": best,
        **(
            {"checkpoints": checkpoint_usage(
                checkpoints or get_settings().resolved_checkpoints, name)}
            if disk else {}
        ),
        **more,
    }
    data["reason"] = experiment_reason(data, None if finished is None else finished.reason)
    return data


def _live_runner(store: EventStore, name: str) -> bool:
    """Whether any runner still holds a lease on ``name`` (see flows.engine.leases)."""
    try:
        leases = store.leases(name)
    except Exception:  # status is a view: a missing lease table must not break it
        return True
    return _any_live(leases)


def _any_live(leases: Mapping[str, Any]) -> bool:
    """Whether one of ``leases`` has a live holder: young, and not a dead process here."""
    from flows.engine.leases import LeaseSettings, Owner, pid_alive

    me, timeout = Owner.current(LeaseSettings().worker_host), LeaseSettings().lease_timeout
    for lease in leases.values():
        if lease.host == me.host and not pid_alive(lease.pid):
            continue
        if lease.age <= timeout:
            return True
    return False


def listed_state(store: EventStore, name: str, stored_state: str) -> str:
    """The state ``rungflow list`` shows for ``name`` (stored as ``stored_state``).

    A runner killed with SIGKILL cannot record that it stopped, so its
    experiment stays stored as running. Once every lease on it has expired
    with no live holder (or its process on this machine is gone), no runner is
    working on it: it reads "interrupted", as in ``status``. Without a lease
    (a runner still starting) the stored state stands.
    """
    if stored_state != "running":
        return stored_state
    try:
        leases = store.leases(name)
    except Exception:  # a view: a missing lease table must not break it
        return stored_state
    if leases and not _any_live(leases):
        return "interrupted"
    return stored_state


def experiment_reason(status: dict[str, Any], finished_reason: str | None = None) -> str | None:
    """Why the experiment is in its state, in one line (None while running well).

    ``finished``: the scheduler's reason (``budget exhausted``...). ``failed``:
    the most common trial error, or that no trial reported the metric.
    ``cancelled`` / ``interrupted``: the flow run was stopped; the log keeps
    every finished segment and ``rungflow run`` resumes it.
    """
    state = status["state"]
    failures = status["failures"]
    n = status["n_trials"]
    if state == "finished":
        return finished_reason
    if state == "failed":
        if failures["most_common"] is not None and failures["trials"]:
            return (
                f"{failures['trials']} of {n} trial(s) failed; most common error "
                f"({failures['most_common_count']}x): {failures['most_common']}"
            )
        if status["best"] is None:
            return f"no trial reported the metric {status['metric']!r}"
        return "the flow run failed; see its logs"
    if state == "cancelled":
        return "the flow run was cancelled; `rungflow run` resumes it"
    if state == "interrupted":
        return "the flow run was interrupted; `rungflow run` resumes it"
    return None


def run_verdict(status: dict[str, Any]) -> str | None:
    """The message a flow run should fail with, or None if it succeeded.

    A run fails when its experiment ended and every trial failed or no trial
    ever reported the metric: a green run with an empty leaderboard hides
    the error (``KeyError: 'width'``) in the logs.
    """
    if status["state"] != "failed":
        return None
    return str(status["reason"] or "the experiment failed")


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
