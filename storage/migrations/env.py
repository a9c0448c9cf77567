"""Alembic environment for rungflow.

rungflow runs migrations programmatically: :func:`storage.schema.upgrade_schema`
passes an open connection in ``config.attributes["connection"]`` so the upgrade
happens inside the caller's transaction (and, on PostgreSQL, under its advisory
lock). Running the ``alembic`` command line against ``sqlalchemy.url`` also
works, for operators who prefer it.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from storage.models import METADATA
from storage.schema import VERSION_TABLE

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=METADATA,
        # Own version table, so a database shared with another Alembic-managed
        # application does not mix up the two histories.
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run against the passed-in connection, or a fresh one from the config URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url or pass a connection in config.attributes")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("rungflow migrations run online only")
run_migrations_online()
