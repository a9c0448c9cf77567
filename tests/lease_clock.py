"""Move a lease back in time instead of sleeping until it is old.

Lease ages are measured on the database's clock (``EventStore.leases``), so
the honest way to make a lease look ``seconds`` older is to move its
``heartbeat_at`` back by that much, in the database: no test waits for the
wall clock, and a loaded machine cannot make a lease expire by accident.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from storage import EventStore
from storage.models import LEASES


def age_lease(store: EventStore, experiment: str, owner: str, seconds: float) -> None:
    """Make ``owner``'s lease on ``experiment`` ``seconds`` older (its last heartbeat earlier)."""
    row = store.leases(experiment)[owner]
    # The store's own engine: on SQLite it carries the WAL and busy-timeout settings.
    with store._engine.begin() as conn:
        conn.execute(
            sa.update(LEASES)
            .where(LEASES.c.experiment_id == experiment, LEASES.c.owner == owner)
            .values(heartbeat_at=row.heartbeat_at - timedelta(seconds=seconds))
        )
