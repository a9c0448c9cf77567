"""Initial schema: experiments, the append-only events log, trial/result projections.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create every table; written out in full so later model edits cannot change it."""
    op.create_table(
        "experiments",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "events",
        sa.Column(
            "experiment_id",
            sa.String(128),
            sa.ForeignKey("experiments.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("trial_id", sa.String(128), nullable=True),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_events_experiment_kind", "events", ["experiment_id", "kind"])
    op.create_table(
        "trials",
        sa.Column(
            "experiment_id",
            sa.String(128),
            sa.ForeignKey("experiments.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("trial_id", sa.String(128), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("resource", sa.Float, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=True),
        sa.Column("n_segments", sa.Integer, nullable=False),
        sa.Column("created_seq", sa.Integer, nullable=False),
    )
    op.create_table(
        "results",
        sa.Column(
            "experiment_id",
            sa.String(128),
            sa.ForeignKey("experiments.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("trial_id", sa.String(128), nullable=False),
        sa.Column("start", sa.Float, nullable=False),
        sa.Column("stop", sa.Float, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
    )
    op.create_index("ix_results_experiment_trial", "results", ["experiment_id", "trial_id"])


def downgrade() -> None:
    """Drop everything (projections first: they reference experiments)."""
    op.drop_table("results")
    op.drop_table("trials")
    op.drop_index("ix_events_experiment_kind", table_name="events")
    op.drop_table("events")
    op.drop_table("experiments")
