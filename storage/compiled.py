"""What a SQLAlchemy statement compiled once needs to run on a driver connection.

The writers that bypass SQLAlchemy's execution (:mod:`storage.sqlite_writes`,
:mod:`storage.pg_pipeline`) compile each statement with the engine's dialect
and then bind its parameters themselves, converted by the same bind
processors SQLAlchemy would apply, so what is stored is what SQLAlchemy
would store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

__all__ = ["ROWS_PER_INSERT", "bind_conversions", "multirow_keys", "rows_insert", "rows_params"]

#: Up to this many rows an INSERT of several is one statement (far below
#: SQLite's and PostgreSQL's limits on parameters per statement).
ROWS_PER_INSERT = 32


def multirow_keys(
    stmt: sa.Executable, params: Sequence[Mapping[str, Any]]
) -> tuple[str, ...] | None:
    """The keys of ``params`` when they can be written as one multi-row INSERT
    (:func:`rows_insert`): a plain INSERT, 2 to :data:`ROWS_PER_INSERT` rows,
    all with the same keys; None otherwise (one execution per row then)."""
    if not (
        isinstance(stmt, sa.Insert) and stmt.select is None
        and 1 < len(params) <= ROWS_PER_INSERT
        and all(p.keys() == params[0].keys() for p in params)
    ):
        return None
    return tuple(params[0])


def rows_params(params: Sequence[Mapping[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    """The parameters of :func:`rows_insert`'s statement for ``params``."""
    return {f"{k}_{i}": row[k] for i, row in enumerate(params) for k in keys}


def rows_insert(stmt: sa.Insert, keys: tuple[str, ...], n: int) -> sa.Insert:
    """``stmt`` (a plain INSERT) writing ``n`` rows of ``keys`` in one statement;
    row ``i``'s value of ``key`` is the parameter ``f"{key}_{i}"``."""
    columns = stmt.table.c
    rows = [
        {key: sa.bindparam(f"{key}_{i}", type_=columns[key].type) for key in keys}
        for i in range(n)
    ]
    return stmt.values(rows)


def bind_conversions(
    compiled: Any, dialect: sa.Dialect
) -> tuple[dict[str, Any], dict[str, Callable[[Any], Any]]]:
    """``(defaults, processors)`` of a compiled statement's parameters.

    ``defaults``: the values of the parameters the statement carries itself
    (its literals); ``processors``: the bind processor of each parameter
    SQLAlchemy converts before binding it.
    """
    defaults: dict[str, Any] = {}
    processors: dict[str, Callable[[Any], Any]] = {}
    for bind in compiled.binds.values():
        name = compiled.bind_names[bind]
        if not bind.required:
            defaults[name] = bind.effective_value
        convert = bind.type._cached_bind_processor(dialect)
        if convert is not None:
            processors[name] = convert
    return defaults, processors
