"""Export a rungflow experiment to an Optuna study.

Optuna users keep their tools: after :func:`export_to_optuna`,
``optuna-dashboard STORAGE_URL``, ``optuna.visualization`` (intermediate
values, parallel coordinates, parameter importances) and
``study.trials_dataframe()`` work on a rungflow experiment.

How the event log maps onto a study:

* one Optuna trial per rungflow trial, in creation order (trial ``number`` i is
  the i-th ``TrialCreated``); ``user_attrs["rungflow_trial_id"]`` keeps the id;
* ``params`` / ``distributions``: the trial's config under the experiment's
  stored search space. For PBT, whose configs change over a trial's life, the
  config in force at the trial's last segment is exported and every config it
  had is kept in ``user_attrs["rungflow_configs"]``. A value the stored
  distribution does not contain (impossible for samplers, possible for a
  hand-written ``initial_configs`` entry) is left out of ``params`` and named
  in ``user_attrs["rungflow_params_outside_space"]``;
* ``intermediate_values[step]``: every report of the metric, keyed by
  resource. Optuna steps are integers, so a resource ``r`` becomes step
  ``round(r * step_scale)`` where ``step_scale`` is the smallest power of ten
  (1, 10, ..., 10**6) that makes every reported resource of the experiment an
  integer; it is 1 when resources are whole epochs and is stored as
  ``study.user_attrs["rungflow_step_scale"]``. When a resource is reported
  twice (a PBT member that exploited a donor trains over the same range
  again), the later report wins;
* ``value``: the metric at the trial's highest resource (the last report of
  its last finished segment), with the sign the user reported, not rungflow's
  internal "lower is better" score;
* ``state`` follows rungflow's trial outcome (:mod:`schedulers.outcomes`, the
  word ``rungflow status`` prints): ``failed`` is ``FAIL``; ``completed`` is
  ``COMPLETE``, as is any trial that reached the scheduler's ``max_t`` (or,
  for schedulers without one, the highest resource any trial reached);
  ``pruned`` (culled at a rung, stopped early, left paused when the experiment
  finished) and trials still paused or running are ``PRUNED``, carrying their
  last value as Optuna does for pruned trials. A trial with finished segments
  but no value of the metric is ``FAIL``;
* ``direction``: ``minimize`` for ``mode: min``, ``maximize`` for ``max``;
* ``user_attrs``: ``rungflow_trial_id``, ``rungflow_resource``,
  ``rungflow_status``, ``rungflow_metrics`` (every metric of the final report)
  and, where there is one, ``rungflow_stop_reason`` / ``rungflow_error``;
  the study gets ``rungflow_experiment``, ``rungflow_scheduler``,
  ``rungflow_metric`` and ``rungflow_step_scale``, and its objective is named
  after the metric (``study.set_metric_names``), so optuna-dashboard labels
  the axis ``loss`` rather than ``Objective 0``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from flows.engine.status import read_records
from flows.spec import ExperimentSpec, stored_spec
from schedulers import (
    ExperimentFinished,
    SegmentFailed,
    SegmentFinished,
    SegmentStarted,
    TrialCreated,
    TrialPerturbed,
    TrialRetried,
    TrialStopped,
)
from schedulers.outcomes import final_status, next_status
from storage import EventStore, StoredEvent

__all__ = ["StudyExistsError", "export_to_optuna", "step_scale"]

#: Largest scale tried when mapping float resources to integer steps.
_MAX_SCALE_EXPONENT = 6
_EPS = 1e-9


class StudyExistsError(ValueError):
    """The target study already exists (pass ``overwrite=True`` to replace it)."""


@dataclass
class _TrialRecord:
    """What the export needs of one trial, folded from its events."""

    trial_id: str
    config: dict[str, Any]
    started_at: datetime
    ended_at: datetime
    configs: list[dict[str, Any]] = field(default_factory=list)
    intermediate: dict[float, float] = field(default_factory=dict)
    resource: float = 0.0
    final_metrics: dict[str, Any] | None = None
    failed: bool = False
    error: str | None = None
    stop_reason: str | None = None
    running: bool = False
    status: str = "paused"


def step_scale(resources: Sequence[float]) -> int:
    """Smallest power of ten that turns every resource into an integer step.

    Args:
        resources: Every resource at which a metric was reported.

    Returns:
        1 for whole-number resources (epochs), 10 for tenths, ... up to 10**6;
        beyond that resources are rounded at 10**6.

    Example:
        >>> step_scale([1.0, 3.0, 9.0]), step_scale([0.5, 1.25]), step_scale([])
        (1, 100, 1)
    """
    for exponent in range(_MAX_SCALE_EXPONENT + 1):
        scale = 10**exponent
        if all(abs(r * scale - round(r * scale)) < 1e-6 for r in resources):
            return scale
    return 10**_MAX_SCALE_EXPONENT


def _fold(events: Sequence[StoredEvent], metric: str) -> list[_TrialRecord]:
    trials: dict[str, _TrialRecord] = {}
    finished = False
    for stored in events:
        event = stored.event
        if isinstance(event, ExperimentFinished):
            finished = True
        elif isinstance(event, TrialRetried):
            finished = False
        if isinstance(event, TrialCreated):
            trials[event.trial_id] = _TrialRecord(
                event.trial_id,
                dict(event.config),
                stored.created_at,
                stored.created_at,
                configs=[dict(event.config)],
            )
            continue
        trial_id = getattr(event, "trial_id", None)
        if trial_id is None or trial_id not in trials:
            continue
        t = trials[trial_id]
        t.ended_at = stored.created_at
        t.status = next_status(t.status, event) or t.status
        if isinstance(event, SegmentStarted):
            t.running = True
            if dict(event.config) != t.config:
                t.config = dict(event.config)
                t.configs.append(dict(event.config))
        elif isinstance(event, SegmentFinished):
            t.running = False
            for report in event.reports:
                value, resource = _number(report.get(metric)), _number(report.get("resource"))
                if value is not None and resource is not None:
                    t.intermediate[resource] = value
            # Highest resource wins; at equal resource, the later segment (a
            # PBT member re-trained over the same range after an exploit).
            if event.stop >= t.resource - _EPS:
                t.resource = float(event.stop)
                t.final_metrics = dict(event.metrics)
        elif isinstance(event, SegmentFailed):
            t.running = False
            if event.final:
                t.failed = True
                t.error = event.error
        elif isinstance(event, TrialRetried):
            # `rungflow retry` un-fails the trial, as the schedulers' fold does.
            t.failed = False
            t.error = None
        elif isinstance(event, TrialStopped):
            t.stop_reason = event.reason
        elif isinstance(event, TrialPerturbed):
            t.config = dict(event.new_config)
            t.configs.append(dict(event.new_config))
    for t in trials.values():
        t.status = final_status(t.status, finished)
    return list(trials.values())


def _number(value: Any) -> float | None:
    """``value`` as a finite float; None for anything else (None, NaN, bool, text)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _params(
    config: Mapping[str, Any], space: Mapping[str, BaseDistribution]
) -> tuple[dict[str, Any], dict[str, BaseDistribution], list[str]]:
    """Config values the stored distributions contain, and the names left out."""
    params: dict[str, Any] = {}
    dists: dict[str, BaseDistribution] = {}
    outside: list[str] = []
    for name, dist in space.items():
        if name not in config:
            continue
        value = config[name]
        try:
            contained = dist._contains(dist.to_internal_repr(value))
        except (ValueError, TypeError):
            contained = False
        if contained:
            params[name] = value
            dists[name] = dist
        else:
            outside.append(name)
    return params, dists, outside


def _max_t(spec: ExperimentSpec, records: Sequence[_TrialRecord]) -> float:
    """The resource at which a trial counts as complete."""
    # Scheduler arguments are validated, so max_t (when the scheduler takes
    # one) is a positive number; schedulers without it (PBT with
    # max_generations, FIFO without max_t) fall back to the furthest trial.
    value = _number(spec.scheduler_args.get("max_t"))
    if value is not None:
        return value
    reached = [r.resource for r in records if r.final_metrics is not None]
    return max(reached, default=math.inf)


def export_to_optuna(
    store: EventStore,
    experiment: str,
    storage_url: str,
    study_name: str | None = None,
    *,
    overwrite: bool = False,
) -> str:
    """Write experiment ``experiment`` as an Optuna study (see the module docs).

    Args:
        store: The rungflow event store holding the experiment.
        experiment: Experiment name.
        storage_url: Optuna storage URL, e.g. ``sqlite:///optuna.db`` (what
            ``optuna-dashboard`` opens) or a PostgreSQL URL.
        study_name: Name of the new study; defaults to the experiment name.
        overwrite: Delete an existing study of that name first. Without it an
            existing study is an error, so an export never mixes two runs.

    Returns:
        The study name.

    Raises:
        ExperimentNotFoundError: the experiment is not in ``store``.
        StudyExistsError: the study exists and ``overwrite`` is False.

    Example:
        ``export_to_optuna(EventStore("sqlite:///.rungflow/rungflow.db"), "digits",
        "sqlite:///optuna.db")`` then ``optuna-dashboard sqlite:///optuna.db``.
    """
    events = read_records(store, experiment)
    spec = stored_spec(events[0].event)
    records = _fold(events, spec.metric)
    space = spec.search_space
    scale = step_scale([r for t in records for r in t.intermediate])
    max_t = _max_t(spec, records)
    name = study_name or experiment

    storage = optuna.storages.get_storage(storage_url)
    existing = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    if name in existing:
        if not overwrite:
            raise StudyExistsError(
                f"study {name!r} already exists in the Optuna storage; "
                "choose another study name or overwrite it"
            )
        optuna.delete_study(study_name=name, storage=storage)
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction="minimize" if spec.mode == "min" else "maximize",
    )
    study.set_user_attr("rungflow_experiment", experiment)
    study.set_user_attr("rungflow_scheduler", spec.scheduler)
    study.set_user_attr("rungflow_metric", spec.metric)
    study.set_user_attr("rungflow_step_scale", scale)
    study.set_metric_names([spec.metric])

    for record in records:
        study.add_trial(_frozen_trial(record, space, spec.metric, scale, max_t))
    return name


def _frozen_trial(
    record: _TrialRecord,
    space: Mapping[str, BaseDistribution],
    metric: str,
    scale: int,
    max_t: float,
) -> optuna.trial.FrozenTrial:
    params, dists, outside = _params(record.config, space)
    final = None if record.final_metrics is None else _number(record.final_metrics.get(metric))
    if record.failed or record.status == "failed":
        state, final = TrialState.FAIL, None
    elif final is not None and (record.status == "completed" or record.resource >= max_t - _EPS):
        state = TrialState.COMPLETE
    elif final is None and not record.running and record.final_metrics is not None:
        # Finished segments but the metric is missing: Optuna cannot store a
        # COMPLETE trial without a value, and nothing here was pruned.
        state = TrialState.FAIL
    else:
        state = TrialState.PRUNED
    user_attrs: dict[str, Any] = {
        "rungflow_trial_id": record.trial_id,
        "rungflow_resource": record.resource,
        "rungflow_status": record.status,
        "rungflow_metrics": record.final_metrics or {},
    }
    if len(record.configs) > 1:
        user_attrs["rungflow_configs"] = record.configs
    if outside:
        user_attrs["rungflow_params_outside_space"] = outside
        user_attrs["rungflow_config"] = record.config
    if record.stop_reason is not None:
        user_attrs["rungflow_stop_reason"] = record.stop_reason
    if record.error is not None:
        user_attrs["rungflow_error"] = record.error
    trial = optuna.trial.create_trial(
        state=state,
        value=final,
        params=params,
        distributions=dists,
        user_attrs=user_attrs,
        intermediate_values={round(r * scale): v for r, v in record.intermediate.items()},
    )
    # create_trial stamps "now"; the log knows when the trial really ran.
    trial.datetime_start = record.started_at
    trial.datetime_complete = record.ended_at
    return trial
