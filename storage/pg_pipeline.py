"""A PostgreSQL writer transaction in two round trips: psycopg's pipeline mode.

The runner's result transaction (:func:`flows.engine.commit.decide_and_commit`)
takes the experiment lock, reads what others appended since its seq, then
writes the events and their projection rows and commits. Sent one statement
at a time that is a round trip per statement (eight per result). Here every
write is queued and sent with the next read or with ``COMMIT``, in psycopg's
pipeline mode: the server runs the statements in order, as before, but the
client waits once per batch. A result costs two round trips: ``BEGIN``, the
durability setting, the lock and the catch-up ``SELECT``; then the ``INSERT``
of the events, the projection statements and ``COMMIT``. A transaction that
raises before anything was sent costs none.

The statements run on the psycopg connection under the writer's SQLAlchemy
connection, not through SQLAlchemy: SQLAlchemy reads a cursor's description
and row count right after each execute, which pipeline mode only has after
the batch is sent. They are still SQLAlchemy statements, compiled once by the
engine's dialect (:class:`Compiler`), with their parameters converted by the
same bind processors (the JSON serializer, :class:`storage.models.UTCDateTime`),
so what is stored is byte for byte what SQLAlchemy would store. As everywhere,
only fixed words and integers are in the SQL text; values are parameters.

A failed batch is rolled back at once and re-raised as SQLAlchemy's exception
for it (``IntegrityError`` for a lost race); a connection the server dropped
is invalidated, so the writer takes a fresh one next time, and raised as
:class:`~storage.errors.ConnectionDroppedError`.

Used only with the psycopg (3) driver; with psycopg2 the writer sends one
statement at a time (:mod:`storage.pg_session`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from storage.compiled import bind_conversions, multirow_keys, rows_insert, rows_params
from storage.engine import store_error
from storage.errors import ConnectionDroppedError

__all__ = ["Compiled", "Compiler", "PipelinedTransaction", "supported"]

def supported(engine: sa.Engine) -> bool:
    """Whether ``engine``'s writer transactions can run in pipeline mode."""
    if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg":
        return False
    import psycopg

    return bool(psycopg.Pipeline.is_supported())


@dataclass(frozen=True)
class Compiled:
    """A statement as psycopg takes it.

    Attributes:
        sql: The text with ``%(name)s`` placeholders.
        defaults: Values of the parameters the statement carries itself (the
            literals of its expressions).
        processors: ``(name, convert)`` for each parameter SQLAlchemy converts
            before binding it.
    """

    sql: str
    defaults: Mapping[str, Any]
    processors: tuple[tuple[str, Callable[[Any], Any]], ...]

    def params(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters to send for ``given`` (the names the statement binds)."""
        out = {**self.defaults, **given} if self.defaults else dict(given)
        for name, convert in self.processors:
            if name in out:
                out[name] = convert(out[name])
        return out


class Compiler:
    """Compiles statements for psycopg with ``dialect``, once per statement object."""

    def __init__(self, dialect: sa.Dialect) -> None:
        self._dialect = dialect
        # Keyed by the statement object: module constants stay compiled; the
        # few statements built per call (a bulk append's trial lookup) are
        # held until evicted, so a recycled id can never alias another one.
        self.compile = lru_cache(maxsize=256)(self._compile)
        self.compile_rows = lru_cache(maxsize=64)(self._compile_rows)

    def _compile_rows(self, stmt: sa.Insert, keys: tuple[str, ...], n: int) -> Compiled:
        """``stmt`` (a plain INSERT) writing ``n`` rows of ``keys`` in one statement;
        row ``i``'s value of ``key`` is the parameter ``f"{key}_{i}"``."""
        return self._compile(rows_insert(stmt, keys, n))

    def _compile(self, stmt: sa.Executable) -> Compiled:
        # render_postcompile: an IN list is rendered as one placeholder per value.
        compiled = stmt.compile(  # type: ignore[attr-defined]
            dialect=self._dialect, compile_kwargs={"render_postcompile": True}
        )
        defaults, processors = bind_conversions(compiled, self._dialect)
        if not any(bind.required for bind in compiled.binds.values()):
            # Every value is in the statement (a bulk append's trial lookup):
            # with an IN list's values under their rendered names. Those are
            # bound as given (trial ids, strings: no conversion).
            defaults = dict(compiled.construct_params())
        return Compiled(str(compiled), defaults, tuple(processors.items()))


class PipelinedTransaction:
    """One writer transaction: writes are queued and go with the next read or the commit.

    A :class:`storage.projections.Writes`.

    Args:
        conn: The writer's SQLAlchemy connection, in driver autocommit (see
            :func:`storage.pg_session.hold_for_writer`): this class sends
            ``BEGIN`` and ``COMMIT`` itself.
        compiler: Compiles the statements (one per writer, kept across transactions).
        begin: ``(sql, params)`` opening the transaction (see
            :func:`storage.pg_session.begin_statements`).
    """

    def __init__(
        self,
        conn: sa.Connection,
        compiler: Compiler,
        begin: Sequence[tuple[str, Mapping[str, Any] | None]],
    ) -> None:
        self._conn = conn
        self._driver: Any = conn.connection.driver_connection
        self._compiler = compiler
        self.writable_ctes = True
        self._queued: list[tuple[str, Any, bool]] = [(sql, p, False) for sql, p in begin]
        #: Whether BEGIN reached the server (then the end needs COMMIT or ROLLBACK).
        self._begun = False
        #: Whether anything beyond the opening statements was queued or read.
        self._used = False

    def write(self, stmt: sa.Executable, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]
              ) -> None:
        """Queue ``stmt`` (a list of parameter sets: once per set); errors surface later."""
        self._used = True
        if isinstance(params, Mapping):
            compiled = self._compiler.compile(stmt)
            self._queued.append((compiled.sql, compiled.params(params), False))
        elif (keys := multirow_keys(stmt, params)) is not None:
            # Several rows of a plain INSERT: one multi-row INSERT, one statement.
            compiled = self._compiler.compile_rows(stmt, keys, len(params))
            self._queued.append((compiled.sql, compiled.params(rows_params(params, keys)), False))
        else:
            compiled = self._compiler.compile(stmt)
            many = len(params) != 1
            rows = [compiled.params(p) for p in params]
            self._queued.append((compiled.sql, rows if many else rows[0], many))

    def rows(self, stmt: sa.Executable, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Send what is queued and ``stmt``; its rows (timestamps in UTC)."""
        compiled = self._compiler.compile(stmt)
        self._used = True
        cursor = self._send((compiled.sql, compiled.params(params)))
        assert cursor is not None
        return [
            tuple(v.astimezone(UTC) if isinstance(v, datetime) else v for v in row)
            for row in cursor.fetchall()
        ]

    def count(self, stmt: sa.Executable, params: Mapping[str, Any]) -> int:
        """Send what is queued and ``stmt``; how many rows it changed."""
        compiled = self._compiler.compile(stmt)
        self._used = True
        cursor = self._send((compiled.sql, compiled.params(params)))
        return int(cursor.rowcount)

    def commit(self) -> None:
        """Send what is queued and ``COMMIT``; nothing at all if nothing was."""
        if not self._used:
            self._queued.clear()  # nothing written nor read: no transaction to end
            return
        self._queued.append(("COMMIT", None, False))
        self._send(None)

    def rollback(self) -> None:
        """Drop what is queued; roll back what the server has (no-op if nothing)."""
        self._queued.clear()
        if self._begun:
            self._begun = False
            self._end_failed()

    def _send(self, final: tuple[str, Mapping[str, Any]] | None) -> Any:
        import psycopg

        driver = self._driver
        queued, self._queued = self._queued, []
        last: Any = None
        self._begun = True  # whatever happens from here, the server may have begun
        try:
            with driver.pipeline():
                cursor = driver.cursor()
                for sql, params, many in queued:
                    if many:
                        cursor.executemany(sql, params)
                    else:
                        cursor.execute(sql, params)
                if final is not None:
                    last = driver.cursor()
                    last.execute(*final)
        except psycopg.Error as exc:
            self._fail(exc, queued, final)
        self._begun = not (queued and queued[-1][0] == "COMMIT")
        return last

    def _fail(self, exc: Exception, queued: list[tuple[str, Any, bool]],
              final: tuple[str, Mapping[str, Any]] | None) -> None:
        import psycopg

        driver = self._driver
        self._begun = False
        sql = final[0] if final is not None else "; ".join(q[0] for q in queued)
        if driver.closed or driver.pgconn.status == psycopg.pq.ConnStatus.BAD:
            self._conn.invalidate(exc)
            raise ConnectionDroppedError(
                str(store_error(exc, self._conn.engine.url))
            ) from exc
        self._end_failed()
        error = sa.exc.DBAPIError.instance(sql, None, exc, psycopg.Error, hide_parameters=True)
        if isinstance(error, (sa.exc.OperationalError, sa.exc.InterfaceError)):
            raise store_error(error, self._conn.engine.url) from exc
        raise error from exc

    def _end_failed(self) -> None:
        """Roll back; a connection left mid-exchange (interrupted) is discarded instead."""
        import psycopg

        driver = self._driver
        status = driver.pgconn.transaction_status
        status_of = psycopg.pq.TransactionStatus
        if status == status_of.IDLE:
            return
        if status in (status_of.INTRANS, status_of.INERROR) and not driver.closed:
            try:
                driver.execute("ROLLBACK")
                return
            except psycopg.Error:
                pass
        self._conn.invalidate()
