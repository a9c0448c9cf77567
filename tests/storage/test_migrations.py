"""Schema migrations: fresh, old -> upgraded on open, newer -> refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from storage import EventStore, SchemaVersionError
from storage.engine import create_store_engine
from storage.models import METADATA
from storage.schema import (
    SCHEMA_HEAD,
    VERSION_TABLE,
    _shipped_revisions,
    alembic_config,
    current_revisions,
    head_revisions,
    upgrade_schema,
)

# A later release's migration, written into a temporary version directory.
FUTURE_REVISION = '''
"""Add experiments.note (test only)."""
import sqlalchemy as sa
from alembic import op

revision = "0004_test"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("experiments", sa.Column("note", sa.String(50), nullable=True))


def downgrade():
    op.drop_column("experiments", "note")
'''


def _revisions(url: str) -> tuple[str, ...]:
    engine = create_store_engine(url)
    try:
        with engine.connect() as conn:
            return current_revisions(conn)
    finally:
        engine.dispose()


def test_fresh_database_is_at_head(store_url: str) -> None:
    assert _revisions(store_url) == ()
    EventStore(store_url).close()
    assert _revisions(store_url) == head_revisions() == ("0003",)


def test_schema_head_is_the_scripts_head() -> None:
    # The open fast path trusts SCHEMA_HEAD; a new migration must move it too.
    assert head_revisions() == (SCHEMA_HEAD,)
    # ... and refuses, without Alembic, a revision no shipped script declares.
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    assert _shipped_revisions() == {r.revision for r in script.walk_revisions()}


def test_models_match_migrations(store_url: str) -> None:
    EventStore(store_url).close()
    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            diff = compare_metadata(ctx, METADATA)
    finally:
        engine.dispose()
    assert diff == []


def test_empty_sqlite_file_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()  # exists, zero tables
    with EventStore(f"sqlite:///{path}") as store:
        store.create_experiment("e", {})
        assert store.last_seq("e") == 1


def test_old_database_is_upgraded_and_keeps_data(store_url: str, tmp_path: Path) -> None:
    engine = create_store_engine(store_url)
    upgrade_schema(engine, revision="0001")
    engine.dispose()
    with EventStore(store_url) as store:
        store.create_experiment("kept", {"a": 1})

    # A newer release ships revision 0004; opening with it upgrades in place.
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "0004_test.py").write_text(FUTURE_REVISION)
    engine = create_store_engine(store_url)
    try:
        upgrade_schema(engine, extra_version_locations=[versions])
        with engine.connect() as conn:
            assert current_revisions(conn) == ("0004_test",)
            cols = {c["name"] for c in sa.inspect(conn).get_columns("experiments")}
            names = conn.execute(sa.text("SELECT name FROM experiments")).scalars().all()
    finally:
        engine.dispose()
    assert "note" in cols
    assert names == ["kept"]

    # ... and this release, which does not know 0004, refuses to touch it.
    with pytest.raises(SchemaVersionError, match=r"'0004_test'.*upgrade rungflow"):
        EventStore(store_url)


def test_unknown_revision_is_refused_without_changes(store_url: str) -> None:
    EventStore(store_url).close()
    engine = sa.create_engine(store_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '9999_future'"))
    finally:
        engine.dispose()
    with pytest.raises(SchemaVersionError) as info:
        EventStore(store_url)
    message = str(info.value)
    assert "9999_future" in message and "0003" in message and "upgrade rungflow" in message
    assert _revisions(store_url) == ("9999_future",)


def test_version_table_does_not_clash_with_other_alembic_apps(store_url: str) -> None:
    engine = create_store_engine(store_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
            conn.execute(sa.text("INSERT INTO alembic_version VALUES ('someone_elses_rev')"))
    finally:
        engine.dispose()
    EventStore(store_url).close()
    assert _revisions(store_url) == ("0003",)
