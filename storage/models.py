"""SQLAlchemy table definitions.

``events`` is the append-only source of truth; ``trials`` and ``results`` are
projections that :mod:`storage.projections` can always rebuild from it. The
migrations in ``storage/migrations`` create exactly these tables; a test
checks that the two never drift apart.

JSON columns use the portable ``JSON`` type (``json`` on PostgreSQL, text on
SQLite), deliberately not ``JSONB``: JSONB reorders object keys, and the order
of parameters in a stored spec or config decides the order in which a
scheduler draws random numbers, so a reordering would make a resumed run
diverge from the original one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "EVENTS",
    "EXPERIMENTS",
    "LEASES",
    "RESULTS",
    "SNAPSHOTS",
    "TRIALS",
    "Base",
    "EventModel",
    "ExperimentModel",
    "LeaseModel",
    "ResultModel",
    "SnapshotModel",
    "TrialModel",
    "UTCDateTime",
]

#: Longest experiment name / trial id; matches the checkpoint key rule.
NAME_LENGTH = 128


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    SQLite has no timezone support and hands back naive datetimes; storing
    naive UTC and re-attaching UTC on read makes both backends return the same
    aware values.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"datetime {value!r} is naive; storage needs timezone-aware values")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base holding rungflow's metadata."""


class ExperimentModel(Base):
    """One row per experiment; ``state`` is one of ``storage.event_store.STATES``."""

    __tablename__ = "experiments"

    name: Mapped[str] = mapped_column(sa.String(NAME_LENGTH), primary_key=True)
    state: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class EventModel(Base):
    """Append-only log. The primary key ``(experiment_id, seq)`` is what turns a
    lost race into an integrity error instead of a silent overwrite."""

    __tablename__ = "events"
    __table_args__ = (sa.Index("ix_events_experiment_kind", "experiment_id", "kind"),)

    experiment_id: Mapped[str] = mapped_column(
        sa.String(NAME_LENGTH),
        sa.ForeignKey("experiments.name", ondelete="CASCADE"),
        primary_key=True,
    )
    seq: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    trial_id: Mapped[str | None] = mapped_column(sa.String(NAME_LENGTH), nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(sa.JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class TrialModel(Base):
    """Projection: the current state of each trial."""

    __tablename__ = "trials"

    experiment_id: Mapped[str] = mapped_column(
        sa.String(NAME_LENGTH),
        sa.ForeignKey("experiments.name", ondelete="CASCADE"),
        primary_key=True,
    )
    trial_id: Mapped[str] = mapped_column(sa.String(NAME_LENGTH), primary_key=True)
    status: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    config: Mapped[dict[str, Any]] = mapped_column(sa.JSON, nullable=False)
    resource: Mapped[float] = mapped_column(sa.Float, nullable=False)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)
    n_segments: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    #: Seq of the TrialCreated event; orders trials the way they were created.
    created_seq: Mapped[int] = mapped_column(sa.Integer, nullable=False)


class ResultModel(Base):
    """Projection: one row per ``SegmentFinished`` event, keyed by its seq."""

    __tablename__ = "results"
    __table_args__ = (sa.Index("ix_results_experiment_trial", "experiment_id", "trial_id"),)

    experiment_id: Mapped[str] = mapped_column(
        sa.String(NAME_LENGTH),
        sa.ForeignKey("experiments.name", ondelete="CASCADE"),
        primary_key=True,
    )
    seq: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    trial_id: Mapped[str] = mapped_column(sa.String(NAME_LENGTH), nullable=False)
    start: Mapped[float] = mapped_column(sa.Float, nullable=False)
    stop: Mapped[float] = mapped_column(sa.Float, nullable=False)
    metrics: Mapped[dict[str, Any]] = mapped_column(sa.JSON, nullable=False)


class LeaseModel(Base):
    """Liveness of each runner or job-API worker working on an experiment.

    A row per owner, updated every few seconds by a heartbeat thread. Kept out
    of the event log on purpose: heartbeats from N workers every few seconds
    would bloat the append-only log that every resume replays, and each
    heartbeat append would bump ``seq`` and make other workers' decisions lose
    their optimistic-concurrency race for nothing. Not a foreign key to
    ``experiments`` so that deleting an experiment (and SQLite's enforced
    foreign keys) never trips over a row a dead worker left behind.
    """

    __tablename__ = "leases"

    experiment_id: Mapped[str] = mapped_column(sa.String(NAME_LENGTH), primary_key=True)
    owner: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    host: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    pid: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class SnapshotModel(Base):
    """Cache: the folded state of an experiment after event ``seq`` (see
    :mod:`storage.snapshots`). One row per experiment and code version; any row
    can be deleted at any time, resume then folds the whole log."""

    __tablename__ = "snapshots"

    experiment_id: Mapped[str] = mapped_column(
        sa.String(NAME_LENGTH),
        sa.ForeignKey("experiments.name", ondelete="CASCADE"),
        primary_key=True,
    )
    version: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    state: Mapped[bytes] = mapped_column(sa.LargeBinary, nullable=False)


# Core ``Table`` handles for the store's SQL; ``__table__`` is typed as a bare
# FromClause, which insert()/update() do not accept under mypy.
EXPERIMENTS = cast(sa.Table, ExperimentModel.__table__)
EVENTS = cast(sa.Table, EventModel.__table__)
TRIALS = cast(sa.Table, TrialModel.__table__)
RESULTS = cast(sa.Table, ResultModel.__table__)
LEASES = cast(sa.Table, LeaseModel.__table__)
SNAPSHOTS = cast(sa.Table, SnapshotModel.__table__)
