"""Throw-away PostgreSQL databases for tests.

The server is expected at 127.0.0.1:5432 with trust auth for user ``postgres``
(override with ``RUNGFLOW_TEST_PG``, a libpq conninfo to the admin database).
:func:`pg_url` creates a fresh database per call; every database it created is
dropped when the interpreter exits (or earlier via :func:`drop_databases`).

Use :func:`require_pg` in fixtures: it skips when the server is unreachable,
except on CI (``CI=true``), where a missing database is a failure.
"""

from __future__ import annotations

import atexit
import functools
import os
import uuid

import pytest

__all__ = ["drop_databases", "pg_available", "pg_schema_url", "pg_url", "require_pg"]

_ADMIN = os.environ.get(
    "RUNGFLOW_TEST_PG", "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
)
_created: list[str] = []
_shared: dict[str, str] = {}


def _admin_connect():  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(_ADMIN, autocommit=True)


@functools.cache
def pg_available() -> bool:
    """Whether the test PostgreSQL server accepts connections (checked once)."""
    try:
        with _admin_connect() as conn:
            conn.execute("SELECT 1")
    except Exception:
        return False
    return True


def require_pg() -> None:
    """Skip the calling test if PostgreSQL is unreachable; fail instead on CI."""
    if pg_available():
        return
    reason = f"PostgreSQL not reachable via {_ADMIN!r}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}, and CI=true requires it")
    pytest.skip(reason)


def pg_url() -> str:
    """Create a fresh empty database and return its SQLAlchemy URL."""
    require_pg()
    name = f"rungflow_test_{uuid.uuid4().hex[:16]}"
    with _admin_connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        info = conn.info
        host, port, user = info.host, info.port, info.user
    _created.append(name)
    return f"postgresql+psycopg://{user}@{host}:{port}/{name}"


def pg_schema_url() -> str:
    """Like :func:`pg_url`, but a fresh *schema* in one shared database.

    Much cheaper than a database per test (dropping a database that holds
    tables costs most of a second); the URL sets ``search_path`` so every
    table, including Alembic's version table, lands in the new schema.
    """
    import psycopg

    if "url" not in _shared:
        _shared["url"] = pg_url()
    base = _shared["url"]
    schema = f"s_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(
        base.replace("postgresql+psycopg", "postgresql", 1), autocommit=True
    ) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return f"{base}?options=-csearch_path%3D{schema}"


def drop_databases() -> None:
    """Drop every database :func:`pg_url` created (best effort)."""
    if not _created:
        return
    try:
        with _admin_connect() as conn:
            while _created:
                # FORCE (PostgreSQL 13+) ends sessions a leaked engine still holds.
                conn.execute(f'DROP DATABASE IF EXISTS "{_created.pop()}" WITH (FORCE)')
            _shared.clear()
    except Exception:
        pass


atexit.register(drop_databases)
