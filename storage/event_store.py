"""The SQL event log: append with optimistic concurrency, read, project.

Concurrency model. Every writer states the last ``seq`` it has seen
(``expected_seq``) and inserts its events at ``expected_seq + 1, ...``. The
primary key ``(experiment_id, seq)`` is what decides a race: of two writers
that saw the same seq, the second insert fails (on PostgreSQL it waits for the
first writer's commit, then fails) and is reported as :class:`ConcurrencyError`,
never as an overwrite. The first event is inserted with ``INSERT ... SELECT
... WHERE EXISTS (event at expected_seq)``, so a writer that claims to have
seen more than was written cannot leave a gap either. That is one statement
per append: no ``SELECT max(seq)``, no lock row. The events' projection
updates (:mod:`storage.projections`) commit in the same transaction.

:meth:`EventStore.transaction` keeps one write transaction open across several
appends, so that a result and the decisions it triggers commit together (see
:func:`flows.engine.commit.decide_and_commit`).

Writers that append all run long (a flow's runner) hold one connection for it:
:meth:`EventStore.writer` gives an :class:`EventWriter`, whose transactions
reuse that connection instead of checking one out of the pool each time. Its
transactions may also take the experiment's *write lock* (``lock=True``): on
PostgreSQL a ``pg_advisory_xact_lock`` keyed by the experiment, sent with
``BEGIN`` in one round trip (:mod:`storage.pg_session`; SQLite's ``BEGIN
IMMEDIATE`` already is one). Under the lock nobody who also takes it can
append, so a writer reads what others appended since its seq
(:meth:`AppendTransaction.catch_up`), decides again and appends in the same
transaction, instead of losing the race. The primary key still decides
between writers that do not take the lock. With the psycopg driver a
writer's transaction queues its writes and sends them with its next read or
its ``COMMIT`` (:mod:`storage.pg_pipeline`): a result is two round trips.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError

from schedulers.events import (
    Event,
    ExperimentCreated,
    ExperimentFinished,
    event_from_record,
    event_to_payload,
)
from storage import pg_pipeline, pg_session, projections, snapshots
from storage.checkpoints import validate_name
from storage.engine import READ_ONLY, close_engine, display_url, open_engine
from storage.errors import (
    ConcurrencyError,
    ConnectionDroppedError,
    ExperimentExistsError,
    ExperimentNotFoundError,
)
from storage.models import EVENTS as _EVENTS
from storage.models import EXPERIMENTS as _EXPERIMENTS
from storage.models import LEASES as _LEASES
from storage.models import RESULTS as _RESULTS
from storage.models import TRIALS as _TRIALS
from storage.models import UTCDateTime
from storage.schema import upgrade_schema
from storage.sqlite_writes import DirectWrites

__all__ = [
    "STATES",
    "AppendTransaction",
    "EventStore",
    "EventWriter",
    "ExperimentSummary",
    "LeaseRow",
    "ResultRow",
    "StoredEvent",
    "TrialRow",
]

#: Allowed values of ``experiments.state``. ``interrupted``: a run was stopped
#: (Ctrl-C, SIGTERM) and the experiment resumes where it stopped; ``cancelled``:
#: Prefect cancelled the flow run. The column is an unconstrained string, so no
#: migration was needed to add either.
STATES = ("running", "finished", "failed", "cancelled", "interrupted")


@dataclass(frozen=True)
class StoredEvent:
    """An event as stored: its experiment, position in the log and write time."""

    experiment: str
    seq: int
    event: Event
    created_at: datetime


@dataclass(frozen=True)
class ExperimentSummary:
    """One line of ``list_experiments``; ``state`` is one of :data:`STATES`."""

    name: str
    state: str
    created_at: datetime
    last_seq: int
    n_trials: int


@dataclass(frozen=True)
class TrialRow:
    """Projected state of one trial.

    Attributes:
        status: ``running``, ``paused``, ``completed``, ``pruned`` or ``failed``
            (``schedulers.outcomes``); rows folded by older versions may say ``stopped``.
        config: Current config (a PBT perturbation replaces it).
        resource: Resource reached by the last finished segment (or inherited
            from a PBT donor).
        metrics: Metrics of the last finished segment; None before the first.
        n_segments: Number of finished segments.
    """

    experiment: str
    trial_id: str
    status: str
    config: dict[str, Any]
    resource: float
    metrics: dict[str, Any] | None
    n_segments: int


@dataclass(frozen=True)
class ResultRow:
    """One finished segment; ``seq`` is that of its ``SegmentFinished`` event."""

    experiment: str
    trial_id: str
    seq: int
    start: float
    stop: float
    metrics: dict[str, Any]


@dataclass(frozen=True)
class LeaseRow:
    """One worker's lease on an experiment (see :meth:`EventStore.leases`).

    Attributes:
        owner: The worker's identity, as recorded in the claims it appends.
        host: Machine identity (hostname plus boot id) the worker runs on.
        pid: The worker's process id on that host.
        age: Seconds since its last heartbeat, measured on the database's
            clock (so workers on machines with skewed clocks agree).
    """

    experiment: str
    owner: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    age: float


def _now() -> datetime:
    return datetime.now(UTC)


def _db_now(conn: sa.Connection) -> datetime:
    """The database server's clock; every lease time is written and compared on it.

    PostgreSQL may serve workers on many machines whose clocks disagree, so its
    ``now()`` is the one clock they share. SQLite only ever serves one machine,
    whose clock every worker already shares.
    """
    if conn.dialect.name == "postgresql":
        value = conn.execute(sa.select(sa.func.now())).scalar_one()
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return _now()


_T = TypeVar("_T")

_EV = _EVENTS.c
_EVENT_COLUMNS = ("experiment_id", "seq", "kind", "trial_id", "payload", "created_at")
# The guarded first insert of an append (see the module doc). Bind types make
# the psycopg dialect render casts, which PostgreSQL needs in a SELECT list.
_GUARDED_INSERT = sa.insert(_EVENTS).from_select(
    list(_EVENT_COLUMNS),
    sa.select(
        sa.bindparam("experiment_id", type_=sa.String()),
        sa.bindparam("seq", type_=sa.Integer()),
        sa.bindparam("kind", type_=sa.String()),
        sa.bindparam("trial_id", type_=sa.String()),
        sa.bindparam("payload", type_=sa.JSON()),
        sa.bindparam("created_at", type_=UTCDateTime()),
    ).where(
        sa.exists().where(
            _EV.experiment_id == sa.bindparam("experiment_id"),
            _EV.seq == sa.bindparam("prev", type_=sa.Integer()),
        ),
        # A committed event at our seq: the log moved on. No row instead of a
        # key violation, so the transaction stays usable.
        ~sa.exists().where(
            _EV.experiment_id == sa.bindparam("experiment_id"),
            _EV.seq == sa.bindparam("seq"),
        ),
    ),
).returning(_EV.seq)  # rowcount of INSERT ... SELECT is not reported by every driver
_PLAIN_INSERT = sa.insert(_EVENTS)
_MARK_FINISHED = (
    sa.update(_EXPERIMENTS)
    .where(_EXPERIMENTS.c.name == sa.bindparam("e_name"))
    .values(state="finished", updated_at=sa.bindparam("now", type_=UTCDateTime()))
)
# The event a writer last saw and every one after it (AppendTransaction.catch_up).
_FROM_SEQ = (
    sa.select(_EV.seq, _EV.kind, _EV.trial_id, _EV.payload, _EV.created_at)
    .where(_EV.experiment_id == sa.bindparam("name"), _EV.seq >= sa.bindparam("seq"))
    .order_by(_EV.seq)
)
_LAST_SEQ = sa.select(sa.func.max(_EV.seq)).where(_EV.experiment_id == sa.bindparam("name"))


def lock_key(name: str) -> int:
    """The experiment's PostgreSQL advisory lock key: a stable signed 64-bit hash."""
    digest = hashlib.blake2b(b"rungflow:" + name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _retry_dropped(fn: Callable[[], _T]) -> _T:
    """Run ``fn``; once more if the database dropped the connection under it.

    Replaces a pre-ping per checkout (a round trip on every transaction): the
    pool learns of a dead connection from the failure itself, invalidates it,
    and the second attempt gets a fresh one. Only whole operations are
    repeated, never a half-done transaction (a dropped connection rolled it back).
    """
    try:
        return fn()
    except ConnectionDroppedError:
        pass
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    return fn()


class EventStore:
    """Event log and projections in SQLite or PostgreSQL.

    Opening a store creates or upgrades the schema (see :mod:`storage.schema`).
    Instances are thread-safe; use one per process and share it between threads.

    Args:
        url: SQLAlchemy URL, e.g. ``sqlite:///.rungflow/rungflow.db`` or
            ``postgresql+psycopg://user:pw@host/db``. It is kept only to
            re-open the store after pickling; show :attr:`url_for_display`.

        connect_timeout: Seconds a PostgreSQL connection attempt may take
            (default :data:`storage.engine.CONNECT_TIMEOUT_S`).

    Raises:
        SchemaVersionError: the database was migrated by a newer rungflow.
        DatabaseURLError: ``url`` is malformed or names an unsupported backend.
        DatabaseUnavailableError: the database cannot be reached, opened or
            written (also raised by any later call when it goes away).

    Example:
        >>> from schedulers.events import TrialCreated
        >>> store = EventStore("sqlite://")
        >>> store.create_experiment("demo", {"scheduler": "random"})
        >>> store.append("demo", [TrialCreated("t0000", {"lr": 0.1})], expected_seq=1)
        2
        >>> [s.event.kind for s in store.read("demo")]
        ['ExperimentCreated', 'TrialCreated']
        >>> store.close()
    """

    def __init__(self, url: str, *, connect_timeout: float | None = None) -> None:
        self._url = str(url)
        self._connect_timeout = connect_timeout
        #: The URL with its password masked; the only form that may be logged.
        self.url_for_display: str = display_url(self._url)
        # A store this process closed earlier on the same URL hands its engine
        # on, compiled statements and all (see storage.engine.open_engine).
        self._engine = open_engine(self._url, connect_timeout=connect_timeout)
        self._reader = self._engine.execution_options(**{READ_ONLY: True})
        self._writers: weakref.WeakSet[EventWriter] = weakref.WeakSet()
        self._closed = False
        try:
            upgrade_schema(self._engine)
        except BaseException:
            self._engine.dispose()  # not kept for reuse: something is wrong with it
            raise

    # ------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Release every pooled connection. The store must not be used afterwards."""
        for writer in list(self._writers):
            writer.close()
        if not self._closed:  # an engine kept for reuse is handed on once only
            self._closed = True
            close_engine(self._engine)

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
        return f"EventStore({self.url_for_display!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Engines do not pickle; a store sent to a worker process re-opens from the URL.
        return (_reopen, (self._url, self._connect_timeout))

    # ---------------------------------------------------------- experiments
    def create_experiment(self, name: str, spec: Mapping[str, Any]) -> None:
        """Create ``name`` with ``ExperimentCreated(spec)`` as event 1, atomically.

        Raises:
            ValueError: ``name`` is not a safe name (it also names checkpoint paths).
            ExperimentExistsError: the name is taken.
        """
        validate_name("experiment", name)
        event = ExperimentCreated(spec=spec)
        payload = event_to_payload(event)
        now = _now()
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    sa.insert(_EXPERIMENTS).values(
                        name=name, state="running", created_at=now, updated_at=now
                    )
                )
                conn.execute(
                    sa.insert(_EVENTS).values(
                        experiment_id=name,
                        seq=1,
                        kind=event.kind,
                        trial_id=None,
                        payload=payload,
                        created_at=now,
                    )
                )
        except IntegrityError:
            raise ExperimentExistsError(f"experiment {name!r} already exists") from None

    def has_experiment(self, name: str) -> bool:
        """Whether ``name`` exists."""
        with self._reader.connect() as conn:
            stmt = sa.select(_EXPERIMENTS.c.name).where(_EXPERIMENTS.c.name == name)
            return conn.execute(stmt).first() is not None

    def list_experiments(self) -> list[ExperimentSummary]:
        """Every experiment, oldest first."""
        exp = _EXPERIMENTS.c
        last = (
            sa.select(sa.func.coalesce(sa.func.max(_EVENTS.c.seq), 0))
            .where(_EVENTS.c.experiment_id == exp.name)
            .scalar_subquery()
        )
        n_trials = (
            sa.select(sa.func.count())
            .select_from(_TRIALS)
            .where(_TRIALS.c.experiment_id == exp.name)
            .scalar_subquery()
        )
        stmt = sa.select(exp.name, exp.state, exp.created_at, last, n_trials).order_by(
            exp.created_at, exp.name
        )
        with self._reader.connect() as conn:
            return [
                ExperimentSummary(name, state, created, int(seq), int(n))
                for name, state, created, seq, n in conn.execute(stmt)
            ]

    def experiment_state(self, name: str) -> str | None:
        """The stored state of ``name`` (one of :data:`STATES`); None if it does not exist."""
        with self._reader.connect() as conn:
            stmt = sa.select(_EXPERIMENTS.c.state).where(_EXPERIMENTS.c.name == name)
            state: str | None = conn.execute(stmt).scalar()
            return state

    def set_state(self, name: str, state: str) -> None:
        """Set the experiment state, e.g. ``failed`` when its flow run dies.

        Raises:
            ValueError: ``state`` is not one of :data:`STATES`.
            ExperimentNotFoundError: unknown experiment.
        """
        if state not in STATES:
            raise ValueError(f"state is {state!r}, but must be one of {', '.join(STATES)}")
        with self._engine.begin() as conn:
            result = conn.execute(
                sa.update(_EXPERIMENTS)
                .where(_EXPERIMENTS.c.name == name)
                .values(state=state, updated_at=_now())
            )
            if result.rowcount == 0:
                raise ExperimentNotFoundError(f"experiment {name!r} does not exist")

    def delete_experiment(self, name: str) -> None:
        """Delete an experiment with its log and projections (not its checkpoints).

        Raises:
            ExperimentNotFoundError: unknown experiment.
        """
        with self._engine.begin() as conn:
            snapshots.delete_snapshots(conn, name)
            for table in (_RESULTS, _TRIALS, _EVENTS):
                conn.execute(sa.delete(table).where(table.c.experiment_id == name))
            result = conn.execute(sa.delete(_EXPERIMENTS).where(_EXPERIMENTS.c.name == name))
            if result.rowcount == 0:
                raise ExperimentNotFoundError(f"experiment {name!r} does not exist")

    # ------------------------------------------------------------------ log
    def last_seq(self, name: str) -> int:
        """Seq of the newest event; 0 if there is none (unknown experiment)."""
        with self._reader.connect() as conn:
            return self._last_seq(conn, name)

    @staticmethod
    def _last_seq(conn: sa.Connection, name: str) -> int:
        return int(conn.execute(_LAST_SEQ, {"name": name}).scalar_one_or_none() or 0)

    def append(self, name: str, events: Sequence[Event], expected_seq: int) -> int:
        """Append ``events`` at ``expected_seq + 1, ...`` if nobody appended since.

        Events and their projection updates commit in one transaction; an
        ``ExperimentFinished`` among them also marks the experiment finished.

        Args:
            name: Experiment name.
            events: Events to append, in order. Empty is allowed (a no-op that
                still checks ``expected_seq``).
            expected_seq: The last seq the caller has seen.

        Returns:
            The new last seq, ``expected_seq + len(events)``.

        Raises:
            ConcurrencyError: the log's last seq is not ``expected_seq``; nothing was written.
            ExperimentNotFoundError: unknown experiment.
            ValueError: an event cannot be stored (``ExperimentCreated``, which only
                :meth:`create_experiment` writes; an unsafe trial id; a non-JSON value).
        """
        _check_expected(expected_seq)
        rows, folded = _encode(name, events, expected_seq)
        if not rows:
            actual = self.last_seq(name)
            if actual == 0 and not self.has_experiment(name):
                raise ExperimentNotFoundError(f"experiment {name!r} does not exist")
            if actual != expected_seq:
                raise ConcurrencyError(name, expected_seq, actual)
            return expected_seq

        def attempt() -> int:
            with self._engine.begin() as conn:
                self._insert(projections.ConnectionWrites(conn), name, rows, folded, expected_seq)
            return expected_seq + len(rows)

        try:
            return _retry_dropped(attempt)
        except _Lost:
            raise self._conflict(name, expected_seq) from None

    @contextmanager
    def transaction(self, name: str, expected_seq: int) -> Iterator[AppendTransaction]:
        """One write transaction for several appends that must commit together.

        The first append checks ``expected_seq`` exactly as :meth:`append`
        does; later ones continue after it. Everything rolls back if the block
        raises. A lost race raises :class:`ConcurrencyError` out of the block
        (after the rollback), from the first append that lost it.

        Example:
            >>> from schedulers.events import TrialCreated, TrialPaused
            >>> store = EventStore("sqlite://")
            >>> store.create_experiment("demo", {})
            >>> with store.transaction("demo", expected_seq=1) as tx:
            ...     _ = tx.append([TrialCreated("t0", {})])
            ...     tx.append([TrialPaused("t0", 0.0)])
            3
            >>> store.close()
        """
        _check_expected(expected_seq)
        try:
            with self._engine.begin() as conn:
                yield AppendTransaction(
                    self, conn, projections.ConnectionWrites(conn), name, expected_seq
                )
        except _Lost as lost:
            raise self._conflict(name, lost.expected_seq) from None

    def writer(self, *, synchronous_commit: bool = True) -> EventWriter:
        """A writer holding one connection for its appends (see :class:`EventWriter`).

        Close it when done; :meth:`close` closes any still open.

        Args:
            synchronous_commit: PostgreSQL only: False lets its commits return
                before their WAL is on disk (see :mod:`storage.pg_session`).
        """
        writer = EventWriter(self, synchronous_commit=synchronous_commit)
        self._writers.add(writer)
        return writer

    def read_one(self, name: str, seq: int) -> StoredEvent | None:
        """The event at ``seq`` (None if there is none); cheap on any log length."""
        ev = _EVENTS.c
        stmt = sa.select(ev.kind, ev.trial_id, ev.payload, ev.created_at).where(
            ev.experiment_id == name, ev.seq == seq
        )
        with self._reader.connect() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            return None
        kind, trial_id, payload, created = row
        return StoredEvent(name, seq, event_from_record(kind, trial_id, payload), created)

    def _insert(
        self,
        sql: projections.Writes,
        name: str,
        rows: list[dict[str, Any]],
        folded: list[tuple[int, Event]],
        expected_seq: int,
        *,
        guarded: bool = True,
    ) -> None:
        """Insert ``rows`` after ``expected_seq`` and fold them into the projections.

        ``guarded=False`` (the caller knows ``expected_seq`` is the log's end,
        see :class:`AppendTransaction`) writes every row with one plain INSERT.
        Through a pipelined transaction a key violation surfaces at its commit
        (see :class:`EventWriter`), not here.
        """
        try:
            rest = rows
            if guarded:
                if not sql.rows(_GUARDED_INSERT, {**rows[0], "prev": expected_seq}):
                    # Others appended since expected_seq; or no event there (unknown, or ahead).
                    raise _Lost(expected_seq)
                rest = rows[1:]
            if rest:
                sql.write(_PLAIN_INSERT, rest)
        except IntegrityError:
            raise _Lost(expected_seq) from None  # the primary key: someone wrote that seq
        projections.apply_events(sql, name, folded)
        if any(isinstance(e, ExperimentFinished) for _, e in folded):
            sql.write(_MARK_FINISHED, {"e_name": name, "now": _now()})

    def _conflict(self, name: str, expected_seq: int) -> Exception:
        actual = self.last_seq(name)
        if actual == 0 and not self.has_experiment(name):
            return ExperimentNotFoundError(f"experiment {name!r} does not exist")
        return ConcurrencyError(name, expected_seq, actual)

    def read(
        self,
        name: str,
        after_seq: int = 0,
        *,
        until_seq: int | None = None,
        kinds: Sequence[str] | None = None,
    ) -> list[StoredEvent]:
        """Events with ``after_seq < seq <= until_seq`` in seq order.

        Empty for an unknown experiment. ``kinds`` keeps only events of those
        kinds (an index serves it: cheap on a long log).
        """
        ev = _EVENTS.c
        stmt = (
            sa.select(ev.seq, ev.kind, ev.trial_id, ev.payload, ev.created_at)
            .where(ev.experiment_id == name, ev.seq > after_seq)
            .order_by(ev.seq)
        )
        if until_seq is not None:
            stmt = stmt.where(ev.seq <= until_seq)
        if kinds is not None:
            stmt = stmt.where(ev.kind.in_(list(kinds)))

        def attempt() -> list[StoredEvent]:
            with self._reader.connect() as conn:
                return _stored(conn, name, stmt)

        return _retry_dropped(attempt)

    # ------------------------------------------------------------ snapshots
    def save_snapshot(self, name: str, seq: int, version: str, state: bytes) -> bool:
        """Store ``state``, the fold of events ``1..seq`` (see :mod:`storage.snapshots`).

        Returns False when a snapshot at least as new is already stored.
        """
        return snapshots.save_snapshot(self._engine, name, seq, version, state)

    def load_snapshot(self, name: str, version: str) -> snapshots.Snapshot | None:
        """The stored snapshot of ``name`` with exactly ``version``, if any."""
        return _retry_dropped(lambda: snapshots.load_snapshot(self._reader, name, version))

    # ---------------------------------------------------------- projections
    def status_view(self, name: str, until_seq: int) -> projections.StatusView:
        """What ``rungflow status`` reads besides the folded scheduler, up to
        ``until_seq`` (see :func:`storage.projections.read_status_view`)."""
        return _retry_dropped(
            lambda: projections.read_status_view(self._reader, name, until_seq)
        )

    def status_summary(self, name: str) -> projections.StatusSummary:
        """What the table of ``rungflow status`` reads, as of the log's end
        (see :func:`storage.projections.read_status_summary`)."""
        return _retry_dropped(lambda: projections.read_status_summary(self._reader, name))

    def trial_tallies(self, name: str, until_seq: int) -> projections.TrialTallies | None:
        """What the end of a flow run reads besides its runner's state, if the
        log still ends at ``until_seq`` (see
        :func:`storage.projections.read_trial_tallies`)."""
        return _retry_dropped(
            lambda: projections.read_trial_tallies(self._reader, name, until_seq)
        )

    def results_at(
        self, name: str, until_seq: int, wanted: dict[str, float]
    ) -> dict[str, dict[str, Any]]:
        """Metrics of each trial's latest result that stopped at ``wanted[trial]``
        (see :func:`storage.projections.read_results_at`)."""
        return _retry_dropped(
            lambda: projections.read_results_at(self._reader, name, until_seq, wanted)
        )

    def export_view(self, name: str) -> projections.ExportView:
        """What ``rungflow export`` reads, as of the log's end
        (see :func:`storage.projections.read_export_view`)."""
        return _retry_dropped(lambda: projections.read_export_view(self._reader, name))

    def trials(self, name: str) -> list[TrialRow]:
        """Projected trials in creation order."""
        t = _TRIALS.c
        stmt = (
            sa.select(t.trial_id, t.status, t.config, t.resource, t.metrics, t.n_segments)
            .where(t.experiment_id == name)
            .order_by(t.created_seq, t.trial_id)
        )
        with self._reader.connect() as conn:
            return [
                TrialRow(name, tid, status, dict(config), float(resource), metrics, int(n))
                for tid, status, config, resource, metrics, n in conn.execute(stmt)
            ]

    def results(self, name: str, trial_id: str | None = None) -> list[ResultRow]:
        """Finished segments in seq order, optionally of one trial."""
        r = _RESULTS.c
        stmt = sa.select(r.trial_id, r.seq, r.start, r.stop, r.metrics).where(
            r.experiment_id == name
        )
        if trial_id is not None:
            stmt = stmt.where(r.trial_id == trial_id)
        with self._reader.connect() as conn:
            return [
                ResultRow(name, tid, int(seq), float(start), float(stop), dict(metrics))
                for tid, seq, start, stop, metrics in conn.execute(stmt.order_by(r.seq))
            ]

    def rebuild_projections(self, name: str) -> None:
        """Drop and re-fold ``name``'s trials and results from its events.

        Raises:
            ExperimentNotFoundError: unknown experiment.
        """
        with self._engine.begin() as conn:
            # Lock the experiment row so no append interleaves with the refold.
            found = conn.execute(
                sa.select(_EXPERIMENTS.c.name).where(_EXPERIMENTS.c.name == name).with_for_update()
            ).first()
            if found is None:
                raise ExperimentNotFoundError(f"experiment {name!r} does not exist")
            ev = _EVENTS.c
            stmt = (
                sa.select(ev.seq, ev.kind, ev.trial_id, ev.payload)
                .where(ev.experiment_id == name)
                .order_by(ev.seq)
            )
            items = [
                (seq, event_from_record(kind, trial_id, payload))
                for seq, kind, trial_id, payload in conn.execute(stmt)
            ]
            projections.rebuild(conn, name, items)

    # --------------------------------------------------------------- leases
    def register_lease(self, name: str, owner: str, host: str, pid: int) -> None:
        """Create (or refresh) ``owner``'s lease on ``name``, heartbeat now.

        A worker registers before it appends its first claim, so any claim
        another worker reads has a lease row behind it (or had one: a missing
        row means the owner released it).
        """
        with self._engine.begin() as conn:
            now = _db_now(conn)
            updated = conn.execute(
                sa.update(_LEASES)
                .where(_LEASES.c.experiment_id == name, _LEASES.c.owner == owner)
                .values(host=host, pid=pid, heartbeat_at=now)
            )
            if updated.rowcount == 0:
                conn.execute(
                    sa.insert(_LEASES).values(
                        experiment_id=name,
                        owner=owner,
                        host=host,
                        pid=pid,
                        started_at=now,
                        heartbeat_at=now,
                    )
                )

    def heartbeat(self, name: str, owner: str) -> bool:
        """Renew ``owner``'s lease; False if the row is gone (released or deleted)."""
        with self._engine.begin() as conn:
            now = _db_now(conn)
            result = conn.execute(
                sa.update(_LEASES)
                .where(_LEASES.c.experiment_id == name, _LEASES.c.owner == owner)
                .values(heartbeat_at=now)
            )
            return bool(result.rowcount)

    def release_lease(self, name: str, owner: str) -> None:
        """Drop ``owner``'s lease: segments it still holds may be reclaimed at once."""
        with self._engine.begin() as conn:
            conn.execute(
                sa.delete(_LEASES).where(
                    _LEASES.c.experiment_id == name, _LEASES.c.owner == owner
                )
            )

    def leases(self, name: str) -> dict[str, LeaseRow]:
        """Every lease on ``name`` by owner, with its age on the database clock."""
        le = _LEASES.c
        stmt = sa.select(le.owner, le.host, le.pid, le.started_at, le.heartbeat_at).where(
            le.experiment_id == name
        )
        with self._reader.connect() as conn:
            now = _db_now(conn)
            return {
                owner: LeaseRow(
                    name, owner, host, int(pid), started, beat,
                    max(0.0, (now - beat).total_seconds()),
                )
                for owner, host, pid, started, beat in conn.execute(stmt)
            }

    def delete_leases(self, name: str) -> int:
        """Remove every lease on ``name`` (when the experiment is deleted); returns the count."""
        with self._engine.begin() as conn:
            result = conn.execute(sa.delete(_LEASES).where(_LEASES.c.experiment_id == name))
            return int(result.rowcount)


def _stored(conn: sa.Connection, name: str, stmt: sa.Select[Any]) -> list[StoredEvent]:
    return [
        StoredEvent(name, seq, event_from_record(kind, trial_id, payload), created)
        for seq, kind, trial_id, payload, created in conn.execute(stmt)
    ]


def _reopen(url: str, connect_timeout: float | None) -> EventStore:
    return EventStore(url, connect_timeout=connect_timeout)


class _Lost(Exception):
    """Internal: an append lost its race (turned into ConcurrencyError after rollback)."""

    def __init__(self, expected_seq: int) -> None:
        super().__init__(expected_seq)
        self.expected_seq = expected_seq


class AppendTransaction:
    """Appends inside one open write transaction (see :meth:`EventStore.transaction`).

    Attributes:
        seq: The last seq written so far in this transaction (or the expected
            seq before the first append).
    """

    def __init__(
        self,
        store: EventStore,
        conn: sa.Connection,
        sql: projections.Writes,
        name: str,
        seq: int,
    ) -> None:
        self._store = store
        self._conn = conn
        self._sql = sql
        self.name = name
        self.seq = seq
        # Whether the next append must check that the event at seq exists and
        # nobody committed after it (the guarded INSERT). Not once this
        # transaction appended (its own rows hold those seqs) or read the log's
        # end (catch_up): then the primary key alone stops a writer that
        # does not take the lock, and one plain INSERT writes every row.
        self._guarded = True

    def append(self, events: Sequence[Event]) -> int:
        """Append ``events`` after :attr:`seq`; return the new last seq."""
        rows, folded = _encode(self.name, events, self.seq)
        if rows:
            self._store._insert(self._sql, self.name, rows, folded, self.seq, guarded=self._guarded)
            self.seq += len(rows)
            self._guarded = False
        return self.seq

    def catch_up(self) -> list[StoredEvent]:
        """The events after :attr:`seq`, read in this transaction; :attr:`seq` moves
        to the newest. Meant for a locked transaction (see
        :meth:`EventWriter.transaction`): no writer that takes the lock can
        append until it ends, so what it returns is the log's end, and the
        appends that follow need no guard (one plain INSERT).

        Raises:
            _Lost: (out of the block: :class:`ConcurrencyError` or
                :class:`ExperimentNotFoundError`) no event is at :attr:`seq`.
        """
        rows = self._sql.rows(_FROM_SEQ, {"name": self.name, "seq": self.seq})
        if not rows or rows[0][0] != self.seq:
            raise _Lost(self.seq)  # a writer ahead of the log, or no such experiment
        newer = [
            StoredEvent(self.name, seq, event_from_record(kind, trial_id, payload), created)
            for seq, kind, trial_id, payload, created in rows[1:]
        ]
        if newer:
            self.seq = newer[-1].seq
        self._guarded = False
        return newer


class EventWriter:
    """Appends through one connection held for the writer's life (a flow run).

    Saves a pool checkout and return per transaction (and with them a
    rollback on return). The connection is idle, holding no lock, between
    transactions: on SQLite each transaction is one short ``BEGIN IMMEDIATE``.
    A connection the database dropped (a PostgreSQL restart) is replaced at
    the next transaction; :meth:`append` repeats itself once on the new one.
    Thread-safe: transactions of one writer run one at a time.

    With the psycopg driver its transactions are pipelined
    (:mod:`storage.pg_pipeline`): writes go to the server with the next read
    or with ``COMMIT``, so a lost race on the primary key (a writer that does
    not take the lock got there first) is found at the end of the ``with``
    block and raised from it as :class:`ConcurrencyError`, after the rollback.
    """

    def __init__(self, store: EventStore, *, synchronous_commit: bool = True) -> None:
        self._store = store
        self._conn: sa.Connection | None = None
        self._lock = threading.RLock()
        #: PostgreSQL: False commits without waiting for the WAL flush (see
        #: :mod:`storage.pg_session`); SQLite ignores it.
        self.synchronous_commit = synchronous_commit
        self._pg = store._engine.dialect.name == "postgresql"
        # SQLite: statements run on the driver connection (see storage.sqlite_writes).
        self._sqlite = store._engine.dialect.name == "sqlite"
        self._compiler = (
            pg_pipeline.Compiler(store._engine.dialect)
            if pg_pipeline.supported(store._engine)
            else None
        )

    def _connection(self) -> sa.Connection:
        conn = self._conn
        if conn is not None and (conn.closed or conn.invalidated):
            with contextlib.suppress(Exception):
                conn.close()
            conn = None
        if conn is None:
            conn = self._store._engine.connect()
            if self._pg:
                conn = pg_session.hold_for_writer(conn)
            self._conn = conn
        return conn

    @contextmanager
    def transaction(
        self, name: str, expected_seq: int, *, lock: bool = False
    ) -> Iterator[AppendTransaction]:
        """Like :meth:`EventStore.transaction`, on the held connection.

        Args:
            name: Experiment name.
            expected_seq: The last seq the caller has seen.
            lock: Take the experiment's write lock first (PostgreSQL:
                ``pg_advisory_xact_lock``; SQLite's write transactions always
                hold the database's), so that a writer that finds the log
                moved on can catch up and append in the same transaction.
                On PostgreSQL it costs no round trip of its own: it goes with
                ``BEGIN`` (see :mod:`storage.pg_session`).
        """
        _check_expected(expected_seq)
        with self._lock:
            conn = self._connection()
            if self._compiler is not None:
                with self._pipelined(conn, name, expected_seq, lock) as tx:
                    yield tx
                return
            try:
                with conn.begin():
                    if self._pg:
                        key = lock_key(name) if lock else None
                        conn.exec_driver_sql(
                            pg_session.begin_statement(
                                key, synchronous_commit=self.synchronous_commit
                            ),
                            execution_options={"no_parameters": True},
                        )
                    writes = (
                        DirectWrites(conn) if self._sqlite else projections.ConnectionWrites(conn)
                    )
                    yield AppendTransaction(self._store, conn, writes, name, expected_seq)
            except _Lost as lost:
                raise self._store._conflict(name, lost.expected_seq) from None

    @contextmanager
    def _pipelined(
        self, conn: sa.Connection, name: str, expected_seq: int, lock: bool
    ) -> Iterator[AppendTransaction]:
        """:meth:`transaction` on psycopg: writes queued, sent with a read or the commit."""
        assert self._compiler is not None
        begin = pg_session.begin_statements(
            lock_key(name) if lock else None, synchronous_commit=self.synchronous_commit
        )
        tx = pg_pipeline.PipelinedTransaction(conn, self._compiler, begin)
        try:
            try:
                yield AppendTransaction(self._store, conn, tx, name, expected_seq)
            except BaseException:
                tx.rollback()
                raise
            try:
                tx.commit()
            except IntegrityError:
                # The primary key: a writer that does not take the lock wrote
                # one of our seqs first (rolled back by then).
                raise _Lost(expected_seq) from None
        except _Lost as lost:
            raise self._store._conflict(name, lost.expected_seq) from None

    def append(self, name: str, events: Sequence[Event], expected_seq: int) -> int:
        """Like :meth:`EventStore.append`, on the held connection."""
        if not events:
            return self._store.append(name, events, expected_seq)

        def attempt() -> int:
            with self.transaction(name, expected_seq) as tx:
                return tx.append(events)

        return _retry_dropped(attempt)

    def close(self) -> None:
        """Return the connection to the pool (the writer may be used again)."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _check_expected(expected_seq: int) -> None:
    if isinstance(expected_seq, bool) or not isinstance(expected_seq, int) or expected_seq < 0:
        raise ValueError(f"expected_seq is {expected_seq!r}, but must be an integer >= 0")


def _encode(
    name: str, events: Sequence[Event], expected_seq: int
) -> tuple[list[dict[str, Any]], list[tuple[int, Event]]]:
    """Rows to insert and ``(seq, event)`` pairs to fold, validated before any I/O.

    Events go through the codec first: the projection then folds exactly what
    a later read (or rebuild) decodes, and bad events fail here, before any
    transaction starts.
    """
    rows: list[dict[str, Any]] = []
    folded: list[tuple[int, Event]] = []
    now = _now()
    for offset, event in enumerate(events, start=1):
        if not isinstance(event, Event):
            raise TypeError(f"events[{offset - 1}] is {event!r}, but must be an Event")
        if isinstance(event, ExperimentCreated):
            raise ValueError("ExperimentCreated is written by create_experiment, not append")
        trial_id = event.trial
        if trial_id is not None:
            validate_name("trial_id", trial_id)
        payload = event_to_payload(event)
        seq = expected_seq + offset
        folded.append((seq, event_from_record(event.kind, trial_id, payload)))
        rows.append(
            {
                "experiment_id": name,
                "seq": seq,
                "kind": event.kind,
                "trial_id": trial_id,
                "payload": payload,
                "created_at": now,
            }
        )
    return rows, folded
