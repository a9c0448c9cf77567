"""Engine creation with the connection settings rungflow relies on.

SQLite is the zero-setup default and must survive a thread pool and several
processes writing at once without ever raising "database is locked":

* ``journal_mode=WAL`` lets readers run while one writer writes.
* ``busy_timeout`` makes a blocked writer wait instead of failing at once.
* Write transactions start with ``BEGIN IMMEDIATE``. Python's default
  (deferred ``BEGIN``) takes the write lock only at the first write; two
  deferred transactions that both read and then write deadlock, and SQLite
  resolves that by failing one *without* calling the busy handler. Taking the
  lock up front turns every conflict into a plain wait.
* Read-only work runs on an engine view whose transactions start with a plain
  ``BEGIN`` so it never queues behind writers (WAL gives it a snapshot).

PostgreSQL needs nothing special beyond ``pool_pre_ping`` (long flows outlive
idle connections); concurrency control lives in :mod:`storage.event_store`.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.pool import StaticPool

__all__ = ["BUSY_TIMEOUT_S", "READ_ONLY", "create_store_engine", "display_url"]

#: How long a SQLite writer waits for the lock before giving up.
BUSY_TIMEOUT_S = 30.0
#: Execution option marking a connection as read-only (plain deferred BEGIN).
READ_ONLY = "rungflow_read_only"


def display_url(url: str | sa.URL) -> str:
    """The URL with any password replaced by ``***``, safe to log or show."""
    return sa.make_url(url).render_as_string(hide_password=True)


def create_store_engine(url: str) -> sa.Engine:
    """Create an engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``).

    For a SQLite file the parent directory is created. ``sqlite://`` (in
    memory) shares one connection and suits single-threaded tests only.
    """
    parsed = sa.make_url(url)
    # JSON has no NaN/Infinity and PostgreSQL rejects them; fail at write time
    # with a clear error rather than storing a value one backend cannot read.
    kwargs: dict[str, Any] = {"json_serializer": partial(json.dumps, allow_nan=False)}
    if parsed.get_backend_name() != "sqlite":
        # No pre-ping: a round trip per checkout on the hot path. A connection the
        # server dropped fails its first statement, is invalidated, and the
        # store repeats that operation once (``event_store._retry_dropped``).
        return sa.create_engine(parsed, pool_pre_ping=False, pool_recycle=1800, **kwargs)

    database = parsed.database or ""
    in_memory = not database or database == ":memory:" or database.startswith("file::memory:")
    if in_memory:
        kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT_S}
    engine = sa.create_engine(parsed, **kwargs)
    _install_sqlite_hooks(engine, wal=not in_memory)
    return engine


def _install_sqlite_hooks(engine: sa.Engine, *, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so that the
        # "begin" hook below decides how each transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if wal:
                cursor.execute("PRAGMA journal_mode = WAL")
                # Safe with WAL (no corruption on power loss, at worst the last
                # commits roll back) and much faster than FULL.
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
