"""Prefect artifacts for an experiment: live progress, leaderboard, summary.

Three artifacts per flow run, keyed by experiment so the Prefect UI's
Artifacts page keeps one history per experiment across runs and resumes:

* ``rungflow-<experiment>-progress``: a progress artifact, updated as segments
  finish. Updates are throttled (at most one API call per ``min_interval``
  seconds) because :meth:`ExperimentArtifacts.__call__` runs on the flow's hot
  path after every recorded result; the final update is never skipped.
* ``rungflow-<experiment>-leaderboard``: a table of the top trials by metric at
  their highest resource (the ranking of ``rungflow status``), live: created
  at the first result and updated in place at most every ``live_interval``
  seconds, then a final time at the end (with failed trials and their errors).
* ``rungflow-<experiment>-curves``: markdown with the learning curves as an
  embedded PNG (:mod:`flows.curves_image`; a note if matplotlib is missing),
  updated with the leaderboard.
* ``rungflow-<experiment>-summary``: markdown with the experiment's state and
  reason, scheduler, budget used, trial outcomes, failures (most common error
  first) and the best trial with its checkpoint *key* (relative to the
  checkpoint store; never a path or URL, which may carry credentials).

Live updates stay off the flow's hot path: the hook only reads a clock until
an update is due; then it copies what the update needs from the scheduler
(the top rows only: one pass reading two attributes per trial, ~2 ms at 10k
trials; the progress fraction is a counter the fold keeps) and hands the
copy to one background thread, which builds the table, renders the PNG and
calls the API.

Storage locations never appear in any of them. Artifact failures are logged
and swallowed: a flaky API must not fail an experiment whose state is safe in
the event log anyway. ``RUNGFLOW_ARTIFACTS=off`` turns them off.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any
from uuid import UUID

from flows.engine.status import last_metrics, run_end_status, segment_count
from flows.spec import ExperimentSpec
from schedulers.outcomes import TRIAL_STATUSES

if TYPE_CHECKING:
    from flows.engine.runner import ExperimentRunner, RunSummary
    from schedulers.base import Scheduler

__all__ = [
    "ExperimentArtifacts",
    "LiveSnapshot",
    "artifact_key",
    "leaderboard_rows",
    "live_rows",
    "live_snapshot",
    "progress_fraction",
    "summary_markdown",
]

log = logging.getLogger("rungflow")

_KEY_UNSAFE = re.compile(r"[^a-z0-9-]+")
#: Failed trials listed in the summary artifact.
_FAILED_SHOWN = 20


def artifact_key(experiment: str, kind: str) -> str:
    """``rungflow-<experiment>-<kind>`` in Prefect's key alphabet (``[a-z0-9-]``)."""
    slug = _KEY_UNSAFE.sub("-", experiment.lower()).strip("-") or "experiment"
    return f"rungflow-{slug}-{kind}"


def progress_fraction(spec: ExperimentSpec, scheduler: Scheduler) -> float | None:
    """Estimated share of the budget spent, in [0, 1]; None if unknowable.

    1.0 once the scheduler has finished. Exact for ``budget.max_resource`` and
    for random/fifo search with
    ``max_trials`` (every trial runs to ``max_t``). For early-stopping schedulers
    with only ``max_trials`` it counts trials that can no longer run.
    """
    if scheduler.finished:
        return 1.0  # HyperBand rarely spends exactly its max_trials; done is done
    budget = spec.budget
    if budget.max_resource is not None:
        return min(1.0, scheduler.resource_used / budget.max_resource)
    if budget.max_trials is None:
        return None
    max_t = spec.scheduler_args.get("max_t")
    if spec.scheduler in ("random", "fifo") and isinstance(max_t, (int, float)) and max_t > 0:
        return min(1.0, scheduler.resource_used / (budget.max_trials * float(max_t)))
    # A counter the fold keeps: this runs on the flow thread every few seconds.
    return min(1.0, scheduler.n_ended / budget.max_trials)


def _fmt(value: Any) -> Any:
    return float(f"{value:.6g}") if isinstance(value, float) else value


def leaderboard_rows(status: dict[str, Any], limit: int = 10) -> list[dict[str, Any]]:
    """Top trials of a status document, one flat dict per trial.

    ``status`` is :func:`~flows.engine.status.experiment_status`'s or
    :func:`~flows.engine.status.run_end_status`'s (equal rows from either).
    Columns: ``rank``, ``trial_id``, ``status``, ``resource``, the metric (at
    the trial's highest resource), then one column per hyperparameter.
    """
    metric, sign = status["metric"], (1 if status["mode"] == "min" else -1)
    ranked = []
    for t in status["trials"]:
        metrics = last_metrics(t)
        if metrics is not None and metrics.get(metric) is not None:
            value = metrics[metric]
            ranked.append(((-t["resource"], sign * value, t["trial_id"]), t, value))
    ranked.sort(key=lambda r: r[0])
    rows = []
    for rank, (_, t, value) in enumerate(ranked[:limit], start=1):
        row: dict[str, Any] = {
            "rank": rank,
            "trial_id": t["trial_id"],
            "status": t["status"],
            "resource": _fmt(float(t["resource"])),
            metric: _fmt(float(value)),
        }
        row.update({k: _fmt(v) for k, v in t["config"].items()})
        rows.append(row)
    return rows


@dataclass(frozen=True)
class LiveTrial:
    """What the live leaderboard and curves need of one trial (a copy)."""

    trial_id: str
    status: str
    resource: float
    score: float | None  # rungflow's signed score (lower is better)
    config: dict[str, Any]
    history: tuple[tuple[float, float], ...]  # (resource, score); only for drawn trials


@dataclass(frozen=True)
class LiveSnapshot:
    """A consistent copy of the scheduler's top trials, taken on the flow thread."""

    metric: str
    mode: str
    trials: tuple[LiveTrial, ...]  # the top of the ranking only
    best: str | None
    ranked: int  # trials with a score
    n_trials: int  # trials in all

    def value(self, score: float) -> float:
        """A signed score back as the user reported it."""
        return score if self.mode == "min" else -score

    def curves(self) -> dict[str, list[tuple[float, float]]]:
        """``trial_id -> [(resource, metric as reported)]`` of the trials drawn."""
        return {
            t.trial_id: [(r, self.value(v)) for r, v in t.history]
            for t in self.trials
            if t.history
        }


def live_snapshot(spec: ExperimentSpec, scheduler: Scheduler, limit: int = 10) -> LiveSnapshot:
    """Copy what a live update needs, so the background thread never reads live state.

    This runs on the flow thread, so it copies as little as it can: the top
    ``limit`` trials of the leaderboard's ranking and the best
    :data:`~flows.curves_image.MAX_CURVES` (the curves image draws those,
    with their report history), found in one pass that reads two attributes
    per trial, plus the two counts the table's description names. Copying
    every trial instead cost ~20 ms at 10k trials, a stall of the decision loop.
    """
    import heapq

    from flows.curves_image import MAX_CURVES

    trials = scheduler.trials
    # (-resource, score, id): the leaderboard's order (see leaderboard_rows),
    # compared as plain tuples; score is TrialState.last_score without the call.
    scored = [
        (-t.resource, score, t.trial_id)
        for t in trials.values()
        if (score := t.results.get(t.resource)) is not None
    ]
    top = heapq.nsmallest(max(limit, MAX_CURVES), scored)
    drawn = {trial_id for _, _, trial_id in top[:MAX_CURVES]}
    picked = [(trials[trial_id], score) for _, score, trial_id in top]
    copied = tuple(
        LiveTrial(
            t.trial_id,
            t.status,
            t.resource,
            score,
            t.config,  # replaced, never mutated, by the fold
            tuple(t.history) if t.trial_id in drawn else (),
        )
        for t, score in picked
    )
    best = scheduler.best_trial()
    return LiveSnapshot(spec.metric, spec.mode, copied, None if best is None else best.trial_id,
                        ranked=len(scored), n_trials=len(scheduler.trials))


def live_rows(snap: LiveSnapshot, limit: int = 10) -> list[dict[str, Any]]:
    """The live leaderboard: the same columns and ranking as :func:`leaderboard_rows`."""
    status = {
        "metric": snap.metric,
        "mode": snap.mode,
        "trials": [
            {
                "trial_id": t.trial_id,
                "status": t.status,
                "resource": t.resource,
                "config": t.config,
                "metrics": None if t.score is None else {snap.metric: snap.value(t.score)},
            }
            for t in snap.trials
        ],
    }
    return leaderboard_rows(status, limit)


def _ranked_count(status: dict[str, Any]) -> int:
    metric = status["metric"]
    return sum(
        1 for t in status["trials"]
        if (metrics := last_metrics(t)) is not None and metrics.get(metric) is not None
    )


def summary_markdown(
    spec: ExperimentSpec, status: dict[str, Any], summary: RunSummary | None
) -> str:
    """The end-of-run markdown: what ran, what it cost, what won (``status`` as in
    :func:`leaderboard_rows`)."""
    budget = spec.budget
    n_segments = sum(segment_count(t) for t in status["trials"])
    used = [f"{status['n_trials']} trial(s)"]
    if budget.max_trials is not None:
        used[0] += f" of {budget.max_trials}"
    resource = f"resource {status['resource_used']:g}"
    if budget.max_resource is not None:
        resource += f" of {budget.max_resource:g}"
    used += [resource, f"{n_segments} finished segment(s)"]
    args = json.dumps(spec.scheduler_args, sort_keys=True)
    counts = status.get("counts") or {}
    outcomes = ", ".join(f"{counts[k]} {k}" for k in TRIAL_STATUSES if counts.get(k)) or "none"
    lines = [
        f"# Experiment `{status['experiment']}`: {status['state']}",
        "",
    ]
    if status.get("reason"):
        lines += [f"**{status['state']}**: {status['reason']}", ""]
    lines += [
        "| | |",
        "|---|---|",
        f"| scheduler | `{spec.scheduler}` {args} |",
        f"| metric | `{spec.metric}` ({spec.mode}) |",
        f"| budget used | {', '.join(used)} |",
        f"| trials | {outcomes} |",
    ]
    if summary is not None:
        lines.append(
            f"| this flow run | {summary.segments_run} segment(s) run, "
            f"{summary.segments_failed} failed, {summary.resumed_segments} resumed |"
        )
    best = status["best"]
    if best is not None:
        config = ", ".join(f"`{k}={_fmt(v)}`" for k, v in best["config"].items())
        lines += [
            f"| best trial | `{best['trial_id']}` |",
            f"| best {spec.metric} | {_fmt(float(best[spec.metric]))} at resource "
            f"{best['resource']:g} |",
            f"| best config | {config} |",
        ]
        if best.get("checkpoint"):
            lines.append(
                f"| checkpoint | `{best['checkpoint']}` (key in the `RUNGFLOW_CHECKPOINTS` store) |"
            )
    else:
        lines += ["", f"No trial has reported the metric `{spec.metric}`."]
    failed = [t for t in status["trials"] if t["status"] == "failed"]
    if failed:
        lines += ["", f"## Failed trials ({len(failed)})", "", "| trial | resource | error |",
                  "|---|---|---|"]
        for t in failed[:_FAILED_SHOWN]:
            error = str(t.get("error", "?")).replace("|", "\\|")
            lines.append(f"| `{t['trial_id']}` | {t['resource']:g} | `{error}` |")
        if len(failed) > _FAILED_SHOWN:
            lines.append(f"| ... | | {len(failed) - _FAILED_SHOWN} more: `rungflow status --all` |")
    return "\n".join(lines) + "\n"


class ExperimentArtifacts:
    """Creates and updates one flow run's artifacts; an ``on_progress`` hook.

    Use as a context manager around the run: the final progress update, the
    leaderboard and the summary are written on exit, also when the run fails.

    Args:
        spec: The experiment (after any per-run renaming).
        min_interval: Seconds between progress updates (throttle).
        live_interval: Seconds between updates of the live leaderboard and
            learning curves (rendering a PNG costs the background thread
            ~100 ms, so they go less often than the progress).
        leaderboard_size: Trials in the leaderboard table.
        clock: Monotonic clock (injected by tests).
    """

    def __init__(
        self,
        spec: ExperimentSpec,
        *,
        min_interval: float = 2.0,
        live_interval: float = 6.0,
        leaderboard_size: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.min_interval = min_interval
        self.leaderboard_size = leaderboard_size
        self.clock = clock
        self.live_interval = live_interval
        self.summary: RunSummary | None = None
        #: The final status (:func:`~flows.engine.status.run_end_status`) if
        #: the flow already computed it (its verdict does); :meth:`publish`
        #: then uses it as it is.
        self.status: dict[str, Any] | None = None
        self.updates = 0  # API calls made for progress, for tests and benchmarks
        self.live_updates = 0  # leaderboard + curves updates made, likewise
        self._progress_id: UUID | None = None
        self._table_id: UUID | None = None
        self._curves_id: UUID | None = None
        self._last_live = float("-inf")
        self._runner: ExperimentRunner | None = None
        self._last = float("-inf")
        self._last_fraction = 0.0
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None

    @property
    def runner(self) -> ExperimentRunner | None:
        """The flow's runner, once a result was recorded (None before)."""
        return self._runner

    # ------------------------------------------------------------- progress
    def __call__(self, runner: ExperimentRunner) -> None:
        """Progress hook: a clock read unless ``min_interval`` has passed.

        The API call itself runs on a background thread (one at a time; an
        update due while the previous one is still in flight is skipped), so
        the flow loop never waits for the Prefect API: under load one call
        takes ~100 ms, the length of many no-op segments.
        """
        self._runner = runner
        now = self.clock()
        if now - self._last < self.min_interval:
            return
        if self._pending is not None and not self._pending.done():
            return  # the API is slow right now; try again at the next result
        self._last = now
        fraction = progress_fraction(self.spec, runner.scheduler)
        s = runner.summary
        description = (
            f"{self.spec.name}: {s.segments_run} segment(s) run, {s.segments_failed} failed"
        )
        snap = None
        if now - self._last_live >= self.live_interval:
            self._last_live = now
            # The only read of live state: the top rows, not every trial.
            snap = live_snapshot(self.spec, runner.scheduler, self.leaderboard_size)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rungflow-artifacts")
        # Run in a copy of this thread's context: Prefect finds the flow run
        # the artifact belongs to through context variables.
        context = contextvars.copy_context()
        self._pending = self._pool.submit(context.run, self._update, fraction, description, snap)

    def flush(self) -> None:
        """Wait for the progress update in flight, if any."""
        if self._pending is not None:
            self._pending.result()

    def _update(
        self, fraction: float | None, description: str, snap: LiveSnapshot | None
    ) -> None:
        """Background thread: the progress, then (when due) leaderboard and curves."""
        self._set_progress(fraction, description)
        if snap is not None:
            rows = live_rows(snap, self.leaderboard_size)
            self._set_live(rows, snap.ranked, snap.n_trials, snap=snap)

    def _set_live(
        self,
        rows: list[dict[str, Any]],
        ranked: int,
        n_trials: int,
        *,
        snap: LiveSnapshot | None = None,
        curves: dict[str, list[tuple[float, float]]] | None = None,
        best: str | None = None,
        final: bool = False,
    ) -> None:
        """Create, then update in place, the leaderboard table and curves artifacts."""
        from flows.curves_image import curves_markdown

        name, metric = self.spec.name, self.spec.metric
        when = "final" if final else "live"
        description = (
            f"{name} ({when}): top {len(rows)} of {ranked} reporting {metric} "
            f"({n_trials} in all), ranked by {metric} at their highest resource"
        )
        if snap is not None:
            best = snap.best
            curves = snap.curves()
        try:
            self._table_id = self._put(
                self._table_id, "table", "leaderboard", json.dumps(rows), description
            )
            if curves is not None:
                markdown = curves_markdown(
                    curves, metric=metric, best=best,
                    title=f"{name}: {metric} by resource ({when}, {len(curves)} trials)",
                )
                self._curves_id = self._put(
                    self._curves_id, "markdown", "curves", markdown,
                    f"Learning curves of {name} ({when})",
                )
            self.live_updates += 1
        except Exception as exc:  # the event log is the truth; artifacts are a view
            log.warning("could not update the live artifacts: %s", type(exc).__name__)

    def _put(
        self, artifact_id: UUID | None, type_: str, kind: str, data: str, description: str
    ) -> UUID:
        """Create the artifact ``kind`` once (keyed, in this flow run), then PATCH it."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import ArtifactCreate, ArtifactUpdate
        from prefect.context import FlowRunContext, TaskRunContext

        with get_client(sync_client=True) as client:
            if artifact_id is not None:
                client.update_artifact(
                    artifact_id, ArtifactUpdate(data=data, description=description)
                )
                return artifact_id
            flow_ctx, task_ctx = FlowRunContext.get(), TaskRunContext.get()
            created = client.create_artifact(
                ArtifactCreate(
                    key=artifact_key(self.spec.name, kind),
                    type=type_,
                    description=description,
                    data=data,
                    flow_run_id=None
                    if flow_ctx is None or flow_ctx.flow_run is None
                    else flow_ctx.flow_run.id,
                    task_run_id=None if task_ctx is None else task_ctx.task_run.id,
                )
            )
            return created.id

    def _set_progress(self, fraction: float | None, description: str) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        if fraction is not None:
            self._last_fraction = fraction
        percent = round(100.0 * self._last_fraction, 2)
        try:
            if self._progress_id is None:
                created: Any = create_progress_artifact(
                    progress=percent,
                    key=artifact_key(self.spec.name, "progress"),
                    description=description,
                    _sync=True,  # type: ignore[call-arg]
                )
                self._progress_id = created
            else:
                update_progress_artifact(
                    self._progress_id, percent, description=description, _sync=True  # type: ignore[call-arg]
                )
            self.updates += 1
        except Exception as exc:  # the event log is the truth; artifacts are a view
            log.warning("could not update the progress artifact: %s", type(exc).__name__)

    # ---------------------------------------------------------------- end
    def __enter__(self) -> ExperimentArtifacts:
        self._set_progress(0.0, f"{self.spec.name}: starting")
        self._last = self.clock()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)  # the last update lands before the final one
        self.publish(failed=exc_type is not None)

    def publish(self, failed: bool = False) -> None:
        """Write the final progress, the leaderboard table and the summary."""
        from prefect.artifacts import create_markdown_artifact

        from flows.settings import get_settings
        from storage import EventStore

        try:
            store = EventStore(get_settings().resolved_database_url)
            try:
                if not store.has_experiment(self.spec.name):
                    return  # failed before anything was written: nothing to show
                # The verdict's status, or the run's own runner caught up: no
                # snapshot to load, no log to fold, no results scan.
                status = self.status
                if status is None or failed:
                    status = run_end_status(store, self.spec.name, self._runner)
            finally:
                store.close()
            if failed and status["state"] == "running":
                status["state"] = "failed"
            ended = status["state"] == "finished" or (
                status["state"] == "failed" and not failed
            )
            self._set_progress(
                1.0 if ended else None,
                f"{self.spec.name}: {status['state']}, resource {status['resource_used']:g}",
            )
            rows = leaderboard_rows(status, self.leaderboard_size)
            # The run is over: reading the runner's scheduler here is safe.
            runner = self._runner
            snap = None if runner is None else live_snapshot(self.spec, runner.scheduler)
            self._set_live(rows, _ranked_count(status), status["n_trials"], snap=snap, final=True)
            create_markdown_artifact(
                markdown=summary_markdown(self.spec, status, self.summary),
                key=artifact_key(self.spec.name, "summary"),
                description=f"Summary of {self.spec.name}",
            )
        except Exception as exc:
            log.warning("could not write the experiment artifacts: %s", type(exc).__name__)
