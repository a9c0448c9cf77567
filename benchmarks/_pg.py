"""Scratch PostgreSQL databases for benchmarks.

A benchmark never migrates, fills or times a shared database: each
measurement gets a fresh one on the server ``--pg`` names, dropped afterwards
(with ``WITH (FORCE)``, so a child that died holding connections cannot keep
it alive), together with any copies named ``<name>__*`` made from it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

__all__ = ["scratch_database"]


@contextmanager
def scratch_database(base: str, prefix: str) -> Iterator[str]:
    """Yield the URL of a new database ``<prefix>_<random>`` on ``base``'s server.

    ``base`` needs the right to create databases. On exit the database and its
    ``<name>__*`` copies are dropped.
    """
    parsed = sa.make_url(base)
    db = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(parsed, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{db}"'))
        yield parsed.set(database=db).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            names = [db, *(r[0] for r in conn.execute(
                sa.text("SELECT datname FROM pg_database WHERE datname LIKE :copies"),
                {"copies": f"{db}\\_\\_%"}))]
            for name in names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
