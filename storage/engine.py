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

PostgreSQL has no ``pool_pre_ping`` (a round trip per checkout): a connection
the server dropped fails its first statement as a
:class:`~storage.errors.ConnectionDroppedError`, is discarded, and the store
repeats the operation once on a fresh one. It needs a connect timeout
(:data:`CONNECT_TIMEOUT_S`): a server that accepts TCP but never answers must
not hang a run. Concurrency control lives in
:mod:`storage.event_store`.

Errors users see. A URL that does not parse or names an unsupported backend is
a :class:`~storage.errors.DatabaseURLError` before anything is contacted. A
database that cannot be reached, opened or written, at open or mid-run, is a
:class:`~storage.errors.DatabaseUnavailableError` whose message names the
problem and the fix and never the password (see :func:`store_error`).
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import weakref
from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.pool import StaticPool

from storage.errors import (
    ConnectionDroppedError,
    DatabaseUnavailableError,
    DatabaseURLError,
    StoreError,
)

__all__ = [
    "BUSY_TIMEOUT_S",
    "CONNECT_TIMEOUT_S",
    "READ_ONLY",
    "check_url",
    "close_engine",
    "create_store_engine",
    "display_url",
    "open_engine",
    "store_error",
]

#: How long a SQLite writer waits for the lock before giving up.
BUSY_TIMEOUT_S = 30.0
#: How long opening a PostgreSQL connection may take (``connect_timeout``);
#: ``RUNGFLOW_CONNECT_TIMEOUT`` overrides it. SQLite opens files, it does not connect.
CONNECT_TIMEOUT_S = 10.0
#: Backends and drivers rungflow is tested with.
_SUPPORTED = {"sqlite": {"pysqlite"}, "postgresql": {"psycopg", "psycopg2"}}
_EXAMPLES = "sqlite:///path/to/rungflow.db or postgresql+psycopg://user@host:5432/dbname"
#: Execution option marking a connection as read-only (plain deferred BEGIN).
READ_ONLY = "rungflow_read_only"


def display_url(url: str | sa.URL) -> str:
    """The URL with any password replaced by ``***``, safe to log or show."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        # Unparseable: it may still hold a password, so show none of it.
        return "<unparseable URL>"


def check_url(url: str | sa.URL) -> sa.URL:
    """Parse ``url`` and check that it names a supported backend and an installed driver.

    Raises:
        DatabaseURLError: with the rule and an example of a good URL.
    """
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise DatabaseURLError(
            f"database URL {display_url(url)} does not parse; use {_EXAMPLES}"
        ) from None
    backend, shown = parsed.get_backend_name(), display_url(parsed)
    if backend not in _SUPPORTED:
        raise DatabaseURLError(
            f"database URL {shown} uses {backend!r}, but rungflow supports only SQLite and "
            f"PostgreSQL; use {_EXAMPLES}"
        )
    driver = parsed.get_driver_name()  # loads the dialect when the URL names no driver
    if driver not in _SUPPORTED[backend]:
        raise DatabaseURLError(
            f"database URL {shown} asks for driver {driver!r}, but {backend} is supported with "
            f"{' or '.join(sorted(_SUPPORTED[backend]))}; use {_EXAMPLES}"
        )
    try:
        parsed.get_dialect().import_dbapi()
    except ImportError as exc:
        raise DatabaseURLError(
            f"database URL {shown} needs the Python package {exc.name or driver!r}, which is "
            f"not installed; use postgresql+psycopg://... (installed with rungflow)"
        ) from None
    return parsed


def create_store_engine(url: str, *, connect_timeout: float | None = None) -> sa.Engine:
    """Create an engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``).

    For a SQLite file the parent directory is created. ``sqlite://`` (in
    memory) shares one connection and suits single-threaded tests only.

    Args:
        url: The database URL.
        connect_timeout: Seconds a PostgreSQL connection attempt may take
            (default :data:`CONNECT_TIMEOUT_S`); a ``connect_timeout`` in the
            URL's query wins.

    Raises:
        DatabaseURLError: ``url`` is malformed or unsupported.
        DatabaseUnavailableError: the SQLite file's directory cannot be created.
    """
    parsed = check_url(url)
    timeout = CONNECT_TIMEOUT_S if connect_timeout is None else connect_timeout
    # JSON has no NaN/Infinity and PostgreSQL rejects them; fail at write time
    # with a clear error rather than storing a value one backend cannot read.
    kwargs: dict[str, Any] = {"json_serializer": partial(json.dumps, allow_nan=False)}
    if parsed.get_backend_name() != "sqlite":
        # libpq takes whole seconds (and treats 1 as 2); never 0, which means "wait forever".
        connect_args = {"connect_timeout": max(2, math.ceil(timeout))}
        # No pre-ping: a round trip per checkout on the hot path. A connection the
        # server dropped fails its first statement, is invalidated, and the
        # store repeats that operation once (``event_store._retry_dropped``).
        engine = sa.create_engine(
            parsed, pool_pre_ping=False, pool_recycle=1800, connect_args=connect_args, **kwargs
        )
        _install_error_translation(engine, parsed, timeout)
        return engine

    database = parsed.database or ""
    in_memory = not database or database == ":memory:" or database.startswith("file::memory:")
    if in_memory:
        kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        _make_parent(parsed, database)
        kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT_S}
    engine = sa.create_engine(parsed, **kwargs)
    _install_sqlite_hooks(engine, wal=not in_memory)
    _install_error_translation(engine, parsed, timeout)
    return engine


#: Closed engines kept per process for the next store on their URL (see open_engine).
IDLE_ENGINES = 4
_idle: OrderedDict[tuple[int, str, float | None], sa.Engine] = OrderedDict()
_idle_lock = threading.Lock()
#: The key each engine open_engine made is kept under.
_keys: weakref.WeakKeyDictionary[sa.Engine, tuple[int, str, float | None]] = (
    weakref.WeakKeyDictionary()
)


def open_engine(url: str, *, connect_timeout: float | None = None) -> sa.Engine:
    """An engine for ``url``: one this process closed earlier, or a new one.

    A new engine compiles every statement again on first use: about 0.2 ms
    each, some 20 ms per flow run (two stores of ~50 statements), which a
    process running flow after flow, or ``status`` after ``run``, need not
    pay again. An engine reused here comes out of :func:`close_engine`, its
    pooled connections closed; it belongs to the caller alone (never to two
    open stores at once), exactly like a new one. In-memory SQLite engines
    are never reused (their database is their connection).

    Raises:
        DatabaseURLError: see :func:`create_store_engine`.
        DatabaseUnavailableError: see :func:`create_store_engine`.
    """
    key = (os.getpid(), url, connect_timeout)
    with _idle_lock:
        engine = _idle.pop(key, None)
    if engine is not None:
        if engine.url.get_backend_name() == "sqlite":
            # As for a new engine: the directory may have been removed since.
            _make_parent(engine.url, engine.url.database or "")
        return engine
    engine = create_store_engine(url, connect_timeout=connect_timeout)
    if _reusable(engine.url):
        with _idle_lock:
            _keys[engine] = key
    return engine


def close_engine(engine: sa.Engine) -> None:
    """Close ``engine``'s pooled connections and keep it for :func:`open_engine`.

    The caller must not use ``engine`` afterwards. Connections still checked
    out are closed when they are returned (``Engine.dispose``). At most
    :data:`IDLE_ENGINES` engines are kept, the most recently closed.
    """
    engine.dispose()
    with _idle_lock:
        key = _keys.get(engine)
        if key is None or key[0] != os.getpid():
            return
        _idle[key] = engine
        _idle.move_to_end(key)
        while len(_idle) > IDLE_ENGINES:
            _idle.popitem(last=False)


def _reusable(url: sa.URL) -> bool:
    """Whether an engine on ``url`` may serve another store: not an in-memory
    SQLite database (nor a SQLite URI filename, which may name one)."""
    if url.get_backend_name() != "sqlite":
        return True
    database = url.database or ""
    return (
        bool(database)
        and database != ":memory:"
        and not database.startswith("file:")
        and url.query.get("uri") not in ("true", "1")
    )


def _make_parent(parsed: sa.URL, database: str) -> None:
    if parsed.query.get("uri") in ("true", "1") or database.startswith("file:"):
        return  # a SQLite URI filename: SQLite itself resolves it
    parent = Path(database).expanduser().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseUnavailableError(
            f"cannot create the directory {parent} for SQLite database {database}: "
            f"{exc.strerror}; give --db a path in a writable directory"
        ) from None


def _install_error_translation(engine: sa.Engine, url: sa.URL, timeout: float) -> None:
    """Raise driver errors that mean "the database is unusable" as :class:`StoreError`.

    Covers the first connection (refused, timed out, missing database, corrupt
    file) and later ones alike (server gone mid-run, disk full), so every
    caller, the CLI and the flow, sees one message naming the problem and the
    fix. Integrity errors (lost races) and programming errors pass through.
    """

    @event.listens_for(engine, "handle_error")
    def _translate(context: Any) -> None:
        if getattr(context, "is_pre_ping", False):
            return  # the pool handles a dead pooled connection by reconnecting
        exc = context.sqlalchemy_exception
        # sqlite3 reports a corrupt file as a bare DatabaseError; its subclasses
        # IntegrityError (a lost race) and ProgrammingError (a bug) pass through.
        if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)) or (
            type(exc) is sa.exc.DatabaseError
        ):
            error = store_error(exc, url, timeout)
            if context.is_disconnect and type(error) is DatabaseUnavailableError:
                # The connection died under a statement (a server restart): the
                # pool invalidates it, and callers may repeat the operation once.
                error = ConnectionDroppedError(str(error))
            raise error from exc


def _driver_message(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    text = text.removeprefix("connection failed: ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else type(orig).__name__


def store_error(
    exc: BaseException, url: str | sa.URL, timeout: float = CONNECT_TIMEOUT_S
) -> StoreError:
    """``exc`` (raised opening or using ``url``) as a :class:`StoreError` that says what to do.

    Never contains the URL's password: the URL is shown masked and the
    password is scrubbed from the driver's text too.
    """
    if isinstance(exc, StoreError):
        return exc
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        return DatabaseURLError(f"database URL {display_url(url)} does not parse; use {_EXAMPLES}")
    message = _driver_message(exc)
    if parsed.password:
        message = message.replace(str(parsed.password), "***")
    low = message.lower()
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ":memory:"
        if "not a database" in low or "malformed" in low:
            why = (f"SQLite database {path} is corrupt or not a SQLite file ({message}); "
                   "restore it from a backup or point --db at another file")
        elif "readonly" in low or "read-only" in low:
            why = (f"SQLite database {path} is read-only ({message}); make the file and its "
                   "directory writable by this user (SQLite writes a -wal and -shm file next "
                   "to it), or copy it somewhere writable")
        elif "unable to open" in low:
            what = "is a directory" if Path(path).is_dir() else "cannot be opened or created"
            why = (f"SQLite database {path} {what} ({message}); give --db a file path in a "
                   "writable directory, e.g. sqlite:///path/to/rungflow.db")
        elif "full" in low:
            why = (f"the disk holding SQLite database {path} is full ({message}); free space "
                   "and run the same command again to resume")
        else:
            why = f"SQLite database {path} cannot be used: {message}"
        return DatabaseUnavailableError(why)
    where = f"PostgreSQL at {parsed.host or 'localhost'}:{parsed.port or 5432}"
    if "timeout" in low or "timed out" in low:
        why = (f"{where} did not answer within {timeout:g} s; check the host, port and "
               "firewall (the wait is RUNGFLOW_CONNECT_TIMEOUT)")
    elif "connection refused" in low:
        why = (f"{where} refused the connection; is the server running and accepting TCP "
               "connections on that port?")
    elif re.search(r'database ".*" does not exist', low):
        why = (f"{where} has no database {parsed.database!r}; create it "
               f"(createdb {parsed.database}) or fix the URL")
    elif re.search(r"authentication failed|password|role .* does not exist", low):
        why = (f"{where} refused user {parsed.username!r}: {message}; check the user and "
               "password (pass them with --db env:VAR or a Secret block, not on the command line)")
    elif "could not translate host name" in low or "name or service not known" in low:
        why = f"{where}: unknown host ({message}); fix the host name in the URL"
    else:
        why = f"{where} ({display_url(parsed)}) cannot be used: {message}"
    return DatabaseUnavailableError(why)


def _install_sqlite_hooks(engine: sa.Engine, *, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so that the
        # begin hooks below decide how each transaction starts.
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

    # How each transaction starts. Not a "begin" listener on the engine: any
    # connection-event listener makes SQLAlchemy dispatch four (empty) events
    # around every statement, about a tenth of the CPU of a small append.
    # The dialect's do_begin runs for every transaction, with no event machinery;
    # a read-only engine view first starts its plain BEGIN from a listener of its
    # own (see _on_read_only_options), and do_begin then finds a transaction open.
    def _begin_immediate(dbapi_connection: Any) -> None:
        driver = dbapi_connection.driver_connection
        if not driver.in_transaction:
            driver.execute("BEGIN IMMEDIATE")

    dialect: Any = engine.dialect
    dialect.do_begin = _begin_immediate
    set_options = dialect.set_engine_execution_options

    def _on_read_only_options(option_engine: sa.Engine, opts: Any) -> None:
        set_options(option_engine, opts)
        if opts.get(READ_ONLY):
            event.listen(option_engine, "begin", _begin_deferred)

    dialect.set_engine_execution_options = _on_read_only_options


def _begin_deferred(conn: sa.Connection) -> None:
    """A read-only view's transactions: a plain BEGIN, which never waits for writers."""
    conn.exec_driver_sql("BEGIN")
