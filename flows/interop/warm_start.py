"""Warm start: import earlier results as prior observations of a new experiment.

Two kinds of source:

* ``optuna:STORAGE_URL:STUDY`` — an Optuna study. COMPLETE and PRUNED trials
  are imported with their params and intermediate values (``step`` becomes the
  resource, divided by the study's ``rungflow_step_scale`` user attribute when
  it was written by :func:`flows.interop.optuna_export.export_to_optuna`). A trial
  without intermediate values counts as full-fidelity: its value is taken at
  the experiment's ``max_t``. FAIL, RUNNING and WAITING trials are skipped.
* ``experiment:NAME`` (this store) or ``experiment:NAME@URL`` (another store)
  — an earlier rungflow experiment. Every finished segment's reports of the
  metric are imported, one observation per trial (per configuration for PBT,
  whose members change config). Observations the source itself imported are
  not imported again. Checkpoints are copied only with ``with_checkpoints``.

Every observation is checked against the new experiment's space: a parameter
the space does not have is dropped (counted per name), a parameter of the
space that is missing or outside its distribution skips the whole trial
(counted per reason), since a searcher needs complete configurations.

The import is a single append of :class:`~schedulers.events.ObservationImported`
events followed by an :class:`~schedulers.events.ImportCompleted`, done by the
CLI process *before* the flow starts. Storage URLs of sources therefore never
become flow parameters; only a display form without the password is written
to the log (as the observation's ``source``). The import happens once: a log
that already has an ``ImportCompleted`` from the same source imports nothing,
so running the same command again (a resume) is safe. Warm starts are only
accepted before the experiment's first trial, because synchronous schedulers
(HyperBand) must see priors before they decide a rung.

Imported observations are never trials: no budget is spent on them, they never
run and cannot be resumed, even with copied checkpoints (the copies are kept
and their refs recorded so that they can be inspected or restored by hand).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from flows.spec import NAME_PATTERN, ExperimentSpec, spec_differences
from schedulers import (
    CheckpointRef,
    Event,
    ExperimentCreated,
    SegmentFinished,
    SegmentStarted,
    TrialCreated,
    TrialPerturbed,
)
from schedulers.events import ImportCompleted, ObservationImported, segment_key
from storage import CheckpointStore, ConcurrencyError, EventStore, ExperimentExistsError
from storage.engine import display_url

__all__ = [
    "ImportPlan",
    "ImportReport",
    "WarmStartError",
    "WarmStartSource",
    "check_storage_url",
    "observations_from_experiment",
    "observations_from_optuna",
    "parse_source",
    "warm_start",
]

#: Query parameters a source URL may carry. Anything else is refused: SQLAlchemy
#: resolves some (``plugin=``, ``module=``) to code, and a CLI argument must
#: never choose code to run.
_PG_QUERY = frozenset({"sslmode", "connect_timeout", "application_name", "options"})
_PG_DRIVERS = frozenset({"postgresql", "postgresql+psycopg", "postgresql+psycopg2"})
_TOL = 1e-9


class WarmStartError(ValueError):
    """A warm-start source is invalid, unreachable or does not fit the experiment."""


def check_storage_url(url: str, what: str = "storage URL") -> sa.URL:
    """Validate a source database URL given on the command line.

    Only ``sqlite:///path`` (a file) and ``postgresql+psycopg://...`` style
    URLs are accepted, without query parameters other than a few libpq
    connection options. The message never repeats the password.

    Raises:
        WarmStartError: naming the rule that was broken.
    """
    try:
        parsed = sa.make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError and ValueError subclasses
        raise WarmStartError(f"{what} is not a database URL ({type(exc).__name__})") from None
    shown = parsed.render_as_string(hide_password=True)
    driver = parsed.drivername
    if driver == "sqlite":
        database = parsed.database or ""
        if not database or database == ":memory:" or database.startswith("file:"):
            raise WarmStartError(f"{what} is {shown!r}, but a SQLite URL must be sqlite:///path")
        if parsed.query:
            raise WarmStartError(f"{what} is {shown!r}, but a SQLite URL takes no query parameters")
    elif driver in _PG_DRIVERS:
        extra = sorted(set(parsed.query) - _PG_QUERY)
        if extra:
            raise WarmStartError(
                f"{what} is {shown!r}, but query parameters {extra} are not allowed "
                f"(allowed: {sorted(_PG_QUERY)})"
            )
    else:
        raise WarmStartError(
            f"{what} uses {driver!r}, but must be sqlite:///path or postgresql+psycopg://..."
        )
    return parsed


@dataclass(frozen=True)
class WarmStartSource:
    """A parsed ``--warm-start`` value.

    Attributes:
        kind: ``"optuna"`` or ``"experiment"``.
        name: Study or experiment name.
        url: Database URL of the source; None = this experiment's store. May
            hold a password: never print it, use :attr:`label`.
    """

    kind: Literal["optuna", "experiment"]
    name: str
    url: str | None = None

    @property
    def label(self) -> str:
        """What the log records as the source: no password, stable across runs."""
        if self.kind == "optuna":
            assert self.url is not None
            return f"optuna:{display_url(self.url)}:{self.name}"
        if self.url is None:
            return f"experiment:{self.name}"
        return f"experiment:{self.name}@{display_url(self.url)}"

    def __repr__(self) -> str:  # keep URLs with passwords out of tracebacks and logs
        return f"WarmStartSource({self.label!r})"


def parse_source(text: str, *, experiment_db: str | None = None) -> WarmStartSource:
    """Parse ``optuna:STORAGE_URL:STUDY``, ``experiment:NAME`` or ``experiment:NAME@URL``.

    The study name is what follows the last ``:``, so it cannot contain one.

    Args:
        text: The CLI value.
        experiment_db: ``--warm-start-db``: store of an ``experiment:NAME``
            source given without ``@URL``.

    Raises:
        WarmStartError: with the accepted forms.
    """
    forms = "optuna:STORAGE_URL:STUDY, experiment:NAME or experiment:NAME@URL"
    kind, sep, rest = text.partition(":")
    if not sep or kind not in ("optuna", "experiment") or not rest:
        raise WarmStartError(f"--warm-start must be one of {forms}")
    if kind == "optuna":
        url, sep, study = rest.rpartition(":")
        if not sep or not url or not study:
            raise WarmStartError("--warm-start optuna source must be optuna:STORAGE_URL:STUDY")
        check_storage_url(url, "the Optuna storage URL")
        return WarmStartSource("optuna", study, url)
    name, at, url = rest.partition("@")
    if not re.fullmatch(NAME_PATTERN, name):
        raise WarmStartError(f"--warm-start experiment name {name!r} must match {NAME_PATTERN}")
    if at and not url:
        raise WarmStartError("--warm-start experiment:NAME@URL needs a URL after '@'")
    store_url = url or experiment_db or None
    if store_url is not None:
        check_storage_url(store_url, "the source store URL")
    return WarmStartSource("experiment", name, store_url)


# ------------------------------------------------------------------ checking
def _convert(value: Any, dist: BaseDistribution) -> tuple[bool, Any]:
    """``(True, value in the distribution's type)`` if ``dist`` contains ``value``."""
    try:
        if isinstance(dist, CategoricalDistribution):
            for choice in dist.choices:
                if choice == value and type(choice) is type(value):
                    return True, choice
            return False, value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False, value
        if not math.isfinite(float(value)):
            return False, value
        if isinstance(dist, IntDistribution):
            if float(value) != int(value):
                return False, value
            value = int(value)
        elif isinstance(dist, FloatDistribution):
            value = float(value)
        return bool(dist._contains(dist.to_internal_repr(value))), value
    except (TypeError, ValueError):
        return False, value


def _fit_config(
    params: Mapping[str, Any], space: Mapping[str, BaseDistribution]
) -> tuple[dict[str, Any] | None, str | None, list[str]]:
    """``(config, None, dropped)`` or ``(None, reason, dropped)`` for one source trial."""
    dropped = sorted(set(params) - set(space))
    config: dict[str, Any] = {}
    for name, dist in space.items():
        if name not in params:
            return None, f"param {name!r} missing", dropped
        ok, value = _convert(params[name], dist)
        if not ok:
            return None, f"param {name!r} outside the space", dropped
        config[name] = value
    return config, None, dropped


def _number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


@dataclass
class _Draft:
    """One observation before it gets an id."""

    config: dict[str, Any]
    reports: list[dict[str, Any]]
    source_trial: str
    info: dict[str, Any] = field(default_factory=dict)
    checkpoint: CheckpointRef | None = None
    segment: str | None = None


@dataclass
class ImportPlan:
    """What an import would append (before ids and checkpoints are assigned)."""

    source: WarmStartSource
    drafts: list[_Draft] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    dropped_params: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def add(
        self,
        params: Mapping[str, Any],
        space: Mapping[str, BaseDistribution],
        draft: _Draft,
    ) -> None:
        config, reason, dropped = _fit_config(params, space)
        if config is None:
            assert reason is not None
            self.skipped[reason] += 1
            return
        self.dropped_params.update(dropped)
        draft.config = config
        self.drafts.append(draft)


# -------------------------------------------------------------------- optuna
def observations_from_optuna(
    source: WarmStartSource, spec: ExperimentSpec, *, final_resource: float | None = None
) -> ImportPlan:
    """Read an Optuna study into an :class:`ImportPlan` for ``spec``.

    Args:
        source: An ``optuna`` source.
        spec: The new experiment.
        final_resource: Resource at which a value without intermediate values
            counts; default the spec's ``scheduler_args.max_t``.

    Raises:
        WarmStartError: unreachable storage, unknown study, multi-objective
            study, a direction that contradicts ``spec.mode``, or a study that
            names another metric.
    """
    import optuna
    from optuna.trial import TrialState

    assert source.kind == "optuna" and source.url is not None
    where = display_url(source.url)
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        try:
            storage = optuna.storages.get_storage(source.url)
        except Exception as exc:
            # The exception text may echo the URL; show only its type.
            raise WarmStartError(
                f"cannot open the Optuna storage {where} ({type(exc).__name__})"
            ) from None
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        if source.name not in names:
            raise WarmStartError(
                f"study {source.name!r} not found in {where}; studies there: {sorted(names)}"
            )
        study = optuna.load_study(study_name=source.name, storage=storage)
        trials = study.get_trials(deepcopy=False)
    finally:
        optuna.logging.set_verbosity(previous)
    if len(study.directions) != 1:
        raise WarmStartError(
            f"study {source.name!r} has {len(study.directions)} objectives, but a warm start "
            "needs a single-objective study"
        )
    direction = "min" if study.direction == optuna.study.StudyDirection.MINIMIZE else "max"
    if direction != spec.mode:
        raise WarmStartError(
            f"study {source.name!r} {direction}imises its objective, but the experiment "
            f"has mode {spec.mode!r}: they cannot be the same metric"
        )
    named = study.user_attrs.get("rungflow_metric")
    if named is None and study.metric_names:
        named = study.metric_names[0]
    if named is not None and named != spec.metric:
        raise WarmStartError(
            f"study {source.name!r} optimises {named!r}, but the experiment's metric is "
            f"{spec.metric!r}"
        )
    scale = study.user_attrs.get("rungflow_step_scale", 1)
    if not _number(scale) or scale <= 0:
        scale = 1
    if final_resource is None:
        max_t: Any = spec.scheduler_args.get("max_t")
        final_resource = float(max_t) if _number(max_t) else None

    plan = ImportPlan(source)
    space = dict(spec.search_space.items())
    for trial in trials:
        if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            plan.skipped[f"state {trial.state.name}"] += 1
            continue
        reports = [
            {"resource": step / scale, spec.metric: float(value)}
            for step, value in sorted(trial.intermediate_values.items())
            if _number(value)
        ]
        info: dict[str, Any] = {"state": trial.state.name}
        if trial.value is not None and _number(trial.value):
            info["value"] = float(trial.value)
        if not reports:
            if "value" not in info:
                plan.skipped["no value"] += 1
                continue
            if final_resource is None:
                plan.skipped["no intermediate values and no max_t to place the value"] += 1
                continue
            reports = [{"resource": final_resource, spec.metric: info["value"]}]
        draft = _Draft({}, reports, str(trial.number), info)
        plan.add(trial.params, space, draft)
    return plan


# ---------------------------------------------------------------- experiment
def observations_from_experiment(
    source: WarmStartSource, spec: ExperimentSpec, events: Sequence[Event]
) -> ImportPlan:
    """Turn an earlier experiment's log into an :class:`ImportPlan` for ``spec``.

    Reports are the raw metrics the trainable made, so the source may have
    optimised another metric or mode as long as it reported ``spec.metric``.
    """
    plan = ImportPlan(source)
    space = dict(spec.search_space.items())
    # (trial, config-run) -> draft under construction, in order of first segment.
    open_: dict[str, tuple[dict[str, Any], _Draft | None]] = {}
    finished: list[tuple[dict[str, Any], _Draft]] = []
    starts: dict[str, SegmentStarted] = {}
    n_trials = 0

    def close(tid: str) -> None:
        params, draft = open_.pop(tid, ({}, None))
        if draft is not None:
            finished.append((params, draft))

    for event in events:
        if isinstance(event, TrialCreated):
            n_trials += 1
            open_[event.trial_id] = (dict(event.config), None)
        elif isinstance(event, ObservationImported):
            plan.skipped["imported by the source itself"] += 1
        elif isinstance(event, TrialPerturbed):
            close(event.trial_id)  # a PBT member continues with another config
            open_[event.trial_id] = (dict(event.new_config), None)
        elif isinstance(event, SegmentStarted):
            starts[event.trial_id] = event
            params, draft = open_.get(event.trial_id, ({}, None))
            if draft is not None and dict(event.config) != params:
                close(event.trial_id)
                draft = None
            open_[event.trial_id] = (dict(event.config), draft)
        elif isinstance(event, SegmentFinished):
            params, draft = open_.get(event.trial_id, ({}, None))
            reports = [
                {"resource": float(r["resource"]), spec.metric: float(r[spec.metric])}
                for r in map(dict, event.reports)
                if _number(r.get("resource")) and _number(r.get(spec.metric))
            ]
            if draft is None:
                draft = _Draft({}, [], event.trial_id)
            draft.reports.extend(reports)
            if event.checkpoint is not None:
                draft.checkpoint = event.checkpoint
                draft.segment = segment_key(event.start, event.stop)
            open_[event.trial_id] = (params, draft)
    for tid in list(open_):
        close(tid)
    for params, draft in finished:
        # Later reports at the same resource win (a segment trained again).
        by_resource = {r["resource"]: r for r in draft.reports}
        draft.reports = [by_resource[r] for r in sorted(by_resource)]
        if not draft.reports:
            plan.skipped[f"no {spec.metric!r} reported"] += 1
            continue
        plan.add(params, space, draft)
    # Trials that never finished a segment produced no draft at all.
    with_drafts = {d.source_trial for _, d in finished}
    never = n_trials - len(with_drafts)
    if never:
        plan.skipped["no finished segment"] += never
    return plan


# -------------------------------------------------------------------- import
@dataclass
class ImportReport:
    """What :func:`warm_start` did for one source (printed by the CLI)."""

    source: str
    imported: int
    skipped: dict[str, int]
    dropped_params: dict[str, int]
    already: bool = False
    checkpoints_copied: int = 0
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One human-readable paragraph."""
        if self.already:
            return (
                f"warm start from {self.source}: already imported "
                f"({self.imported} observations); nothing to do"
            )
        lines = [f"warm start from {self.source}: {self.imported} observation(s) imported"]
        if self.skipped:
            total = sum(self.skipped.values())
            reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
            lines.append(f"  skipped {total} source trial(s): {reasons}")
        if self.dropped_params:
            names = ", ".join(f"{k} ({n})" for k, n in sorted(self.dropped_params.items()))
            lines.append(f"  params not in this space, dropped: {names}")
        if self.checkpoints_copied:
            lines.append(f"  {self.checkpoints_copied} checkpoint(s) copied")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def _prior_imports(events: Sequence[Event]) -> dict[str, ImportCompleted]:
    return {e.source: e for e in events if isinstance(e, ImportCompleted)}


def _ensure_experiment(store: EventStore, spec: ExperimentSpec) -> tuple[list[Event], int]:
    """Create the experiment (as the runner would) or check its stored spec.

    Returns:
        The log and its last seq.
    """
    if not store.has_experiment(spec.name):
        # Another process may create it first: its spec is checked below.
        with contextlib.suppress(ExperimentExistsError):
            store.create_experiment(spec.name, spec.to_json())
    records = store.read(spec.name)
    events = [r.event for r in records]
    created = events[0]
    assert isinstance(created, ExperimentCreated)
    diffs = spec_differences(created.spec, spec)
    if diffs:
        raise WarmStartError(
            f"experiment {spec.name!r} exists with a different spec; warm start refused. "
            "Differences:\n  " + "\n  ".join(diffs)
        )
    return events, records[-1].seq


def _load_plan(
    source: WarmStartSource, spec: ExperimentSpec, store: EventStore
) -> ImportPlan:
    if source.kind == "optuna":
        return observations_from_optuna(source, spec)
    if source.url is None and source.name == spec.name:
        raise WarmStartError(f"experiment {spec.name!r} cannot warm-start from itself")
    other = None if source.url is None else EventStore(source.url)
    try:
        src = other or store
        if not src.has_experiment(source.name):
            raise WarmStartError(f"experiment {source.name!r} not found in {src.url_for_display}")
        events = [r.event for r in src.read(source.name)]
    finally:
        if other is not None:
            other.close()
    return observations_from_experiment(source, spec, events)


def _copy_checkpoints(
    drafts: Sequence[tuple[str, _Draft]],
    spec: ExperimentSpec,
    source_root: str,
    target_root: str,
    notes: list[str],
) -> int:
    """Copy each draft's latest checkpoint into ``spec.name/<observation id>/``."""
    src, dst = CheckpointStore(source_root), CheckpointStore(target_root)
    copied = 0
    missing = 0
    for oid, draft in drafts:
        ref = draft.checkpoint
        draft.checkpoint = None
        if ref is None or draft.segment is None:
            continue
        try:
            data = src.get(ref)  # verifies size and sha256
        except Exception:  # missing or corrupt: the observation is still useful
            missing += 1
            continue
        draft.checkpoint = dst.put(spec.name, oid, draft.segment, data, ref.resource)
        copied += 1
    if missing:
        notes.append(f"{missing} source checkpoint(s) missing or corrupt, not copied")
    return copied


def warm_start(
    store: EventStore,
    spec: ExperimentSpec,
    source: WarmStartSource,
    *,
    with_checkpoints: bool = False,
    source_checkpoints: str | None = None,
    checkpoints: str | None = None,
    dry_run: bool = False,
) -> ImportReport:
    """Import ``source`` into experiment ``spec.name`` once (creating it if needed).

    Args:
        store: The new experiment's store.
        spec: The new experiment's validated spec.
        source: Where to import from.
        with_checkpoints: Copy the source trials' latest checkpoints
            (``experiment`` sources only).
        source_checkpoints: Checkpoint root of the source (default ``checkpoints``).
        checkpoints: Checkpoint root of the new experiment.
        dry_run: Read and check the source, append nothing.

    Returns:
        What was imported, or ``already=True`` if this source was imported before.

    Raises:
        WarmStartError: the source is invalid, or the experiment exists with
            another spec or already has trials.
    """
    events: list[Event] = []
    last_seq = 0
    if not dry_run or store.has_experiment(spec.name):
        events, last_seq = _ensure_experiment(store, spec)
    prior = _prior_imports(events)
    if source.label in prior:
        done = prior[source.label]
        return ImportReport(
            source.label, done.imported, dict(done.skipped), dict(done.dropped_params), True
        )
    n_trials = sum(isinstance(e, TrialCreated) for e in events)
    if n_trials:
        raise WarmStartError(
            f"experiment {spec.name!r} already has {n_trials} trial(s); a warm start must "
            "come before the first trial (start a new experiment to warm-start it)"
        )
    plan = _load_plan(source, spec, store)
    first = sum(isinstance(e, ObservationImported) for e in events)
    ids = [(f"i{first + k:04d}", d) for k, d in enumerate(plan.drafts)]
    notes = list(plan.notes)
    copied = 0
    if with_checkpoints and source.kind == "optuna":
        notes.append("--with-checkpoints ignored: Optuna studies hold no checkpoints")
    elif with_checkpoints and not dry_run:
        if checkpoints is None:
            from flows.settings import get_settings

            checkpoints = get_settings().resolved_checkpoints
        copied = _copy_checkpoints(ids, spec, source_checkpoints or checkpoints, checkpoints, notes)
    report = ImportReport(
        source.label,
        len(ids),
        dict(sorted(plan.skipped.items())),
        dict(sorted(plan.dropped_params.items())),
        checkpoints_copied=copied,
        notes=notes,
    )
    if dry_run:
        return report
    new: list[Event] = [
        ObservationImported(
            observation_id=oid,
            source=source.label,
            config=d.config,
            reports=tuple(d.reports),
            source_trial=d.source_trial,
            checkpoint=d.checkpoint if with_checkpoints else None,
            info=d.info,
        )
        for oid, d in ids
    ]
    new.append(
        ImportCompleted(
            source=source.label,
            imported=len(ids),
            skipped=report.skipped,
            dropped_params=report.dropped_params,
            info={"checkpoints_copied": copied, "notes": notes},
        )
    )
    try:
        store.append(spec.name, new, expected_seq=last_seq)
    except ConcurrencyError:
        # Someone appended meanwhile (a concurrent import or run): never guess,
        # start over from the new log, which may already hold this import.
        return warm_start(
            store,
            spec,
            source,
            with_checkpoints=with_checkpoints,
            source_checkpoints=source_checkpoints,
            checkpoints=checkpoints,
        )
    return report
