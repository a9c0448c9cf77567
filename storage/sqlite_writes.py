"""A SQLite writer transaction's statements, run on the driver connection.

The runner's result transaction (:func:`flows.engine.commit.decide_and_commit`)
sends about six small statements on SQLite: the catch-up ``SELECT``, the
events' ``INSERT`` and four projection statements. Through a SQLAlchemy
connection each one costs about 50-70 us of Python around a 5-10 us call
into SQLite (the compiled-cache lookup, parameter processing, an execution
context and a result object), most of rungflow's own CPU per segment outside
the scheduler. Here each statement is compiled once by the engine's dialect
and then run on the ``sqlite3`` connection under the writer's SQLAlchemy
connection, inside its transaction (``BEGIN IMMEDIATE`` is still sent by
SQLAlchemy, ``COMMIT`` too): same SQL text, parameters converted by the same
bind processors (the JSON serializer, :class:`storage.models.UTCDateTime`)
and rows by the same result processors, so what is stored and read is what
SQLAlchemy would store and read.

Statements this cannot run as SQLAlchemy would (column defaults computed in
Python, expanding ``IN`` lists, ``RETURNING``, an ``UPDATE`` with a list of
parameter sets) go through SQLAlchemy as before. Several rows of a plain
``INSERT`` are one multi-row statement, so that every write is one statement,
atomic in SQLite. A driver error is raised as SQLAlchemy would raise it: the
statement failed as a whole (SQLite undid it), so while the transaction is
still open the same statement is run once more through SQLAlchemy, which
raises its exception through the engine's error translation (a lost race's
``IntegrityError``, a full disk's :class:`~storage.errors.StoreError`); a
failure that ended the transaction is translated here, never repeated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from storage.compiled import bind_conversions, multirow_keys, rows_insert, rows_params
from storage.engine import store_error
from storage.projections import ConnectionWrites

__all__ = ["DirectWrites"]


@dataclass(frozen=True)
class _Compiled:
    """A statement as ``sqlite3`` takes it: ``?`` placeholders, values in order."""

    sql: str
    #: Parameter name per placeholder, in order.
    names: tuple[str, ...]
    #: Values of the parameters the statement carries itself (its literals).
    defaults: Mapping[str, Any]
    #: Bind processor per parameter SQLAlchemy converts before binding it.
    processors: Mapping[str, Callable[[Any], Any]]

    def params(self, given: Mapping[str, Any]) -> tuple[Any, ...]:
        out = []
        for name in self.names:
            value = given[name] if name in given else self.defaults[name]
            convert = self.processors.get(name)
            out.append(value if convert is None else convert(value))
        return tuple(out)


class _Compiler:
    """Compiles statements for ``sqlite3`` with one dialect, once per (statement, keys)."""

    def __init__(self, dialect: sa.Dialect) -> None:
        self._dialect = dialect
        # Keyed by the statement object: module constants stay compiled; a
        # statement built per call is held until evicted, so a recycled id
        # never aliases another one.
        self.compile = lru_cache(maxsize=256)(self._compile)
        self.compile_rows = lru_cache(maxsize=64)(self._compile_rows)
        self.result_processors = lru_cache(maxsize=64)(self._result_processors)

    def _compile_rows(self, stmt: sa.Insert, keys: tuple[str, ...], n: int) -> _Compiled | None:
        """``stmt`` (a plain INSERT) writing ``n`` rows of ``keys`` in one statement."""
        return self._compile(rows_insert(stmt, keys, n), ())

    def _compile(self, stmt: sa.Executable, keys: tuple[str, ...]) -> _Compiled | None:
        """None when SQLAlchemy does more than bind the parameters for it."""
        # The parameter names decide an INSERT's columns (and add SET clauses to
        # an UPDATE), exactly as in SQLAlchemy's own execution.
        compiled: Any = stmt.compile(  # type: ignore[attr-defined]
            dialect=self._dialect, column_keys=list(keys)
        )
        if compiled.positiontup is None or any(
            getattr(compiled, extra, None)
            # (postfetch only lists columns SQL expressions set: nothing to run)
            for extra in ("insert_prefetch", "update_prefetch", "returning",
                          "literal_execute_params", "post_compile_params")
        ):
            return None
        defaults, processors = bind_conversions(compiled, self._dialect)
        return _Compiled(str(compiled), tuple(compiled.positiontup), defaults, processors)

    def _result_processors(
        self, stmt: sa.Select[Any]
    ) -> tuple[Callable[[Any], Any] | None, ...]:
        return tuple(
            col.type._cached_result_processor(self._dialect, None)
            for col in stmt.selected_columns
        )


#: The attribute of a dialect that holds its :class:`_Compiler`.
_ATTRIBUTE = "_rungflow_sqlite_writes"


def _compiler(dialect: sa.Dialect) -> _Compiler:
    # One per dialect object (an engine's, shared by its execution-option
    # views), kept on it like SQLAlchemy's own compiled cache: compiled once
    # per engine, across its writers, and freed with the engine. (A registry
    # of every dialect would keep each engine's for good.)
    found: _Compiler | None = getattr(dialect, _ATTRIBUTE, None)
    if found is None:
        found = _Compiler(dialect)
        setattr(dialect, _ATTRIBUTE, found)
    return found


class DirectWrites(ConnectionWrites):
    """:class:`storage.projections.Writes` on a SQLite connection's driver connection.

    Args:
        conn: A SQLAlchemy connection to SQLite, in a transaction.
    """

    def __init__(self, conn: sa.Connection) -> None:
        super().__init__(conn)
        self._driver: Any = conn.connection.driver_connection
        self._compiler = _compiler(conn.dialect)

    def write(
        self, stmt: sa.Executable, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> None:
        if not isinstance(params, Mapping):
            if len(params) == 1:
                params = params[0]
            else:
                keys = multirow_keys(stmt, params)
                compiled = (
                    None if keys is None
                    else self._compiler.compile_rows(stmt, keys, len(params))
                )
                if keys is None or compiled is None:
                    super().write(stmt, params)
                else:
                    self._run(compiled, rows_params(params, keys), stmt, params)
                return
        compiled = self._compiler.compile(stmt, tuple(sorted(params)))
        if compiled is None:
            super().write(stmt, params)
            return
        self._run(compiled, params, stmt, params)

    def count(self, stmt: sa.Executable, params: Mapping[str, Any]) -> int:
        compiled = self._compiler.compile(stmt, tuple(sorted(params)))
        if compiled is None:
            return super().count(stmt, params)
        return int(self._run(compiled, params, stmt, params).rowcount)

    def rows(self, stmt: sa.Executable, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        if not isinstance(stmt, sa.Select):
            return super().rows(stmt, params)
        compiled = self._compiler.compile(stmt, tuple(sorted(params)))
        if compiled is None:
            return super().rows(stmt, params)
        fetched = self._run(compiled, params, stmt, params, fetch=True)
        if isinstance(fetched, sa.CursorResult):  # SQLAlchemy ran it (see _run): rows converted
            return [tuple(row) for row in fetched]
        convert = self._compiler.result_processors(stmt)
        return [
            tuple(v if f is None else f(v) for f, v in zip(convert, row, strict=True))
            for row in fetched
        ]

    def _run(
        self,
        compiled: _Compiled,
        given: Mapping[str, Any],
        stmt: sa.Executable,
        original: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        fetch: bool = False,
    ) -> Any:
        """The ``sqlite3`` cursor (``fetch``: its rows, all fetched); SQLAlchemy's
        result if the statement failed and SQLAlchemy ran it again."""
        values = compiled.params(given)
        try:
            cursor = self._driver.execute(compiled.sql, values)
            # A SELECT is stepped to its first row in execute() and to the others
            # here: an error past the first row (a corrupt page) is handled alike.
            return cursor.fetchall() if fetch else cursor
        except self.conn.dialect.dbapi.Error as exc:  # type: ignore[union-attr]
            if self._driver.in_transaction:
                # SQLite undid the statement only: SQLAlchemy runs it again and
                # raises (translated by the engine's hook) what it raises; should
                # it succeed this time, the statement is done once, as it must be.
                return self.conn.execute(stmt, original)
            # SQLite ended the transaction (a full disk, an I/O error): never
            # run a write again outside it.
            wrapped = sa.exc.DBAPIError.instance(
                compiled.sql, values, exc, self.conn.dialect.dbapi.Error,  # type: ignore[union-attr]
                dialect=self.conn.dialect,
            )
            raise store_error(wrapped, self.conn.engine.url) from exc
