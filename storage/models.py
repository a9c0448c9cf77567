"""SQLAlchemy table definitions (Core tables: the store never uses the ORM).

``events`` is the append-only source of truth; ``trials`` and ``results`` are
projections that :mod:`storage.projections` can always rebuild from it. The
migrations in ``storage/migrations`` create exactly these tables; a test
checks that the two never drift apart.

JSON columns use the portable ``JSON`` type (``json`` on PostgreSQL, text on
SQLite), deliberately not ``JSONB``: JSONB reorders object keys, and the order
of parameters in a stored spec or config decides the order in which a
scheduler draws random numbers, so a reordering would make a resumed run
diverge from the original one.

The tables are plain :class:`sqlalchemy.Table` objects, not ORM models:
importing ``sqlalchemy.orm`` costs ~80 ms of CPU, which every CLI command
and worker process paid for classes only ever used for their ``__table__``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

__all__ = [
    "EVENTS",
    "EXPERIMENTS",
    "LEASES",
    "METADATA",
    "RESULTS",
    "SNAPSHOTS",
    "TRIALS",
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


#: rungflow's tables (the migrations create exactly these; Alembic compares them).
METADATA = sa.MetaData()


def _experiment_fk(**kwargs: Any) -> sa.Column[str]:
    """``experiment_id`` pointing at ``experiments.name`` (deleted with it)."""
    return sa.Column(
        "experiment_id",
        sa.String(NAME_LENGTH),
        sa.ForeignKey("experiments.name", ondelete="CASCADE"),
        **kwargs,
    )


#: One row per experiment; ``state`` is one of ``storage.event_store.STATES``.
EXPERIMENTS = sa.Table(
    "experiments",
    METADATA,
    sa.Column("name", sa.String(NAME_LENGTH), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

#: Append-only log. The primary key ``(experiment_id, seq)`` is what turns a
#: lost race into an integrity error instead of a silent overwrite.
EVENTS = sa.Table(
    "events",
    METADATA,
    _experiment_fk(primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("trial_id", sa.String(NAME_LENGTH), nullable=True),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index("ix_events_experiment_kind", "experiment_id", "kind"),
)

#: Projection: the current state of each trial. ``created_seq`` is the seq of
#: its TrialCreated event; it orders trials the way they were created.
TRIALS = sa.Table(
    "trials",
    METADATA,
    _experiment_fk(primary_key=True),
    sa.Column("trial_id", sa.String(NAME_LENGTH), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("resource", sa.Float, nullable=False),
    sa.Column("metrics", sa.JSON, nullable=True),
    sa.Column("n_segments", sa.Integer, nullable=False),
    sa.Column("created_seq", sa.Integer, nullable=False),
)

#: Projection: one row per ``SegmentFinished`` event, keyed by its seq.
RESULTS = sa.Table(
    "results",
    METADATA,
    _experiment_fk(primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("trial_id", sa.String(NAME_LENGTH), nullable=False),
    sa.Column("start", sa.Float, nullable=False),
    sa.Column("stop", sa.Float, nullable=False),
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.Index("ix_results_experiment_trial", "experiment_id", "trial_id"),
)

#: Liveness of each runner or job-API worker working on an experiment.
#:
#: A row per owner, updated every few seconds by a heartbeat thread. Kept out
#: of the event log on purpose: heartbeats from N workers every few seconds
#: would bloat the append-only log that every resume replays, and each
#: heartbeat append would bump ``seq`` and make other workers' decisions lose
#: their optimistic-concurrency race for nothing. Not a foreign key to
#: ``experiments`` so that deleting an experiment (and SQLite's enforced
#: foreign keys) never trips over a row a dead worker left behind.
LEASES = sa.Table(
    "leases",
    METADATA,
    sa.Column("experiment_id", sa.String(NAME_LENGTH), primary_key=True),
    sa.Column("owner", sa.String(255), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("heartbeat_at", UTCDateTime(), nullable=False),
)

#: Cache: the folded state of an experiment after event ``seq`` (see
#: :mod:`storage.snapshots`). One row per experiment and code version; any row
#: can be deleted at any time, resume then folds the whole log.
SNAPSHOTS = sa.Table(
    "snapshots",
    METADATA,
    _experiment_fk(primary_key=True),
    sa.Column("version", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("taken_at", UTCDateTime(), nullable=False),
    sa.Column("state", sa.LargeBinary, nullable=False),
)
