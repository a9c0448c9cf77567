"""Schema versioning: run Alembic programmatically and refuse newer databases.

:class:`storage.EventStore` calls :func:`upgrade_schema` on open, so users never
run migrations by hand. Two guarantees matter:

* A database written by a *newer* rungflow (its revision is unknown here) is
  never touched; :class:`SchemaVersionError` tells the user to upgrade.
* Several processes opening the same fresh database at once do not race to
  create tables: SQLite serialises them with ``BEGIN IMMEDIATE`` and PostgreSQL
  with a transaction-scoped advisory lock.

Alembic is imported only when a database needs migrating: loading it and
parsing the revision scripts cost ~0.4 s on every open, which every CLI
command, resume and worker process paid for a one-row version check. A
database at :data:`SCHEMA_HEAD` opens after that one read; one stamped with a
revision none of the shipped scripts declares (a newer rungflow's) is refused
after it too, the scripts' ``revision = "..."`` lines read as text.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from storage.errors import SchemaVersionError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "MIGRATIONS_DIR",
    "SCHEMA_HEAD",
    "VERSION_TABLE",
    "alembic_config",
    "current_revisions",
    "head_revisions",
    "upgrade_schema",
]

#: Alembic script location shipped inside the package.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: Version table name; not ``alembic_version`` so a shared database can host
#: another Alembic-managed application too.
VERSION_TABLE = "rungflow_alembic_version"
#: The newest revision the shipped scripts define (tests/storage/test_migrations.py
#: checks it against them): a database stamped with exactly this needs no Alembic.
SCHEMA_HEAD = "0003"
# Arbitrary constant key for pg_advisory_xact_lock ("rungflow" in ASCII, truncated).
_PG_LOCK_KEY = 0x72756E67666C6F


def alembic_config(extra_version_locations: Sequence[str | Path] = ()) -> Config:
    """Alembic config pointing at the packaged migrations.

    Args:
        extra_version_locations: More directories of revision files. Only tests
            use this, to simulate a later release's migration.
    """
    from alembic.config import Config

    cfg = Config()
    # configparser interpolates "%", so escape it in filesystem paths.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    locations = [MIGRATIONS_DIR / "versions", *map(Path, extra_version_locations)]
    cfg.set_main_option(
        "version_locations", os.pathsep.join(str(p).replace("%", "%%") for p in locations)
    )
    return cfg


def head_revisions(extra_version_locations: Sequence[str | Path] = ()) -> tuple[str, ...]:
    """Head revision(s) this code knows about."""
    from alembic.script import ScriptDirectory

    return tuple(ScriptDirectory.from_config(alembic_config(extra_version_locations)).get_heads())


def current_revisions(connection: sa.Connection) -> tuple[str, ...]:
    """Revision(s) the database is stamped with; empty for a fresh database."""
    from alembic.runtime.migration import MigrationContext

    ctx = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return tuple(ctx.get_current_heads())


def upgrade_schema(
    engine: sa.Engine,
    *,
    revision: str = "head",
    extra_version_locations: Sequence[str | Path] = (),
) -> None:
    """Bring the database up to ``revision`` in one transaction.

    Args:
        engine: Engine from :func:`storage.engine.create_store_engine`.
        revision: Target revision; ``"head"`` in normal use.
        extra_version_locations: See :func:`alembic_config`.

    Raises:
        SchemaVersionError: the database is at a revision this code does not know,
            i.e. it was migrated by a newer rungflow.
    """
    if revision == "head" and not extra_version_locations:
        stamped = _stamped(engine)
        if stamped == [SCHEMA_HEAD]:
            return
        for rev in stamped or ():
            if rev not in _shipped_revisions():
                raise _newer(engine, rev, [SCHEMA_HEAD])
    from alembic import command
    from alembic.script import ScriptDirectory
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    cfg = alembic_config(extra_version_locations)
    script = ScriptDirectory.from_config(cfg)
    heads = set(script.get_heads())
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        current = current_revisions(conn)
        for rev in current:
            try:
                known = script.get_revision(rev)
            except (CommandError, RevisionError):
                known = None
            if known is None:
                raise _newer(engine, rev, heads)
        if revision == "head" and set(current) == heads:
            return  # fast path: nothing to do, skip loading env.py
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def _newer(engine: sa.Engine, rev: str, heads: Iterable[str]) -> SchemaVersionError:
    """The error for a database stamped with ``rev``, a revision this code does not know."""
    return SchemaVersionError(
        f"database {engine.url.render_as_string(hide_password=True)} has schema "
        f"revision {rev!r}, which is newer than this rungflow knows (its latest is "
        f"{', '.join(sorted(heads))}); upgrade rungflow to open it"
    )


#: A revision script's ``revision = "<id>"`` line.
_REVISION_LINE = re.compile(r"^revision(?:\s*:\s*str)?\s*=\s*[\"']([^\"']+)[\"']", re.MULTILINE)


def _shipped_revisions() -> set[str]:
    """Every revision id the shipped scripts declare, read as text (no Alembic).

    tests/storage/test_migrations.py checks it against Alembic's own reading.
    """
    return {
        rev
        for script in (MIGRATIONS_DIR / "versions").glob("*.py")
        for rev in _REVISION_LINE.findall(script.read_text(encoding="utf-8"))
    }


def _stamped(engine: sa.Engine) -> list[str] | None:
    """The revisions in the database's version table; None if it has none yet.

    On PostgreSQL one statement (one round trip): the table's absence is its
    error, ``undefined_table``. SQLite, in process, asks its catalogue first.
    """
    query = sa.text(f"SELECT version_num FROM {VERSION_TABLE}")
    with engine.connect() as conn:
        if conn.dialect.name != "postgresql":
            if not sa.inspect(conn).has_table(VERSION_TABLE):
                return None
            return list(conn.execute(query).scalars().all())
        try:
            return list(conn.execute(query).scalars().all())
        except sa.exc.ProgrammingError as exc:
            code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
            if code == "42P01":  # undefined_table: a fresh database
                return None
            raise
