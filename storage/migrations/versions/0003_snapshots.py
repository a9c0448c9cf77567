"""Snapshots: versioned folded state, so resume folds only the log's tail.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``snapshots``; written out in full so later model edits cannot change it."""
    op.create_table(
        "snapshots",
        sa.Column(
            "experiment_id",
            sa.String(128),
            sa.ForeignKey("experiments.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    """Drop ``snapshots``."""
    op.drop_table("snapshots")
