"""How a held PostgreSQL writer connection starts a transaction: one round trip.

A runner's transaction on PostgreSQL needs ``BEGIN``, the experiment's write
lock (``pg_advisory_xact_lock``) and, when the user traded durability for
latency, ``SET LOCAL synchronous_commit TO off``. psycopg sends its implicit
``BEGIN`` as a round trip of its own before the first statement, and each of
the others would be one more. Instead the writer's connection runs in driver
autocommit (psycopg then sends no ``BEGIN``) and opens each transaction
itself with one simple-protocol query holding all of them
(:func:`begin_statement`); ``COMMIT`` and ``ROLLBACK`` still go through the
driver, which sends them whenever a transaction is open, autocommit or not.
The statements are exactly the ones that ran before, in the same order: the
lock is taken inside the transaction and released by its end.

That is the psycopg2 path. With the psycopg (3) driver the writer pipelines
its statements instead (:mod:`storage.pg_pipeline`), where a query holds one
statement: :func:`begin_statements` gives ``BEGIN`` and one ``SELECT`` for
the setting and the lock, sent in one round trip with the catch-up read that
follows them; the pipeline sends ``COMMIT`` and ``ROLLBACK`` itself.

The durability choice (see ``docs/scaling.md``): with ``synchronous_commit``
off, PostgreSQL reports a commit before its WAL reaches disk. A client killed
at any point loses nothing it was told was committed (the server has it); a
crash of the *server* (or its machine) can lose the transactions of the last
``3 x wal_writer_delay`` (0.6 s by default), all of them and in commit order,
so the log stays a consistent prefix. The setting is applied per transaction
(``SET LOCAL``), on the runner's writer connection only.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["begin_statement", "begin_statements", "hold_for_writer"]


def hold_for_writer(conn: sa.Connection) -> sa.Connection:
    """Put a freshly checked-out connection in driver autocommit, so that
    :func:`begin_statement` (or a pipelined transaction) can open its
    transactions (returns ``conn``).

    SQLAlchemy still calls the driver's ``commit()``/``rollback()`` at the end
    of each ``conn.begin()`` block; psycopg sends them because a transaction
    is open. The pool restores the isolation level when the connection returns.
    """
    return conn.execution_options(isolation_level="AUTOCOMMIT")


def begin_statement(lock_key: int | None, *, synchronous_commit: bool = True) -> str:
    """The one query that opens a writer transaction.

    Args:
        lock_key: The experiment's advisory lock key, or None for no lock.
        synchronous_commit: False: this transaction's commit does not wait for
            its WAL to reach disk (``SET LOCAL``: the session's setting is
            untouched). True leaves the server's setting in force (``on``
            unless the database administrator chose otherwise).

    Only integers and fixed words go into the text: nothing a user typed.
    """
    parts = ["BEGIN"]
    if not synchronous_commit:
        parts.append("SET LOCAL synchronous_commit TO off")
    if lock_key is not None:
        parts.append(f"SELECT pg_advisory_xact_lock({int(lock_key)})")
    return "; ".join(parts)


def begin_statements(
    lock_key: int | None, *, synchronous_commit: bool = True
) -> list[tuple[str, dict[str, int] | None]]:
    """What :func:`begin_statement` runs, as ``(sql, params)`` statements for a
    pipelined transaction (:mod:`storage.pg_pipeline`), which sends one per
    query: ``BEGIN``, then the durability setting and the lock in one
    ``SELECT`` (``set_config(..., true)`` is ``SET LOCAL``; the setting is
    applied before the lock is waited for, as the three-statement query did).
    The lock key is a parameter."""
    out: list[tuple[str, dict[str, int] | None]] = [("BEGIN", None)]
    calls = []
    if not synchronous_commit:
        calls.append("set_config('synchronous_commit', 'off', true)")
    if lock_key is not None:
        calls.append("pg_advisory_xact_lock(%(key)s::bigint)")
    if calls:
        out.append(("SELECT " + ", ".join(calls), None if lock_key is None else {"key": lock_key}))
    return out
