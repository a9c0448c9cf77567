"""The SQL event log: append with optimistic concurrency, read, project.

Concurrency model. Every writer states the last ``seq`` it has seen
(``expected_seq``). Inside one short write transaction the store

1. touches the ``experiments`` row (``UPDATE ... updated_at``), which on
   PostgreSQL row-locks it so concurrent appends to one experiment queue up,
   and on SQLite happens under the ``BEGIN IMMEDIATE`` write lock anyway;
2. compares ``expected_seq`` with the stored last seq and raises
   :class:`ConcurrencyError` if they differ;
3. inserts the events at ``expected_seq + 1 ...`` and folds them into the
   projections.

The primary key ``(experiment_id, seq)`` is the backstop: should two writers
ever pass step 2 together, the loser's insert fails and is reported as the
same :class:`ConcurrencyError`, never as an overwrite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from schedulers.events import (
    Event,
    ExperimentCreated,
    ExperimentFinished,
    event_from_record,
    event_to_payload,
)
from storage import projections
from storage.checkpoints import validate_name
from storage.engine import READ_ONLY, create_store_engine, display_url
from storage.errors import ConcurrencyError, ExperimentExistsError, ExperimentNotFoundError
from storage.models import EVENTS as _EVENTS
from storage.models import EXPERIMENTS as _EXPERIMENTS
from storage.models import LEASES as _LEASES
from storage.models import RESULTS as _RESULTS
from storage.models import TRIALS as _TRIALS
from storage.schema import upgrade_schema

__all__ = [
    "STATES",
    "EventStore",
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
        self._engine = create_store_engine(self._url, connect_timeout=connect_timeout)
        self._reader = self._engine.execution_options(**{READ_ONLY: True})
        try:
            upgrade_schema(self._engine)
        except BaseException:
            self._engine.dispose()
            raise

    # ------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Release every pooled connection. The store must not be used afterwards."""
        self._engine.dispose()

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
        stmt = sa.select(sa.func.max(_EVENTS.c.seq)).where(_EVENTS.c.experiment_id == name)
        return int(conn.execute(stmt).scalar_one_or_none() or 0)

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
        if isinstance(expected_seq, bool) or not isinstance(expected_seq, int) or expected_seq < 0:
            raise ValueError(f"expected_seq is {expected_seq!r}, but must be an integer >= 0")
        # Normalise through the codec first: the projection then folds exactly
        # what a later read (or rebuild) will decode, and bad events fail here,
        # before any transaction starts.
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
        values: dict[str, Any] = {"updated_at": now}
        if any(isinstance(e, ExperimentFinished) for _, e in folded):
            values["state"] = "finished"
        try:
            with self._engine.begin() as conn:
                touched = conn.execute(
                    sa.update(_EXPERIMENTS).where(_EXPERIMENTS.c.name == name).values(values)
                )
                if touched.rowcount == 0:
                    raise ExperimentNotFoundError(f"experiment {name!r} does not exist")
                actual = self._last_seq(conn, name)
                if actual != expected_seq:
                    raise ConcurrencyError(name, expected_seq, actual)
                if rows:
                    conn.execute(sa.insert(_EVENTS), rows)
                    projections.apply_events(conn, name, folded)
        except IntegrityError as exc:
            raise ConcurrencyError(name, expected_seq, self.last_seq(name)) from exc
        return expected_seq + len(rows)

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

    def read(self, name: str, after_seq: int = 0) -> list[StoredEvent]:
        """Events with ``seq > after_seq`` in seq order (empty for an unknown experiment)."""
        ev = _EVENTS.c
        stmt = (
            sa.select(ev.seq, ev.kind, ev.trial_id, ev.payload, ev.created_at)
            .where(ev.experiment_id == name, ev.seq > after_seq)
            .order_by(ev.seq)
        )
        with self._reader.connect() as conn:
            return [
                StoredEvent(name, seq, event_from_record(kind, trial_id, payload), created)
                for seq, kind, trial_id, payload, created in conn.execute(stmt)
            ]

    # ---------------------------------------------------------- projections
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


def _reopen(url: str, connect_timeout: float | None) -> EventStore:
    return EventStore(url, connect_timeout=connect_timeout)
