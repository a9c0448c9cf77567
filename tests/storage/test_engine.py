"""Engine settings: SQLite pragmas, transaction modes and URL masking."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from storage import EventStore, display_url
from storage.engine import BUSY_TIMEOUT_S, READ_ONLY, create_store_engine


def test_display_url_masks_password() -> None:
    url = "postgresql+psycopg://alice:s3cr%40t@db.example:5432/tune"
    shown = display_url(url)
    assert "s3cr" not in shown
    assert shown == "postgresql+psycopg://alice:***@db.example:5432/tune"
    assert display_url("sqlite:///x.db") == "sqlite:///x.db"


def test_store_never_shows_the_raw_url(tmp_path: Path) -> None:
    with EventStore(f"sqlite:///{tmp_path / 'a.db'}") as store:
        assert store.url_for_display == f"sqlite:///{tmp_path / 'a.db'}"
        assert repr(store) == f"EventStore({store.url_for_display!r})"


def test_sqlite_pragmas_and_parent_dir(tmp_path: Path) -> None:
    db = tmp_path / "deep" / "er" / "r.db"
    engine = create_store_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            pragma = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "busy_timeout", "foreign_keys")
            }
    finally:
        engine.dispose()
    assert db.parent.is_dir()
    assert pragma == {
        "journal_mode": "wal",
        "busy_timeout": int(BUSY_TIMEOUT_S * 1000),
        "foreign_keys": 1,
    }


def test_sqlite_writes_begin_immediate_and_reads_deferred(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'r.db'}")
    seen: list[str] = []
    # SQLite's own trace: the writers' BEGIN IMMEDIATE goes to the driver directly.
    sa.event.listen(engine, "connect", lambda dbapi, _rec: dbapi.set_trace_callback(seen.append))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("SELECT 1")
        with engine.execution_options(**{READ_ONLY: True}).connect() as conn:
            conn.exec_driver_sql("SELECT 2")
    finally:
        engine.dispose()
    begins = [s for s in seen if s.startswith("BEGIN")]
    assert begins == ["BEGIN IMMEDIATE", "BEGIN"]


def test_in_memory_sqlite_works_single_threaded() -> None:
    with EventStore("sqlite://") as store:
        store.create_experiment("m", {})
        assert store.last_seq("m") == 1
