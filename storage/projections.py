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

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from schedulers.events import (
    EVENT_TYPES,
    VERSION_KEY,
    Event,
    SegmentFailed,
    SegmentFinished,
    SegmentStarted,
    TrialCreated,
    TrialPaused,
    TrialPerturbed,
    TrialRetried,
    TrialStopped,
    event_from_record,
)
from schedulers.outcomes import next_status, stop_outcome
from storage.models import EVENTS as _EVENTS
from storage.models import RESULTS as _RESULTS
from storage.models import TRIALS as _TRIALS

__all__ = [
    "EXPORT_VIEW_KINDS",
    "STATUS_KINDS",
    "SUMMARY_KINDS",
    "ConnectionWrites",
    "ExportView",
    "Projection",
    "ResultRecord",
    "StatusSummary",
    "StatusView",
    "TrialRecord",
    "TrialTallies",
    "Writes",
    "apply_events",
    "read_export_view",
    "read_results_at",
    "read_status_summary",
    "read_status_view",
    "read_trial_tallies",
    "rebuild",
]

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


class Writes(Protocol):
    """Where the write side sends its statements: a connection, executing each
    at once (:class:`ConnectionWrites`), or a PostgreSQL writer transaction that
    queues them (:class:`storage.pg_pipeline.PipelinedTransaction`). Both give
    the same rows; :meth:`count` and :meth:`rows` send what is queued first.

    Attributes:
        writable_ctes: The database runs ``UPDATE ... RETURNING`` inside a
            ``WITH`` (PostgreSQL; SQLite does not).
    """

    writable_ctes: bool

    def write(
        self, stmt: sa.Executable, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> None:
        """Execute ``stmt`` (once per parameter set when given a list)."""

    def rows(self, stmt: sa.Executable, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Execute ``stmt`` and return its rows."""
        ...

    def count(self, stmt: sa.Executable, params: Mapping[str, Any]) -> int:
        """Execute ``stmt`` (an UPDATE) and return how many rows it changed."""
        ...


class ConnectionWrites:
    """:class:`Writes` on a SQLAlchemy connection: each statement runs at once."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self.writable_ctes = conn.dialect.name == "postgresql"

    def write(
        self, stmt: sa.Executable, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> None:
        # One row as parameters, not a list of one: skips executemany's setup.
        if not isinstance(params, Mapping) and len(params) == 1:
            params = params[0]
        self.conn.execute(stmt, params)

    def rows(self, stmt: sa.Executable, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self.conn.execute(stmt, params)]

    def count(self, stmt: sa.Executable, params: Mapping[str, Any]) -> int:
        return int(self.conn.execute(stmt, params).rowcount)


_T = _TRIALS.c
_TRIAL_COLUMNS = (_T.trial_id, _T.status, _T.config, _T.resource, _T.metrics, _T.n_segments,
                  _T.created_seq)


def _load_trials(
    sql: Writes, experiment: str, trial_ids: Collection[str]
) -> dict[str, TrialRecord]:
    ids = sorted(trial_ids)
    loaded: dict[str, TrialRecord] = {}
    for i in range(0, len(ids), _CHUNK):
        stmt = sa.select(*_TRIAL_COLUMNS).where(
            _T.experiment_id == experiment, _T.trial_id.in_(ids[i : i + _CHUNK])
        )
        for trial_id, status, config, resource, metrics, n_segments, created in sql.rows(stmt, {}):
            loaded[trial_id] = TrialRecord(
                trial_id=trial_id,
                status=status,
                config=dict(config),
                resource=float(resource),
                metrics=None if metrics is None else dict(metrics),
                n_segments=int(n_segments),
                created_seq=int(created),
            )
    return loaded


# Per-event statements for short appends (the flow's hot path: one result, a
# decision or two). Each folds its event in SQL, so no trial row is read first
# and no statement needs another's result (a pipelined transaction sends them
# all at once); the CASE expressions carry the same rules as :meth:`Projection.apply`.
_WHERE_TRIAL = sa.and_(
    _T.experiment_id == sa.bindparam("e_id"), _T.trial_id == sa.bindparam("t_id")
)
_ON_STARTED = sa.update(_TRIALS).where(_WHERE_TRIAL).values(
    status="running", config=sa.bindparam("config", type_=sa.JSON())
)
_ON_FINISHED = sa.update(_TRIALS).where(_WHERE_TRIAL).values(
    resource=sa.bindparam("resource", type_=sa.Float()),
    status=sa.case((_T.status == "running", "paused"), else_=_T.status),
    metrics=sa.bindparam("metrics", type_=sa.JSON()),
    n_segments=_T.n_segments + 1,
)
# A finished segment's result row is written iff its trial exists (a trial
# never created gets none, see the module doc), i.e. iff _ON_FINISHED found
# the trial. Where the database can (PostgreSQL) both are one statement, the
# UPDATE run first inside it, so nothing waits for the UPDATE's row count.
_FINISHED_TRIAL = _ON_FINISHED.returning(_T.trial_id).cte("finished")
_ON_FINISHED_WITH_RESULT = sa.insert(_RESULTS).from_select(
    ["experiment_id", "seq", "trial_id", "start", "stop", "metrics"],
    sa.select(
        sa.bindparam("e_id", type_=sa.String()),
        sa.bindparam("seq", type_=sa.Integer()),
        sa.bindparam("t_id", type_=sa.String()),
        sa.bindparam("start", type_=sa.Float()),
        sa.bindparam("stop", type_=sa.Float()),
        sa.bindparam("metrics", type_=sa.JSON()),
    ).where(sa.exists(sa.select(_FINISHED_TRIAL.c.trial_id))),
)
_ON_FAILED = sa.update(_TRIALS).where(_WHERE_TRIAL).values(status="failed")
_ON_PAUSED = sa.update(_TRIALS).where(_WHERE_TRIAL).values(status="paused")
# A retry reopens a failed trial only (schedulers.outcomes.next_status).
_ON_RETRIED = (
    sa.update(_TRIALS).where(_WHERE_TRIAL, _T.status == "failed").values(status="paused")
)
# The outcome word comes from the one fold (schedulers.outcomes.stop_outcome).
_ON_STOPPED = sa.update(_TRIALS).where(_WHERE_TRIAL).values(
    status=sa.case((_T.status == "failed", "failed"), else_=sa.bindparam("outcome"))
)
_ON_PERTURBED = sa.update(_TRIALS).where(_WHERE_TRIAL).values(
    config=sa.bindparam("config", type_=sa.JSON()),
    resource=sa.bindparam("resource", type_=sa.Float()),
)
_INSERT_TRIAL = sa.insert(_TRIALS)
_INSERT_RESULT = sa.insert(_RESULTS)
# Every column of a trial row, for a bulk append's touched rows (one executemany).
_UPDATE_TRIAL = sa.update(_TRIALS).where(_WHERE_TRIAL).values(
    status=sa.bindparam("status"),
    config=sa.bindparam("config", type_=sa.JSON()),
    resource=sa.bindparam("resource"),
    metrics=sa.bindparam("metrics", type_=sa.JSON()),
    n_segments=sa.bindparam("n_segments"),
    created_seq=sa.bindparam("created_seq"),
)
#: Appends with more events than this are folded in memory and written in bulk.
BULK_THRESHOLD = 16


def apply_events(sql: Writes, experiment: str, items: Iterable[tuple[int, Event]]) -> None:
    """Fold newly appended ``(seq, event)`` pairs into the stored projections.

    Runs inside the append's transaction, so the log and its projections
    commit or roll back together. A short append costs one statement per
    event that changes a stored trial (plus one per result); trials it
    creates are folded in memory and inserted as they end the append (the
    flow's new trial, ``TrialCreated`` then ``SegmentStarted``, is one row
    inserted). A long append (a bulk import, a replayed log) loads only the
    trials it mentions, folds in memory and writes each touched row once.
    Where the database runs writable CTEs (PostgreSQL), no statement of a
    short append reads anything back; on SQLite a finished segment's result
    row waits for its trial UPDATE's row count (free there: nothing is queued).
    """
    items = list(items)
    if len(items) > BULK_THRESHOLD:
        _apply_bulk(sql, experiment, items)
        return
    created = Projection()
    for seq, event in items:
        if isinstance(event, TrialCreated) or event.trial in created.trials:
            created.apply(seq, event)
        else:
            _apply_one(sql, experiment, seq, event)
    if created.trials:
        sql.write(_INSERT_TRIAL, [t.row(experiment) for t in created.trials.values()])
    if created.results:
        sql.write(_INSERT_RESULT, [r.row(experiment) for r in created.results])


def _apply_one(sql: Writes, experiment: str, seq: int, event: Event) -> None:
    if isinstance(event, TrialCreated):
        record = TrialRecord(event.trial_id, "paused", dict(event.config), 0.0, None, 0, seq)
        sql.write(_INSERT_TRIAL, record.row(experiment))
        return
    trial_id = event.trial
    if trial_id is None:
        return
    key = {"e_id": experiment, "t_id": trial_id}
    if isinstance(event, SegmentStarted):
        sql.write(_ON_STARTED, {**key, "config": dict(event.config)})
    elif isinstance(event, SegmentFinished):
        metrics = dict(event.metrics)
        stop = float(event.stop)
        start = float(event.start)
        if sql.writable_ctes:
            sql.write(
                _ON_FINISHED_WITH_RESULT,
                {**key, "seq": seq, "start": start, "stop": stop, "resource": stop,
                 "metrics": metrics},
            )
        elif sql.count(_ON_FINISHED, {**key, "resource": stop, "metrics": metrics}):
            result = ResultRecord(seq, trial_id, start, stop, metrics)
            sql.write(_INSERT_RESULT, result.row(experiment))
    elif isinstance(event, SegmentFailed):
        if event.final:
            sql.write(_ON_FAILED, key)
    elif isinstance(event, TrialPaused):
        sql.write(_ON_PAUSED, key)
    elif isinstance(event, TrialRetried):
        sql.write(_ON_RETRIED, key)
    elif isinstance(event, TrialStopped):
        sql.write(_ON_STOPPED, {**key, "outcome": stop_outcome(event.reason)})
    elif isinstance(event, TrialPerturbed):
        sql.write(
            _ON_PERTURBED,
            {**key, "config": dict(event.new_config), "resource": float(event.donor_resource)},
        )


def _apply_bulk(sql: Writes, experiment: str, items: list[tuple[int, Event]]) -> None:
    ids = {e.trial for _, e in items if e.trial is not None}
    existing = _load_trials(sql, experiment, ids) if ids else {}
    proj = Projection(trials=dict(existing))
    for seq, event in items:
        proj.apply(seq, event)
    inserts = [proj.trials[t].row(experiment) for t in sorted(proj.touched) if t not in existing]
    if inserts:
        sql.write(_INSERT_TRIAL, inserts)
    updates = [
        {
            "e_id": experiment,
            "t_id": t,
            **{k: v for k, v in proj.trials[t].row(experiment).items()
               if k not in ("experiment_id", "trial_id")},
        }
        for t in sorted(proj.touched & existing.keys())
    ]
    if updates:
        # One executemany for every touched row (not a statement per trial).
        sql.write(_UPDATE_TRIAL, updates)
    if proj.results:
        sql.write(_INSERT_RESULT, [r.row(experiment) for r in proj.results])


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


# ---------------------------------------------------------------- read side
#: Event kinds ``rungflow status`` reads from the log itself (through the
#: (experiment, kind) index): few per trial, and what the projections do not
#: keep (error texts, stop reasons, warm-start imports, the experiment's end).
STATUS_KINDS = (
    "SegmentFailed",
    "TrialStopped",
    "TrialRetried",
    "ExperimentFinished",
    "ObservationImported",
    "ImportCompleted",
)
_COORDINATION_KINDS = sorted(k for k, cls in EVENT_TYPES.items() if cls.coordination)


@dataclass(frozen=True)
class StatusView:
    """What ``rungflow status`` reads besides the scheduler's folded state.

    Everything is as of event ``until_seq``.

    Attributes:
        segments: Finished segments per trial in log order, as the JSON text
            of their list exactly as ``json.dumps`` writes it (default
            separators): each ``{"start", "stop", "metrics", "finished_at"}``
            as the status document shows it (from ``results``; start and
            stop as written and the write time, in ISO 8601, come from its
            event's row). :meth:`parsed_segments` decodes them.
        times: ``trial_id -> (first, last)`` write times (ISO 8601) of the
            trial's events (coordination events excluded).
        events: ``(seq, event, created_at)`` of the :data:`STATUS_KINDS`, in order.
        stale: The projections do not hold every trial and result of the
            log up to ``until_seq`` (written by an older rungflow, or edited):
            rebuild them, or fold the log instead.
    """

    until_seq: int
    segments: dict[str, str]
    times: dict[str, tuple[str, str]]
    events: list[tuple[int, Event, Any]]
    stale: bool

    def parsed_segments(self) -> dict[str, list[dict[str, Any]]]:
        """:attr:`segments` decoded, by one ``json.loads`` (a C-level parse)."""
        lists = json.loads("[" + ",".join(self.segments.values()) + "]")
        return dict(zip(self.segments, lists, strict=True))


def _number(conn: sa.Connection, payload: Any, key: str) -> sa.ColumnElement[Any]:
    """A number in a JSON payload as SQL gives it without decoding JSON in Python:
    SQLite's ``json_extract`` keeps integers and reals apart; PostgreSQL's
    ``->>`` gives the text as written (see :func:`_json_number`)."""
    if conn.dialect.name == "postgresql":
        return payload[key].as_string()
    return sa.func.json_extract(payload, f"$.{key}", type_=sa.Numeric(asdecimal=False))


def _json_number(text: str | None) -> Any:
    """``0`` -> 0, ``0.0`` -> 0.0: the number as ``json.loads`` reads it."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return float(text)


def _count(conn: sa.Connection, stmt: sa.Select[Any]) -> int:
    return int(conn.execute(stmt).scalar_one() or 0)


def _text(value: Any) -> sa.ColumnElement[str]:
    return sa.type_coerce(value, sa.Text)


def _iso_utc(conn: sa.Connection, column: Any) -> sa.ColumnElement[str]:
    """A :class:`~storage.models.UTCDateTime` column as ``isoformat()`` writes
    its (aware, UTC) value, formatted by SQL: no datetime object per row.

    SQLite holds ``YYYY-MM-DD HH:MM:SS.ffffff`` (naive UTC); ``isoformat``
    leaves out a zero fraction.
    """
    if conn.dialect.name == "postgresql":
        utc = sa.func.timezone("UTC", column)
        text = sa.func.to_char(utc, 'YYYY-MM-DD"T"HH24:MI:SS.US', type_=sa.Text)
        return sa.func.regexp_replace(text, r"\.000000$", "", type_=sa.Text) + "+00:00"
    raw = _text(column)
    day = sa.func.substr(raw, 1, 10, type_=sa.Text) + "T"
    return sa.case(
        (sa.func.substr(raw, 20) == ".000000", day + sa.func.substr(raw, 12, 8, type_=sa.Text)),
        else_=day + sa.func.substr(raw, 12, type_=sa.Text),
    ) + "+00:00"


def _range_json(conn: sa.Connection, payload: Any) -> sa.ColumnElement[str]:
    """``"start": <start>, "stop": <stop>`` of a segment event's payload as
    JSON text, each number as the event wrote it (``0`` stays apart from
    ``0.0``), without decoding the payload in Python."""
    if conn.dialect.name == "postgresql":
        start, stop = (_text(sa.cast(payload[k], sa.Text)) for k in ("start", "stop"))
        return sa.literal('"start": ', sa.Text) + start + ', "stop": ' + stop
    # json_extract of two paths gives "[start,stop]" (literals kept); numbers
    # hold no bracket or comma, so it becomes the two members by text edits.
    pair = sa.func.json_extract(payload, "$.start", "$.stop", type_=sa.Text)
    members = sa.func.replace(pair, ",", ', "stop": ', type_=sa.Text)
    inner = sa.func.rtrim(sa.func.ltrim(members, "[", type_=sa.Text), "]", type_=sa.Text)
    return sa.literal('"start": ', sa.Text) + inner


def _kind_counts(
    conn: sa.Connection, experiment: str, until_seq: int, kinds: tuple[str, ...],
    *, bounded: bool = False,
) -> dict[str, int]:
    """How many events of each of ``kinds`` the log holds up to ``until_seq``.

    When the log ends at ``until_seq`` (and not ``bounded``) the
    (experiment, kind) index answers alone; a seq bound reads the row of
    every counted event.
    """
    ev = _EVENTS.c
    where = [ev.experiment_id == experiment, ev.kind.in_(kinds)]
    if bounded or until_seq != _count(
        conn, sa.select(sa.func.max(ev.seq)).where(ev.experiment_id == experiment)
    ):
        where.append(ev.seq <= until_seq)
    stmt = sa.select(ev.kind, sa.func.count()).where(*where).group_by(ev.kind)
    counts = dict.fromkeys(kinds, 0)
    counts.update({kind: int(n) for kind, n in conn.execute(stmt)})
    return counts


def read_status_view(engine: sa.Engine, experiment: str, until_seq: int) -> StatusView:
    """Read :class:`StatusView` of ``experiment`` up to ``until_seq``, in one
    transaction (the per-trial times in a second one, at the same time).

    Costs three indexed queries plus one aggregate over the experiment's
    events (``trial_id`` and ``kind`` only); no event but those of
    :data:`STATUS_KINDS` is decoded. Each segment's document is put
    together as JSON text by SQL, in ``json.dumps``'s layout (start and
    stop from its event's payload, metrics from ``results``, the write time
    formatted), and nothing parses it here: ``rungflow status --json``
    prints the texts as they are (a parse and a re-encode of every segment
    were most of its time at 100k results). That text equals ``json.dumps``
    of its parse because every JSON value it is made of was written by
    ``json.dumps`` (the engine's serializer) and both backends keep the
    stored text (SQLite's text, PostgreSQL's ``json``; numbers extracted by
    SQLite keep their literal). Staleness is detected by counting: the
    ``results`` rows must match the ``SegmentFinished`` events and the
    ``trials`` rows the ``TrialCreated`` events up to ``until_seq`` (the
    counts are served by indexes).
    """
    ev, r, t = _EVENTS.c, _RESULTS.c, _TRIALS.c
    # The times scan every event of the experiment: on a connection of their
    # own, at the same time (each backend does that work without the GIL);
    # not where the engine has one connection (in-memory SQLite).
    shared = isinstance(engine.pool, StaticPool)
    with ThreadPoolExecutor(1) as pool, engine.connect() as conn:
        times_ahead = None if shared else pool.submit(
            _read_trial_times, engine, experiment, until_seq)
        n_results = _count(conn, sa.select(sa.func.count()).select_from(_RESULTS).where(
            r.experiment_id == experiment, r.seq <= until_seq))
        n_trials = _count(conn, sa.select(sa.func.count()).select_from(_TRIALS).where(
            t.experiment_id == experiment, t.created_seq <= until_seq))
        kinds = ("SegmentFinished", "TrialCreated")
        counts = _kind_counts(conn, experiment, until_seq, kinds)
        if (n_results, n_trials) != (counts["SegmentFinished"], counts["TrialCreated"]):
            # An append between two reads (PostgreSQL reads each statement as of
            # its start) can only add rows past until_seq: count again, bounded.
            counts = _kind_counts(conn, experiment, until_seq, kinds, bounded=True)
        if (n_results, n_trials) != (counts["SegmentFinished"], counts["TrialCreated"]):
            if times_ahead is not None:
                times_ahead.cancel()
            return StatusView(until_seq, {}, {}, [], True)
        # Each segment's document as JSON text, in the status document's key
        # order and json.dumps's separators.
        doc = (
            sa.literal("{", sa.Text) + _range_json(conn, ev.payload) + ', "metrics": '
            + _text(sa.cast(r.metrics, sa.Text)) + ', "finished_at": "'
            + _iso_utc(conn, ev.created_at) + '"}'
        )
        rows = conn.execute(
            sa.select(r.trial_id, doc)
            .join(_EVENTS, sa.and_(ev.experiment_id == r.experiment_id, ev.seq == r.seq))
            .where(r.experiment_id == experiment, r.seq <= until_seq)
            .order_by(r.seq)
        )
        grouped: dict[str, list[str]] = {}
        for trial_id, text in rows:
            texts = grouped.get(trial_id)
            if texts is None:
                grouped[trial_id] = [text]
            else:
                texts.append(text)
        segments = {trial_id: "[" + ", ".join(texts) + "]" for trial_id, texts in grouped.items()}
        events = _few_events(conn, experiment, until_seq, STATUS_KINDS)
        times = (_read_trial_times(conn, experiment, until_seq) if times_ahead is None
                 else times_ahead.result())
    return StatusView(until_seq, segments, times, events, False)


def _read_trial_times(
    source: sa.Engine | sa.Connection, experiment: str, until_seq: int
) -> dict[str, tuple[str, str]]:
    """:attr:`StatusView.times`: each trial's first and last (non-coordination)
    event's write time, up to ``until_seq`` (an append-only log: any read
    transaction gives the same), on a connection of ``source``'s or on it."""
    ev = _EVENTS.c
    mine = sa.and_(ev.experiment_id == experiment, ev.seq <= until_seq)
    with source.connect() if isinstance(source, sa.Engine) else nullcontext(source) as conn:
        bounds = (
            sa.select(
                ev.trial_id.label("trial_id"),
                sa.func.min(ev.seq).label("lo"),
                sa.func.max(ev.seq).label("hi"),
            )
            .where(mine, ev.trial_id.is_not(None), ev.kind.not_in(_COORDINATION_KINDS))
            .group_by(ev.trial_id)
            .subquery()
        )
        first, last = _EVENTS.alias("first"), _EVENTS.alias("last")
        stmt = (
            sa.select(bounds.c.trial_id, _iso_utc(conn, first.c.created_at),
                      _iso_utc(conn, last.c.created_at))
            .join(first, sa.and_(first.c.experiment_id == experiment,
                                 first.c.seq == bounds.c.lo))
            .join(last, sa.and_(last.c.experiment_id == experiment, last.c.seq == bounds.c.hi))
        )
        return {trial_id: (started, ended) for trial_id, started, ended in conn.execute(stmt)}


def _few_events(
    conn: sa.Connection, experiment: str, until_seq: int, kinds: Collection[str]
) -> list[tuple[int, Event, Any]]:
    """``(seq, event, created_at)`` of the events of ``kinds`` up to ``until_seq``, in order.

    Through the (experiment, kind) index only: given a seq bound or an
    ORDER BY seq, SQLite walks the primary key over every event instead. The
    few rows past ``until_seq`` are dropped, and the rest sorted, here.
    """
    ev = _EVENTS.c
    stmt = sa.select(ev.seq, ev.kind, ev.trial_id, ev.payload, ev.created_at).where(
        ev.experiment_id == experiment, ev.kind.in_(list(kinds))
    )
    rows = sorted((row for row in conn.execute(stmt) if row[0] <= until_seq), key=lambda r: r[0])
    return [
        (int(seq), event_from_record(kind, trial_id, payload), created)
        for seq, kind, trial_id, payload, created in rows
    ]


#: Event kinds the table of ``rungflow status`` reads from the log (through the
#: (experiment, kind) index): errors, stop reasons, retries, the end.
SUMMARY_KINDS = ("SegmentFailed", "TrialStopped", "TrialRetried", "ExperimentFinished")


@dataclass(frozen=True)
class StatusSummary:
    """What the table of ``rungflow status`` reads, without the results scan.

    Everything is as of event ``until_seq`` (the log's end when read).

    Attributes:
        trials: ``(trial_id, status, config, resource, metrics, n_segments)``
            of the ``trials`` projection in creation order (``metrics``: the
            last finished segment's, or None).
        events: ``(seq, event)`` of the :data:`SUMMARY_KINDS`, in order.
        finished_resource: Sum of ``stop - start`` over the ``results`` rows.
        open_starts: ``trial_id -> (seq, start, stop)`` of the last
            ``SegmentStarted`` of each trial the projection says is running.
        stale: The projections do not hold every trial and result of the log
            (see :class:`StatusView`).
    """

    until_seq: int
    trials: list[tuple[str, str, dict[str, Any], float, dict[str, Any] | None, int]]
    events: list[tuple[int, Event]]
    finished_resource: float
    open_starts: dict[str, tuple[int, Any, Any]]
    stale: bool


def read_status_summary(engine: sa.Engine, experiment: str) -> StatusSummary:
    """Read :class:`StatusSummary` of ``experiment``, in one transaction.

    Costs the ``trials`` rows, one sum over ``results``, the few events of
    :data:`SUMMARY_KINDS` and the last start of each running trial, all
    through indexes; staleness is detected by counting, as in
    :func:`read_status_view`.
    """
    ev, r, t = _EVENTS.c, _RESULTS.c, _TRIALS.c
    with engine.connect() as conn:
        until_seq = _count(conn, sa.select(sa.func.max(ev.seq)).where(
            ev.experiment_id == experiment))
        n_results, finished = conn.execute(
            sa.select(sa.func.count(), sa.func.sum(r.stop - r.start)).where(
                r.experiment_id == experiment, r.seq <= until_seq)
        ).one()
        # Counted from the (experiment, kind) index alone, without a seq bound
        # (which would read every row): an append racing this read can only
        # make the counts disagree, i.e. send the caller to the full view.
        n_finished = _count(conn, sa.select(sa.func.count()).select_from(_EVENTS).where(
            ev.experiment_id == experiment, ev.kind == "SegmentFinished"))
        n_created = _count(conn, sa.select(sa.func.count()).select_from(_EVENTS).where(
            ev.experiment_id == experiment, ev.kind == "TrialCreated"))
        rows = conn.execute(
            sa.select(t.trial_id, t.status, sa.cast(t.config, sa.Text),
                      t.resource, sa.cast(t.metrics, sa.Text), t.n_segments)
            .where(t.experiment_id == experiment, t.created_seq <= until_seq)
            .order_by(t.created_seq, t.trial_id)
        ).all()
        stale = int(n_results or 0) != n_finished or len(rows) != n_created
        if stale:
            return StatusSummary(until_seq, [], [], 0.0, {}, True)
        # One JSON document for every row's config and metrics: one C-level parse.
        docs = json.loads(
            "[" + ",".join(f"{row[2]},{'null' if row[4] is None else row[4]}" for row in rows)
            + "]"
        )
        trials = [
            (tid, status, docs[2 * i], float(resource), docs[2 * i + 1], int(n))
            for i, (tid, status, _, resource, _, n) in enumerate(rows)
        ]
        summary = _few_events(conn, experiment, until_seq, SUMMARY_KINDS)
        events: list[tuple[int, Event]] = [(seq, event) for seq, event, _ in summary]
        open_starts: dict[str, tuple[int, Any, Any]] = {}
        postgres = conn.dialect.name == "postgresql"
        # A running trial started recently: walk the log back from its end in
        # growing windows of the primary key until every running trial's last
        # start is found (a kind-index scan would visit every start).
        wanted = {tid for tid, status, *_ in trials if status == "running"}
        hi, window = until_seq, 1024
        while wanted and hi > 0:
            lo = max(0, hi - window)
            starts = conn.execute(
                sa.select(ev.seq, ev.trial_id, _number(conn, ev.payload, "start"),
                          _number(conn, ev.payload, "stop"))
                .where(ev.experiment_id == experiment, ev.seq > lo, ev.seq <= hi,
                       ev.kind == "SegmentStarted")
                .order_by(ev.seq.desc())
            )
            for seq, trial_id, start, stop in starts:
                if trial_id in wanted:
                    wanted.discard(trial_id)
                    if postgres:
                        start, stop = _json_number(start), _json_number(stop)
                    open_starts[trial_id] = (int(seq), start, stop)
            hi, window = lo, window * 4
    return StatusSummary(until_seq, trials, events, float(finished or 0.0), open_starts, False)


@dataclass(frozen=True)
class TrialTallies:
    """What the end of a flow run reads besides its runner's folded state.

    Everything is as of event ``until_seq``, the log's end while it was read.

    Attributes:
        last: ``trial_id -> (metrics, n_segments)`` from the ``trials``
            projection: the metrics of the trial's last finished segment
            (None before one) and how many segments it finished.
        events: ``(seq, event, created_at)`` of the :data:`STATUS_KINDS`, in order.
        stale: The projections do not hold every trial and result of the
            log (see :class:`StatusView`).
    """

    until_seq: int
    last: dict[str, tuple[dict[str, Any] | None, int]]
    events: list[tuple[int, Event, Any]]
    stale: bool


def read_trial_tallies(engine: sa.Engine, experiment: str, until_seq: int) -> TrialTallies | None:
    """Read :class:`TrialTallies` of ``experiment``, whose log ends at ``until_seq``.

    Costs one row per trial (no ``results`` row, no payload but those of the
    few :data:`STATUS_KINDS` events) plus two counts served by the (experiment,
    kind) index. The ``trials`` rows carry no seq, so the read is only valid
    for the log's end: None when the log does not end at ``until_seq`` before
    and after the reads (another writer appended: catch up and read again).
    An append commits with its projection rows and seqs only grow, so equal
    ends bracket reads of exactly the log up to ``until_seq``.
    """
    ev, t = _EVENTS.c, _TRIALS.c
    last_seq = sa.select(sa.func.max(ev.seq)).where(ev.experiment_id == experiment)
    with engine.connect() as conn:
        if _count(conn, last_seq) != until_seq:
            return None
        rows = conn.execute(
            sa.select(t.trial_id, sa.cast(t.metrics, sa.Text), t.n_segments)
            .where(t.experiment_id == experiment)
        ).all()
        n_finished = _count(conn, sa.select(sa.func.count()).select_from(_EVENTS).where(
            ev.experiment_id == experiment, ev.kind == "SegmentFinished"))
        n_created = _count(conn, sa.select(sa.func.count()).select_from(_EVENTS).where(
            ev.experiment_id == experiment, ev.kind == "TrialCreated"))
        events = _few_events(conn, experiment, until_seq, STATUS_KINDS)
        if _count(conn, last_seq) != until_seq:
            return None
    stale = len(rows) != n_created or sum(int(row[2]) for row in rows) != n_finished
    if stale:
        return TrialTallies(until_seq, {}, [], True)
    # One JSON document for every row's metrics: one C-level parse.
    metrics = json.loads("[" + ",".join(row[1] or "null" for row in rows) + "]")
    last = {
        trial_id: (values, int(n))
        for (trial_id, _, n), values in zip(rows, metrics, strict=True)
    }
    return TrialTallies(until_seq, last, events, False)


def read_results_at(
    engine: sa.Engine, experiment: str, until_seq: int, wanted: dict[str, float]
) -> dict[str, dict[str, Any]]:
    """The metrics of each trial's latest result (up to ``until_seq``) that
    stopped at ``wanted[trial_id]``; trials without one are left out."""
    r = _RESULTS.c
    ids = sorted(wanted)
    out: dict[str, tuple[int, str]] = {}
    with engine.connect() as conn:
        for i in range(0, len(ids), _CHUNK):
            stmt = sa.select(r.trial_id, r.seq, r.stop, sa.cast(r.metrics, sa.Text)).where(
                r.experiment_id == experiment, r.seq <= until_seq,
                r.trial_id.in_(ids[i : i + _CHUNK]),
            )
            for trial_id, seq, stop, metrics in conn.execute(stmt):
                if float(stop) == wanted[trial_id] and (
                    trial_id not in out or seq > out[trial_id][0]
                ):
                    out[trial_id] = (int(seq), metrics)
    return {trial_id: json.loads(text) for trial_id, (_, text) in out.items()}


#: Event kinds ``rungflow export`` reads from the log: each segment's config
#: and result, the experiment's end (and its reopening), and what
#: :class:`ExportView` needs for a retried trial's status word.
EXPORT_VIEW_KINDS = (
    "SegmentStarted",
    "SegmentFinished",
    "ExperimentFinished",
    "TrialRetried",
    "SegmentFailed",
    "TrialStopped",
)


@dataclass(frozen=True)
class ExportView:
    """What ``rungflow export`` reads, without decoding an event.

    Everything is as of event ``until_seq`` (the log's end when read).

    Attributes:
        statuses: ``trial_id -> status`` of the ``trials`` projection (the
            stored word, see :func:`schedulers.outcomes.normalize_status`).
        segments: ``(trial_id, start, stop, reports, finished_at, config)``
            per ``SegmentFinished`` in log order: start, stop and the
            reports as the event wrote them, its write time (ISO 8601) and
            the config of the trial's last ``SegmentStarted`` before it
            (``{}`` if none; one dict shared by the segments that ran it:
            copy before changing it).
        events: ``(seq, kind, trial_id)`` of the other :data:`EXPORT_VIEW_KINDS`, in order.
        stale: The ``trials`` projection does not hold every trial of the
            log, or an event was written in another version of its payload:
            decode the events instead.
    """

    until_seq: int
    statuses: dict[str, str]
    segments: list[tuple[str, Any, Any, list[dict[str, Any]], str, dict[str, Any]]]
    events: list[tuple[int, str, str | None]]
    stale: bool


def read_export_view(engine: sa.Engine, experiment: str) -> ExportView:
    """Read :class:`ExportView` of ``experiment``, in one transaction.

    One pass over the log in seq order (the kinds of :data:`EXPORT_VIEW_KINDS`:
    the database extracts each segment's config, range and reports from the
    payload) plus the ``trials`` rows; the segments' texts are parsed by one
    ``json.loads`` and each distinct config text once.
    """
    ev, t = _EVENTS.c, _TRIALS.c
    with engine.connect() as conn:
        until_seq = _count(conn, sa.select(sa.func.max(ev.seq)).where(
            ev.experiment_id == experiment))
        statuses: dict[str, str] = {
            trial_id: status
            for trial_id, status in conn.execute(
                sa.select(t.trial_id, t.status).where(
                    t.experiment_id == experiment, t.created_seq <= until_seq)
            )
        }
        n_created = _kind_counts(conn, experiment, until_seq, ("TrialCreated",))["TrialCreated"]
        if len(statuses) != n_created:
            n_created = _kind_counts(
                conn, experiment, until_seq, ("TrialCreated",), bounded=True)["TrialCreated"]
        if len(statuses) != n_created:
            return ExportView(until_seq, {}, [], [], True)
        value = sa.case(
            (ev.kind == "SegmentStarted", _fields_json(conn, ev.payload, "config", VERSION_KEY)),
            (ev.kind == "SegmentFinished",
             _fields_json(conn, ev.payload, "start", "stop", "reports", VERSION_KEY)),
        )
        finished_at = sa.case((ev.kind == "SegmentFinished", _iso_utc(conn, ev.created_at)))
        rows = conn.execute(
            sa.select(ev.seq, ev.kind, ev.trial_id, value, finished_at)
            .where(ev.experiment_id == experiment, ev.seq <= until_seq,
                   ev.kind.in_(EXPORT_VIEW_KINDS))
            .order_by(ev.seq)
        ).all()
    # Each value ends with its payload's version: null (the first) unless an
    # upcaster must read it, which only decoding the event does.
    if any(text is not None and not text.endswith(_UNVERSIONED) for _, _, _, text, _ in rows):
        return ExportView(until_seq, {}, [], [], True)
    # Two C-level parses: every segment's values, and every distinct config
    # (a config is started again and again between exploits).
    finished = [text for _, kind, _, text, _ in rows if kind == "SegmentFinished"]
    values = json.loads("[" + ",".join(finished) + "]")
    texts = list(dict.fromkeys(text for _, kind, _, text, _ in rows if kind == "SegmentStarted"))
    configs = dict(zip(texts, json.loads("[" + ",".join(texts) + "]"), strict=True))
    config: dict[str, dict[str, Any]] = {}  # trial -> config of its last start
    segments = []
    events: list[tuple[int, str, str | None]] = []
    i = 0
    for seq, kind, trial_id, text, at in rows:
        if kind == "SegmentStarted":
            config[trial_id] = configs[text][0]
        elif kind == "SegmentFinished":
            if trial_id not in statuses:  # a trial never created: the log decides
                return ExportView(until_seq, {}, [], [], True)
            start, stop, reports, _ = values[i]
            i += 1
            segments.append((trial_id, start, stop, reports, at, config.get(trial_id, {})))
        else:
            events.append((int(seq), kind, trial_id))
    return ExportView(until_seq, statuses, segments, events, False)


_UNVERSIONED = ",null]"


def _fields_json(conn: sa.Connection, payload: Any, *keys: str) -> sa.ColumnElement[str]:
    """``[payload.k1, payload.k2, ...]`` as JSON text (null for a missing key),
    each value as the event wrote it, without decoding the payload in Python."""
    if conn.dialect.name == "postgresql":
        parts = [sa.func.coalesce(sa.cast(payload[k], sa.Text), "null", type_=sa.Text)
                 for k in keys]
        out = sa.literal("[", sa.Text) + parts[0]
        for part in parts[1:]:
            out = out + "," + part
        return out + "]"
    # json_extract of several paths gives their JSON array, literals kept.
    return sa.func.json_extract(payload, *(f"$.{k}" for k in keys), type_=sa.Text)
